"""Photos of drawn traffic signs as GTSRB's camera saw them: scale, viewing angle, weather, light, lens, sensor.

A *track* is one physical sign (its weathering, occlusion, background, light and viewing angle) seen in
frames of growing size as a car approaches: `draw_track` draws what stays fixed, `render_frame` draws one
frame, `render_variant` one image of a fresh track. Each effect draws from its own random stream, so turning
one off (`RenderParams().without("blur")`) leaves every other draw, and so the rest of the image, unchanged:
ablations compare like with like.

Pillow + NumPy only. Per-pixel maths is + - * / sqrt and clipping, which are bit-identical on every CPU; exp,
sin and pow act on scalars or short vectors through `math`, never on images, because NumPy's SIMD versions
differ by ULPs between CPUs and the dataset writer promises the same bytes on every machine.
"""

from __future__ import annotations

import io
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from statistics import NormalDist

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from signlab.synth.scene import (
    _on,
    _uniform,
    draw_occluder,
    draw_post,
    noise,
    occluder_spec,
    post_spec,
    scene_crop,
    texture,
)

Roi = tuple[int, int, int, int]  # x1, y1, x2, y2: inclusive pixel indices, GTSRB's convention (docs/roi.md)


@dataclass(frozen=True)
class RenderParams:
    """Every effect's probability (NAME_p, per track or per frame) and ranges, with units."""

    # Size: the sign's side before any turn, in output px. GTSRB's ROI widths: median 34, 90 % <= 69 px.
    size_range: tuple[int, int] = (15, 250)  # px, inclusive
    size_median: float = 34.0  # px, a track's middle frame (all frames: median 35, 10-90 % 19-75 px)
    size_spread: float = 0.35  # std of log(middle side) between tracks; frames spread about it (track_growth)
    track_growth: float = 3.5  # last frame's side / first frame's, median (GTSRB: 3.5; 1/side grows linearly)
    # Geometry, per track.
    perspective_p: float = 0.6  # out-of-plane turn: a sign beside or above the road
    yaw_deg: float = 35.0  # turn about the vertical axis, up to (deg)
    pitch_deg: float = 12.0  # tilt about the horizontal axis, up to (deg)
    rotation_p: float = 0.5  # in-plane rotation: leaning posts, a rolling camera
    roll_deg: float = 7.0  # up to (deg)
    # The physical sign and what stands around it, per track.
    fade_p: float = 0.15  # sun-bleached paint: red to pink or orange, blue paler, all less saturated, grime
    fade_strength: tuple[float, float] = (0.2, 0.8)  # 0 new paint .. 1 fully bleached
    occlusion_p: float = 0.12  # a branch, a pole or another sign or plate in front
    occlusion_cover: tuple[float, float] = (0.1, 0.4)  # how far the occluder reaches into the sign (sign sides)
    post_p: float = 0.6  # the sign's post behind it, sometimes with a plate below ("for 200 m", arrows)
    # Light, per track.
    low_light_p: float = 0.3  # dusk, shade, overcast: GTSRB holds many dark shots
    low_light_gain: tuple[float, float] = (0.15, 0.6)  # exposure factor
    glare_p: float = 0.12  # sunlit, overexposed: clipped highlights and a specular spot on the sign
    glare_gain: tuple[float, float] = (1.2, 1.7)  # exposure factor
    glare_spot: tuple[float, float] = (0.1, 0.45)  # spot strength (x 255 grey levels at its centre)
    color_cast_p: float = 0.5  # white balance off, colours greyer (saturation x 0.55-1.1)
    color_cast: float = 0.12  # per-channel gain 1 +- this, offset +- 30 x this grey levels
    # Camera, per frame.
    motion_blur_p: float = 0.25
    motion_blur_px: tuple[float, float] = (1.0, 4.0)  # streak length, output px
    defocus_blur_p: float = 0.5
    defocus_sigma_px: tuple[float, float] = (0.3, 1.2)  # Gaussian sigma, output px
    chroma_p: float = 0.3  # colour fringes: lateral chromatic aberration, Bayer demosaicing
    chroma_px: tuple[float, float] = (0.3, 1.0)  # red and blue planes shifted apart by this, output px
    noise_p: float = 0.8  # sensor noise, stronger in the dark
    noise_sigma: tuple[float, float] = (1.0, 6.0)  # grey levels (0-255) at full exposure
    jpeg_p: float = 0.4  # compression artefacts (the frames are then stored lossless)
    jpeg_quality: tuple[int, int] = (30, 90)  # Pillow's quality, 4:2:0 chroma
    # Backgrounds, per track.
    scene_p: float = 0.7  # a crop of a user's scene photo (when given) instead of a procedural texture

    def without(self, *names: str) -> RenderParams:
        """These effects (or groups: blur, geometry, light, camera) never happen."""
        return replace(self, **{f"{n}_p": 0.0 for n in expand(names)})

    def forced(self, *names: str) -> RenderParams:
        """These effects always happen."""
        return replace(self, **{f"{n}_p": 1.0 for n in expand(names)})

    def only(self, *names: str) -> RenderParams:
        """Every effect off but these (at their own probability); only() is the plain sign on a background."""
        keep = set(expand(names))
        return replace(self, **{f"{n}_p": 0.0 for n in EFFECTS if n not in keep})


