"""PyTorch Lightning: a Callback that runs Proxy Attention inside ``Trainer.fit``.

Install with ``pip install proxyaug[lightning]``.
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

try:
    from lightning.pytorch import Callback
except ImportError:  # pragma: no cover - the standalone package, or neither
    try:
        from pytorch_lightning import Callback
    except ImportError:
        raise ImportError("proxyaug.integrations.lightning needs Lightning: pip install 'proxyaug[lightning]'.") from None

from .._items import IDX_KEY, IMAGE_KEY, LABEL_KEY
from .._refresh import refresh
from .._report import RefreshReport
from ..capture import MapCapture
from ..dataset import ProxyDataset
from ..schedule import PlateauSchedule, ProxySchedule
from ..selection import check_budget
from ..transform import ProxyTransform

__all__ = ["ProxyAttention"]

# refresh() arguments the callback supplies itself
_OWN = {"model", "ds", "progress"}


class ProxyAttention(Callback):
    """Proxy Attention as a Lightning callback.

    It takes the objects you would use in a plain loop: the training
    [`ProxyDataset`][proxyaug.ProxyDataset], the [`ProxyTransform`][proxyaug.ProxyTransform] that
    applies its maps, and where new maps come from: a [`MapCapture`][proxyaug.MapCapture] (maps
    from the training steps, no extra pass) or the keyword arguments of
    [`refresh()`][proxyaug.refresh] (a scan and maps of its own at each refresh point).

    Your LightningModule changes in one line: its ``training_step`` receives the ``(x, y, idx)``
    batches that a [`ProxyDataset`][proxyaug.ProxyDataset] yields, so it unpacks
    ``x, y, _ = batch`` (or ``x, y = batch[:2]``); a dataset of mapping rows (Hugging Face
    ``datasets``) gives dict batches with the keys ``"image"``, ``"label"`` and ``"idx"``. To let refreshes scan only the images the model
    got wrong in training, also return the logits: ``return {"loss": loss, "logits": logits}``.

    - **Every training batch**, after Lightning moved it to the device, its images are replaced in
      place with the stored maps (``batch[0]`` or ``batch["image"]`` images, ``batch[2]`` or
      ``batch["idx"]`` bank rows), by ``transform.replace``.
    - **After every training batch**, when ``training_step`` returned a dict with ``"logits"``,
      the batch's mistakes are recorded (on the device, no host sync: ``capture.observe`` with a
      capture, else [`ProxyDataset.observe()`][proxyaug.ProxyDataset.observe]), and the next
      refresh scans only those instead of the whole dataset. A ``training_step`` that returns
      ``None`` (Lightning's way to skip a batch under automatic optimisation) records and stages
      nothing.
    - **At the end of each training epoch** (after validation), the schedule decides whether to
      refresh: with a ``capture``, its staged maps are committed; otherwise
      [`refresh()`][proxyaug.refresh] runs with the LightningModule as the model and ``refresh``
      as its arguments.
    - **With** ``capture``, each training batch runs inside ``capture.step`` on the
      LightningModule (``training_step`` must return ``{"loss": loss, "logits": logits}``); with
      ``MapSpec(layer=None)`` the target layer is found on the module's own forward, so a
      ``training_step`` that calls a submodule (``self.net(x)``) names the layer instead
      (``MapSpec(layer="net.features.3")``).
    - **Checkpoints** carry the bank, the refresh count, the observations, the schedule's state and
      the capture's staged maps, gathered from every rank (``state_dict`` is a collective under
      ``torch.distributed``, and Lightning calls it on every rank), so a resumed fit, mid-epoch
      too, continues where it stopped.

    Args:
        dataset: the training [`ProxyDataset`][proxyaug.ProxyDataset].
        schedule: a [`ProxySchedule`][proxyaug.ProxySchedule] or the thesis notation.
        transform: the [`ProxyTransform`][proxyaug.ProxyTransform] over ``dataset.bank``; ``None``
            makes one with the thesis' settings.
        capture: a [`MapCapture`][proxyaug.MapCapture] of ``dataset``: maps from the training
            steps, committed at the schedule's refresh points. Not with ``refresh``.
        refresh: keyword arguments of [`refresh()`][proxyaug.refresh] (``spec``, ``fraction``,
            ``select``, ``budget``, ``preprocess``, ``batch_size``, ...), checked against its
            signature now, not at the first refresh; ``None`` uses its defaults. ``preprocess`` is
            what the LightningModule does to images before its layers (normalisation), if
            ``forward`` does not do it itself.
        observe: ``None`` observes whenever ``training_step`` returns ``{"logits": ...}``;
            ``True`` requires it (an error names what to return); ``False`` never observes (not
            with ``capture``, whose ``observe`` records the mistakes of the steps it captures).
        monitor: the logged metric an on-plateau schedule watches (e.g. ``"val_acc"``).

    Each refresh logs ``proxyaug/wrong``, ``proxyaug/chosen`` and ``proxyaug/written``.

    Examples:
        >>> import proxyaug as pa
        >>> from torch.utils.data import TensorDataset
        >>> ds = ProxyDataset(TensorDataset(torch.rand(8, 3, 8, 8), torch.zeros(8, dtype=torch.long)))
        >>> callback = ProxyAttention(ds, "2,p,2", refresh={"fraction": 0.2})
        >>> callback.schedule.refresh_epochs, callback.transform.mode
        ((2,), 'blend')
        >>> ProxyAttention(ds, "2,p,2", transform=pa.ProxyTransform(ds.bank, mode="black"),
        ...                refresh={"select": "loss", "budget": 0.05}).refresh_kwargs
        {'select': 'loss', 'budget': 0.05}
        >>> ProxyAttention(ds, "2,p,2", capture=pa.MapCapture(ds)).capture.ds is ds
        True
    """

    def __init__(
        self,
        dataset: ProxyDataset,
        schedule: Union[ProxySchedule, str, Sequence[Union[int, str]]] = "5,p,9,p,9,p,4",
        *,
        transform: Optional[ProxyTransform] = None,
        capture: Optional[MapCapture] = None,
        refresh: Optional[Mapping[str, Any]] = None,
        observe: Optional[bool] = None,
        monitor: Optional[str] = None,
    ) -> None:
        super().__init__()
        if not isinstance(dataset, ProxyDataset):
            raise TypeError(f"dataset must be a proxyaug.ProxyDataset; got {type(dataset).__name__}.")
        self.dataset = dataset
        self.transform = _check_transform(transform, dataset)
        self.capture = _check_capture(capture, dataset)
        if capture is not None and refresh is not None:
            raise ValueError("pass capture= (maps from the training steps) or refresh= (refresh() arguments), not both.")
        self.refresh_kwargs = _check_refresh_kwargs(refresh)
        if observe not in (None, True, False):
            raise ValueError(f"observe={observe!r} is not valid; expected None, True or False.")
        if capture is not None and observe is False:
            raise ValueError("observe=False does not apply with capture=: capture.observe records the mistakes of the steps it captures.")
        self.schedule = schedule if isinstance(schedule, ProxySchedule) else ProxySchedule.parse(schedule)
        if isinstance(self.schedule, PlateauSchedule) and not monitor:
            raise ValueError("an on_plateau schedule needs monitor= the name of a logged metric, e.g. 'val_acc'.")
        self.monitor, self.observe = monitor, observe
        self.reports: List[RefreshReport] = []
        self._step: Any = None  # the capture step of the running batch

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self.transform.to(pl_module.device)  # the bank follows the module

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        x, _, idx = _fields(batch)
        x.copy_(self.transform.replace(x, idx))
        if self.capture is not None:
            self._step = self.capture.step(pl_module)
            self._step.__enter__()

    def _end_step(self, logits: Optional[torch.Tensor], skipped: bool, batch: Any) -> None:
        step, self._step = self._step, None
        try:
            if skipped:
                self.capture.discard()  # training_step returned None: no backward, nothing to stage
            elif logits is None:
                raise ValueError("capture needs training_step to return the logits, e.g. return {'loss': loss, 'logits': logits}.")
            else:
                _, y, idx = _fields(batch)
                self.capture.observe(idx, logits, y)
        except BaseException as err:
            step.__exit__(type(err), err, err.__traceback__)  # hooks off with the failed step
            raise
        step.__exit__(None, None, None)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if self._step is not None:  # the capture's hooks come off with the failed step
            step, self._step = self._step, None
            step.__exit__(type(exception), exception, exception.__traceback__)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        # training_step returned None: Lightning skips the batch under automatic optimisation (and passes {} on);
        # under manual optimisation it is an ordinary step that ran its own backward
        skipped = getattr(pl_module, "automatic_optimization", True) and (outputs is None or (isinstance(outputs, Mapping) and not outputs))
        logits = outputs.get("logits") if isinstance(outputs, Mapping) else None
        if self._step is not None:
            self._end_step(logits, skipped, batch)  # capture.observe records the mistakes too
            return
        if self.observe is False or skipped:
            return
        if logits is None:
            if self.observe:
                got = f"a dict with keys {sorted(outputs)}" if isinstance(outputs, Mapping) else type(outputs).__name__
                raise ValueError(
                    f"observe=True needs training_step to return the logits, e.g. return {{'loss': loss, 'logits': logits}}; "
                    f"it returned {got}."
                )
            return
        _, y, idx = _fields(batch)
        self.dataset.observe(idx, logits, y)

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
                report = refresh(pl_module, self.dataset, progress=False, **self.refresh_kwargs)
            self.reports.append(report)
            pl_module.log_dict({"proxyaug/wrong": float(report.wrong), "proxyaug/chosen": float(report.chosen),
                                "proxyaug/written": float(report.written)})

    def state_dict(self) -> dict:
        """The dataset's, the schedule's and the capture's state: a collective under ``torch.distributed``."""
        state = {"dataset": self.dataset.state_dict(), "schedule": self.schedule.state_dict()}
        if self.capture is not None:
            state["capture"] = self.capture.state_dict()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        self.dataset.load_state_dict(state_dict["dataset"])
        self.schedule.load_state_dict(state_dict["schedule"])
        if self.capture is not None and "capture" in state_dict:
            self.capture.load_state_dict(state_dict["capture"])


