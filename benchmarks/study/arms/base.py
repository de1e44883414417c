"""The protocol every arm kind follows, and the registry that finds a kind by name.

An arm kind is one class: it says which settings it takes (``defaults``), how the report and the
plots show it (``describe``, ``verdict_line``, ``proxy_like``, ``control``, ``refreshes``,
``resplits``, ``grid_titles``; an arm's colour comes from its name, ``plots.arm_colors``), and what
it does in a run: the dataset it trains on (``make_dataset``, ``attach``, ``items``), each batch
(``apply``, ``observe``), each refresh point of the schedule (``round``) and what survives a
restart (``state_dict``). The training loop and the report ask the class; they never switch on the
kind's name. A new kind is one new module in this folder, its class decorated with
[`register`][benchmarks.study.arms.base.register], and one import line in ``arms/__init__.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, ClassVar, ContextManager, Dict, Optional, Tuple, Type

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

import proxyaug as pa

from ..text import pp

ARMS: Dict[str, Type["Arm"]] = {}  # kind -> class, in registration order


def register(cls: Type["Arm"]) -> Type["Arm"]:
    """Class decorator: make ``cls`` the arm kind ``cls.kind``."""
    if not cls.kind or cls.kind in ARMS:
        raise ValueError(f"arm kind {cls.kind!r} of {cls.__name__} is empty or registered twice.")
    ARMS[cls.kind] = cls
    return cls


def arm_kind(kind: str) -> Type["Arm"]:
    """The class of the arm kind ``kind``.

    Examples:
        >>> arm_kind("thesis-protocol").resplits
        True
    """
    if kind not in ARMS:
        raise ValueError(f"arm kind {kind!r} is not valid; expected one of {', '.join(ARMS)}.")
    return ARMS[kind]


@dataclasses.dataclass
class Context:
    """What an arm knows of its run: the data, the device, the fixed split and the seed."""

    pool: Any  # the training pool: train and validation are drawn from it
    pool_labels: torch.Tensor
    fixed: Tuple[torch.Tensor, torch.Tensor]  # the study's (train, validation) indices of the pool
    val_fraction: float
    device: torch.device
    preprocess: Callable[[torch.Tensor], torch.Tensor]
    seed: int

    @property
    def n_train(self) -> int:
        return len(self.fixed[0])


@dataclasses.dataclass
class Round:
    """What an arm did at a refresh point: its record (kept in the run's ``rounds``), a note for
    the log, and a new (train, validation) split when it re-draws one."""

    record: Optional[Dict[str, Any]] = None
    note: str = ""
    split: Optional[Tuple[torch.Tensor, torch.Tensor]] = None


class Arm:
    """One arm kind's behaviour in a run. This base class is the baseline's: it changes nothing."""

    kind: ClassVar[str] = ""
    defaults: ClassVar[Dict[str, Any]] = {}  # the settings it takes, besides name, kind, schedule, compare
    refreshes: ClassVar[bool] = False  # runs refresh(): it has maps at the end and a masked area
    proxy_like: ClassVar[bool] = False  # a Proxy Attention arm: compared with every control
    control: ClassVar[bool] = False  # a control that Proxy Attention arms are compared with
    resplits: ClassVar[bool] = False  # re-draws the train / validation split at its refresh points
    grid_titles: ClassVar[Optional[Tuple[str, str, str]]] = None  # columns of its grids per refresh, if any

    def __init__(self, spec: Dict[str, Any], context: Context) -> None:
        self.spec, self.context = spec, context
        self.gen = torch.Generator().manual_seed(10_000 + context.seed)
        self.ds: Optional[pa.ProxyDataset] = None
        self.image_size: Tuple[int, int] = (0, 0)

    # -- the report ----------------------------------------------------------------------------
    @classmethod
    def describe(cls, settings: Dict[str, Any]) -> str:
        """What an arm of this kind does, in a few words, from its settings."""
        return cls.kind

    @classmethod
    def verdict_line(cls, name: str, entry: Dict[str, Any], versus_baseline: Dict[str, Any], baseline: Dict[str, Any]) -> str:
        """The arm's line in the report's verdict, from its summary ``entry`` and its comparison
        with the baseline."""
        return f"- {name} ({cls.describe(entry['settings'])}): {versus_baseline['verdict']}, {pp(versus_baseline)}"

    # -- a run ---------------------------------------------------------------------------------
    def make_dataset(self, indices: torch.Tensor) -> pa.ProxyDataset:
        """The dataset this arm trains on, for these indices of the pool."""
        return pa.ProxyDataset(Subset(self.context.pool, indices.tolist()), device=self.context.device, proxies="replace")

    def attach(self, ds: pa.ProxyDataset) -> None:
        """Train on ``ds`` from now on (at the start, after a re-split, on resuming)."""
        self.ds = ds
        h, w = ds.dataset[0][0].shape[-2:]
        self.image_size = (int(h), int(w))

    def items(self) -> Dataset:
        """What the training loader draws ``(x, y, idx)`` from: the attached dataset, or a wrapper of it."""
        return self.ds

    def apply(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, model: nn.Module) -> Any:
        """The training batch ``x`` (on the device, before normalisation) as the model sees it; a mixing arm
        returns ``(x, soft_labels)``, the loss's targets ``(B, classes)`` in place of ``y``."""
        return x

    def observe(self, idx: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        """Called with each training batch's logits."""

    def step(self, model: nn.Module) -> ContextManager[Any]:
        """A context around each training step (``apply`` .. ``backward``; the optimizer steps after it)."""
        return contextlib.nullcontext()

    def round(self, model: nn.Module, *, epoch: int, number: int) -> Round:
        """At the refresh point after ``epoch`` (the ``number``-th, from 1)."""
        return Round()

    def pictures(self, rows: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Originals, maps and what this arm made of them (for kinds with ``grid_titles``)."""
        raise NotImplementedError(f"arm kind {self.kind!r} draws no grids")

    def originals(self, rows: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The images ``(B, C, H, W)`` and labels ``(B,)`` behind the bank's ``rows`` (an appended
        proxy's row is its sample's), on the CPU."""
        items = [self.ds.dataset[int(i)] for i in rows % len(self.ds.dataset)]
        return torch.stack([x for x, _ in items]), torch.as_tensor([int(y) for _, y in items])

    def state_dict(self) -> Dict[str, Any]:
        return {"gen": self.gen.get_state()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.gen.set_state(state["gen"])
