"""Metrics that accumulate over the batches of a validation loop, as torchmetrics' classes do.

Each keeps one running sum per value and a count of images on the device of its first batch
(``update`` never syncs with the host beyond its checks); ``compute`` returns the means, summed
over the ranks of an initialised ``torch.distributed`` process group of more than one rank (every
rank must call it), and ``reset`` forgets. ``state_dict`` / ``load_state_dict`` carry the sums
over a restart.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from .._distributed import shard_context
from .concentration import entropy, sparsity
from .faithfulness import auc, average_drop_increase, deletion_curve, insertion_curve
from .localisation import energy_in_region, pointing_game

__all__ = ["MeanMetric", "EnergyInRegion", "PointingGame", "Sparsity", "Entropy", "DeletionAUC", "InsertionAUC", "AverageDropIncrease"]


class MeanMetric:
    """Running means of per-image values: the base of every metric class here.

    A subclass names its values in ``names``, turns a batch into a tuple of ``(B,)`` tensors in
    ``values(...)``, and inherits ``update`` / ``compute`` / ``reset`` and the state.

    Args:
        distributed: ``None`` sums over ranks when a process group of more than one rank is
            initialised, ``False`` never, ``True`` requires one.

    Examples:
        >>> class Peak(MeanMetric):
        ...     names = ("peak",)
        ...     def values(self, maps):
        ...         return (maps.flatten(1).amax(dim=1),)
        >>> metric = Peak()
        >>> metric.update(torch.tensor([[[0.5]], [[1.0]]])); metric.update(torch.tensor([[[0.0]]]))
        >>> metric.compute()
        tensor(0.5000)
    """

    names: Tuple[str, ...] = ("value",)

    def __init__(self, *, distributed: Optional[bool] = None) -> None:
        self.distributed = distributed
        self.sums: Optional[torch.Tensor] = None  # (len(names) + 1,): one sum per value, then the count
        self.reset()

    def values(self, *args: Any, **kwargs: Any) -> Tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Add a batch: the arguments are those of the metric's functional form."""
        vals = self.values(*args, **kwargs)
        dtype = torch.float32 if vals[0].device.type == "mps" else torch.float64
        batch = torch.stack([v.to(dtype).sum() for v in vals] + [torch.tensor(float(vals[0].shape[0]), dtype=dtype, device=vals[0].device)])
        self.sums = batch if self.sums is None else self.sums + batch.to(self.sums.device, self.sums.dtype)

    def compute(self) -> Any:
        """The mean of each value over every image seen (and every rank): a 0-d tensor, or a dict of them."""
        sums = self.sums if self.sums is not None else torch.zeros(len(self.names) + 1, dtype=torch.float64)
        shard = shard_context(self.distributed)
        if shard is not None:
            sums = shard.sum(sums)
        if float(sums[-1]) == 0:
            raise RuntimeError(f"{type(self).__name__}.compute() has no images to average; call update() with a batch first.")
        means = (sums[:-1] / sums[-1]).float()
        return means[0] if len(self.names) == 1 else {name: means[i] for i, name in enumerate(self.names)}

    def reset(self) -> None:
        """Forget every batch."""
        self.sums = None

    def state_dict(self) -> Dict[str, Optional[torch.Tensor]]:
        """``{"sums": (len(names) + 1,) CPU tensor (the sums, then the count), or None}``."""
        return {"sums": None if self.sums is None else self.sums.cpu()}

    def load_state_dict(self, state: Dict[str, Any], device: Any = None) -> None:
        """Restore what [`state_dict()`][proxyaug.metrics.MeanMetric.state_dict] returned, on ``device``."""
        sums = state.get("sums")
        if sums is not None and tuple(sums.shape) != (len(self.names) + 1,):
            raise ValueError(f"state holds sums of shape {tuple(sums.shape)}; {type(self).__name__} keeps ({len(self.names) + 1},).")
        self.sums = None if sums is None else sums.to(device)


