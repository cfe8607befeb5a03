"""Figures of the warning signs: people, a bicycle, a snowflake, a leaping deer, road works.

Simplified to strokes and discs, like the pictograms on the signs; each is drawn in its own box, x and y
from -0.5 to 0.5 (y down), placed by the caller with `Pen.at`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .pen import BLACK, Colour, Pen, Point, arc

Limb = Sequence[Point]


def person(pen: Pen, head: Point, neck: Point, hip: Point, limbs: Sequence[Limb], width: float, fill: Colour) -> None:
    """A figure of strokes: a round head, a thick torso, limbs as round-capped strokes."""
    pen.disc(*head, width * 0.85, fill)
    pen.stroke([neck, hip], width * 1.7, fill, round_caps=True)  # torso wider than limbs
    for limb in limbs:
        pen.stroke(limb, width, fill, round_caps=True)


def pedestrian(pen: Pen, fill: Colour = BLACK) -> None:
    """One person walking to the left, in mid stride."""
    neck, hip = (0.02, -0.2), (0.05, 0.06)
    limbs = [
        [(0.0, -0.18), (-0.1, -0.02), (-0.17, 0.1)],  # front arm
        [(0.04, -0.18), (0.13, -0.03), (0.2, 0.07)],  # back arm
        [hip, (-0.08, 0.24), (-0.18, 0.44), (-0.26, 0.44)],  # front leg and foot
        [hip, (0.12, 0.25), (0.2, 0.45), (0.12, 0.46)],  # back leg and foot
    ]
    person(pen, (0.0, -0.37), neck, hip, limbs, 0.13, fill)


def child(pen: Pen, fill: Colour = BLACK) -> None:
    """A child running to the left: arms swinging, one knee lifted, the other leg pushing off."""
    neck, hip = (-0.02, -0.18), (0.06, 0.1)
    limbs = [
        [(-0.02, -0.16), (-0.16, -0.06), (-0.22, -0.18)],  # front arm, bent up
        [(0.0, -0.14), (0.1, 0.0), (0.22, 0.0)],  # back arm
        [hip, (-0.14, 0.16), (-0.14, 0.42)],  # front leg: knee up, foot down
        [hip, (0.14, 0.3), (0.32, 0.4)],  # back leg, pushing off
    ]
    person(pen, (-0.06, -0.34), neck, hip, limbs, 0.13, fill)


def children(pen: Pen, fill: Colour = BLACK) -> None:
    """Two children running side by side to the left, the one behind a little smaller."""
    child(pen.at(0.25, 0.08, 0.74), fill)
    child(pen.at(-0.14, 0.06, 0.8), fill)


def worker(pen: Pen, fill: Colour = BLACK) -> None:
    """A road worker bent over a shovel, digging into a heap of earth on the right."""
    neck, hip = (-0.08, -0.16), (-0.22, 0.1)
    limbs = [
        [(-0.08, -0.14), (0.02, 0.02), (0.1, 0.1)],  # arms down the shovel handle
        [(-0.1, -0.14), (0.0, -0.1), (0.0, -0.02)],
        [hip, (-0.08, 0.26), (-0.12, 0.46)],  # legs apart
        [hip, (-0.3, 0.28), (-0.38, 0.46)],
    ]
    person(pen, (0.02, -0.28), neck, hip, limbs, 0.12, fill)
    pen.stroke([(-0.04, -0.08), (0.18, 0.28)], 0.06, fill)  # shovel handle
    pen.polygon([(0.1, 0.28), (0.26, 0.2), (0.34, 0.36), (0.2, 0.44)], fill)  # blade
    pen.polygon(arc(0.36, 0.5, 0.2, 0.2, 180, 360), fill)  # heap of earth


def bicycle(pen: Pen, fill: Colour = BLACK) -> None:
    """A bicycle seen from the side, front to the right."""
    w, r = 0.05, 0.21
    rear, front, crank = (-0.28, 0.16), (0.28, 0.16), (-0.02, 0.16)
    seat, head = (-0.12, -0.12), (0.18, -0.12)
    for cx, cy in (rear, front):
        pen.stroke(arc(cx, cy, r, r, 0, 360, 8.0)[:-1], w, fill, closed=True)
    pen.stroke([rear, crank, seat, rear], w, fill, closed=True)  # rear triangle
    pen.stroke([seat, head, crank], w, fill)  # top and down tubes
    pen.stroke([front, head, (0.16, -0.22)], w, fill)  # fork and stem
    pen.stroke([(0.08, -0.24), (0.22, -0.22)], w * 1.2, fill, round_caps=True)  # handlebar
    pen.stroke([(-0.2, -0.17), (-0.04, -0.17)], w * 1.5, fill, round_caps=True)  # saddle
    pen.stroke([(-0.13, -0.17), seat], w, fill)


def snowflake(pen: Pen, fill: Colour = BLACK) -> None:
    """Six arms, one pointing up, each with a V of branches two thirds of the way out."""
    w, arm = 0.1, 0.42
    for k in range(6):
        a = math.radians(90 + 60 * k)
        ux, uy = math.cos(a), math.sin(a)
        pen.stroke([(0.0, 0.0), (ux * arm, uy * arm)], w, fill)
        bx, by = ux * arm * 0.6, uy * arm * 0.6
        for side in (-1, 1):
            b = a + side * math.radians(42)
            pen.stroke([(bx, by), (bx + math.cos(b) * 0.17, by + math.sin(b) * 0.17)], w * 0.7, fill)


# A stag leaping up to the right, as a silhouette: nose, head, neck, folded forelegs, belly, one hind leg
# stretched back, rump and tail, back. The second legs and the antlers are strokes on top.
_DEER = [
    (0.40, -0.17),
    (0.34, -0.12),
    (0.24, -0.1),
    (0.2, -0.02),
    (0.3, 0.0),
    (0.37, 0.07),
    (0.35, 0.16),
    (0.3, 0.16),
    (0.31, 0.09),
    (0.22, 0.06),
    (0.1, 0.1),
    (-0.06, 0.14),
    (-0.13, 0.25),
    (-0.28, 0.36),
    (-0.32, 0.32),
    (-0.2, 0.22),
    (-0.2, 0.15),
    (-0.28, 0.1),
    (-0.35, 0.03),
    (-0.3, 0.0),
    (-0.2, -0.02),
    (0.0, -0.08),
    (0.14, -0.15),
    (0.2, -0.27),
    (0.23, -0.33),
    (0.3, -0.29),
]


def deer(pen: Pen, fill: Colour = BLACK) -> None:
    """A stag leaping up to the right: silhouette body, the far legs and the antlers as strokes."""
    pen = pen.at(-0.14, 0.04, angle=-10)  # centred on the body's mass rather than on the box
    pen.polygon(_DEER, fill)
    pen.stroke([(0.18, 0.04), (0.26, 0.14), (0.36, 0.2)], 0.065, fill, round_caps=True)  # far foreleg
    pen.stroke([(-0.1, 0.14), (-0.02, 0.28), (-0.05, 0.4)], 0.075, fill, round_caps=True)  # far hind leg
    thin = 0.04
    for beam in ([(0.22, -0.31), (0.15, -0.42), (0.13, -0.52)], [(0.25, -0.32), (0.26, -0.43), (0.3, -0.51)]):
        pen.stroke(beam, thin, fill, round_caps=True)  # antlers: two beams with a tine each
    pen.stroke([(0.15, -0.42), (0.07, -0.44)], thin, fill, round_caps=True)
    pen.stroke([(0.26, -0.42), (0.33, -0.42)], thin, fill, round_caps=True)
