"""Photometric and geometric perturbations of a sign photo at graded severities (bench/robustness.py).

Each acts on the ORIGINAL frame, (H, W, 3) uint8, and its ROI, (x1, y1, x2, y2) pixel edges on that frame's
grid (x2, y2 exclusive, as signlab.layouts stores them), *before* signlab crops and resizes: a looser crop or a
distant sign needs the pixels around the box. A perturbation is a pure function
(image, roi, severity, rng) -> (image, roi): it never writes into its input, and the same rng seed gives the
same output. The ROI comes back on the returned image's grid.

Sizes are in pixels of a REFERENCE_SIDE-px crop of the ROI and scaled to the ROI's size in the frame, so
"blur 1 px" means the same at the model's input whether the sign is 30 or 200 px wide in the photo.
Light is modelled in linear units (a 2.2 power law stands in for the camera's tone curve): exposure scales
photons, so it must scale linear values, not 8-bit ones. NumPy and Pillow only.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from signlab.synth.render import shift_sum

Roi = tuple[float, float, float, float]
PerturbFn = Callable[[np.ndarray, Roi, float, np.random.Generator], tuple[np.ndarray, Roi]]

REFERENCE_SIDE = 32  # the fast preset's input size: severities read as pixels of that crop
GAMMA = 2.2
FULL_WELL = 1000.0  # photo-electrons at full scale: sets the shot noise a darker exposure reveals
READ_NOISE = 2.0 / FULL_WELL  # in full-scale units (2 electrons)


@dataclass(frozen=True)
class Perturbation:
    name: str
    apply: PerturbFn
    severities: tuple[float, ...]  # mildest first
    unit: str  # what a severity number means, for tables and axes


def roi_side(roi: Roi) -> float:
    """The ROI's size as one length: the geometric mean of its width and height."""
    return math.sqrt(max(roi[2] - roi[0], 1e-6) * max(roi[3] - roi[1], 1e-6))


def _px(roi: Roi, reference_px: float) -> float:
    """A length in pixels of the REFERENCE_SIDE crop, in pixels of the frame."""
    return reference_px * roi_side(roi) / REFERENCE_SIDE


def to_linear(image: np.ndarray) -> np.ndarray:
    return (image.astype(np.float32) / 255.0) ** GAMMA


def to_display(linear: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(linear, 0.0, 1.0) ** (1.0 / GAMMA) * 255.0).astype(np.uint8)


def _taps_blur(image: np.ndarray, offsets: list[tuple[float, float]]) -> np.ndarray:
    """Mean of the image shifted by each offset (bilinear, edges extended): a blur with that kernel."""
    w = 1.0 / len(offsets)
    out = shift_sum(image.astype(np.float32), [(dx, dy, w) for dx, dy in offsets])
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- photometric


def clean(image: np.ndarray, roi: Roi, severity: float, rng: np.random.Generator) -> tuple[np.ndarray, Roi]:
    return image, roi


def gaussian_blur(image: np.ndarray, roi: Roi, sigma: float, rng: np.random.Generator) -> tuple[np.ndarray, Roi]:
    """Gaussian blur, standard deviation `sigma` px of the reference crop (a soft lens, haze)."""
    out = Image.fromarray(image).filter(ImageFilter.GaussianBlur(_px(roi, sigma)))
    return np.asarray(out, dtype=np.uint8), roi


def defocus_blur(image: np.ndarray, roi: Roi, radius: float, rng: np.random.Generator) -> tuple[np.ndarray, Roi]:
    """Out of focus: the mean over a disk of `radius` px of the reference crop."""
    r = _px(roi, radius)
    step = min(0.5, r / 2)  # sub-pixel samples, so a 1.3-px disk is not a 3x3 square
    n = int(math.ceil(r / step))
    offsets = [(i * step, j * step) for i in range(-n, n + 1) for j in range(-n, n + 1)
               if (i * step) ** 2 + (j * step) ** 2 <= r * r]
    return _taps_blur(image, offsets), roi


def motion_blur(image: np.ndarray, roi: Roi, length: float, rng: np.random.Generator) -> tuple[np.ndarray, Roi]:
    """Camera or vehicle motion: the mean along a line `length` px of the reference crop, at a random angle."""
    n = _px(roi, length)
    angle = rng.uniform(0.0, math.pi)
    m = max(2, int(math.ceil(2 * n)) + 1)  # taps every half pixel or closer
    offsets = [((k / (m - 1) - 0.5) * n * math.cos(angle), (k / (m - 1) - 0.5) * n * math.sin(angle))
               for k in range(m)]
    return _taps_blur(image, offsets), roi


def jpeg(image: np.ndarray, roi: Roi, quality: float, rng: np.random.Generator) -> tuple[np.ndarray, Roi]:
    """JPEG at `quality` (Pillow's 1-95 scale, 4:2:0 chroma) of the whole frame, decoded again."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8), roi


def low_light(image: np.ndarray, roi: Roi, exposure: float, rng: np.random.Generator) -> tuple[np.ndarray, Roi]:
    """`exposure` times the light, with the shot and read noise of a sensor that collected that much less."""
    signal = to_linear(image) * np.float32(exposure)
    sigma = np.sqrt(signal / np.float32(FULL_WELL) + np.float32(READ_NOISE**2))
    noisy = signal + sigma * rng.standard_normal(image.shape, dtype=np.float32)
    return to_display(noisy), roi


def overexposure(image: np.ndarray, roi: Roi, gain: float, rng: np.random.Generator) -> tuple[np.ndarray, Roi]:
    """`gain` times the light, clipped at the sensor's full scale (glare, a low sun, a bright sky)."""
    return to_display(to_linear(image) * np.float32(gain)), roi