class EnergyInRegion(MeanMetric):
    """Mean [`energy_in_region`][proxyaug.metrics.energy_in_region]: ``update(maps, regions)``.

    Examples:
        >>> metric = EnergyInRegion()
        >>> metric.update(torch.tensor([[[3.0, 1.0]]]), torch.tensor([[[True, False]]]))
        >>> metric.update(torch.tensor([[[1.0, 1.0]]]), torch.tensor([[[True, False]]]))
        >>> metric.compute()  # (0.75 + 0.5) / 2
        tensor(0.6250)
    """

    names = ("energy",)

    def __init__(self, *, validate_args: bool = True, distributed: Optional[bool] = None) -> None:
        super().__init__(distributed=distributed)
        self.validate_args = validate_args

    def values(self, maps: torch.Tensor, regions: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return (energy_in_region(maps, regions, validate_args=self.validate_args),)


class PointingGame(MeanMetric):
    """Hit rate of the [`pointing_game`][proxyaug.metrics.pointing_game]: ``update(maps, regions)``.

    Examples:
        >>> metric = PointingGame(tolerance=1)
        >>> maps = torch.zeros(2, 3, 3); maps[:, 0, 0] = 1.0
        >>> regions = torch.zeros(2, 3, 3, dtype=torch.bool); regions[0, 0, 1] = True; regions[1, 2, 2] = True
        >>> metric.update(maps, regions); metric.compute()
        tensor(0.5000)
    """

    names = ("hit_rate",)

    def __init__(self, *, tolerance: int = 0, validate_args: bool = True, distributed: Optional[bool] = None) -> None:
        super().__init__(distributed=distributed)
        self.tolerance, self.validate_args = tolerance, validate_args

    def values(self, maps: torch.Tensor, regions: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return (pointing_game(maps, regions, tolerance=self.tolerance, validate_args=self.validate_args),)


class Sparsity(MeanMetric):
    """Mean [`sparsity`][proxyaug.metrics.sparsity] (max over mean): ``update(maps)``.

    Examples:
        >>> metric = Sparsity()
        >>> metric.update(torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]]))
        >>> metric.compute()  # (4 + 1) / 2
        tensor(2.5000)
    """

    names = ("sparsity",)

    def __init__(self, *, validate_args: bool = True, distributed: Optional[bool] = None) -> None:
        super().__init__(distributed=distributed)
        self.validate_args = validate_args

    def values(self, maps: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return (sparsity(maps, validate_args=self.validate_args),)


class Entropy(MeanMetric):
    """Mean [`entropy`][proxyaug.metrics.entropy] (nats): ``update(maps)``.

    Examples:
        >>> metric = Entropy()
        >>> metric.update(torch.tensor([[[1.0, 1.0]]]))
        >>> metric.compute()  # log 2
        tensor(0.6931)
    """

    names = ("entropy",)

    def __init__(self, *, validate_args: bool = True, distributed: Optional[bool] = None) -> None:
        super().__init__(distributed=distributed)
        self.validate_args = validate_args

    def values(self, maps: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return (entropy(maps, validate_args=self.validate_args),)


class DeletionAUC(MeanMetric):
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
        validate_args: bool = True, distributed: Optional[bool] = None,
    ) -> None:
        super().__init__(distributed=distributed)
        self.model = model
        self.settings = dict(steps=steps, baseline=baseline or self.default_baseline, preprocess=preprocess, validate_args=validate_args)

    def values(self, x: torch.Tensor, maps: torch.Tensor, target: Any = None) -> Tuple[torch.Tensor, ...]:
        return (auc(self.curve(self.model, x, maps, target=target, **self.settings)),)


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


class AverageDropIncrease(MeanMetric):
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
        self, model: nn.Module, *, preprocess: Any = None, validate_args: bool = True, distributed: Optional[bool] = None,
    ) -> None:
        super().__init__(distributed=distributed)
        self.model, self.preprocess, self.validate_args = model, preprocess, validate_args

    def values(self, x: torch.Tensor, maps: torch.Tensor, target: Any = None) -> Tuple[torch.Tensor, ...]:
        return average_drop_increase(self.model, x, maps, target=target, preprocess=self.preprocess, validate_args=self.validate_args)
