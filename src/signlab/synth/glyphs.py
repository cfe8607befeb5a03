"""A bold, condensed stroke font for the glyphs signs need: the digits of speed limits and the letters of STOP.

Drawn from centre lines rather than taken from a font file, so nothing depends on fonts installed on the
machine, and the figures get the heavy, narrow look of the DIN 1451 lettering on German signs.
"""

from __future__ import annotations

from .pen import Colour, Pen, Point, arc

STROKE = 0.17  # stroke width as a fraction of the glyph height
H = STROKE / 2  # centre lines sit half a stroke inside the box, so the ink fills the box exactly
Y0, Y1 = H, 1.0 - H
Strokes = list[tuple[list[Point], bool]]  # centre-line polylines, each with its closed flag


def _box(width: float) -> tuple[float, float, float]:
    """Left and right centre lines and the half width between them, for a glyph `width` wide."""
    return H, width - H, (width - 2 * H) / 2


def _zero(w: float) -> Strokes:
    x0, x1, rx = _box(w)
    cx, ry = w / 2, rx * 1.15
    return [(arc(cx, Y0 + ry, rx, ry, 180, 360) + arc(cx, Y1 - ry, rx, ry, 0, 180), True)]


def _one(w: float) -> Strokes:
    stem = w - H - 0.02
    return [([(0.02 + H, 0.30), (stem, Y0), (stem, 1.0)], False)]


def _two(w: float) -> Strokes:
    x0, x1, rx = _box(w)
    ry = 0.27
    return [(arc(w / 2, Y0 + ry, rx, ry, 165, 395) + [(x0, Y1), (w, Y1)], False)]


def _three(w: float) -> Strokes:
    x0, x1, rx = _box(w)
    mid = 0.46
    ru, rl = (mid - Y0) / 2, (Y1 - mid) / 2
    upper = arc(w / 2 - 0.01, Y0 + ru, rx - 0.01, ru, 195, 450)
    lower = arc(w / 2, mid + rl, rx, rl, 270, 520)
    return [(upper, False), (lower, False), ([(w / 2 - 0.09, mid), (w / 2, mid)], False)]


def _five(w: float) -> Strokes:
    x0, x1, rx = _box(w)
    rb = 0.29
    bowl = arc(w / 2, Y1 - rb, rx, rb, 212, 520)
    return [([(w, Y0), (x0 + 0.03, Y0), (x0 + 0.01, 0.45), *bowl], False)]


def _six(w: float) -> Strokes:
    x0, x1, rx = _box(w)
    rb, rt = 0.27, rx * 1.3  # a smaller bowl under a taller hood, so the hook stays clear of the bowl
    top = arc(w / 2, Y0 + rt, rx, rt, 325, 180) + [(x0, Y1 - rb)]
    return [(top, False), (arc(w / 2, Y1 - rb, rx, rb, 0, 360)[:-1], True)]


def _seven(w: float) -> Strokes:
    x0, x1, _ = _box(w)
    return [([(0.0, Y0), (x1, Y0), (x1 - 0.01, Y0 + 0.12), (w * 0.36, 1.0)], False)]


def _eight(w: float) -> Strokes:
    x0, x1, rx = _box(w)
    mid = 0.45
    ru, rl = (mid - Y0) / 2, (Y1 - mid) / 2
    return [(arc(w / 2, Y0 + ru, rx * 0.86, ru, 0, 360)[:-1], True), (arc(w / 2, mid + rl, rx, rl, 0, 360)[:-1], True)]


def _nine(w: float) -> Strokes:
    return [([(w - x, 1.0 - y) for x, y in pts], closed) for pts, closed in _six(w)]  # a six turned round


def _t(w: float) -> Strokes:
    return [([(0.0, Y0), (w, Y0)], False), ([(w / 2, Y0), (w / 2, 1.0)], False)]


def _p(w: float) -> Strokes:
    x0, x1, _ = _box(w)
    r = 0.28
    xm = x1 - r * 0.9
    bowl = arc(xm, Y0 + r, x1 - xm, r, 270, 450)
    return [([(x0, 1.0), (x0, Y0), *bowl, (x0, Y0 + 2 * r)], False)]


def _s(w: float) -> Strokes:
    x0, x1, rx = _box(w)
    mid = 0.47
    ru, rl = (mid - Y0) / 2, (Y1 - mid) / 2
    return [(arc(w / 2, Y0 + ru, rx * 0.94, ru, 335, 90) + arc(w / 2, mid + rl, rx, rl, 270, 515), False)]


# glyph -> (advance width in glyph heights, centre lines)
_GLYPHS = {
    "0": (0.56, _zero),
    "1": (0.42, _one),
    "2": (0.56, _two),
    "3": (0.56, _three),
    "5": (0.56, _five),
    "6": (0.56, _six),
    "7": (0.54, _seven),
    "8": (0.58, _eight),
    "9": (0.56, _nine),
    " ": (0.3, lambda w: []),
    "S": (0.60, _s),
    "T": (0.58, _t),
    "O": (0.64, _zero),
    "P": (0.58, _p),
}
GAP = 0.09  # space between glyphs, in glyph heights: tight, as on the signs


def text_width(text: str, gap: float = GAP) -> float:
    """Width of `text` in glyph heights."""
    return sum(_GLYPHS[ch][0] for ch in text) + gap * (len(text) - 1)


def draw_text(pen: Pen, text: str, cx: float, cy: float, height: float, fill: Colour, gap: float = GAP) -> None:
    """Draw `text` centred on (cx, cy), `height` tall, in the pen's frame."""
    x = cx - text_width(text, gap) * height / 2
    for ch in text:
        width, strokes = _GLYPHS[ch]
        glyph = pen.at(x, cy - height / 2, height)
        for pts, closed in strokes(width):
            glyph.stroke(pts, STROKE, fill, closed=closed)
        x += (width + gap) * height
