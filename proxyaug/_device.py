"""Moving small host tensors to an accelerator without a host sync, and knowing when we are traced."""

from __future__ import annotations

import torch


def compiling() -> bool:
    """True while ``torch.compile`` (dynamo) traces the caller: host round-trips would break the graph.

    Examples:
        >>> compiling()
        False
    """
    return torch.compiler.is_compiling()


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``; a host-to-accelerator copy is queued without synchronising the stream.

    ``t.to("cuda")`` from pageable memory blocks until the stream has drained; a pinned copy
    sent with ``non_blocking=True`` does not (the caching host allocator keeps the pinned block
    alive until the copy has run). A copy to the host blocks, as it must before the host reads it.
    Tensors that are already pinned (DataLoader ``pin_memory``)
    are sent as they are, and so is everything while ``torch.compile`` traces: pinning is a host
    call the graph cannot hold, and the compiled copy is the compiler's to schedule.

    Examples:
        >>> to_device(torch.arange(3), torch.device("cpu"))
        tensor([0, 1, 2])
    """
    device = torch.device(device)
    if t.device == device:
        return t
    if device.type == "cpu":
        return t.to(device)  # to the host: blocking, or the host could read it before the copy lands
    if t.device.type == "cpu" and device.type == "cuda" and not compiling() and not t.is_pinned():
        t = t.pin_memory()
    return t.to(device, non_blocking=True)
