"""Batched augmentation on tensors: one affine warp, one colour jitter, one random erasing and one draw of
camera faults for the whole batch (a loop only over the few low resolutions drawn).

The warp never flips: a mirrored "turn left" is "turn right". Class-aware flips: `flip_batch`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from signlab.options import between, option


@dataclass(frozen=True)
class AugmentConfig:
    rotate_degrees: float = option(10.0, "--rotate", "random rotation ± this many degrees (default 10)",
                                   between(0, 180))
    scale: float = option(0.1, "--scale", "random zoom 1 ± this (default 0.1)", between(0, 1, high_open=True))
    translate: float = option(0.1, "--translate", "random shift ± this share of the side (default 0.1)",
                              between(0, 1))
    brightness: float = option(0.2, None, "additive, in standard deviations of the standardised input",
                               between(0, 5))
    contrast: float = option(0.2, None, "multiplicative, 1 ± contrast", between(0, 1, high_open=True))
    saturation: float = option(0.0, "--saturation", "saturation jitter: colour kept is 1 ± this (0 = off)",
                               between(0, 1))
    erase: float = option(0.0, "--erase", "probability of erasing a random rectangle (2-20 % of the image) "
                          "per image (0 = off)", between(0, 1))
    color_cast: float = option(0.0, "--color-cast", "per-channel gain 1 ± this and shift ± this in standard "
                               "deviations: tinted light and ink (0 = off)", between(0, 1))
    degrade: float = option(0.0, "--degrade", "probability of one camera fault per image: blur, low resolution or "
                            "sensor noise (0 = off)", between(0, 1))

    def is_identity(self) -> bool:
        return not any((self.rotate_degrees, self.scale, self.translate, self.brightness, self.contrast,
                        self.saturation, self.erase, self.color_cast, self.degrade))


def _uniform(shape: int | tuple[int, ...], spread: float, generator: torch.Generator, device) -> torch.Tensor:
    """Uniform in [-spread, spread], drawn on the CPU so every device sees the same numbers."""
    return (torch.rand(shape, generator=generator) * 2 - 1).mul_(spread).to(device)


def affine_warp(x: torch.Tensor, angle: torch.Tensor, zoom: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate by angle (B,) radians, zoom (B,) (> 1 enlarges), shift (B, 2) in units of half the image side;
    x (B, C, H, W) standardised, out-of-frame pixels become 0 (the mean)."""
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    # affine_grid maps output to input coordinates in [-1, 1]: a zoom > 1 samples a smaller input area.
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


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
    x = affine_warp(x, angle, zoom, shift)
    gain = (1 + _uniform(b, cfg.contrast, generator, x.device)).view(b, 1, 1, 1).to(x.dtype)
    bias = _uniform(b, cfg.brightness, generator, x.device).view(b, 1, 1, 1).to(x.dtype)
    x = x * gain + bias
    # The optional jitters draw their random numbers only when on, so runs without them keep the exact
    # random stream (and results) of runs saved before they existed.
    if cfg.saturation:
        x = jitter_saturation(x, 1 + _uniform(b, cfg.saturation, generator, x.device))
    if cfg.erase:
        x = random_erase(x, cfg.erase, generator)
    if cfg.color_cast:
        x = cast_color(x, cfg.color_cast, generator)
    if cfg.degrade:
        x = degrade(x, cfg.degrade, generator)
    return x


