"""ProxySchedule: when to refresh the maps (the thesis notation, every n epochs, or on a plateau)."""

from __future__ import annotations

import math
import numbers
import re
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from ._checks import check_choice, check_positive_int

__all__ = ["ProxySchedule", "FixedSchedule", "EverySchedule", "PlateauSchedule"]


def _check_epoch(epoch: Any) -> int:
    if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
        raise ValueError(f"epoch={epoch!r} is not valid; expected a non-negative integer (epochs count from 0).")
    return int(epoch)


def _check_metric(metric: Any) -> float:
    """A finite real number from a Python number, a 0-d tensor or a numpy scalar / 0-d array."""
    value: Optional[float] = None
    if isinstance(metric, numbers.Real) and not isinstance(metric, bool):
        value = float(metric)
    elif hasattr(metric, "ndim") and hasattr(metric, "dtype") and metric.ndim == 0:
        dtype = metric.dtype  # torch.Tensor or numpy array / scalar
        if getattr(dtype, "is_floating_point", False) or str(dtype).split(".")[-1].startswith(("float", "int", "uint")):
            value = float(metric)
    if value is None or not math.isfinite(value):
        raise ValueError(
            f"metric={metric!r} is not valid; an on_plateau schedule needs a finite number each epoch "
            "(a float, a 0-d tensor or a numpy scalar)."
        )
    return value


