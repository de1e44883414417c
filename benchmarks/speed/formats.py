"""The ``formats`` case: proxyaug's maps and transform under bf16 (and, on CUDA, fp16) autocast and
with channels_last models and inputs, against a plain forward pass in the same format.

Each variant is timed side by side with the others in one interleaved run (``measure_interleaved``):
a ``no_grad`` forward pass, proxyaug's Grad-CAM maps at full size, and ``ProxyTransform`` (blend,
every sample mapped) on the batch in that format. The maps are computed in float32 whatever the
autocast (``attention_maps``' contract): the JSON states how far each variant's maps are from the
float32 ones (largest absolute difference; maps are in [0, 1]).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, List, Tuple

import torch

import proxyaug as pa

from .measure import measure_interleaved


def variants(device: torch.device) -> List[Tuple[str, Any, bool]]:
    """``(name, autocast dtype or None, channels_last)`` per variant; fp16 autocast on CUDA only
    (on the CPU it exists but is not what anyone trains with)."""
    out = [("float32", None, False), ("bf16 autocast", torch.bfloat16, False), ("channels_last", None, True),
           ("bf16 autocast + channels_last", torch.bfloat16, True)]
    if device.type == "cuda":
        out[2:2] = [("fp16 autocast", torch.float16, False)]
    return out


def _cast(dtype: Any, device: torch.device) -> Callable[[], Any]:
    return (lambda: torch.autocast(device.type, dtype=dtype)) if dtype is not None else contextlib.nullcontext


def case_formats(cfg: Dict[str, Any], device: torch.device, log: Callable[[str], None]) -> Dict[str, Any]:
    import timm

    size, batch, name = cfg["size"], cfg["batch"], cfg.get("formats_model", "resnet18")
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    classes, idx = (torch.arange(batch) % 1000).to(device), torch.arange(batch)
    bank = pa.MaskBank(batch, resolution=(7, 7), device=device)
    bank.put(idx, torch.rand(batch, 7, 7, generator=torch.Generator().manual_seed(2)).to(device))
    proxy = pa.ProxyTransform(bank, mode="blend")
    fns: Dict[str, Callable[[], Any]] = {}
    maps: Dict[str, Callable[[], torch.Tensor]] = {}
    for variant, dtype, cl in variants(device):
        torch.manual_seed(0)
        model = timm.create_model(name, num_classes=1000).to(device).eval()
        xv = x.contiguous(memory_format=torch.channels_last) if cl else x
        if cl:
            model = model.to(memory_format=torch.channels_last)
        (layer,) = pa.attention.resolve_layers(model, None, xv)
        cast = _cast(dtype, device)

        def forward(model=model, xv=xv, cast=cast) -> None:
            with torch.no_grad(), cast():
                model(xv)

        def ours(model=model, xv=xv, cast=cast, layer=layer) -> torch.Tensor:
            with cast():
                return pa.attention_maps(model, xv, pa.MapSpec("gradcam", layer=layer.module), target=classes, size=(size, size))

        def transform(xv=xv, cast=cast) -> None:
            with cast():
                proxy.replace(xv, idx)

        fns[f"forward:{variant}"], fns[f"maps:{variant}"], fns[f"transform:{variant}"] = forward, ours, transform
        maps[variant] = ours
    reference = maps["float32"]()
    diffs = {v: float((fn() - reference).abs().max()) for v, fn in maps.items()}
    timed = measure_interleaved(fns, device, cfg["warmup"], cfg["repeats"])
    rows = []
    for variant, dtype, cl in variants(device):
        f, m, t = timed[f"forward:{variant}"], timed[f"maps:{variant}"], timed[f"transform:{variant}"]
        rows.append({"variant": variant, "autocast": str(dtype).replace("torch.", "") if dtype else None, "channels_last": cl,
                     "forward": f, "maps": m, "transform": t, "forward_images_per_s": batch / f["median_s"],
                     "proxyaug_images_per_s": batch / m["median_s"], "proxyaug_vs_forward": f["median_s"] / m["median_s"],
                     "transform_ms": 1000 * t["median_s"], "maps_max_abs_diff_vs_float32": diffs[variant]})
        r = rows[-1]
        log(f"  {variant:30s} forward {r['forward_images_per_s']:7.1f}/s  maps {r['proxyaug_images_per_s']:7.1f}/s "
            f"({r['proxyaug_vs_forward']:.2f}x)  transform {r['transform_ms']:.2f} ms  maps vs float32 {r['maps_max_abs_diff_vs_float32']:.2g}")
    return {"model": name, "batch": batch, "size": size, "method": "gradcam", "rows": rows}


def render_formats(f: Dict[str, Any]) -> List[str]:
    """The table of the ``formats`` case."""
    lines = [f"### Autocast and channels_last ({f['model']}, {f['method']}, batch {f['batch']}, {f['size']} px)", "",
             "Each variant against a `no_grad` forward pass in the same format, measured side by side; maps are "
             "computed in float32 whatever the autocast, so they differ from the float32 run only by what the "
             "reduced-precision forward pass changes in the layer's activations.", "",
             "| variant | forward (img/s) | proxyaug maps (img/s) | maps / forward | transform, blend (ms) | maps vs float32 (max abs) |",
             "|---|---|---|---|---|---|"]
    for r in f["rows"]:
        lines.append(f"| {r['variant']} | {r['forward_images_per_s']:.1f} | {r['proxyaug_images_per_s']:.1f} | "
                     f"{r['proxyaug_vs_forward']:.2f}x | {r['transform_ms']:.2f} | {r['maps_max_abs_diff_vs_float32']:.2g} |")
    return lines + [""]
