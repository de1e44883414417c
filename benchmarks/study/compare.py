"""RQ2's measurement (issue 25): what a trained model looks at and how it fails, saved per run for
the comparison with the ViT (``benchmarks.study.compare_report``).

With ``Study.compare = N`` every run is measured once, after its last epoch, and writes
``<out>/compare/<key>.pt``, a dict of tensors on the CPU (``T`` test images, ``N`` map images, a
``g`` x ``g`` map grid, ``F`` drop fractions, ``G`` shuffle grids):

- ``index`` ``(N,)``: the map images, indices into the test split; a stratified pick seeded by the
  split seed, the same for every arm, model and seed;
- ``methods``: the model's map methods, its own first: a CNN ``["gradcam++"]`` (the thesis'
  method), a ViT ``["rollout", "legrad", "gradcam++"]`` (attention rollout, LeGrad, and Grad-CAM++
  like the CNN's); each at its default layer (the CNN's last spatial layer, the ViT's last block's
  first norm), for the predicted class;
- ``maps`` ``{method: (N, g, g)}``: the maps resized bilinearly to the common grid (``GRID``: 7, the
  grid both models' maps have at 28 px), min-max normalised per image;
- ``entropy`` and ``half_area`` ``{method: (N,)}``: the entropy of each map and the share of its
  grid's cells that hold half its mass (the fewest highest cells; 1 for a constant map);
- ``labels``, ``pred`` ``(T,)`` and ``correct`` ``(T,)`` bool: the whole test split's labels,
  predicted classes and whether each is right;
- ``occlusion_random`` and ``occlusion_salient`` ``(T, F)`` bool: still right after dropping (black)
  a share of the ``patch`` x ``patch`` patches (fractions 0 to 0.9), in a random order, or most
  salient first by the model's own map (``proxyaug.metrics.occlusion_curve``);
- ``shuffle`` ``(T, G)`` bool: still right with its ``g`` x ``g`` tiles shuffled, for each grid of
  ``compare_grids`` (``proxyaug.metrics.shuffle_accuracy``);
- ``fractions``, ``grids``, ``patch``, ``grid`` and ``dataset``, ``model``, ``arm``, ``seed``.

The random drops and shuffles come from generators seeded by the split seed, so every run sees the
same ones; nothing here draws from the global generator, so training is bit-identical with the
measurement on or off.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from torch import nn

import proxyaug as pa
from proxyaug import metrics as M

from ..data import Data
from .config import Study
from .explain import stratified_pick

GRID = 7  # the common map grid
CHUNK = 250  # images per map computation (memory)
FORWARD = 500  # images per forward of the robustness measures
CNN_METHODS = ("gradcam++",)
VIT_METHODS = ("rollout", "legrad", "gradcam++")
PICK_OFFSET, DROP_OFFSET, SHUFFLE_OFFSET = 888, 31_000, 32_000  # seeds: split_seed + offset


@dataclasses.dataclass
class CompareSet:
    """The test split as tensors and the map images.

    Attributes:
        x: every test image ``(T, C, H, W)`` in [0, 1], before the model's normalisation.
        y: labels ``(T,)``.
        index: the map images ``(N,)``, indices into ``x``.
        info: one line for the report.
    """

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor
    info: str


def comparison_set(data: Data, study: Study) -> Optional[CompareSet]:
    """The study's comparison images of ``data`` (``None`` when ``study.compare`` is 0)."""
    if not study.compare:
        return None
    loader = torch.utils.data.DataLoader(data.test, batch_size=1000, generator=torch.Generator())  # no draw from the global one
    xs, ys = zip(*((x, y) for x, y in loader))
    x, y = torch.cat(xs), torch.cat(ys).long()
    index = stratified_pick(y, min(study.compare, len(y)), study.split_seed + PICK_OFFSET)
    info = (f"maps on {len(index)} test images (stratified, fixed), robustness and consistency on all {len(y)}; "
            f"patch {study.compare_patch}, shuffle grids {list(study.compare_grids)}")
    return CompareSet(x, y, index, info)


def is_transformer(model: nn.Module) -> bool:
    """Whether ``model`` is a vision transformer proxyaug's rollout and LeGrad read (timm or torchvision)."""
    timm_like = getattr(model, "blocks", None) is not None and getattr(model, "patch_embed", None) is not None
    return timm_like or (hasattr(model, "class_token") and hasattr(getattr(model, "encoder", None), "layers"))


def map_methods(model: nn.Module) -> Tuple[str, ...]:
    """The map methods measured on ``model``, its own first."""
    return VIT_METHODS if is_transformer(model) else CNN_METHODS


