"""Does the model still recognise the image when parts of it are gone or out of place? Accuracy
under patch drop (random, or the map's most salient patches first) and under patch shuffling, as
Naseer et al. (2021), "Intriguing properties of vision transformers", compare CNNs and ViTs.

Each runs the model in batches under ``torch.no_grad()`` and eval mode, and leaves it as found
(every module's ``training`` flag, every parameter's ``requires_grad`` and ``.grad``, also when
the model raises). Each returns whether each image is still classified correctly, per setting:
the mean over images is the accuracy, and two models' flags feed
[`error_consistency`][proxyaug.metrics.error_consistency].
"""

from __future__ import annotations

import math
import numbers
from typing import Any, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .._checks import check_choice, check_images, check_labels, check_positive_int, describe
from ..attention import extract_logits, preserved
from ._inputs import Preprocess, check_maps, check_preprocess, descending_ranks, resize

__all__ = ["DROP_FRACTIONS", "occlusion_curve", "shuffle_accuracy"]

#: The shares of the patches [`occlusion_curve`][proxyaug.metrics.occlusion_curve] drops by default: 0 to 90 %
#: in steps of 10 %, as Naseer et al. (2021) do.
DROP_FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _check_fractions(fractions: Any) -> Tuple[float, ...]:
    values = tuple(fractions) if isinstance(fractions, (tuple, list)) else None
    if not values or not all(isinstance(f, numbers.Real) and not isinstance(f, bool) and 0.0 <= f <= 1.0 for f in values):
        raise ValueError(f"fractions={fractions!r} is not valid; expected a non-empty tuple of numbers in [0, 1] (shares of the patches to drop).")
    return tuple(float(f) for f in values)


def _check_generator(generator: Any) -> Optional[torch.Generator]:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None; got {describe(generator)}.")
    return generator


def _check_batch(images: Any, labels: Any, batch_size: Any) -> Tuple[torch.Tensor, torch.Tensor, int]:
    x = check_images("images", images)
    y = check_labels("labels", labels, x.shape[0]).to(x.device)
    if batch_size is None:
        return x, y, max(x.shape[0], 1)
    return x, y, check_positive_int("batch_size", batch_size)


def _divisor(name: str, value: Any, x: torch.Tensor, *, shown: str) -> int:
    """``value`` as a positive int that divides the images' height and width; ``shown`` names it in the message."""
    value = check_positive_int(name, value)
    h, w = x.shape[-2:]
    if h % value or w % value:
        common = math.gcd(h, w)
        raise ValueError(f"{shown} does not divide the images' size {h} x {w}; expected a {name} that divides both "
                         f"(their common divisors: {[d for d in range(1, common + 1) if common % d == 0]}).")
    return value


def _correct(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, settings: Tuple[Preprocess, int, bool]) -> torch.Tensor:
    """Whether the model's top class is the label, ``(B,)`` bool, in forwards of at most ``batch_size`` images."""
    preprocess, batch_size, validate = settings
    logits = [extract_logits(model(preprocess(c) if preprocess is not None else c)) for c in x.split(batch_size)]
    classes = logits[0].shape[1] if logits else 0
    if validate and labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        raise ValueError(f"labels hold classes in [{int(labels.min())}, {int(labels.max())}] but the model has {classes} outputs; "
                         f"expected [0, {classes - 1}].")
    return torch.cat([t.argmax(dim=1) for t in logits]) == labels if logits else labels.new_zeros(0, dtype=torch.bool)


def _random_ranks(b: int, n: int, generator: Optional[torch.Generator], device: torch.device) -> torch.Tensor:
    """A uniform random permutation of ``n`` items per row, as each item's place, ``(b, n)`` on ``device``."""
    keys = torch.rand(b, n, generator=generator, device=generator.device if generator is not None else device)
    return descending_ranks(keys).to(device)


