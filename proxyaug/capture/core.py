"""MapCapture: the hooks around a training step, staging, and the commit into the bank (see the package docstring)."""

from __future__ import annotations

import contextlib
import dataclasses
import time
import warnings
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
from torch import nn

from .._checks import check_choice, check_index, check_labels, check_unit_interval, describe
from ..attention import MapSpec, as_spec, resolve_layers, unwrap
from ..attention.layers import TargetLayer
from .._distributed import shard_context
from ..protocol import Refreshable, check_refreshable
from .._report import RefreshReport
from ..selection import SELECT, Budget, budget_size, check_budget, choose, scores
from .maps import check_geometry, step_maps, to_canonical
from .staging import concat, gather, last_of_each

__all__ = ["MapCapture", "COMMITS"]

COMMITS = ("epoch", "step")
"""When [`MapCapture`][proxyaug.MapCapture] writes the bank: at ``commit()`` (``"epoch"``) or after every step."""


@dataclasses.dataclass
class _Step:
    """What one step recorded; dropped when the step ends."""

    size: Optional[Tuple[int, int]] = None  # the model's input (H, W)
    acts: Dict[int, torch.Tensor] = dataclasses.field(default_factory=dict)
    grads: Dict[int, torch.Tensor] = dataclasses.field(default_factory=dict)
    handles: List[Any] = dataclasses.field(default_factory=list)
    rows: Optional[torch.Tensor] = None
    wrong: Optional[torch.Tensor] = None
    score: Optional[torch.Tensor] = None
    resolving: bool = False
    discarded: bool = False


