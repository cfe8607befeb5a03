"""Copy-paste augmentation for the sign finder (`signlab train --task detect --paste P`): more signs per crop.

GTSDB has some 770 training signs; GTSRB has 39,209 sign crops. A bank holds sign patches (RGBA uint8, alpha
the sign's shape, so no rectangle of foreign background comes along) from a GTSRB training folder
(--paste-from), or signlab's own drawn signs (--paste-from drawn, or without a folder). Training pastes 1-3 of
them into a crop at free places, sized, blurred and lit to match the scene around them: dark scenes get dark
signs, and backlit, dim signs (the finder's misses on GTSDB) are drawn often. Every random draw comes from the
caller's generator, so exact resume stays bit-identical.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from signlab.detection.boxes import CATEGORIES, category_of
from signlab.errors import UserError
from signlab.synth.pictograms import SIGN_SHAPES

PER_CLASS = 60  # GTSRB images per class in the bank
MAX_PATCH = 128  # a patch's longer side: the largest pasted sign
SIDES = (12, 128)  # pasted sign widths in crop pixels, log-uniform
ASPECT_JITTER = 0.1
DRAWN_SIGNS = "drawn"  # --paste-from's name for signlab's drawn signs, in place of a folder
GAIN = (0.35, 1.3)  # random exposure of a pasted sign: dim and backlit signs are the finder's misses
MARGIN = 2  # px kept clear between boxes; also the blur's room around a patch
LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_OCT = 1 / (2 + math.sqrt(2))  # a regular octagon's corner cut, as a share of its side
# Convex shapes inscribed in the unit square (x right, y down), clockwise on screen.
POLYGONS = {
    "triangle": ((0.5, 0.0), (1.0, 1.0), (0.0, 1.0)),
    "inverted_triangle": ((0.0, 0.0), (1.0, 0.0), (0.5, 1.0)),
    "diamond": ((0.5, 0.0), (1.0, 0.5), (0.5, 1.0), (0.0, 0.5)),
    "octagon": ((_OCT, 0.0), (1 - _OCT, 0.0), (1.0, _OCT), (1.0, 1 - _OCT), (1 - _OCT, 1.0), (_OCT, 1.0),
                (0.0, 1 - _OCT), (0.0, _OCT)),
}


@lru_cache(maxsize=64)
def shape_mask(shape: str, width: int, height: int) -> np.ndarray:
    """(height, width) float32 coverage in [0, 1] of the shape inscribed in the box, anti-aliased over about
    one pixel: alpha = 0.5 - signed distance (px) of each pixel's centre to the outline. Read-only (cached)."""
    x = (np.arange(width, dtype=np.float32) + 0.5)[None, :]  # (1, W)
    y = (np.arange(height, dtype=np.float32) + 0.5)[:, None]  # (H, 1)
    if shape == "circle":  # the ellipse's normalised radius, in pixels of its shorter half-axis
        r = np.sqrt(((x - width / 2) / (width / 2)) ** 2 + ((y - height / 2) / (height / 2)) ** 2)
        distance = (r - 1) * (min(width, height) / 2)
    else:
        corners = [(cx * width, cy * height) for cx, cy in POLYGONS[shape]]
        distance = np.full((height, width), -np.inf, np.float32)
        for (x0, y0), (x1, y1) in zip(corners, corners[1:] + corners[:1], strict=True):
            nx, ny = y1 - y0, x0 - x1  # the outward normal of a clockwise edge (y down)
            norm = math.hypot(nx, ny)
            distance = np.maximum(distance, ((x - x0) * nx + (y - y0) * ny) / norm)
    mask = np.clip(0.5 - distance, 0, 1).astype(np.float32)
    mask.flags.writeable = False
    return mask


@dataclass
class SignBank:
    """Sign patches to paste: patches[i] (h, w, 4) RGBA uint8, the sign filling the patch's box; its class."""

    patches: list[np.ndarray]
    class_ids: np.ndarray  # (n,) int64 GTSRB class ids
    source: str  # where the signs came from, for the log

    def __post_init__(self) -> None:
        self.categories = np.array([CATEGORIES.index(category_of(int(c))) for c in self.class_ids], np.int64)

    def __len__(self) -> int:
        return len(self.patches)

    def describe(self, p: float) -> str:
        return f"paste: {len(self)} signs of {len(set(self.class_ids.tolist()))} classes from {self.source} (p={p})"


def _with_shape(rgb: np.ndarray, class_id: int) -> np.ndarray:
    """An RGB crop of exactly the sign's ROI as RGBA, the class's shape inscribed as alpha."""
    alpha = shape_mask(SIGN_SHAPES[class_id], rgb.shape[1], rgb.shape[0])
    return np.concatenate([rgb, np.rint(alpha * 255).astype(np.uint8)[..., None]], axis=2)


