"""Logits for batches of images: the model's forward pass as evaluate, predict, training's validation and the
benchmarks run it, with optional test-time augmentation (TTA)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from signlab.augment import affine_warp
from signlab.preprocess import Preprocessing
from signlab.runtime import autocast

# Test-time augmentation: views inside the training augmentation's range, as
# (rotation in degrees, zoom, shift x, shift y in half image sides). The mean of their softmax outputs
# smooths over the exact framing of the crop, which is where the remaining errors on GTSRB sit.
TTA_VIEWS = ((0.0, 1.0, 0.0, 0.0), (0.0, 1.08, 0.0, 0.0), (0.0, 0.92, 0.0, 0.0),
             (6.0, 1.0, 0.0, 0.0), (-6.0, 1.0, 0.0, 0.0))


def tta_probabilities(model: nn.Module, x: torch.Tensor, views=TTA_VIEWS) -> torch.Tensor:
    """Mean softmax over the views of a standardised batch x (B, 3, H, W) -> (B, classes) float32."""
    b = x.shape[0]
    total = 0.0
    for degrees, zoom, dx, dy in views:
        angle = torch.full((b,), math.radians(degrees), device=x.device)
        warped = affine_warp(x, angle, torch.full((b,), zoom, device=x.device),
                             torch.tensor([[dx, dy]], device=x.device).expand(b, 2))
        total = total + torch.softmax(model(warped).float(), dim=1)
    return total / len(views)


@torch.no_grad()
def predict_logits(model: nn.Module, images: np.ndarray, pre: Preprocessing, device: torch.device,
                   batch_size: int = 512, bf16: str = "auto", tta: bool = False) -> torch.Tensor:
    """Float32 logits (N, classes) on the CPU for contrast-normalised uint8 images (N, S, S, 3), standardised
    by `pre`. With tta, the log of the mean softmax over TTA_VIEWS (a softmax of it gives those means back).
    bf16 is the run's --bf16 mode (auto, on, off)."""
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = pre.to_tensor(images[i:i + batch_size], device)  # (b, 3, S, S)
        with autocast(device, bf16):
            out.append(tta_probabilities(model, x).log().cpu() if tta else model(x).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)
