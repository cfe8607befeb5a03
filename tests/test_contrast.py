import numpy as np
import pytest

from signlab.contrast import equalize_luminance, normalize_contrast
from signlab.errors import UserError


def dark_sign(rng, n=3):
    """Dim red-on-grey images using only a few low grey levels, as GTSRB's dusk shots do."""
    img = np.zeros((n, 16, 16, 3), np.uint8)
    img[..., :] = rng.integers(10, 20, (n, 16, 16, 1))
    img[:, 4:12, 4:12, 0] = 40  # a reddish square
    return img


def test_equalize_spreads_a_dark_image_over_the_full_range():
    images = dark_sign(np.random.default_rng(0))
    out = equalize_luminance(images)
    assert out.shape == images.shape and out.dtype == np.uint8
    luma = out.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    for one in luma:
        assert one.min() < 10 and one.max() > 200  # was 10..25


def test_equalize_known_answer():
    """Three grey levels with 4, 4 and 8 of 16 pixels: the cdf mapping (cdf - cdf_min) / (n - cdf_min) * 255
    sends them to 0, (8 - 4) / 12 * 255 = 85 and 255."""
    grey = np.array([10] * 4 + [20] * 4 + [30] * 8, np.uint8).reshape(1, 4, 4, 1)
    out = equalize_luminance(np.repeat(grey, 3, axis=3))
    expected = np.array([0] * 4 + [85] * 4 + [255] * 8, np.uint8).reshape(1, 4, 4, 1)
    np.testing.assert_array_equal(out, np.repeat(expected, 3, axis=3))
    # A coloured pixel in place of one grey 30: luminance 0.299 * 45 + 0.587 * 25 + 0.114 * 10 = 29.27, level
    # 29, whose cdf is 9 of 16: it maps to (9 - 4) / 12 * 255 = 106.25, and R, G, B scale by 106.25 / 29.27.
    colour = np.repeat(grey, 3, axis=3)
    colour[0, 3, 3] = (45, 25, 10)
    out = equalize_luminance(colour)
    gain = 106.25 / 29.27
    assert out[0, 3, 3].tolist() == [int(45 * gain + 0.5), int(25 * gain + 0.5), int(10 * gain + 0.5)] == [163, 91, 36]
    assert (out[0, 2:] == 255).sum() == 7 * 3  # the other grey 30s still map to white


def test_equalize_keeps_colour_ratios_where_nothing_clips():
    images = dark_sign(np.random.default_rng(1))
    out = equalize_luminance(images).astype(np.float32)
    square = out[:, 4:12, 4:12]
    assert (square[..., 0] > square[..., 1]).all()  # still red, not grey
    unclipped = (out.max(-1) < 255) & (out.min(-1) > 4)  # neither clipped nor rounded to black
    ratio_in = images[..., 0] / np.maximum(images[..., 1], 1)
    ratio_out = out[..., 0] / np.maximum(out[..., 1], 1)
    assert unclipped.mean() > 0.5 and np.allclose(ratio_in[unclipped], ratio_out[unclipped], rtol=0.1)


def test_equalize_is_per_image_and_chunked_alike():
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (7, 8, 8, 3), dtype=np.uint8)
    images[3] //= 8  # one dark image must not change the others' results
    whole = equalize_luminance(images)
    assert np.array_equal(whole, equalize_luminance(images, chunk=2))
    assert np.array_equal(whole[4], equalize_luminance(images[4:5])[0])


def test_flat_images_are_kept():
    images = np.stack([np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 128, np.uint8)])
    assert np.array_equal(equalize_luminance(images), images)


def test_method_names():
    images = np.ones((1, 4, 4, 3), np.uint8)
    assert normalize_contrast(images, "none") is images
    with pytest.raises(UserError, match="--contrast clahe"):
        normalize_contrast(images, "clahe")
