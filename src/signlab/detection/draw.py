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
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
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
    font = _font(max(9, round(height / 60)))
    for (x1, y1, x2, y2), text, category in boxes:
        colour = CATEGORY_COLOURS.get(category, CATEGORY_COLOURS["other"])
        pen.rectangle((x1 - line, y1 - line, x2 + line, y2 + line), outline=colour, width=line)
        left, top, right, bottom = pen.textbbox((0, 0), text, font=font)
        tag_w, tag_h = right - left + 4, bottom - top + 4
        tag_y = y1 - line - tag_h if y1 - line - tag_h >= 0 else y2 + line + 1
        tag_x = min(max(0.0, x1 - line), max(0.0, scene.shape[1] - tag_w))
        pen.rectangle((tag_x, tag_y, tag_x + tag_w - 1, tag_y + tag_h - 1), fill=colour)
        pen.text((tag_x + 2 - left, tag_y + 2 - top), text, fill=(255, 255, 255), font=font)
    return np.asarray(image)


def detection_label(detection: Detection) -> str:
    return f"{GTSRB_CLASS_NAMES[detection.class_id]} {detection.score:.2f}"


def draw_detections(scene: np.ndarray, detections: Sequence[Detection]) -> np.ndarray:
    """The scene with each detection's box and its sign's name and score; the best drawn last, on top."""
    ranked = sorted(detections, key=lambda d: d.score)
    return draw_boxes(scene, [((d.x1, d.y1, d.x2, d.y2), detection_label(d), d.category) for d in ranked])
