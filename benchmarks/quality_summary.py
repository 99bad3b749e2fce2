"""The quality experiment's summary, from finished runs' results: the choice of each role's recipe on the
validation corpus, per-role cells (mean, std, seeds) on test and on validation, and the goals checked on test."""

from __future__ import annotations

import statistics

from pipeline.model.budgets import Budget, full_budget


def cell(values: list[float]) -> dict:
    """A table cell over seeds: {"mean", "std" (0 for one seed), "seeds"}."""
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "seeds": len(values)}


def fp16_scores(results: dict) -> dict[str, float]:
    """{budget: nDCG@5} of one evaluation's fp16 rows, in grid order."""
    return {r["budget"]: r["ndcg_at_5"] for r in results["rows"] if Budget.parse(r["budget"]).precision == "fp16"}


def criterion_budgets(scores: dict[str, float], trained: str) -> list[str]:
    """The budgets a candidate is judged on: every one ("grid"), the full one ("full"), or its own (a budget)."""
    if trained == "grid":
        return list(scores)
    if trained == "full":
        return [str(full_budget([Budget.parse(b) for b in scores]))]
    return [trained]


def choose(candidates: dict[str, list[dict]], trained: str) -> dict:
    """The candidate with the best validation nDCG@5: the mean over its runs (the choice seeds) of the mean over
    the budgets it trains; the first listed wins a tie. `candidates`: {recipe: [validation results.json]}.
    Returns {"recipe", "criterion", "seeds", "validation": {recipe: score}}."""
    scores = {}
    for recipe, runs in candidates.items():
        per_run = [fp16_scores(res) for res in runs]
        scores[recipe] = statistics.mean(
            statistics.mean(s[b] for b in criterion_budgets(s, trained)) for s in per_run)
    best = max(scores, key=lambda r: scores[r])
    what = {"grid": "mean nDCG@5 over the fp16 grid", "full": "nDCG@5 at the full budget"}.get(trained,
                                                                                            f"nDCG@5 at {trained}")
    return {"recipe": best, "criterion": what, "seeds": len(next(iter(candidates.values()))), "validation": scores}


def table(runs: list[dict], split: str, keep: list[str] | None = None, fp16_only: bool = True) -> dict[str, dict]:
    """{budget: cell} over runs of one split, in grid order; `keep`: only these budgets."""
    per_run = [{r["budget"]: r["ndcg_at_5"] for r in res[split]["rows"]} for res in runs]
    order = [r["budget"] for r in runs[0][split]["rows"]]
    return {b: cell([s[b] for s in per_run]) for b in order
            if (keep is None or b in keep) and (not fp16_only or Budget.parse(b).precision == "fp16")}


def eval_sets(runs: list[dict]) -> dict[str, dict]:
    """{split: {"fingerprint", "pages", "queries"}}; every run must have been evaluated on the same set per split,
    and validation must not be test (ValueError naming the runs otherwise)."""
    out = {}
    for split in ("validation", "test"):
        seen = {}
        for res in runs:
            seen.setdefault(res[split]["eval_fingerprint"], []).append(f"{res['recipe']}-s{res['seed']}")
        if len(seen) > 1:
            raise ValueError(f"runs were evaluated on different {split} sets: " +
                             "; ".join(f"{fp}: {', '.join(names)}" for fp, names in seen.items()))
        first = runs[0][split]
        out[split] = {"fingerprint": first["eval_fingerprint"], "pages": first["pages"], "queries": first["queries"]}
    if out["validation"]["fingerprint"] == out["test"]["fingerprint"]:
        raise ValueError("the validation and the test set are the same set: choices would be made on test")
    return out


