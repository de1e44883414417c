"""RQ2's plots: the accuracy curves under patch drop and shuffle of the CNN arms and the ViT
(``compare-occlusion-<dataset>-<model>.png``), and the agreement of each arm's maps with the ViT's
against the ceilings and floors (``compare-agreement-<dataset>-<model>.png``)."""

from __future__ import annotations

import os
from typing import Any, Dict

from .text import slug

BRACKET_STYLE = {  # name: (label, colour, line style)
    "ceiling_vit": ("ceiling: ViT seed s vs s+1", "green", "-"),
    "ceiling_cnn": ("ceiling: CNN baseline seed s vs s+1", "green", "--"),
    "floor_blob": ("floor: centred blob", "orange", "-."),
    "floor_noise": ("floor: uniform noise", "red", ":"),
}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def occlusion_plot(out: str, group: str, g: Dict[str, Any], colors: Dict[str, str]) -> str:
    """Accuracy (mean over seeds) under random and salient-first patch drop and under patch shuffle
    (``colors``: each arm's, [`arm_colors`][benchmarks.study.plots.arm_colors])."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    fractions = list(g["fractions"])
    panels = (("occlusion_random", "random patch drop", fractions, "share of patches dropped"),
              ("occlusion_salient", "salient-first drop (own map)", fractions, "share of patches dropped"),
              ("shuffle", "patch shuffle", ["none", *map(str, g["grids"])], "grid (g x g tiles shuffled)"))
    lines = [(a, c, colors[a], "-") for a, c in g["curves"].items()]
    lines.append((f"ViT ({g['vit']}, {g['vit_arm']})", g["vit_curves"], "black", "--"))
    for ax, (key, title, xs, xlabel) in zip(axes, panels):
        for label, curves, color, style in lines:
            ax.plot(range(len(xs)), [100 * v for v in curves[key]], color=color, ls=style, marker=".", label=label, lw=1.3)
        ax.set_xticks(range(len(xs)), [f"{x:.1f}" if isinstance(x, float) else x for x in xs], fontsize=7)
        ax.set(title=title, xlabel=xlabel, ylabel="test accuracy (%), mean over seeds")
        ax.title.set_fontsize(9)
    axes[0].legend(fontsize=7, loc="lower left")
    fig.suptitle(f"{group} against the ViT", fontsize=9)
    fig.tight_layout()
    path = os.path.join(out, slug(f"compare-occlusion-{group.replace(' / ', '-')}") + ".png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def agreement_plot(out: str, group: str, g: Dict[str, Any], colors: Dict[str, str]) -> str:
    """Per ViT method: each arm's Spearman and top-10 % IoU with the ViT's maps (mean ± sd over
    seeds), the ceilings and floors as vertical lines."""
    plt = _pyplot()
    methods, arms = g["methods"], list(g["pairs"])
    fig, axes = plt.subplots(2, len(methods), figsize=(3.8 * len(methods), 2.4 + 0.7 * len(arms)), squeeze=False)
    for row, stat in enumerate(("spearman", "iou")):
        for col, m in enumerate(methods):
            ax, key = axes[row, col], f"{stat}_{m}"
            values = [g["pairs"][a][key]["mean"] for a in arms]
            errors = [g["pairs"][a][key]["std"] for a in arms]
            ax.barh(range(len(arms)), values, xerr=errors, color=[colors[a] for a in arms], capsize=3)
            ax.set_yticks(range(len(arms)), arms, fontsize=7)
            ax.invert_yaxis()
            for name, (label, color, style) in BRACKET_STYLE.items():
                if key in g["brackets"].get(name, {}):
                    ax.axvline(g["brackets"][name][key]["mean"], color=color, ls=style, lw=1.2, label=label)
            ax.axvline(0, color="black", lw=0.6)
            ax.set_title(f"{'Spearman' if stat == 'spearman' else 'top-10 % IoU'} with the ViT's {m}", fontsize=8)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=7, frameon=False)
    fig.suptitle(f"{group}: agreement of the CNN's Grad-CAM++ maps with the ViT's", fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path = os.path.join(out, slug(f"compare-agreement-{group.replace(' / ', '-')}") + ".png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