def _pick(entries: list, per_class: int, rng: np.random.Generator) -> list:
    """Up to per_class entries spread over the class's tracks (in a seeded order), the larger frames first:
    a track's later frames are closer to the sign."""
    tracks = defaultdict(list)
    for e in entries:
        tracks[e.track if e.track >= 0 else e.path].append(e)
    keys = sorted(tracks, key=str)
    order = [keys[i] for i in rng.permutation(len(keys))]
    by_size = {k: sorted(tracks[k], key=lambda e: (-e.csv_size[0] * e.csv_size[1], e.path)) for k in order}
    picked = []
    for rank in range(max(map(len, by_size.values()))):
        picked += [by_size[k][rank] for k in order if rank < len(by_size[k])]
    return picked[:per_class]


def gtsrb_bank(folder: str | Path, per_class: int = PER_CLASS, seed: int = 0) -> SignBank:
    """Patches from a GTSRB training folder (Images/000NN/GT-000NN.csv): up to per_class a class, each its ROI
    (scaled by stored size / CSV size), at most MAX_PATCH px, masked by the class's shape."""
    from signlab.data import roi_box, to_rgb_array
    from signlab.layouts import list_entries

    where = f"--paste-from {folder}"
    expected = "give a GTSRB training folder (Images/000NN/GT-000NN.csv)"
    try:
        layout, _, entries, _, _ = list_entries(Path(folder))
    except UserError:
        raise UserError(f"{where}: no GTSRB training images found; {expected}") from None
    if layout != "gtsrb-train":
        raise UserError(f"{where}: not GTSRB's training layout ({layout}); {expected}")
    by_class = defaultdict(list)
    for e in entries:
        by_class[e.label].append(e)
    patches, ids = [], []
    for label in sorted(by_class):
        for e in _pick(by_class[label], per_class, np.random.default_rng([seed, label])):
            try:
                with Image.open(e.path) as im:
                    rgb = Image.fromarray(to_rgb_array(im))
            except (OSError, ValueError, SyntaxError):
                continue  # an unreadable file: one sign fewer
            box = roi_box(rgb.size, e.roi, e.csv_size)
            if box is None:
                continue
            w, h = box[2] - box[0], box[3] - box[1]
            k = min(1.0, MAX_PATCH / max(w, h))
            size = (max(4, round(w * k)), max(4, round(h * k)))
            patch = np.asarray(rgb.resize(size, Image.Resampling.BILINEAR, box=box, reducing_gap=None), np.uint8)
            patches.append(_with_shape(patch, label))
            ids.append(label)
    if not patches:
        raise UserError(f"{where}: none of its images could be read; {expected}")
    return SignBank(patches, np.array(ids, np.int64), str(folder))


def drawn_bank(seed: int = 0, sizes: tuple[int, ...] = (64, 128)) -> SignBank:
    """signlab's drawn signs (signlab.synth.pictograms, as the synthetic scenes draw them): each class at each
    size, cut to its opaque box, and once more at the largest size with sun-faded paint."""
    from signlab.detection.synthetic import pictogram
    from signlab.synth.render import fade_sign

    patches, ids = [], []
    for class_id in range(43):
        g = np.random.default_rng([seed, class_id])
        drawn = [pictogram(class_id, s) for s in sizes]
        drawn.append(fade_sign(drawn[-1], g, float(g.uniform(0.2, 0.6))))
        for im in drawn:
            patches.append(np.asarray(im.crop(im.getchannel("A").point(lambda v: 255 * (v >= 64)).getbbox())))
            ids.append(class_id)
    return SignBank(patches, np.array(ids, np.int64), "signlab's drawn signs")


def gtsrb_folder(paste_from: str | None) -> str | None:
    """The GTSRB folder a run's --paste-from names, or None for the drawn signs (unset or DRAWN_SIGNS)."""
    return None if paste_from == DRAWN_SIGNS else paste_from


def load_bank(paste_from: str | None, seed: int = 0) -> SignBank:
    """The bank a run pastes from: the GTSRB folder's signs, else the drawn ones."""
    folder = gtsrb_folder(paste_from)
    return gtsrb_bank(folder, seed=seed) if folder else drawn_bank(seed)


def _free_spot(rng: np.random.Generator, w: int, h: int, size: int, taken: list) -> tuple[int, int] | None:
    """A top-left corner where a w x h box lies inside the crop, MARGIN px clear of every taken box."""
    for _ in range(20):
        x0, y0 = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
        x1, y1 = x0 + w - 1, y0 + h - 1
        if all(x1 + MARGIN < t[0] or t[2] + MARGIN < x0 or y1 + MARGIN < t[1] or t[3] + MARGIN < y0
               for t in taken):
            return x0, y0
    return None


