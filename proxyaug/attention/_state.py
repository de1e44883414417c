"""Leave the user's model as it was found."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every module in eval mode and restore each module's own ``training`` flag afterwards.

    ``model.train(flag)`` would set one flag for the whole tree; users freeze parts of a model by
    putting only those in eval mode (frozen BatchNorm), so each flag is saved and restored.

    Examples:
        >>> net = nn.Sequential(nn.BatchNorm2d(2), nn.Dropout())
        >>> _ = net[0].eval()  # a frozen BatchNorm in a model that trains
        >>> with eval_mode(net):
        ...     net[1].training
        False
        >>> net.training, net[0].training, net[1].training
        (True, False, True)
    """
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


def unwrap(model: nn.Module) -> nn.Module:
    """The module that does the work inside DistributedDataParallel, DataParallel and torch.compile.

    Hooks go on the inner module's layers and the forward runs on it directly: a compiled graph
    does not call Python hooks reliably, and a DDP forward may broadcast buffers (a collective)
    that a refresh on one rank's share must not trigger.

    Examples:
        >>> net = nn.Linear(2, 2)
        >>> unwrap(nn.DataParallel(net)) is net
        True
    """
    seen = set()
    while id(model) not in seen:
        seen.add(id(model))
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
    return model


@contextlib.contextmanager
def preserved(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode, and every parameter's ``.grad`` and ``requires_grad`` restored afterwards.

    For code that is not ours (pytorch-grad-cam calls ``model.zero_grad()`` and ``backward()``).

    Examples:
        >>> import torch
        >>> net = nn.Linear(2, 1)
        >>> with preserved(net):
        ...     net(torch.ones(1, 2)).sum().backward()
        >>> net.weight.grad is None, net.training
        (True, True)
    """
    params = list(model.parameters())
    grads = [p.grad for p in params]
    flags = [p.requires_grad for p in params]
    try:
        with eval_mode(model):
            yield model
    finally:
        for p, g, f in zip(params, grads, flags):
            p.grad = g
            p.requires_grad_(f)


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's first parameter (or buffer); the CPU for a model with neither.

    Examples:
        >>> model_device(nn.Linear(2, 2))
        device(type='cpu')
    """
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")
