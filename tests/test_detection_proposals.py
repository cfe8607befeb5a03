import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from signlab.detection.boxes import CATEGORIES, box_iou, category_of
from signlab.detection.proposals import ColourShapeFinder, shape_fit, white_balance
from signlab.errors import UserError
from signlab.synth.pictograms import draw_sign

# speed limit 30 (prohibitory), general caution (danger), keep right (mandatory), no entry, give way and
# priority road (other)
CASES = {1: "prohibitory", 11: "danger", 38: "mandatory", 17: "other", 13: "other", 12: "other"}


def background(height: int, width: int, rng: np.random.Generator, noisy: bool) -> Image.Image:
    """Plain grey-green, or low-frequency blotches in greys and greens with pixel noise (trees, road, walls)."""
    if not noisy:
        return Image.new("RGB", (width, height), (110, 120, 105))
    coarse = rng.integers(40, 200, (height // 40 + 2, width // 40 + 2, 3)).astype(np.uint8)
    coarse[..., 0] = np.minimum(coarse[..., 0], coarse[..., 1])  # no red blotches: those would be signs
    coarse[..., 2] = np.minimum(coarse[..., 2], coarse[..., 1])
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
    noise = rng.normal(0, 8, (height, width, 3))
    return Image.fromarray(np.clip(smooth + noise, 0, 255).astype(np.uint8))


def paste(scene: Image.Image, class_id: int, size: int, x: int, y: int) -> tuple[int, int, int, int]:
    """Draw the sign at (x, y); its box (inclusive corners) is where the pictogram is opaque."""
    sign = draw_sign(class_id, size)
    scene.paste(sign, (x, y), sign)
    alpha = np.asarray(sign)[..., 3] > 127
    rows, cols = np.flatnonzero(alpha.any(1)), np.flatnonzero(alpha.any(0))
    return x + int(cols[0]), y + int(rows[0]), x + int(cols[-1]), y + int(rows[-1])


def found(result, box, category: str | None = None) -> bool:
    boxes, _, categories = result
    if not len(boxes):
        return False
    hit = box_iou(torch.tensor([box], dtype=torch.float32), boxes)[0] >= 0.5
    if category is not None:
        hit &= categories == CATEGORIES.index(category)
    return bool(hit.any())


@pytest.mark.parametrize("noisy", [False, True])
@pytest.mark.parametrize("size", [20, 36, 80])
def test_finds_each_shape_and_colour_with_its_category(size, noisy):
    rng = np.random.default_rng(size)
    scene = background(240, 160 * len(CASES), rng, noisy)
    boxes = {c: paste(scene, c, size, 160 * i + 40, 60) for i, c in enumerate(CASES)}
    result = ColourShapeFinder().propose(np.asarray(scene), 0.5)
    for class_id, category in CASES.items():
        assert found(result, boxes[class_id], category), (class_id, size, noisy)


def test_ignores_grey_and_red_squares_and_plain_background():
    scene = background(200, 400, np.random.default_rng(0), noisy=True)
    scene.paste((128, 128, 128), (40, 60, 100, 120))  # a grey square: no colour
    scene.paste((200, 30, 30), (200, 60, 260, 120))  # a red square: no sign of the 43 classes is one
    boxes, scores, categories = ColourShapeFinder().propose(np.asarray(scene), 0.5)
    assert len(boxes) == len(scores) == len(categories) == 0


def test_output_follows_the_sign_finder_contract():
    scene = background(200, 400, np.random.default_rng(1), noisy=False)
    paste(scene, 2, 50, 30, 30)
    paste(scene, 25, 40, 200, 40)
    boxes, scores, categories = ColourShapeFinder().propose(np.asarray(scene), 0.3)
    assert boxes.shape == (len(scores), 4) and boxes.dtype == torch.float32 and categories.dtype == torch.long
    assert len(scores) >= 2 and torch.all(scores[:-1] >= scores[1:])
    assert torch.all((scores >= 0.3) & (scores <= 1)) and torch.all(boxes[:, 2:] >= boxes[:, :2])
    assert torch.all(boxes >= 0) and torch.all(boxes[:, 2] <= 399) and torch.all(boxes[:, 3] <= 199)
    strict = ColourShapeFinder().propose(np.asarray(scene), 0.99)[1]
    assert torch.all(strict >= 0.99)
    with pytest.raises(UserError, match="uint8"):
        ColourShapeFinder().propose(np.zeros((20, 20)), 0.5)


def test_shape_fit_tells_rings_discs_and_triangles_apart():
    y, x = np.mgrid[:40, :40] + 0.5
    r = np.hypot(x - 20, y - 20)
    ring = (r <= 20) & (r > 16)
    ring[18:22, :6] = False  # broken on one side, as JPEG leaves thin rings
    shape, fit, coloured, band = shape_fit(ring)
    assert shape == "disc" and fit > 0.8 and coloured < 0.5 and band > 0.7
    assert shape_fit(r <= 20)[0] == "disc" and shape_fit(r <= 20)[2] > 0.9
    speckle = np.random.default_rng(0).random((40, 40)) < 0.3
    assert shape_fit(speckle)[3] < 0.5  # fills like a square or disc, but its band is as sparse as its middle
    assert shape_fit(y[:35] >= 2 * np.abs(x[:35] - 20) * 35 / 40)[0] == "up"
    assert shape_fit(np.ones((30, 30), dtype=bool))[0] == "square"


def test_white_balance_lifts_red_out_of_a_blue_cast_only():
    scene = background(120, 200, np.random.default_rng(2), noisy=False)
    box = paste(scene, 3, 40, 80, 40)
    dusk = (np.asarray(scene, dtype=np.float32) * [0.55, 0.7, 1.0] * 0.6).astype(np.uint8)  # dark and blue
    assert found(ColourShapeFinder().propose(dusk, 0.5), box, "prohibitory")
    assert not found(ColourShapeFinder(balance=0.0).propose(dusk, 0.5), box, "prohibitory")
    warm = np.asarray(scene)  # its red outweighs its blue: left as it is
    assert all(np.array_equal(plane, warm[..., c]) for c, plane in enumerate(white_balance(warm)))


def degrade(scene: Image.Image, rng: np.random.Generator) -> np.ndarray:
    """Camera-like: slight blur, darker and less saturated light, sensor noise, JPEG at GTSDB's quality 75."""
    scene = scene.filter(ImageFilter.GaussianBlur(0.8))
    pixels = np.asarray(scene, dtype=np.float32)
    grey = pixels.mean(axis=2, keepdims=True)
    pixels = (0.7 * pixels + 0.3 * grey) * rng.uniform(0.55, 1.0) + rng.normal(0, 4, pixels.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=75)
    return np.asarray(Image.open(buffer).convert("RGB"))


def test_recall_on_real_like_scenes():
    rng = np.random.default_rng(7)
    finder, hits, total, proposals = ColourShapeFinder(), 0, 0, 0
    ranked = [c for c, cat in CASES.items() if cat != "other"] + [3, 5, 14, 18, 25, 33, 35, 40]
    for _ in range(3):
        scene = background(400, 1000, rng, noisy=True)
        boxes = {}
        for i, class_id in enumerate(rng.choice(ranked, 6, replace=False)):
            size = int(rng.integers(20, 81))
            x = 160 * i + int(rng.integers(0, 160 - size))
            boxes[int(class_id)] = paste(scene, int(class_id), size, x, int(rng.integers(20, 400 - size - 20)))
        result = finder.propose(degrade(scene, rng), 0.5)
        proposals += len(result[0])
        for class_id, box in boxes.items():
            total += 1
            hits += found(result, box, category_of(class_id))
    assert hits / total >= 0.85, f"recall {hits}/{total}"
    assert proposals <= 6 * total

