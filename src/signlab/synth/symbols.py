"""Symbols of the regulatory signs: vehicles, arrows, road curves and small marks.

Each symbol is drawn in its own box, x and y from -0.5 to 0.5 (y down); the caller places the box with
`Pen.at`. Symbols that come in left and right versions are drawn once; the sign is mirrored as a whole.
"""

from __future__ import annotations

import math

from .pen import AMBER, BLACK, GREEN, RED, WHITE, Colour, Pen, Point, arc, rounded_polygon


def car_rear(pen: Pen, fill: Colour, window: Colour = WHITE) -> None:
    """A car seen from behind, 1 wide: cabin with rear window, body, two wheels; about 0.75 tall."""
    pen.polygon(_trapezoid(-0.40, -0.12, 0.31, 0.45, radius=0.07), fill)  # cabin
    pen.polygon(_trapezoid(-0.33, -0.15, 0.23, 0.36, radius=0.03), window)
    pen.rect(-0.5, -0.15, 0.5, 0.17, fill, radius=0.06)  # body
    pen.rect(-0.43, 0.1, -0.2, 0.33, fill, radius=0.03)  # wheels, showing below the body
    pen.rect(0.2, 0.1, 0.43, 0.33, fill, radius=0.03)
    pen.rect(-0.43, -0.07, -0.28, 0.01, window)  # rear lights
    pen.rect(0.28, -0.07, 0.43, 0.01, window)


def lorry_rear(pen: Pen, fill: Colour) -> None:
    """A lorry seen from behind, 1 wide: a tall box on wheels; about 1.1 tall."""
    pen.rect(-0.5, -0.62, 0.5, 0.22, fill, radius=0.05)
    pen.rect(-0.45, 0.2, -0.2, 0.46, fill, radius=0.03)
    pen.rect(0.2, 0.2, 0.45, 0.46, fill, radius=0.03)


def lorry_side(pen: Pen, fill: Colour, hub: Colour = WHITE) -> None:
    """A lorry facing left, 1.2 long: cab with window, cargo box, chassis, two wheels."""
    pen.polygon([(-0.6, 0.16), (-0.6, -0.06), (-0.5, -0.22), (-0.28, -0.22), (-0.28, 0.16)], fill)  # cab
    pen.polygon([(-0.54, -0.06), (-0.47, -0.17), (-0.34, -0.17), (-0.34, -0.06)], hub)  # side window
    pen.rect(-0.24, -0.42, 0.6, 0.12, fill, radius=0.02)  # cargo box
    pen.rect(-0.6, 0.08, 0.6, 0.2, fill)  # chassis
    for x in (-0.42, 0.36):
        pen.disc(x, 0.22, 0.13, fill)
        pen.disc(x, 0.22, 0.045, hub)


def _trapezoid(top: float, bottom: float, half_top: float, half_bottom: float, radius: float) -> list[Point]:
    return rounded_polygon([(-half_top, top), (half_top, top), (half_bottom, bottom), (-half_bottom, bottom)], radius)


def turn_arrow(pen: Pen, fill: Colour) -> None:
    """Turn right ahead: up from the bottom, then a quarter turn to the right."""
    r = 0.2
    shaft = [(-0.18, 0.46), (-0.18, 0.02)] + arc(-0.18 + r, 0.02, r, r, 180, 270) + [(0.1, -0.18)]
    pen.arrow(shaft, 0.15, 0.42, 0.26, fill)


def straight_arrow(pen: Pen, fill: Colour) -> None:
    pen.arrow([(0.0, 0.5), (0.0, -0.2)], 0.15, 0.42, 0.3, fill)


def straight_or_right(pen: Pen, fill: Colour) -> None:
    x = -0.14
    pen.arrow([(x, 0.5), (x, -0.2)], 0.14, 0.38, 0.28, fill)
    r = 0.16
    branch = [(x, 0.28)] + arc(x + r, 0.28, r, r, 180, 270) + [(0.18, 0.12)]
    pen.arrow(branch, 0.13, 0.36, 0.25, fill)


def keep_right(pen: Pen, fill: Colour) -> None:
    """Keep right: an arrow pointing down to the right."""
    pen.arrow([(-0.36, -0.36), (0.16, 0.16)], 0.15, 0.44, 0.28, fill)


def roundabout(pen: Pen, fill: Colour) -> None:
    """Three arrows chasing each other anticlockwise round a circle, as on German sign 215."""
    r = 0.33
    for k in range(3):
        a0 = 100 + 120 * k
        pen.arrow(arc(0.0, 0.0, r, r, a0, a0 - 68, 2.0), 0.17, 0.42, 0.22, fill)


