"""Synthetic road scenes in GTSDB's layout: procedural backgrounds, signlab's drawn signs and sign-like things.

    OUT/00000.jpg ...   the scenes (or .png / .ppm)
    OUT/gt.txt          Filename;x1;y1;x2;y2;ClassId per pasted sign, inclusive corners, as GTSDB's

A scene is sky, roadside (trees or buildings) and a road running to a vanishing point (signlab.synth.scene's
textures, drawn at half resolution: they are out of focus anyway), with cars and poles drawn sharp on top.
Signs are signlab's pictograms, each turned in perspective, lit, perhaps faded and blurred, on a post; they
never overlap each other or the distractors: solid discs, no-parking and parking signs, plates, barrier
boards and tail lights, shapes and colours a detector must learn to tell from the 43 classes. Last the
camera: sensor noise and JPEG. Every scene draws from its own generators seeded by (seed, index, part), so
a scene's bytes depend on nothing else; the background and distractors do not depend on the signs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from signlab.detection.scenes import GT_FILE
from signlab.errors import UserError
from signlab.synth.glyphs import draw_text
from signlab.synth.pen import BLACK, BLUE, GREEN, RED, WHITE, YELLOW, Pen
from signlab.synth.render import _perspective_coeffs, _quad, fade_sign, streams
from signlab.synth.scene import _on, _uniform, draw_post, noise, post_spec, texture

NUM_CLASSES = 43
FORMATS = ("jpg", "png", "ppm")
DISTRACTORS = (0, 4)  # sign-like things per scene, inclusive
MIN_SCENE_SIDE = 32
Box = tuple[int, int, int, int]  # x1, y1, x2, y2, inclusive
_OPAQUE = [0] * 64 + [255] * 192  # a pasted thing's box holds its pixels of alpha >= 64 (a quarter covered)


@lru_cache(maxsize=256)
def pictogram(class_id: int, work: int) -> Image.Image:
    from signlab.synth.pictograms import draw_sign  # lazily: drawing code loads only when scenes are made

    return draw_sign(class_id, work)


# ---------------------------------------------------------------- background


def _background(g: np.random.Generator, w: int, h: int) -> tuple[Image.Image, int]:
    """Sky, roadside and a road to a vanishing point, at half resolution scaled up; and the horizon's row."""
    sw, sh = max(16, w // 2), max(16, h // 2)
    horizon = int(sh * _uniform(g, (0.25, 0.6)))
    canvas = texture(g, sw, sh, "sky")
    top = max(1, int(horizon - sh * _uniform(g, (0.0, 0.35))))  # trees and houses rise above the horizon
    side = texture(g, sw, sh - top, ("foliage", "foliage", "building")[int(g.integers(3))])
    edge = top + noise(g, sw, 1, 8)[0] * (horizon - top) * np.float32(0.9)  # (sw,) an uneven skyline
    mask = np.arange(sh - top, dtype=np.float32)[:, None] + top >= edge[None, :]  # (sh - top, sw)
    canvas.paste(side, (0, top), Image.fromarray(mask.astype(np.uint8) * 255))
    road = texture(g, sw, sh - horizon, "road")
    vx, half_top = sw * _uniform(g, (0.3, 0.7)), sw * _uniform(g, (0.01, 0.06))
    left, right = sw * _uniform(g, (-0.4, 0.25)), sw * _uniform(g, (0.75, 1.4))
    shape = Image.new("L", road.size, 0)
    ImageDraw.Draw(shape).polygon([(vx - half_top, 0), (vx + half_top, 0), (right, sh - horizon), (left, sh - horizon)],
                                 fill=255)
    canvas.paste(road, (0, horizon), shape)
    _lane_marks(ImageDraw.Draw(canvas), g, (vx, horizon), (left, right), sh)
    return canvas.resize((w, h), Image.Resampling.BILINEAR), int(horizon * h / sh)


def _lane_marks(draw: ImageDraw.ImageDraw, g: np.random.Generator, vanish: tuple[float, float],
                bottom: tuple[float, float], sh: int) -> None:
    """White edge lines and a dashed centre line, narrowing towards the vanishing point."""
    vx, vy = vanish
    white = int(g.integers(170, 240))
    for t, dashed in ((0.06, False), (0.5, True), (0.94, False)):
        if _on(g, 0.3):
            continue
        bx = bottom[0] + t * (bottom[1] - bottom[0])
        steps = 12 if dashed else 1
        for i in range(0, steps, 2 if dashed else 1):
            a, b = (i / steps) ** 2, ((i + 1) / steps) ** 2  # dashes shorten with distance
            y0, y1 = vy + a * (sh - vy), vy + b * (sh - vy)
            x0, x1 = vx + a * (bx - vx), vx + b * (bx - vx)
            wa, wb = 0.5 + a * 0.012 * sh, 0.5 + b * 0.012 * sh
            draw.polygon([(x0 - wa, y0), (x0 + wa, y0), (x1 + wb, y1), (x1 - wb, y1)], fill=(white,) * 3)


def _clutter(draw: ImageDraw.ImageDraw, g: np.random.Generator, w: int, h: int, horizon: int) -> None:
    """Sharp things that are not signs: poles and lamp posts, cars with their tail lights."""
    for _ in range(int(g.integers(0, 4))):
        x, pw = _uniform(g, (0, w)), max(1.0, _uniform(g, (0.002, 0.012)) * w)
        grey = int(g.integers(50, 180))
        draw.rectangle((x, _uniform(g, (0, horizon)), x + pw, h), fill=(grey, grey, grey + 5))
    for _ in range(int(g.integers(0, 3))):
        cw = _uniform(g, (0.05, 0.2)) * w
        ch, cx = cw * _uniform(g, (0.6, 0.9)), _uniform(g, (0, w - cw))
        cy = horizon + _uniform(g, (0.0, 0.6)) * (h - horizon) - ch
        body = tuple(int(v) for v in g.integers(20, 220, 3))
        draw.rounded_rectangle((cx, cy, cx + cw, cy + ch), radius=cw * 0.1, fill=body)
        draw.rectangle((cx + cw * 0.1, cy + ch * 0.08, cx + cw * 0.9, cy + ch * 0.4), fill=(40, 45, 55))
        lw = cw * 0.13
        for lx in (cx + cw * 0.06, cx + cw * 0.94 - lw):
            draw.rectangle((lx, cy + ch * 0.5, lx + lw, cy + ch * 0.65), fill=(200, 25, 25))


# ---------------------------------------------------------------- distractors: sign-like, but not a GTSRB sign


def _disc(pen: Pen, g: np.random.Generator) -> None:
    colours = (RED, BLUE, (245, 140, 0), YELLOW, GREEN, (150, 20, 25))
    pen.disc(0.5, 0.5, 0.5, colours[int(g.integers(len(colours)))])
    if _on(g, 0.5):
        pen.disc(0.5, 0.5, _uniform(g, (0.1, 0.35)), colours[int(g.integers(len(colours)))])


def _no_parking(pen: Pen, g: np.random.Generator) -> None:
    """Red ring, blue field, a red slash (no parking) or cross (no stopping): German, but not in GTSRB."""
    pen.disc(0.5, 0.5, 0.5, WHITE)
    pen.disc(0.5, 0.5, 0.485, RED)
    pen.disc(0.5, 0.5, 0.4, BLUE)
    pen.stroke([(0.22, 0.22), (0.78, 0.78)], 0.11, RED)
    if _on(g, 0.5):
        pen.stroke([(0.78, 0.22), (0.22, 0.78)], 0.11, RED)


def _parking(pen: Pen, g: np.random.Generator) -> None:
    pen.rect(0.0, 0.0, 1.0, 1.0, WHITE, radius=0.08)
    pen.rect(0.03, 0.03, 0.97, 0.97, BLUE, radius=0.06)
    draw_text(pen, "P", 0.5, 0.5, 0.7, WHITE)


def _plate(pen: Pen, g: np.random.Generator) -> None:
    """A direction or town plate: a flat rectangle with a rim and lines of 'text'."""
    fill, ink = [(YELLOW, BLACK), (WHITE, BLACK), (GREEN, WHITE), (BLUE, WHITE), ((120, 70, 30), WHITE)][
        int(g.integers(5))]
    ph = _uniform(g, (0.35, 0.7))
    top = (1 - ph) / 2
    pen.rect(0.0, top, 1.0, top + ph, ink, radius=0.03)
    pen.rect(0.03, top + 0.03, 0.97, top + ph - 0.03, fill, radius=0.02)
    lines = int(g.integers(1, 3))
    for i in range(lines):
        y = top + ph * (i + 0.5) / lines
        x = 0.12
        while x < 0.8:
            word = _uniform(g, (0.08, 0.3))
            pen.rect(x, y - 0.05, min(x + word, 0.88), y + 0.05, ink)
            x += word + 0.06


def _barrier(pen: Pen, g: np.random.Generator) -> None:
    """A red and white barrier board (stripes), upright or across."""
    upright = _on(g, 0.5)
    x0, y0, x1, y1 = (0.3, 0.0, 0.7, 1.0) if upright else (0.0, 0.3, 1.0, 0.7)
    pen.rect(x0, y0, x1, y1, WHITE)
    for i in range(0, 6, 2):
        a, b = i / 6, (i + 1) / 6
        if upright:
            pen.polygon([(x0, a), (x1, a + 0.1), (x1, b + 0.1), (x0, b)], RED)
        else:
            pen.polygon([(a, y0), (b, y0), (b + 0.1, y1), (a + 0.1, y1)], RED)


def _tail_lights(pen: Pen, g: np.random.Generator) -> None:
    pen.rect(0.0, 0.25, 1.0, 0.75, tuple(int(v) for v in g.integers(20, 120, 3)), radius=0.05)
    for x in (0.05, 0.75):
        pen.rect(x, 0.4, x + 0.2, 0.55, (220, 20, 20), radius=0.03)


DRAW_DISTRACTOR: tuple[Callable[[Pen, np.random.Generator], None], ...] = (
    _disc, _disc, _no_parking, _parking, _plate, _barrier, _tail_lights)


def _distractor(g: np.random.Generator, n: int) -> Image.Image:
    """An n x n RGBA sign-like thing, drawn at 2x and scaled down like the pictograms."""
    canvas = Image.new("RGBA", (2 * n, 2 * n), (0, 0, 0, 0))
    DRAW_DISTRACTOR[int(g.integers(len(DRAW_DISTRACTOR)))](Pen(ImageDraw.Draw(canvas), 2 * n), g)
    return canvas.resize((n, n), Image.Resampling.LANCZOS)


# ---------------------------------------------------------------- one pasted object (a sign or a distractor)


def _side(g: np.random.Generator, sign_px: tuple[int, int]) -> int:
    """A side in px, log-uniform in sign_px: as many signs from 16 to 32 px as from 32 to 64 (GTSDB: a third
    of its signs are narrower than 32 px)."""
    lo, hi = sign_px
    return int(round(math.exp(_uniform(g, (math.log(lo), math.log(hi + 0.5))))))


def _turned(g: np.random.Generator, image: Image.Image, side: int) -> Image.Image:
    """The RGBA image as a camera sees it at `side` px: turned in perspective and rotated (drawn at 2x)."""
    n = 2 * side
    yaw, pitch, roll = (_uniform(g, (-30, 30)), _uniform(g, (-10, 10)), float(g.normal(0, 3)))
    if _on(g, 0.4):
        yaw, pitch = 0.0, 0.0  # facing the car
    quad = _quad(n, yaw, pitch, roll)
    x0, y0 = math.floor(min(p[0] for p in quad)) - 2, math.floor(min(p[1] for p in quad)) - 2
    w, h = math.ceil(max(p[0] for p in quad)) + 2 - x0, math.ceil(max(p[1] for p in quad)) + 2 - y0
    w, h = w + w % 2, h + h % 2
    coeffs = _perspective_coeffs([(x - x0, y - y0) for x, y in quad], [(0, 0), (n, 0), (n, n), (0, n)])
    if image.size != (n, n):
        image = image.resize((n, n), Image.Resampling.LANCZOS)
    return image.transform((w, h), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR).reduce(2)


def _lit(g: np.random.Generator, layer: Image.Image, gain: float) -> Image.Image:
    """Exposure and focus: scaled RGB, sometimes a blur (the alpha too, so edges soften as in a photo)."""
    a = np.asarray(layer, dtype=np.float32)
    rgb = np.clip(a[..., :3] * np.float32(gain), 0, 255)
    out = Image.fromarray(np.concatenate([rgb, a[..., 3:]], -1).round().astype(np.uint8), "RGBA")
    if _on(g, 0.4):
        out = out.filter(ImageFilter.GaussianBlur(_uniform(g, (0.3, 1.2))))
    return out


def _place(g: np.random.Generator, layer: Image.Image, size: tuple[int, int], taken: list[Box]
           ) -> tuple[int, int, Box] | None:
    """Where to paste a layer so that its box (alpha >= 64) is inside the scene and clear of taken boxes."""
    bbox = layer.getchannel("A").point(_OPAQUE).getbbox()
    if bbox is None:
        return None
    w, h = size
    bx0, by0, bx1, by1 = bbox
    for _ in range(30):
        px = int(g.integers(-bx0, w - bx1 + 1)) if w - bx1 >= -bx0 else None
        py = int(g.integers(-by0, h - by1 + 1)) if h - by1 >= -by0 else None
        if px is None or py is None:
            return None
        box = (px + bx0, py + by0, px + bx1 - 1, py + by1 - 1)
        if all(box[2] + 2 < t[0] or t[2] + 2 < box[0] or box[3] + 2 < t[1] or t[3] + 2 < box[1] for t in taken):
            return px, py, box
    return None


def _paste_all(g: np.random.Generator, scene: Image.Image, layers: list[Image.Image], taken: list[Box]
               ) -> list[Box | None]:
    """Paste layers where they fit, most on a post (posts first, so no post crosses another's sign); each
    one's box, or None where it found no free place."""
    placed: list[tuple[Image.Image, tuple[int, int, Box]] | None] = []
    for layer in layers:
        spot = _place(g, layer, scene.size, taken)
        if spot:
            taken.append(spot[2])
        placed.append((layer, spot) if spot else None)
    draw = ImageDraw.Draw(scene)
    for item in placed:
        if item and _on(g, 0.6):
            _, (_, _, (x1, y1, x2, y2)) = item
            draw_post(draw, post_spec(g), (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1 + 1, scene.height)
    for item in placed:
        if item:
            layer, (px, py, _) = item
            scene.paste(layer, (px, py), layer)
    return [item[1][2] if item else None for item in placed]


# ---------------------------------------------------------------- scenes


def _camera(g: np.random.Generator, scene: Image.Image, gain: float) -> Image.Image:
    """Exposure (a lookup table) and sensor noise: grain shared by the channels, in whole grey levels."""
    scene = scene.point([min(255, round(v * gain)) for v in range(256)] * 3)
    grain = g.standard_normal((scene.height, scene.width, 1), dtype=np.float32)  # (H, W, 1)
    grain = np.rint(grain * np.float32(_uniform(g, (1.0, 4.0)))).astype(np.int16)
    a = np.asarray(scene, dtype=np.int16) + grain  # (H, W, 3)
    return Image.fromarray(np.clip(a, 0, 255, out=a).astype(np.uint8))


def draw_scene(seed: int, index: int, size: tuple[int, int], signs: tuple[int, int], sign_px: tuple[int, int],
               classes: Sequence[int]) -> tuple[Image.Image, list[tuple[Box, int]]]:
    """Scene `index` of `seed`: the RGB image and its signs' (box, class id)."""
    s = streams(np.random.default_rng([seed, index]))
    w, h = size
    scene, horizon = _background(s("background"), w, h)
    g = s("clutter")
    _clutter(ImageDraw.Draw(scene), g, w, h, horizon)
    gain = _uniform(g, (0.45, 1.1))  # the whole scene's exposure, applied last by _camera
    hi = max(8, min(sign_px[1], int(0.8 * min(w, h))))
    px = (min(sign_px[0], hi), hi)
    taken: list[Box] = []
    g = s("distractors")
    things = [_lit(g, _turned(g, _distractor(g, 2 * (side := _side(g, px))), side), _uniform(g, (0.8, 1.4)))
              for _ in range(int(g.integers(DISTRACTORS[0], DISTRACTORS[1] + 1)))]
    _paste_all(g, scene, things, taken)
    g = s("signs")
    ids = [int(classes[int(g.integers(len(classes)))]) for _ in range(int(g.integers(signs[0], signs[1] + 1)))]
    layers = []
    for class_id in ids:
        side = _side(g, px)
        picto = pictogram(class_id, 32 if side <= 16 else 64 if side <= 32 else 128 if side <= 64 else 256)
        if _on(g, 0.15):
            picto = fade_sign(picto, g, _uniform(g, (0.2, 0.7)))
        layers.append(_lit(g, _turned(g, picto, side), _uniform(g, (0.9, 1.6))))  # signs reflect light well
    boxes = _paste_all(g, scene, layers, taken)
    scene = _camera(s("camera"), scene, gain)
    return scene, [(box, c) for box, c in zip(boxes, ids, strict=True) if box is not None]


def _check(count: int, size: tuple[int, int], signs: tuple[int, int], sign_px: tuple[int, int],
           classes: list[int], image_format: str) -> None:
    if count < 1:
        raise UserError(f"--scenes {count}: must be at least 1")
    if min(size) < MIN_SCENE_SIDE:
        raise UserError(f"--scene-size {size[0]}x{size[1]}: each side must be at least {MIN_SCENE_SIDE} px")
    if not 0 <= signs[0] <= signs[1]:
        raise UserError(f"signs {signs}: need 0 <= fewest <= most signs a scene")
    if not 8 <= sign_px[0] <= sign_px[1]:
        raise UserError(f"sign_px {sign_px}: need 8 <= smallest <= largest sign side (px)")
    if not classes or any(not 0 <= c < NUM_CLASSES for c in classes):
        raise UserError(f"--classes {','.join(map(str, classes))}: class ids must be in 0..{NUM_CLASSES - 1}")
    if image_format not in FORMATS:
        raise UserError(f"image format {image_format!r}: use one of {', '.join(FORMATS)}")


def write_synthetic_scenes(out: str | Path, count: int, seed: int = 0, size: tuple[int, int] = (1360, 800),
                           signs: tuple[int, int] = (0, 4), sign_px: tuple[int, int] = (16, 128),
                           classes: Sequence[int] = range(NUM_CLASSES), image_format: str = "jpg") -> Path:
    """Write `count` scenes (size = (width, height)) and gt.txt into OUT, a new or empty folder; returns OUT.

    signs: fewest and most signs a scene (inclusive; a sign that finds no free place is left out, so a small
    scene may hold fewer); sign_px: their sides before turning, log-uniform. The same arguments write the same
    bytes (given the same NumPy and Pillow)."""
    out, classes = Path(out), list(classes)
    _check(count, size, signs, sign_px, classes, image_format)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out}: already holds files; pass a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(count):
        scene, found = draw_scene(seed, i, size, signs, sign_px, classes)
        name = f"{i:05d}.{image_format}"
        options = {"quality": 75 + int(np.random.default_rng([seed, i, 1]).integers(0, 21))} \
            if image_format == "jpg" else {}
        scene.save(out / name, **options)
        lines += [f"{name};{x1};{y1};{x2};{y2};{c}\n" for (x1, y1, x2, y2), c in found]
    (out / GT_FILE).write_text("".join(lines))
    return out
