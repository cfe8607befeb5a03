"""SignNet behind a spatial transformer (Jaderberg et al. 2015), as in the best published GTSRB single model
(Arcos-García et al. 2018): a small localisation net looks at the image, predicts an affine warp, and the
classifier sees the re-framed sign. It starts as the identity, so training begins as plain SignNet.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from signlab.models import register_model
from signlab.models.signnet import Depth, SignNet, conv_bn

MAX_WARP = 0.25


class SpatialTransformer(nn.Module):
    def __init__(self, in_channels: int = 3, width: int = 16) -> None:
        super().__init__()
        # Half resolution is enough to find a sign's frame; a 4x4 map keeps where it is, not only what.
        self.loc = nn.Sequential(nn.MaxPool2d(2), conv_bn(in_channels, width), nn.MaxPool2d(2),
                                 conv_bn(width, 2 * width), nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.theta = nn.Linear(2 * width * 16, 6)
        self.register_buffer("identity", torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]), persistent=False)
        self.reset_to_identity()

    @torch.no_grad()
    def reset_to_identity(self) -> None:
        """Predict the identity warp for any input (create_model calls it again after a custom init)."""
        nn.init.zeros_(self.theta.weight)
        nn.init.zeros_(self.theta.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Unbounded, the warp runs away within a few steps of a high learning rate and samples only the zero
        # padding; tanh keeps each entry within ±MAX_WARP of the identity (±25 % zoom/shear/shift).
        offset = MAX_WARP * torch.tanh(self.theta(self.loc(x)))  # (B, 6)
        theta = (self.identity + offset).view(-1, 2, 3)  # (B, 2, 3): output -> input coordinates
        grid = F.affine_grid(theta.float(), list(x.shape), align_corners=False).to(x.dtype)  # (B, H, W, 2)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class SignNetSTN(nn.Module):
    def __init__(self, num_classes: int, widths: tuple[int, ...], depth: Depth, dropout: float, in_channels: int,
                 stn_width: int) -> None:
        super().__init__()
        self.stn = SpatialTransformer(in_channels, stn_width)
        self.net = SignNet(num_classes, widths, depth, dropout, in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.stn(x))  # (B, classes)


@register_model
def signnet_stn(num_classes: int = 43, image_size: int = 32, widths: tuple[int, ...] = (16, 32, 64),
                depth: Depth = 2, dropout: float = 0.0, in_channels: int = 3, stn_width: int = 16) -> nn.Module:
    """signnet plus a 0.4M-MAC spatial transformer in front."""
    return SignNetSTN(num_classes, tuple(widths), depth, dropout, in_channels, stn_width)


@register_model
def signnet_wide_stn(num_classes: int = 43, image_size: int = 32, widths: tuple[int, ...] = (32, 64, 128),
                     depth: Depth = 2, dropout: float = 0.0, in_channels: int = 3, stn_width: int = 16) -> nn.Module:
    """signnet_wide plus the same spatial transformer."""
    return SignNetSTN(num_classes, tuple(widths), depth, dropout, in_channels, stn_width)
