"""refresh: scan the training set, select wrong predictions, compute their maps, update the bank.

A refresh runs in five stages, each a method of one small object: **candidates** (which samples
to scan), **scan** (predict them), **select** (which get a map), **attend** (compute the maps)
and **commit** (write them). It talks to what it refreshes only through the
[`Refreshable`][proxyaug.protocol.Refreshable] protocol, which
[`ProxyDataset`][proxyaug.ProxyDataset] implements.

The bank is written once, at the end, with every new map: an error or ``KeyboardInterrupt``
anywhere before leaves it (and the record of observed mistakes) exactly as it was. The model is
left as found: the whole refresh runs in eval mode with each module's flag restored afterwards,
the scan runs under ``no_grad``, and maps come from [`proxyaug.attention.compute_cams()`][proxyaug.attention.compute_cams],
which writes no parameter gradient and removes its hook in every case.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any, Callable, Iterable, List, Optional, Tuple, Union

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ._checks import check_choice, check_index, check_labels, check_positive_int, check_unit_interval, check_unit_range
from .attention import MapSpec, as_spec, check_grad_mode, compute_cams, eval_mode, extract_logits, model_device, resolve_layers, unwrap
from ._distributed import shard_context
from ._warn import count_empty
from .attention.layers import warn_if_coarse
from .protocol import Refreshable, check_refreshable
from ._report import RefreshReport, agreed_layer
from .selection import POLICIES, SELECT, Budget, budget_size, check_budget, choose, scores

__all__ = ["RefreshReport", "refresh"]

TARGETS = ("pred", "label")


class _Items(Dataset):
    """The canonical ``(x, y)`` of samples ``indices``, for a DataLoader."""

    def __init__(self, ds: Refreshable, indices: torch.Tensor) -> None:
        self.ds, self.indices = ds, indices.tolist()

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> Any:
        return self.ds.canonical(self.indices[k])  # never the CPU path's proxied, augmented view


def _check_device(model: nn.Module, device: Union[str, torch.device, None]) -> torch.device:
    """The device to run on: the model's; a ``device`` that is not the model's is refused."""
    own = model_device(model)
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


class _Refresh:
    """One refresh: the settings, and the stages that use them."""

    def __init__(self, model: nn.Module, ds: Refreshable, spec: MapSpec, **settings: Any) -> None:
        self.model, self.ds, self.spec = model, ds, spec
        self.layers = resolve_layers(model, spec.layer, None, spec.reshape) if spec.layer is not None else None
        self.example: Optional[torch.Tensor] = None  # the first image mapped, to name a finer layer if the maps are coarse
        self.__dict__.update(settings)  # select, target, fraction, preprocess, batch_size, ...
        self.shard = shard_context(self.distributed)

    # -- candidates ----------------------------------------------------------------------------
    def candidates(self, n: int) -> Tuple[torch.Tensor, str]:
        """``indices`` if given, else the mistakes observed (on any rank), else every sample."""
        if self.indices is not None:
            return self.indices, "indices"
        # the union over ranks under a shard; distributed=False (or one process): this rank's records, no collective
        observed = self.ds.mistakes.compute() if self.shard else self.ds.mistakes.local()
        if observed.numel():
            return observed, "observed"
        return torch.arange(n), "all"

    def mine(self, items: torch.Tensor) -> torch.Tensor:
        """This rank's share of ``items``."""
        return items[self.shard.positions(items.numel())] if self.shard else items

    # -- reading images ------------------------------------------------------------------------
    def batches(self, idx: torch.Tensor, desc: str) -> Iterable[Any]:
        loader = DataLoader(_Items(self.ds, idx), batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers)
        if self.show:
            from tqdm.auto import tqdm

            return tqdm(loader, desc=desc, unit="batch", leave=False)
        return loader

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """A batch on the device, as the model sees it in training."""
        if self.preprocess is None and not x.is_floating_point():
            raise TypeError(
                f"the dataset yields {x.dtype} images; pass preprocess= converting them as your training loop "
                "does, e.g. v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])."
            )
        x = x.to(self.device, non_blocking=True)
        if self.preprocess is None:
            return x
        try:
            out = self.preprocess(x)
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

    # -- scan ----------------------------------------------------------------------------------
    def scan(self, idx: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Which of ``idx`` the model gets wrong, and the selection policy's scores (CPU)."""
        wrong_parts: List[torch.Tensor] = []
        score_parts: List[torch.Tensor] = []
        lo = hi = None  # the extremes of the float images, checked after the scan: no sync per batch
        with torch.no_grad():
            for x, y in self.batches(idx, "proxyaug scan"):
                if x.is_floating_point():
                    lo_b, hi_b = x.aminmax()
                    lo = lo_b if lo is None else torch.minimum(lo, lo_b)
                    hi = hi_b if hi is None else torch.maximum(hi, hi_b)
                lg = extract_logits(self.model(self.prepare(x)), self.spec.logits)
                y = check_labels("labels", y).to(lg.device, non_blocking=True)
                # kept on the device: one host transfer after the scan, not one sync per batch
                wrong_parts.append(lg.argmax(dim=1) != y)
                s = scores(self.select, lg, y)
                if s is not None:
                    score_parts.append(s)
        if lo is not None:
            check_unit_range("the scanned images", float(lo), float(hi))
        wrong = torch.cat(wrong_parts).cpu() if wrong_parts else torch.empty(0, dtype=torch.bool)
        return wrong, (torch.cat(score_parts).cpu() if score_parts else None)

    def gather_scan(self, wrong: torch.Tensor, score: Optional[torch.Tensor], n: int) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Every rank's scan results, in candidate order, on every rank."""
        if not self.shard:
            return wrong, score
        wrong = self.shard.gather_rows(wrong.to(torch.uint8), n, ()).bool()
        if POLICIES[self.select].score is not None:
            score = self.shard.gather_rows(score if score is not None else torch.empty(0), n, ())
        return wrong, score

    # -- attend --------------------------------------------------------------------------------
    def attend(self, chosen: torch.Tensor) -> Optional[torch.Tensor]:
        """The maps of samples ``chosen`` (this rank's share)."""
        parts: List[torch.Tensor] = []
        for x, y in self.batches(chosen, "proxyaug maps"):
            x = self.prepare(x)
            if self.example is None:
                self.example = x[:1]
            if self.layers is None:
                self.layers = resolve_layers(self.model, None, x, self.spec.reshape)
            cls = check_labels("labels", y).to(self.device) if self.target == "label" else None
            parts.append(compute_cams(self.model, x, self.layers, self.spec, cls, progress=bool(self.show)))
        return torch.cat(parts) if parts else None

    def gather_maps(self, maps: Optional[torch.Tensor], chosen: int) -> Optional[torch.Tensor]:
        """Every rank's maps, in chosen order, on every rank."""
        if not self.shard or not chosen:
            return maps
        local = maps if maps is not None else torch.empty(0, 0, 0)
        h, w = self.shard.max(torch.tensor(local.shape[-2:] if maps is not None else (0, 0))).tolist()
        return self.shard.gather_rows(local.reshape(-1, h, w), chosen, (h, w))


def _check_indices(indices: Optional[Iterable[int]], n: int) -> Optional[torch.Tensor]:
    """``indices`` as distinct in-range sample indices (CPU int64), checked before anything runs."""
    if indices is None:
        return None
    given = indices if isinstance(indices, torch.Tensor) else torch.as_tensor(list(indices), dtype=torch.long)
    given = check_index("indices", given, size=n).cpu()
    uniq, counts = torch.unique(given, return_counts=True)
    if uniq.numel() != given.numel():
        twice = uniq[counts > 1][:5].tolist()
        raise ValueError(f"indices holds the sample(s) {twice} more than once; expected distinct sample indices, e.g. sorted(set(indices)).")
    return given


def _dropped(ds: Refreshable, written: torch.Tensor) -> int:
    """The maps a commit with ``reset`` drops: every present one but those of the samples it writes."""
    present = ds.bank.present
    return int(present.sum()) - int(present[ds.rows(written).to(present.device)].sum())


def _finite(maps: Optional[torch.Tensor], chosen: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor], int]:
    """Drop the maps that are not finite, with a warning: ``(samples, maps, skipped)``."""
    if maps is None:
        return chosen, None, 0
    finite = torch.isfinite(maps).flatten(1).all(dim=1).cpu()
    skipped = int((~finite).sum())
    if skipped:
        warnings.warn(
            f"{skipped} of {chosen.numel()} attention maps were not finite (NaN or inf in the model's "
            "activations or gradients at the target layer); those samples get no map this round.",
            RuntimeWarning,
            stacklevel=3,
        )
        return chosen[finite], maps[finite.to(maps.device)], skipped
    return chosen, maps, 0