def _patch_ranks(x: torch.Tensor, order: Any, patch: int, generator: Optional[torch.Generator], validate: bool) -> torch.Tensor:
    """Each patch's place in the drop order, ``(B, 1, H, W)`` (every pixel carries its patch's)."""
    b, _, h, w = x.shape
    gh, gw = h // patch, w // patch
    if isinstance(order, torch.Tensor):
        maps = check_maps("order", order, validate_args=validate)
        if maps.shape[0] != b or maps.device != x.device:
            raise ValueError(f"order holds {maps.shape[0]} maps on {maps.device} but images holds {b} images on {x.device}; "
                             "expected one map per image on the images' device.")
        mass = resize(maps, (h, w)).view(b, gh, patch, gw, patch).sum(dim=(2, 4))
        ranks = descending_ranks(mass.flatten(1))  # the most mass first, ties by patch index (row-major)
    elif isinstance(order, str):
        check_choice("order", order, ("random",))
        ranks = _random_ranks(b, gh * gw, generator, x.device)
    else:
        raise TypeError(f"order must be 'random' or maps (B, h, w) whose most salient patches are dropped first; got {describe(order)}.")
    return ranks.view(b, gh, 1, gw, 1).expand(b, gh, patch, gw, patch).reshape(b, 1, h, w)


