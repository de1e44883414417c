"""Datasets of the accuracy study, each with one fixed seeded split.

Every loader returns a [`Data`][benchmarks.data.Data]: a *pool* (the training images: train and
validation are split from it by [`split_pool()`][benchmarks.data.split_pool]) and a held-out *test*
set, both yielding ``(float image (C, H, W) in [0, 1], label)`` in a canonical frame (deterministic
resize and centre crop), as [`proxyaug.ProxyDataset`][proxyaug.ProxyDataset] needs.

- ``digits``: scikit-learn's bundled 1,797 real 8x8 handwritten digits (nothing is downloaded),
  upsampled to ``size``; a stratified test split of ``test_fraction``.
- ``shortcut-digits``: the same images and split, plus a spurious cue: a bright 2x2 block (in
  the 8x8 frame) on the border at a position that names the class. In the pool the cue sits at
  the label's position for ``cue_strength`` of the images (90 %) and at another class's position
  for the rest; test images have no cue. A model can reach high pool accuracy from the cue alone and
  then fails on the test set: the situation where attending to the wrong thing hurts.
- ``fashion-mnist``, ``mnist``: the official train (pool, 60,000) / test (10,000) splits of
  28x28 grey photographs of clothing / handwritten digits, read from their four IDX files
  (gzipped or not; [`benchmarks.idx`][benchmarks.idx]) in ``root``, in torchvision's layout
  (``root/FashionMNIST/raw/``, ``root/MNIST/raw/``) or, for Fashion-MNIST, where
  ``apt-get install dataset-fashion-mnist`` puts them (``/usr/share/datasets/fashion-mnist/``);
  resized only when ``size`` is not 28.
- ``cifar10``, ``cifar100``: torchvision's official train (pool) / test splits.
- ``flowers102``: train + val (pool) / test; ``oxford-pet``: trainval (pool) / test;
  ``caltech101``: a stratified seeded test split.
- ``imagefolder:PATH``: an ``ImageFolder`` at ``PATH`` with a stratified seeded test split.

``pool_size`` keeps a stratified seeded subset (``split_seed``) of that many pool images, for
any dataset; ``Data.info`` says so.

torchvision datasets are read from ``root`` with ``download=False``: download them once
yourself (``torchvision.datasets.CIFAR10(root, download=True)``); a missing dataset raises an
error that says so. Nothing here downloads at run time.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, List, Optional, Tuple

import torch
from torch.utils.data import Dataset, TensorDataset

__all__ = ["Data", "DATASETS", "load_data", "limit_pool", "split_pool", "split_fingerprint"]

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DATASETS = ("digits", "shortcut-digits", "fashion-mnist", "mnist", "cifar10", "cifar100", "caltech101", "flowers102", "oxford-pet", "imagefolder:PATH")

# border positions (row, col) of the shortcut cue's top-left corner in the 8x8 frame, one per class
CUE_POSITIONS = ((0, 0), (0, 3), (0, 6), (3, 6), (6, 6), (6, 3), (6, 0), (3, 0), (0, 1), (6, 5))


@dataclasses.dataclass
class Data:
    """A dataset of the study: ``pool`` (train + validation) and ``test``, never mixed.

    Attributes:
        name: the dataset's name as given.
        pool: training images; the train / validation split is drawn from it.
        pool_labels: the pool's labels ``(N,)`` (``int64``), for stratified splits.
        test: the held-out test images: evaluated, never trained on or selected from.
        num_classes: classes.
        channels: image channels.
        mean: per-channel normalisation mean (the model's preprocessing).
        std: per-channel normalisation std.
        info: one line describing the data, for the report.
        class_names: the classes' names by label where the source names them (else empty).
    """

    name: str
    pool: Dataset
    pool_labels: torch.Tensor
    test: Dataset
    num_classes: int
    channels: int
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    info: str
    class_names: Tuple[str, ...] = ()


def _stratified(labels: torch.Tensor, fraction: float, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Split ``range(len(labels))`` into (keep, held) with ``fraction`` of each class held out."""
    from sklearn.model_selection import train_test_split

    if not 0.0 < fraction < 1.0:
        raise ValueError(f"split fraction={fraction!r} is not valid; expected a number in (0, 1).")
    keep, held = train_test_split(
        torch.arange(len(labels)).numpy(), test_size=fraction, random_state=seed, stratify=labels.numpy()
    )
    return torch.as_tensor(sorted(keep)), torch.as_tensor(sorted(held))


def split_pool(labels: torch.Tensor, val_fraction: float, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Stratified ``(train, val)`` indices into the pool; the same for the same ``seed``.

    Examples:
        >>> train, val = split_pool(torch.arange(20) % 2, 0.2, seed=0)
        >>> len(train), len(val), set(train.tolist()) & set(val.tolist())
        (16, 4, set())
    """
    return _stratified(labels, val_fraction, seed)


def split_fingerprint(indices: torch.Tensor) -> str:
    """A short hash of a set of indices: equal fingerprints, equal splits."""
    import hashlib

    return hashlib.sha1(torch.as_tensor(indices, dtype=torch.int64).sort().values.numpy().tobytes()).hexdigest()[:12]


def _digits(size: int, test_fraction: float, split_seed: int, shortcut: bool, cue_strength: float) -> Data:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.as_tensor(digits.target, dtype=torch.long)
    pool_idx, test_idx = _stratified(labels, test_fraction, split_seed)
    pool, test = images[pool_idx].clone(), images[test_idx].clone()
    pool_labels = labels[pool_idx]
    info = f"scikit-learn digits, {len(pool_idx)} pool / {len(test_idx)} test images (stratified split, seed {split_seed}), 8x8 upsampled to {size}x{size}"
    if shortcut:
        if not 0.0 <= cue_strength <= 1.0:
            raise ValueError(f"cue_strength={cue_strength!r} is not valid; expected a number in [0, 1].")
        g = torch.Generator().manual_seed(split_seed + 12345)
        agree = torch.rand(len(pool), generator=g) < cue_strength
        other = (pool_labels + torch.randint(1, 10, (len(pool),), generator=g)) % 10
        where = torch.where(agree, pool_labels, other)
        for i, c in enumerate(where.tolist()):
            r, col = CUE_POSITIONS[c]
            pool[i, :, r : r + 2, col : col + 2] = 1.0
        info += (
            f"; shortcut: a 2x2 cue at a class-specific border position in the pool ({cue_strength:.0%} at the label's "
            "position, the rest at another class's), no cue in the test images"
        )
    up = lambda t: torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)  # noqa: E731
    return Data(
        name="shortcut-digits" if shortcut else "digits", pool=TensorDataset(up(pool), pool_labels), pool_labels=pool_labels,
        test=TensorDataset(up(test), labels[test_idx]), num_classes=10, channels=1, mean=(0.5,), std=(0.5,), info=info,
        class_names=tuple(map(str, range(10))),
    )


# per-channel mean and std of the official training images (the models' normalisation)
IDX_STATS = {"fashion-mnist": ((0.2860,), (0.3530,)), "mnist": ((0.1307,), (0.3081,))}
IDX_CLASSES = {  # the IDX files hold labels only; torchvision's names
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    "mnist": tuple(map(str, range(10))),
}


def _idx(name: str, size: int, root: str) -> Data:
    """Fashion-MNIST or MNIST from their IDX files: official train = pool, official test = test."""
    from .idx import SOURCES, load_idx

    train_x, train_y, test_x, test_y, where = load_idx(name, root)

    def frame(images: torch.Tensor) -> torch.Tensor:  # uint8 (N, 28, 28) -> float (N, 1, size, size) in [0, 1]
        x = images.unsqueeze(1).float().div_(255.0)
        if x.shape[-2:] != (size, size):
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)
        return x

    h, w = train_x.shape[-2:]
    resized = f", resized to {size}x{size}" if (h, w) != (size, size) else ""
    info = f"{SOURCES[name][0]} ({where}): {len(train_y)} pool / {len(test_y)} test images (official train / test), {h}x{w} grey{resized}"
    classes = int(max(train_y.max(), test_y.max())) + 1
    mean, std = IDX_STATS[name]
    return Data(name=name, pool=TensorDataset(frame(train_x), train_y), pool_labels=train_y, test=TensorDataset(frame(test_x), test_y),
                num_classes=classes, channels=1, mean=mean, std=std, info=info, class_names=IDX_CLASSES[name])


def limit_pool(data: Data, pool_size: Optional[int], seed: int) -> Data:
    """``data`` with a stratified seeded subset of ``pool_size`` pool images (all of them for ``None``).

    Examples:
        >>> small = limit_pool(load_data("digits", size=8), 300, seed=0)
        >>> len(small.pool), small.pool_labels.bincount().tolist()[:3], small.info.split("; ")[-1]
        (300, [30, 30, 30], 'pool: a stratified subset of 300 of the 1257 images (seed 0)')
    """
    if pool_size is None:
        return data
    n = len(data.pool_labels)
    if isinstance(pool_size, bool) or not isinstance(pool_size, int) or not data.num_classes <= pool_size <= n:
        raise ValueError(f"pool_size={pool_size!r} is not valid; expected None (the whole pool) or an int from {data.num_classes} to {n}, the pool's size.")
    if pool_size == n:
        keep = torch.arange(n)
    else:
        from sklearn.model_selection import train_test_split

        labels = data.pool_labels.numpy()
        keep = torch.as_tensor(sorted(train_test_split(range(n), train_size=pool_size, random_state=seed, stratify=labels)[0]))
    if isinstance(data.pool, TensorDataset):
        pool: Dataset = TensorDataset(*(t[keep] for t in data.pool.tensors))
    else:
        from torch.utils.data import Subset

        pool = Subset(data.pool, keep.tolist())
    info = f"{data.info}; pool: a stratified subset of {pool_size} of the {n} images (seed {seed})"
    return dataclasses.replace(data, pool=pool, pool_labels=data.pool_labels[keep], info=info)


def _image_transform(size: int, rgb: bool = True) -> Callable[[Any], torch.Tensor]:
    from torchvision import transforms as T

    steps: List[Any] = [T.Lambda(lambda img: img.convert("RGB"))] if rgb else []
    return T.Compose([*steps, T.Resize(size), T.CenterCrop(size), T.ToTensor()])


def _labels_of(ds: Any) -> torch.Tensor:
    for attr in ("targets", "_labels", "y", "labels"):
        if hasattr(ds, attr):
            return torch.as_tensor(list(getattr(ds, attr)), dtype=torch.long)
    return torch.as_tensor([int(ds[i][1]) for i in range(len(ds))], dtype=torch.long)


def _torchvision(name: str, size: int, root: str, test_fraction: float, split_seed: int) -> Data:
    import torchvision.datasets as D
    from torch.utils.data import ConcatDataset, Subset

    tf = _image_transform(size)
    try:
        if name in ("cifar10", "cifar100"):
            cls = D.CIFAR10 if name == "cifar10" else D.CIFAR100
            pool, test = cls(root, train=True, transform=tf), cls(root, train=False, transform=tf)
            pool_labels, classes = _labels_of(pool), len(pool.classes)
        elif name == "flowers102":
            parts = [D.Flowers102(root, split=s, transform=tf) for s in ("train", "val")]
            pool, test = ConcatDataset(parts), D.Flowers102(root, split="test", transform=tf)
            pool_labels, classes = torch.cat([_labels_of(p) for p in parts]), 102
        elif name == "oxford-pet":
            pool = D.OxfordIIITPet(root, split="trainval", transform=tf)
            test = D.OxfordIIITPet(root, split="test", transform=tf)
            pool_labels, classes = _labels_of(pool), len(pool.classes)
        elif name == "caltech101":
            full = D.Caltech101(root, transform=tf)
            labels = _labels_of(full)
            keep, held = _stratified(labels, test_fraction, split_seed)
            pool, test, pool_labels, classes = Subset(full, keep.tolist()), Subset(full, held.tolist()), labels[keep], len(full.categories)
        else:
            path = name.split(":", 1)[1]
            full = D.ImageFolder(path, transform=tf)
            labels = _labels_of(full)
            keep, held = _stratified(labels, test_fraction, split_seed)
            pool, test, pool_labels, classes = Subset(full, keep.tolist()), Subset(full, held.tolist()), labels[keep], len(full.classes)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted. You can use download=True ..."
        raise RuntimeError(
            f"dataset {name!r} was not found under root={root!r} ({e}). The study never downloads: fetch it once, "
            f"e.g. torchvision.datasets.{name.upper() if name.startswith('cifar') else name}(root, download=True)."
        ) from e
    source = pool.dataset if isinstance(pool, Subset) else pool
    names = tuple(getattr(source, "classes", None) or getattr(source, "categories", None) or ())  # none for flowers102's parts
    return Data(
        name=name, pool=pool, pool_labels=pool_labels, test=test, num_classes=classes, channels=3,
        mean=IMAGENET_MEAN, std=IMAGENET_STD, info=f"{name}, {len(pool)} pool / {len(test)} test images at {size}x{size}",
        class_names=names if len(names) == classes else (),
    )


def load_data(
    name: str, size: int = 32, root: str = "data", test_fraction: float = 0.3, split_seed: int = 0, cue_strength: float = 0.9,
    *, pool_size: Optional[int] = None,
) -> Data:
    """Load dataset ``name`` (see the module docstring) with its fixed split.

    Examples:
        >>> data = load_data("digits", size=16)
        >>> len(data.pool), len(data.test), data.pool[0][0].shape
        (1257, 540, torch.Size([1, 16, 16]))
    """
    if name in ("digits", "shortcut-digits"):
        data = _digits(size, test_fraction, split_seed, name == "shortcut-digits", cue_strength)
    elif name in IDX_STATS:
        data = _idx(name, size, root)
    elif name in DATASETS or name.startswith("imagefolder:"):
        data = _torchvision(name, size, root, test_fraction, split_seed)
    else:
        raise ValueError(f"dataset={name!r} is not supported; expected one of {', '.join(DATASETS)}.")
    return limit_pool(data, pool_size, split_seed)
