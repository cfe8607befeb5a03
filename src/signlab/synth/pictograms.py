"""Vector pictograms of the 43 GTSRB classes, drawn with Pillow from code (German sign designs, simplified).

No pixel comes from a dataset: every sign is a list of shapes drawn on a canvas four times the requested
size and scaled down with LANCZOS, so edges are smooth from 16 to 512 px. The sign's outline touches the
square's edges: discs, octagon and diamond fill it; triangles span its width and sit at its top (their
height is 0.87 of the side, as in GTSRB's tight crops). Everything outside the sign is transparent.

Simplified: pictogram figures are strokes and discs, digits and STOP come from a stroke font of our own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

from . import figures, symbols
from .glyphs import draw_text, text_width
from .pen import BLACK, BLUE, GREY, RED, WHITE, YELLOW, Colour, Pen, Point, regular_polygon, rounded_polygon

NUM_CLASSES = 43
SUPERSAMPLE = 4

_WARNING = {11, *range(18, 32)}
SIGN_SHAPES: dict[int, str] = {c: "triangle" if c in _WARNING else "circle" for c in range(NUM_CLASSES)}
SIGN_SHAPES.update({12: "diamond", 13: "inverted_triangle", 14: "octagon"})

# The dominant border or fill colour: red for prohibitory and warning signs, blue for mandatory ones,
# white for the 'end of ...' signs, yellow for the priority road.
SIGN_COLORS: dict[int, str] = {c: "red" for c in range(NUM_CLASSES)}
SIGN_COLORS.update({c: "white" for c in (6, 32, 41, 42)})
SIGN_COLORS.update({c: "blue" for c in range(33, 41)})
SIGN_COLORS[12] = "yellow"

# Left-hand versions are the right-hand ones mirrored, as the real signs are (class-aware flips rely on it).
MIRRORED: dict[int, int] = {20: 19, 34: 33, 37: 36, 39: 38}

RIM = 0.015  # the thin white edge round every sign
RING = 0.085  # the red ring of prohibitory signs
BORDER = 0.065  # the red border of warning triangles: thinner than the ring, as on the signs
SPEEDS = {0: "20", 1: "30", 2: "50", 3: "60", 4: "70", 5: "80", 7: "100", 8: "120"}


def _inset(vertices: Sequence[Point], centre: Point, apothem: float, d: float) -> list[Point]:
    """A regular polygon moved in by `d` on every side: a scaling about its centre."""
    k = (apothem - d) / apothem
    return [(centre[0] + (x - centre[0]) * k, centre[1] + (y - centre[1]) * k) for x, y in vertices]


def _layers(
    pen: Pen,
    vertices: Sequence[Point],
    centre: Point,
    apothem: float,
    corner: float,
    layers: Sequence[tuple[float, Colour]],
) -> None:
    """Nested insets of one rounded polygon, outermost first: (inset, colour) pairs."""
    for d, colour in layers:
        pen.polygon(rounded_polygon(_inset(vertices, centre, apothem, d), max(corner - d, 0.01)), colour)


def _triangle(pen: Pen, inverted: bool = False) -> Pen:
    """A warning triangle (or the yield sign, upside down): white, red border, round corners.

    Like GTSRB's reference pictograms, the triangle spans the full width and sits at the top of the square.
    Returns the pen whose frame the symbol inside is placed in.
    """
    h = math.sqrt(3) / 2
    if inverted:
        vertices, centre = [(0.0, 0.0), (1.0, 0.0), (0.5, h)], (0.5, h / 3)
    else:
        vertices, centre = [(0.5, 0.0), (1.0, h), (0.0, h)], (0.5, 2 * h / 3)
    corner = 0.06
    # Rounding pulls the corners in: rescale so that the rounded outline, not the sharp one, touches the edges.
    outline = rounded_polygon(vertices, corner)
    x0, x1 = min(x for x, _ in outline), max(x for x, _ in outline)
    y0 = min(y for _, y in outline)
    k = 1.0 / (x1 - x0)
    frame = pen.at(-x0 * k, -y0 * k, k)
    _layers(frame, vertices, centre, h / 3, corner, [(0.0, WHITE), (RIM, RED), (RIM + BORDER, WHITE)])
    return frame


def _disc_frame(pen: Pen, ring: Colour, field: Colour, ring_width: float = RING) -> None:
    pen.disc(0.5, 0.5, 0.5, WHITE)
    pen.disc(0.5, 0.5, 0.5 - RIM, ring)
    if ring_width:
        pen.disc(0.5, 0.5, 0.5 - RIM - ring_width, field)


def _prohibitory(pen: Pen) -> None:
    _disc_frame(pen, RED, WHITE)


def _mandatory(pen: Pen) -> None:
    _disc_frame(pen, BLUE, BLUE, 0.0)


def _end_frame(pen: Pen) -> None:
    """The 'end of ...' signs: white with a thin grey edge; the stripes go on last, over the symbol."""
    pen.disc(0.5, 0.5, 0.5, GREY)
    pen.disc(0.5, 0.5, 0.485, WHITE)


def _speed(pen: Pen, text: str, fill: Colour = BLACK) -> None:
    height = min(0.38, 0.7 / text_width(text))  # 100 and 120 fit at full height; shrink only what would not
    draw_text(pen, text, 0.5, 0.5, height, fill)


def _cars(pen: Pen, left: Colour, right: Colour, lorry: bool = False) -> None:
    """The two vehicles of the no-passing signs, side by side, seen from behind."""
    if lorry:
        symbols.lorry_rear(pen.at(0.31, 0.52, 0.3), left)
    else:
        symbols.car_rear(pen.at(0.31, 0.53, 0.31), left)
    symbols.car_rear(pen.at(0.69, 0.53, 0.31), right)


def _warning(symbol: Callable[[Pen], None], y: float, scale: float) -> Callable[[Pen], None]:
    """A warning sign with the symbol's box centred at (0.5, y), `scale` wide, in the triangle's frame.

    Each symbol gets about the largest box that keeps it 1.5% of the side clear of the red border, found by
    trying sizes and positions (the field narrows upwards, so wide symbols sit lower); a test checks it.
    """

    def draw(pen: Pen) -> None:
        symbol(_triangle(pen).at(0.5, y, scale))

    return draw


def _mandatory_with(symbol: Callable[[Pen, Colour], None]) -> Callable[[Pen], None]:
    def draw(pen: Pen) -> None:
        _mandatory(pen)
        symbol(pen.at(0.5, 0.5, 0.7), WHITE)

    return draw


def _speed_limit(text: str) -> Callable[[Pen], None]:
    def draw(pen: Pen) -> None:
        _prohibitory(pen)
        _speed(pen, text)

    return draw


def _end_of(symbol: Callable[[Pen], None] | None) -> Callable[[Pen], None]:
    def draw(pen: Pen) -> None:
        _end_frame(pen)
        if symbol is not None:
            symbol(pen)
        symbols.end_stripes(pen, 0.485)

    return draw


def _priority_road(pen: Pen) -> None:
    vertices = [(0.5, 0.0), (1.0, 0.5), (0.5, 1.0), (0.0, 0.5)]
    _layers(pen, vertices, (0.5, 0.5), 0.5 / math.sqrt(2), 0.03, [(0.0, BLACK), (0.012, WHITE), (0.11, YELLOW)])


def _stop(pen: Pen) -> None:
    vertices = regular_polygon(0.5, 0.5, 0.5, 8, 22.5)  # flat top and sides
    _layers(pen, vertices, (0.5, 0.5), 0.5, 0.02, [(0.0, WHITE), (0.02, RED)])
    draw_text(pen, "STOP", 0.5, 0.5, 0.27, WHITE, gap=0.1)


def _no_entry(pen: Pen) -> None:
    _disc_frame(pen, RED, RED, 0.0)
    symbols.no_entry_bar(pen.at(0.5, 0.5, 0.7))


def _with_frame(frame: Callable[[Pen], None], *extras: Callable[[Pen], None]) -> Callable[[Pen], None]:
    def draw(pen: Pen) -> None:
        frame(pen)
        for extra in extras:
            extra(pen)

    return draw


_DRAWERS: dict[int, Callable[[Pen], None]] = {
    **{c: _speed_limit(text) for c, text in SPEEDS.items()},
    6: _end_of(lambda pen: _speed(pen, "80", GREY)),
    9: _with_frame(_prohibitory, lambda pen: _cars(pen, RED, BLACK)),
    10: _with_frame(_prohibitory, lambda pen: _cars(pen, RED, BLACK, lorry=True)),
    11: _warning(symbols.right_of_way, 0.52, 0.5),
    12: _priority_road,
    13: lambda pen: _triangle(pen, inverted=True),
    14: _stop,
    15: _prohibitory,
    16: _with_frame(_prohibitory, lambda pen: symbols.lorry_side(pen.at(0.5, 0.52, 0.52), BLACK)),
    17: _no_entry,
    18: _warning(symbols.exclamation, 0.53, 0.51),
    19: _warning(symbols.curve_left, 0.52, 0.49),
    21: _warning(symbols.double_curve, 0.5, 0.52),
    22: _warning(symbols.bumpy_road, 0.59, 0.56),
    23: _warning(symbols.slippery_road, 0.54, 0.45),
    24: _warning(symbols.road_narrows_right, 0.54, 0.48),
    25: _warning(figures.worker, 0.49, 0.53),
    26: _warning(symbols.traffic_signals, 0.55, 0.46),
    27: _warning(figures.pedestrian, 0.5, 0.5),
    28: _warning(figures.children, 0.55, 0.47),
    29: _warning(figures.bicycle, 0.58, 0.47),
    30: _warning(figures.snowflake, 0.58, 0.44),
    31: _warning(figures.deer, 0.54, 0.47),
    32: _end_of(None),
    33: _mandatory_with(symbols.turn_arrow),
    35: _mandatory_with(symbols.straight_arrow),
    36: _mandatory_with(symbols.straight_or_right),
    38: _mandatory_with(symbols.keep_right),
    40: _mandatory_with(symbols.roundabout),
    41: _end_of(lambda pen: _cars(pen, GREY, GREY)),
    42: _end_of(lambda pen: _cars(pen, GREY, GREY, lorry=True)),
}
assert set(_DRAWERS) | set(MIRRORED) == set(range(NUM_CLASSES))


def draw_sign(class_id: int, size: int = 256) -> Image.Image:
    """The pictogram of GTSRB class `class_id` as a `size`×`size` RGBA image, transparent outside the sign."""
    if not 0 <= class_id < NUM_CLASSES:
        raise ValueError(f"class_id must be in 0..{NUM_CLASSES - 1}, got {class_id}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    if class_id in MIRRORED:
        return ImageOps.mirror(draw_sign(MIRRORED[class_id], size))
    canvas = Image.new("RGBA", (size * SUPERSAMPLE,) * 2, (0, 0, 0, 0))
    _DRAWERS[class_id](Pen(ImageDraw.Draw(canvas), size * SUPERSAMPLE))
    return canvas.resize((size, size), Image.Resampling.LANCZOS)


def contact_sheet(size: int = 96, columns: int = 11) -> Image.Image:
    """All 43 pictograms in a grid on light grey, each with its class id underneath."""
    pad, label = max(4, size // 8), max(10, size // 5)
    rows = -(-NUM_CLASSES // columns)
    cell_w, cell_h = size + pad, size + label + pad
    sheet = Image.new("RGBA", (columns * cell_w + pad, rows * cell_h + pad), (225, 225, 225, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=label * 0.8)  # Pillow's bundled scalable font: no system fonts needed
    for c in range(NUM_CLASSES):
        x, y = pad + (c % columns) * cell_w, pad + (c // columns) * cell_h
        sheet.alpha_composite(draw_sign(c, size), (x, y))
        draw.text((x + size / 2, y + size + label / 2), str(c), fill=(40, 40, 40, 255), font=font, anchor="mm")
    return sheet


def write_pictograms(out: Path, size: int = 256) -> list[Path]:
    """Write OUT/<class_id>.png for all 43 classes and OUT/contact_sheet.png; return the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for c in range(NUM_CLASSES):
        paths.append(out / f"{c}.png")
        draw_sign(c, size).save(paths[-1])
    paths.append(out / "contact_sheet.png")
    contact_sheet().save(paths[-1])
    return paths
