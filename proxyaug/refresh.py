"""refresh: scan the training set, select wrong predictions, compute their maps, update the bank.

The bank is written once, at the end, with every new map: an error or ``KeyboardInterrupt``
anywhere before leaves it (and the record of observed mistakes) exactly as it was. The model is
left as found: the whole refresh runs in eval mode with each module's flag restored afterwards,
the scan runs under ``no_grad``, and maps come from [`proxyaug.attention.compute_cams()`][proxyaug.attention.compute_cams],
which writes no parameter gradient and removes its hook in every case.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from typing import Any, Callable, Iterable, List, Optional, Union

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ._checks import check_choice, check_index, check_positive_int, check_unit_interval
from .attention._state import eval_mode, unwrap
from .attention.cam import _logits, compute_cams, resolve_method
from .attention.layers import LayerSpec, Reshape, resolve_layers
from .distributed import shard_context
from .selection import SELECT, choose, scores

__all__ = ["RefreshReport", "refresh"]

TARGETS = ("pred", "label")


@dataclasses.dataclass(eq=False)
class RefreshReport:
    """What one [`refresh()`][proxyaug.refresh.refresh] did.

    Attributes:
        scanned: images whose predictions were checked.
        wrong: of those, predicted wrongly.
        chosen: images selected for a map (``fraction`` of ``wrong``, by the ``select`` policy).
        written: maps written to the bank: ``chosen`` less ``skipped``.
        seconds: wall time of the whole refresh.
        scan_seconds: time of the scan (forward passes under ``no_grad``).
        attention_seconds: time spent computing maps.
        method: the CAM method used.
        layer: name(s) of the target layer(s) in ``model.named_modules()``, comma-separated.
        indices: dataset indices that received a map, sorted (CPU ``int64``).
        skipped: chosen images whose map was not finite (NaN or inf in the model's activations or
            gradients); they get no map, and a warning says so.
        source: ``"observed"`` when only indices recorded by ``observe`` were scanned, ``"indices"``
            when the caller gave them, ``"all"`` for a full scan.
        select: the selection policy.
        world_size: ranks that shared the work (1 without ``torch.distributed``).
        computed: maps this rank computed (its share of ``chosen``).

    Examples:
        >>> from torch.utils.data import TensorDataset
        >>> import proxyaug as pa
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2))
        >>> ds = pa.ProxyDataset(TensorDataset(torch.rand(6, 1, 4, 4), torch.tensor([0, 1] * 3)))
        >>> report = ds.refresh(net, fraction=1.0)
        >>> report.scanned, report.wrong == report.written, report.source
        (6, True, 'all')
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
    select: str = "wrong"
    world_size: int = 1
    computed: int = 0

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


