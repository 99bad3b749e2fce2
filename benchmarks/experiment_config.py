"""The quality experiment's config: recipes (overrides of a run config), roles (candidate recipes, one chosen on the
validation corpus), seeds, and the corpora's seeds."""

from __future__ import annotations

from pydantic import Field, model_validator

from pipeline.cli import RunConfig
from pipeline.configlib import FieldError, PosInt, Section


class ExperimentConfig(Section):
    """The quality experiment: recipes x seeds through the real training path."""

    out_dir: str = "experiment_out"
    """Everything the experiment writes (corpora, shards, runs, summary)."""
    seeds: list[int] = [0, 1, 2]
    """Seeds of each role (model init, data order)."""
    recipes: dict[str, list[str]] = {
        "truncation": ["loss.budgets=full"],
        "diagonal": ["loss.budgets=diagonal", "loss.sample_k=2"],
        "3d-sampled": ["loss.budgets=grid", "loss.sample_k=6"],
        "only-L2-d32-p2": ["loss.budgets=only", "loss.only=L2-d32-p2"],
        "only-L1-d16-p4": ["loss.budgets=only", "loss.only=L1-d16-p4"],
    }
    """name -> dotted overrides of the run config. A recipe with loss.budgets=only is a separately trained model:
    it is reported at its own budget only."""
    roles: dict[str, list[str]] = {}
    """role -> candidate recipes: each candidate runs at choice_seeds, the one with the best validation nDCG@5
    (mean over the budgets it trains: the grid, the full budget, or its own budget) runs at the role's seeds and is
    reported as the role. A recipe in no role is a role of its own name."""
    choice_seeds: list[int] = [0]
    """Seeds at which every candidate of a role runs before the choice."""
    recipe_seeds: dict[str, list[int]] = {}
    """Seeds of a role when not `seeds` (ablations may run fewer; every table says how many)."""
    default_recipe: str = "diagonal"
    """The role the configs ship (the goals are checked on it)."""
    baseline: str = "truncation"
    """The role the others are compared with."""
    results: str = "benchmarks/results/quality_experiment.json"
    """The machine-checked summary (per role and budget: mean, std, seeds), from which the table and plots are made."""
    last_head_recipes: list[str] = ["truncation"]
    """Recipes evaluated with the last head at every exit."""
    eval_docs: PosInt = 67
    """Documents of the validation corpus and of the test corpus each (unique answer codes within each)."""
    validation_seed: int = 1
    """synth.seed of the validation corpus (every choice is made on it)."""
    test_seed: int = 2
    """synth.seed of the test corpus (the reported numbers)."""
    parallel: PosInt = 2
    """Runs at once (each a single-rank DeepSpeed process)."""
    threads: PosInt | None = None
    """Torch threads per run (default: the machine's cores / parallel)."""
    precision_recipes: list[str] = []
    """Roles whose test results `python -m benchmarks.precision_quality` summarises at every page-vector precision
    (empty: the default role)."""
    precision_results: str = "benchmarks/results/precision_quality.json"
    """The precision summary (per role and budget with precision: mean, std, seeds; retention; goals)."""

    @model_validator(mode="after")
    def check(self):
        if not self.seeds or not self.recipes or not self.choice_seeds:
            raise FieldError(next(k for k in ("seeds", "recipes", "choice_seeds") if not getattr(self, k)),
                             "must not be empty")
        if self.validation_seed == self.test_seed:
            raise FieldError("test_seed", f"must differ from validation_seed ({self.validation_seed})")
        for role, candidates in self.roles.items():
            unknown = [r for r in candidates if r not in self.recipes]
            if not candidates or unknown:
                raise FieldError(f"roles.{role}", f"{unknown} are not recipes" if unknown else "has no candidate")
            if role in self.recipes and candidates != [role]:
                raise FieldError(f"roles.{role}", "is also the name of a recipe")
        listed = [r for candidates in self.roles.values() for r in candidates]
        twice = sorted({r for r in listed if listed.count(r) > 1})
        if twice:
            raise FieldError("roles", f"{twice} are candidates of more than one role")
        names = list(self.role_candidates())
        for key, known in (("last_head_recipes", list(self.recipes)), ("recipe_seeds", names),
                           ("default_recipe", names), ("baseline", names), ("precision_recipes", names)):
            value = getattr(self, key)
            unknown = [r for r in ([value] if isinstance(value, str) else value) if r not in known]
            if unknown:
                raise FieldError(key, f"{unknown} are not recipes ({', '.join(known)})")
        return self

    def role_candidates(self) -> dict[str, list[str]]:
        """role -> candidate recipes: the configured roles, then every recipe in no role as a role of its own."""
        taken = {r for candidates in self.roles.values() for r in candidates}
        return {**self.roles, **{r: [r] for r in self.recipes if r not in taken}}

    def seeds_of(self, role: str) -> list[int]:
        return self.recipe_seeds.get(role, self.seeds)


class ExperimentRunConfig(RunConfig):
    """The run's tree plus the experiment's own section."""

    experiment: ExperimentConfig = Field(default_factory=ExperimentConfig)

    @model_validator(mode="after")
    def check_recipes(self):
        x = self.experiment
        if self.synth.seed in (x.validation_seed, x.test_seed):
            raise FieldError("synth.seed", f"the training corpus's seed {self.synth.seed} must differ from "
                                           "experiment.validation_seed and experiment.test_seed")
        for name in x.recipes:  # each recipe must give a valid run config
            try:
                recipe_config(self, name)
            except ValueError as e:
                raise FieldError(f"experiment.recipes.{name}", str(e)) from None
        for role, candidates in x.role_candidates().items():
            kinds = {trained_budgets(self, r) for r in candidates}
            if len(kinds) > 1:
                raise FieldError(f"experiment.roles.{role}", f"candidates train different budgets ({sorted(kinds)}): "
                                                             "they cannot be chosen between on one criterion")
        return self


def run_config(cfg: ExperimentRunConfig) -> RunConfig:
    """The run's part of the tree (what each stage's command reads)."""
    return RunConfig(**{name: getattr(cfg, name) for name in RunConfig.model_fields})


def recipe_config(cfg: ExperimentRunConfig, recipe: str) -> RunConfig:
    """The run config of one recipe: the run's tree with the recipe's overrides applied and checked."""
    from pipeline.configlib import apply_override, build

    tree = run_config(cfg).model_dump()
    for item in cfg.experiment.recipes[recipe]:
        apply_override(tree, item)
    return build(RunConfig, tree)


def trained_budgets(cfg: ExperimentRunConfig, recipe: str) -> str:
    """What a recipe trains: "grid" (several budgets), "full", or its one budget like "L2-d32-p2" (loss.budgets=only).
    A role's candidates are compared on validation over exactly these budgets."""
    loss = recipe_config(cfg, recipe).loss
    if loss.budgets == "only":
        return str(loss.only)
    return "full" if loss.budgets == "full" else "grid"


def reported_budgets(cfg: ExperimentRunConfig, role: str) -> list[str] | None:
    """The budgets a role is reported at: its own for a separately trained model, else None (every budget)."""
    trained = trained_budgets(cfg, cfg.experiment.role_candidates()[role][0])
    return None if trained in ("grid", "full") else [trained]
