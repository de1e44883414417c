"""``keepaugment``: a KeepAugment-style selective cut (Gong et al., CVPR 2021).

The matched square hole is placed where the model's vanilla-gradient saliency of the image is low
(the first of ``tries`` random places holding less than an average region's share of the
saliency, else the least salient one), so the evidence is kept. The saliency is computed with the
current model in eval mode, one extra forward and backward pass for the images cut.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Tuple

import torch
from torch import nn

from proxyaug.attention import eval_mode

from .base import register
from .refreshing import RefreshingArm, matched, proxy_defaults


def keep_cut(
    x: torch.Tensor, saliency: torch.Tensor, side: int, tries: int, generator: torch.Generator
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Black out one ``side`` x ``side`` square per image where ``saliency (B, H, W)`` is low.

    The first of ``tries`` random places whose share of the image's saliency is below an average
    region's (``side**2 / (H W)``) is taken, else the least salient place. Returns the images and
    the boxes' top-left corners ``(B, 2)``.

    Examples:
        >>> sal = torch.zeros(1, 4, 4); sal[0, :2] = 1.0  # the top half is salient
        >>> out, corner = keep_cut(torch.ones(1, 1, 4, 4), sal, 2, 10, torch.Generator().manual_seed(0))
        >>> int(corner[0, 0]) >= 2, out.sum().item()
        (True, 12.0)
    """
    b, _, h, w = x.shape
    integral = nn.functional.pad(saliency.float().cumsum(1).cumsum(2), (1, 0, 1, 0))
    total = integral[:, -1, -1].clamp_min(1e-12)
    ty = torch.randint(0, h - side + 1, (b, tries), generator=generator).to(x.device)
    tx = torch.randint(0, w - side + 1, (b, tries), generator=generator).to(x.device)
    rows = torch.arange(b, device=x.device).view(b, 1)
    mass = integral[rows, ty + side, tx + side] - integral[rows, ty, tx + side] - integral[rows, ty + side, tx] + integral[rows, ty, tx]
    share = mass / total.view(b, 1)
    ok = share < side * side / (h * w)
    first_ok = torch.where(ok.any(1), ok.float().argmax(1), share.argmin(1))
    corner = torch.stack([ty[rows.flatten(), first_ok], tx[rows.flatten(), first_ok]], 1)
    yy = torch.arange(h, device=x.device).view(1, h, 1)
    xx = torch.arange(w, device=x.device).view(1, 1, w)
    box = (yy >= corner[:, :1, None]) & (yy < corner[:, :1, None] + side) & (xx >= corner[:, 1:, None]) & (xx < corner[:, 1:, None] + side)
    return x.masked_fill(box.unsqueeze(1), 0.0), corner


@register
class KeepAugment(RefreshingArm):
    kind = "keepaugment"
    defaults = proxy_defaults("tries")
    control = True

    @classmethod
    def describe(cls, settings: Dict[str, Any]) -> str:
        return f"black square off the salient region; {matched(settings)}"

    def apply(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, model: nn.Module) -> torch.Tensor:
        if self.p <= 0 or self.area <= 0:
            return x
        chosen = (torch.rand(len(x), generator=self.gen) < self.p).nonzero().flatten().to(x.device)
        if chosen.numel() == 0:
            return x
        xs = x[chosen].detach().requires_grad_(True)
        with eval_mode(model), torch.enable_grad():  # saliency of the current model, no BN update
            loss = nn.functional.cross_entropy(model(self.context.preprocess(xs)), y[chosen], reduction="sum")
            (grad,) = torch.autograd.grad(loss, xs)
        h, w = self.image_size
        side = max(1, round(math.sqrt(self.area * h * w)))
        cut, _ = keep_cut(x[chosen], grad.abs().amax(1), min(side, h, w), self.spec["tries"], self.gen)
        x = x.clone()
        x[chosen] = cut
        return x
