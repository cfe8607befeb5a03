"""Boxes and sign names drawn on scenes: what `signlab detect --out` writes, for still scenes and video frames.

Each box takes its category's colour (red prohibitory, blue mandatory, amber danger, green other), with its
label on a filled tag above it (inside the scene when the box touches the top). Sizes follow the scene's
height, so a 1360x800 scene and a small video frame are both readable.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from signlab.classes import GTSRB_CLASS_NAMES
from signlab.detection.boxes import Detection

CATEGORY_COLOURS: dict[str, tuple[int, int, int]] = {
    "prohibitory": (230, 40, 40), "mandatory": (40, 110, 240), "danger": (245, 170, 20), "other": (40, 190, 80)}

# One box to draw: inclusive pixel corners (x1, y1, x2, y2), its label text and its category.
LabelledBox = tuple[tuple[float, float, float, float], str, str]


@lru_cache(maxsize=8)
def label_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: its fixed bitmap font
        return ImageFont.load_default()


def draw_boxes(scene: np.ndarray, boxes: Sequence[LabelledBox]) -> np.ndarray:
    """A copy of the (H, W, 3) uint8 scene with each box outlined and labelled."""
    image = Image.fromarray(np.ascontiguousarray(scene))
    pen = ImageDraw.Draw(image)
    height = scene.shape[0]
    line = max(1, round(height / 400))
    font = label_font(max(9, round(height / 60)))
    for (x1, y1, x2, y2), text, category in boxes:
        colour = CATEGORY_COLOURS.get(category, CATEGORY_COLOURS["other"])
        pen.rectangle((x1 - line, y1 - line, x2 + line, y2 + line), outline=colour, width=line)
        draw_tag(pen, image.size, x1 - line, y1 - line, y2 + line + 1, text, colour, font)
    return np.asarray(image)


def draw_tag(pen: ImageDraw.ImageDraw, size: tuple[int, int], x: float, top: float, bottom: float, text: str,
             colour, font, below: bool = False) -> None:
    """White text on a filled tag of the box's colour: above `top` (or below `bottom` when `below`, or when
    there is no room above), starting at x, kept inside the image of `size` (width, height)."""
    left, text_top, right, text_bottom = pen.textbbox((0, 0), text, font=font)
    w, h = right - left + 4, text_bottom - text_top + 4
    y = bottom if below or top - h < 0 else top - h
    y = min(max(0.0, y), max(0.0, size[1] - h))
    x = min(max(0.0, x), max(0.0, size[0] - w))
    pen.rectangle((x, y, x + w - 1, y + h - 1), fill=colour)
    pen.text((x + 2 - left, y + 2 - text_top), text, fill=(255, 255, 255), font=font)


def detection_label(detection: Detection) -> str:
    return f"{GTSRB_CLASS_NAMES[detection.class_id]} {detection.score:.2f}"


def draw_detections(scene: np.ndarray, detections: Sequence[Detection]) -> np.ndarray:
    """The scene with each detection's box and its sign's name and score; the best drawn last, on top."""
    ranked = sorted(detections, key=lambda d: d.score)
    return draw_boxes(scene, [((d.x1, d.y1, d.x2, d.y2), detection_label(d), d.category) for d in ranked])
