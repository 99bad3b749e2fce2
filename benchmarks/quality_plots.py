"""The quality experiment's figures: nDCG@5 against bytes/page (Pareto frontiers) and the learning curves."""

from __future__ import annotations

from pathlib import Path

EVERY = "every exit and precision (fp16, int8, bin)"


def _frontier(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(bytes, best nDCG@5 at <= bytes) along sorted bytes."""
    best, out = -1.0, []
    for size, value in sorted(points):
        best = max(best, value)
        out.append((size, best))
    return out


def pareto_panels(result: dict) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """{panel title: {role: [(bytes/page, mean nDCG@5)]}}: the deepest and the shallowest exit at fp16, and with a
    "precisions" block every exit and precision. A separately trained model (one budget) is a point in each panel
    its budget belongs to: an exit panel of its depth, and the every-exit panel."""
    from pipeline.model.budgets import Budget

    sizes = result["bytes_per_page"]
    depths = sorted({Budget.parse(b).layers for b in sizes})
    panels = {}
    for depth in dict.fromkeys([depths[-1], depths[0]]):
        panels[f"exit after {depth} layers (fp16)"] = {
            name: [(sizes[b], t[b]["mean"]) for b in t if Budget.parse(b).layers == depth]
            for name, t in result["recipes"].items()}
    prec = result.get("precisions", {}).get("recipes", {})
    if prec:
        all_sizes = result["precisions"]["bytes_per_page"]
        every = {name: [(all_sizes[b], c["mean"]) for b, c in t.items()] for name, t in prec.items()}
        every.update({name: [(sizes[b], t[b]["mean"]) for b in t]
                      for name, t in result["recipes"].items() if len(t) == 1})
        panels[EVERY] = every
    return panels


def plot_pareto(result: dict, path: Path) -> None:
    """pareto_panels() drawn: each grid role's Pareto frontier (mean of seeds), separately trained models as stars
    (in every panel's legend, so the colours read the same everywhere)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = pareto_panels(result)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), sharey=True, squeeze=False)
    colours = {name: f"C{i}" for i, name in enumerate(result["recipes"])}  # one colour per role in every panel
    single = {name for name, t in result["recipes"].items() if len(t) == 1}
    for ax, (title, roles) in zip(axes[0], panels.items()):
        for name, pts in roles.items():
            if name in single:
                xs, ys = zip(*pts) if pts else ((), ())  # an empty plot still gives the legend entry
                ax.plot(xs, ys, marker="*", markersize=13, linestyle="none", color=colours[name], label=name)
            elif pts:
                ax.plot(*zip(*_frontier(pts)), marker="." if title == EVERY else "o", color=colours.get(name, "k"),
                        label=name)
        ax.set_title(title)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("bytes per page")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("best nDCG@5 at <= bytes/page (mean of seeds)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_curves(results: dict[str, list[dict]], path: Path) -> None:
    """The learning curve of every role: nDCG@5 (validation) against step at each curve budget, one panel per role,
    one thin line per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4 * len(results), 3.6), sharey=True, squeeze=False)
    for ax, (name, runs) in zip(axes[0], results.items()):
        colours = {}
        for res in runs:
            for budget, points in res["curve"].items():
                colour = colours.setdefault(budget, f"C{len(colours)}")
                ax.plot(*zip(*points), color=colour, alpha=0.8, label=budget if res is runs[0] else None)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("nDCG@5 on the validation set")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
