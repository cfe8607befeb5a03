"""What stands around a drawn sign: its background (a procedural texture or a crop of a scene photo), its post
and plate, and whatever stands in front of it.

Apart from render.py because none of it is about the camera or the sign's own paint: it is the world the sign
stands in, drawn from the random streams render.py hands it. The same determinism rules hold here: per-pixel
maths is + - * / and clipping only, so the bytes are the same on every CPU.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


# render.py draws its effects with these two as well; they live here so that scene.py needs nothing from it.
def _on(g: np.random.Generator, p: float) -> bool:
    return bool(g.random() < p)  # always one draw, so the stream's later draws do not depend on p


def _uniform(g: np.random.Generator, lo_hi) -> float:
    return float(g.uniform(*lo_hi))


# ---------------------------------------------------------------- per-track choices


def occluder_spec(g: np.random.Generator, cover: tuple[float, float]) -> dict:
    """What stands in front of the sign (see draw_occluder); cover: how far it reaches in (sign sides)."""
    kind = ("branch", "pole", "object")[int(g.integers(3))]
    return {"kind": kind, "cover": _uniform(g, cover), "angle": _uniform(g, (0, 2 * math.pi)),
            "tilt": _uniform(g, (-0.15, 0.15)), "size": _uniform(g, (0.5, 1.1)), "seed": int(g.integers(2**31))}


def post_spec(g: np.random.Generator) -> dict:
    """The sign's post and perhaps a plate below it (see draw_post)."""
    return {"width": _uniform(g, (0.05, 0.1)), "grey": int(g.integers(70, 190)), "up": _on(g, 0.2),
            "plate": _on(g, 0.35), "plate_w": _uniform(g, (0.6, 1.0)), "plate_h": _uniform(g, (0.2, 0.45)),
            "seed": int(g.integers(2**31))}


# ---------------------------------------------------------------- backgrounds


def scene_crop(g: np.random.Generator, scene: np.ndarray, side: int) -> Image.Image:
    """A square crop of a scene photo (a sign's surroundings: 5 to 40 % of the photo's shorter side)."""
    scene = scene if scene.ndim == 3 else np.repeat(scene[..., None], 3, -1)  # greyscale photos too
    h, w = scene.shape[:2]
    c = min(h, w, max(8, round(_uniform(g, (0.05, 0.4)) * min(h, w))))
    x, y = int(g.integers(0, w - c + 1)), int(g.integers(0, h - c + 1))
    crop = Image.fromarray(np.ascontiguousarray(scene[y:y + c, x:x + c, :3]))
    return crop.resize((side, side), Image.Resampling.BILINEAR)


def noise(g: np.random.Generator, w: int, h: int, cells: int) -> np.ndarray:
    """Smooth value noise in [0, 1]: a cells x cells grid of random values, upsampled bicubically."""
    small = Image.fromarray(g.random((cells, cells), dtype=np.float32), "F")
    return np.clip(np.asarray(small.resize((w, h), Image.Resampling.BICUBIC)), 0, 1)


def _colour(g: np.random.Generator, lo, hi) -> np.ndarray:
    return np.array([g.uniform(a, b) for a, b in zip(lo, hi, strict=True)], np.float32)


TEXTURES = ("sky", "foliage", "building", "road", "split")


def texture(g: np.random.Generator, w: int, h: int, kind: str | None = None) -> Image.Image:
    """A procedural background: sky, foliage, a building, road, or sky above one of the others; out of focus.
    kind: one of TEXTURES, else drawn at random (the draws are the same as before kind existed)."""
    if kind is None:
        kind = ("sky", "foliage", "foliage", "building", "road", "split", "split")[int(g.integers(7))]
    elif kind not in TEXTURES:
        raise ValueError(f"unknown texture {kind!r}; use one of {', '.join(TEXTURES)}")
    if kind == "split":
        below = ("foliage", "foliage", "building", "road")[int(g.integers(4))]
        horizon = int(h * _uniform(g, (0.2, 0.8)))
        a = np.concatenate([_texture(g, "sky", w, h)[:horizon], _texture(g, below, w, h)[horizon:]])
    else:
        a = _texture(g, kind, w, h)
    a = a * np.float32(_uniform(g, (0.35, 1.15)))  # the scene is often darker than the sign facing the car
    im = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))
    return im.filter(ImageFilter.GaussianBlur(_uniform(g, (0.0, 2.5))))  # farther than the sign: less sharp


