"""The study's plots: test accuracy per epoch (``accuracy-<dataset>-<model>.png``), accuracies
(``bars.png``) and differences to the baseline (``differences.png``); colours are the arm kinds'."""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Tuple

import torch

import proxyaug as pa

from .arms import arm_kind
from .config import Study
from .text import slug

Bars = Tuple[List[str], List[float], Any, List[str]]  # labels, values, error bars, colours


def _accuracy_curves(plt: Any, out: str, group: str, g: Dict[str, Any], records: List[Dict[str, Any]], refresh_epochs: List[int]) -> str:
    from matplotlib.ticker import MaxNLocator

    dname, mname = group.split(" / ")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    means = []
    for a in g["arms"]:
        curves = torch.tensor([r["test_acc_curve"] for r in records if (r["dataset"], r["model"], r["arm"]) == (dname, mname, a)]) * 100
        epochs = torch.arange(1, curves.shape[1] + 1)
        means.append(curves.mean(0))
        ax.plot(epochs, means[-1], label=a, lw=1.4)
    for e in refresh_epochs:
        ax.axvline(e + 1, color="grey", lw=0.8, ls=":")
    ax.set(xlabel="epoch (dotted: refresh / re-split after it)", ylabel="test accuracy (%), mean over seeds", title=f"{dname}, {mname}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    values = torch.cat(means)  # every epoch of every curve is shown, the first ones included
    lo, hi = float(values.min()), float(values.max())
    pad = max(1.0, 0.05 * (hi - lo))
    ax.set_ylim(max(0.0, lo - pad), min(100.0, hi + pad))
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = os.path.join(out, slug(f"accuracy-{dname}-{mname}") + ".png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _bar_panels(plt: Any, path: str, groups: List[str], rows: Callable[[str], Bars], title: str, zero: bool) -> str:
    """One horizontal bar chart per group: ``rows(group) -> (labels, values, errors, colours)``."""
    fig, axes = plt.subplots(len(groups), 1, figsize=(7.5, 2.6 * len(groups)), squeeze=False)
    for ax, group in zip(axes[:, 0], groups):
        labels, values, errors, colors = rows(group)
        ax.barh(range(len(labels)), values, xerr=errors, color=colors, capsize=3)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.invert_yaxis()
        if zero:
            ax.axvline(0, color="black", lw=0.8)
        else:  # accuracies: zoom on the bars
            lo, hi = min(v - e for v, e in zip(values, errors)), max(v + e for v, e in zip(values, errors))
            ax.set_xlim(max(0.0, lo - 2), min(100.0, hi + 1))
        ax.set_title(f"{group}: {title}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plots(out: str, records: List[Dict[str, Any]], summary: Dict[str, Any], study: Study) -> List[str]:
    """Write the study's plots into ``out``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    refresh_epochs = pa.ProxySchedule.parse(study.schedule).refresh_epochs
    written = [_accuracy_curves(plt, out, group, g, records, refresh_epochs) for group, g in summary.items()]

    def accuracies(group: str) -> Bars:
        arms = summary[group]["arms"]
        return (list(arms), [100 * e["test_acc"]["mean"] for e in arms.values()], [100 * e["test_acc"]["std"] for e in arms.values()],
                [arm_kind(e["kind"]).color for e in arms.values()])

    def differences(group: str) -> Bars:
        comps = [c for c in summary[group]["comparisons"] if c["versus"] == "baseline"]
        arms = summary[group]["arms"]
        err = [[100 * (c["mean"] - c["ci95_low"]) for c in comps], [100 * (c["ci95_high"] - c["mean"]) for c in comps]]
        return [c["arm"] for c in comps], [100 * c["mean"] for c in comps], err, [arm_kind(arms[c["arm"]]["kind"]).color for c in comps]

    groups = list(summary)
    written.append(_bar_panels(plt, os.path.join(out, "bars.png"), groups, accuracies, "test accuracy, mean ± sd over seeds", zero=False))
    written.append(_bar_panels(plt, os.path.join(out, "differences.png"), groups, differences,
                               "arm minus baseline, test accuracy pp (paired, 95 % CI)", zero=True))
    return written
