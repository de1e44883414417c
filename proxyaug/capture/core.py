"""MapCapture: the hooks around a training step, staging, and the commit into the bank (see the package docstring)."""

from __future__ import annotations

import contextlib
import time
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import torch
from torch import nn

from .._checks import check_choice, check_index, check_labels, check_unit_interval, describe
from .._device import to_device
from .._distributed import shard_context
from .._report import RefreshReport, agreed_layer
from .._warn import count_empty
from ..attention import MapSpec, as_spec, resolve_layers, unwrap
from ..attention.layers import TargetLayer, warn_if_coarse
from ..protocol import Refreshable, check_refreshable
from ..selection import SELECT, Budget, budget_size, check_budget, choose, scores
from .hooks import Step, eager, layer_hook, pre_hook, recorded
from .maps import check_geometry, step_maps, to_canonical
from .staging import collect, concat, from_state, last_of_each, with_kept

__all__ = ["MapCapture", "COMMITS", "VIEWS"]

COMMITS = ("epoch", "step")
"""When [`MapCapture`][proxyaug.MapCapture] writes the bank: at ``commit()`` (``"epoch"``) or after every step."""

VIEWS = ("canonical", "all")
"""Which steps' images [`MapCapture`][proxyaug.MapCapture] maps: the canonical ones only (the default), or every one."""