class _Items(Dataset):
    """The ``(x, y, idx)`` items of ``ds`` at ``indices``, for a DataLoader."""

    def __init__(self, ds: Any, indices: torch.Tensor) -> None:
        self.ds, self.indices = ds, indices.tolist()

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> Any:
        return self.ds._canonical(self.indices[k])  # never the CPU path's proxied, augmented view


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
    method: Any = "gradcam++",
    fraction: float = 0.2,
    select: str = "wrong",
    target: str = "pred",
    layer: LayerSpec = None,
    preprocess: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    batch_size: int = 128,
    *,
    seed: Optional[int] = None,
    indices: Optional[Iterable[int]] = None,
    reset: bool = False,
    num_workers: int = 0,
    device: Union[str, torch.device, None] = None,
    progress: Optional[bool] = None,
    reshape: Optional[Reshape] = None,
    logits: Optional[Callable[[Any], torch.Tensor]] = None,
    eigen_smooth: bool = False,
    smooth_sigma: Optional[float] = None,
    distributed: Optional[bool] = None,
) -> RefreshReport:
    """Recompute attention maps for a fraction of the training images the model gets wrong.

    1. **Scan**: predict the candidate images in eval mode under ``no_grad``, in batches. The
       candidates are ``indices`` if given, else the indices that [`ProxyDataset.observe()`][proxyaug.ProxyDataset.observe]
       recorded as wrong since the last refresh, else the whole dataset.
    2. **Select**: of the wrongly predicted ones, ``fraction`` chosen at random from ``seed``
       (``select="wrong"``); other policies (``"loss"``, ``"margin"``, ``"entropy"``, ``"random"``)
       choose as many images by their own rule, see [`proxyaug.selection`][proxyaug.selection].
    3. **Attention**: native batched maps (``method``) at ``layer`` for the chosen images, for the
       predicted class (``target="pred"``, the thesis' choice) or the label.
    4. **Commit**: the new maps go into ``ds.bank`` in one step; other samples keep their earlier
       maps unless ``reset``.

    Under an initialised ``torch.distributed`` process group every rank calls ``refresh`` at the
    same point; each scans and maps every ``world_size``-th candidate, the results are all-reduced,
    and every rank ends with the same bank (see [`proxyaug.distributed`][proxyaug.distributed]).
    Mistakes that ``observe`` recorded on any rank are scanned.

    Args:
        model: the classifier being trained; left exactly as found (DDP, DataParallel and
            ``torch.compile`` wrappers are looked through).
        ds: a [`ProxyDataset`][proxyaug.ProxyDataset].
        method: ``"gradcam++"`` (thesis default) or any method [`attention_maps()`][proxyaug.attention_maps] takes.
        fraction: share of the wrong images that get a map, in (0, 1] (thesis: 0.2).
        select: ``"wrong"`` (thesis), ``"loss"``, ``"margin"``, ``"entropy"`` or ``"random"``.
        target: ``"pred"`` or ``"label"``: the class whose evidence the map shows.
        layer: target layer(s) (module, name or list); ``None`` finds it.
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
        reshape: as in [`attention_maps()`][proxyaug.attention_maps].
        logits: as in [`attention_maps()`][proxyaug.attention_maps].
        eigen_smooth: as in [`attention_maps()`][proxyaug.attention_maps].
        smooth_sigma: as in [`attention_maps()`][proxyaug.attention_maps].
        distributed: share the work across the ranks of an initialised process group; ``None``
            does so whenever one of two or more ranks exists, ``False`` never does.

    Returns:
        A [`RefreshReport`][proxyaug.RefreshReport].

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
    method, cam_class = resolve_method(method)
    fraction = check_unit_interval("fraction", fraction, low_open=True)
    select = check_choice("select", select, SELECT)
    if smooth_sigma is not None and not smooth_sigma > 0:
        raise ValueError(f"smooth_sigma={smooth_sigma!r} is not valid; expected a positive number or None.")
    target = check_choice("target", target, TARGETS)
    batch_size = check_positive_int("batch_size", batch_size)
    if preprocess is not None and not callable(preprocess):
        raise TypeError(f"preprocess must be callable (e.g. torchvision.transforms.v2.Normalize); got {type(preprocess).__name__}.")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
    model = unwrap(model)
    bank = getattr(ds, "bank", None)
    if bank is None or not hasattr(ds, "_observed_candidates"):
        raise TypeError(f"ds must be a proxyaug.ProxyDataset holding its bank; got {type(ds).__name__}.")
    ds._check_length()
    n = len(ds.dataset)  # the base samples: with proxies="append", the originals only
    device = torch.device(device) if device is not None else _model_device(model)
    layers = resolve_layers(model, layer, None, reshape) if layer is not None else None

    shard = shard_context(distributed)
    if indices is not None:
        given = indices if isinstance(indices, torch.Tensor) else torch.as_tensor(list(indices), dtype=torch.long)
        candidates, source = check_index("indices", given, size=n).cpu(), "indices"
    else:
        candidates = ds._observed_candidates(shard)
        source = "observed" if candidates is not None else "all"
        if candidates is None:
            candidates = torch.arange(n)
    n_candidates = candidates.numel()
    my_candidates = candidates[shard.positions(n_candidates)] if shard else candidates
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
        score_parts: List[torch.Tensor] = []
        with torch.no_grad():
            for x, y, _ in batches(my_candidates, "proxyaug scan"):
                lg = _logits(model(prepare(x)), logits)
                y = _labels(y).to(lg.device, non_blocking=True)
                # kept on the device: one host transfer after the scan, not one sync per batch
                wrong_parts.append(lg.argmax(dim=1) != y)
                s = scores(select, lg, y)
                if s is not None:
                    score_parts.append(s)
        wrong_mask = torch.cat(wrong_parts).cpu() if wrong_parts else torch.empty(0, dtype=torch.bool)
        score = torch.cat(score_parts).cpu() if score_parts else None
        if shard:  # every rank gets every rank's results, in candidate order
            wrong_mask = shard.gather_rows(wrong_mask.to(torch.uint8), n_candidates, ()).bool()
            if select not in ("wrong", "random"):
                score = shard.gather_rows(score if score is not None else torch.empty(0), n_candidates, ())
        scan_end = time.perf_counter()
        chosen = choose(select, candidates, wrong_mask, score, fraction, ds.refreshes if seed is None else seed)
        my_chosen = chosen[shard.positions(chosen.numel())] if shard else chosen

        maps_parts: List[torch.Tensor] = []
        for x, y, _ in batches(my_chosen, "proxyaug maps"):
            x = prepare(x)
            if layers is None:
                layers = resolve_layers(model, None, x, reshape)
            cls = _labels(y).to(device) if target == "label" else None
            maps_parts.append(
                compute_cams(
                    model, x, layers, method, cls, cam_class=cam_class, logits=logits,
                    eigen_smooth=eigen_smooth, smooth_sigma=smooth_sigma,
                )
            )
    end = time.perf_counter()

    maps = torch.cat(maps_parts) if maps_parts else None
    if shard and chosen.numel():
        local = maps if maps is not None else torch.empty(0, 0, 0)
        h, w = shard.max(torch.tensor(local.shape[-2:] if maps is not None else (0, 0))).tolist()
        maps = shard.gather_rows(local.reshape(-1, h, w), chosen.numel(), (h, w))
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
        scanned=n_candidates, wrong=int(wrong_mask.sum()), chosen=chosen.numel(), written=written.numel(),
        seconds=0.0, scan_seconds=scan_end - start, attention_seconds=end - scan_end, method=method,
        layer=",".join(t.name for t in layers) if layers else "", indices=written, source=source,
        skipped=skipped, select=select, world_size=shard.world_size if shard else 1, computed=my_chosen.numel(),
    )
    ds._commit(written if maps is not None and written.numel() else None, maps, reset=reset, report=report)
    report.seconds = time.perf_counter() - start
    return report
