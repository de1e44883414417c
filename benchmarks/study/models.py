"""The study's models: a small CNN for CPU runs, or any timm model (with a small-image stem)."""

from __future__ import annotations

from typing import List, Optional

import torch
from torch import nn


class SmallCNN(nn.Module):
    """A small VGG-style CNN for CPU runs; its last conv stage keeps 1/4 of the input resolution."""

    def __init__(self, in_chans: int = 1, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> List[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        w = width
        self.features = nn.Sequential(
            *block(in_chans, w), *block(w, w), nn.MaxPool2d(2),
            *block(w, 2 * w), *block(2 * w, 2 * w), nn.MaxPool2d(2),
            *block(2 * w, 4 * w),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(4 * w, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def small_image_stem(model: nn.Module) -> nn.Module:
    """Adapt an ImageNet model to small images (CIFAR-style): first convolution with stride 1,
    no stem max-pool. The network then downsamples 4x less, so 32 px inputs keep a spatial map."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is not None:
        first.stride = (1, 1)
    if isinstance(getattr(model, "maxpool", None), (nn.MaxPool2d, nn.AvgPool2d)):
        model.maxpool = nn.Identity()
    return model


def build_model(name: str, num_classes: int, in_chans: int, size: int, pretrained: bool = False, small_stem: Optional[bool] = None) -> nn.Module:
    """``"cnn"`` (the small CNN) or any timm model name; ``small_stem`` defaults to ``size <= 64``."""
    if name == "cnn":
        return SmallCNN(in_chans, num_classes)
    import timm

    model = timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans)
    if small_stem if small_stem is not None else size <= 64:
        small_image_stem(model)
    return model