DEFAULT_PARAMS = RenderParams()
EFFECTS = tuple(f.name[:-2] for f in fields(RenderParams) if f.name.endswith("_p") and f.name != "scene_p")
GROUPS = {"blur": ("motion_blur", "defocus_blur"), "geometry": ("perspective", "rotation"),
          "light": ("low_light", "glare", "color_cast"), "camera": ("motion_blur", "defocus_blur", "chroma",
                                                                    "noise", "jpeg")}


def expand(names) -> list[str]:
    out = []
    for n in names:
        if n not in EFFECTS and n not in GROUPS:
            raise ValueError(f"unknown effect {n!r}; known: {', '.join(EFFECTS)}; groups: {', '.join(GROUPS)}")
        out += GROUPS.get(n, [n])
    return out


def streams(rng: np.random.Generator):
    """One generator per name, all from one draw of rng: an effect's draws never shift another's."""
    base = int(rng.integers(2**63))
    return lambda name: np.random.default_rng([base, zlib.crc32(name.encode())])


# ---------------------------------------------------------------- sizes


def _truncated_lognormal(g: np.random.Generator, median: float, spread: float, lo: float, hi: float) -> float:
    """One draw of a log-normal restricted to [lo, hi], by inverting its CDF (no rejection loop)."""
    dist = NormalDist(math.log(median), spread)
    a, b = dist.cdf(math.log(lo)), dist.cdf(math.log(hi))
    u = a + (b - a) * float(g.random())
    return math.exp(dist.inv_cdf(min(max(u, 1e-12), 1 - 1e-12))) if b > a else math.sqrt(lo * hi)


def track_sides(g: np.random.Generator, n: int, params: RenderParams) -> list[int]:
    """Sign sides (px) of a track's n frames as a car approaches: 1/side falls linearly, as at steady speed."""
    lo, hi = params.size_range
    if n == 1:
        spread = math.hypot(params.size_spread, 0.3)  # one frame: the spread of all frames
        return [round(_truncated_lognormal(g, params.size_median, spread, lo, hi))]
    mid = _truncated_lognormal(g, params.size_median, params.size_spread, lo, hi)  # the middle frame's side
    # The middle frame has side mid = 2 a r / (1 + r) when the first has a and the last a r: a track near the
    # range's ends grows less, so that a >= lo and a r <= hi without moving mid's distribution.
    r = params.track_growth * math.exp(0.35 * float(g.standard_normal()))
    r = max(1.0, min(r, 2 * hi / mid - 1, mid / (2 * lo - mid) if mid < 2 * lo else r))
    first = mid * (1 + r) / (2 * r)
    inv = [1 / first + (1 / (first * r) - 1 / first) * i / (n - 1) for i in range(n)]
    return [min(max(round(1 / v), lo), hi) for v in inv]


# ---------------------------------------------------------------- one physical sign


@dataclass
class Track:
    """What stays the same while a car approaches one physical sign."""

    sign: Image.Image  # the sign as it stands (faded or not), RGBA at working resolution
    background: Image.Image  # RGB, for the largest frame at twice its size
    turn: tuple[float, float, float]  # yaw, pitch, roll (deg)
    occluder: dict | None  # see scene.draw_occluder; lengths in sign sides from the sign's centre
    post: dict | None  # see scene.draw_post
    gain: float  # exposure factor
    glare: tuple[float, float, float, float] | None  # spot centre x, y (sign sides from its centre), radius, strength
    cast: tuple[tuple[float, ...], tuple[float, ...], float] | None  # per-channel gain, offset; saturation


