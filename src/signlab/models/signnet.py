"""SignNet: a BatchNorm CNN built for accuracy per multiply-accumulate on 32×32 traffic signs.

Stages of two 3×3 conv-BN-ReLU layers, each stage but the last followed by 2×2 max-pooling; global
max-and-average pooling and one linear layer. Max-pooling keeps the strong edge responses that tell
signs apart; the concatenated global max and mean give the head both "is it there" and "how much".
"""

from __future__ import annotations

import torch
from torch import nn

from signlab.models import register_model

Depth = int | tuple[int, ...]  # 3x3 convs per stage: one count for every stage, or one per stage


def conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    # No conv bias: BatchNorm's shift does its job.
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class SignNet(nn.Module):
    def __init__(self, num_classes: int, widths: tuple[int, ...], depth: Depth, dropout: float,
                 in_channels: int) -> None:
        super().__init__()
        depths = (depth,) if isinstance(depth, int) else tuple(depth)  # convs per stage
        depths = depths * len(widths) if len(depths) == 1 else depths
        if len(depths) != len(widths) or min(depths) < 1:
            raise ValueError(f"depth {depth} must be one count >= 1 or one per stage of widths {widths}")
        layers: list[nn.Module] = []
        c = in_channels
        for i, (w, d) in enumerate(zip(widths, depths, strict=True)):
            for _ in range(d):
                layers.append(conv_bn(c, w))
                c = w
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)  # (B, C, h, w)
        pooled = torch.cat([f.amax(dim=(2, 3)), f.mean(dim=(2, 3))], dim=1)  # (B, 2C)
        return self.head(self.dropout(pooled))  # (B, classes)


@register_model
def signnet(num_classes: int = 43, image_size: int = 32, widths: tuple[int, ...] = (16, 32, 64),
            depth: Depth = 2, dropout: float = 0.0, in_channels: int = 3) -> nn.Module:
    """The default: 78k parameters, 9.9M MACs; widths that are multiples of 16 keep oneDNN's kernels fast."""
    return SignNet(num_classes, tuple(widths), depth, dropout, in_channels)


@register_model
def signnet_wide(num_classes: int = 43, image_size: int = 32, widths: tuple[int, ...] = (32, 64, 128),
                 depth: Depth = 2, dropout: float = 0.0, in_channels: int = 3) -> nn.Module:
    """Twice the width, four times the MACs (38.6M): the reference network's size, for the best accuracy."""
    return SignNet(num_classes, tuple(widths), depth, dropout, in_channels)
