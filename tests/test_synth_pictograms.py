"""The drawn pictograms: sizes, transparency, colours by sign family, distinctness, mirror pairs, files."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageFilter, ImageOps

from signlab.synth.pictograms import (
    MIRRORED,
    NUM_CLASSES,
    SIGN_COLORS,
    SIGN_SHAPES,
    contact_sheet,
    draw_sign,
    write_pictograms,
)

PROHIBITORY = [0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 15, 16, 17]
MANDATORY = list(range(33, 41))
END_OF = [6, 32, 41, 42]
SIDE = 64


@pytest.fixture(scope="module")
def signs() -> dict[int, np.ndarray]:
    """Every sign at 64 px as an RGBA int array (drawn once for the module)."""
    return {c: np.asarray(draw_sign(c, SIDE)).astype(np.int32) for c in range(NUM_CLASSES)}


def on_grey(a: np.ndarray) -> np.ndarray:
    alpha = a[..., 3:] / 255.0
    return a[..., :3] * alpha + 128 * (1 - alpha)


def pixel(a: np.ndarray, x: float, y: float) -> np.ndarray:
    """The RGBA pixel at (x, y) given as fractions of the side."""
    return a[min(int(y * SIDE), SIDE - 1), min(int(x * SIDE), SIDE - 1)]


def is_red(p) -> bool:
    return p[3] > 200 and p[0] > 150 and p[1] < 90 and p[2] < 90


@pytest.mark.parametrize("size", [16, 64, 256])
def test_every_class_draws_rgba_at_the_requested_size(size):
    for c in range(NUM_CLASSES):
        img = draw_sign(c, size)
        assert img.mode == "RGBA" and img.size == (size, size), c


def test_rejects_unknown_classes_and_sizes():
    for bad in (-1, NUM_CLASSES):
        with pytest.raises(ValueError):
            draw_sign(bad)
    with pytest.raises(ValueError):
        draw_sign(0, 0)


def test_shape_and_colour_tables_cover_every_class():
    assert set(SIGN_SHAPES) == set(SIGN_COLORS) == set(range(NUM_CLASSES))
    assert set(SIGN_SHAPES.values()) == {"triangle", "circle", "diamond", "inverted_triangle", "octagon"}
    assert set(SIGN_COLORS.values()) == {"red", "blue", "yellow", "white"}
    assert {c for c, s in SIGN_SHAPES.items() if s == "triangle"} == {11, *range(18, 32)}
    assert {c for c, col in SIGN_COLORS.items() if col == "blue"} == set(MANDATORY)


def test_corners_are_transparent_and_the_outline_touches_the_edges(signs):
    for c, a in signs.items():
        alpha = a[..., 3]
        assert alpha[0, 0] == alpha[0, -1] == alpha[-1, 0] == alpha[-1, -1] == 0, c
        x0, y0, x1, y1 = Image.fromarray(alpha.astype(np.uint8)).getbbox()
        assert (x0, y0, x1) == (0, 0, SIDE), c  # full width, from the top
        if SIGN_SHAPES[c] in ("triangle", "inverted_triangle"):
            # An equilateral triangle with corners rounded at r = 0.06 of the sharp side, scaled to span the
            # square's width: height (sqrt(3)/2 - r) / (1 - 2r(sqrt(3) - 1)) = 0.884 of the side, as in GTSRB.
            opaque_rows = np.nonzero(alpha.max(1) > 128)[0]
            assert abs(opaque_rows.max() + 1 - 0.884 * SIDE) <= 1.0, c
            assert alpha[-4:].max() == 0, c
        else:
            assert y1 == SIDE, c


def test_edges_are_antialiased(signs):
    alpha = signs[15][..., 3]
    assert ((alpha > 0) & (alpha < 255)).sum() > SIDE  # a soft rim of partial alpha all round the disc


def test_prohibitory_signs_have_a_red_ring(signs):
    r = 0.5 - 0.015 - 0.085 / 2  # middle of the red ring
    for c in PROHIBITORY:
        ring = [pixel(signs[c], 0.5 + r * math.cos(t), 0.5 + r * math.sin(t)) for t in np.linspace(0, 2 * math.pi, 16)]
        assert all(is_red(p) for p in ring), c
        if c != 17:  # no entry is a red disc; the others are white inside
            assert pixel(signs[c], 0.5, 0.2)[:3].min() > 230, c


def test_warning_signs_have_a_red_border_and_a_white_field(signs):
    for c, shape in SIGN_SHAPES.items():
        if shape != "triangle":
            continue
        a = signs[c]
        assert is_red(pixel(a, 0.5, 0.83)) and is_red(pixel(a, 0.25, 0.5)) and is_red(pixel(a, 0.75, 0.5)), c
        assert pixel(a, 0.5, 0.17)[:3].min() > 230, c  # white just under the apex, above the symbol
    yield_sign = signs[13]
    assert is_red(pixel(yield_sign, 0.5, 0.06)) and pixel(yield_sign, 0.5, 0.3)[:3].min() > 230


def test_warning_symbols_keep_clear_of_the_border():
    """No black symbol pixel within 1.5% of the side of the red border (the traffic lights have red of their own)."""
    for c, shape in SIGN_SHAPES.items():
        if shape != "triangle" or c == 26:
            continue
        a = np.asarray(draw_sign(c, 128)).astype(np.int32)
        red = Image.fromarray(((a[..., 0] > 150) & (a[..., 1] < 90) & (a[..., 3] > 200)).astype(np.uint8) * 255)
        near_red = np.asarray(red.filter(ImageFilter.MaxFilter(5))) > 0
        black = (a[..., :3].max(2) < 90) & (a[..., 3] > 200)
        assert black.any() and not (black & near_red).any(), c


def test_mandatory_signs_are_blue(signs):
    for c in MANDATORY:
        rgb = signs[c][..., :3][signs[c][..., 3] > 200]
        blue = (rgb[:, 2] > rgb[:, 0] + 80) & (rgb[:, 2] > 120)
        white = rgb.min(1) > 220
        assert blue.mean() > 0.55 and white.mean() > 0.1, c  # a blue disc with a white symbol


def test_priority_road_has_a_yellow_centre_and_stop_is_a_red_octagon(signs):
    r, g, b, _ = pixel(signs[12], 0.5, 0.5)
    assert r > 220 and g > 170 and b < 80
    stop = signs[14]
    assert is_red(pixel(stop, 0.5, 0.1)) and is_red(pixel(stop, 0.1, 0.5)) and is_red(pixel(stop, 0.5, 0.9))
    assert stop[1, SIDE // 2, 3] > 200 and stop[4, 4, 3] == 0  # flat top edge, corners cut off
    letters = stop[int(0.42 * SIDE) : int(0.58 * SIDE), int(0.15 * SIDE) : int(0.85 * SIDE), :3]
    assert (letters.min(2) > 200).mean() > 0.2  # white STOP across the middle


def test_end_of_signs_are_white_and_grey_without_red(signs):
    for c in END_OF:
        rgb = signs[c][..., :3][signs[c][..., 3] > 200]
        assert (rgb.min(1) > 220).mean() > 0.5, c
        assert not ((rgb[:, 0] > 150) & (rgb[:, 1] < 90)).any(), c


def test_all_signs_differ_pairwise(signs):
    grey = np.stack([on_grey(signs[c]) for c in range(NUM_CLASSES)])
    for c in range(NUM_CLASSES - 1):
        diff = np.abs(grey[c + 1 :] - grey[c]).mean(axis=(1, 2, 3))
        assert diff.min() > 2.0, (c, c + 1 + int(diff.argmin()))


def test_left_and_right_versions_are_mirror_images(signs):
    for left, right in [(19, 20), (33, 34), (36, 37), (38, 39)]:
        mirrored = np.asarray(ImageOps.mirror(Image.fromarray(signs[left].astype(np.uint8)))).astype(np.int32)
        assert np.abs(mirrored - signs[right]).mean() < 1.0, (left, right)
        assert np.abs(signs[left] - signs[right]).mean() > 5.0, (left, right)  # and not symmetric themselves
    assert set(MIRRORED.items()) == {(20, 19), (34, 33), (37, 36), (39, 38)}


def test_write_pictograms_writes_one_png_per_class_and_a_contact_sheet(tmp_path):
    paths = write_pictograms(tmp_path / "out", size=32)
    assert [p.name for p in paths] == [f"{c}.png" for c in range(NUM_CLASSES)] + ["contact_sheet.png"]
    with Image.open(paths[5]) as img:
        assert img.size == (32, 32) and img.mode == "RGBA"
    with Image.open(paths[-1]) as sheet:
        assert sheet.size == contact_sheet().size


def test_contact_sheet_lays_out_all_classes_on_light_grey():
    sheet = np.asarray(contact_sheet(size=40, columns=11))
    pad, label = 5, 10
    assert sheet.shape == (4 * (40 + label + pad) + pad, 11 * (40 + pad) + pad, 4)
    assert tuple(sheet[1, 1]) == (225, 225, 225, 255)


def test_drawing_does_not_import_torch():
    code = "import sys, signlab.synth.pictograms as p; p.draw_sign(0, 16); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