def _texture(g: np.random.Generator, kind: str, w: int, h: int) -> np.ndarray:
    if kind == "sky":  # blue, overcast or dusk, lighter towards the horizon, clouds
        top = _colour(g, *[((60, 110, 180), (130, 170, 245)), ((150, 150, 155), (230, 230, 235)),
                           ((15, 15, 30), (70, 60, 80))][int(g.integers(3))])
        t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
        a = top + t * np.float32(_uniform(g, (0.1, 0.5))) * (235 - top) + np.zeros((1, w, 1), np.float32)
        clouds = np.clip(noise(g, w, h, 4) * 2 - _uniform(g, (0.8, 1.6)), 0, 1)[..., None]
        return a + clouds * (np.float32(230) - a)
    if kind == "foliage":  # leaves in light and shade, bits of sky between them
        leaf = _colour(g, *[((40, 70, 15), (110, 140, 60)), ((90, 70, 20), (170, 120, 50))][int(g.random() < 0.2)])
        n = 0.5 * noise(g, w, h, 4) + 0.3 * noise(g, w, h, 11) + 0.2 * noise(g, w, h, max(8, w // 5))
        a = n[..., None] * n[..., None] * np.float32(1.6) * leaf
        gaps = np.clip((noise(g, w, h, max(6, w // 10)) - _uniform(g, (0.7, 1.0))) * 8, 0, 1)[..., None]
        return a + gaps * (np.float32(_uniform(g, (120, 240))) - a)
    if kind == "building":  # a wall and a few windows
        a = np.broadcast_to(_colour(g, (110, 95, 80), (225, 210, 195)), (h, w, 3)).copy()
        a *= (0.85 + 0.15 * noise(g, w, h, 9))[..., None]
        step = int(g.integers(max(8, w // 4), max(9, w // 2)))
        ww, wh = int(step * _uniform(g, (0.35, 0.6))), int(step * _uniform(g, (0.4, 0.7)))
        ox, oy = int(g.integers(step)) - step, int(g.integers(step)) - step
        for y in range(oy, h, step):
            for x in range(ox, w, step):
                glass = _colour(g, (20, 25, 35), (90, 100, 120))
                a[max(y, 0):max(y + wh, 0), max(x, 0):max(x + ww, 0)] = glass
        return a
    asphalt = np.float32(_uniform(g, (60, 130)))  # road: grey, grainy, maybe a white line
    a = asphalt * (0.8 + 0.2 * noise(g, w, h, 6) + 0.15 * g.random((h, w), dtype=np.float32))[..., None]
    a = np.repeat(a, 3, -1)
    if _on(g, 0.5):
        x = int(g.integers(w))
        a[:, x:x + max(2, w // 20)] = 220
    return a


# ---------------------------------------------------------------- post, plate and occluder, drawn per frame


def draw_post(draw: ImageDraw.ImageDraw, post: dict, cx: float, cy: float, n: float, h: int) -> None:
    """The sign's post behind it (down, or up to the sign above), and perhaps a plate under the sign."""
    half, grey = post["width"] * n / 2, post["grey"]
    end = -h if post["up"] else 2 * h
    draw.rectangle((cx - half, cy, cx + half, cy + end) if end > 0 else (cx - half, end, cx + half, cy),
                   fill=(grey, grey, grey + 5))
    if post["plate"] and not post["up"]:
        pw, ph = post["plate_w"] * n / 2, post["plate_h"] * n
        top = cy + 0.55 * n
        draw.rectangle((cx - pw, top, cx + pw, top + ph), fill=(225, 225, 220), outline=(30, 30, 30),
                       width=max(1, round(0.03 * n)))
        rng = np.random.default_rng(post["seed"])  # a line of "text": dark bars
        x = cx - pw * 0.7
        while x < cx + pw * 0.6:
            bar = float(rng.uniform(0.05, 0.2)) * n
            draw.rectangle((x, top + ph * 0.3, min(x + bar, cx + pw * 0.7), top + ph * 0.7), fill=(35, 35, 35))
            x += bar + 0.05 * n


def draw_occluder(draw: ImageDraw.ImageDraw, occ: dict, cx: float, cy: float, n: float, w: int, h: int) -> None:
    """Something in front of the sign, reaching occ["cover"] sign sides into it from the side occ["angle"]."""
    dx, dy = math.cos(occ["angle"]), math.sin(occ["angle"])
    edge = 0.5 - occ["cover"]  # how far from the sign's centre the occluder's inner edge lies (sign sides)
    rng = np.random.default_rng(occ["seed"])
    if occ["kind"] == "pole":  # nearly upright, across the whole frame
        width = float(rng.uniform(0.1, 0.3))
        x = cx + math.copysign(edge + width / 2, dx) * n
        grey = int(rng.integers(50, 170))
        pts = [(x + (ty * occ["tilt"] + sx * width / 2) * n, cy + ty * n)
               for ty, sx in ((-3, -1), (-3, 1), (3, 1), (3, -1))]
        draw.polygon(pts, fill=(grey, grey, grey - 10 if grey > 60 else grey))
    elif occ["kind"] == "object":  # another sign or a plate, overlapping from one side
        r = occ["size"] / 2
        ox, oy = cx + dx * (edge + r) * n, cy + dy * (edge + r) * n
        kind = int(rng.integers(4))  # a red-ringed sign, a blue sign, a white plate, a grey box
        fill = ((235, 235, 230), (30, 70, 170), (230, 230, 225), (95, 100, 100))[kind]
        rim = ((200, 30, 30), (235, 235, 235), (30, 30, 30), (60, 60, 60))[kind]
        box = (ox - r * n, oy - r * n, ox + r * n, oy + r * n)
        shape = draw.ellipse if kind < 2 else draw.rectangle
        shape(box, fill=fill, outline=rim, width=max(1, round((0.2 if kind == 0 else 0.03) * r * n)))
    else:  # a branch from outside the sign into it, with leaves
        x0, y0 = cx + dx * 0.9 * n, cy + dy * 0.9 * n
        x1, y1 = cx + dx * edge * n, cy + dy * edge * n
        bend = float(rng.uniform(-0.15, 0.15)) * n
        mid = ((x0 + x1) / 2 - dy * bend, (y0 + y1) / 2 + dx * bend)
        draw.line([(x0, y0), mid, (x1, y1)], fill=(55, 42, 30), width=max(1, round(float(rng.uniform(0.03, 0.07)) * n)))
        for _ in range(int(rng.integers(4, 10))):
            t, r = float(rng.uniform(0.2, 1.0)), float(rng.uniform(0.05, 0.13)) * n
            lx = x0 + t * (x1 - x0) + float(rng.normal(0, 0.08)) * n
            ly = y0 + t * (y1 - y0) + float(rng.normal(0, 0.08)) * n
            green = (int(rng.integers(30, 90)), int(rng.integers(70, 140)), int(rng.integers(15, 60)))
            draw.ellipse((lx - r, ly - r * 0.6, lx + r, ly + r * 0.6), fill=green)
