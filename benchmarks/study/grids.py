"""Proxy grids: for each refresh of an arm that draws them, one row per training image given a new
map: the original, its map over it, what the arm made of it (the replaced region outlined in cyan,
its share of the image written at the corner) and ``|proxy - original|``, which shows a blend too
faint to see. The title names the dataset, model, arm, seed and refresh; each row its true and
predicted class; a caption says what the outline, the share and the last column are."""

from __future__ import annotations

import textwrap
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

import proxyaug as pa

from .arms import Arm
from .text import slug

OUTLINE = "cyan"  # apart from the map's colours and from grey or natural images, as proxyaug.viz's


def grid_file(dataset: str, model: str, arm: str, seed: int, refresh: int) -> str:
    """The file name (under ``grids/``) of an arm's grid at its ``refresh``-th refresh (from 1).

    Examples:
        >>> grid_file("fashion-mnist", "cnn", "proxy", 0, 1)
        'fashion-mnist-cnn-proxy-seed0-refresh1.png'
    """
    return slug(f"{dataset}-{model}-{arm}-seed{seed}-refresh{refresh}") + ".png"


@torch.no_grad()
def predictions(model: nn.Module, x: torch.Tensor, preprocess: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """The classes ``model`` predicts for images ``x`` ``(B, C, H, W)`` in eval mode, ``(B,)`` on
    the CPU; every module's training flag is left as it was."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        device = next(model.parameters()).device
        return model(preprocess(x.to(device))).argmax(1).cpu()
    finally:
        for m, training in modes.items():
            m.training = training


def what_changes(spec: Dict[str, Any]) -> str:
    """What the arm does to the outlined pixels, in words, from its settings.

    Examples:
        >>> what_changes({"mode": "blend", "weight": 0.1})
        'scaled by 1 - 0.1 x map (at most 10 % darker)'
        >>> what_changes({"mode": "black"})
        'set to black'
    """
    mode = spec.get("mode", pa.functional.DEFAULT_MODE)
    if mode == "blend":
        w = spec.get("weight", pa.functional.DEFAULT_WEIGHT)
        return f"scaled by 1 - {w} x map (at most {100 * w:.0f} % darker)"
    return {"black": "set to black", "mean": "set to the image's mean", "blur": "blurred"}.get(mode, f"replaced ({mode})")


def _picture(t: torch.Tensor) -> Any:
    """An image ``(C, H, W)`` in [0, 1] as ``imshow`` takes it."""
    t = t.clamp(0, 1)
    return t[0].numpy() if t.shape[0] == 1 else t[:3].permute(1, 2, 0).numpy()


def _outline(ax: Any, mask: torch.Tensor) -> None:
    """The edge of ``mask`` ``(H, W)`` in cyan; padded, so that a region at the border is closed there."""
    if not mask.any():
        return
    h, w = mask.shape
    padded = torch.nn.functional.pad(mask.float(), (1, 1, 1, 1)).numpy()
    ax.contour(torch.arange(-1, w + 1).numpy(), torch.arange(-1, h + 1).numpy(), padded, levels=[0.5], colors=OUTLINE, linewidths=1.2)
    ax.set(xlim=(-0.5, w - 0.5), ylim=(h - 0.5, -0.5))


def grid_figure(images: torch.Tensor, maps: torch.Tensor, proxies: torch.Tensor, *, threshold: float, titles: Sequence[str],
                rows: Sequence[str], wrong: Sequence[bool], title: str, caption: str) -> Any:
    """The grid as a matplotlib figure: ``images`` and ``proxies`` ``(B, C, H, W)`` in [0, 1],
    ``maps`` ``(B, H, W)`` at the image size, the outline where ``maps > threshold``; ``titles``
    name the first three columns, ``rows`` each row (its classes; red where ``wrong``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images)
    diff = (proxies.float() - images.float()).abs().amax(1)  # the brightest channel's change
    top = max(float(diff.max()), 1e-6)
    heat = pa.viz.colorize(maps.unsqueeze(1).clamp(0, 1))
    rgb = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images[:, :3]
    fig, axes = plt.subplots(n, 4, figsize=(7.2, 1.3 * n + 1.7), squeeze=False, layout="constrained")
    for r in range(n):
        mask = maps[r] > threshold
        grey = {"cmap": "gray", "vmin": 0, "vmax": 1} if images.shape[1] == 1 else {}
        axes[r, 0].imshow(_picture(images[r]), interpolation="nearest", **grey)
        axes[r, 1].imshow(_picture(0.5 * rgb[r].clamp(0, 1) + 0.5 * heat[r]), interpolation="nearest")
        axes[r, 2].imshow(_picture(proxies[r]), interpolation="nearest", **grey)
        _outline(axes[r, 2], mask)
        axes[r, 2].text(0.03, 0.97, f"{100 * float(mask.float().mean()):.0f} %", transform=axes[r, 2].transAxes, ha="left", va="top",
                        color="white", fontsize=7, bbox={"facecolor": "black", "alpha": 0.6, "lw": 0, "pad": 1})
        shown = axes[r, 3].imshow(diff[r].numpy(), cmap="magma", vmin=0, vmax=top, interpolation="nearest")
        axes[r, 0].set_ylabel(rows[r], rotation=0, ha="right", va="center", fontsize=7, color="#b00000" if wrong[r] else "black")
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    for ax, name in zip(axes[0], [*titles, f"|{titles[2]} - {titles[0]}|"]):
        ax.set_title(name, fontsize=8)
    bar = fig.colorbar(shown, ax=axes[:, 3], shrink=min(1.0, 3 / n), aspect=15)
    bar.ax.tick_params(labelsize=6)
    bar.set_label("pixel change (images in [0, 1])", fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.supxlabel("\n".join(textwrap.wrap(caption, 105)), fontsize=7, ha="left", x=0.02)
    return fig


def row_labels(labels: torch.Tensor, predicted: torch.Tensor, class_names: Sequence[str]) -> List[str]:
    """Each row's label: its true and predicted class (names where known).

    Examples:
        >>> row_labels(torch.tensor([3, 1]), torch.tensor([5, 1]), ["a", "b", "c", "d", "e", "f"])
        ['true: d\\npredicted: f\\n(wrong)', 'true: b\\npredicted: b\\n(right)']
    """
    name = lambda c: class_names[c] if c < len(class_names) else f"class {c}"  # noqa: E731
    return [f"true: {name(y)}\npredicted: {name(p)}\n({'right' if y == p else 'wrong'})" for y, p in zip(labels.tolist(), predicted.tolist())]


def save_grid(path: str, arm: Arm, rows: torch.Tensor, *, model: nn.Module, preprocess: Callable[[torch.Tensor], torch.Tensor],
              title: str, class_names: Sequence[str] = (), chosen: Optional[int] = None) -> None:
    """Draw ``arm.pictures(rows)`` into ``path`` with the arm's ``grid_titles``, the classes ``model``
    predicts for the originals now, ``title`` above (``chosen``: how many images got a map)."""
    import matplotlib.pyplot as plt

    x0, maps, out = arm.pictures(rows)
    labels = arm.originals(rows)[1]
    predicted = predictions(model, x0, preprocess)
    s, titles = arm.spec, arm.grid_titles
    threshold = s.get("threshold", pa.functional.DEFAULT_THRESHOLD)
    of = f"{len(rows)} of the {chosen}" if chosen is not None else f"{len(rows)}"
    caption = (f"Rows: {of} training images given a new map at this refresh; predicted: the model's class for the original now "
               f"(red: wrong). Column '{titles[1]}': the {s.get('method', 'attention')} map over the image. Cyan outline: where the map "
               f"exceeds the threshold {threshold}, the pixels the arm changes, {what_changes(s)}; n\u00a0%: their share of the image. "
               f"Last column: how much each pixel changed (the brightest channel), on one scale for the figure.")
    fig = grid_figure(x0, arm.full_size(maps), out, threshold=threshold, titles=titles, rows=row_labels(labels, predicted, class_names),
                      wrong=(labels != predicted).tolist(), title=title, caption=caption)
    fig.savefig(path, dpi=110)
    plt.close(fig)
