"""The learning-curve study's plots: test accuracy against the subset size (log-x) per budget
(``curves.png``), paired differences to the baseline with their Bonferroni intervals
(``curve-differences.png``), and test accuracy against steps at the smallest and largest size
(``curve-steps.png``). An arm has the same colour in every plot of the harness
([`arm_colors`][benchmarks.study.plots.arm_colors])."""

from __future__ import annotations

import os
import statistics
from typing import Any, Dict, List, Optional, Sequence

from .plots import arm_colors


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _size_ticks(ax: Any, sizes: List[int]) -> None:
    """Tick the log axis at the study's sizes, written out (600, 1,500, ...)."""
    ax.set_xticks(sizes, [f"{n:,}" for n in sizes])
    ax.minorticks_off()


def curve_plots(out: str, records: List[Dict[str, Any]], summary: Dict[str, Any], arms: Optional[Sequence[str]] = None) -> List[str]:
    """Write the three plots into ``out``; return their paths. ``arms``: the config's arm names in
    order, which fix each arm's colour (by default the order of the records)."""
    plt = _plt()
    groups = list(summary)
    colors = arm_colors([*(arms or ()), *(r["arm"] for r in records)])
    paths = []
    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 4.2), squeeze=False)
    for ax, group in zip(axes[0], groups):
        g = summary[group]
        for k, a in enumerate(g["arms"]):
            pts = [(n, g["per_size"][n]["arms"][a]["test_acc"]) for n in g["sizes"] if a in g["per_size"][n]["arms"]]
            ax.errorbar([n * (1 + 0.03 * (k - len(g["arms"]) / 2)) for n, _ in pts], [100 * t["mean"] for _, t in pts],
                        yerr=[100 * t["std"] for _, t in pts], label=a, color=colors[a], marker="o", ms=3, lw=1.2, capsize=2)
        ax.set(xscale="log", xlabel="training subset size (train + validation), log scale", ylabel="test accuracy % (mean ± sd over seeds)", title=group)
        _size_ticks(ax, g["sizes"])
        ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(os.path.join(out, "curves.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 4.2), squeeze=False)
    for ax, group in zip(axes[0], groups):
        # sizes with 3 or more paired seeds: the verdict's; fewer give intervals tens of points wide that hide the rest
        cs = [c for c in summary[group]["comparisons"] if c["versus"] == "baseline" and c["n"] >= 3]
        arms = list(dict.fromkeys(c["arm"] for c in cs))
        for k, a in enumerate(arms):
            mine = [c for c in cs if c["arm"] == a]
            x = [c["size"] * (1 + 0.04 * (k - len(arms) / 2)) for c in mine]
            y = [100 * c["mean"] for c in mine]
            err = [[100 * (c["mean"] - c["adj_low"]) for c in mine], [100 * (c["adj_high"] - c["mean"]) for c in mine]]
            ax.errorbar(x, y, yerr=err, label=a, color=colors[a], marker="o", ms=3, lw=1.2, capsize=2)
        ax.axhline(0, color="black", lw=0.8)
        ax.set(xscale="log", xlabel="training subset size, log scale (sizes with 3 or more paired seeds)",
               ylabel="arm - baseline, pp (Bonferroni 95 % CI)", title=group)
        _size_ticks(ax, summary[group]["sizes"])
        ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(os.path.join(out, "curve-differences.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    budgets = sorted({r["steps"] for r in records}, reverse=True)
    sizes = sorted({r["subset_size"] for r in records})
    shown = [sizes[0], sizes[-1]] if len(sizes) > 1 else sizes
    fig, axes = plt.subplots(len(budgets), len(shown), figsize=(5.5 * len(shown), 3.6 * len(budgets)), squeeze=False)
    for i, budget in enumerate(budgets):
        for j, n in enumerate(shown):
            ax = axes[i][j]
            rs = [r for r in records if (r["steps"], r["subset_size"]) == (budget, n)]
            for a in dict.fromkeys(r["arm"] for r in rs):
                curves = [r for r in rs if r["arm"] == a]
                steps = curves[0]["eval_steps"]
                ax.plot(steps, [100 * statistics.fmean(c["test_acc_curve"][k] for c in curves) for k in range(len(steps))], marker="o", ms=2, label=a,
                        color=colors[a])
            ax.set(xlabel="step", ylabel="test accuracy %", title=f"{n:,} images, {budget:,} steps")
            ax.legend(fontsize=6)
    fig.tight_layout()
    paths.append(os.path.join(out, "curve-steps.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths
