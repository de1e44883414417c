"""Leave the user's model as it was found."""

from __future__ import annotations

import contextlib
from typing import Iterator

from torch import nn


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every module in eval mode and restore each module's own ``training`` flag afterwards.

    ``model.train(flag)`` would set one flag for the whole tree; users freeze parts of a model by
    putting only those in eval mode (frozen BatchNorm), so each flag is saved and restored.
    """
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield model
    finally:
        for m, flag in flags:
            m.training = flag