def occlusion_curve(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, patch: int = 16,
    fractions: Sequence[float] = DROP_FRACTIONS, order: Any = "random", generator: Optional[torch.Generator] = None,
    fill: float = 0.0, preprocess: Preprocess = None, batch_size: Optional[int] = None, validate_args: bool = True,
) -> torch.Tensor:
    r"""Whether each image is still classified correctly as a growing share of its patches is dropped.

    The images are cut into ``patch`` x ``patch`` patches (``P`` of them); at fraction ``f`` the
    first ``n_f = round(f P)`` patches in the drop order (halves round up) are set to ``fill`` in every
    channel, before ``preprocess``, and the model classifies the result. The drop order is, per image:

    - ``order="random"``: a uniform random permutation of the patches, drawn once per call from
      ``generator`` (on the generator's device, then moved) and shared by the fractions, so a
      higher fraction drops a superset of a lower one's patches. Naseer et al. (2021), "Intriguing
      properties of vision transformers": random patch drop, 0-90 % in steps of 10 % (the default
      ``fractions``), with 16 x 16 patches of 224 x 224 images (the default ``patch``).
    - ``order=maps`` (``(B, h, w)``, resized to the image size bilinearly, ``align_corners=False``):
      the patches by the map's mass in each, highest first (salient-first), ties by patch index in
      row-major order (the paper's salient patch drop, with a map of your choice). Pass ``-maps``
      to drop the least salient patches first.

    One batched forward per fraction (in chunks of ``batch_size`` images). The accuracy curve is
    ``curve.float().mean(0)`` and its area over evenly spaced fractions is
    [`auc()`][proxyaug.metrics.auc] of it.

    Args:
        model: classifier returning logits ``(B, num_classes)`` (or a tuple / dict holding them).
        images: ``(B, C, H, W)``, floating, in the space ``fill`` is given in (before ``preprocess``);
            ``patch`` must divide ``H`` and ``W``.
        labels: ``(B,)`` integer classes.
        patch: side of the square patches in pixels.
        fractions: shares of the patches to drop, each in [0, 1].
        order: ``"random"``, or maps ``(B, h, w)`` on the images' device whose most salient patches go first.
        generator: the random order's source (``None``: the global one of the images' device).
        fill: the value of a dropped pixel.
        preprocess: applied to every image before the model (normalisation), or ``None``.
        batch_size: the most images per forward; ``None``: all ``B`` at once.
        validate_args: check values (finite maps, label range), which syncs with the host.

    Returns:
        Bool tensor ``(B, F)``: image ``i`` still correct at fraction ``k``, on the images' device.

    Examples:
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
        >>> images, labels = torch.rand(6, 3, 8, 8), torch.randint(0, 4, (6,))
        >>> curve = occlusion_curve(model, images, labels, patch=2, generator=torch.Generator().manual_seed(0))
        >>> from proxyaug.metrics import auc
        >>> curve.shape, auc(curve.float().mean(0)).shape  # correct per image and fraction; the accuracy curve's area
        (torch.Size([6, 10]), torch.Size([]))
        >>> torch.equal(curve[:, 0], model(images).argmax(1) == labels)  # fraction 0: the clean images
        True
    """
    x, y, chunk = _check_batch(images, labels, batch_size)
    patch = _divisor("patch", patch, x, shown=f"patch={patch!r}")
    fractions = _check_fractions(fractions)
    generator = _check_generator(generator)
    if isinstance(fill, bool) or not isinstance(fill, numbers.Real):
        raise TypeError(f"fill must be a number (the value of a dropped pixel); got {describe(fill)}.")
    settings = (check_preprocess(preprocess), chunk, validate_args)
    ranks = _patch_ranks(x, order, patch, generator, validate_args)
    patches = (x.shape[-2] // patch) * (x.shape[-1] // patch)
    columns: List[torch.Tensor] = []
    with preserved(model), torch.no_grad():
        for f in fractions:
            dropped = math.floor(f * patches + 0.5)
            xf = x if dropped == 0 else x.masked_fill(ranks < dropped, float(fill))
            columns.append(_correct(model, xf, y, settings))
    return torch.stack(columns, dim=1)


def _shuffle(x: torch.Tensor, grid: int, perm: torch.Tensor) -> torch.Tensor:
    """The image's ``grid`` x ``grid`` tiles rearranged: output tile ``j`` (row-major) is input tile ``perm[:, j]``."""
    b, c, h, w = x.shape
    th, tw = h // grid, w // grid
    tiles = x.reshape(b, c, grid, th, grid, tw).permute(0, 2, 4, 1, 3, 5).reshape(b, grid * grid, c, th, tw)
    tiles = tiles[torch.arange(b, device=x.device).view(-1, 1), perm]
    return tiles.view(b, grid, grid, c, th, tw).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


def shuffle_accuracy(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, grids: Sequence[int] = (2, 4, 7),
    generator: Optional[torch.Generator] = None, preprocess: Preprocess = None, batch_size: Optional[int] = None,
    validate_args: bool = True,
) -> torch.Tensor:
    r"""Whether each image is still classified correctly when its patches are shuffled.

    For each grid size ``g`` the image is cut into ``g`` x ``g`` tiles (``g`` must divide ``H`` and
    ``W``) and the tiles are put back in a uniform random order, drawn per image from
    ``generator`` (on its device, then moved); a draw may leave some tiles in place, and ``g = 1``
    is the image itself. Naseer et al. (2021), "Intriguing properties of vision transformers",
    shuffle the patches this way and find ViTs less sensitive to their arrangement than CNNs.
    One batched forward per grid size (in chunks of ``batch_size`` images); the accuracy per grid
    is ``correct.float().mean(0)``.

    Args:
        model: classifier returning logits ``(B, num_classes)`` (or a tuple / dict holding them).
        images: ``(B, C, H, W)``, floating, before ``preprocess``.
        labels: ``(B,)`` integer classes.
        grids: grid sizes ``g``, each a positive int dividing ``H`` and ``W``.
        generator: the permutations' source (``None``: the global one of the images' device).
        preprocess: applied to every image before the model (normalisation), or ``None``.
        batch_size: the most images per forward; ``None``: all ``B`` at once.
        validate_args: check values (label range), which syncs with the host.

    Returns:
        Bool tensor ``(B, G)``: image ``i`` still correct with grid ``grids[k]``, on the images' device.

    Examples:
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> images, labels = torch.rand(5, 3, 8, 8), torch.randint(0, 4, (5,))
        >>> correct = shuffle_accuracy(model, images, labels, grids=(1, 2, 4), generator=torch.Generator().manual_seed(0))
        >>> correct.shape, torch.equal(correct[:, 0], model(images).argmax(1) == labels)  # g = 1: the image itself
        (torch.Size([5, 3]), True)
    """
    x, y, chunk = _check_batch(images, labels, batch_size)
    if not isinstance(grids, (tuple, list)) or not grids or not all(
            isinstance(g, numbers.Integral) and not isinstance(g, bool) and g >= 1 for g in grids):
        raise ValueError(f"grids={grids!r} is not valid; expected a non-empty tuple of grid sizes (positive ints).")
    grids = tuple(_divisor("grid size", g, x, shown=f"grids={grids!r} holds {g!r}, which") for g in grids)
    generator = _check_generator(generator)
    settings = (check_preprocess(preprocess), chunk, validate_args)
    perms = [_random_ranks(x.shape[0], g * g, generator, x.device) for g in grids]  # drawn before any forward
    columns: List[torch.Tensor] = []
    with preserved(model), torch.no_grad():
        for g, perm in zip(grids, perms):
            columns.append(_correct(model, x if g == 1 else _shuffle(x, g, perm), y, settings))
    return torch.stack(columns, dim=1)
