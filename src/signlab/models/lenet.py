"""The lecture's CNN: d filters of n×n×c, max-pooling, twice, then a fully connected classifier."""

from __future__ import annotations

import torch
from torch import nn

from signlab.models import register_model


class LeNet(nn.Module):
    def __init__(self, num_classes: int, image_size: int, widths: tuple[int, int], hidden: int,
                 kernel: int, in_channels: int) -> None:
        super().__init__()
        pad = kernel // 2  # 'same' padding keeps the arithmetic of sizes simple: only pooling halves them
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], kernel, padding=pad), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(widths[0], widths[1], kernel, padding=pad), nn.ReLU(), nn.MaxPool2d(2),
        )
        side = image_size // 4
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(widths[1] * side * side, hidden), nn.ReLU(), nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))  # (B, 3, H, W) -> (B, classes)


@register_model
def lenet(num_classes: int = 43, image_size: int = 32, widths: tuple[int, int] = (32, 64), hidden: int = 256,
          kernel: int = 5, in_channels: int = 3) -> nn.Module:
    return LeNet(num_classes, image_size, tuple(widths), hidden, kernel, in_channels)
