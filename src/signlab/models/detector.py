"""SignFinderNet: an anchor-free, CenterNet-style network that finds traffic signs in whole scenes.

A cheap stride-2 stem, three or more downsampling stages (strides 4, 8, 16[, 32]) and a light top-down merge back
to stride 4, so that the stride-4 map that places the centres sees the context of the coarser ones. Heads at stride 4:
a heatmap per sign category (signlab.detection.boxes.CATEGORIES), the box size (log w, log h, in cells) and the
centre's offset inside its cell. Full-resolution layers are thin and the wider ones are depthwise separable:
the network must run on whole 1360x800 scenes several times a second on two CPU cores.
Decoding, targets and the loss live in signlab.detection.finder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from signlab.detection.boxes import CATEGORIES
from signlab.models import register_model

STRIDE = 4  # pixels per cell of the output maps
HEAT_PRIOR_BIAS = -4.6  # sigmoid(-4.6) = 0.01: almost every cell is background, so start there (focal loss)
BOX_PRIOR_BIAS = (2.0, 2.0, 0.5, 0.5)  # log of 7.4 cells (a 30-px sign), the cell's middle: the size loss starts low


def conv_bn(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


def separable(c_in: int, c_out: int) -> nn.Sequential:
    """Depthwise 3x3 then pointwise 1x1: about 9/C of a full 3x3 convolution's MACs."""
    return nn.Sequential(nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in, bias=False), nn.BatchNorm2d(c_in),
                         nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class Residual(nn.Module):
    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def stage(c_in: int, c_out: int, blocks: int) -> nn.Sequential:
    """A strided 3x3 convolution, then residual separable blocks at the new resolution."""
    return nn.Sequential(conv_bn(c_in, c_out, stride=2), *(Residual(separable(c_out, c_out)) for _ in range(blocks)))


class SignFinderNet(nn.Module):
    def __init__(self, num_categories: int, widths: tuple[int, ...], blocks: tuple[int, ...], neck: int) -> None:
        super().__init__()
        if len(blocks) < 3 or len(widths) != len(blocks) + 1:
            raise ValueError(f"blocks {blocks} must give a block count for each stage (3 or more: strides 4, 8, "
                             f"16, ...) and widths {widths} one channel count more (the stem's first)")
        self.stem = conv_bn(3, widths[0], stride=2)
        self.stages = nn.ModuleList(stage(widths[i], widths[i + 1], blocks[i]) for i in range(len(blocks)))
        self.lateral = nn.ModuleList(nn.Conv2d(w, neck, 1) for w in widths[1:])
        self.merge = nn.ModuleList(separable(neck, neck) for _ in range(len(blocks) - 1))
        self.pad_to = 2 ** (len(blocks) + 1)  # the coarsest stride: a scene padded to it divides evenly all the way
        # one branch each: whether a sign is here, and where its edges are, want different features
        self.heat = nn.Sequential(separable(neck, neck), nn.Conv2d(neck, num_categories, 1))
        self.box = nn.Sequential(separable(neck, neck), nn.Conv2d(neck, 4, 1))  # log w, log h (cells), offset x, y
        nn.init.constant_(self.heat[-1].bias, HEAT_PRIOR_BIAS)
        with torch.no_grad():
            self.box[-1].bias.copy_(torch.tensor(BOX_PRIOR_BIAS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, H, W) standardised -> (B, categories + 4, ceil(H/4), ceil(W/4)): heatmap logits, then
        log w, log h, offset x, offset y."""
        f = self.stem(x)
        feats = []
        for s in self.stages:
            f = s(f)
            feats.append(f)  # strides 4, 8, 16, ...
        top = self.lateral[-1](feats[-1])
        for i in reversed(range(len(feats) - 1)):  # the coarser map, upsampled, joins the finer one's lateral
            lat = self.lateral[i](feats[i])
            top = self.merge[i](lat + F.interpolate(top, size=lat.shape[-2:], mode="nearest"))
        return torch.cat([self.heat(top), self.box(top)], dim=1)


@register_model
def signfinder(num_classes: int = len(CATEGORIES), image_size: int = 384, widths: tuple[int, ...] = (16, 24, 48, 96),
               blocks: tuple[int, ...] = (1, 2, 2), neck: int = 32) -> nn.Module:
    """The default finder. num_classes: heatmap channels, one per sign category; image_size: the training
    crop (the network takes any size)."""
    return SignFinderNet(num_classes, tuple(widths), tuple(blocks), neck)


signfinder.task = "detect"
