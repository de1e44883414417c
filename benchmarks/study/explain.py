"""What the study's models look at: explanation metrics on a fixed subset of test images.

Every run is measured on the same ``Study.explain`` test images (a stratified pick, seeded by the
split seed: the same images for every arm and seed), after each refresh point of the study's
schedule and after training, with two methods: the arm's own (its ``method`` setting; the proxy
default for arms without one) and one evaluation method for all arms (``Study.explain_method``,
EigenGradCAM as in the thesis). Maps explain the class the model predicts. Per method:

- ``deletion`` / ``insertion``: areas under the deletion (black baseline) and insertion (blurred
  baseline) curves, ``Study.explain_steps`` steps (``proxyaug.metrics``);
- ``drop`` / ``increase``: average drop and increase in confidence;
- ``sparsity`` / ``entropy`` of the maps;
- where the dataset knows regions: ``<region>_energy`` (share of the map's mass inside it) and
  ``<region>_pointing`` (the map's maximum inside it). On digits the region ``object`` is the
  digit's ink. On shortcut-digits the test images get the training cue at their label's
  position (as 90 % of the training images have it), and ``cue`` is that 2x2 block: its energy is
  the ground-truth measure of attention on the spurious cue (a uniform map puts 1/16 there).

``acc`` is the accuracy on these images (on shortcut-digits they carry the cue, which a model
leaning on it gets right: read it beside the test accuracy and ``cue_energy``). Nothing here
draws random numbers, so measuring leaves training bit-identical.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import nn

import proxyaug as pa
from proxyaug import metrics as M

from ..data import CUE_POSITIONS, Data, split_pool
from .arms.refreshing import PROXY_DEFAULTS
from .config import Study

ROLES = ("own", "eval")
METRICS = ("deletion", "insertion", "drop", "increase", "sparsity", "entropy")
REGIONS = ("cue", "object")
#: every key an evaluation can hold, in the CSV's order
KEYS = ["acc"] + [f"{role}_{m}" for role in ROLES for m in (*METRICS, *(f"{r}_{k}" for r in REGIONS for k in ("energy", "pointing")))]
INK = 0.3  # a digit pixel (upsampled, in [0, 1]) at or above this is ink: the ``object`` region


@dataclasses.dataclass
class ExplainSet:
    """The fixed test images explanations are measured on.

    Attributes:
        x: images ``(N, C, H, W)`` in [0, 1], before the model's normalisation.
        y: labels ``(N,)``.
        regions: bool masks ``(N, H, W)`` by name (``cue``, ``object``), where the dataset knows them.
        info: one line for the report.
    """

    x: torch.Tensor
    y: torch.Tensor
    regions: Dict[str, torch.Tensor]
    info: str


def stratified_pick(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``n`` indices of ``labels`` spread evenly over the classes (seeded), sorted (also the RQ2 comparison's map images)."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    per_class = -(-n // int(labels.max() + 1))
    taken: Dict[int, int] = {}
    keep: List[int] = []
    for i in order.tolist():
        c = int(labels[i])
        if taken.get(c, 0) < per_class and len(keep) < n:
            taken[c] = taken.get(c, 0) + 1
            keep.append(i)
    return torch.tensor(sorted(keep))


def _digit_images(study: Study, pick: torch.Tensor, cue: bool) -> Dict[str, torch.Tensor]:
    """The picked digits test images rebuilt from the 8x8 originals, with the cue at the label's
    position if ``cue`` (made exactly as the training cue: set in 8x8, then upsampled)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    labels = torch.as_tensor(digits.target, dtype=torch.long)
    _, test_idx = split_pool(labels, study.test_fraction, study.split_seed)  # the loader's test split
    rows = test_idx[pick]
    small = torch.as_tensor(digits.images, dtype=torch.float32)[rows].unsqueeze(1) / 16.0
    y = labels[rows]
    s = study.size
    up = lambda t: nn.functional.interpolate(t, size=(s, s), mode="bilinear", align_corners=False).clamp(0, 1)  # noqa: E731
    plain = up(small)
    regions = {}
    if cue:
        box = torch.zeros(len(rows), s, s, dtype=torch.bool)
        for i, c in enumerate(y.tolist()):
            r, col = CUE_POSITIONS[c]
            small[i, :, r : r + 2, col : col + 2] = 1.0
            box[i, r * s // 8 : (r + 2) * s // 8, col * s // 8 : (col + 2) * s // 8] = True
        regions["cue"] = box
    regions["object"] = (plain[:, 0] >= INK) & ~regions.get("cue", torch.zeros_like(plain[:, 0], dtype=torch.bool))
    return {"x": up(small), "y": y, **{f"region_{k}": v for k, v in regions.items()}}


def explanation_set(data: Data, study: Study) -> Optional[ExplainSet]:
    """The study's fixed explanation images of ``data`` (``None`` when ``study.explain`` is 0)."""
    n = study.explain
    if not n:
        return None
    test_labels = torch.as_tensor([int(data.test[i][1]) for i in range(len(data.test))])
    pick = stratified_pick(test_labels, min(n, len(test_labels)), study.split_seed + 777)
    if data.name in ("digits", "shortcut-digits"):
        made = _digit_images(study, pick, cue=data.name == "shortcut-digits")
        x, y = made["x"], made["y"]
        if not torch.equal(y, test_labels[pick]):
            raise RuntimeError("the rebuilt digits test images do not match the loader's test split")
        regions = {k[len("region_"):]: v for k, v in made.items() if k.startswith("region_")}
    else:
        x = torch.stack([data.test[i][0] for i in pick.tolist()])
        y, regions = test_labels[pick], {}
    what = "with the training cue at the label's position; regions: " if "cue" in regions else ("regions: " if regions else "")
    info = f"{len(y)} test images (stratified, fixed), {what}{', '.join(regions) or 'none known'}"
    return ExplainSet(x, y, regions, info)


def methods_of(spec: Dict[str, Any], study: Study) -> Dict[str, str]:
    """``{"own": the arm's method, "eval": the study's evaluation method}``."""
    return {"own": spec.get("method") or PROXY_DEFAULTS["method"], "eval": study.explain_method}


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, preprocess: Callable) -> torch.Tensor:
    return (model(preprocess(x)).argmax(1) == y).float().mean()


