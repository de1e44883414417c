"""PyTorch Lightning: a Callback that runs Proxy Attention inside ``Trainer.fit``.

Install with ``pip install proxyaug[lightning]``.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, List, Mapping, Optional, Sequence, Union

import torch

try:
    from lightning.pytorch import Callback
except ImportError:  # pragma: no cover - the standalone package, or neither
    try:
        from pytorch_lightning import Callback
    except ImportError:
        raise ImportError("proxyaug.integrations.lightning needs Lightning: pip install 'proxyaug[lightning]'.") from None

from .. import functional as F
from ..capture import MapCapture
from ..dataset import ProxyDataset
from ..refresh import RefreshReport, refresh
from ..schedule import PlateauSchedule, ProxySchedule
from ..selection import check_budget
from ..transform import ProxyTransform

__all__ = ["ProxyAttention"]


class ProxyAttention(Callback):
    """Proxy Attention as a Lightning callback.

    Your LightningModule changes in one line: its ``training_step`` receives the ``(x, y, idx)``
    batches that a [`ProxyDataset`][proxyaug.ProxyDataset] yields, so it unpacks
    ``x, y, _ = batch`` (or ``x, y = batch[:2]``). To let refreshes scan only the images the model
    got wrong in training, also return the logits: ``return {"loss": loss, "logits": logits}``.

    - **Every training batch**, after Lightning moved it to the device, its images are replaced in
      place with the stored maps (``batch[0]`` images, ``batch[2]`` bank rows).
    - **After every training batch**, when ``training_step`` returned a dict with ``"logits"``,
      [`observe()`][proxyaug.ProxyDataset.observe] records the batch's mistakes (on the device,
      no host sync), and the next refresh scans only those instead of the whole dataset.
    - **At the end of each training epoch** (after validation), the schedule decides whether to
      [`refresh()`][proxyaug.refresh.refresh] the maps with the LightningModule as the model.
    - **With** ``capture``, maps come from the training steps themselves
      ([`MapCapture`][proxyaug.MapCapture]): each training batch runs inside ``capture.step``
      (``training_step`` must return ``{"loss": loss, "logits": logits}``), and at the schedule's
      refresh points the staged maps are committed instead of running a refresh.
    - **Checkpoints** carry the bank, the refresh count, the observations and the schedule's state
      (``state_dict`` / ``load_state_dict``), so a resumed fit continues where it stopped.

    Args:
        dataset: the training [`ProxyDataset`][proxyaug.ProxyDataset].
        schedule: a [`ProxySchedule`][proxyaug.ProxySchedule] or the thesis notation.
        mode: replacement mode, as in [`ProxyTransform`][proxyaug.ProxyTransform].
        threshold: as in [`ProxyTransform`][proxyaug.ProxyTransform].
        weight: as in [`ProxyTransform`][proxyaug.ProxyTransform].
        p: as in [`ProxyTransform`][proxyaug.ProxyTransform].
        blur_sigma: as in [`ProxyTransform`][proxyaug.ProxyTransform].
        observe: ``None`` observes whenever ``training_step`` returns ``{"logits": ...}``;
            ``True`` requires it (an error names what to return); ``False`` never observes.
        preprocess: what the LightningModule does to images before its layers (normalisation),
            for the refresh; ``None`` if ``forward`` does it itself.
        monitor: the logged metric an on-plateau schedule watches (e.g. ``"val_acc"``).
        capture: ``True`` or a dict of [`MapCapture`][proxyaug.MapCapture] arguments (``layer``,
            ``method``, ``fraction``, ``select``, ...): maps from the training steps, committed at
            the schedule's refresh points (then ``refresh_kwargs`` are not used).
        **refresh_kwargs: passed to [`refresh()`][proxyaug.refresh.refresh] (``method``,
            ``fraction``, ``select``, ``budget``, ``batch_size``, ...); checked against its
            signature now, not at the first refresh. ``budget`` (a share of the scanned images
            or a count, see [`proxyaug.selection`][proxyaug.selection]) keeps a ranking policy
            such as ``select="loss"`` mapping images once the model gets every one right; each
            refresh logs ``proxyaug/wrong``, ``proxyaug/chosen`` and ``proxyaug/written``.

    Examples:
        >>> from torch.utils.data import TensorDataset
        >>> ds = ProxyDataset(TensorDataset(torch.rand(8, 3, 8, 8), torch.zeros(8, dtype=torch.long)))
        >>> callback = ProxyAttention(ds, "2,p,2", fraction=0.2)
        >>> callback.schedule.refresh_epochs, callback.proxy.mode
        ((2,), 'blend')
        >>> ProxyAttention(ds, "2,p,2", select="loss", budget=0.05).refresh_kwargs
        {'select': 'loss', 'budget': 0.05}
    """

    def __init__(
        self,
        dataset: ProxyDataset,
        schedule: Union[ProxySchedule, str, Sequence[Union[int, str]]] = "5,p,9,p,9,p,4",
        *,
        mode: str = F.DEFAULT_MODE,
        threshold: float = F.DEFAULT_THRESHOLD,
        weight: float = F.DEFAULT_WEIGHT,
        p: float = F.DEFAULT_P,
        blur_sigma: Optional[float] = None,
        observe: Optional[bool] = None,
        preprocess: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        monitor: Optional[str] = None,
        capture: Union[bool, Mapping[str, Any]] = False,
        **refresh_kwargs: Any,
    ) -> None:
        super().__init__()
        if not isinstance(dataset, ProxyDataset):
            raise TypeError(f"dataset must be a proxyaug.ProxyDataset; got {type(dataset).__name__}.")
        accepted = set(inspect.signature(refresh).parameters) - {"model", "ds", "preprocess", "progress"}
        unknown = sorted(set(refresh_kwargs) - accepted)
        if unknown:
            raise TypeError(
                f"ProxyAttention got {unknown}, which refresh() does not take; expected ProxyTransform settings "
                f"(mode, threshold, weight, p, blur_sigma) or refresh() arguments: {', '.join(sorted(accepted))}."
            )
        if "budget" in refresh_kwargs:  # now, not at the first refresh
            refresh_kwargs["budget"] = check_budget(refresh_kwargs["budget"])
        if observe not in (None, True, False):
            raise ValueError(f"observe={observe!r} is not valid; expected None, True or False.")
        self.dataset = dataset
        self.schedule = schedule if isinstance(schedule, ProxySchedule) else ProxySchedule.parse(schedule)
        if isinstance(self.schedule, PlateauSchedule) and not monitor:
            raise ValueError("an on_plateau schedule needs monitor= the name of a logged metric, e.g. 'val_acc'.")
        self.proxy = ProxyTransform(dataset.bank, mode=mode, threshold=threshold, weight=weight, p=p, blur_sigma=blur_sigma)
        self.preprocess, self.monitor, self.refresh_kwargs = preprocess, monitor, refresh_kwargs
        self.observe = observe
        self.reports: List[RefreshReport] = []
        self.capture = MapCapture(dataset, **({} if capture is True else dict(capture))) if capture else None
        self._step: Any = None  # the capture step of the running batch

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self.proxy.to(pl_module.device)  # the bank follows the module

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if not isinstance(batch, (tuple, list)) or len(batch) < 3:
            raise TypeError("ProxyAttention expects batches (x, y, idx) from a proxyaug.ProxyDataset loader.")
        x, idx = batch[0], batch[2]
        x.copy_(self.proxy(x, idx))
        if self.capture is not None:
            self._step = self.capture.step(pl_module)
            self._step.__enter__()

    def _end_step(self, outputs: Any, batch: Any) -> None:
        step, self._step = self._step, None
        logits = outputs.get("logits") if isinstance(outputs, Mapping) else None
        if logits is None:
            step.__exit__(None, None, None)  # hooks off first
            got = f"a dict with keys {sorted(outputs)}" if isinstance(outputs, Mapping) else type(outputs).__name__
            raise ValueError(f"capture needs training_step to return the logits, e.g. return {{'loss': loss, 'logits': logits}}; it returned {got}.")
        try:
            self.capture.observe(batch[2], logits, batch[1])
        except BaseException as err:
            step.__exit__(type(err), err, err.__traceback__)
            raise
        step.__exit__(None, None, None)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if self._step is not None:  # the capture's hooks come off with the failed step
            step, self._step = self._step, None
            step.__exit__(type(exception), exception, exception.__traceback__)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._step is not None:
            self._end_step(outputs, batch)
        if self.observe is False:
            return
        logits = outputs.get("logits") if isinstance(outputs, Mapping) else None
        if logits is None:
            if self.observe:
                got = f"a dict with keys {sorted(outputs)}" if isinstance(outputs, Mapping) else type(outputs).__name__
                raise ValueError(
                    f"observe=True needs training_step to return the logits, e.g. return {{'loss': loss, 'logits': logits}}; "
                    f"it returned {got}."
                )
            return
        self.dataset.observe(batch[2], logits, batch[1])

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        metric = None
        if isinstance(self.schedule, PlateauSchedule):
            if self.monitor not in trainer.callback_metrics:
                raise KeyError(f"monitor={self.monitor!r} was not logged; logged metrics: {sorted(trainer.callback_metrics)}.")
            metric = float(trainer.callback_metrics[self.monitor])
        if self.schedule.should_refresh(trainer.current_epoch, metric):
            if self.capture is not None:
                report = self.capture.commit()
            else:
                report = self.dataset.refresh(pl_module, preprocess=self.preprocess, progress=False, **self.refresh_kwargs)
            self.reports.append(report)
            pl_module.log_dict({"proxyaug/wrong": float(report.wrong), "proxyaug/chosen": float(report.chosen),
                                "proxyaug/written": float(report.written)})

    def state_dict(self) -> dict:
        return {"dataset": self.dataset.state_dict(), "schedule": self.schedule.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.dataset.load_state_dict(state_dict["dataset"])
        self.schedule.load_state_dict(state_dict["schedule"])
