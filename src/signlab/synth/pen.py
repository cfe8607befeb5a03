"""A small vector pen over Pillow's ImageDraw: unit coordinates, nested affine frames, strokes and discs.

Pictograms are described in coordinates of the sign square (0..1 both ways, y down) or of a symbol's own
box; the pen maps them to pixels of a supersampled canvas, so one description draws at any size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import ImageDraw

Point = tuple[float, float]
Colour = tuple[int, int, int]
Affine = tuple[float, float, float, float, float, float]  # x' = a x + b y + c, y' = d x + e y + f


def arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, step: float = 6.0) -> list[Point]:
    """Points on an elliptic arc from angle a0 to a1 in degrees; screen angles, so increasing is clockwise."""
    n = max(2, int(abs(a1 - a0) / step) + 1)
    out = []
    for i in range(n + 1):
        t = math.radians(a0 + (a1 - a0) * i / n)
        out.append((cx + rx * math.cos(t), cy + ry * math.sin(t)))
    return out


def circle(cx: float, cy: float, r: float, n: int = 180) -> list[Point]:
    return arc(cx, cy, r, r, 0.0, 360.0, 360.0 / n)[:-1]


def regular_polygon(cx: float, cy: float, apothem: float, sides: int, start_deg: float) -> list[Point]:
    """Vertices of a regular polygon given its apothem (inradius), so insets are a plain subtraction."""
    radius = apothem / math.cos(math.pi / sides)
    angles = [math.radians(start_deg + k * 360.0 / sides) for k in range(sides)]
    return [(cx + radius * math.cos(a), cy + radius * math.sin(a)) for a in angles]


def rounded_polygon(vertices: Sequence[Point], radius: float, step: float = 6.0) -> list[Point]:
    """A convex polygon whose corners are circular arcs of `radius` tangent to both edges."""
    if radius <= 0:
        return list(vertices)
    out: list[Point] = []
    n = len(vertices)
    for i, (vx, vy) in enumerate(vertices):
        u1 = _unit(vertices[i - 1][0] - vx, vertices[i - 1][1] - vy)
        u2 = _unit(vertices[(i + 1) % n][0] - vx, vertices[(i + 1) % n][1] - vy)
        half = math.acos(max(-1.0, min(1.0, u1[0] * u2[0] + u1[1] * u2[1]))) / 2
        bis = _unit(u1[0] + u2[0], u1[1] + u2[1])
        cx, cy = vx + bis[0] * radius / math.sin(half), vy + bis[1] * radius / math.sin(half)
        t = radius / math.tan(half)
        a0 = math.degrees(math.atan2(vy + u1[1] * t - cy, vx + u1[0] * t - cx))
        a1 = math.degrees(math.atan2(vy + u2[1] * t - cy, vx + u2[0] * t - cx))
        sweep = (a1 - a0 + 180.0) % 360.0 - 180.0  # the short way round, which is the outside of the corner
        out.extend(arc(cx, cy, radius, radius, a0, a0 + sweep, step))
    return out


def _unit(x: float, y: float) -> Point:
    norm = math.hypot(x, y) or 1.0
    return x / norm, y / norm


class Pen:
    """Draws shapes given in a local frame; `at` nests frames (offset, scale, rotation, mirror)."""

    def __init__(self, draw: ImageDraw.ImageDraw, pixels: float, affine: Affine = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)):
        self.draw = draw
        self.pixels = pixels  # canvas pixels per unit of the root frame
        self.affine = affine

    def at(self, x: float, y: float, scale: float = 1.0, angle: float = 0.0, mirror: bool = False) -> Pen:
        """A pen whose local origin is (x, y) here, its unit `scale` here, turned clockwise by `angle` degrees."""
        c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        fx = -1.0 if mirror else 1.0
        la, lb, lc, ld, le, lf = scale * c * fx, -scale * s, x, scale * s * fx, scale * c, y
        a, b, cc, d, e, f = self.affine
        row1 = (a * la + b * ld, a * lb + b * le, a * lc + b * lf + cc)  # parent affine after the local one
        row2 = (d * la + e * ld, d * lb + e * le, d * lc + e * lf + f)
        return Pen(self.draw, self.pixels, row1 + row2)

    @property
    def scale(self) -> float:
        """Canvas pixels per local unit (geometric mean of the two axes)."""
        a, b, _, d, e, _ = self.affine
        return math.sqrt(abs(a * e - b * d)) * self.pixels

    def xy(self, pts: Sequence[Point]) -> list[Point]:
        a, b, c, d, e, f = self.affine
        p = self.pixels
        return [((a * x + b * y + c) * p, (d * x + e * y + f) * p) for x, y in pts]

    def polygon(self, pts: Sequence[Point], fill: Colour) -> None:
        self.draw.polygon(self.xy(pts), fill=fill)

    def disc(self, cx: float, cy: float, r: float, fill: Colour) -> None:
        self.polygon(circle(cx, cy, r, n=max(24, min(360, int(r * self.scale)))), fill)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, fill: Colour, angle: float = 0.0) -> None:
        self.at(cx, cy, angle=angle).polygon(arc(0.0, 0.0, rx, ry, 0.0, 360.0, 4.0)[:-1], fill)

    def rect(self, x0: float, y0: float, x1: float, y1: float, fill: Colour, radius: float = 0.0) -> None:
        self.polygon(rounded_polygon([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], radius), fill)

    def stroke(
        self, pts: Sequence[Point], width: float, fill: Colour, round_caps: bool = False, closed: bool = False
    ) -> None:
        """A polyline of constant width with round joints; ends are cut square unless `round_caps`."""
        xy = self.xy(pts)
        w = max(1, round(width * self.scale))
        if closed:
            xy = xy + xy[:1]
        self.draw.line(xy, fill=fill, width=w)
        # Round joints drawn as discs: Pillow's own curve joints leave hairline seams between short segments.
        joints = xy if closed or round_caps else xy[1:-1]
        for x, y in joints:
            self.draw.ellipse((x - w / 2, y - w / 2, x + w / 2, y + w / 2), fill=fill)

    def arrow(self, shaft: Sequence[Point], width: float, head_width: float, head_len: float, fill: Colour) -> None:
        """A stroke ending in a triangular head that continues the direction of its last segment."""
        (x0, y0), (x1, y1) = shaft[-2], shaft[-1]
        ux, uy = _unit(x1 - x0, y1 - y0)
        self.stroke([*shaft[:-1], (x1 + ux * head_len * 0.3, y1 + uy * head_len * 0.3)], width, fill)
        hw = head_width / 2
        tip = (x1 + ux * head_len, y1 + uy * head_len)
        self.polygon([tip, (x1 - uy * hw, y1 + ux * hw), (x1 + uy * hw, y1 - ux * hw)], fill)


# Sign colours, close to the RAL traffic colours of German signs as they look on screen.
WHITE: Colour = (255, 255, 255)
BLACK: Colour = (24, 24, 24)
RED: Colour = (204, 22, 30)
BLUE: Colour = (0, 90, 166)
YELLOW: Colour = (252, 204, 10)
GREY: Colour = (100, 100, 100)
AMBER: Colour = (245, 160, 0)
GREEN: Colour = (0, 150, 70)