def half_area(maps: torch.Tensor) -> torch.Tensor:
    """The share of each map's cells that holds half its mass: the fewest highest cells, ``(B,)``.

    Examples:
        >>> half_area(torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]]]))
        tensor([0.2500, 0.5000, 1.0000])
    """
    flat = maps.flatten(1).float()
    ordered = flat.sort(dim=1, descending=True).values
    total = ordered.sum(dim=1, keepdim=True)
    cells = (ordered.cumsum(dim=1) < 0.5 * total).sum(dim=1) + 1  # the first cell at which half is reached
    return torch.where(total[:, 0] > 0, cells.float() / flat.shape[1], torch.ones_like(total[:, 0]))


def on_grid(maps: torch.Tensor) -> torch.Tensor:
    """Maps ``(B, h, w)`` in [0, 1] on the ``GRID`` x ``GRID`` grid: as they are when they have it,
    else resized bilinearly (``align_corners=False``) and min-max normalised per image again."""
    if maps.shape[-2:] == (GRID, GRID):
        return maps.float()
    resized = nn.functional.interpolate(maps.unsqueeze(1).float(), size=(GRID, GRID), mode="bilinear", align_corners=False)[:, 0]
    return pa.functional.normalize_maps(resized)


def model_maps(model: nn.Module, x: torch.Tensor, preprocess: Callable, method: str) -> torch.Tensor:
    """``method``'s maps of the predicted class at the default layer, at their own resolution, ``(B, h, w)`` on the CPU."""
    device = next(model.parameters()).device
    spec = pa.MapSpec(method)
    return torch.cat([pa.attention_maps(model, preprocess(c.to(device)), spec).float().cpu() for c in x.split(CHUNK)])


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, preprocess: Callable) -> torch.Tensor:
    device = next(model.parameters()).device
    with pa.attention.preserved(model):
        model.eval()
        return torch.cat([model(preprocess(c.to(device))).argmax(1).cpu() for c in x.split(FORWARD)])


def _robustness(model: nn.Module, cset: CompareSet, own: torch.Tensor, preprocess: Callable, study: Study) -> Dict[str, torch.Tensor]:
    """The occlusion and shuffle flags on the whole test split, on the model's device, returned on the CPU."""
    device = next(model.parameters()).device
    x, y = cset.x.to(device), cset.y.to(device)
    common = {"preprocess": preprocess, "batch_size": FORWARD}
    drop = torch.Generator().manual_seed(study.split_seed + DROP_OFFSET)
    shuffle = torch.Generator().manual_seed(study.split_seed + SHUFFLE_OFFSET)
    out = {
        "occlusion_random": M.occlusion_curve(model, x, y, patch=study.compare_patch, order="random", generator=drop, **common),
        "occlusion_salient": M.occlusion_curve(model, x, y, patch=study.compare_patch, order=own.to(device), **common),
        "shuffle": M.shuffle_accuracy(model, x, y, grids=tuple(study.compare_grids), generator=shuffle, **common),
    }
    return {k: v.cpu() for k, v in out.items()}


def measure_compare(model: nn.Module, cset: CompareSet, preprocess: Callable, study: Study) -> Dict[str, Any]:
    """Everything of the module docstring but the run's names, for ``model`` (left as found)."""
    methods = map_methods(model)
    own_all = model_maps(model, cset.x, preprocess, methods[0])  # the salient order on every test image
    maps = {methods[0]: on_grid(own_all[cset.index])}
    for method in methods[1:]:
        maps[method] = on_grid(model_maps(model, cset.x[cset.index], preprocess, method))
    pred = _predict(model, cset.x, preprocess)
    return {
        "methods": list(methods), "grid": GRID, "patch": study.compare_patch, "fractions": list(M.DROP_FRACTIONS),
        "grids": list(study.compare_grids), "index": cset.index.clone(), "labels": cset.y.to(torch.int16),
        "pred": pred.to(torch.int16), "correct": pred == cset.y, "maps": maps,
        "entropy": {m: M.entropy(v) for m, v in maps.items()}, "half_area": {m: half_area(v) for m, v in maps.items()},
        **_robustness(model, cset, own_all, preprocess, study),
    }


def save_compare(path: str, artifact: Dict[str, Any]) -> None:
    """Write ``artifact`` to ``path`` atomically (write, then rename)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    torch.save(artifact, path + ".tmp")
    os.replace(path + ".tmp", path)


def compare_path(out: str, key: str) -> str:
    """Where the run of ``key`` keeps its measurement: ``<out>/compare/<key>.pt``."""
    return os.path.join(out, "compare", key + ".pt")


def compare_seconds(costs: Dict[str, float], test: int) -> float:
    """The measurement's cost on ``test`` images, from seconds per image of a training step and
    of an evaluation forward (``cli.calibrate``): the own map of every image (about a training
    step), the clean images, 10 fractions in two orders and 3 shuffle grids (24 forwards)."""
    return test * (costs["train"] + 24 * costs["eval"])
