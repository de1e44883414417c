"""Training-set size and a fixed step budget as study axes (the learning-curve study, RQ3).

- [`nested_subset`][benchmarks.study.budget.nested_subset]: a class-balanced subset of the pool
  at a given size, drawn from the seed, split into train and validation, **nested**: for one seed,
  every smaller subset (and its train part, and its validation part) lies inside every larger one.
- [`cosine_warmup`][benchmarks.study.budget.cosine_warmup]: the learning rate of a step budget,
  linear warm-up then cosine decay to zero at the last step.
- [`unit_steps`][benchmarks.study.budget.unit_steps] and
  [`eval_after`][benchmarks.study.budget.eval_after]: a step budget cut into the schedule's units
  (``"3,p,4,p,4,p,2"`` is 16 units: its refreshes fall after 4/16, 9/16 and 14/16 of the steps),
  and the units after which a run evaluates (every ``eval_every`` steps, and at the end).
"""

from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch

__all__ = ["nested_subset", "cosine_warmup", "unit_steps", "eval_after", "SUBSET_SEED_OFFSET"]

SUBSET_SEED_OFFSET = 20_000  # seed s draws its subsets from a generator seeded 20_000 + s (arms draw from 10_000 + s)


def _is_val(position: torch.Tensor, val_fraction: float, cap: Optional[int]) -> torch.Tensor:
    """Whether the ``position``-th image of a class's seeded order is a validation image: every
    ``1 / val_fraction``-th position (evenly spread, so a prefix of any length holds its share),
    the first ``cap`` of them at most. Depends on the position alone: nested by construction."""
    before, upto = torch.floor(position * val_fraction), torch.floor((position + 1) * val_fraction)
    val = upto > before
    return val & (upto <= cap) if cap is not None else val


def nested_subset(labels: torch.Tensor, size: int, seed: int, val_fraction: float, val_cap: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(train, val)`` indices into a pool with ``labels``: ``size`` images, class-balanced,
    nested across sizes for one ``seed``.

    Each class has one seeded order of its images (``seed``); the subset of size ``n`` takes the
    first ``n // C`` of each class (the first ``n % C`` classes one more). Of those, every
    ``1 / val_fraction``-th position is validation, never the first (``val_cap``: at most that many
    per class; the rest train), so the train and the validation parts of a smaller subset lie inside the larger's.

    Args:
        labels: ``(N,)`` int labels of the pool.
        size: images in the subset (train + validation), from the number of classes to ``N``.
        seed: the run's seed: the arms of one seed share its subsets.
        val_fraction: share of each class's images held out for validation, in (0, 1).
        val_cap: most validation images per class (None: no cap).

    Examples:
        >>> labels = torch.arange(100) % 2
        >>> tr, va = nested_subset(labels, 20, seed=0, val_fraction=0.2)
        >>> len(tr), len(va), labels[va].bincount().tolist()
        (16, 4, [2, 2])
        >>> tr2, va2 = nested_subset(labels, 50, seed=0, val_fraction=0.2)
        >>> set(tr.tolist()) <= set(tr2.tolist()) and set(va.tolist()) <= set(va2.tolist())
        True
    """
    labels = torch.as_tensor(labels).long()
    classes = int(labels.max()) + 1 if labels.numel() else 0
    n = labels.numel()
    if isinstance(size, bool) or not isinstance(size, int) or not classes <= size <= n:
        raise ValueError(f"size={size!r} is not valid; expected an int from {classes} (the classes) to {n} (the pool).")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction!r} is not valid; expected a number in (0, 1).")
    if val_cap is not None and (isinstance(val_cap, bool) or not isinstance(val_cap, int) or val_cap < 1):
        raise ValueError(f"val_cap={val_cap!r} is not valid; expected None or an int >= 1 (validation images per class).")
    gen = torch.Generator().manual_seed(SUBSET_SEED_OFFSET + seed)
    train: List[torch.Tensor] = []
    val: List[torch.Tensor] = []
    for c in range(classes):
        members = (labels == c).nonzero().flatten()
        order = members[torch.randperm(members.numel(), generator=gen)]  # every class draws, whatever the size: same orders
        take = size // classes + (1 if c < size % classes else 0)
        if take > members.numel():
            raise ValueError(f"size={size} needs {take} images of class {c}; the pool has {members.numel()}.")
        is_val = _is_val(torch.arange(take, dtype=torch.float64), val_fraction, val_cap)
        train.append(order[:take][~is_val])
        val.append(order[:take][is_val])
    return torch.cat(train).sort().values, torch.cat(val).sort().values


def cosine_warmup(total: int, warmup: float):
    """A ``LambdaLR`` factor: linear warm-up over ``warmup`` of the ``total`` steps, then cosine
    decay to 0 at the last step.

    Examples:
        >>> f = cosine_warmup(100, 0.1)
        >>> round(f(0), 2), f(9), round(f(10), 3), round(f(99), 3)
        (0.1, 1.0, 1.0, 0.0)
    """
    if not 0.0 <= warmup < 1.0:
        raise ValueError(f"warmup={warmup!r} is not valid; expected a share of the steps in [0, 1).")
    ramp = max(1, round(warmup * total)) if warmup > 0 else 0

    def factor(step: int) -> float:
        if step < ramp:
            return (step + 1) / ramp
        rest = max(1, total - ramp - 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - ramp) / rest)))

    return factor


def unit_steps(steps: int, units: int) -> int:
    """Steps per unit of a schedule of ``units`` (its epochs) for a budget of ``steps``.

    Examples:
        >>> unit_steps(2560, 16)
        160
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r} is not valid; expected an int >= 1 (the optimisation budget).")
    if steps % units:
        raise ValueError(f"steps={steps} does not divide into the schedule's {units} units; expected a multiple of {units}.")
    return steps // units


def eval_after(steps: int, units: int, eval_every: int) -> List[int]:
    """The units (0-based) after which a run of ``steps`` evaluates: every ``eval_every`` steps and
    after the last unit.

    Examples:
        >>> eval_after(2560, 16, 320), eval_after(640, 16, 320)
        ([1, 3, 5, 7, 9, 11, 13, 15], [7, 15])
    """
    per = unit_steps(steps, units)
    if isinstance(eval_every, bool) or not isinstance(eval_every, int) or eval_every < 1 or eval_every % per:
        raise ValueError(f"eval_every={eval_every!r} is not valid; expected a multiple of the {per} steps of one schedule unit.")
    return [u for u in range(units) if ((u + 1) * per) % eval_every == 0 or u == units - 1]