def _lit(rng: np.random.Generator, rgb: np.ndarray, alpha: np.ndarray, background: np.ndarray) -> np.ndarray:
    """The sign's colours (h, w, 3) float32 as this scene would show them: contrast, then brightness pulled part
    of the way to the local background's (log scale), a random gain, a slight colour cast, sensor noise."""
    weight = alpha.sum() + 1e-6
    mean = (rgb * alpha).sum((0, 1)) / weight  # (3,)
    sign_luma, scene_luma = max(float(mean @ LUMA), 8.0), max(float(background @ LUMA), 8.0)
    pull, contrast, gain = rng.uniform(0.2, 0.7), rng.uniform(0.7, 1.1), rng.uniform(*GAIN)
    cast = (1 + rng.normal(0, 0.04, 3)).astype(np.float32)
    scale = np.float32((scene_luma / sign_luma) ** pull * gain) * cast  # (3,)
    out = (mean + (rgb - mean) * np.float32(contrast)) * scale
    return out + rng.standard_normal((*rgb.shape[:2], 1), dtype=np.float32) * np.float32(rng.uniform(0, 4))


def _paste_one(rng: np.random.Generator, crop: np.ndarray, patch: np.ndarray, x0: int, y0: int, w: int, h: int
               ) -> None:
    """Resize, light, blur (more for small signs) and alpha-blend one patch into crop[y0:y0+h, x0:x0+w], in
    place; the blur spills up to MARGIN px past the box, as a photo's would."""
    size = crop.shape[0]
    sign = np.asarray(Image.fromarray(patch).resize((w, h), Image.Resampling.BILINEAR), np.float32)  # (h, w, 4)
    alpha = sign[..., 3:] / 255
    ax0, ay0 = max(0, x0 - MARGIN), max(0, y0 - MARGIN)
    ax1, ay1 = min(size, x0 + w + MARGIN), min(size, y0 + h + MARGIN)
    area = crop[ay0:ay1, ax0:ax1].astype(np.float32)  # (ah, aw, 3): the box and the blur's room
    rgb = _lit(rng, sign[..., :3], alpha, area.mean((0, 1)))
    layer = np.zeros((*area.shape[:2], 4), np.float32)  # premultiplied, so the blur mixes no hidden colour
    inner = layer[y0 - ay0:y0 - ay0 + h, x0 - ax0:x0 - ax0 + w]
    inner[..., :3], inner[..., 3:] = np.clip(rgb, 0, 255) * alpha, alpha * 255
    sigma = rng.uniform(0, 0.3 + 8 / max(w, h))  # about a pixel for a 12 px sign, a third for 128 px
    if sigma >= 0.25:
        blurred = Image.fromarray(np.rint(layer).astype(np.uint8), "RGBA").filter(ImageFilter.GaussianBlur(sigma))
        layer = np.asarray(blurred, np.float32)
    out = layer[..., :3] + area * (1 - layer[..., 3:] / 255)
    crop[ay0:ay1, ax0:ax1] = np.clip(np.rint(out), 0, 255).astype(np.uint8)


def paste_signs(crop: np.ndarray, boxes: np.ndarray, cats: np.ndarray, bank: SignBank, rng: np.random.Generator,
                taken: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paste 1-3 bank signs into a square crop (S, S, 3) uint8, in place, at free places, each wholly inside it;
    returns the crop and the boxes (inclusive pixel corners, float32) and category indices with the pasted ones
    appended. taken: boxes to keep clear of besides `boxes` (signs only partly in the crop)."""
    size = crop.shape[0]
    occupied = [*map(tuple, boxes), *(map(tuple, taken) if taken is not None else ())]
    new_boxes, new_cats = [], []
    for _ in range(int(rng.integers(1, 4))):
        i = int(rng.integers(len(bank)))
        patch = bank.patches[i]
        side = math.exp(rng.uniform(math.log(SIDES[0]), math.log(SIDES[1])))
        aspect = patch.shape[0] / patch.shape[1] * rng.uniform(1 - ASPECT_JITTER, 1 + ASPECT_JITTER)
        w, h = min(size - 1, round(side)), min(size - 1, round(side * aspect))
        spot = _free_spot(rng, w, h, size, occupied) if min(w, h) >= 4 else None
        if spot is None:
            continue
        x0, y0 = spot
        _paste_one(rng, crop, patch, x0, y0, w, h)
        box = (x0, y0, x0 + w - 1, y0 + h - 1)
        occupied.append(box)
        new_boxes.append(box)
        new_cats.append(bank.categories[i])
    if not new_boxes:
        return crop, boxes, cats
    return (crop, np.concatenate([boxes, np.array(new_boxes, np.float32)]).astype(np.float32),
            np.concatenate([cats, np.array(new_cats, np.int64)]))