class MapCapture:
    r"""Capture attention maps from your own training steps and write them into a dataset's bank.

    ``with capture.step(model):`` records the target layer's output ``A`` and, in your ``loss.backward()``,
    ``dL/dA``; inside it call [`observe()`][proxyaug.MapCapture.observe] with the batch's ``idx``, logits
    and labels (it also records the batch's mistakes in ``ds.mistakes``: call only this one). When the
    step ends, the batch's maps are staged: the ``spec``'s native method (Grad-CAM++ by default) on ``A``
    and ``dL/dA``, the loss gradient in place of a class score's (Grad-CAM is
    ``ReLU(sum_k mean_hw(dL/dA_k) * A_k)``), normalised per image; any positive factor of the loss
    cancels (see [`step_maps()`][proxyaug.capture.step_maps]). [`commit()`][proxyaug.MapCapture.commit]
    chooses among the staged samples as a refresh among a scan's and writes the bank in one step
    (``commit="epoch"``: when you call it; ``"step"``: after every step).

    **A map in the bank describes the canonical image**, as a refresh's does, not the proxy image
    the model was shown. With ``views="canonical"`` (the default) a sample whose bank row held a
    map when its step ran (so the proxy transform may have changed its image) is not staged: it
    keeps its map, is not counted by the commit, and its observed mistake is not used up (mapping
    the proxy image makes maps oscillate between regions: how-to "Maps from the training step").
    ``views="all"`` maps every step's image as the model saw it (proxyaug 0.1's). The flags are
    read when ``observe`` runs: on the CPU path (workers prefetch) commit per epoch, not per step.
    Maps at 2x2 or coarser get a warning (once) naming a finer layer; ``layer`` is the one chosen.

    A step whose ``A`` or ``dL/dA`` holds inf or NaN (a GradScaler step that overflowed) stages
    nothing. A sample staged twice keeps its last map. Each commit that considered a sample counts
    as one refresh of ``ds`` (``ds.refreshes``, the default seed) and uses up the mistakes
    recorded for the samples it considered. Under ``torch.distributed`` every rank stages its own
    samples and every rank calls ``commit`` (and ``state_dict``) at the same point: the staged
    samples are gathered and every rank writes the same maps. The staged samples survive a
    checkpoint through [`state_dict()`][proxyaug.MapCapture.state_dict].

    Args:
        ds: a [`ProxyDataset`][proxyaug.ProxyDataset] or any [`Refreshable`][proxyaug.protocol.Refreshable].
        spec: how the maps are computed, a [`MapSpec`][proxyaug.MapSpec] with a native method
            (``None``: ``MapSpec()``, Grad-CAM++ as in a refresh). Its ``layer=None`` finds the
            target layer on the first step (one extra forward in eval mode under ``no_grad``, once).
        fraction: the thesis rule's share of the staged wrong samples that get a map (``1.0``:
            every one, since the maps cost nothing).
        select: a policy of [`SELECT`][proxyaug.selection.SELECT], ranking on the training
            step's logits.
        budget: as for [`refresh()`][proxyaug.refresh].
        seed: seed of the random policies; ``None`` uses ``ds.refreshes``.
        commit: ``"epoch"`` (stage until ``commit()``) or ``"step"`` (commit after each step).
        geometry: the ``kornia.augmentation.AugmentationSequential`` that runs between the proxy
            transform and the model: maps are brought back to the dataset's frame through its
            inverse (the parameters of its last call). Geometry it cannot invert is refused.
        reset: at each commit, drop the maps of the samples it considered and did not choose
            (samples it did not consider, such as those shown as their proxy, keep theirs).
        distributed: as for [`refresh()`][proxyaug.refresh].
        views: ``"canonical"`` (stage only steps whose image was the canonical one, see above) or
            ``"all"`` (stage every step's image, proxy or not).

    Examples:
        >>> from torch.utils.data import TensorDataset
        >>> import proxyaug as pa
        >>> _ = torch.manual_seed(0)
        >>> ds = pa.ProxyDataset(TensorDataset(torch.rand(8, 3, 8, 8), torch.randint(0, 3, (8,))))
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        ...                     nn.Flatten(), nn.Linear(4, 3))
        >>> capture = pa.MapCapture(ds, spec=pa.MapSpec(layer="0"))
        >>> x, y, idx = next(iter(torch.utils.data.DataLoader(ds, batch_size=8)))
        >>> with capture.step(net):
        ...     logits = net(x)
        ...     capture.observe(idx, logits, y)  # the batch's rows and mistakes
        ...     nn.functional.cross_entropy(logits, y).backward()
        >>> report = capture.commit()
        >>> report.written == int((logits.argmax(1) != y).sum()) == int(ds.bank.present.sum())
        True
    """

    def __init__(
        self,
        ds: Refreshable,
        *,
        spec: Optional[MapSpec] = None,
        fraction: float = 1.0,
        select: str = "wrong",
        budget: Budget = None,
        seed: Optional[int] = None,
        commit: str = "epoch",
        geometry: Any = None,
        reset: bool = False,
        distributed: Optional[bool] = None,
        views: str = "canonical",
    ) -> None:
        check_refreshable(ds)
        self.spec = as_spec(spec)
        if not self.spec.native or self.spec.transformer:
            raise ValueError(
                f"method={self.spec.name!r} is not valid for capture; expected a native CAM method (gradcam, gradcam++, xgradcam, "
                "hirescam, layercam, ...): capture computes maps from the step's own A and dL/dA, with no pass of its own (rollout, legrad: refresh)."
            )
        self.ds, self.fraction = ds, check_unit_interval("fraction", fraction, low_open=True)
        self.select, self.budget = check_choice("select", select, SELECT), check_budget(budget)
        self.mode, self.seed, self.reset, self.distributed = check_choice("commit", commit, COMMITS), seed, bool(reset), distributed
        self.views = check_choice("views", views, VIEWS)
        self.geometry = check_geometry(geometry)
        self.layers: Optional[List[TargetLayer]] = None
        self._model: Optional[nn.Module] = None  # the module the layers were resolved on
        self._active: Optional[Step] = None
        self._staged: List[Tuple[torch.Tensor, ...]] = []
        self._seconds = 0.0
        self._checked = False  # the first maps' resolution, warned about once

    @property
    def layer(self) -> Optional[str]:
        """The target layer's name (names, comma-separated) in ``model.named_modules()``; ``None`` until a step found it."""
        return ",".join(t.name for t in self.layers) if self.layers else None

    @property
    def staged(self) -> int:
        """Samples staged since the last commit (twice staged: counted twice; ``views="canonical"``: canonical images only).

        Examples:
            >>> import proxyaug as pa
            >>> pa.MapCapture(pa.ProxyDataset(torch.utils.data.TensorDataset(torch.rand(2, 1, 4, 4), torch.zeros(2).long()))).staged
            0
        """
        return sum(int(b[5].sum()) for b in self._staged)

    # -- the step ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def step(self, model: nn.Module) -> Iterator["MapCapture"]:
        """The context around one training step: forward, ``observe``, loss, ``backward``.

        Hooks go on the module inside DDP, DataParallel and ``torch.compile`` wrappers; a compiled
        model runs this step eagerly (``torch.compiler.set_stance("force_eager")``), since its graph
        ignores hooks added after it was compiled. The hooks are removed when the block ends, by an
        exception too; nothing of the step is kept after it. With gradient accumulation, use one
        block per micro-batch. A target layer the forward calls several times is read at its
        first call. A step whose forward ran under ``no_grad`` (only) captures nothing and warns.

        Raises:
            RuntimeError: a step inside a step; a step that ran the target layer but never called
                ``observe`` or never back-propagated to it.

        Examples:
            >>> from torch.utils.data import TensorDataset
            >>> import proxyaug as pa
            >>> ds = pa.ProxyDataset(TensorDataset(torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 0, 1])))
            >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            >>> capture = pa.MapCapture(ds, spec=pa.MapSpec(layer="0"), commit="step")
            >>> x, y, idx = ds.dataset.tensors[0], ds.dataset.tensors[1], torch.arange(4)
            >>> with capture.step(net):
            ...     out = net(x); capture.observe(idx, out, y); nn.functional.cross_entropy(out, y).backward()
            >>> ds.refreshes, capture.staged  # committed after the step
            (1, 0)
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
        if self._active is not None:
            raise RuntimeError("capture.step() blocks do not nest; end the previous step first.")
        inner = unwrap(model)
        st = self._active = Step()
        start = time.perf_counter()
        try:
            if self._model is not inner:
                self.layers, self._model = None, inner
            if self.layers is None and self.spec.layer is not None:
                self.layers = resolve_layers(inner, self.spec.layer, None, self.spec.reshape)
            if self.layers is not None:
                self._hook_layers(st)
            resolve = None if self.layers is not None else (lambda x: self._resolve(inner, st, x))
            st.handles.append(inner.register_forward_pre_hook(pre_hook(st, resolve, keep_example=not self._checked)))
            self._seconds += time.perf_counter() - start
            with eager(model):
                yield self
            start = time.perf_counter()
            self._finish(st)
        finally:
            for h in st.handles:
                h.remove()
            self._active = None
        if self.mode == "step":
            self.commit()
        self._seconds += time.perf_counter() - start

    def _resolve(self, inner: nn.Module, st: Step, x: torch.Tensor) -> None:
        """``layer=None``: the target layer, found on the step's first input (eval mode, no_grad, once), hooked."""
        self.layers = resolve_layers(inner, None, x, self.spec.reshape)
        self._hook_layers(st)

    def _hook_layers(self, st: Step) -> None:
        for i, layer in enumerate(self.layers or []):
            st.handles.append(layer.module.register_forward_hook(layer_hook(i, layer.name, st)))

    def observe(self, idx: Any, logits: torch.Tensor, labels: Any) -> None:
        """Say which samples the step's batch holds, and record its mistakes: call it once inside each ``step`` block.

        It records the batch's mistakes in ``ds.mistakes`` as
        [`ProxyDataset.observe()`][proxyaug.ProxyDataset.observe] does (do not call both), reads
        which of the batch's rows held a map (``views="canonical"``), and keeps the rows, wrong
        flags and policy scores for the step's maps: all on the logits' device, with no host sync
        (``idx`` and ``labels`` from the host are sent from pinned memory without blocking).

        Args:
            idx: the items' ``idx`` ``(B,)``: bank rows, as [`ProxyDataset.observe()`][proxyaug.ProxyDataset.observe] takes.
            logits: the model's outputs ``(B, num_classes)``; read, detached, for the policy.
            labels: true classes ``(B,)``.

        Examples:
            >>> from torch.utils.data import TensorDataset
            >>> import proxyaug as pa
            >>> capture = pa.MapCapture(pa.ProxyDataset(TensorDataset(torch.rand(2, 1, 4, 4), torch.zeros(2).long())))
            >>> capture.observe(torch.tensor([0]), torch.zeros(1, 2), torch.tensor([0]))
            Traceback (most recent call last):
            ...
            RuntimeError: capture.observe() belongs inside a capture.step(model) block, before loss.backward().
        """
        st = self._active
        if st is None:
            raise RuntimeError("capture.observe() belongs inside a capture.step(model) block, before loss.backward().")
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
            raise ValueError(f"logits must be a tensor of shape (B, num_classes); got {describe(logits)}.")
        if st.rows is not None:
            raise RuntimeError("capture.observe() was called twice in one step; call it once, with the whole batch.")
        bank, device = self.ds.bank, logits.device
        rows = check_index("idx", idx, size=len(bank), length=logits.shape[0])
        labels = to_device(check_labels("labels", labels, logits.shape[0]), device)
        st.rows = to_device(rows, device)
        self.ds.mistakes.update(st.rows % self.ds.num_samples, logits, labels)
        st.wrong = logits.detach().argmax(dim=1) != labels
        st.score = scores(self.select, logits.detach(), labels)
        if self.views == "canonical":  # a row that holds a map: the proxy transform may have changed the image
            st.canonical = ~to_device(bank.present[to_device(rows, bank.device)], device)

    def discard(self) -> None:
        """Stage nothing from the running step: for a batch your loop skips (no loss, no backward).

        Call it inside the ``step`` block; the hooks still come off when the block ends.

        Examples:
            >>> from torch.utils.data import TensorDataset
            >>> import proxyaug as pa
            >>> ds = pa.ProxyDataset(TensorDataset(torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 0, 1])))
            >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            >>> capture = pa.MapCapture(ds, spec=pa.MapSpec(layer="0"))
            >>> with capture.step(net):
            ...     out = net(ds.dataset.tensors[0])
            ...     capture.discard()  # e.g. a NaN loss: no backward this time
            >>> capture.staged
            0
        """
        if self._active is None:
            raise RuntimeError("capture.discard() belongs inside a capture.step(model) block.")
        self._active.discarded = True

    def _finish(self, st: Step) -> None:
        """Compute the step's maps and stage them."""
        if st.discarded or not recorded(st, self.layers or []):
            return
        maps, ok = step_maps(self.spec, self.layers or [], st.acts, st.grads, st.size or (0, 0))
        if not self._checked and st.example is not None:
            self._checked = warn_if_coarse("MapCapture", maps, self._model, st.example, self.layer or "")
        if self.geometry is not None:
            maps = to_canonical(self.geometry, maps, st.size, self.ds.bank.resolution)
        rows = st.rows
        if maps.shape[0] != rows.numel():
            raise ValueError(f"the target layer saw {maps.shape[0]} images but observe() got {rows.numel()}; expected one idx per image.")
        score = st.score if st.score is not None else torch.zeros_like(rows, dtype=torch.float32)
        canonical = st.canonical if st.canonical is not None else torch.ones_like(rows, dtype=torch.bool)
        self._staged.append((rows, maps.to(self.ds.bank.maps.dtype), st.wrong, score, ok.expand(rows.numel()), canonical))

    # -- writing the bank ----------------------------------------------------------------------
    def commit(self) -> RefreshReport:
        """Choose among the staged samples and write their maps into the bank, in one step.

        Every rank calls it at the same point under ``torch.distributed``. With ``commit="step"``
        each step calls it; with ``"epoch"`` you do (nothing staged from a canonical image:
        nothing written, nothing counted).

        Returns:
            A [`RefreshReport`][proxyaug.RefreshReport] with ``source="capture"``: ``scanned`` the
            distinct samples staged, ``wrong`` those predicted wrongly in their step, ``skipped``
            the samples of steps with non-finite gradients, ``dropped`` the maps ``reset`` removed.

        Examples:
            >>> from torch.utils.data import TensorDataset
            >>> import proxyaug as pa
            >>> capture = pa.MapCapture(pa.ProxyDataset(TensorDataset(torch.rand(2, 1, 4, 4), torch.zeros(2).long())))
            >>> capture.commit().written
            0
        """
        start = time.perf_counter()
        local, self._staged = concat(self._staged), []
        shard = shard_context(self.distributed)
        rows, maps, wrong, score, ok = collect(local, shard)
        skipped = int((~ok).sum())
        samples = rows[ok] % self.ds.num_samples  # with proxies="append" an extra item counts for its sample
        keep = last_of_each(samples)
        samples, maps = samples[keep], maps[ok.to(maps.device)][keep.to(maps.device)]
        wrong, score = wrong[ok][keep], score[ok][keep]
        seed = self.ds.refreshes if self.seed is None else self.seed
        chosen = choose(self.select, samples, wrong, score, self.fraction, seed, budget=self.budget)
        new = maps[torch.searchsorted(samples, chosen).to(maps.device)].float()
        write, values, dropped = with_kept(self.ds, samples, chosen, new) if self.reset else (chosen, new, 0)
        report = RefreshReport(
            scanned=samples.numel(), wrong=int(wrong.sum()), chosen=chosen.numel(), written=chosen.numel(), seconds=0.0,
            scan_seconds=0.0, attention_seconds=self._seconds, method=self.spec.name,
            layer=agreed_layer(shard, ",".join(t.name for t in self.layers or [])), indices=chosen, source="capture",
            skipped=skipped, select=self.select, world_size=shard.world_size if shard else 1, computed=int(local[5].sum()),
            rows=self.ds.rows(chosen), resolution=tuple(maps.shape[-2:]) if chosen.numel() else None, dropped=dropped, empty=count_empty(new),
            budget=budget_size(self.budget, wrong=int(wrong.sum()), scanned=samples.numel(), fraction=self.fraction),
            budget_rule="thesis" if self.budget is None else f"{'share' if isinstance(self.budget, float) else 'count'} {self.budget}",
        )
        self._seconds = 0.0
        if samples.numel():  # the same on every rank
            some = bool(write.numel())
            self.ds.commit(write if some else None, values if some else None, reset=self.reset, report=report, scanned=samples)
        report.seconds = time.perf_counter() - start
        return report

    def clear(self) -> None:
        """Drop what was staged since the last commit, writing nothing.

        Examples:
            >>> from torch.utils.data import TensorDataset
            >>> import proxyaug as pa
            >>> capture = pa.MapCapture(pa.ProxyDataset(TensorDataset(torch.rand(2, 1, 4, 4), torch.zeros(2).long())))
            >>> capture.clear(); capture.staged
            0
        """
        self._staged = []

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, torch.Tensor]:
        """The samples staged since the last commit, of every rank: what a checkpoint taken mid-epoch needs.

        Under ``torch.distributed`` this is a collective, as torchmetrics' state sync is: every
        rank calls it at the same point (Lightning does, on every rank, when it saves a
        checkpoint), and every rank returns every rank's staged samples, in the order a commit
        would gather them. Staged samples of proxy images (``views="canonical"``) are left out.

        Returns:
            ``{"rows", "maps", "wrong", "score", "ok"}``: one entry per staged sample, CPU tensors
            (``maps`` ``(K, h, w)`` in the bank's dtype).

        Examples:
            >>> from torch.utils.data import TensorDataset
            >>> import proxyaug as pa
            >>> capture = pa.MapCapture(pa.ProxyDataset(TensorDataset(torch.rand(2, 1, 4, 4), torch.zeros(2).long())))
            >>> sorted(capture.state_dict())
            ['maps', 'ok', 'rows', 'score', 'wrong']
        """
        rows, maps, wrong, score, ok = collect(concat(self._staged), shard_context(self.distributed))
        return {"rows": rows, "maps": maps.cpu().to(self.ds.bank.maps.dtype), "wrong": wrong, "score": score, "ok": ok}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Stage what [`state_dict()`][proxyaug.MapCapture.state_dict] returned, in place of anything staged.

        Under ``torch.distributed`` each rank keeps its share (positions ``rank, rank + world,
        ...``), so the next commit gathers every saved sample once, in its saved order, before the
        samples staged after the restart; the world size may differ from the saving run's.

        Examples:
            >>> from torch.utils.data import TensorDataset
            >>> import proxyaug as pa
            >>> ds = pa.ProxyDataset(TensorDataset(torch.rand(4, 1, 4, 4), torch.zeros(4).long()))
            >>> capture = pa.MapCapture(ds)
            >>> capture.load_state_dict({"rows": torch.tensor([2]), "maps": torch.ones(1, 2, 2), "wrong": torch.tensor([True]),
            ...                          "score": torch.zeros(1), "ok": torch.tensor([True])})
            >>> capture.staged, capture.commit().indices
            (1, tensor([2]))
        """
        bank = self.ds.bank
        batch = from_state(state, shard_context(self.distributed), rows=len(bank), device=bank.device, dtype=bank.maps.dtype)
        self._staged = [batch] if batch[0].numel() else []
