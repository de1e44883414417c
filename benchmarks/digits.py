"""scikit-learn's bundled handwritten digits as torch datasets, with one fixed seeded split.

1,797 real 8x8 grey-level scans (UCI ML hand-written digits) shipped inside scikit-learn, so
nothing is downloaded. Images are upsampled bilinearly to ``size`` and scaled to [0, 1].
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch.utils.data import TensorDataset


def load_digits_split(size: int = 32, test_fraction: float = 0.3, split_seed: int = 0) -> Tuple[TensorDataset, TensorDataset]:
    """Return ``(train, test)`` datasets of ``(1, size, size)`` float images and integer labels.

    The split is stratified and depends only on ``split_seed``: every arm and every seed of a
    comparison sees the same training and test images.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    labels = torch.as_tensor(digits.target, dtype=torch.long)
    train_idx, test_idx = train_test_split(
        torch.arange(len(labels)).numpy(), test_size=test_fraction, random_state=split_seed, stratify=labels.numpy()
    )
    train_idx, test_idx = torch.as_tensor(train_idx), torch.as_tensor(test_idx)
    return TensorDataset(images[train_idx], labels[train_idx]), TensorDataset(images[test_idx], labels[test_idx])
