"""Batched augmentation on tensors: one affine warp and one colour jitter for the whole batch, no Python loop.

Never flips: a mirrored "turn left" is "turn right". Class-aware flips live in `flip_map`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class AugmentConfig:
    rotate_degrees: float = 10.0  # ± uniform
    scale: float = 0.1  # zoom factor in 1 ± scale
    translate: float = 0.1  # ± fraction of the image side
    brightness: float = 0.2  # additive, in standard deviations of the standardised input
    contrast: float = 0.2  # multiplicative, 1 ± contrast

    def is_identity(self) -> bool:
        return not any((self.rotate_degrees, self.scale, self.translate, self.brightness, self.contrast))


def _uniform(n: int, spread: float, generator: torch.Generator, device) -> torch.Tensor:
    return (torch.rand(n, generator=generator) * 2 - 1).mul_(spread).to(device)


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Randomly warp and jitter standardised images x (B, C, H, W); out-of-frame pixels become 0 (the mean).

    All random numbers come from `generator` on the CPU, so a resumed run draws the same ones on any device.
    """
    if cfg.is_identity():
        return x
    b = x.shape[0]
    angle = _uniform(b, math.radians(cfg.rotate_degrees), generator, x.device)
    zoom = 1 + _uniform(b, cfg.scale, generator, x.device)
    shift = torch.stack([_uniform(b, 2 * cfg.translate, generator, x.device) for _ in range(2)], dim=1)  # (B, 2)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    # affine_grid maps output to input coordinates in [-1, 1]: a zoom > 1 samples a smaller input area.
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)  # (B, H, W, 2)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    gain = (1 + _uniform(b, cfg.contrast, generator, x.device)).view(b, 1, 1, 1).to(x.dtype)
    bias = _uniform(b, cfg.brightness, generator, x.device).view(b, 1, 1, 1).to(x.dtype)
    return x * gain + bias