def jitter_saturation(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Blend each image x (B, C, H, W) with its grey (the channel mean) by keep (B,): 0 gives grey, 1 the image.

    The blend is in standardised units, where a channel mean is a grey that weighs channels by their spread;
    it teaches the shape of a sign whose colours have faded (a bleached red ring) without decoding again."""
    grey = x.mean(dim=1, keepdim=True)  # (B, 1, H, W)
    return grey + (x - grey) * keep.view(-1, 1, 1, 1).to(x.dtype)


def cast_color(x: torch.Tensor, spread: float, generator: torch.Generator) -> torch.Tensor:
    """Scale and shift each channel of each image x (B, C, H, W) by its own 1 ± spread and ± spread: a sign
    under sodium or blue light, or printed in off-black ink, is still the same sign."""
    b, c = x.shape[:2]
    gain = 1 + _uniform((b, c), spread, generator, x.device).to(x.dtype)
    shift = _uniform((b, c), spread, generator, x.device).to(x.dtype)
    return x * gain.view(b, c, 1, 1) + shift.view(b, c, 1, 1)


def random_erase(x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """With probability p per image, fill one rectangle of 2-20 % of the area (aspect 1:3 to 3:1) with
    standard normal noise: stickers and occlusions cover parts of real signs (Zhong et al. 2017)."""
    b, c, h, w = x.shape
    take = torch.rand(b, generator=generator) < p
    area = (0.02 + 0.18 * torch.rand(b, generator=generator)) * h * w
    aspect = torch.exp(_uniform(b, math.log(3), generator, "cpu"))
    box_h = (area * aspect).sqrt().clamp(1, h)
    box_w = (area / aspect).sqrt().clamp(1, w)
    top = torch.rand(b, generator=generator) * (h - box_h)
    left = torch.rand(b, generator=generator) * (w - box_w)
    noise = torch.empty_like(x, device="cpu").normal_(generator=generator)  # keeps x's memory layout
    rows = torch.arange(h).view(1, h, 1)
    cols = torch.arange(w).view(1, 1, w)
    inside = ((rows >= top.view(b, 1, 1)) & (rows < (top + box_h).view(b, 1, 1))
              & (cols >= left.view(b, 1, 1)) & (cols < (left + box_w).view(b, 1, 1)) & take.view(b, 1, 1))
    mask = inside.unsqueeze(1).to(x.device)  # (B, 1, H, W)
    return torch.where(mask, noise.to(x.device), x)


# Camera faults in pixels of a 32-px input, scaled with the input's side; the ranges end where
# bench/robustness.py's curves of the `fast` preset begin to fall steeply (docs/robustness.md).
BLUR_SIGMA_PX = (0.5, 1.5)
LOW_RES_SIDE_PX = (10.0, 24.0)
NOISE_SD = (0.1, 0.4)  # standardised units, added after contrast equalisation (which amplifies a dark photo's noise)


def degrade(x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """With probability p per image x (B, C, H, W), one of three faults of a real camera, drawn uniformly:
    Gaussian blur (a lens out of focus), resampling down to a low resolution and back (a distant sign) or
    Gaussian sensor noise (dim light). bench/robustness.py measures a model under these faults and more.
    The noise is drawn for the whole batch in x's memory order, like random_erase's."""
    b, _, h, _ = x.shape
    take = torch.rand(b, generator=generator) < p
    kind = torch.randint(0, 3, (b,), generator=generator)
    amount = torch.rand(b, generator=generator)  # (B,) in [0, 1): where in its fault's range
    noise = torch.empty_like(x, device="cpu").normal_(generator=generator)
    out = x.clone()
    scale = h / 32

    def span(bounds: tuple[float, float], pick: torch.Tensor) -> torch.Tensor:
        return bounds[0] + (bounds[1] - bounds[0]) * amount[pick]

    blur = (take & (kind == 0)).nonzero().flatten()
    if len(blur):
        out[blur.to(x.device)] = gaussian_blur(x[blur.to(x.device)], span(BLUR_SIGMA_PX, blur) * scale)
    low = (take & (kind == 1)).nonzero().flatten()
    sides = (span(LOW_RES_SIDE_PX, low) * scale).round().clamp(min=2).int()  # (n,) whole pixels
    for side in sides.unique().tolist():
        rows = low[sides == side].to(x.device)
        small = F.interpolate(x[rows], size=(side, side), mode="area")
        out[rows] = F.interpolate(small, size=x.shape[2:], mode="bilinear", align_corners=False)
    noisy = take & (kind == 2)
    sd = torch.where(noisy, NOISE_SD[0] + (NOISE_SD[1] - NOISE_SD[0]) * amount, torch.zeros(b))
    return out + (sd.view(b, 1, 1, 1) * noise).to(x.device, x.dtype)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image x (B, C, H, W) by its own sigma (B,) px, each > 0: one separable Gaussian per image, the
    border repeated outwards (a zero border would darken the edge toward the mean grey)."""
    b, c, h, w = x.shape
    sigma = sigma.detach().float().cpu()
    radius = max(1, math.ceil(3 * float(sigma.max())))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-taps[None] ** 2 / (2 * sigma[:, None] ** 2))  # (B, K)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0).to(x.device, x.dtype)  # (B*C, K)
    flat = F.pad(x.reshape(1, b * c, h, w), (radius, radius, radius, radius), mode="replicate")
    flat = F.conv2d(flat, kernel.view(b * c, 1, 1, -1), groups=b * c)  # along rows
    flat = F.conv2d(flat, kernel.view(b * c, 1, -1, 1), groups=b * c)  # along columns
    return flat.view(b, c, h, w)


# GTSRB classes whose mirror image is a sign of a known class (checked against the class-mean images with
# bench/check_flips.py). Mirroring left-right: these keep their class ...
_H_SAME = (11, 12, 13, 15, 17, 18, 22, 26, 30, 35)
# ... and these turn into each other (curve left/right, turn left/right, straight-or-left/right, keep left/right).
_H_SWAP = ((19, 20), (33, 34), (36, 37), (38, 39))
_V_SAME = (1, 5, 12, 15, 17)  # upside down: 30, 80, priority road, no vehicles, no entry
_ROT_SAME = (12, 15, 17, 32)  # rotated by 180 degrees


def gtsrb_flip_tables() -> torch.Tensor:
    """(3, 43) long: the class an image of class c becomes under a left-right flip, an up-down flip and a
    180-degree rotation; -1 where the result is no traffic sign."""
    tables = torch.full((3, 43), -1, dtype=torch.long)
    for c in _H_SAME:
        tables[0, c] = c
    for a, b in _H_SWAP:
        tables[0, a], tables[0, b] = b, a
    for row, same in ((1, _V_SAME), (2, _ROT_SAME)):
        for c in same:
            tables[row, c] = c
    return tables


def flip_batch(x: torch.Tensor, y: torch.Tensor, tables: torch.Tensor, generator: torch.Generator,
               p: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-aware flips: each image whose class allows a flip takes it with probability p, and its label
    follows (a flipped "turn left" becomes "turn right"). x (B, C, H, W), y (B,)."""
    b = x.shape[0]
    kind = torch.randint(0, 3, (b,), generator=generator).to(y.device)  # which of the three flips to try
    take = (torch.rand(b, generator=generator) < p).to(y.device)
    target = tables.to(y.device)[kind, y]
    take &= target >= 0
    if not bool(take.any()):
        return x, y
    flip_dims = {0: (3,), 1: (2,), 2: (2, 3)}
    x = x.clone()
    for k, dims in flip_dims.items():
        sel = take & (kind == k)
        if bool(sel.any()):
            x[sel] = x[sel].flip(dims)
    return x, torch.where(take, target, y)
