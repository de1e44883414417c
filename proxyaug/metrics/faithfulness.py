"""Does the model need what the map points at? Deletion and insertion curves, their area, and
average drop / increase in confidence. Each runs the model in batches under ``torch.no_grad()``
and eval mode, and leaves it as found (every module's ``training`` flag restored).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Tuple

import torch
from torch import nn

from .._checks import check_choice, check_images, check_positive_int
from ..attention import eval_mode
from ..functional import default_blur_sigma, gaussian_blur
from ._inputs import (
    Preprocess,
    check_maps,
    check_pair,
    check_preprocess,
    check_range,
    descending_ranks,
    probabilities,
    resize,
    resolve_target,
)

__all__ = ["BASELINES", "deletion_curve", "insertion_curve", "auc", "average_drop_increase"]


def _zeros(x: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(x)


def _blur(x: torch.Tensor) -> torch.Tensor:
    # exact at every size: a metric's baseline is compared with other libraries', the training-time blur need not be
    return gaussian_blur(x, default_blur_sigma(x.shape[-2:]), exact=True)


def _mean(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=(2, 3), keepdim=True).expand_as(x)


#: What replaces a removed pixel (deletion) or stands in for a pixel not yet added (insertion), by
#: name: ``"zeros"`` black; ``"blur"`` the image blurred by ``functional.gaussian_blur`` (exact, at
#: every size) with sigma ``max(1, min(H, W) / 32)`` (RISE's insertion baseline); ``"mean"`` each image's
#: per-channel mean. Baselines are made in image space, before ``preprocess``.
BASELINES: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"zeros": _zeros, "blur": _blur, "mean": _mean}


def _ranks(maps: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Each pixel's place in the map's order, ``(B, 1, H, W)``: 0 for the highest value, ties by pixel index."""
    return descending_ranks(resize(maps, size).flatten(1)).view(maps.shape[0], 1, *size)


def _curve(model: nn.Module, x: Any, maps: Any, settings: Dict[str, Any], *, insert: bool) -> torch.Tensor:
    x = check_images("x", x)
    steps = check_positive_int("steps", settings["steps"])
    fill = BASELINES[check_choice("baseline", settings["baseline"], tuple(BASELINES))]
    preprocess = check_preprocess(settings["preprocess"])
    validate = settings["validate_args"]
    maps = check_maps("maps", maps, validate_args=validate)
    check_pair(x, maps)
    size = (x.shape[-2], x.shape[-1])
    n = size[0] * size[1]
    ranks = _ranks(maps, size)
    with eval_mode(model), torch.no_grad():
        probs = probabilities(model, x, preprocess)
        target = resolve_target(settings["target"], probs, validate_args=validate).view(-1, 1)
        base = fill(x)
        points = []
        for k in range(steps + 1):
            count = (k * n) // steps  # the `count` highest-ranked pixels are removed (or added)
            if count == (n if insert else 0):
                p = probs  # the unchanged image: no forward needed
            else:
                top = ranks < count
                p = probabilities(model, torch.where(top, x, base) if insert else torch.where(top, base, x), preprocess)
            points.append(p.gather(1, target).squeeze(1))
    return torch.stack(points, dim=1)


