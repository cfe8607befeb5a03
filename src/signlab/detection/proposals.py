"""Sign proposals from colour and shape, without learning: the approach of the IJCNN 2013 GTSDB entries.

Red and blue are enhanced per pixel in normalised RGB (how far a channel stands above the other two, as a
share of the pixel's brightness, so that dusk and sun give similar values; blue-cast scenes are white-balanced
first) and thresholded at a few levels (MSER-like: a sign that touches a red roof at a loose level stands
alone at a stricter one). Each level's
mask is split into connected components at half resolution (2×2 blocks OR-ed: four times fewer pixels to
label, and a thin ring broken by JPEG stays one piece). A component of sign size and aspect is filled
(rows and columns between their outermost pixels: a ring becomes a disc, a broken border still closes) and
compared at 16×16 with filled templates: disc, triangle pointing up, triangle pointing down, and a square,
which no red or blue sign has but cars and windows do. The best fit (IoU) is the score; colour, shape and
how much of the shape is coloured (ring or disc) give the category; colour speckle, which can fill like a
disc, is told from a ring by its sparse outer band. A tall component is also tried as two signs stacked on a
post. Boxes are the components' full-resolution bounding boxes with GTSDB's margin, merged by NMS.

Measured on GTSDB's 600 training scenes by bench/proposals.py (its docstring has the figures).

`ColourShapeFinder.propose` has the signature of signlab.detection.finder's SignFinder, so the stages after
it (crops, classifier) take either.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from signlab.detection.boxes import CATEGORIES, nms
from signlab.errors import UserError

GRID = 16  # side of the templates; components are pooled to it before the shape test
# the priority road's yellow stops short of its white border: about half the sign on GTSDB's scenes, 0.69 on
# signlab's drawings; (1 / 0.55 - 1) / 2 a side
INSET = {"yellow": 0.4}
FILL = (0.1, 0.9)  # the share of its box a sign's component covers at half resolution: rings ~0.4, discs ~0.75


def _templates(n: int = GRID) -> dict[str, np.ndarray]:
    """Filled outlines on an n×n grid sampled at cell centres."""
    c = (np.arange(n) + 0.5) / n  # cell centres in [0, 1]
    y, x = np.meshgrid(c, c, indexing="ij")
    return {"disc": (x - 0.5) ** 2 + (y - 0.5) ** 2 <= 0.25,
            "up": y >= 2 * np.abs(x - 0.5),  # apex at the top centre, base along the bottom edge
            "down": 1 - y >= 2 * np.abs(x - 0.5),
            "diamond": np.abs(x - 0.5) + np.abs(y - 0.5) <= 0.5,
            "square": np.ones((n, n), dtype=bool)}


_TEMPLATES = _templates()
_SHAPES = tuple(_TEMPLATES)
_STACK = np.stack([_TEMPLATES[s] for s in _SHAPES])  # (5, GRID, GRID)
# the outer two cells of each shape: where a sign's ring or border lies, and a blue disc is blue too
_BANDS = np.stack([t & ~ndimage.binary_erosion(t, iterations=2) for t in _STACK])  # (5, GRID, GRID)


def white_balance(scene: np.ndarray, strength: float = 1.0, limit: float = 1.5) -> list[np.ndarray]:
    """Grey-world white balance of a blue-cast scene: each channel scaled towards the scene's mean grey, as three
    (H, W) int16 planes (unscaled when blue does not outweigh red).

    Dusk scenes are blue-cast, and a red ring there has no more red than green or blue until the cast goes
    (on GTSDB's scenes 300-449 it lifts recall from 0.44 to 0.59; balancing warm scenes too cost 0-149 five
    points). strength 0..1 is how much of the correction is applied; limit bounds the gain.
    """
    means = scene[::8, ::8].reshape(-1, 3).mean(axis=0) + 1.0  # (3,) subsampled: the cast, not the detail
    if means[2] < means[0]:  # only a blue cast (dusk, shade) hides red: warm light is left as it is
        strength = 0.0
    gains = np.clip((means.mean() / means) ** strength, 1 / limit, limit)
    planes = []
    for channel, gain in enumerate(gains):
        table = np.clip(np.arange(256) * gain, 0, 255).astype(np.int16)  # a lookup: one gather per pixel
        planes.append(table[scene[..., channel]])
    return planes


def colour_maps(scene: np.ndarray, balance: float = 1.0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-pixel redness and blueness as (excess, brightness) int16 planes (H, W): excess / brightness is
    min(R - G, R - B) / (R + G + B + 30) for red, the same for blue, after white balance (of strength
    balance). Kept as a fraction so that each level is one integer comparison (excess * 100 > level * 100 *
    brightness) instead of a float division per pixel.
    """
    r, g, b = white_balance(scene, balance)
    brightness = r + g + b
    brightness += 30  # near-black pixels are noise, not colour
    red = np.minimum(r - g, r - b)
    blue = np.minimum(b - r, b - g)
    yellow = np.minimum(r - b, g - b) - np.abs(r - g)  # red and green alike, both well above blue
    return {"red": (red * 100, brightness), "blue": (blue * 100, brightness), "yellow": (yellow * 100, brightness)}


