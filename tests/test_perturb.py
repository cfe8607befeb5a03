"""Perturbations (signlab.perturb): each one's known effect on a made-up frame, and determinism for a seed."""

from __future__ import annotations

import numpy as np
import pytest

from signlab.perturb import (
    FULL_WELL,
    GAMMA,
    PERTURBATIONS,
    aspect,
    clean,
    crop_loose,
    crop_tight,
    defocus_blur,
    gaussian_blur,
    jpeg,
    low_light,
    motion_blur,
    overexposure,
    rotation,
    scale,
)

SQUARE_ROI = (18.0, 18.0, 82.0, 82.0)  # 64 px: one reference pixel is two frame pixels


def noise_frame(seed: int = 0, h: int = 100, w: int = 120) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def spread(image: np.ndarray) -> tuple[float, float]:
    """Variance along x and y of channel 0's brightness, as a distribution over pixel positions."""
    a = image[..., 0].astype(np.float64)
    a /= a.sum()
    y, x = np.mgrid[:a.shape[0], :a.shape[1]]
    mx, my = (a * x).sum(), (a * y).sum()
    return float((a * (x - mx) ** 2).sum()), float((a * (y - my) ** 2).sum())


def block_frame() -> np.ndarray:
    """A white 11x11 block on black in a 101x101 frame: its x and y variances are (11^2 - 1) / 12 = 10."""
    img = np.zeros((101, 101, 3), np.uint8)
    img[45:56, 45:56] = 255
    return img


def test_clean_is_identity():
    img = noise_frame()
    out, roi = clean(img, SQUARE_ROI, 0, np.random.default_rng(0))
    assert np.array_equal(out, img) and roi == SQUARE_ROI


def test_crop_tight_shrinks_the_box_by_the_fraction_about_its_centre():
    img = noise_frame(h=300, w=200)
    out, roi = crop_tight(img, (10.0, 20.0, 110.0, 220.0), 0.2, np.random.default_rng(0))
    assert roi == pytest.approx((20.0, 40.0, 100.0, 200.0))  # 100x200 -> 80x160, centre (60, 120)
    assert out is img


def test_crop_loose_grows_the_box_and_clips_it_to_the_frame():
    img = noise_frame(h=80, w=100)
    _, roi = crop_loose(img, (60.0, 20.0, 100.0, 60.0), 0.5, np.random.default_rng(0))
    # 40x40 -> 60x60 about (80, 40): (50, 10, 110, 70); the frame ends at x = 100
    assert roi == pytest.approx((50.0, 10.0, 100.0, 70.0))
    _, inside = crop_loose(img, (40.0, 30.0, 60.0, 50.0), 0.25, np.random.default_rng(0))
    assert inside == pytest.approx((37.5, 27.5, 62.5, 52.5))


@pytest.mark.parametrize("sigma", [1.0, 2.0])
def test_gaussian_blur_adds_its_variance_in_frame_pixels(sigma):
    img = block_frame()
    before = spread(img)
    out, roi = gaussian_blur(img, SQUARE_ROI, sigma, np.random.default_rng(0))
    # sigma in reference px is 2 * sigma frame px here: the block's variance grows by (2 sigma)^2
    assert spread(out)[0] - before[0] == pytest.approx((2 * sigma) ** 2, rel=0.05)
    assert roi == SQUARE_ROI


@pytest.mark.parametrize("radius", [1.0, 2.0])
def test_defocus_blur_adds_a_disks_variance(radius):
    img = block_frame()
    before = spread(img)
    out, _ = defocus_blur(img, SQUARE_ROI, radius, np.random.default_rng(0))
    r = 2 * radius  # frame px; a uniform disk of radius r has variance r^2 / 4 along x
    assert spread(out)[0] - before[0] == pytest.approx(r * r / 4, abs=0.15 * r * r / 4 + 0.1)


def test_motion_blur_spreads_along_a_line_of_the_given_length():
    img = block_frame()
    before = spread(img)
    out, _ = motion_blur(img, SQUARE_ROI, 8.0, np.random.default_rng(0))
    after = spread(out)
    # a 16-px line (8 reference px) has variance 16^2 / 12 along itself, whatever the angle; the discrete
    # taps (every half pixel, both ends included) add at most 16 / 12 and their bilinear splits about 1 px^2
    added = after[0] - before[0] + after[1] - before[1]
    assert 16**2 / 12 <= added <= 16**2 / 12 + 16 / 12 + 1.0
    assert np.abs(out.astype(int).sum() - img.astype(int).sum()) < 0.01 * img.astype(int).sum()


def test_jpeg_changes_the_bytes_keeps_the_shape_and_lower_quality_errs_more():
    y, x = np.mgrid[:64, :80]
    smooth = 128 + 60 * np.sin(x / 9.0)[..., None] * np.array([1.0, 0.5, -0.8])  # a photo is mostly smooth
    img = np.where(((x - 40) ** 2 + (y - 32) ** 2 < 400)[..., None], [200, 30, 30], smooth).astype(np.uint8)
    errors = {}
    for q in (90, 10):
        out, roi = jpeg(img, SQUARE_ROI, q, np.random.default_rng(0))
        assert out.shape == img.shape and out.dtype == np.uint8 and roi == SQUARE_ROI
        assert not np.array_equal(out, img)
        errors[q] = np.abs(out.astype(int) - img).mean()
    assert errors[10] > 2 * errors[90]


