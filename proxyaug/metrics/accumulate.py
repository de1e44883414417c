"""Metrics that accumulate over the batches of a validation loop: ``torchmetrics.Metric`` classes.

Each keeps one running sum per value and a count of images as torchmetrics states (``"sum"`` over
ranks), on the metric's device (``.to(device)``, or Lightning moves it with the module that holds
it); ``update`` adds a batch with no host sync beyond its checks, ``compute`` returns the means
over every image and (through torchmetrics' sync, so every rank must call it) every rank, and
``reset`` forgets. They work in a ``MetricCollection``, with ``self.log`` in Lightning, and carry
their sums over a restart through ``state_dict``. The sums are ``float64``; on MPS call
``metric.set_dtype(torch.float32)`` before ``.to("mps")``.
"""

from __future__ import annotations

import hashlib
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn
from torchmetrics import Metric

from .._checks import describe
from .._distributed import gather_on_backend
from .concentration import entropy, sparsity
from .faithfulness import auc, average_drop_increase, deletion_curve, insertion_curve
from .localisation import energy_in_region, pointing_game

__all__ = ["EnergyInRegion", "PointingGame", "Sparsity", "Entropy", "DeletionAUC", "InsertionAUC", "AverageDropIncrease"]


class _MeanOfValues(Metric):
    """Running means of per-image values: the base of every metric class here.

    A subclass names its values in ``names``, turns a batch into a tuple of ``(B,)`` tensors in
    ``values(...)``, and inherits ``update`` / ``compute`` and the states (one sum per name, and
    ``count``). A subclass whose values are curves, ``(B, F)``, calls ``_per_image_shape((F,))``
    in its ``__init__``. ``**kwargs`` are torchmetrics' ``Metric`` settings (``sync_on_compute``,
    ``process_group``, ``dist_sync_fn``, ...).

    Examples:
        >>> class Peak(_MeanOfValues):
        ...     names = ("peak",)
        ...     def values(self, maps):
        ...         return (maps.flatten(1).amax(dim=1),)
        >>> metric = Peak()
        >>> metric.update(torch.tensor([[[0.5]], [[1.0]]])); metric.update(torch.tensor([[[0.0]]]))
        >>> metric.compute()
        tensor(0.5000)
    """

    names: Tuple[str, ...] = ("value",)
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("dist_sync_fn", gather_on_backend)  # gloo gathers on the CPU, NCCL on the GPU, wherever the sums are
        super().__init__(**kwargs)
        for name in (*self.names, "count"):
            self.add_state(name, torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum", persistent=True)

    def values(self, *args: Any, **kwargs: Any) -> Tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def _per_image_shape(self, shape: Tuple[int, ...]) -> None:
        """Each image's values are tensors of ``shape`` (a curve's points), and so are their sums."""
        for name in self.names:
            self.add_state(name, torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum", persistent=True)

    def _settings(self, *settings: Any) -> None:
        """Name the settings that shape the values in a state of their own.

        A ``MetricCollection`` merges metrics whose states are equal after the first ``update``
        (its compute groups) and then computes one for all: two of this class with different
        settings (``PointingGame(tolerance=0)`` and ``tolerance=1``) must never be equal. So a digest
        of the class and its settings (objects such as a model by identity) is a state too, of 8
        bytes, reduced by ``"max"`` (the same on every rank) and left out of ``state_dict``.
        """
        text = "|".join([type(self).__name__, *(repr(s) if isinstance(s, (int, float, str, bool, type(None))) else f"id{id(s)}" for s in settings)])
        digest = torch.tensor(list(hashlib.sha1(text.encode()).digest()[:8]), dtype=torch.float64)
        self.add_state("settings", digest, dist_reduce_fx="max", persistent=False)

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Add a batch: the arguments are those of the metric's functional form."""
        vals = self.values(*args, **kwargs)
        count: torch.Tensor = self.count
        for name, v in zip(self.names, vals):
            getattr(self, name).add_(v.sum(dim=0, dtype=count.dtype))
        count.add_(vals[0].shape[0])  # a Python int into a device tensor: no host-to-device copy

    def compute(self) -> Any:
        """The mean of each value over every image seen (and every rank): a tensor (0-d, or a curve's
        shape), or a dict of them."""
        count = self.count
        if float(count) == 0:
            raise RuntimeError(f"{type(self).__name__}.compute() has no images to average; call update() with a batch first.")
        means = {name: (getattr(self, name) / count).float() for name in self.names}
        return means[self.names[0]] if len(self.names) == 1 else means

    def _load_from_state_dict(
        self, state_dict: Dict[str, Any], prefix: str, local_metadata: Dict[str, Any], strict: bool,
        missing_keys: List[str], unexpected_keys: List[str], error_msgs: List[str],
    ) -> None:
        # torchmetrics takes a saved state as it is: check each, and put it where (and as) the state is now
        for name in (*self.names, "count"):
            key, here = prefix + name, getattr(self, name)
            if key not in state_dict:
                if strict:
                    missing_keys.append(key)
                continue
            saved = state_dict[key]
            if not isinstance(saved, torch.Tensor) or saved.shape != here.shape:
                kept = "a 0-d tensor" if here.ndim == 0 else f"a tensor of shape {tuple(here.shape)}"
                raise ValueError(f"state holds {key}={describe(saved)}; {type(self).__name__} keeps {kept} there.")
            state_dict[key] = saved.to(here.device, here.dtype)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)


class EnergyInRegion(_MeanOfValues):
    """Mean [`energy_in_region`][proxyaug.metrics.energy_in_region]: ``update(maps, regions)``.

    Examples:
        >>> metric = EnergyInRegion()
        >>> metric.update(torch.tensor([[[3.0, 1.0]]]), torch.tensor([[[True, False]]]))
        >>> metric.update(torch.tensor([[[1.0, 1.0]]]), torch.tensor([[[True, False]]]))
        >>> metric.compute()  # (0.75 + 0.5) / 2
        tensor(0.6250)
    """

    names = ("energy",)

    def __init__(self, *, validate_args: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.validate_args = validate_args

    def values(self, maps: torch.Tensor, regions: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return (energy_in_region(maps, regions, validate_args=self.validate_args),)


class PointingGame(_MeanOfValues):
    """Hit rate of the [`pointing_game`][proxyaug.metrics.pointing_game]: ``update(maps, regions)``.

    Examples:
        >>> metric = PointingGame(tolerance=1)
        >>> maps = torch.zeros(2, 3, 3); maps[:, 0, 0] = 1.0
        >>> regions = torch.zeros(2, 3, 3, dtype=torch.bool); regions[0, 0, 1] = True; regions[1, 2, 2] = True
        >>> metric.update(maps, regions); metric.compute()
        tensor(0.5000)
    """

    names = ("hit_rate",)

    def __init__(self, *, tolerance: int = 0, validate_args: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tolerance, self.validate_args = tolerance, validate_args
        self._settings(tolerance)

    def values(self, maps: torch.Tensor, regions: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return (pointing_game(maps, regions, tolerance=self.tolerance, validate_args=self.validate_args),)


class Sparsity(_MeanOfValues):
    """Mean [`sparsity`][proxyaug.metrics.sparsity] (max over mean): ``update(maps)``.

    Examples:
        >>> metric = Sparsity()
        >>> metric.update(torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]]))
        >>> metric.compute()  # (4 + 1) / 2
        tensor(2.5000)
    """

    names = ("sparsity",)

    def __init__(self, *, validate_args: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.validate_args = validate_args

    def values(self, maps: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return (sparsity(maps, validate_args=self.validate_args),)


class Entropy(_MeanOfValues):
    """Mean [`entropy`][proxyaug.metrics.entropy] (nats): ``update(maps)``.

    Examples:
        >>> metric = Entropy()
        >>> metric.update(torch.tensor([[[1.0, 1.0]]]))
        >>> metric.compute()  # log 2
        tensor(0.6931)
    """

    names = ("entropy",)

    def __init__(self, *, validate_args: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.validate_args = validate_args

    def values(self, maps: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return (entropy(maps, validate_args=self.validate_args),)


class DeletionAUC(_MeanOfValues):
    """Mean area under the [`deletion_curve`][proxyaug.metrics.deletion_curve] (lower is better):
    ``update(x, maps, target=None)``; the settings are those of the function.

    Examples:
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
        >>> metric = DeletionAUC(model, steps=4)
        >>> x, maps = torch.rand(2, 2, 4, 4), torch.rand(2, 2, 2)
        >>> metric.update(x, maps)
        >>> metric.compute().allclose(auc(deletion_curve(model, x, maps, steps=4)).mean())
        True
    """

    names = ("deletion_auc",)
    curve = staticmethod(deletion_curve)
    default_baseline = "zeros"

    def __init__(
        self, model: nn.Module, *, steps: int = 20, baseline: Optional[str] = None, preprocess: Any = None,
        validate_args: bool = True, **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.__dict__["model"] = model  # not a submodule: .to() and state_dict() leave the user's model alone
        self.curve_settings = dict(steps=steps, baseline=baseline or self.default_baseline, preprocess=preprocess, validate_args=validate_args)
        self._settings(model, steps, self.curve_settings["baseline"], preprocess)

    def values(self, x: torch.Tensor, maps: torch.Tensor, target: Any = None) -> Tuple[torch.Tensor, ...]:
        return (auc(self.curve(self.model, x, maps, target=target, **self.curve_settings)),)


class InsertionAUC(DeletionAUC):
    """Mean area under the [`insertion_curve`][proxyaug.metrics.insertion_curve] (higher is better):
    ``update(x, maps, target=None)``; the settings are those of the function (default baseline ``"blur"``).

    Examples:
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
        >>> metric = InsertionAUC(model, steps=4, baseline="zeros")
        >>> metric.update(torch.rand(2, 2, 4, 4), torch.rand(2, 2, 2)); metric.compute().shape
        torch.Size([])
    """

    names = ("insertion_auc",)
    curve = staticmethod(insertion_curve)
    default_baseline = "blur"


class AverageDropIncrease(_MeanOfValues):
    """Average drop and increase in confidence ([`average_drop_increase`][proxyaug.metrics.average_drop_increase]):
    ``update(x, maps, target=None)``; ``compute()`` returns ``{"average_drop": ..., "increase": ...}``,
    fractions in [0, 1] (the Grad-CAM++ paper reports percent).

    Examples:
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
        >>> metric = AverageDropIncrease(model)
        >>> metric.update(torch.rand(2, 2, 4, 4), torch.ones(2, 2, 2))
        >>> metric.compute()
        {'average_drop': tensor(0.), 'increase': tensor(0.)}
    """

    names = ("average_drop", "increase")

    def __init__(
        self, model: nn.Module, *, preprocess: Any = None, validate_args: bool = True, **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.__dict__["model"] = model  # not a submodule: .to() and state_dict() leave the user's model alone
        self.preprocess, self.validate_args = preprocess, validate_args
        self._settings(model, preprocess)

    def values(self, x: torch.Tensor, maps: torch.Tensor, target: Any = None) -> Tuple[torch.Tensor, ...]:
        return average_drop_increase(self.model, x, maps, target=target, preprocess=self.preprocess, validate_args=self.validate_args)