def summary(roles: dict[str, dict], meta: dict) -> dict:
    """The machine-checked result. `roles`: {role: {"runs": [run_one results], "reported": budgets or None,
    "choice": choose() or None, "others": {recipe: [runs of the candidates not chosen]}}}; `meta`: "commit",
    "page_size", "default_recipe", "baseline". Returns {"commit", "split": "test", "page_size", "baseline",
    "default_recipe", "recipes": {role: {budget: cell}}, "bytes_per_page", "wall_s": {role: [per run]},
    "resumed_s": {role: [per run: the part of wall_s before the run's last start; None: unknown, wall_s partial]},
    "validation": {"recipes": ...}, "choice": {role: ...},
    "candidates": {recipe: {"test", "validation", "wall_s", "resumed_s"}},
    "precisions": {"recipes": (default and baseline, every precision), "bytes_per_page"}, "eval_sets", "goals",
    "goal_misses"}; budgets in grid order."""
    everything = [r for spec in roles.values() for r in [*spec["runs"], *sum(spec["others"].values(), [])]]
    rows = roles[meta["default_recipe"]]["runs"][0]["test"]["rows"]
    result = {"commit": meta["commit"], "split": "test", "page_size": meta["page_size"],
              "baseline": meta["baseline"], "default_recipe": meta["default_recipe"],
              "recipes": {role: table(s["runs"], "test", s["reported"]) for role, s in roles.items()},
              "bytes_per_page": {r["budget"]: r["bytes_per_page"] for r in rows
                                 if Budget.parse(r["budget"]).precision == "fp16"},
              "wall_s": {role: [r["wall_s"] for r in s["runs"]] for role, s in roles.items()},
              "resumed_s": {role: [r["resumed_s"] for r in s["runs"]] for role, s in roles.items()},
              "validation": {"recipes": {role: table(s["runs"], "validation", s["reported"])
                                         for role, s in roles.items()}},
              "choice": {role: s["choice"] for role, s in roles.items() if s["choice"]},
              "candidates": {recipe: {"test": table(runs, "test", s["reported"]),
                                      "validation": table(runs, "validation", s["reported"]),
                                      "wall_s": [r["wall_s"] for r in runs],
                                      "resumed_s": [r["resumed_s"] for r in runs]}
                             for s in roles.values() for recipe, runs in s["others"].items()},
              "precisions": {"recipes": {role: table(roles[role]["runs"], "test", fp16_only=False)
                                         for role in dict.fromkeys([meta["default_recipe"], meta["baseline"]])},
                             "bytes_per_page": {r["budget"]: r["bytes_per_page"] for r in rows}},
              "eval_sets": eval_sets(everything)}
    checks = goal_checks(result)
    result["goals"] = {name: not missed for name, missed in checks.items()}
    result["goal_misses"] = {name: missed for name, missed in checks.items() if missed}
    return result


def goals(result: dict) -> dict[str, bool]:
    """The issue's goals on the default role: met (True) or missed (False); goal_checks says where."""
    return {name: not missed for name, missed in goal_checks(result).items()}