def no_entry_bar(pen: Pen, fill: Colour = WHITE) -> None:
    pen.rect(-0.5, -0.1, 0.5, 0.1, fill)


def right_of_way(pen: Pen, fill: Colour = BLACK) -> None:
    """The crossing of sign 102: a heavy vertical road tapering to a point, crossed by a thinner one."""
    pen.polygon([(-0.12, 0.48), (0.12, 0.48), (0.08, -0.28), (0.0, -0.48), (-0.08, -0.28)], fill)
    pen.polygon([(-0.32, -0.08), (0.32, -0.08), (0.32, 0.05), (-0.32, 0.05)], fill)


def exclamation(pen: Pen, fill: Colour = BLACK) -> None:
    pen.polygon(rounded_polygon([(-0.1, -0.48), (0.1, -0.48), (0.055, 0.2), (-0.055, 0.2)], 0.02), fill)
    pen.disc(0.0, 0.37, 0.09, fill)


def curve_left(pen: Pen, fill: Colour = BLACK) -> None:
    """Dangerous curve to the left: the road comes up from the bottom and bends to the left."""
    r, w = 0.2, 0.17
    path = [(0.12, 0.5), (0.12, -0.02)] + arc(0.12 - r, -0.02, r, r, 0, -90) + [(-0.12, -0.22)]
    pen.arrow(path, w, w * 1.3, 0.13, fill)  # a blunt point, as on the sign, not an arrowhead


def double_curve(pen: Pen, fill: Colour = BLACK) -> None:
    """Double curve, first to the left: up, over to the left, up again, then bending back to the right."""
    path = [(0.16, 0.5)]  # a straight start, so the foot of the road is cut square
    for i in range(41):
        y = 0.3 - 0.56 * i / 40
        x = 0.16 - 0.34 * _smoothstep((0.28 - y) / 0.26) + 0.26 * _smoothstep((-0.04 - y) / 0.3)
        path.append((x, y))
    pen.arrow(path, 0.16, 0.2, 0.13, fill)


def _smoothstep(t: float) -> float:
    t = min(max(t, 0.0), 1.0)
    return t * t * (3 - 2 * t)


def bumpy_road(pen: Pen, fill: Colour = BLACK) -> None:
    """Two humps on a road surface."""
    top = []
    for i in range(81):
        x = -0.5 + i / 80
        hump = sum(math.exp(-(((x - c) / 0.13) ** 2)) for c in (-0.24, 0.24))
        top.append((x, 0.2 - 0.3 * hump))
    pen.polygon(top + [(0.5, 0.32), (-0.5, 0.32)], fill)


def road_narrows_right(pen: Pen, fill: Colour = BLACK) -> None:
    """Left edge straight; the right edge steps inwards half way up."""
    w = 0.16
    pen.stroke([(-0.15, 0.46), (-0.15, -0.3)], w, fill)
    pen.stroke([(0.21, 0.46), (0.21, 0.14), (0.07, -0.06), (0.07, -0.3)], w, fill)


def slippery_road(pen: Pen, fill: Colour = BLACK) -> None:
    """A car from behind, skidding: tilted, above two S-shaped tyre tracks that swing out to the right."""
    car_rear(pen.at(-0.04, -0.14, 0.56, angle=-10), fill)
    for x0 in (-0.26, 0.06):
        track = []
        for i in range(31):
            t = i / 30
            track.append((x0 + 0.1 * math.sin(t * math.pi * 1.8) + 0.28 * t, 0.08 + 0.38 * t))
        pen.stroke(track, 0.085, fill, round_caps=True)


def traffic_signals(pen: Pen, fill: Colour = BLACK) -> None:
    """Red, amber and green lights one above the other, each with a thin dark edge (no housing, as on sign 131)."""
    for y, colour in ((-0.33, RED), (0.0, AMBER), (0.33, GREEN)):
        pen.disc(0.0, y, 0.145, fill)
        pen.disc(0.0, y, 0.125, colour)


def end_stripes(pen: Pen, radius: float, fill: Colour = BLACK, lines: int = 5) -> None:
    """The band of thin diagonal lines of the 'end of ...' signs, from upper right to lower left, clipped to a disc."""
    spacing, width = 0.05, 0.018
    ux, uy = math.sqrt(0.5), -math.sqrt(0.5)  # along the band: up and to the right
    for k in range(lines):
        off = (k - (lines - 1) / 2) * spacing
        half = math.sqrt(max(radius**2 - off**2, 0.0))
        cx, cy = 0.5 + off * -uy, 0.5 + off * ux
        pen.stroke([(cx - ux * half, cy - uy * half), (cx + ux * half, cy + uy * half)], width, fill)