def draw_track(sign: Image.Image, rng: np.random.Generator, params: RenderParams,
               scene: np.ndarray | Callable[[], np.ndarray] | None = None, max_side: int = 64) -> Track:
    """Draw one physical sign, its surroundings and its light. scene: an (H, W, 3) photo to crop the background
    from, or a function that loads one (called only if this track uses it); max_side: the largest frame's side."""
    s = streams(rng)
    work = min(sign.width, max(64, 2 * max_side))  # enough pixels for the largest frame at 2x supersampling
    sign = sign.convert("RGBA")
    if sign.size != (work, work):
        sign = sign.resize((work, work), Image.Resampling.LANCZOS)
    g = s("fade")
    if _on(g, params.fade_p):
        sign = fade_sign(sign, g, _uniform(g, params.fade_strength))
    g = s("perspective")
    yaw, pitch = (float(g.uniform(-1, 1)) * params.yaw_deg, float(g.uniform(-1, 1)) * params.pitch_deg) \
        if _on(g, params.perspective_p) else (0.0, 0.0)
    g = s("rotation")
    roll = float(g.standard_normal()) * params.roll_deg / 2.5 if _on(g, params.rotation_p) else 0.0
    roll = max(-params.roll_deg, min(params.roll_deg, roll))
    g = s("occlusion")
    occluder = occluder_spec(g, params.occlusion_cover) if _on(g, params.occlusion_p) else None
    g = s("post")
    post = post_spec(g) if _on(g, params.post_p) else None
    gain, glare, cast = _light(s, params)
    side = min(512, 2 * (max_side * 3 // 2 + 16))
    g = s("background")
    if scene is not None and _on(g, params.scene_p):
        background = scene_crop(g, scene() if callable(scene) else scene, side)
    else:
        background = texture(g, side, side)
    return Track(sign, background, (yaw, pitch, roll), occluder, post, gain, glare, cast)


def _light(s, params: RenderParams):
    gain, glare, cast = 1.0, None, None
    g = s("low_light")
    if _on(g, params.low_light_p):
        gain *= _uniform(g, params.low_light_gain)
    g = s("glare")
    if _on(g, params.glare_p):
        gain *= _uniform(g, params.glare_gain)
        glare = (_uniform(g, (-0.4, 0.4)), _uniform(g, (-0.4, 0.4)), _uniform(g, (0.15, 0.5)),
                 _uniform(g, params.glare_spot))
    g = s("color_cast")
    if _on(g, params.color_cast_p):
        c = params.color_cast
        cast = (tuple(1 + c * float(v) for v in g.uniform(-1, 1, 3)),
                tuple(30 * c * float(v) for v in g.uniform(-1, 1, 3)), _uniform(g, (0.55, 1.1)))
    return gain, glare, cast


# ---------------------------------------------------------------- the sign's paint


def fade_sign(sign: Image.Image, g: np.random.Generator, strength: float) -> Image.Image:
    """Sun-bleached paint: red turns pink or orange, blue paler, every colour greyer and lighter; grime."""
    a = np.asarray(sign, dtype=np.float32)
    rgb = a[..., :3]
    r, gr, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    red = np.clip((r - np.maximum(gr, b)) / 100, 0, 1)[..., None]
    blue = np.clip((b - np.maximum(r, gr)) / 80, 0, 1)[..., None]
    pink_or_orange = np.array(((240, 150, 165), (240, 140, 85), (225, 115, 110))[int(g.integers(3))], np.float32)
    t = np.float32(strength)
    rgb = rgb + t * red * (pink_or_orange - rgb) + t * blue * (np.array((120, 165, 215), np.float32) - rgb)
    grey = rgb.sum(-1, keepdims=True) / 3
    rgb = rgb + t * np.float32(0.35) * (grey - rgb) + t * np.float32(0.2) * (225 - rgb)
    rgb = rgb * (1 - t * np.float32(0.3) * noise(g, sign.width, sign.height, 6)[..., None])  # grime, streaks
    out = np.concatenate([np.clip(np.rint(rgb), 0, 255), a[..., 3:]], -1).astype(np.uint8)
    return Image.fromarray(out, "RGBA")


# ---------------------------------------------------------------- one frame


def _quad(n: float, yaw: float, pitch: float, roll: float, depth: float = 4.0) -> list[tuple[float, float]]:
    """Image positions of the sign square's corners (side n, centred on 0), seen from depth x its side."""
    cy, sy = math.cos(math.radians(yaw)), math.sin(math.radians(yaw))
    cp, sp = math.cos(math.radians(pitch)), math.sin(math.radians(pitch))
    cr, sr = math.cos(math.radians(roll)), math.sin(math.radians(roll))
    out = []
    for x, y in ((-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)):
        x3, z3 = x * cy, -x * sy
        y3, z3 = y * cp - z3 * sp, y * sp + z3 * cp
        f = depth / (depth + z3)  # the nearer edge looks larger
        px, py = x3 * f, y3 * f
        out.append((n * (px * cr - py * sr), n * (px * sr + py * cr)))
    return out


def _perspective_coeffs(dst: list[tuple[float, float]], src: list[tuple[float, float]]) -> list[float]:
    """Pillow's PERSPECTIVE data mapping output points dst to input points src: 8 unknowns, solved in plain
    Python (LAPACK's kernels differ between CPUs; these coefficients must not)."""
    rows = []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        rows.append([x, y, 1.0, 0.0, 0.0, 0.0, -u * x, -u * y, u])
        rows.append([0.0, 0.0, 0.0, x, y, 1.0, -v * x, -v * y, v])
    for c in range(8):  # Gauss-Jordan with partial pivoting
        p = max(range(c, 8), key=lambda r: abs(rows[r][c]))
        rows[c], rows[p] = rows[p], rows[c]
        for r in range(8):
            if r != c and rows[r][c] != 0.0:
                f = rows[r][c] / rows[c][c]
                rows[r] = [a - f * b for a, b in zip(rows[r], rows[c], strict=True)]
    return [rows[i][8] / rows[i][i] for i in range(8)]


def render_frame(track: Track, side: int, rng: np.random.Generator, params: RenderParams) -> tuple[np.ndarray, Roi]:
    """One frame of a track with the sign's side at `side` px: (H, W, 3) uint8 image and its inclusive ROI."""
    s = streams(rng)
    k = 2 if side <= 100 else 1  # supersampling: sharp edges drawn at 2x and averaged, like a real sensor
    n = k * side
    sign = track.sign.resize((n, n), Image.Resampling.LANCZOS) if track.sign.width != n else track.sign
    quad = _quad(n, *track.turn)
    pad = k * (max(5, math.ceil(0.15 * side)) + 3)
    x0, y0 = math.floor(min(p[0] for p in quad)), math.floor(min(p[1] for p in quad))
    x1, y1 = math.ceil(max(p[0] for p in quad)), math.ceil(max(p[1] for p in quad))
    w, h = -(-(x1 - x0 + 2 * pad) // k) * k, -(-(y1 - y0 + 2 * pad) // k) * k
    cx, cy = pad - x0, pad - y0  # the sign's centre on the canvas
    coeffs = _perspective_coeffs([(x + cx, y + cy) for x, y in quad], [(0, 0), (n, 0), (n, n), (0, n)])
    layer = sign.transform((w, h), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR)
    g = s("placement")  # the camera shakes: the background shifts a little from frame to frame
    b = track.background.width
    jx, jy = _uniform(g, (0, 0.08 * b)), _uniform(g, (0, 0.08 * b))
    canvas = track.background.resize((w, h), Image.Resampling.BILINEAR, box=(jx, jy, jx + 0.92 * b, jy + 0.92 * b))
    if track.post:
        draw_post(ImageDraw.Draw(canvas), track.post, cx, cy, n, h)
    canvas.paste(layer, (0, 0), layer)
    if track.occluder:
        draw_occluder(ImageDraw.Draw(canvas), track.occluder, cx, cy, n, w, h)
    if k > 1:
        canvas, alpha = canvas.reduce(k), layer.getchannel("A").reduce(k)
    else:
        alpha = layer.getchannel("A")
    bx0, by0, bx1, by1 = alpha.getbbox()  # the sign's pixels: any coverage at all, as GTSRB's boxes hold
    left, top = (max(5, round(0.1 * d)) + int(g.integers(2)) for d in (bx1 - bx0, by1 - by0))
    right, bottom = (max(4, round(0.1 * d) - 1) + int(g.integers(2)) for d in (bx1 - bx0, by1 - by0))
    img = canvas.crop((bx0 - left, by0 - top, bx1 + right, by1 + bottom))
    roi = (left, top, left + bx1 - bx0 - 1, top + by1 - by0 - 1)
    centre = ((cx / k) - bx0 + left, (cy / k) - by0 + top)
    return _camera(img, s, params, track, centre, side), roi


def _camera(img: Image.Image, s, params: RenderParams, track: Track, centre: tuple[float, float],
            side: int) -> np.ndarray:
    """Lens, exposure, sensor and codec, in the order light meets them."""
    g = s("defocus_blur")
    if _on(g, params.defocus_blur_p):
        img = img.filter(ImageFilter.GaussianBlur(_uniform(g, params.defocus_sigma_px)))
    a = np.asarray(img, dtype=np.float32)
    g = s("motion_blur")
    if _on(g, params.motion_blur_p):
        length, angle = _uniform(g, params.motion_blur_px), float(g.normal(0, 0.5))  # mostly sideways
        m = math.ceil(length) + 1
        taps = [((i / (m - 1) - 0.5) * length * math.cos(angle), (i / (m - 1) - 0.5) * length * math.sin(angle),
                 1 / m) for i in range(m)]
        a = shift_sum(a, taps)
    g = s("chroma")
    if _on(g, params.chroma_p):
        d, angle = _uniform(g, params.chroma_px) / 2, _uniform(g, (0, 2 * math.pi))
        dx, dy = d * math.cos(angle), d * math.sin(angle)
        a = np.stack([shift_sum(a[..., 0], [(dx, dy, 1.0)]), a[..., 1], shift_sum(a[..., 2], [(-dx, -dy, 1.0)])], -1)
    if track.glare:
        a = a + _spot(a.shape[:2], centre, side, track.glare)[..., None]
    a = a * np.float32(track.gain)
    if track.cast:  # white balance and saturation: GTSRB's colours are often greyish
        gains, offsets, saturation = track.cast
        grey = a.sum(-1, keepdims=True) / 3
        a = (grey + np.float32(saturation) * (a - grey)) * np.array(gains, np.float32) + np.array(offsets, np.float32)
    a = np.clip(a, 0, 255)
    g = s("noise")
    if _on(g, params.noise_p):
        read = _uniform(g, params.noise_sigma) * (1.5 - 0.5 * min(track.gain, 1.0))  # dark: more analogue gain
        sigma = np.sqrt(np.float32(read * read) + a * np.float32(read * read / 128))  # plus shot noise
        grain = g.standard_normal(a.shape[:2], dtype=np.float32)[..., None]
        a = a + sigma * (np.float32(0.7) * grain + np.float32(0.5) * g.standard_normal(a.shape, dtype=np.float32))
    out = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    g = s("jpeg")
    if _on(g, params.jpeg_p):
        buf = io.BytesIO()
        lo, hi = params.jpeg_quality
        Image.fromarray(out).save(buf, "JPEG", quality=int(g.integers(lo, hi + 1)))
        out = np.asarray(Image.open(buf).convert("RGB"))
    return out


def shift_sum(a: np.ndarray, taps: list[tuple[float, float, float]]) -> np.ndarray:
    """sum of w * a shifted by (dx, dy) px, bilinear for fractions, edges extended."""
    whole: dict[tuple[int, int], float] = {}
    for dx, dy, w in taps:
        ix, iy = math.floor(dx), math.floor(dy)
        fx, fy = dx - ix, dy - iy
        for ox, oy, f in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
            if f > 0:
                whole[(ix + ox, iy + oy)] = whole.get((ix + ox, iy + oy), 0.0) + w * f
    r = max(max(abs(x), abs(y)) for x, y in whole)
    h, w = a.shape[:2]
    p = np.pad(a, ((r, r), (r, r)) + ((0, 0),) * (a.ndim - 2), mode="edge")
    out = np.zeros_like(a)
    for (x, y), f in whole.items():
        out += np.float32(f) * p[r - y:r - y + h, r - x:r - x + w]
    return out


def _spot(shape: tuple[int, int], centre: tuple[float, float], side: int, glare) -> np.ndarray:
    """A specular highlight on the sign: a Gaussian, from 1-D factors computed with math.exp."""
    ox, oy, radius, strength = glare
    cx, cy, r = centre[0] + ox * side, centre[1] + oy * side, max(radius * side, 1.0)
    gx = np.array([math.exp(-0.5 * ((x - cx) / r) ** 2) for x in range(shape[1])], np.float32)
    gy = np.array([math.exp(-0.5 * ((y - cy) / r) ** 2) for y in range(shape[0])], np.float32)
    return np.outer(gy, gx) * np.float32(255 * strength)


def render_variant(sign: Image.Image, rng: np.random.Generator, params: RenderParams = DEFAULT_PARAMS,
                   background: np.ndarray | None = None) -> tuple[np.ndarray, Roi]:
    """One photo of the sign (RGBA, transparent around it) at a random size, angle, light and background
    (a crop of `background`, an (H, W, 3) scene, with probability params.scene_p; else a procedural one)."""
    s = streams(rng)
    side = track_sides(s("size"), 1, params)[0]
    track = draw_track(sign, s("track"), params, background, side)
    return render_frame(track, side, s("frame"), params)