def goal_checks(result: dict) -> dict[str, list[str]]:
    """Each goal -> where it is missed (empty: met), on the default role: >= the baseline at every budget (the full
    budget within one std); (L/2, 32, pool 2) >= 95% of the full budget; >= each separately trained model at its
    budget; and, given every precision's cells, at every bytes/page of the grid its best budget >= the baseline's."""
    recipes, default = result["recipes"], result["recipes"][result["default_recipe"]]
    base = recipes[result["baseline"]]
    full = str(full_budget([Budget.parse(b) for b in result["bytes_per_page"]]))
    out = {"at_least_baseline_everywhere": [
        f"{b}: {default[b]['mean']:.3f} < {base[b]['mean']:.3f}" for b in default if b in base and
        default[b]["mean"] < base[b]["mean"] - (max(default[b]["std"], base[b]["std"]) if b == full else 0.0)]}
    target = str(Budget(Budget.parse(full).layers // 2, 32, 2))
    if target in default:
        ratio = default[target]["mean"] / default[full]["mean"]
        out[f"{target}_at_least_95pct_of_full"] = [] if ratio >= 0.95 else [f"{target}: {ratio:.1%} of full"]
    for name, t in recipes.items():
        if name != result["default_recipe"] and len(t) == 1 and next(iter(t)) in default:
            b = next(iter(t))
            miss = default[b]["mean"] < t[b]["mean"]
            key = f"{b}_at_least_separately_trained"
            where = [f"{b}: {default[b]['mean']:.3f} < {name} {t[b]['mean']:.3f}"] if miss else []
            out[key] = out.get(key, []) + where
    prec = result.get("precisions", {}).get("recipes", {})
    if result["default_recipe"] in prec and result["baseline"] in prec:
        out["pareto_all_precisions"] = pareto_misses(result["precisions"], result["default_recipe"], result["baseline"])
    return out


def pareto_misses(precisions: dict, default: str, baseline: str) -> list[str]:
    """Every bytes/page of the grid (all precisions) at which the default's best budget within those bytes is below
    the baseline's best within them."""
    sizes = precisions["bytes_per_page"]

    def best(table: dict, size: float) -> float | None:
        return max((c["mean"] for b, c in table.items() if sizes[b] <= size), default=None)

    out = []
    for size in sorted(set(sizes.values())):
        mine, theirs = best(precisions["recipes"][default], size), best(precisions["recipes"][baseline], size)
        if theirs is not None and (mine is None or mine < theirs):
            out.append(f"{size:g} bytes: {'-' if mine is None else f'{mine:.3f}'} < {theirs:.3f}")
    return out


def markdown(result: dict) -> str:
    """Per budget: nDCG@5 mean ± std (seeds) of every role and its fraction of the role's own full budget; then
    the choices made on validation and the goals."""
    recipes = result["recipes"]
    budgets = list(result["bytes_per_page"])
    full = budgets[0]  # rows start at the full budget
    chosen = {role: c["recipe"] for role, c in result.get("choice", {}).items()}
    names = [f"{r} = {chosen[r]}" if r in chosen and chosen[r] != r else r for r in recipes]
    lines = ["| budget | bytes/page | " + " | ".join(f"{n} (n={_seeds(recipes[r])})" for n, r in zip(names, recipes))
             + " |", "|" + "---|" * (2 + len(recipes))]
    for b in budgets:
        cells = []
        for r in recipes:
            c = recipes[r].get(b)
            if c is None:
                cells.append("-")
                continue
            frac = f" ({c['mean'] / recipes[r][full]['mean']:.2f})" if full in recipes[r] and b != full else ""
            cells.append(f"{c['mean']:.3f} ± {c['std']:.3f}{frac}")
        lines.append(f"| {b} | {int(result['bytes_per_page'][b])} | " + " | ".join(cells) + " |")
    notes = [f"- {role}: {c['recipe']} chosen on validation ({c['criterion']}, {c['seeds']} seed(s): "
             + ", ".join(f"{r} {v:.3f}" for r, v in c["validation"].items()) + ")"
             for role, c in result.get("choice", {}).items()]
    misses = result.get("goal_misses", {})
    for name, ok in result.get("goals", {}).items():
        notes.append(f"- goal {name}: {'met' if ok else 'MISSED'}" + (f" ({'; '.join(misses[name])})"
                                                                      if name in misses else ""))
    notes += wall_notes(result)
    lines += [""] + notes if notes else []
    return "\n".join(lines)


def wall_notes(result: dict) -> list[str]:
    """One line per role: each run's wall seconds (training and both evaluations), marking the runs that were
    resumed (the seconds before their last start, a lower bound) or whose earlier starts are unknown."""
    def one(wall: float, resumed: float | None) -> str:
        if resumed is None:
            return f"{wall:.0f}+ (earlier starts unknown)"
        return f"{wall:.0f} (resumed; {resumed:.0f} before the last start)" if resumed > 0 else f"{wall:.0f}"

    resumed = result.get("resumed_s", {})
    return [f"- wall s per run, {role}: " + ", ".join(one(w, r) for w, r in zip(walls, resumed[role]))
            for role, walls in result.get("wall_s", {}).items() if role in resumed]


def _seeds(table: dict) -> int:
    return next(iter(table.values()))["seeds"]