# ---------------------------------------------------------------- geometric


def scale(image: np.ndarray, roi: Roi, side: float, rng: np.random.Generator) -> tuple[np.ndarray, Roi]:
    """A distant sign: the frame shrunk until the ROI is `side` px (area-averaged, as a sensor does), then
    enlarged back. ROIs already that small are unchanged (no upsampling)."""
    factor = side / roi_side(roi)
    if factor >= 1.0:
        return image, roi
    h, w = image.shape[:2]
    small = Image.fromarray(image).resize((max(1, round(w * factor)), max(1, round(h * factor))),
                                          Image.Resampling.BOX)
    return np.asarray(small.resize((w, h), Image.Resampling.BILINEAR), dtype=np.uint8), roi


def aspect(image: np.ndarray, roi: Roi, ratio: float, rng: np.random.Generator) -> tuple[np.ndarray, Roi]:
    """The sign `ratio` times as wide as its box expects (an oblique view, a box of the wrong shape): the frame
    is stretched horizontally, the box keeps its size and centre. Where the box leaves the narrower frame, the
    frame is mirrored at its edge, so the box is never clipped."""
    h, w = image.shape[:2]
    new_w = max(1, round(w * ratio))
    stretched = np.asarray(Image.fromarray(image).resize((new_w, h), Image.Resampling.BILINEAR), dtype=np.uint8)
    cx = (roi[0] + roi[2]) / 2 * new_w / w
    half = (roi[2] - roi[0]) / 2
    left, right = max(0, math.ceil(half - cx)), max(0, math.ceil(cx + half - new_w))
    if left or right:
        stretched = np.pad(stretched, ((0, 0), (left, right), (0, 0)), mode="symmetric")
    return stretched, (cx - half + left, roi[1], cx + half + left, roi[3])


def crop_tight(image: np.ndarray, roi: Roi, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, Roi]:
    """A box `fraction` narrower and shorter than the ROI, same centre (a detector that cuts the rim)."""
    return image, _resized_box(roi, 1.0 - fraction)


def crop_loose(image: np.ndarray, roi: Roi, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, Roi]:
    """A box `fraction` wider and taller than the ROI, same centre, clipped to the frame (a detector with
    margin). GTSRB's frames hold little beyond the ROI, so the clip is often what limits it."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = _resized_box(roi, 1.0 + fraction)
    return image, (max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2))


def _resized_box(roi: Roi, factor: float) -> Roi:
    cx, cy = (roi[0] + roi[2]) / 2, (roi[1] + roi[3]) / 2
    hw, hh = (roi[2] - roi[0]) * factor / 2, (roi[3] - roi[1]) * factor / 2
    return (cx - hw, cy - hh, cx + hw, cy + hh)


def rotation(image: np.ndarray, roi: Roi, degrees: float, rng: np.random.Generator) -> tuple[np.ndarray, Roi]:
    """The frame rotated by `degrees` either way (rng) about the ROI's centre; the box stays. The frame is
    mirrored at its edges first, so the box's corners never show an empty fill."""
    h, w = image.shape[:2]
    angle = degrees * (1 if rng.random() < 0.5 else -1)
    pad = math.ceil(math.hypot(roi[2] - roi[0], roi[3] - roi[1]) / 2)
    padded = Image.fromarray(np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="symmetric"))
    centre = ((roi[0] + roi[2]) / 2 + pad, (roi[1] + roi[3]) / 2 + pad)
    turned = padded.rotate(angle, Image.Resampling.BILINEAR, center=centre)
    return np.asarray(turned, dtype=np.uint8)[pad:pad + h, pad:pad + w], roi


PERTURBATIONS: dict[str, Perturbation] = {p.name: p for p in (
    Perturbation("clean", clean, (0,), ""),
    Perturbation("gaussian blur", gaussian_blur, (0.5, 1.0, 1.5, 2.0), "sigma px"),
    Perturbation("defocus blur", defocus_blur, (1.0, 2.0, 3.0, 4.0), "radius px"),
    Perturbation("motion blur", motion_blur, (2.0, 4.0, 6.0, 8.0), "length px"),
    Perturbation("jpeg", jpeg, (90, 50, 20, 10), "quality"),
    Perturbation("low light", low_light, (0.5, 0.25, 0.1), "exposure x"),
    Perturbation("overexposure", overexposure, (2.0, 3.0, 4.0), "exposure x"),
    Perturbation("scale", scale, (24, 16, 12, 8), "ROI side px"),
    Perturbation("aspect", aspect, (0.75, 1.33), "width x"),
    Perturbation("crop tight", crop_tight, (0.1, 0.2, 0.3), "box shrunk by"),
    Perturbation("crop loose", crop_loose, (0.25, 0.5), "box grown by"),
    Perturbation("rotation", rotation, (5, 10, 20, 30), "degrees"),
)}