def measure(model: nn.Module, eset: ExplainSet, preprocess: Callable, spec: Dict[str, Any], study: Study) -> Dict[str, Any]:
    """Every metric of the module docstring for ``model`` (put in eval mode) on ``eset``; also
    ``maps`` (the evaluation method's, ``(N, h, w)`` on the CPU) for the grids."""
    model.eval()
    device = next(model.parameters()).device
    x, y = eset.x.to(device), eset.y.to(device)
    out: Dict[str, Any] = {"acc": _accuracy(model, x, y, preprocess)}
    steps = study.explain_steps
    for role, method in methods_of(spec, study).items():
        maps = pa.attention_maps(model, preprocess(x), pa.MapSpec(method, layer=spec.get("layer")))
        curve = M.deletion_curve(model, x, maps, steps=steps, baseline="zeros", preprocess=preprocess)
        out[f"{role}_deletion"] = M.auc(curve).mean()
        curve = M.insertion_curve(model, x, maps, steps=steps, baseline="blur", preprocess=preprocess)
        out[f"{role}_insertion"] = M.auc(curve).mean()
        drop, increase = M.average_drop_increase(model, x, maps, preprocess=preprocess)
        out[f"{role}_drop"], out[f"{role}_increase"] = drop.mean(), increase.float().mean()
        out[f"{role}_sparsity"], out[f"{role}_entropy"] = M.sparsity(maps).mean(), M.entropy(maps).mean()
        for name, region in eset.regions.items():
            region = region.to(device)
            out[f"{role}_{name}_energy"] = M.energy_in_region(maps, region).mean()
            out[f"{role}_{name}_pointing"] = M.pointing_game(maps, region).float().mean()
        if role == "eval":
            out["maps"] = maps.float().cpu()
    return {k: (v if k == "maps" else float(v)) for k, v in out.items()}


def save_maps(path: str, eset: ExplainSet, maps: torch.Tensor, count: int) -> None:
    """The first ``count`` images, their maps and regions, for the report's explanation grids."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save({"x": eset.x[:count], "y": eset.y[:count], "maps": maps[:count],
                "regions": {k: v[:count] for k, v in eset.regions.items()}}, path)