def _check_transform(transform: Optional[ProxyTransform], dataset: ProxyDataset) -> ProxyTransform:
    if transform is None:
        return ProxyTransform(dataset.bank)
    if not isinstance(transform, ProxyTransform):
        raise TypeError(f"transform must be a proxyaug.ProxyTransform; got {type(transform).__name__}.")
    if transform.bank is not dataset.bank:
        raise ValueError("transform reads another bank than the dataset's; build it as ProxyTransform(dataset.bank, ...).")
    return transform


def _check_capture(capture: Optional[MapCapture], dataset: ProxyDataset) -> Optional[MapCapture]:
    if capture is None:
        return None
    if not isinstance(capture, MapCapture):
        raise TypeError(f"capture must be a proxyaug.MapCapture; got {type(capture).__name__}.")
    if capture.ds is not dataset:
        raise ValueError("capture writes into another dataset than the callback's; build it as MapCapture(dataset, ...).")
    return capture


def _check_refresh_kwargs(kwargs: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    if kwargs is None:
        return {}
    if not isinstance(kwargs, Mapping):
        raise TypeError(f"refresh must be a dict of refresh() arguments, e.g. {{'fraction': 0.2}}; got {type(kwargs).__name__}.")
    accepted = set(inspect.signature(refresh).parameters) - _OWN
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise TypeError(f"refresh= holds {unknown}, which refresh() does not take; expected some of: {', '.join(sorted(accepted))}.")
    kwargs = dict(kwargs)
    if "budget" in kwargs:  # now, not at the first refresh
        kwargs["budget"] = check_budget(kwargs["budget"])
    return kwargs


def _fields(batch: Any) -> Tuple[Any, Any, Any]:
    """The images, labels and bank rows of a ProxyDataset batch: ``(x, y, idx)`` or a dict with their keys."""
    if isinstance(batch, Mapping) and all(k in batch for k in (IMAGE_KEY, LABEL_KEY, IDX_KEY)):
        return batch[IMAGE_KEY], batch[LABEL_KEY], batch[IDX_KEY]
    if isinstance(batch, (tuple, list)) and len(batch) >= 3:
        return batch[0], batch[1], batch[2]
    if isinstance(batch, Mapping):
        got = f"a dict with the keys {sorted(map(str, batch))}"
    else:
        got = f"a {type(batch).__name__} of {len(batch)} items" if isinstance(batch, (tuple, list)) else type(batch).__name__
    raise TypeError(f"ProxyAttention expects batches (x, y, idx), or dicts with the keys 'image', 'label' and 'idx', "
                    f"from a proxyaug.ProxyDataset loader; got {got}.")