@dataclass(frozen=True)
class Candidate:
    """One component that passed the size tests: box (inclusive corners), colour, shape, fit, filled share."""

    box: tuple[int, int, int, int]
    colour: str
    shape: str
    fit: float
    coloured: float  # share of the filled shape that is the colour itself: low for rings, high for discs
    band: float  # share of the shape's outer band that is the colour


def _fill(mask: np.ndarray) -> np.ndarray:
    """Cells between the outermost set cells of their row, or of their column: a ring or a triangle's border
    becomes its filled outline even when broken on one side (where a hole-fill would leave it empty)."""
    def between(m: np.ndarray) -> np.ndarray:  # along axis 1
        first = np.where(m.any(1), m.argmax(1), m.shape[1])[:, None]
        last = (m.shape[1] - 1 - m[:, ::-1].argmax(1))[:, None]
        cols = np.arange(m.shape[1])[None, :]
        return (cols >= first) & (cols <= last)

    return between(mask) | between(mask.T).T


def shape_fit(component: np.ndarray) -> tuple[str, float, float, float]:
    """Best template for a component's mask (h, w) bool: (shape, IoU with it, coloured share of the shape,
    coloured share of its outer band). Colour speckle in dark noisy areas can fill like a disc, but its
    band is as sparse as its middle; a ring's band is full."""
    h, w = component.shape
    rows = (np.arange(GRID) * h) // GRID
    cols = (np.arange(GRID) * w) // GRID
    # max-pooling, not sampling: a 2-px ring of a 20-px sign must not fall between the samples
    pooled = np.logical_or.reduceat(np.logical_or.reduceat(component, rows, axis=0), cols, axis=1)  # (16, 16)
    filled = _fill(pooled)
    inter = (_STACK & filled).sum(axis=(1, 2))
    union = (_STACK | filled).sum(axis=(1, 2))
    iou = inter / np.maximum(union, 1)
    best = int(np.argmax(iou))
    coloured = component.mean() / max(filled.mean(), 1e-6)
    sampled = component[((np.arange(GRID) + 0.5) * h / GRID).astype(np.intp)][
        :, ((np.arange(GRID) + 0.5) * w / GRID).astype(np.intp)]  # (16, 16) at cell centres
    band = sampled[_BANDS[best]].mean()
    return _SHAPES[best], float(iou[best]), float(min(coloured, 1.0)), float(band)


def category_for(colour: str, shape: str, coloured: float) -> str | None:
    """GTSDB category from colour and shape; None for shapes no sign of the 43 classes has in that colour."""
    if colour == "red":
        if shape == "disc":  # a red ring is prohibitory; a red disc (no entry) or octagon (stop) is not
            return "prohibitory" if coloured < 0.7 else "other"
        if shape in ("square", "diamond"):
            return None
        return "danger" if shape == "up" else "other"  # pointing down: give way
    if colour == "blue":
        return "mandatory" if shape == "disc" else None
    return "other" if shape == "diamond" else None  # yellow: the priority road


