"""The ``guided`` case: the map-guided transforms (``pa.SalientMix``, ``pa.KeepCutout``) against their
map-free peers on the same batch, and whole training steps, timed side by side in one interleaved run.

- **Transforms**: each ``SalientMix`` rule and ``KeepCutout`` (every sample with a map in the bank)
  beside ``torchvision.transforms.v2.CutMix`` and a plain Cutout (``KeepCutout`` on an empty bank:
  the same holes, no map read) on one batch.
- **Steps** (a timm ResNet-18, SGD): a plain ``v2.CutMix`` step; the same step with
  ``SalientMix(box="peak", labels="mass")`` and the maps captured in the step (``MapCapture``,
  no pass of its own; the goal is at most 1.02x the CutMix step); and the step as the published
  methods pay for their maps: one extra forward and input-gradient backward per step (SaliencyMix,
  KeepAugment's saliency) before the same transform.
"""

from __future__ import annotations

from typing import Any, Callable, Dict

import torch
from torch import nn

import proxyaug as pa

from .measure import measure_interleaved


def _transforms(x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, bank: pa.MaskBank) -> Dict[str, Callable[[], Any]]:
    from torchvision.transforms import v2

    empty = pa.MaskBank(len(bank), device=bank.device)
    cutmix = v2.CutMix(num_classes=1000)
    fns: Dict[str, Callable[[], Any]] = {"v2.CutMix": lambda: cutmix(x, y), "Cutout (no map)": lambda: pa.KeepCutout(empty).replace(x, idx)}
    for box in ("peak", "topk", "random"):
        for labels in ("area", "mass"):
            mix = pa.SalientMix(bank, 1000, box=box, labels=labels)
            fns[f"SalientMix {box}/{labels}"] = (lambda m: lambda: m(x, y, idx))(mix)
    keep = pa.KeepCutout(bank)
    fns["KeepCutout"] = lambda: keep.replace(x, idx)
    return fns


def _steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, ds: pa.ProxyDataset) -> Dict[str, Callable[[], Any]]:
    from torchvision.transforms import v2

    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    cutmix, mix = v2.CutMix(num_classes=1000), pa.SalientMix(ds.bank, 1000, box="peak", labels="mass")
    capture = pa.MapCapture(ds, select="loss", budget=1.0, views="all")  # every sample has a map: stage the mixed views

    def train(xb: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
        logits = model(xb)
        loss = nn.functional.cross_entropy(logits, soft)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return logits

    def plain() -> None:
        train(*cutmix(x, y))

    def in_step() -> None:
        xb, soft, _ = mix(x, y, idx)
        with capture.step(model):
            logits = model(xb)
            capture.observe(idx, logits, y)
            loss = nn.functional.cross_entropy(logits, soft)
            opt.zero_grad(set_to_none=True)
            loss.backward()
        opt.step()

    def extra_pass() -> None:  # what the peers pay: a saliency from one more forward and input-gradient backward
        xs = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(nn.functional.cross_entropy(model(xs), y), xs)
        ds.bank.put(idx, nn.functional.adaptive_avg_pool2d(grad.abs().amax(1, keepdim=True), (7, 7))[:, 0])
        train(*mix(x, y, idx)[:2])

    return {"step v2.CutMix": plain, "step SalientMix + in-step maps": in_step, "step SalientMix + extra pass (peers)": extra_pass}


def case_guided(cfg: Dict[str, Any], device: torch.device, log: Callable[[str], None]) -> Dict[str, Any]:
    import timm

    batch, size = cfg["transform_batch"], cfg["size"]
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
    y, idx = (torch.arange(batch) % 1000).to(device), torch.arange(batch)
    ds = pa.ProxyDataset(torch.utils.data.TensorDataset(x.cpu(), y.cpu()), device=device)
    ds.bank.put(idx, torch.rand(batch, 7, 7, generator=torch.Generator().manual_seed(2)).to(device))
    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=1000).to(device).train()
    fns = {**_transforms(x, y, idx, ds.bank), **_steps(model, x, y, idx, ds)}
    timed = measure_interleaved(fns, device, cfg["warmup"] + 1, cfg["repeats"])
    plain = timed["step v2.CutMix"]["median_s"]
    rows = {}
    for key, t in timed.items():
        rows[key] = {"timing": t, "ms": 1000 * t["median_s"], "vs_cutmix_step": t["median_s"] / plain}
        log(f"  {key:40s} {rows[key]['ms']:9.2f} ms ({rows[key]['vs_cutmix_step']:.4f}x a CutMix step)")
    return {"model": "resnet18", "batch": batch, "size": size, "rows": rows,
            "in_step_vs_cutmix_step": rows["step SalientMix + in-step maps"]["vs_cutmix_step"],
            "extra_pass_vs_cutmix_step": rows["step SalientMix + extra pass (peers)"]["vs_cutmix_step"]}


def render_guided(g: Dict[str, Any]) -> list:
    """The table of the ``guided`` case."""
    lines = [f"### Map-guided transforms ({g['model']}, batch {g['batch']}, {g['size']} px)", "",
             "Each transform on the same batch (every sample mapped) beside `v2.CutMix` and a plain Cutout, and whole "
             "training steps, measured side by side; the last column is the time over a `v2.CutMix` training step.", "",
             "| what | ms | / CutMix step |", "|---|---|---|"]
    for key, r in g["rows"].items():
        lines.append(f"| {key} | {r['ms']:.2f} | {r['vs_cutmix_step']:.4f}x |")
    return lines + ["", f"In-step maps + SalientMix: {g['in_step_vs_cutmix_step']:.3f}x a CutMix step (goal: at most 1.02x); "
                        f"the peers' extra pass: {g['extra_pass_vs_cutmix_step']:.3f}x.", ""]
