"""The IDX files of MNIST and Fashion-MNIST: reading them (gzipped or not) and finding them.

An IDX file is a 4-byte magic number (two zero bytes, a data type code, the number of
dimensions), one big-endian ``int32`` per dimension, then the values, big-endian, in C order.
The four files of a dataset are ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each also as ``.gz``. They are looked
for in ``root`` itself, in torchvision's layout (``root/FashionMNIST/raw/``, ``root/MNIST/raw/``)
and in the directory the Debian package installs (``/usr/share/datasets/fashion-mnist/``).
"""

from __future__ import annotations

import gzip
import os
import struct
from typing import Dict, List, Tuple

import numpy as np
import torch

__all__ = ["IDX_FILES", "SOURCES", "read_idx", "find_idx", "load_idx"]

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte",
}
# data type code of the magic number -> big-endian numpy type
_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

# name -> (title, torchvision folder under root, directories searched after root, how to get it)
SOURCES: Dict[str, Tuple[str, str, Tuple[str, ...], str]] = {
    "fashion-mnist": (
        "Fashion-MNIST", "FashionMNIST", ("/usr/share/datasets/fashion-mnist",),
        "install it with `apt-get install dataset-fashion-mnist` (Debian; it puts the four .gz files in "
        "/usr/share/datasets/fashion-mnist/), or download it once with torchvision: "
        "torchvision.datasets.FashionMNIST(root, download=True)",
    ),
    "mnist": (
        "MNIST", "MNIST", (),
        "download it once with torchvision: torchvision.datasets.MNIST(root, download=True), "
        "or put the four IDX files (gzipped or not) in root",
    ),
}


def read_idx(path: str) -> torch.Tensor:
    """The array in the IDX file at ``path`` (gzipped or not, told by its first bytes) as a tensor.

    Examples:
        >>> import tempfile, struct
        >>> path = os.path.join(tempfile.mkdtemp(), "labels-idx1-ubyte")
        >>> with open(path, "wb") as f:
        ...     _ = f.write(struct.pack(">BBBBi", 0, 0, 0x08, 1, 3) + bytes([7, 0, 9]))
        >>> read_idx(path)
        tensor([7, 0, 9], dtype=torch.uint8)
    """
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":  # gzip's magic number
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"{path!r} starts as a gzip file but does not decompress ({e}); download it again.") from e
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _TYPES or not 1 <= raw[3] <= 4:
        raise ValueError(
            f"{path!r} is not an IDX file: its magic number is {raw[:4].hex() or 'missing'}; expected 0000 followed by a "
            f"type code ({', '.join(f'{t:02x}' for t in _TYPES)}) and 1 to 4 dimensions, e.g. 00000803 for images, 00000801 for labels."
        )
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path!r} is cut short: its header names {ndim} dimensions but the file has {len(raw)} bytes.")
    shape = struct.unpack(f">{ndim}i", raw[4 : 4 + 4 * ndim])
    dtype = np.dtype(_TYPES[raw[2]])
    expected = 4 + 4 * ndim + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{path!r} has {len(raw)} bytes; its header (shape {tuple(shape)}, {dtype.name}) says {expected}. Download it again.")
    values = np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim).reshape(shape)
    return torch.from_numpy(values.astype(dtype.newbyteorder("="), copy=True))


def _candidates(name: str, root: str) -> List[str]:
    _, folder, defaults, _ = SOURCES[name]
    return [root, os.path.join(root, folder, "raw"), *defaults]


def _file(directory: str, stem: str) -> str:
    """The path of ``stem`` (raw, else ``.gz``) in ``directory``, or ``""``."""
    for candidate in (stem, stem + ".gz"):
        path = os.path.join(directory, candidate)
        if os.path.isfile(path):
            return path
    return ""


def find_idx(name: str, root: str = "data") -> Dict[str, str]:
    """The paths of dataset ``name``'s four IDX files: the first directory that holds all four.

    Looked for, in order: ``root``, ``root/<torchvision folder>/raw`` and the default directories
    of ``SOURCES[name]``; a missing dataset raises ``FileNotFoundError`` saying where it looked,
    what it found and how to get it.

    Examples:
        >>> find_idx("mnist", root="/nonexistent")
        Traceback (most recent call last):
        ...
        FileNotFoundError: MNIST was not found: looked for train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (each also as .gz) in /nonexistent, /nonexistent/MNIST/raw. To get it, download it once with torchvision: torchvision.datasets.MNIST(root, download=True), or put the four IDX files (gzipped or not) in root.
    """
    if name not in SOURCES:
        raise ValueError(f"name={name!r} is not an IDX dataset; expected one of {', '.join(SOURCES)}.")
    title, _, _, how = SOURCES[name]
    partial = []
    for directory in _candidates(name, root):
        found = {key: _file(directory, stem) for key, stem in IDX_FILES.items()}
        if all(found.values()):
            return found
        if any(found.values()):
            missing = [IDX_FILES[k] for k, v in found.items() if not v]
            partial.append(f" {directory} holds some of them but not {', '.join(missing)}.")
    stems = list(IDX_FILES.values())
    raise FileNotFoundError(
        f"{title} was not found: looked for {', '.join(stems[:-1])} and {stems[-1]} (each also as .gz) in "
        f"{', '.join(_candidates(name, root))}.{''.join(partial)} To get it, {how}."
    )


def load_idx(name: str, root: str = "data") -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """``(train images (N, 28, 28) uint8, train labels (N,) int64, test images, test labels, directory)`` of ``name``."""
    paths = find_idx(name, root)
    arrays = {key: read_idx(path) for key, path in paths.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"{paths[split + '_images']!r} and {paths[split + '_labels']!r} do not match: images of shape "
                f"{tuple(images.shape)} and labels of shape {tuple(labels.shape)}; expected (N, H, W) images and N labels."
            )
    labels = [arrays[k].long() for k in ("train_labels", "test_labels")]
    return arrays["train_images"], labels[0], arrays["test_images"], labels[1], os.path.dirname(paths["train_images"])
