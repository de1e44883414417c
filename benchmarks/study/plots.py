"""The study's plots: test accuracy per epoch (``accuracy-<dataset>-<model>.png``), accuracies
(``bars.png``, the axis from 0) and differences to the baseline (``differences.png``). Every plot
of the harness colours an arm with [`arm_colors`][benchmarks.study.plots.arm_colors]."""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Iterable, List, Tuple

import torch

import proxyaug as pa

from .arms import arm_kind
from .config import Study
from .text import slug

Bars = Tuple[List[str], List[float], Any, List[str]]  # labels, values, error bars, colours

BASELINE_COLOR = "#7f7f7f"  # the reference every other arm is compared with: grey
# matplotlib's tab10 without its grey, then tab20's light shades without theirs: 18 colours
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5",
)


def arm_colors(names: Iterable[str]) -> Dict[str, str]:
    """One colour per arm, the same in every plot of a study: ``baseline`` grey, the other arms
    the palette's colours in the order given (the config's arm order; a name given twice keeps
    its first place).

    Examples:
        >>> arm_colors(["baseline", "proxy", "random-mask", "proxy"])
        {'baseline': '#7f7f7f', 'proxy': '#1f77b4', 'random-mask': '#ff7f0e'}
    """
    colors: Dict[str, str] = {}
    for name in names:
        if name not in colors:
            colors[name] = BASELINE_COLOR if name == "baseline" else PALETTE[sum(a != "baseline" for a in colors) % len(PALETTE)]
    return colors


def study_colors(study: Study, summary: Dict[str, Any]) -> Dict[str, str]:
    """The colours of a study's arms: the config's arms in order, then any other arm of ``summary``."""
    return arm_colors([*(a["name"] for a in study.arms), *(a for g in summary.values() for a in g["arms"])])


def epoch_label(kinds: Iterable[str]) -> str:
    """The accuracy plot's x label: what its dotted lines are, and a re-split only where an arm
    of one of ``kinds`` re-draws the train / validation split there.

    Examples:
        >>> print(epoch_label(["none", "proxy"]))
        epoch (dotted: the schedule's refresh points)
        >>> print(epoch_label(["none", "thesis-protocol"]))
        epoch (dotted: the schedule's refresh points; thesis-protocol re-splits train / validation there)
    """
    resplit = sorted({k for k in kinds if arm_kind(k).resplits})
    where = f"; {', '.join(resplit)} re-split{'s' if len(resplit) == 1 else ''} train / validation there" if resplit else ""
    return f"epoch (dotted: the schedule's refresh points{where})"


def accuracy_file(group: str) -> str:
    """The file name of a group's accuracy plot.

    Examples:
        >>> accuracy_file("fashion-mnist / cnn")
        'accuracy-fashion-mnist-cnn.png'
    """
    dname, mname = group.split(" / ")
    return slug(f"accuracy-{dname}-{mname}") + ".png"


def _accuracy_curves(plt: Any, out: str, group: str, g: Dict[str, Any], records: List[Dict[str, Any]], refresh_epochs: List[int],
                     colors: Dict[str, str]) -> str:
    from matplotlib.ticker import MaxNLocator

    dname, mname = group.split(" / ")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    means = []
    for a in g["arms"]:
        curves = torch.tensor([r["test_acc_curve"] for r in records if (r["dataset"], r["model"], r["arm"]) == (dname, mname, a)]) * 100
        epochs = torch.arange(1, curves.shape[1] + 1)
        means.append(curves.mean(0))
        ax.plot(epochs, means[-1], label=a, lw=2.0 if a == "baseline" else 1.4, color=colors[a])
    for e in refresh_epochs:
        ax.axvline(e + 1, color="grey", lw=0.8, ls=":")
    ax.set(xlabel=epoch_label(e["kind"] for e in g["arms"].values()), ylabel="test accuracy (%), mean over seeds", title=f"{dname}, {mname}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    values = torch.cat(means)  # every epoch of every curve is shown, the first ones included
    lo, hi = float(values.min()), float(values.max())
    pad = max(1.0, 0.05 * (hi - lo))
    ax.set_ylim(max(0.0, lo - pad), min(100.0, hi + pad))
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = os.path.join(out, accuracy_file(group))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _bar_panels(plt: Any, path: str, groups: List[str], rows: Callable[[str], Bars], title: str, zero: bool) -> str:
    """One horizontal bar chart per group: ``rows(group) -> (labels, values, errors, colours)``.
    ``zero``: differences, a line at 0; else accuracies, the axis from 0 to 100 with each bar's
    value written beside it (a zoomed axis would make a 0.2 pp gap look large)."""
    fig, axes = plt.subplots(len(groups), 1, figsize=(7.5, 2.6 * len(groups)), squeeze=False)
    for ax, group in zip(axes[:, 0], groups):
        labels, values, errors, colors = rows(group)
        ax.barh(range(len(labels)), values, xerr=errors, color=colors, capsize=3)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.invert_yaxis()
        if zero:
            ax.axvline(0, color="black", lw=0.8)
        else:
            ax.set_xlim(0.0, 100.0)
            for k, (v, e) in enumerate(zip(values, errors)):
                ax.text(1.0, k, f"{v:.2f} ± {e:.2f}", va="center", fontsize=6, bbox={"facecolor": "white", "alpha": 0.8, "lw": 0, "pad": 1})
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
    colors = study_colors(study, summary)
    written = [_accuracy_curves(plt, out, group, g, records, refresh_epochs, colors) for group, g in summary.items()]

    def accuracies(group: str) -> Bars:
        arms = summary[group]["arms"]
        return (list(arms), [100 * e["test_acc"]["mean"] for e in arms.values()], [100 * e["test_acc"]["std"] for e in arms.values()],
                [colors[a] for a in arms])

    def differences(group: str) -> Bars:
        comps = [c for c in summary[group]["comparisons"] if c["versus"] == "baseline"]
        err = [[100 * (c["mean"] - c["ci95_low"]) for c in comps], [100 * (c["ci95_high"] - c["mean"]) for c in comps]]
        return [c["arm"] for c in comps], [100 * c["mean"] for c in comps], err, [colors[c["arm"]] for c in comps]

    groups = list(summary)
    written.append(_bar_panels(plt, os.path.join(out, "bars.png"), groups, accuracies,
                               "test accuracy %, mean ± sd over seeds", zero=False))
    written.append(_bar_panels(plt, os.path.join(out, "differences.png"), groups, differences,
                               "arm minus baseline, test accuracy pp (paired, 95 % CI)", zero=True))
    return written