class ColourShapeFinder:
    """Sign candidates from colour segmentation and shape tests (a SignFinder without weights).

    levels: the thresholds of each colour map; min_size/max_size: the sign's side in pixels (GTSDB: 16-128,
    with slack for a ring's box that falls a pixel inside the sign); max_aspect: the most height/width (or
    width/height) a sign seen at an angle keeps; max_stack: the most height/width of a component tried as two
    signs stacked on a post; min_fit: the least template IoU (the score) a candidate needs at all; min_band:
    the least coloured share of its shape's outer band; margin: the share of a component's side added round
    it (GTSDB's boxes hold a thin margin round the sign); balance: the strength of the white balance (0: off).
    """

    def __init__(self, levels: dict[str, tuple[float, ...]] | None = None, min_size: int = 12,
                 max_size: int = 150, max_aspect: float = 1.6, min_fit: float = 0.6, nms_iou: float = 0.4,
                 margin: float = 0.055, max_stack: float = 2.6, min_band: float = 0.25, balance: float = 1.0):
        self.levels = levels or {"red": (0.06, 0.10, 0.16, 0.25), "blue": (0.07, 0.12, 0.20, 0.30),
                                 "yellow": (0.06, 0.12)}
        self.min_size, self.max_size = min_size, max_size
        self.max_aspect, self.min_fit, self.nms_iou, self.margin = max_aspect, min_fit, nms_iou, margin
        self.max_stack, self.min_band, self.balance = max_stack, min_band, balance

    def candidates(self, scene: np.ndarray) -> list[Candidate]:
        """Every component of every colour level that passes the size, aspect and fit tests."""
        found: list[Candidate] = []
        maps = colour_maps(scene, self.balance)
        for colour, levels in self.levels.items():
            excess, brightness = maps[colour]
            for level in levels:
                found += self._components(excess > brightness * round(100 * level), colour)
        return found

    def _components(self, mask: np.ndarray, colour: str) -> list[Candidate]:
        """Candidates among the connected components of one level's mask (H, W) bool."""
        height, width = mask.shape
        m = np.pad(mask, ((0, height % 2), (0, width % 2)))
        half = m[::2, ::2] | m[1::2, ::2] | m[::2, 1::2] | m[1::2, 1::2]  # (H/2, W/2)
        labels, _ = ndimage.label(half, structure=np.ones((3, 3)))
        # most components are specks: skip them by area before touching their slices in Python
        area = np.bincount(labels.ravel())
        side = self.min_size // 2
        largest = self.max_stack * (self.max_size // 2 + 1) ** 2  # two signs stacked on a post
        plausible = np.flatnonzero((area >= side * side // 4) & (area <= largest))
        objects = ndimage.find_objects(labels)
        found = []
        for index in plausible[plausible > 0]:
            where = objects[index - 1]
            h, w = where[0].stop - where[0].start, where[1].stop - where[1].start
            if 2 * min(h, w) < self.min_size or 2 * w > self.max_size + 2:
                continue
            if h > self.max_stack * w + 1 or w > self.max_aspect * h + 1:
                continue
            if not FILL[0] <= area[index] / (h * w) <= FILL[1]:  # a sign is neither a few specks nor a block
                continue
            y0, x0 = 2 * where[0].start, 2 * where[1].start
            footprint = np.repeat(np.repeat(labels[where] == index, 2, axis=0), 2, axis=1)  # (2h, 2w)
            component = mask[y0:y0 + 2 * h, x0:x0 + 2 * w] & footprint[:height - y0, :width - x0]
            found += self._test(component, y0, x0, colour)
        return found

    def _test(self, component: np.ndarray, y: int, x: int, colour: str) -> list[Candidate]:
        """The component (its mask's top-left at scene pixel (y, x)) as a sign, and, when it is tall, its top
        and bottom as signs: signs stacked on one post (a triangle over a ring) touch and merge."""
        rows, cols = np.flatnonzero(component.any(1)), np.flatnonzero(component.any(0))
        if not len(rows):
            return []
        component = component[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        y, x = y + int(rows[0]), x + int(cols[0])
        h, w = component.shape
        if min(h, w) < self.min_size or w > self.max_size:
            return []
        found = []
        if max(h, w) <= self.max_aspect * min(h, w) and h <= self.max_size:
            shape, fit, coloured, band = shape_fit(component)
            if fit >= self.min_fit and band >= self.min_band and category_for(colour, shape, coloured) is not None:
                found.append(Candidate((x, y, x + w - 1, y + h - 1), colour, shape, fit, coloured, band))
        if 1.25 * w < h <= self.max_stack * w + 1:
            for top, bottom in ((0, round(0.87 * w)), (0, w), (h - w, h)):
                found += self._test(component[top:bottom], y + top, x, colour)
        return found

    def propose(self, scene: np.ndarray, threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """scene (H, W, 3) uint8 RGB -> boxes (N, 4) float inclusive corners, scores (N,), categories (N,) long.

        After NMS, highest score first, only scores >= threshold (the SignFinder contract). The score is the shape
        fit, so nothing under min_fit (0.6) comes back, whatever the threshold.
        """
        if not (isinstance(scene, np.ndarray) and scene.ndim == 3 and scene.shape[2] == 3
                and scene.dtype == np.uint8):
            got = getattr(scene, "shape", type(scene).__name__)
            raise UserError(f"colour proposals need an (H, W, 3) uint8 RGB scene, got {got}")
        found = [c for c in self.candidates(scene) if c.fit >= threshold]
        if not found:
            return torch.zeros((0, 4)), torch.zeros(0), torch.zeros(0, dtype=torch.long)
        boxes = torch.tensor([c.box for c in found], dtype=torch.float32)  # (N, 4)
        # GTSDB's boxes hold a thin margin round the sign (about 5 % of its side): the colour stops short of it;
        # the priority road's yellow stops short of its white border too
        share = torch.tensor([self.margin + INSET.get(c.colour, 0.0) for c in found])  # (N,)
        pad = share[:, None] * (boxes[:, 2:] - boxes[:, :2] + 1)  # (N, 2)
        high = torch.tensor([scene.shape[1] - 1, scene.shape[0] - 1], dtype=torch.float32)
        boxes = torch.cat([(boxes[:, :2] - pad).clamp(min=0), torch.minimum(boxes[:, 2:] + pad, high)], 1)
        scores = torch.tensor([c.fit for c in found], dtype=torch.float32)  # (N,)
        categories = torch.tensor([CATEGORIES.index(category_for(c.colour, c.shape, c.coloured)) for c in found],
                                  dtype=torch.long)
        keep = nms(boxes, scores, self.nms_iou)
        return boxes[keep], scores[keep], categories[keep]
