"""MistakeTracker: which samples the model got wrong in training since the last refresh."""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, List

import torch
from torchmetrics import Metric

from ._checks import check_labels, describe
from ._device import to_device
from ._distributed import gather_on_backend

__all__ = ["MistakeTracker"]


class MistakeTracker(Metric):
    """Which samples a model predicted wrongly in training: a ``torchmetrics.Metric`` of per-sample flags.

    [`ProxyDataset.observe()`][proxyaug.ProxyDataset.observe] feeds it every training batch
    (``update``, on the device, no host sync); [`refresh()`][proxyaug.refresh] asks for the
    samples to scan (``compute``: the union over the ranks of an initialised ``torch.distributed``
    process group, through torchmetrics' own sync, so every rank must call it; ``local`` for this
    rank's records alone, without a collective) and uses them up (``forget`` the scanned ones, or
    ``reset`` all). The state is one ``uint8`` flag per sample (gloo cannot gather ``bool``),
    reduced with ``"max"`` over ranks; it survives a restart through ``state_dict``.

    The flags follow ``.to()``; an ``update`` on another device moves them there once (a dataset's
    bank may stay on the CPU, for the CPU path, while training runs on the GPU).

    A dataset type of your own that implements [`Refreshable`][proxyaug.protocol.Refreshable]
    holds one as its ``mistakes``.

    Args:
        num_samples: the samples it tracks (the wrapped dataset's length).
        **kwargs: torchmetrics' ``Metric`` settings (``process_group``, ``dist_sync_fn``, ...).

    Examples:
        >>> tracker = MistakeTracker(5)
        >>> tracker.update(torch.tensor([1, 3, 3]), torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]]), torch.tensor([1, 1, 1]))
        >>> tracker.compute()  # sample 3: one of its two items was wrong
        tensor([1, 3])
        >>> tracker.forget(torch.tensor([1])); tracker.compute()
        tensor([3])
        >>> tracker.reset(); tracker.compute()
        tensor([], dtype=torch.int64)
    """

    full_state_update = False
    flags: torch.Tensor

    def __init__(self, num_samples: int, **kwargs: Any) -> None:
        kwargs.setdefault("dist_sync_fn", gather_on_backend)
        # the records change between two refreshes and each rank may hold other ones: never serve a cached union
        kwargs.setdefault("compute_with_cache", False)
        super().__init__(**kwargs)
        self.num_samples = int(num_samples)
        self.add_state("flags", torch.zeros(self.num_samples, dtype=torch.uint8), dist_reduce_fx="max", persistent=True)

    @property
    def update_called(self) -> bool:
        # "nothing observed" is an answer here (a refresh then scans every sample), not a misuse to warn about
        return True

    def update(self, samples: torch.Tensor, logits: torch.Tensor, labels: Any) -> None:
        """Record the mistakes of a batch: ``samples`` ``(B,)`` sample indices (validated), ``logits`` ``(B, C)``."""
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
            raise ValueError(f"logits must be a tensor of shape (B, num_classes); got {describe(logits)}.")
        device = logits.device
        labels = to_device(check_labels("labels", labels, logits.shape[0]), device)
        if self.flags.device != device:
            self._move(device)
        wrong = (logits.detach().argmax(dim=1) != labels).byte()  # uint8, as the flags
        # max, not a write: two items of one sample in a batch (append mode) cannot overwrite each other's flag
        self.flags.scatter_reduce_(0, to_device(samples, device), wrong, reduce="amax")

    def compute(self) -> torch.Tensor:
        """The samples recorded as wrong on any rank, sorted (CPU ``int64``): a collective under ``torch.distributed``."""
        return self.flags.nonzero().flatten().cpu()

    def _wrap_compute(self, compute: Callable[..., Any]) -> Callable[..., Any]:
        wrapped = super()._wrap_compute(compute)

        @functools.wraps(compute)
        def flat(*args: Any, **kwargs: Any) -> torch.Tensor:
            return wrapped(*args, **kwargs).reshape(-1)  # torchmetrics squeezes a one-element result: one sample is still a list

        return flat

    def local(self) -> torch.Tensor:
        """The samples this rank recorded as wrong, sorted (CPU ``int64``), without a collective."""
        return self.flags.nonzero().flatten().cpu()

    def forget(self, samples: torch.Tensor) -> None:
        """Forget the records of ``samples`` (sample indices), keep the others: what a refresh did not scan."""
        self.flags.index_fill_(0, to_device(torch.as_tensor(samples, dtype=torch.long), self.flags.device), 0)

    def _move(self, device: torch.device) -> None:
        """The states onto ``device``: a host-to-accelerator copy queued without a sync, any other as usual."""
        self._apply(lambda t: to_device(t, device) if device.type != "cpu" else t.to(device))

    def _load_from_state_dict(
        self, state_dict: Dict[str, Any], prefix: str, local_metadata: Dict[str, Any], strict: bool,
        missing_keys: List[str], unexpected_keys: List[str], error_msgs: List[str],
    ) -> None:
        flags = state_dict.get(prefix + "flags")
        if flags is not None:  # validated, and onto the device the flags are on (torchmetrics would take it as it is)
            if not isinstance(flags, torch.Tensor) or tuple(flags.shape) != (self.num_samples,):
                raise ValueError(f"state records observations of {describe(flags)}; this tracker has {self.num_samples} samples.")
            state_dict[prefix + "flags"] = flags.to(self.flags.device, torch.uint8)
        elif strict:
            missing_keys.append(prefix + "flags")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
