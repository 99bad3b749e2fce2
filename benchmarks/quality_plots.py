"""The quality experiment's figures: nDCG@5 against bytes/page (Pareto frontiers) and the learning curves."""

from __future__ import annotations

from pathlib import Path


def _frontier(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(bytes, best nDCG@5 at <= bytes) along sorted bytes."""
    best, out = -1.0, []
    for size, value in sorted(points):
        best = max(best, value)
        out.append((size, best))
    return out


def plot_pareto(result: dict, path: Path) -> None:
    """nDCG@5 against bytes/page at the deepest and the shallowest exit (fp16): each grid role's Pareto frontier
    (mean of seeds), separately trained models as single points; with a "precisions" block, a third panel with the
    frontiers over every exit and precision."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.model.budgets import Budget

    sizes = result["bytes_per_page"]
    depths = sorted({Budget.parse(b).layers for b in sizes})
    prec = result.get("precisions", {}).get("recipes", {})
    panels = 3 if prec else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.2), sharey=True)
    colours = {name: f"C{i}" for i, name in enumerate(result["recipes"])}  # one colour per role in every panel
    for ax, depth in zip(axes, [depths[-1], depths[0]]):
        for name, table in result["recipes"].items():
            pts = [(sizes[b], table[b]["mean"]) for b in table if Budget.parse(b).layers == depth]
            if len(table) == 1:
                xs, ys = zip(*pts) if pts else ((), ())  # a legend entry in both panels
                ax.plot(xs, ys, marker="*", markersize=13, linestyle="none", color=colours[name], label=name)
                continue
            ax.plot(*zip(*_frontier(pts)), marker="o", color=colours[name], label=name)
        ax.set_title(f"exit after {depth} layers (fp16)")
    if prec:
        all_sizes = result["precisions"]["bytes_per_page"]
        for name, table in prec.items():
            pts = [(all_sizes[b], c["mean"]) for b, c in table.items()]
            axes[2].plot(*zip(*_frontier(pts)), marker=".", color=colours.get(name, "k"), label=name)
        axes[2].set_title("every exit and precision (fp16, int8, bin)")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("bytes per page")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("best nDCG@5 at <= bytes/page (mean of seeds)")
    axes[0].legend(fontsize=8)
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
