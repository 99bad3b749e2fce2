"""The experiment's config: roles name existing recipes, each recipe in one role, candidates of a role train the
same budgets (one criterion chooses between them), and the three corpora have different seeds."""

import pytest

from benchmarks.experiment_config import ExperimentRunConfig, reported_budgets, trained_budgets
from pipeline.config import load_config
from pipeline.configlib import ConfigError

RECIPES = ("experiment.recipes={a: [loss.budgets=full], b: [loss.budgets=full, train.lr=0.001], "
           "c: [loss.budgets=only, loss.only=L1-d16-p4], d: [loss.budgets=diagonal]}")
BASE = [RECIPES, "experiment.last_head_recipes=[a]", "experiment.default_recipe=d", "experiment.baseline=trunc"]


def load(*overrides):
    return load_config(None, [*BASE, *overrides], root=ExperimentRunConfig)


def test_roles_and_recipes_of_their_own():
    cfg = load("experiment.roles={trunc: [a, b]}", "experiment.recipe_seeds={trunc: [0]}")
    assert cfg.experiment.role_candidates() == {"trunc": ["a", "b"], "c": ["c"], "d": ["d"]}
    assert [trained_budgets(cfg, r) for r in "abcd"] == ["full", "full", "L1-d16-p4", "grid"]
    assert reported_budgets(cfg, "trunc") is None and reported_budgets(cfg, "c") == ["L1-d16-p4"]
    assert cfg.experiment.seeds_of("trunc") == [0] and cfg.experiment.seeds_of("d") == [0, 1, 2]


@pytest.mark.parametrize("overrides,error", [
    (["experiment.roles={trunc: [a, z]}"], r"experiment.roles.trunc: \['z'\] are not recipes"),
    (["experiment.roles={trunc: []}"], "experiment.roles.trunc: has no candidate"),
    (["experiment.roles={trunc: [a], d: [b]}"], "experiment.roles.d: is also the name of a recipe"),
    (["experiment.roles={trunc: [a, b], other: [b]}"], r"experiment.roles: \['b'\] are candidates of more than one"),
    (["experiment.roles={trunc: [a, c]}"], "experiment.roles.trunc: candidates train different budgets"),
    (["experiment.roles={trunc: [a]}", "experiment.baseline=a"], r"experiment.baseline: \['a'\] are not recipes "
                                                                 r"\(trunc, b, c, d\)"),
    (["experiment.roles={trunc: [a]}", "experiment.last_head_recipes=[trunc]"], "last_head_recipes"),
    (["experiment.roles={trunc: [a]}", "experiment.test_seed=1"], "experiment.test_seed: must differ"),
    (["experiment.roles={trunc: [a]}", "synth.seed=2"], "synth.seed: the training corpus's seed 2 must differ"),
    (["experiment.roles={trunc: [a]}", "experiment.choice_seeds=[]"], "experiment.choice_seeds: must not be empty"),
])
def test_bad_roles_and_seeds_are_one_clear_error(overrides, error):
    with pytest.raises(ConfigError, match=error):
        load(*overrides)