def _is_compiled(model: nn.Module) -> bool:
    """Whether ``model`` (or what DDP / DataParallel wrap) is a ``torch.compile`` module."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return hasattr(model, "_orig_mod")


def _eager(compiled: bool) -> Any:
    """A context in which a compiled model runs eagerly (its graph would skip hooks added after compiling)."""
    if not compiled:
        return contextlib.nullcontext()
    set_stance = getattr(torch.compiler, "set_stance", None)
    if set_stance is None:  # torch < 2.6: the step runs compiled, the hooks may not fire (then: a warning, no maps)
        return contextlib.nullcontext()
    return set_stance("force_eager")


class MapCapture:
    r"""Capture attention maps from your own training steps and write them into a dataset's bank.

    ``with capture.step(model):`` records the target layer's output ``A`` and, in your
    ``loss.backward()``, ``dL/dA``; inside it call [`observe()`][proxyaug.MapCapture.observe] with
    the batch's ``idx``, logits and labels. When the step ends, the batch's maps (Grad-CAM of the
    loss by default, ``ReLU(sum_k mean_hw(dL/dA_k) * A_k)``, normalised per image) are staged;
    [`commit()`][proxyaug.MapCapture.commit] chooses among the staged samples as a refresh chooses
    among a scan's and writes the bank in one step (``commit="epoch"``: when you call it;
    ``"step"``: after every step).

    A step whose ``A`` or ``dL/dA`` holds inf or NaN (a GradScaler step that overflowed) stages
    nothing. A sample staged twice keeps its last map. Each commit counts as one refresh of
    ``ds`` (``ds.refreshes``, the default seed) and uses up the mistakes ``ds.observe`` recorded
    for the samples it considered. Under ``torch.distributed`` every rank stages its own
    samples and every rank calls ``commit`` at the same point: the staged samples are gathered
    and every rank writes the same maps. Staged maps are not part of any ``state_dict``: commit
    before checkpointing.

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
        reset: drop the maps of samples not chosen at each commit.
        distributed: as for [`refresh()`][proxyaug.refresh].

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
        ...     capture.observe(idx, logits, y)
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
    ) -> None:
        check_refreshable(ds)
        self.spec = as_spec(spec)
        if not self.spec.native:
            raise ValueError(
                f"method={self.spec.name!r} is not valid for capture; expected a native method (gradcam, gradcam++, xgradcam, "
                "hirescam, layercam, ...): capture computes maps from the step's own A and dL/dA, with no pass of its own."
            )
        self.ds, self.fraction = ds, check_unit_interval("fraction", fraction, low_open=True)
        self.select, self.budget = check_choice("select", select, SELECT), check_budget(budget)
        self.mode, self.seed, self.reset, self.distributed = check_choice("commit", commit, COMMITS), seed, bool(reset), distributed
        self.geometry = check_geometry(geometry)
        self.layers: Optional[List[TargetLayer]] = None
        self._model: Optional[nn.Module] = None  # the module the layers were resolved on
        self._active: Optional[_Step] = None
        self._staged: List[Tuple[torch.Tensor, ...]] = []
        self._seconds = 0.0

    @property
    def staged(self) -> int:
        """Samples staged since the last commit (a sample staged twice counts twice).

        Examples:
            >>> from torch.utils.data import TensorDataset
            >>> import proxyaug as pa
            >>> pa.MapCapture(pa.ProxyDataset(TensorDataset(torch.rand(2, 1, 4, 4), torch.zeros(2).long()))).staged
            0
        """
        return sum(int(b[0].numel()) for b in self._staged)

    # -- the step ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def step(self, model: nn.Module) -> Iterator["MapCapture"]:
        """The context around one training step: forward, ``observe``, loss, ``backward``.

        Hooks go on the module inside DDP, DataParallel and ``torch.compile`` wrappers; a compiled
        model runs this step eagerly (``torch.compiler.set_stance("force_eager")``), since its graph
        ignores hooks added after it was compiled. The hooks are removed when the block ends, by an
        exception too; nothing of the step is kept after it. With gradient accumulation, use one
        block per micro-batch.

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
        st = self._active = _Step()
        start = time.perf_counter()
        try:
            if self._model is not inner:
                self.layers, self._model = None, inner
            if self.layers is None and self.spec.layer is not None:
                self.layers = resolve_layers(inner, self.spec.layer, None, self.spec.reshape)
            st.handles.append(inner.register_forward_pre_hook(self._pre_hook(inner, st)))
            if self.layers is not None:
                self._hook_layers(st)
            self._seconds += time.perf_counter() - start
            with _eager(_is_compiled(model)):
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

    def _pre_hook(self, inner: nn.Module, st: _Step) -> Any:
        def hook(module: nn.Module, inputs: Any) -> None:
            if st.resolving or st.size is not None:
                return
            x = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
            st.size = tuple(x.shape[-2:]) if x is not None and x.ndim >= 2 else (0, 0)
            if self.layers is None:  # layer=None: found now, on this input (eval mode, no_grad, once)
                if x is None:
                    raise ValueError("layer=None needs the model's first positional input to be the image batch; pass layer=.")
                st.resolving = True
                try:
                    self.layers = resolve_layers(inner, None, x.detach(), self.spec.reshape)
                finally:
                    st.resolving = False
                self._hook_layers(st)

        return hook

    def _hook_layers(self, st: _Step) -> None:
        for i, layer in enumerate(self.layers or []):
            st.handles.append(layer.module.register_forward_hook(self._layer_hook(i, st)))

    def _layer_hook(self, i: int, st: _Step) -> Any:
        name = self.layers[i].name if self.layers else "?"

        def on_grad(grad: torch.Tensor) -> None:
            st.grads[i] = grad  # read only: the gradient flows on unchanged

        def hook(module: nn.Module, inputs: Any, output: Any) -> Optional[torch.Tensor]:
            if st.resolving or i in st.acts:  # the first call of the layer in the step only
                return None
            if not isinstance(output, torch.Tensor):
                raise ValueError(f"the target layer {name!r} ({type(module).__name__}) returned a {type(output).__name__}; expected a tensor.")
            replaced = None
            if not output.requires_grad:
                if not torch.is_grad_enabled():
                    return None  # a forward under no_grad (an evaluation inside the step): nothing to read
                # the layer and everything before it are frozen: no gradient would stop here. A leaf that
                # requires it does (its clone goes on, so in-place ops downstream stay legal); the values,
                # and every parameter's gradient, are unchanged.
                output = output.detach().requires_grad_(True)
                replaced = output.clone()
            st.acts[i] = output.detach().clone()  # a copy: in-place ops after the layer must not change it
            st.handles.append(output.register_hook(on_grad))
            return replaced

        return hook

    def observe(self, idx: Any, logits: torch.Tensor, labels: Any) -> None:
        """Say which samples the step's batch holds: call it once inside each ``step`` block.

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
        st.rows = check_index("idx", idx, size=len(self.ds.bank), length=logits.shape[0]).to(logits.device)
        labels = check_labels("labels", labels, logits.shape[0]).to(logits.device)
        st.wrong = logits.detach().argmax(dim=1) != labels
        st.score = scores(self.select, logits.detach(), labels)

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

    # -- maps ----------------------------------------------------------------------------------
    def _finish(self, st: _Step) -> None:
        """Compute the step's maps and stage them."""
        if st.discarded:
            return
        if not st.acts:
            if st.rows is not None:
                warnings.warn(
                    "capture: the target layer did not run under the capture's hook in this step (a graph compiled "
                    "before the hooks existed skips them: torch.compile'd functions, or torch < 2.6); nothing was "
                    "captured. Pass the compiled module itself to capture.step(), or capture without compiling.",
                    RuntimeWarning,
                    stacklevel=4,
                )
            return
        if st.rows is None:
            raise RuntimeError("the step ran the model but never called capture.observe(idx, logits, labels); call it inside the step.")
        layers = self.layers or []
        if len(st.acts) != len(layers):
            absent = [t.name for i, t in enumerate(layers) if i not in st.acts]
            raise ValueError(f"the target layer(s) {absent} were not called in the forward pass; pass layer= modules the model uses.")
        missing = [layers[i].name for i in st.acts if i not in st.grads]
        if missing:
            raise RuntimeError(
                f"no gradient reached the target layer(s) {missing} in this step; call loss.backward() inside the "
                "capture.step() block (the optimizer may step after it)."
            )
        maps, ok = step_maps(self.spec, self.layers or [], st.acts, st.grads, st.size or (0, 0))
        if self.geometry is not None:
            maps = to_canonical(self.geometry, maps, st.size, self.ds.bank.resolution)
        if maps.shape[0] != st.rows.numel():
            raise ValueError(f"the target layer saw {maps.shape[0]} images but observe() got {st.rows.numel()}; expected one idx per image.")
        score = st.score if st.score is not None else torch.zeros_like(st.rows, dtype=torch.float32)
        self._staged.append((st.rows, maps.to(self.ds.bank.maps.dtype), st.wrong, score, ok.expand(st.rows.numel())))

    # -- writing the bank ----------------------------------------------------------------------
    def commit(self) -> RefreshReport:
        """Choose among the staged samples and write their maps into the bank, in one step.

        Every rank calls it at the same point under ``torch.distributed``. With ``commit="step"``
        each step calls it; with ``"epoch"`` you do (nothing staged: nothing written, nothing counted).

        Returns:
            A [`RefreshReport`][proxyaug.RefreshReport] with ``source="capture"``: ``scanned`` the
            distinct samples staged, ``wrong`` those predicted wrongly in their step, ``skipped``
            the samples of steps with non-finite gradients.

        Examples:
            >>> from torch.utils.data import TensorDataset
            >>> import proxyaug as pa
            >>> capture = pa.MapCapture(pa.ProxyDataset(TensorDataset(torch.rand(2, 1, 4, 4), torch.zeros(2).long())))
            >>> capture.commit().written
            0
        """
        start = time.perf_counter()
        staged, self._staged = self._staged, []
        rows, maps, wrong, score, ok = concat(staged)
        computed = int(rows.numel())
        shard = shard_context(self.distributed)
        if shard is not None:
            rows, maps, wrong, score, ok = gather(shard, rows, maps, wrong, score, ok)
        ok = ok.cpu()
        skipped = int((~ok).sum())
        n = self.ds.num_samples
        samples = rows.cpu()[ok] % n  # with proxies="append" an extra item counts for its sample
        keep = last_of_each(samples)
        samples, maps = samples[keep], maps[ok.to(maps.device)][keep.to(maps.device)]
        wrong, score = wrong.cpu()[ok][keep], score.cpu()[ok][keep]
        seed = self.ds.refreshes if self.seed is None else self.seed
        chosen = choose(self.select, samples, wrong, score, self.fraction, seed, budget=self.budget)
        pos = torch.searchsorted(samples, chosen)
        report = RefreshReport(
            scanned=samples.numel(), wrong=int(wrong.sum()), chosen=chosen.numel(), written=chosen.numel(), seconds=0.0,
            scan_seconds=0.0, attention_seconds=self._seconds, method=self.spec.name,
            layer=",".join(t.name for t in self.layers or []), indices=chosen, source="capture", skipped=skipped,
            select=self.select, world_size=shard.world_size if shard else 1, computed=computed,
            rows=self.ds.rows(chosen), resolution=tuple(maps.shape[-2:]) if chosen.numel() else None,
            budget=budget_size(self.budget, wrong=int(wrong.sum()), scanned=samples.numel(), fraction=self.fraction),
            budget_rule="thesis" if self.budget is None else f"{'share' if isinstance(self.budget, float) else 'count'} {self.budget}",
        )
        self._seconds = 0.0
        if samples.numel() or self.reset:  # the same on every rank
            self.ds.commit(
                chosen if chosen.numel() else None, maps[pos.to(maps.device)].float() if chosen.numel() else None,
                reset=self.reset, report=report, scanned=samples,
            )
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