@pytest.mark.parametrize("exposure", [0.5, 0.25, 0.1])
def test_low_light_scales_linear_brightness_by_the_exposure(exposure):
    img = np.full((100, 100, 3), 160, np.uint8)
    out, _ = low_light(img, SQUARE_ROI, exposure, np.random.default_rng(0))
    linear_in = (160 / 255) ** GAMMA
    linear_out = (out.astype(np.float64) / 255) ** GAMMA
    assert linear_out.mean() == pytest.approx(exposure * linear_in, rel=0.02)
    # and the noise is the sensor's: shot noise of exposure * linear_in of the full well, stretched by the tone
    # curve (d display / d linear) into 8-bit levels
    signal = exposure * linear_in
    slope = 255 / GAMMA * signal ** (1 / GAMMA - 1)
    assert out.astype(np.float64).std() == pytest.approx(slope * np.sqrt(signal / FULL_WELL), rel=0.15)


def test_overexposure_multiplies_linear_light_and_clips_at_white():
    img = np.zeros((4, 4, 3), np.uint8)
    img[0] = 90  # linear 0.101: x3 -> 0.303, displayed as 255 * 0.303^(1/2.2) = 148
    img[1] = 200  # linear 0.586: x3 clips
    out, _ = overexposure(img, SQUARE_ROI, 3.0, np.random.default_rng(0))
    expected = round(255 * (3 * (90 / 255) ** GAMMA) ** (1 / GAMMA))
    assert (out[0] == expected).all() and (out[1] == 255).all() and (out[2] == 0).all()


def stripes(period: int) -> np.ndarray:
    x = np.arange(128)
    row = np.where((x // (period // 2)) % 2 == 0, 230, 25).astype(np.uint8)
    return np.repeat(np.repeat(row[None, :, None], 128, 0), 3, 2)


def test_scale_to_8_px_and_back_loses_fine_detail_and_keeps_coarse():
    roi = (0.0, 0.0, 128.0, 128.0)  # 128 px: 8 px is a 16x reduction
    fine, _ = scale(stripes(8), roi, 8, np.random.default_rng(0))  # period 8 px -> half a pixel at 8 px
    coarse, _ = scale(stripes(64), roi, 8, np.random.default_rng(0))  # period 64 px -> 4 px at 8 px
    assert fine[..., 0].std() < 0.05 * stripes(8)[..., 0].std()
    assert coarse[..., 0].std() > 0.6 * stripes(64)[..., 0].std()
    assert fine.shape == stripes(8).shape


def test_scale_leaves_an_roi_already_that_small_alone():
    img = noise_frame()
    out, roi = scale(img, (10.0, 10.0, 30.0, 30.0), 24, np.random.default_rng(0))
    assert out is img and roi == (10.0, 10.0, 30.0, 30.0)


@pytest.mark.parametrize("ratio", [0.75, 1.33])
def test_aspect_stretches_the_sign_inside_a_box_of_the_same_size(ratio):
    x = np.arange(100, dtype=np.float64)
    img = np.repeat(np.repeat((x * 2)[None, :, None], 60, 0), 3, 2).astype(np.uint8)  # value = 2 * column
    roi = (25.0, 10.0, 75.0, 50.0)
    out, new = aspect(img, roi, ratio, np.random.default_rng(0))
    assert new[2] - new[0] == pytest.approx(50.0) and new[1:4:2] == (10.0, 50.0)
    # the box's left edge sees what was 25 / ratio px left of the sign's centre, column 50
    assert out[30, int(new[0]), 0] / 2 == pytest.approx(50 - 25 / ratio, abs=1.5)
    assert out[30, int((new[0] + new[2]) / 2), 0] / 2 == pytest.approx(50, abs=1)


def test_rotation_turns_about_the_roi_centre_either_way():
    img = np.zeros((101, 101, 3), np.uint8)
    img[49:52, 69:72] = 255  # 20 px right of the centre (50, 50)
    roi = (20.0, 20.0, 81.0, 81.0)
    seen = set()
    for seed in range(6):
        out, back = rotation(img, roi, 90, np.random.default_rng(seed))
        y, x = np.unravel_index(out[..., 0].argmax(), out.shape[:2])
        assert back == roi and abs(int(x) - 50) <= 1 and abs(abs(int(y) - 50) - 20) <= 1
        seen.add(int(y) < 50)
    assert seen == {True, False}


@pytest.mark.parametrize("name", sorted(PERTURBATIONS))
def test_every_perturbation_is_deterministic_for_a_seed_and_leaves_its_input(name):
    p = PERTURBATIONS[name]
    img = noise_frame(3)
    copy = img.copy()
    roi = (20.0, 15.0, 90.0, 85.0)
    for severity in p.severities:
        a, roi_a = p.apply(img, roi, severity, np.random.default_rng(7))
        b, roi_b = p.apply(img, roi, severity, np.random.default_rng(7))
        assert np.array_equal(a, b) and roi_a == roi_b and a.dtype == np.uint8 and a.ndim == 3
    assert np.array_equal(img, copy)


def test_low_light_noise_depends_on_the_seed():
    img = np.full((20, 20, 3), 120, np.uint8)
    a, _ = low_light(img, SQUARE_ROI, 0.25, np.random.default_rng(1))
    b, _ = low_light(img, SQUARE_ROI, 0.25, np.random.default_rng(2))
    assert not np.array_equal(a, b)
