"""One preprocessing, everywhere: how an image file becomes the tensor a model sees.

Training, `evaluate`, `predict`, the benchmarks and every other backend go through one `Preprocessing`
object, saved with the weights (key "preprocessing" of a weights file's metadata):

    file --decode--> uint8 (S, S, 3): ROI crop when known (the CSV's box), bilinear resize to S×S
         --normalize--> uint8 (S, S, 3): contrast normalisation of the run (none | equalize)
         --to_tensor--> float (B, 3, S, S): per-channel standardisation by the training split's mean and std

Training decodes and normalises its datasets once (cached), then calls `to_tensor` per batch; inference calls
the same three steps. A test feeds the same files through `evaluate` and `predict` and compares the logits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from signlab.contrast import normalize_contrast
from signlab.data import DEFAULT_MAX_PIXELS, ImageSet, decode_image, load_images

CHANNELS = 3


@dataclass(frozen=True)
class Preprocessing:
    image_size: int = 32  # pixels, square
    crop: str = "roi"  # roi: the annotated box where a CSV gives one; full: the whole frame
    contrast: str = "equalize"  # none or equalize
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # per channel, [0, 1] units, of the training split
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)
    max_pixels: int = DEFAULT_MAX_PIXELS  # larger images are refused as decompression bombs

    @classmethod
    def from_config(cls, cfg, mean=None, std=None) -> Preprocessing:
        """The preprocessing a TrainConfig asks for; mean and std come from its training split."""
        pre = cls(cfg.image_size, cfg.crop, cfg.contrast, max_pixels=cfg.max_image_pixels)
        return pre.with_stats(mean, std) if mean is not None else pre

    def with_stats(self, mean, std) -> Preprocessing:
        return replace(self, mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        d = dict(d)
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        return cls(**d)

    def decode(self, path: str | Path, roi=None, csv_size=None) -> tuple[np.ndarray | None, str]:
        """One file -> (S, S, 3) uint8 before contrast normalisation, or (None, reason) if unusable."""
        if self.crop != "roi":
            roi = csv_size = None
        return decode_image(path, self.image_size, roi, csv_size, self.max_pixels)

    def decode_array(self, image) -> np.ndarray:
        """An image already in memory (a PIL image of any mode, or an (H, W, 3|4) / (H, W) uint8 array) ->
        (S, S, 3) uint8 before contrast normalisation: the whole frame, resized as `decode` resizes."""
        from PIL import Image

        from signlab.data import crop_resize, to_rgb_array

        if isinstance(image, np.ndarray):
            image = Image.fromarray(np.ascontiguousarray(image))
        return crop_resize(Image.fromarray(to_rgb_array(image)), self.image_size)

    def load(self, root: str | Path | None, max_bad_fraction: float = 1.0, progress: bool = False) -> ImageSet:
        """A dataset folder decoded as `decode` does it (cached on disk), before contrast normalisation."""
        return load_images(root, self.image_size, self.crop, max_pixels=self.max_pixels,
                           max_bad_fraction=max_bad_fraction, progress=progress)

    def normalize(self, images: np.ndarray) -> np.ndarray:
        """Contrast normalisation of decoded uint8 images (N, S, S, 3)."""
        return normalize_contrast(images, self.contrast)

    def to_tensor(self, images: np.ndarray | torch.Tensor, device: torch.device,
                  channels_last: bool = True) -> torch.Tensor:
        """Normalised uint8 images (B, S, S, 3) -> standardised float (B, 3, S, S) on `device`."""
        x = torch.as_tensor(images).to(device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)  # (B, 3, S, S); NHWC memory, i.e. channels_last already
        mean = torch.tensor(self.mean, device=device).view(1, CHANNELS, 1, 1)
        std = torch.tensor(self.std, device=device).view(1, CHANNELS, 1, 1)
        x = (x - mean) / std
        return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)

    def __call__(self, images: np.ndarray, device: torch.device, channels_last: bool = True) -> torch.Tensor:
        """Decoded uint8 images (B, S, S, 3) -> the model's input (B, 3, S, S): normalize, then to_tensor."""
        return self.to_tensor(self.normalize(images), device, channels_last)
