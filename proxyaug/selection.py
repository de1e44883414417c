"""Which scanned images get a map: the wrong ones (the thesis), or a policy to compare it with.

Every policy chooses up to the same number of images, the *budget*, so that policies are matched
control arms of one another. The budget is the thesis' rule by default, ``budget=None``:
``round(fraction * number wrong)`` (at least one when any is wrong, none when none is). That rule
starves once the model fits its training set: nothing is wrong, so nothing is mapped, whatever
the policy. A budget that does not depend on the mistakes keeps mapping:

- ``budget=None``: the thesis rule above;
- ``budget=0.05`` (a float in (0, 1]): that share of the *scanned* images, rounded, at least one;
- ``budget=256`` (an int >= 1): that many images.

(a float is a share and an int a count, as scikit-learn's ``test_size``). The policies then choose
*up to* that many:

- ``"wrong"``: that many of the wrongly predicted images, at random from ``seed`` (the thesis);
  it never maps an image the model gets right, so when the budget exceeds the wrong images it
  maps all of them and no more (the report's ``chosen`` is then below its ``budget``);
- ``"loss"``: the images with the highest cross-entropy loss;
- ``"margin"``: the smallest margin between the two most probable classes (most uncertain);
- ``"entropy"``: the highest entropy of the predicted distribution (most uncertain);
- ``"random"``: that many images drawn at random from all scanned ones (the control).

The ranking and ``"random"`` policies choose among every scanned image, right or wrong, so with a
share or a count they keep choosing after the model stops making mistakes.

The choice depends only on the scanned (index, wrong, score) triples, never on the order in
which they come: candidates are put in dataset-index order first, ties of a ranking policy go to
the lower dataset index, and the random policies draw from the sorted indices, so every policy is
reproducible from its seed.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Callable, Dict, Optional, Union

import torch

__all__ = ["SELECT", "POLICIES", "Policy", "Budget", "check_budget", "budget_size", "scores", "choose"]

Scorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Budget = Union[None, float, int]
"""A selection budget: ``None`` (the thesis rule), a share of the scanned images (float) or a count (int)."""


@dataclasses.dataclass(frozen=True)
class Policy:
    """A selection policy: it ranks by ``score`` (higher first), or draws at random from ``pool``.

    Attributes:
        score: ``(logits (N, C) float32, labels (N,)) -> (N,)`` scores, for a ranking policy.
        pool: ``(indices (N,), wrong (N,) bool) -> indices`` to draw from, for a random policy.

    Examples:
        >>> POLICIES["loss"].score is not None, POLICIES["wrong"].pool(torch.arange(3), torch.tensor([True, False, True]))
        (True, tensor([0, 2]))
    """

    score: Optional[Scorer] = None
    pool: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None


def _loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(logits, labels.to(logits.device), reduction="none")


def _margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if logits.shape[1] < 2:
        return torch.zeros(logits.shape[0], device=logits.device)
    top2 = logits.log_softmax(dim=1).exp().topk(2, dim=1).values  # as computed since 0.1: same ties
    return top2[:, 1] - top2[:, 0]  # minus the margin: the smallest margin scores highest


def _entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logp = logits.log_softmax(dim=1)
    return -(logp.exp() * logp).sum(dim=1)


POLICIES: Dict[str, Policy] = {
    "wrong": Policy(pool=lambda indices, wrong: indices[wrong]),
    "loss": Policy(score=_loss),
    "margin": Policy(score=_margin),
    "entropy": Policy(score=_entropy),
    "random": Policy(pool=lambda indices, wrong: indices),
}
"""The policies by name: a new one is one function and one line here."""

SELECT = tuple(POLICIES)
"""The selection policies ``refresh(select=...)`` accepts."""


def _share(share: float, n: int) -> int:
    """``share`` of ``n`` rounded half up, at least one when ``n`` is not zero."""
    return max(1, math.floor(share * n + 0.5)) if n else 0


def check_budget(value: Budget) -> Budget:
    """``value`` as a valid [`Budget`][proxyaug.selection.Budget], or an error that says what a budget is.

    Examples:
        >>> check_budget(None), check_budget(0.05), check_budget(256)
        (None, 0.05, 256)
        >>> check_budget(100.0)
        Traceback (most recent call last):
        ...
        ValueError: budget=100.0 is not valid; a float is a share of the scanned images, in (0, 1]; for a count of images pass an int (budget=100).
    """
    expected = "None (the thesis rule: fraction of the wrong images), a float in (0, 1] (a share of the scanned images) or an int >= 1 (a count)"
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"budget must be {expected}; got {value!r} ({type(value).__name__}).")
    if isinstance(value, numbers.Integral):
        if value < 1:
            raise ValueError(f"budget={value!r} is not valid; expected {expected}.")
        return int(value)
    value = float(value)
    if value > 1.0 and math.isfinite(value):
        count = int(value) if value == int(value) else "N"
        raise ValueError(
            f"budget={value!r} is not valid; a float is a share of the scanned images, in (0, 1]; "
            f"for a count of images pass an int (budget={count})."
        )
    if not 0.0 < value <= 1.0:
        raise ValueError(f"budget={value!r} is not valid; expected {expected}.")
    return value


def budget_size(budget: Budget, *, wrong: int, scanned: int, fraction: float) -> int:
    """How many images a budget allows, from the counts of a scan (policies choose up to that many).

    Args:
        budget: ``None`` (the thesis rule), a share of ``scanned`` (float) or a count (int).
        wrong: images of the scan predicted wrongly.
        scanned: images scanned.
        fraction: the thesis rule's share of the wrong images (used only when ``budget`` is ``None``).

    Examples:
        >>> budget_size(None, wrong=0, scanned=1000, fraction=0.2)  # the thesis rule starves
        0
        >>> budget_size(0.05, wrong=0, scanned=1000, fraction=0.2), budget_size(64, wrong=0, scanned=1000, fraction=0.2)
        (50, 64)
    """
    budget = check_budget(budget)
    if budget is None:
        return _share(fraction, wrong)
    if isinstance(budget, int):
        return budget
    return _share(budget, scanned)


def scores(select: str, logits: torch.Tensor, labels: torch.Tensor) -> Optional[torch.Tensor]:
    """Per-image scores of a ranking policy (higher is chosen first), float32 on the logits' device; ``None`` for a random one.

    Examples:
        >>> logits = torch.tensor([[2.0, 0.0], [0.1, 0.0]])
        >>> scores("margin", logits, torch.tensor([0, 0])).argmax().item()  # the near tie
        1
    """
    score = POLICIES[select].score
    return None if score is None else score(logits.detach().float(), labels)


def _random(indices: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(int(seed))
    indices = indices.sort().values  # draw from the set, not from the order it came in
    return indices[torch.randperm(indices.numel(), generator=gen)[:k]].sort().values


def choose(
    select: str, indices: torch.Tensor, wrong: torch.Tensor, score: Optional[torch.Tensor], fraction: float, seed: int,
    *, budget: Budget = None,
) -> torch.Tensor:
    """The dataset indices a policy chooses among the scanned ``indices``.

    Args:
        select: a policy of [`SELECT`][proxyaug.selection.SELECT].
        indices: scanned dataset indices ``(N,)``.
        wrong: bool ``(N,)``, which of them were predicted wrongly.
        score: ``(N,)`` scores of a ranking policy, else ``None``.
        fraction: share of the wrong images that sets the thesis rule's budget.
        seed: seed of the random policies.
        budget: ``None`` (the thesis rule), a share of the scanned images (float) or a count
            (int), see [`budget_size()`][proxyaug.selection.budget_size]; a policy chooses up to
            that many (``"wrong"`` never more than the wrong images).

    Returns:
        Sorted int64 indices (CPU).

    Examples:
        >>> idx = torch.arange(5)
        >>> wrong = torch.tensor([True, False, True, True, False])
        >>> choose("loss", idx, wrong, torch.tensor([0.1, 3.0, 0.2, 0.5, 0.0]), fraction=0.5, seed=0)
        tensor([1, 3])
        >>> choose("wrong", idx, wrong, None, fraction=0.5, seed=0).numel()
        2
        >>> choose("loss", idx, torch.zeros(5, dtype=torch.bool), torch.tensor([0.1, 3.0, 0.2, 0.5, 0.0]), 0.2, 0, budget=0.4)
        tensor([1, 3])
    """
    n = indices.numel()
    for name, value in (("wrong", wrong), ("score", score)):
        if value is not None and value.numel() != n:
            raise ValueError(f"{name} has {value.numel()} entries but indices has {n}; expected one per scanned index.")
    policy = POLICIES[select]
    if policy.score is not None and score is None:
        raise ValueError(f"select={select!r} ranks by score; got score=None (compute it with scores()).")
    order = indices.argsort(stable=True)  # dataset-index order: the result ignores the input order
    indices, wrong = indices[order], wrong.to(torch.bool)[order.to(wrong.device)].cpu()
    k = budget_size(budget, wrong=int(wrong.sum()), scanned=n, fraction=fraction)
    if policy.pool is not None:
        return _random(policy.pool(indices, wrong), k, seed)
    score = score[order.to(score.device)].cpu()
    top = torch.sort(score, descending=True, stable=True).indices[:k]  # stable: ties to the lower index
    return indices[top].sort().values