def deletion_curve(
    model: nn.Module, x: torch.Tensor, maps: torch.Tensor, *, steps: int = 20, baseline: str = "zeros",
    target: Any = None, preprocess: Preprocess = None, validate_args: bool = True,
) -> torch.Tensor:
    r"""Target-class probability as the map's most important pixels are removed, highest first.

    The map (resized to the image size bilinearly, ``align_corners=False``) orders the pixels by a
    stable sort of its values, highest first, ties in row-major pixel index order. Step
    ``k = 0 ... K`` (``K = steps``) replaces the first ``n_k = floor(k N / K)`` of the
    ``N = H W`` pixels (all channels) by the baseline (``x_0 = x``, ``x_K`` the baseline), and the curve holds
    the softmax probability of the target class ``t`` at each step:

    ``c_k = softmax(model(preprocess(x_k)))[t]``

    One batched forward per step (the unchanged image's is shared with the prediction of the
    target). Petsiuk et al. (2018), "RISE: Randomized input sampling for explanation of black-box
    models". A faithful map makes the curve fall fast: lower area is better.

    Args:
        model: classifier returning logits ``(B, num_classes)`` (or a tuple / dict holding them).
        x: images ``(B, C, H, W)``, floating, in the space the baseline is made in (before ``preprocess``).
        maps: floating ``(B, h, w)`` or ``(B, 1, h, w)``, finite, on ``x``'s device.
        steps: ``K >= 1``.
        baseline: one of [`BASELINES`][proxyaug.metrics.faithfulness.BASELINES]: ``"zeros"``, ``"blur"``, ``"mean"``.
        target: class per image (an int or ``(B,)`` indices); ``None``: the class predicted on ``x``.
        preprocess: applied to every image before the model (normalisation), or ``None``.
        validate_args: check values (finite maps, target range), which syncs with the host.

    Returns:
        Float32 tensor ``(B, steps + 1)``: the curve per image; its area is [`auc()`][proxyaug.metrics.auc].

    Examples:
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
        >>> x, maps = torch.rand(2, 2, 4, 4), torch.rand(2, 2, 2)
        >>> curve = deletion_curve(model, x, maps, steps=4)
        >>> curve.shape, auc(curve).shape
        (torch.Size([2, 5]), torch.Size([2]))
    """
    settings = dict(steps=steps, baseline=baseline, target=target, preprocess=preprocess, validate_args=validate_args)
    return _curve(model, x, maps, settings, insert=False)


def insertion_curve(
    model: nn.Module, x: torch.Tensor, maps: torch.Tensor, *, steps: int = 20, baseline: str = "blur",
    target: Any = None, preprocess: Preprocess = None, validate_args: bool = True,
) -> torch.Tensor:
    r"""Target-class probability as the map's most important pixels are added to the baseline, highest first.

    The map (resized to the image size bilinearly, ``align_corners=False``) orders the pixels by a
    stable sort of its values, highest first, ties in row-major pixel index order. Step
    ``k = 0 ... K`` (``K = steps``) restores the first ``n_k = floor(k N / K)`` of the
    ``N = H W`` pixels (all channels) from the image onto the baseline (``x_0`` the baseline, ``x_K = x``), and
    the curve holds the softmax probability of the target class ``t`` at each step:

    ``c_k = softmax(model(preprocess(x_k)))[t]``

    One batched forward per step (the unchanged image's is shared with the prediction of the
    target). Petsiuk et al. (2018), "RISE: Randomized input sampling for explanation of black-box
    models". A faithful map makes the curve rise fast: higher area is better. The default
    baseline is ``"blur"``, as in RISE (a black start tells the model little).

    Args:
        model: classifier returning logits ``(B, num_classes)`` (or a tuple / dict holding them).
        x: images ``(B, C, H, W)``, floating, in the space the baseline is made in (before ``preprocess``).
        maps: floating ``(B, h, w)`` or ``(B, 1, h, w)``, finite, on ``x``'s device.
        steps: ``K >= 1``.
        baseline: one of [`BASELINES`][proxyaug.metrics.faithfulness.BASELINES]: ``"zeros"``, ``"blur"``, ``"mean"``.
        target: class per image (an int or ``(B,)`` indices); ``None``: the class predicted on ``x``.
        preprocess: applied to every image before the model (normalisation), or ``None``.
        validate_args: check values (finite maps, target range), which syncs with the host.

    Returns:
        Float32 tensor ``(B, steps + 1)``: the curve per image; its area is [`auc()`][proxyaug.metrics.auc].

    Examples:
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
        >>> x, maps = torch.rand(2, 2, 4, 4), torch.rand(2, 2, 2)
        >>> curve = insertion_curve(model, x, maps, steps=4, baseline="mean", target=1)
        >>> curve[:, -1].allclose(model(x).softmax(1)[:, 1])  # the last point is the image itself
        True
    """
    settings = dict(steps=steps, baseline=baseline, target=target, preprocess=preprocess, validate_args=validate_args)
    return _curve(model, x, maps, settings, insert=True)


