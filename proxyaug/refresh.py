"""refresh: scan the training set, select wrong predictions, compute their maps, update the bank.

The bank is written once, at the end, with every new map: an error or ``KeyboardInterrupt``
anywhere before leaves it (and the record of observed mistakes) exactly as it was. The model is
left as found: the whole refresh runs in eval mode with each module's flag restored afterwards,
the scan runs under ``no_grad``, and maps come from :func:`proxyaug.attention.compute_cams`,
which writes no parameter gradient and removes its hook in every case.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from typing import Any, Callable, Iterable, List, Optional, Sequence, Union

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ._checks import check_choice, check_index, check_positive_int, check_unit_interval
from .attention._state import eval_mode
from .attention.cam import compute_cams, method_name
from .attention.layers import resolve_layer

__all__ = ["RefreshReport", "refresh", "select_subset"]

SELECT = ("wrong",)
TARGETS = ("pred", "label")


@dataclasses.dataclass(eq=False)
class RefreshReport:
    """What one :func:`refresh` did.

    Attributes:
        scanned: images whose predictions were checked.
        wrong: of those, predicted wrongly.
        chosen: wrong images selected for a map (``fraction`` of ``wrong``).
        written: maps written to the bank: ``chosen`` less ``skipped``.
        seconds: wall time of the whole refresh.
        scan_seconds: time of the scan (forward passes under ``no_grad``).
        attention_seconds: time spent computing maps.
        method: the CAM method used.
        layer: name of the target layer in ``model.named_modules()``.
        indices: dataset indices that received a map, sorted (CPU ``int64``).
        skipped: chosen images whose map was not finite (NaN or inf in the model's activations or
            gradients); they get no map, and a warning says so.
        source: ``"observed"`` when only indices recorded by ``observe`` were scanned, ``"indices"``
            when the caller gave them, ``"all"`` for a full scan.
    """

    scanned: int
    wrong: int
    chosen: int
    written: int
    seconds: float
    scan_seconds: float
    attention_seconds: float
    method: str
    layer: str
    indices: torch.Tensor
    source: str
    skipped: int = 0

    @property
    def images_per_s(self) -> float:
        """Scanned images per second over the whole refresh."""
        return self.scanned / self.seconds if self.seconds > 0 else float("inf")

    @property
    def maps_per_s(self) -> float:
        """Maps per second of the attention step."""
        return self.written / self.attention_seconds if self.attention_seconds > 0 else float("inf")

    def __str__(self) -> str:
        if self.wrong == 0:
            return f"refresh: no wrong predictions among {self.scanned} scanned images ({self.source}); the bank is unchanged ({self.seconds:.2f} s)"
        return (
            f"refresh: scanned {self.scanned} ({self.source}), wrong {self.wrong}, chosen {self.chosen}, "
            f"wrote {self.written} {self.method} maps at {self.layer or '<root>'} in {self.seconds:.2f} s "
            f"({self.images_per_s:.0f} images/s)"
        )


def select_subset(indices: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Pick ``round(fraction * len(indices))`` (at least one) of ``indices``, reproducibly from ``seed``.

    Examples:
        >>> select_subset(torch.arange(10, 20), 0.3, seed=0)
        tensor([11, 14, 17])
    """
    n = indices.numel()
    if n == 0:
        return indices
    k = max(1, math.floor(fraction * n + 0.5))
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=gen)[:k]
    return indices[perm].sort().values


class _Items(Dataset):
    """The ``(x, y, idx)`` items of ``ds`` at ``indices``, for a DataLoader."""

    def __init__(self, ds: Any, indices: torch.Tensor) -> None:
        self.ds, self.indices = ds, indices.tolist()

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> Any:
        return self.ds[self.indices[k]]


def _model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def _labels(y: Any) -> torch.Tensor:
    y = torch.as_tensor(y)
    if y.ndim != 1 or y.is_floating_point() or y.dtype == torch.bool:
        raise TypeError(f"labels must be integer class indices, one per image; got a batch of shape {tuple(y.shape)} and dtype {y.dtype}.")
    return y.long()