def _resolution(maps: Optional[torch.Tensor], written: torch.Tensor, run: "_Refresh") -> Optional[Tuple[int, int]]:
    """The maps' ``(h, w)``, with a warning at the caller's line when they are too coarse to be useful."""
    if maps is None or not written.numel():
        return None
    warn_if_coarse("refresh", maps, run.model, run.example, ",".join(t.name for t in run.layers or []))
    return int(maps.shape[-2]), int(maps.shape[-1])


def _rule(budget: Budget) -> str:
    """The budget as given, for the report."""
    return "thesis" if budget is None else f"share {budget}" if isinstance(budget, float) else f"count {budget}"


def refresh(
    model: nn.Module,
    ds: Refreshable,
    *,
    spec: Optional[MapSpec] = None,
    fraction: float = 0.2,
    select: str = "wrong",
    budget: Budget = None,
    target: str = "pred",
    preprocess: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    batch_size: int = 128,
    seed: Optional[int] = None,
    indices: Optional[Iterable[int]] = None,
    reset: bool = False,
    num_workers: int = 0,
    device: Union[str, torch.device, None] = None,
    progress: Optional[bool] = None,
    distributed: Optional[bool] = None,
) -> RefreshReport:
    """Recompute attention maps for a fraction of the training images the model gets wrong.

    1. **Candidates**: ``indices`` if given, else the samples that [`ProxyDataset.observe()`][proxyaug.ProxyDataset.observe]
       recorded as wrong since the last refresh, else the whole dataset. Refreshing given ``indices``
       uses up only their observations; the others wait for the next refresh.
    2. **Scan**: predict the candidate images in eval mode under ``no_grad``, in batches.
    3. **Select**: of the wrongly predicted ones, ``fraction`` chosen at random from ``seed``
       (``select="wrong"``); other policies (``"loss"``, ``"margin"``, ``"entropy"``, ``"random"``)
       choose as many images by their own rule, see [`proxyaug.selection`][proxyaug.selection].
       ``budget`` replaces the thesis rule's count by a share of the scanned images or a fixed
       count, which does not fall to zero once the model gets its training images right.
    4. **Attend**: the maps ``spec`` describes (Grad-CAM++ at the layer found by default) for the
       chosen images, batched, for the predicted class (``target="pred"``, the thesis' choice) or the label.
    5. **Commit**: the new maps go into ``ds.bank`` in one step (at the samples' bank rows, see
       [`ProxyDataset.rows()`][proxyaug.ProxyDataset.rows]); other samples keep their earlier maps
       unless ``reset``, which drops them even when no new map is written.

    Float images are checked to lie in [0, 1] (each scanned batch, compared once after the scan),
    the model must be usable with gradients (not under ``torch.inference_mode()``), and the report
    names the maps' resolution, with a warning when they are 2x2 or coarser.

    Under an initialised ``torch.distributed`` process group every rank calls ``refresh`` at the
    same point; each scans and maps every ``world_size``-th candidate, the results are all-reduced,
    and every rank ends with the same bank .
    Mistakes that ``observe`` recorded on any rank are scanned. A refresh that fails on one rank
    fails on every rank (each raises; none waits in a collective), leaving every bank as it was.

    Args:
        model: the classifier being trained; left exactly as found (DDP, DataParallel and
            ``torch.compile`` wrappers are looked through).
        ds: a [`ProxyDataset`][proxyaug.ProxyDataset], or any [`Refreshable`][proxyaug.protocol.Refreshable].
        spec: how the maps are computed, a [`MapSpec`][proxyaug.MapSpec] (method, target layer,
            reshape, logits, smoothing); ``None`` is ``MapSpec()``: Grad-CAM++ (the thesis'
            choice) at the layer found.
        fraction: share of the wrong images that get a map, in (0, 1] (thesis: 0.2).
        select: ``"wrong"`` (thesis), ``"loss"``, ``"margin"``, ``"entropy"`` or ``"random"``.
        budget: how many images the policy chooses: ``None``, the thesis rule
            ``round(fraction * wrong)``; a float in (0, 1], that share of the scanned images; an
            int, that many. ``"wrong"`` maps wrong images only, so it chooses fewer when fewer are
            wrong; the others choose among all scanned images. ``fraction`` is used only when
            ``budget`` is ``None``.
        target: ``"pred"`` or ``"label"``: the class whose evidence the map shows.
        preprocess: applied to each batch on the device before the model (e.g. normalisation),
            so the model sees what it sees in training.
        batch_size: images per forward pass.
        seed: seed of the random subset; ``None`` uses the number of refreshes ``ds`` has done,
            so each round is reproducible and rounds differ.
        indices: restrict the scan to these distinct sample indices (of the wrapped dataset, not
            bank rows); a repeated one is refused before anything runs.
        reset: drop the maps of samples not chosen this time (all of them when none is).
        num_workers: DataLoader workers used to read images.
        device: where to run the model: the device of its parameters (the default); another one
            is refused (move the model first).
        progress: show a tqdm progress bar; ``None`` shows one for scans of 20 batches or more.
            Without one, pytorch-grad-cam's own bars (ScoreCAM, AblationCAM) are silenced too.
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
    spec = as_spec(spec)
    if preprocess is not None and not callable(preprocess):
        raise TypeError(f"preprocess must be callable (e.g. torchvision.transforms.v2.Normalize); got {type(preprocess).__name__}.")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
    if spec.needs_grad and spec.native:
        check_grad_mode(f"refresh(spec=MapSpec({spec.name!r}))")  # now, not after the scan
    check_refreshable(ds)
    model = unwrap(model)
    run = _Refresh(
        model, ds, spec, fraction=check_unit_interval("fraction", fraction, low_open=True),
        select=check_choice("select", select, SELECT), target=check_choice("target", target, TARGETS), budget=check_budget(budget),
        preprocess=preprocess, batch_size=check_positive_int("batch_size", batch_size), indices=_check_indices(indices, ds.num_samples),
        num_workers=num_workers, device=_check_device(model, device), distributed=distributed,
    )
    candidates, source = run.candidates(ds.num_samples)
    run.show = progress if progress is not None else math.ceil(candidates.numel() / batch_size) >= 20
    with eval_mode(model):
        # a rank that fails tells the others before the next collective, so that all of them raise
        # instead of waiting for it forever
        wrong, score = run.gather_scan(*_on_every_rank(run.shard, lambda: run.scan(run.mine(candidates))), candidates.numel())
        scan_end = time.perf_counter()
        chosen = choose(run.select, candidates, wrong, score, run.fraction, ds.refreshes if seed is None else seed, budget=run.budget)
        maps = run.gather_maps(_on_every_rank(run.shard, lambda: run.attend(run.mine(chosen))), chosen.numel())
    end = time.perf_counter()
    written, maps, skipped = _finite(maps, chosen)
    report = RefreshReport(
        scanned=candidates.numel(), wrong=int(wrong.sum()), chosen=chosen.numel(), written=written.numel(),
        seconds=0.0, scan_seconds=scan_end - start, attention_seconds=end - scan_end, method=spec.name,
        layer=agreed_layer(run.shard, ",".join(t.name for t in run.layers or [])), indices=written, source=source,
        skipped=skipped, select=run.select, world_size=run.shard.world_size if run.shard else 1,
        computed=run.mine(chosen).numel(), rows=ds.rows(written), resolution=_resolution(maps, written, run), empty=count_empty(maps) if written.numel() else 0,
        budget=budget_size(run.budget, wrong=int(wrong.sum()), scanned=candidates.numel(), fraction=run.fraction),
        budget_rule=_rule(run.budget), dropped=_dropped(ds, written) if reset else 0,
    )
    ds.commit(
        written if maps is not None and written.numel() else None, maps, reset=reset, report=report,
        scanned=candidates if source == "indices" else None,
    )
    report.seconds = time.perf_counter() - start
    return report