def auc(curve: torch.Tensor) -> torch.Tensor:
    r"""Area under each curve by the trapezoidal rule, its ``K + 1`` points spread evenly over [0, 1].

    ``AUC = (1/K) Σ_{k=1..K} (c_{k-1} + c_k) / 2``

    Args:
        curve: floating tensor ``(..., K + 1)`` with ``K >= 1``.

    Returns:
        Tensor ``(...)``.

    Examples:
        >>> auc(torch.tensor([[1.0, 0.5, 0.0], [1.0, 1.0, 1.0]]))
        tensor([0.5000, 1.0000])
    """
    if not isinstance(curve, torch.Tensor) or curve.ndim < 1 or curve.shape[-1] < 2 or not curve.is_floating_point():
        got = f"shape {tuple(curve.shape)} and dtype {curve.dtype}" if isinstance(curve, torch.Tensor) else type(curve).__name__
        raise ValueError(f"curve must be a floating tensor (..., steps + 1) with at least 2 points; got {got}.")
    return torch.trapezoid(curve, dx=1.0 / (curve.shape[-1] - 1), dim=-1)


def average_drop_increase(
    model: nn.Module, x: torch.Tensor, maps: torch.Tensor, *, target: Any = None,
    preprocess: Preprocess = None, validate_args: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""Drop and increase in confidence when the image is seen through its map (Grad-CAM++).

    With ``y`` the target class's softmax probability on ``x`` and ``o`` that on the explanation
    ``x * M`` (``M`` the map resized to the image size bilinearly, ``align_corners=False``, shared
    by the channels), per image

    ``drop = max(0, y - o) / y`` and ``increase = [o > y]``

    and their means over images are the "average drop" and "increase in confidence" of
    Chattopadhyay et al. (2018), "Grad-CAM++: Improved visual explanations for deep convolutional
    networks", section 5.1 (which reports them in percent). Lower drop and higher increase are
    better. One extra forward. This is torchcam's ``ClassificationMetric`` for the same maps
    (torchcam divides by ``y + 1e-7``; here ``y`` is only kept above the smallest float).

    Args:
        model: classifier returning logits ``(B, num_classes)`` (or a tuple / dict holding them).
        x: images ``(B, C, H, W)``, floating; the map multiplies them before ``preprocess``.
        maps: floating ``(B, h, w)`` or ``(B, 1, h, w)`` with values in [0, 1] (what
            [`attention_maps`][proxyaug.attention_maps] returns), on ``x``'s device.
        target: class per image (an int or ``(B,)`` indices); ``None``: the class predicted on ``x``.
        preprocess: applied to both images before the model (normalisation), or ``None``.
        validate_args: check values (finite maps in [0, 1], target range), which syncs with the host.

    Returns:
        ``(drop, increase)``: float ``(B,)`` in [0, 1] and bool ``(B,)``.

    Examples:
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
        >>> x = torch.rand(2, 2, 4, 4)
        >>> drop, increase = average_drop_increase(model, x, torch.ones(2, 2, 2))
        >>> drop, increase  # an all-ones map shows the model the image itself
        (tensor([0., 0.]), tensor([False, False]))
    """
    x = check_images("x", x)
    preprocess = check_preprocess(preprocess)
    maps = check_maps("maps", maps, validate_args=validate_args)
    check_pair(x, maps)
    if validate_args and maps.numel():
        check_range("maps", maps, high=1.0)
    m = resize(maps, x.shape[-2:]).unsqueeze(1)
    with eval_mode(model), torch.no_grad():
        probs = probabilities(model, x, preprocess)
        target = resolve_target(target, probs, validate_args=validate_args).view(-1, 1)
        y = probs.gather(1, target).squeeze(1)
        o = probabilities(model, (x * m).to(x.dtype), preprocess).gather(1, target).squeeze(1)
    drop = (y - o).clamp_min(0) / y.clamp_min(torch.finfo(y.dtype).tiny)
    return drop, o > y

