"""The comparison metrics accumulated over the batches of a validation loop: ``torchmetrics.Metric`` classes.

The agreement and robustness classes keep running sums on the private running-mean base of
``accumulate.py`` (``float64``, ``"sum"`` over ranks; the occlusion and shuffle classes one sum of
correct flags per setting); ``ErrorConsistency`` keeps the 2 x 2 table of right / wrong pairs as
torchmetrics' ``BinaryCohenKappa`` does, summed over ranks, so its kappa is that of every trial
of every rank, not a mean of per-batch kappas.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import torch
from torch import nn
from torchmetrics.classification import BinaryCohenKappa

from .._distributed import gather_on_backend
from ._inputs import check_correct
from .accumulate import _MeanOfValues
from .agreement import Size, map_spearman, topk_iou
from .robustness import DROP_FRACTIONS, _check_fractions, occlusion_curve, shuffle_accuracy

__all__ = ["MapSpearman", "TopKIoU", "OcclusionCurve", "ShuffleAccuracy", "ErrorConsistency"]


class MapSpearman(_MeanOfValues):
    """Mean [`map_spearman`][proxyaug.metrics.map_spearman] over images: ``update(a, b)``.

    Examples:
        >>> metric = MapSpearman()
        >>> a = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
        >>> metric.update(a, a * 10); metric.update(a, a.flip(-1).flip(-2))
        >>> metric.compute()  # (1 + -1) / 2
        tensor(0.)
    """

    names = ("spearman",)

    def __init__(self, *, size: Size = None, validate_args: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.size, self.validate_args = size, validate_args
        self._settings(str(size))

    def values(self, a: torch.Tensor, b: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return (map_spearman(a, b, size=self.size, validate_args=self.validate_args),)


class TopKIoU(_MeanOfValues):
    """Mean [`topk_iou`][proxyaug.metrics.topk_iou] over images: ``update(a, b)``.

    Examples:
        >>> metric = TopKIoU(fraction=0.5)
        >>> metric.update(torch.tensor([[[4.0, 3.0], [2.0, 1.0]]]), torch.tensor([[[4.0, 1.0], [3.0, 2.0]]]))
        >>> metric.update(torch.tensor([[[4.0, 3.0], [2.0, 1.0]]]), torch.tensor([[[4.0, 3.0], [2.0, 1.0]]]))
        >>> metric.compute()  # (1/3 + 1) / 2
        tensor(0.6667)
    """

    names = ("topk_iou",)

    def __init__(self, *, fraction: float = 0.1, size: Size = None, validate_args: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fraction, self.size, self.validate_args = fraction, size, validate_args
        self._settings(fraction, str(size))

    def values(self, a: torch.Tensor, b: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return (topk_iou(a, b, fraction=self.fraction, size=self.size, validate_args=self.validate_args),)


class OcclusionCurve(_MeanOfValues):
    """Accuracy per fraction of dropped patches ([`occlusion_curve`][proxyaug.metrics.occlusion_curve]):
    ``update(images, labels, order="random")``; ``compute()`` returns the ``(F,)`` accuracies (correct
    images over images seen, per fraction), whose area is [`auc()`][proxyaug.metrics.auc] of it. The
    settings are those of the function; a ``generator`` is drawn from batch after batch.

    Examples:
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
        >>> metric = OcclusionCurve(model, patch=4, fractions=(0.0, 0.5, 1.0), generator=torch.Generator().manual_seed(0))
        >>> images, labels = torch.rand(6, 3, 8, 8), torch.randint(0, 4, (6,))
        >>> metric.update(images[:4], labels[:4]); metric.update(images[4:], labels[4:])
        >>> accuracy = metric.compute()
        >>> accuracy.shape, bool(accuracy[0] == (model(images).argmax(1) == labels).float().mean())
        (torch.Size([3]), True)
    """

    names = ("accuracy",)

    def __init__(
        self, model: nn.Module, *, patch: int = 16, fractions: Sequence[float] = DROP_FRACTIONS, fill: float = 0.0,
        preprocess: Any = None, batch_size: Optional[int] = None, generator: Optional[torch.Generator] = None,
        validate_args: bool = True, **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.__dict__["model"] = model  # not a submodule: .to() and state_dict() leave the user's model alone
        fractions = _check_fractions(fractions)
        self.curve_settings = dict(patch=patch, fractions=fractions, fill=fill, preprocess=preprocess, batch_size=batch_size,
                                   generator=generator, validate_args=validate_args)
        self._per_image_shape((len(fractions),))
        self._settings(model, patch, str(fractions), fill, preprocess, generator)

    def values(self, images: torch.Tensor, labels: torch.Tensor, order: Any = "random") -> Tuple[torch.Tensor, ...]:
        return (occlusion_curve(self.model, images, labels, order=order, **self.curve_settings),)


class ShuffleAccuracy(_MeanOfValues):
    """Accuracy per grid size of shuffled patches ([`shuffle_accuracy`][proxyaug.metrics.shuffle_accuracy]):
    ``update(images, labels)``; ``compute()`` returns the ``(G,)`` accuracies. The settings are those
    of the function; a ``generator`` is drawn from batch after batch.

    Examples:
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> metric = ShuffleAccuracy(model, grids=(1, 2, 4))
        >>> metric.update(torch.rand(5, 3, 8, 8), torch.randint(0, 4, (5,)))
        >>> metric.compute().shape
        torch.Size([3])
    """

    names = ("accuracy",)

    def __init__(
        self, model: nn.Module, *, grids: Sequence[int] = (2, 4, 7), preprocess: Any = None, batch_size: Optional[int] = None,
        generator: Optional[torch.Generator] = None, validate_args: bool = True, **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.__dict__["model"] = model  # not a submodule: .to() and state_dict() leave the user's model alone
        if not isinstance(grids, (tuple, list)) or not grids:
            raise ValueError(f"grids={grids!r} is not valid; expected a non-empty tuple of grid sizes (positive ints).")
        self.shuffle_settings = dict(grids=tuple(grids), preprocess=preprocess, batch_size=batch_size,
                                     generator=generator, validate_args=validate_args)
        self._per_image_shape((len(grids),))
        self._settings(model, str(tuple(grids)), preprocess, generator)

    def values(self, images: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return (shuffle_accuracy(self.model, images, labels, **self.shuffle_settings),)


class ErrorConsistency(BinaryCohenKappa):
    """[`error_consistency`][proxyaug.metrics.error_consistency] over every trial seen: ``update(correct_a, correct_b)``.

    torchmetrics' ``BinaryCohenKappa`` on the right / wrong flags: its state is the 2 x 2 table of
    (a right?, b right?) counts, summed over batches and ranks, and ``compute()`` is the kappa of
    the whole table (NaN when both were right on every trial, or both wrong). ``**kwargs`` are
    torchmetrics' ``Metric`` settings (``sync_on_compute``, ``process_group``, ...).

    Examples:
        >>> metric = ErrorConsistency()
        >>> metric.update(torch.tensor([True, True, False]), torch.tensor([True, False, False]))
        >>> metric.update(torch.tensor([False, True, False]), torch.tensor([True, True, False]))
        >>> metric.compute()  # c_obs = 4/6, c_exp = 1/2
        tensor(0.3333)
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("dist_sync_fn", gather_on_backend)  # gloo gathers on the CPU, NCCL on the GPU, wherever the table is
        super().__init__(validate_args=False, **kwargs)  # the flags are checked in update

    def update(self, correct_a: torch.Tensor, correct_b: torch.Tensor) -> None:  # type: ignore[override]
        """Add a batch of trials: two bool ``(N,)`` tensors of right / wrong flags."""
        a, b = check_correct("correct_a", correct_a), check_correct("correct_b", correct_b)
        if a.shape != b.shape or a.device != b.device:
            raise ValueError(f"correct_a holds {a.numel()} flags on {a.device} and correct_b {b.numel()} on {b.device}; "
                             "expected one flag of each per trial, on one device.")
        super().update(a.long(), b.long())

    def compute(self) -> torch.Tensor:
        """Kappa of every trial seen (and every rank), a 0-d float tensor."""
        if float(self.confmat.sum()) == 0:
            raise RuntimeError(f"{type(self).__name__}.compute() has no trials; call update() with a batch first.")
        return super().compute()
