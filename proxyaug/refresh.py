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
from typing import Any, Callable, Iterable, List, Optional, Tuple, Union

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ._checks import check_choice, check_index, check_positive_int, check_unit_interval, check_unit_range
from .attention._state import eval_mode, unwrap
from .attention.cam import _logits, check_grad_mode, compute_cams, resolve_method
from .attention.methods import GRADIENT_FREE
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
        indices: sample indices (of the wrapped dataset) that received a map, sorted (CPU ``int64``).
        rows: the bank rows those maps went to (equal to ``indices`` unless ``proxies="append"``,
            see [`ProxyDataset.rows()`][proxyaug.ProxyDataset.rows]).
        resolution: ``(h, w)`` of the maps written, or ``None`` when none was.
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
    rows: Optional[torch.Tensor] = None
    resolution: Optional[Tuple[int, int]] = None

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
        size = f"{self.resolution[0]}x{self.resolution[1]} " if self.resolution else ""
        return (
            f"refresh: scanned {self.scanned} ({self.source}), wrong {self.wrong}, chosen {self.chosen}, "
            f"wrote {self.written} {size}{self.method} maps at {self.layer or '<root>'} in {self.seconds:.2f} s "
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


def _check_device(model: nn.Module, device: Union[str, torch.device, None]) -> torch.device:
    """The device to run on: the model's; a ``device`` that is not the model's is refused."""
    own = _model_device(model)
    if device is None:
        return own
    device = torch.device(device)
    has_state = any(True for _ in model.parameters()) or any(True for _ in model.buffers())
    same = device.type == own.type and (device.index is None or own.index is None or device.index == own.index)
    if has_state and not same:
        raise ValueError(
            f"device={str(device)!r} but the model's parameters are on {own}; refresh runs the model where it is. "
            f"Move the model with model.to({str(device)!r}) first, or leave device=None."
        )
    return device


def _on_every_rank(shard: Any, step: Callable[[], Any]) -> Any:
    """Run ``step``; under a process group, every rank learns whether any rank's step failed."""
    if not shard:
        return step()
    try:
        result = step()
    except Exception as err:
        shard.agree(err)
        raise
    shard.agree(None)
    return result


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
       candidates are ``indices`` if given, else the samples that [`ProxyDataset.observe()`][proxyaug.ProxyDataset.observe]
       recorded as wrong since the last refresh, else the whole dataset. Refreshing given ``indices``
       uses up only their observations; the others wait for the next refresh.
    2. **Select**: of the wrongly predicted ones, ``fraction`` chosen at random from ``seed``
       (``select="wrong"``); other policies (``"loss"``, ``"margin"``, ``"entropy"``, ``"random"``)
       choose as many images by their own rule, see [`proxyaug.selection`][proxyaug.selection].
    3. **Attention**: native batched maps (``method``) at ``layer`` for the chosen images, for the
       predicted class (``target="pred"``, the thesis' choice) or the label.
    4. **Commit**: the new maps go into ``ds.bank`` in one step (at the samples' bank rows, see
       [`ProxyDataset.rows()`][proxyaug.ProxyDataset.rows]); other samples keep their earlier maps
       unless ``reset``, which drops them even when no new map is written.

    Float images are checked to lie in [0, 1] (each scanned batch, compared once after the scan),
    the model must be usable with gradients (not under ``torch.inference_mode()``), and the report
    names the maps' resolution, with a warning when they are 2x2 or coarser.

    Under an initialised ``torch.distributed`` process group every rank calls ``refresh`` at the
    same point; each scans and maps every ``world_size``-th candidate, the results are all-reduced,
    and every rank ends with the same bank (see [`proxyaug.distributed`][proxyaug.distributed]).
    Mistakes that ``observe`` recorded on any rank are scanned. A refresh that fails on one rank
    fails on every rank (each raises; none waits in a collective), leaving every bank as it was.

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
        indices: restrict the scan to these sample indices (of the wrapped dataset, not bank rows).
        reset: drop the maps of samples not chosen this time (all of them when none is).
        num_workers: DataLoader workers used to read images.
        device: where to run the model: the device of its parameters (the default); another one
            is refused (move the model first).
        progress: show a tqdm progress bar; ``None`` shows one for scans of 20 batches or more.
            Without one, pytorch-grad-cam's own bars (ScoreCAM, AblationCAM) are silenced too.
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
    if cam_class is None and method not in GRADIENT_FREE:
        check_grad_mode(f"refresh(method={method!r})")  # now, not after the scan
    model = unwrap(model)
    bank = getattr(ds, "bank", None)
    if bank is None or not hasattr(ds, "_observed_candidates"):
        raise TypeError(f"ds must be a proxyaug.ProxyDataset holding its bank; got {type(ds).__name__}.")
    ds._check_length()
    n = len(ds.dataset)  # the base samples: with proxies="append", the originals only
    device = _check_device(model, device)
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
        if preprocess is None:
            return x
        try:
            out = preprocess(x)
        except TypeError as err:
            if x.is_floating_point():
                raise
            raise TypeError(
                f"preprocess failed on the dataset's {x.dtype} images ({err}); make it convert them first, as your "
                "training loop does, e.g. v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])."
            ) from err
        if not isinstance(out, torch.Tensor) or not out.is_floating_point():
            raise TypeError(
                f"preprocess returned {out.dtype if isinstance(out, torch.Tensor) else type(out).__name__} images; "
                "expected floating point. Add v2.ToDtype(torch.float32, scale=True) to it."
            )
        return out

    def scan() -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        wrong_parts: List[torch.Tensor] = []
        score_parts: List[torch.Tensor] = []
        lo = hi = None  # the extremes of the float images, checked after the scan: no sync per batch
        with torch.no_grad():
            for x, y, _ in batches(my_candidates, "proxyaug scan"):
                if x.is_floating_point():
                    lo_b, hi_b = x.aminmax()
                    lo = lo_b if lo is None else torch.minimum(lo, lo_b)
                    hi = hi_b if hi is None else torch.maximum(hi, hi_b)
                lg = _logits(model(prepare(x)), logits)
                y = _labels(y).to(lg.device, non_blocking=True)
                # kept on the device: one host transfer after the scan, not one sync per batch
                wrong_parts.append(lg.argmax(dim=1) != y)
                s = scores(select, lg, y)
                if s is not None:
                    score_parts.append(s)
        if lo is not None:
            check_unit_range("the scanned images", float(lo), float(hi))
        wrong = torch.cat(wrong_parts).cpu() if wrong_parts else torch.empty(0, dtype=torch.bool)
        return wrong, (torch.cat(score_parts).cpu() if score_parts else None)

    def attend(chosen: torch.Tensor) -> Optional[torch.Tensor]:
        nonlocal layers
        parts: List[torch.Tensor] = []
        for x, y, _ in batches(chosen, "proxyaug maps"):
            x = prepare(x)
            if layers is None:
                layers = resolve_layers(model, None, x, reshape)
            cls = _labels(y).to(device) if target == "label" else None
            parts.append(
                compute_cams(
                    model, x, layers, method, cls, cam_class=cam_class, logits=logits,
                    eigen_smooth=eigen_smooth, smooth_sigma=smooth_sigma, progress=bool(show),
                )
            )
        return torch.cat(parts) if parts else None

    with eval_mode(model):
        # a rank that fails tells the others before the next collective, so that all of them raise
        # instead of waiting for it forever
        wrong_mask, score = _on_every_rank(shard, scan)
        if shard:  # every rank gets every rank's results, in candidate order
            wrong_mask = shard.gather_rows(wrong_mask.to(torch.uint8), n_candidates, ()).bool()
            if select not in ("wrong", "random"):
                score = shard.gather_rows(score if score is not None else torch.empty(0), n_candidates, ())
        scan_end = time.perf_counter()
        chosen = choose(select, candidates, wrong_mask, score, fraction, ds.refreshes if seed is None else seed)
        my_chosen = chosen[shard.positions(chosen.numel())] if shard else chosen
        maps = _on_every_rank(shard, lambda: attend(my_chosen))
    end = time.perf_counter()

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
    resolution = (int(maps.shape[-2]), int(maps.shape[-1])) if maps is not None and written.numel() else None
    if resolution is not None and resolution[0] * resolution[1] <= 4:
        warnings.warn(
            f"the maps are {resolution[0]}x{resolution[1]}: too coarse to single out what misled the model. Pick an "
            "earlier target layer with layer= (a finer stage), or feed larger images.",
            UserWarning,
            stacklevel=2,
        )
    report = RefreshReport(
        scanned=n_candidates, wrong=int(wrong_mask.sum()), chosen=chosen.numel(), written=written.numel(),
        seconds=0.0, scan_seconds=scan_end - start, attention_seconds=end - scan_end, method=method,
        layer=",".join(t.name for t in layers) if layers else "", indices=written, source=source,
        skipped=skipped, select=select, world_size=shard.world_size if shard else 1, computed=my_chosen.numel(),
        rows=ds.rows(written) if hasattr(ds, "rows") else written, resolution=resolution,
    )
    ds._commit(
        written if maps is not None and written.numel() else None, maps, reset=reset, report=report,
        scanned=candidates if source == "indices" else None,
    )
    report.seconds = time.perf_counter() - start
    return report