def refresh(
    model: nn.Module,
    ds: Any,
    method: str = "gradcam++",
    fraction: float = 0.2,
    select: str = "wrong",
    target: str = "pred",
    layer: Union[str, nn.Module, None] = None,
    preprocess: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    batch_size: int = 128,
    *,
    seed: Optional[int] = None,
    indices: Optional[Iterable[int]] = None,
    reset: bool = False,
    num_workers: int = 0,
    device: Union[str, torch.device, None] = None,
    progress: Optional[bool] = None,
) -> RefreshReport:
    """Recompute attention maps for a fraction of the training images the model gets wrong.

    1. **Scan**: predict the candidate images in eval mode under ``no_grad``, in batches. The
       candidates are ``indices`` if given, else the indices that :meth:`ProxyDataset.observe`
       recorded as wrong since the last refresh, else the whole dataset.
    2. **Select**: of the wrongly predicted ones, ``fraction`` chosen at random from ``seed``.
    3. **Attention**: native batched maps (``method``) at ``layer`` for the chosen images, for the
       predicted class (``target="pred"``, the thesis' choice) or the label.
    4. **Commit**: the new maps go into ``ds.bank`` in one step; other samples keep their earlier
       maps unless ``reset``.

    Args:
        model: the classifier being trained; left exactly as found.
        ds: a :class:`~proxyaug.ProxyDataset`.
        method: ``"gradcam++"`` (thesis default) or ``"gradcam"``.
        fraction: share of the wrong images that get a map, in (0, 1] (thesis: 0.2).
        select: which images are candidates for a map; ``"wrong"``.
        target: ``"pred"`` or ``"label"``: the class whose evidence the map shows.
        layer: target layer (module or name); ``None`` finds the last spatial layer.
        preprocess: applied to each batch on the device before the model (e.g. normalisation),
            so the model sees what it sees in training.
        batch_size: images per forward pass.
        seed: seed of the random subset; ``None`` uses the number of refreshes ``ds`` has done,
            so each round is reproducible and rounds differ.
        indices: restrict the scan to these dataset indices.
        reset: drop the maps of samples not chosen this time.
        num_workers: DataLoader workers used to read images.
        device: where to run the model; defaults to the device of its parameters.
        progress: show a tqdm progress bar; ``None`` shows one for scans of 20 batches or more.

    Returns:
        A :class:`RefreshReport`.

    Examples:
        >>> from torch.utils.data import TensorDataset
        >>> import proxyaug as pa
        >>> _ = torch.manual_seed(0)
        >>> base = TensorDataset(torch.rand(16, 3, 8, 8), torch.randint(0, 3, (16,)))
        >>> ds = pa.ProxyDataset(base)
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        ...                     nn.Flatten(), nn.Linear(4, 3))
        >>> report = pa.refresh(net, ds, fraction=0.5, seed=0)
        >>> report.written == report.chosen == int(ds.bank.present.sum())
        True
    """
    start = time.perf_counter()
    method = method_name(method)
    fraction = check_unit_interval("fraction", fraction, low_open=True)
    check_choice("select", select, SELECT)
    target = check_choice("target", target, TARGETS)
    batch_size = check_positive_int("batch_size", batch_size)
    if preprocess is not None and not callable(preprocess):
        raise TypeError(f"preprocess must be callable (e.g. torchvision.transforms.v2.Normalize); got {type(preprocess).__name__}.")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
    bank = getattr(ds, "bank", None)
    if bank is None or not hasattr(ds, "_observed_candidates"):
        raise TypeError(f"ds must be a proxyaug.ProxyDataset holding its bank; got {type(ds).__name__}.")
    if len(ds) != len(bank):
        raise RuntimeError(
            f"the dataset has {len(ds)} samples but its bank was made for {len(bank)}: the wrapped dataset "
            "changed length. Build a new ProxyDataset for the new data."
        )
    device = torch.device(device) if device is not None else _model_device(model)
    layer_name, module = resolve_layer(model, layer, None) if layer is not None else ("", None)

    if indices is not None:
        given = indices if isinstance(indices, torch.Tensor) else torch.as_tensor(list(indices), dtype=torch.long)
        candidates, source = check_index("indices", given, size=len(ds)).cpu(), "indices"
    else:
        candidates = ds._observed_candidates()
        source = "observed" if candidates is not None else "all"
        if candidates is None:
            candidates = torch.arange(len(ds))
    show = progress if progress is not None else math.ceil(candidates.numel() / batch_size) >= 20

    def batches(idx: torch.Tensor, desc: str) -> Iterable[Any]:
        loader = DataLoader(_Items(ds, idx), batch_size=batch_size, shuffle=False, num_workers=num_workers)
        if show:
            from tqdm.auto import tqdm

            return tqdm(loader, desc=desc, unit="batch", leave=False)
        return loader

    def prepare(x: torch.Tensor) -> torch.Tensor:
        if preprocess is None and not x.is_floating_point():
            raise TypeError(
                f"the dataset yields {x.dtype} images; pass preprocess= converting them as your training loop "
                "does, e.g. v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])."
            )
        x = x.to(device, non_blocking=True)
        return preprocess(x) if preprocess is not None else x

    with eval_mode(model):
        wrong_parts: List[torch.Tensor] = []
        with torch.no_grad():
            for x, y, i in batches(candidates, "proxyaug scan"):
                logits = model(prepare(x))
                if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
                    raise ValueError(f"the model returned {type(logits).__name__}; expected logits of shape (B, num_classes).")
                pred = logits.argmax(dim=1).cpu()
                wrong_parts.append(i[pred != _labels(y)])
        scan_end = time.perf_counter()
        wrong = torch.cat(wrong_parts) if wrong_parts else torch.empty(0, dtype=torch.long)
        chosen = select_subset(wrong, fraction, ds.refreshes if seed is None else seed)

        maps_parts: List[torch.Tensor] = []
        for x, y, _ in batches(chosen, "proxyaug maps"):
            x = prepare(x)
            if module is None:
                layer_name, module = resolve_layer(model, None, x)
            cls = _labels(y).to(device) if target == "label" else None
            maps, _ = compute_cams(model, x, module, method, cls)
            maps_parts.append(maps)
    end = time.perf_counter()

    maps = torch.cat(maps_parts) if maps_parts else None
    written, skipped = chosen, 0
    if maps is not None:
        finite = torch.isfinite(maps).flatten(1).all(dim=1).cpu()
        skipped = int((~finite).sum())
        if skipped:
            warnings.warn(
                f"{skipped} of {chosen.numel()} attention maps were not finite (NaN or inf in the model's "
                "activations or gradients at the target layer); those samples get no map this round.",
                RuntimeWarning,
                stacklevel=2,
            )
            written, maps = chosen[finite], maps[finite.to(maps.device)]
    report = RefreshReport(
        scanned=candidates.numel(), wrong=wrong.numel(), chosen=chosen.numel(), written=written.numel(),
        seconds=0.0, scan_seconds=scan_end - start, attention_seconds=end - scan_end,
        method=method, layer=layer_name, indices=written, source=source, skipped=skipped,
    )
    ds._commit(written if maps is not None and written.numel() else None, maps, reset=reset, report=report)
    report.seconds = time.perf_counter() - start
    return report
