"""The ``transformer`` case: the transformer-native maps (attention rollout, LeGrad) against a
``no_grad`` forward pass of the same ViT, Grad-CAM at the last block's first norm (what proxyaug
does for a ViT by default) and torchcam's ``LeGrad`` when it is installed, timed side by side in one
interleaved run.

The model is torchvision's ``VisionTransformer`` (the only family torchcam's LeGrad reads), built
with the preset's ``vit_shape`` (ViT-S/16 on the CPU preset, ViT-B/16 on the GPU one), its head
drawn at random (torchvision starts it at zero, which would make every score and LeGrad map zero).
The JSON states how far our LeGrad is from torchcam's (largest absolute difference; maps in [0, 1]).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List

import torch
from torch import nn

import proxyaug as pa

from .measure import measure_interleaved

SHAPES = {  # torchvision's ViT-S/16 and ViT-B/16 shapes, and a tiny one for the smoke preset
    "vit_s_16": {"patch_size": 16, "num_layers": 12, "num_heads": 6, "hidden_dim": 384, "mlp_dim": 1536},
    "vit_b_16": {"patch_size": 16, "num_layers": 12, "num_heads": 12, "hidden_dim": 768, "mlp_dim": 3072},
    "vit_tiny_test": {"patch_size": 16, "num_layers": 2, "num_heads": 2, "hidden_dim": 32, "mlp_dim": 64},
}


def _vit(shape: str, size: int, device: torch.device) -> nn.Module:
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(image_size=size, num_classes=1000, **SHAPES[shape])
    nn.init.normal_(model.heads.head.weight, std=0.02)
    return model.to(device).eval()


def _torchcam_legrad(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> Callable[[], torch.Tensor]:
    from torchcam.methods import LeGrad

    def run() -> torch.Tensor:
        with LeGrad(model, list(model.encoder.layers)) as extractor, torch.enable_grad():
            return extractor(classes.tolist(), model(x))[0]

    return run


def case_transformer(cfg: Dict[str, Any], device: torch.device, log: Callable[[str], None]) -> Dict[str, Any]:
    from ..env import version

    size, batch, shape = cfg["size"], cfg["batch"], cfg.get("vit_shape", "vit_s_16")
    model = _vit(shape, size, device)
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    classes = (torch.arange(batch) % 1000).to(device)

    def forward() -> None:
        with torch.no_grad():
            model(x)

    def ours(method: str) -> Callable[[], torch.Tensor]:
        return lambda: pa.attention_maps(model, x, pa.MapSpec(method), target=classes)

    fns: Dict[str, Callable[[], Any]] = {"forward": forward, "rollout": ours("rollout"), "legrad": ours("legrad"), "gradcam": ours("gradcam")}
    agreement = None
    if version("torchcam"):
        fns["torchcam:legrad"] = _torchcam_legrad(model, x, classes)
        agreement = float((fns["legrad"]() - fns["torchcam:legrad"]()).abs().max())
    timed = measure_interleaved(fns, device, cfg["warmup"], cfg["repeats"])
    rows: List[Dict[str, Any]] = []
    for key in [k for k in fns if k != "forward"]:
        t = timed[key]
        rows.append({"method": key, "timing": t, "images_per_s": batch / t["median_s"],
                     "vs_forward": timed["forward"]["median_s"] / t["median_s"]})
        log(f"  {key:16s} {rows[-1]['images_per_s']:8.1f}/s ({rows[-1]['vs_forward']:.2f}x forward)")
    ratio = timed["torchcam:legrad"]["median_s"] / timed["legrad"]["median_s"] if "torchcam:legrad" in timed else None
    log(f"  forward {batch / timed['forward']['median_s']:.1f}/s" + (f"; LeGrad vs torchcam {ratio:.2f}x, max diff {agreement:.2g}" if ratio else ""))
    return {"model": f"torchvision VisionTransformer ({shape})", "size": size, "batch": batch, "forward": timed["forward"],
            "forward_images_per_s": batch / timed["forward"]["median_s"], "rows": rows, "legrad_vs_torchcam": ratio,
            "legrad_max_abs_diff_vs_torchcam": agreement, "torchcam": version("torchcam")}


def render_transformer(t: Dict[str, Any]) -> List[str]:
    """The table of the ``transformer`` case."""
    names = {"rollout": "proxyaug rollout", "legrad": "proxyaug LeGrad", "gradcam": "proxyaug Grad-CAM (last block's norm1)",
             "torchcam:legrad": f"torchcam LeGrad ({t.get('torchcam')})"}
    lines = [f"### Transformer-native maps ({t['model']}, batch {t['batch']}, {t['size']} px)", "",
             f"Against a `no_grad` forward pass of the same model ({t['forward_images_per_s']:.1f} images/s), measured side by side. "
             "Rollout reads the attention of one forward; LeGrad adds one backward from every block's score to its own attention.", "",
             "| maps | images/s | time / forward |", "|---|---|---|"]
    for r in t["rows"]:
        lines.append(f"| {names.get(r['method'], r['method'])} | {r['images_per_s']:.1f} | {1 / r['vs_forward']:.2f}x |")
    if t.get("legrad_vs_torchcam"):
        lines += ["", f"proxyaug's LeGrad is {t['legrad_vs_torchcam']:.2f}x torchcam's speed on the same batch; the maps differ by at most "
                      f"{t['legrad_max_abs_diff_vs_torchcam']:.2g}."]
    return lines + [""]
