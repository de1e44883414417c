"""MistakeTracker: which samples the model got wrong in training since the last refresh."""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch

from ._checks import check_labels, describe
from ._device import to_device

__all__ = ["MistakeTracker"]


class MistakeTracker:
    """Which samples a model predicted wrongly in training, accumulated like a metric.

    [`ProxyDataset.observe()`][proxyaug.ProxyDataset.observe] feeds it every training batch
    (``update``, on the logits' device, no host sync); [`refresh()`][proxyaug.refresh] asks
    for the samples to scan (``compute``, the union over ranks under ``torch.distributed``) and
    uses them up (``reset``). Its state survives a restart through ``state_dict``.

    Args:
        num_samples: the samples it tracks (the wrapped dataset's length).

    Examples:
        >>> tracker = MistakeTracker(5)
        >>> tracker.update(torch.tensor([1, 3, 3]), torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]]), torch.tensor([1, 1, 1]))
        >>> tracker.compute()  # sample 3: one of its two items was wrong
        tensor([1, 3])
        >>> tracker.reset(torch.tensor([1])); tracker.compute()
        tensor([3])
    """

    def __init__(self, num_samples: int) -> None:
        self.num_samples = int(num_samples)
        # one flag per sample plus a spare last slot that absorbs right predictions; None: none recorded
        self.flags: Optional[torch.Tensor] = None

    def update(self, samples: torch.Tensor, logits: torch.Tensor, labels: Any) -> None:
        """Record the mistakes of a batch: ``samples`` ``(B,)`` sample indices (validated), ``logits`` ``(B, C)``."""
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
            raise ValueError(f"logits must be a tensor of shape (B, num_classes); got {describe(logits)}.")
        device = logits.device
        labels = to_device(check_labels("labels", labels, logits.shape[0]), device)
        samples = to_device(samples, device)
        if self.flags is None or self.flags.device != device:
            previous = self.flags
            self.flags = torch.zeros(self.num_samples + 1, dtype=torch.bool, device=device)
            if previous is not None:
                self.flags |= previous.to(device)
        wrong = logits.detach().argmax(dim=1) != labels
        # every write is True, so two items of one sample in a batch cannot overwrite each other's flag
        self.flags.index_fill_(0, torch.where(wrong, samples, self.num_samples), True)

    def compute(self, shard: Any = None) -> torch.Tensor:
        """The samples recorded as wrong, sorted (CPU ``int64``); with a ``shard``, over every rank."""
        flags = self.flags[: self.num_samples] if self.flags is not None else None
        if shard is not None:  # a collective: every rank calls it, with or without records
            local = flags if flags is not None else torch.zeros(self.num_samples, dtype=torch.bool)
            return shard.max(local.to(torch.uint8)).nonzero().flatten().cpu()
        if flags is None:
            return torch.empty(0, dtype=torch.long)
        return flags.nonzero().flatten().cpu()

    def reset(self, samples: Optional[torch.Tensor] = None) -> None:
        """Forget every record, or only those of ``samples``."""
        if samples is None or self.flags is None:
            self.flags = None
        else:
            self.flags[samples.to(self.flags.device)] = False

    def state_dict(self) -> Dict[str, Optional[torch.Tensor]]:
        """``{"observed": (num_samples,) bool CPU tensor, or None}``."""
        return {"observed": None if self.flags is None else self.flags[: self.num_samples].cpu()}

    def load_state_dict(self, state: Dict[str, Any], device: Any = None) -> None:
        """Restore what [`state_dict()`][proxyaug.mistakes.MistakeTracker.state_dict] returned, on ``device``."""
        observed = state.get("observed")
        if observed is None:
            self.flags = None
            return
        if tuple(observed.shape) != (self.num_samples,):
            raise ValueError(f"state records observations of {tuple(observed.shape)} samples; this dataset has {self.num_samples}.")
        observed = observed.to(device, torch.bool)
        self.flags = torch.cat([observed, torch.zeros(1, dtype=torch.bool, device=observed.device)])