class ProxySchedule:
    """When to refresh: call [`should_refresh()`][proxyaug.ProxySchedule.should_refresh] at the end of each epoch (epochs count from 0).

    Make one with [`parse()`][proxyaug.ProxySchedule.parse] (the thesis notation), [`every()`][proxyaug.ProxySchedule.every] or [`on_plateau()`][proxyaug.ProxySchedule.on_plateau].

    Examples:
        >>> sched = ProxySchedule.parse("5,p,9,p,9,p,4")
        >>> sched.epochs, sched.refresh_epochs
        (30, (5, 15, 25))
        >>> [e for e in range(30) if sched.should_refresh(e)]
        [5, 15, 25]
    """

    epochs: Optional[int] = None
    """Total epochs the schedule describes, or ``None`` if open-ended."""

    def should_refresh(self, epoch: int, metric: Optional[float] = None) -> bool:
        """True if the maps should be refreshed after ``epoch`` (0-based).

        Args:
            epoch: the epoch that just finished.
            metric: a validation metric; required by [`on_plateau()`][proxyaug.ProxySchedule.on_plateau] schedules only.
        """
        raise NotImplementedError

    def state_dict(self) -> Dict[str, Any]:
        """State to save in a checkpoint (empty for stateless schedules)."""
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore what [`state_dict()`][proxyaug.ProxySchedule.state_dict] returned."""

    @staticmethod
    def parse(spec: Union[str, Sequence[Union[int, str]]]) -> "FixedSchedule":
        """Read the thesis notation: plain epoch counts and ``p`` epochs after which maps refresh.

        ``"5,p,9,p,9,p,4"`` (or ``[5, "p", 9, "p", 9, "p", 4]``) is 5 plain epochs, one epoch
        followed by a refresh, 9 plain, ..., 30 epochs in all, refreshing after epochs 5, 15
        and 25. Brackets, quotes and spaces in a string are ignored.

        Raises:
            ValueError: an element that is neither a positive integer nor ``p``, or an empty spec.

        Examples:
            >>> ProxySchedule.parse([2, "p", "p", 1]).refresh_epochs
            (2, 3)
        """
        if isinstance(spec, str):
            tokens: List[Any] = [t for t in re.split(r"[,\s]+", re.sub(r"[\[\]()'\"]", " ", spec)) if t]
        elif isinstance(spec, Iterable):
            tokens = list(spec)
        else:
            raise TypeError(f"spec must be a string like '5,p,9,p,4' or a list like [5, 'p', 4]; got {type(spec).__name__}.")
        if not tokens:
            raise ValueError(f"spec={spec!r} is empty; expected epochs and 'p' marks such as '5,p,9,p,4'.")
        epoch, marks = 0, []
        for pos, tok in enumerate(tokens):
            if isinstance(tok, str) and tok.strip().lower() == "p":
                marks.append(epoch)
                epoch += 1
                continue
            try:
                n = int(tok) if not isinstance(tok, (bool, float)) else None
            except ValueError:
                n = None
            if n is None or n < 1:
                raise ValueError(
                    f"spec element {pos} is {tok!r}; expected a positive number of epochs or 'p' (in {spec!r})."
                )
            epoch += n
        return FixedSchedule(marks, epochs=epoch)

    @staticmethod
    def every(n: int, epochs: Optional[int] = None) -> "EverySchedule":
        """Refresh after every ``n``-th epoch (epochs ``n-1``, ``2n-1``, ...), not after the last.

        Examples:
            >>> s = ProxySchedule.every(3, epochs=10)
            >>> [e for e in range(10) if s.should_refresh(e)]
            [2, 5, 8]
        """
        return EverySchedule(n, epochs=epochs)

    @staticmethod
    def on_plateau(*args: Any, **kwargs: Any) -> "PlateauSchedule":
        """Refresh when a validation metric stops improving (the thesis' future work).

        Takes the arguments of [`PlateauSchedule`][proxyaug.PlateauSchedule] (``patience=2, mode="max", min_delta=0.0,
        cooldown=0, warmup=0, max_refreshes=None``). Pass the metric each epoch:
        ``should_refresh(epoch, metric=val_acc)``.

        Examples:
            >>> s = ProxySchedule.on_plateau(patience=2)
            >>> [s.should_refresh(e, metric=a) for e, a in enumerate([0.5, 0.6, 0.6, 0.59, 0.7])]
            [False, False, False, True, False]
        """
        return PlateauSchedule(*args, **kwargs)


class FixedSchedule(ProxySchedule):
    """Refresh after a fixed set of epochs (what [`ProxySchedule.parse()`][proxyaug.ProxySchedule.parse] returns).

    Examples:
        >>> s = FixedSchedule([1, 4], epochs=6)
        >>> [e for e in range(6) if s.should_refresh(e)]
        [1, 4]
    """

    def __init__(self, refresh_epochs: Iterable[int], epochs: Optional[int] = None) -> None:
        self.refresh_epochs: Tuple[int, ...] = tuple(sorted(_check_epoch(e) for e in refresh_epochs))
        self.epochs = None if epochs is None else check_positive_int("epochs", epochs)

    def should_refresh(self, epoch: int, metric: Optional[float] = None) -> bool:
        return _check_epoch(epoch) in self.refresh_epochs

    def __repr__(self) -> str:
        return f"FixedSchedule(refresh_epochs={list(self.refresh_epochs)}, epochs={self.epochs})"


class EverySchedule(ProxySchedule):
    """Refresh after every ``n``-th epoch (what [`ProxySchedule.every()`][proxyaug.ProxySchedule.every] returns).

    Examples:
        >>> [e for e in range(7) if EverySchedule(3).should_refresh(e)]
        [2, 5]
    """

    def __init__(self, n: int, epochs: Optional[int] = None) -> None:
        self.n = check_positive_int("n", n)
        self.epochs = None if epochs is None else check_positive_int("epochs", epochs)

    def should_refresh(self, epoch: int, metric: Optional[float] = None) -> bool:
        epoch = _check_epoch(epoch)
        if self.epochs is not None and epoch >= self.epochs - 1:
            return False
        return (epoch + 1) % self.n == 0

    def __repr__(self) -> str:
        return f"EverySchedule(n={self.n}, epochs={self.epochs})"


class PlateauSchedule(ProxySchedule):
    """Refresh when a reported metric stops improving (what [`ProxySchedule.on_plateau()`][proxyaug.ProxySchedule.on_plateau] returns).

    A refresh fires when ``patience`` epochs in a row failed to beat the best value so far by
    more than ``min_delta``; the count then restarts. The ``cooldown`` epochs after a refresh do
    not count as bad epochs (as in ``torch.optim.lr_scheduler.ReduceLROnPlateau``,
    so a refresh fires when that scheduler with ``patience - 1``, ``threshold=min_delta`` and
    ``threshold_mode="abs"`` would lower the LR). No refresh fires before epoch ``warmup`` or
    after ``max_refreshes``.

    Args:
        patience: epochs without improvement before a refresh.
        mode: ``"max"`` for a metric to maximise (accuracy), ``"min"`` for one to minimise (loss).
        min_delta: smallest change that counts as an improvement.
        cooldown: epochs after a refresh during which none fires.
        warmup: first epoch at which a refresh may fire.
        max_refreshes: stop refreshing after this many.

    Examples:
        >>> s = PlateauSchedule(patience=1, mode="min")
        >>> [s.should_refresh(e, metric=loss) for e, loss in enumerate([1.0, 0.8, 0.9, 0.7])]
        [False, False, True, False]
        >>> s.state_dict()["best"]
        0.7
    """

    def __init__(
        self,
        patience: int = 2,
        mode: str = "max",
        min_delta: float = 0.0,
        cooldown: int = 0,
        warmup: int = 0,
        max_refreshes: Optional[int] = None,
    ) -> None:
        self.patience = check_positive_int("patience", patience)
        self.mode = check_choice("mode", mode, ("max", "min"))
        if not isinstance(min_delta, numbers.Real) or min_delta < 0:
            raise ValueError(f"min_delta={min_delta!r} is not valid; expected a number >= 0.")
        for name, value in (("cooldown", cooldown), ("warmup", warmup)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise ValueError(f"{name}={value!r} is not valid; expected an integer >= 0.")
        self.min_delta, self.cooldown, self.warmup = float(min_delta), int(cooldown), int(warmup)
        self.max_refreshes = None if max_refreshes is None else check_positive_int("max_refreshes", max_refreshes)
        self.best: Optional[float] = None
        self.bad_epochs = 0
        self.cooldown_left = 0
        self.refreshes = 0

    def should_refresh(self, epoch: int, metric: Optional[float] = None) -> bool:
        """Update with this epoch's ``metric`` and say whether to refresh. Call once per epoch."""
        epoch = _check_epoch(epoch)
        metric = _check_metric(metric)
        better = self.best is None or (
            metric > self.best + self.min_delta if self.mode == "max" else metric < self.best - self.min_delta
        )
        if better:
            self.best, self.bad_epochs = metric, 0
        else:
            self.bad_epochs += 1
        if self.cooldown_left > 0:  # bad epochs during the cooldown do not count (ReduceLROnPlateau)
            self.cooldown_left -= 1
            self.bad_epochs = 0
            return False
        limit_hit = self.max_refreshes is not None and self.refreshes >= self.max_refreshes
        if epoch < self.warmup or limit_hit or self.bad_epochs < self.patience:
            return False
        self.bad_epochs, self.cooldown_left = 0, self.cooldown
        self.refreshes += 1
        return True

    def state_dict(self) -> Dict[str, Any]:
        return {"best": self.best, "bad_epochs": self.bad_epochs, "cooldown_left": self.cooldown_left, "refreshes": self.refreshes}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        missing = {"best", "bad_epochs", "cooldown_left", "refreshes"} - set(state)
        if missing:
            raise KeyError(f"state lacks {sorted(missing)}; expected PlateauSchedule.state_dict() output.")
        self.best, self.bad_epochs = state["best"], int(state["bad_epochs"])
        self.cooldown_left, self.refreshes = int(state["cooldown_left"]), int(state["refreshes"])

    def __repr__(self) -> str:
        return (
            f"PlateauSchedule(patience={self.patience}, mode={self.mode!r}, min_delta={self.min_delta}, "
            f"cooldown={self.cooldown}, warmup={self.warmup}, max_refreshes={self.max_refreshes})"
        )
