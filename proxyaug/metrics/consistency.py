"""Do two models make their mistakes on the same images? Error consistency (Cohen's kappa of their right / wrong flags).

Geirhos et al. (2020), "Beyond accuracy: quantifying trial-by-trial behaviour of CNNs and
humans by measuring error consistency": two observers of equal accuracy can agree on many trials
by chance alone; kappa measures the agreement beyond what their accuracies predict.
"""

from __future__ import annotations

import torch
from torchmetrics.functional.classification import binary_cohen_kappa

from ._inputs import check_correct

__all__ = ["error_consistency"]


def error_consistency(correct_a: torch.Tensor, correct_b: torch.Tensor) -> torch.Tensor:
    r"""Cohen's kappa of two observers' right / wrong flags on the same trials (Geirhos et al. 2020).

    ``κ = (c_obs - c_exp) / (1 - c_exp)``, with ``c_exp = p_a p_b + (1 - p_a)(1 - p_b)``

    where ``c_obs`` is the share of trials on which both are right or both wrong, and ``p_a``,
    ``p_b`` are their accuracies: ``c_exp`` is the agreement two independent observers of those
    accuracies would reach. ``κ = 1``: the same mistakes; ``κ ≈ 0``: mistakes as independent as
    chance allows; ``κ < 0``: one tends to be right where the other is wrong. This is Cohen's
    kappa of the two flag vectors, computed by torchmetrics' ``binary_cohen_kappa``
    (``tests/test_metrics_compare.py`` checks it against the formula above).

    When both observers are right on every trial, or both wrong on every one, ``c_exp = 1`` and
    kappa is 0 / 0: the result is NaN, as torchmetrics and scikit-learn's ``cohen_kappa_score``
    return (the trials cannot tell the observers' mistakes apart; use harder trials).

    Args:
        correct_a: bool tensor ``(N,)``: observer a right on trial ``i`` (e.g. ``preds_a == labels``).
        correct_b: bool tensor ``(N,)``, on ``correct_a``'s device.

    Returns:
        Float32 0-d tensor in [-1, 1], or NaN (see above).

    Examples:
        >>> a = torch.tensor([True, True, False, False, True, False])
        >>> error_consistency(a, a), error_consistency(a, ~a)
        (tensor(1.), tensor(-1.))
        >>> b = torch.tensor([True, False, False, True, True, False])  # c_obs = 4/6, c_exp = 1/2
        >>> error_consistency(a, b)
        tensor(0.3333)
    """
    a, b = check_correct("correct_a", correct_a), check_correct("correct_b", correct_b)
    if a.shape != b.shape or a.numel() == 0:
        raise ValueError(f"correct_a holds {a.numel()} flags and correct_b {b.numel()}; expected the same trials, at least one.")
    if a.device != b.device:
        raise ValueError(f"correct_a is on {a.device} but correct_b is on {b.device}; move them with correct_b.to(correct_a.device).")
    # the flags are already 0 / 1: no threshold, and torchmetrics' value checks (a host sync) are not needed
    return binary_cohen_kappa(a.long(), b.long(), validate_args=False)
