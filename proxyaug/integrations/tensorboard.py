"""Optional TensorBoard logging of refreshes: statistics and original / map / proxy grids."""

from __future__ import annotations

from typing import Any, Optional

import torch

from .._refresh import RefreshReport
from ..transform import ProxyTransform
from ..viz import proxy_grid

__all__ = ["log_refresh"]


def log_refresh(
    writer: Any,
    report: RefreshReport,
    step: int,
    *,
    dataset: Any = None,
    proxy: Optional[ProxyTransform] = None,
    images: int = 8,
    tag: str = "proxyaug",
) -> None:
    """Write a refresh's statistics, and a picture of its first refreshed samples, to TensorBoard.

    Args:
        writer: a ``torch.utils.tensorboard.SummaryWriter``.
        report: what [`refresh()`][proxyaug.refresh] returned.
        step: the global step or epoch to log at.
        dataset: the [`ProxyDataset`][proxyaug.ProxyDataset]; with it, an image grid (original |
            map | proxy image) of up to ``images`` refreshed samples is logged as well.
        proxy: the transform whose settings the grid shows (default: the thesis defaults).
        images: samples in the grid.
        tag: prefix of the logged names.

    Examples:
        >>> import tempfile
        >>> from torch.utils.tensorboard import SummaryWriter
        >>> from proxyaug import RefreshReport
        >>> report = RefreshReport(scanned=10, wrong=3, chosen=1, written=1, seconds=0.1, scan_seconds=0.05,
        ...                        attention_seconds=0.05, method="gradcam++", layer="layer4",
        ...                        indices=torch.tensor([4]), source="all")
        >>> with SummaryWriter(tempfile.mkdtemp()) as writer:
        ...     log_refresh(writer, report, step=3)
    """
    for name in ("scanned", "wrong", "chosen", "written", "skipped", "seconds", "images_per_s"):
        writer.add_scalar(f"{tag}/{name}", float(getattr(report, name)), step)
    if dataset is None or not report.written:
        return
    samples = report.indices[:images]  # sample indices: the images
    rows = dataset.rows(samples)  # bank rows: their maps (they differ with proxies="append")
    bank = dataset.bank
    x = torch.stack([dataset.canonical(int(i))[0] for i in samples]).to(bank.device)
    maps, _ = bank.get(rows)
    transform = proxy if proxy is not None else ProxyTransform(bank)
    proxied = transform.replace(x, rows, params={"apply": torch.ones(len(rows), dtype=torch.bool, device=x.device)})
    scale = 1.0 if x.is_floating_point() else 255.0  # uint8 datasets
    writer.add_image(f"{tag}/original_map_proxy", proxy_grid(x.float() / scale, maps, proxied.float() / scale), step)
