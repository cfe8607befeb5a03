"""The detection report's files, on small scenes the tests write."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from signlab.detection.boxes import Detection, SignBox
from signlab.detection.metrics import evaluate_detections, match_scenes, recall_by_width
from signlab.detection.report import (
    SIZE_BINS,
    draw_scene,
    draw_worst_scenes,
    size_series,
    worst_scenes,
    write_detection_report,
)

GREEN, BLUE, RED = (40, 200, 60), (40, 110, 255), (235, 40, 40)


@dataclass(frozen=True)
class Scene:  # the duck type the report reads: .path and .boxes
    path: Path
    boxes: tuple[SignBox, ...]


def write_scene(folder: Path, name: str, *boxes: SignBox, size=(320, 200)) -> Scene:
    """A flat grey road scene: the report only needs an image to draw on."""
    path = folder / name
    Image.new("RGB", size, (128, 128, 128)).save(path)
    return Scene(path, boxes)


def on(s: SignBox, score: float, class_id: int | None = None, dx: float = 0) -> Detection:
    return Detection(s.x1 + dx, s.y1, s.x2 + dx, s.y2, s.class_id if class_id is None else class_id, score)


def made_up(tmp_path: Path):
    """Scene a: a sign found right and one missed. Scene b: no sign, one false detection. Scene c: all right."""
    s1, s2, s3 = SignBox(20, 60, 59, 99, 1), SignBox(200, 60, 219, 79, 11), SignBox(50, 50, 99, 99, 38)
    scenes = [write_scene(tmp_path, "a.png", s1, s2), write_scene(tmp_path, "b.jpg"),
              write_scene(tmp_path, "c.png", s3)]
    detections = [[on(s1, 0.9)], [Detection(100, 20, 139, 59, 14, 0.8)], [on(s3, 0.95)]]
    return scenes, detections


def colour_near(image: np.ndarray, x: int, y: int, colour) -> bool:
    """The pixel at (x, y) or one beside it has the colour (the outline is 2 px wide)."""
    patch = image[y - 1: y + 2, x - 1: x + 2].reshape(-1, 3)
    return bool((np.abs(patch.astype(int) - colour).max(axis=1) <= 2).any())


def test_report_writes_its_four_files(tmp_path):
    scenes, detections = made_up(tmp_path)
    metrics = evaluate_detections(scenes, detections)
    paths = write_detection_report(tmp_path / "report", scenes, detections, metrics)
    assert [p.name for p in paths] == ["metrics.json", "pr_curves.png", "recall_by_size.png", "worst_scenes.png"]
    assert json.loads(paths[0].read_text()) == json.loads(json.dumps(metrics))  # JSON-ready as given
    for path in paths[1:]:
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 50


def test_worst_scenes_are_the_ones_with_most_errors(tmp_path):
    scenes, detections = made_up(tmp_path)
    matches = match_scenes(scenes, detections)
    assert [m.errors for m in matches] == [1, 1, 0]  # a: one miss; b: one wrong; c: none
    assert worst_scenes(matches, 8) == [0, 1]  # errorless scenes are left out, ties keep scene order
    assert worst_scenes(matches, 1) == [0]
    path = draw_worst_scenes(scenes, matches, tmp_path / "worst.png", worst=2)
    with Image.open(path) as image:
        assert image.width > 2 * 600  # two tiles side by side, each at half a GTSDB scene's width


def test_scene_drawing_colours_signs_right_and_wrong(tmp_path):
    sign = SignBox(40, 80, 79, 119, 1)
    scene = write_scene(tmp_path, "s.png", sign)
    # right: on the sign, 2 px to the right (IoU 0.9); wrong: the right class far from any sign
    right, wrong = on(sign, 0.9, dx=2), Detection(200, 40, 239, 79, 1, 0.7)
    match = match_scenes([scene], [[right, wrong]])[0]
    assert match.right == (True, False)
    image = np.asarray(draw_scene(scene, match))
    assert image.shape == (200, 320, 3)
    assert colour_near(image, 40, 100, GREEN)  # the sign's left edge, halfway down (its tag is above it)
    assert colour_near(image, 81, 100, BLUE)  # the right detection's right edge
    assert colour_near(image, 200, 60, RED)  # the wrong one's left edge
    assert colour_near(image, 60, 70, GREEN)  # the sign's name tag above it


def test_unreadable_scene_still_gets_a_tile(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    scene = Scene(broken, (SignBox(10, 10, 49, 49, 14),))
    match = match_scenes([scene], [[]])[0]
    image = draw_scene(scene, match)  # a grey stand-in naming the file, the sign still drawn
    assert image.size == (1360, 800)
    assert draw_worst_scenes([scene], [match], tmp_path / "w.png").exists()


def test_a_report_without_errors(tmp_path):
    sign = SignBox(10, 10, 49, 49, 14)
    scene = write_scene(tmp_path, "ok.png", sign)
    metrics = evaluate_detections([scene], [[on(sign, 0.9)]])
    paths = write_detection_report(tmp_path / "r", [scene], [[on(sign, 0.9)]], metrics)
    with Image.open(paths[-1]) as image:  # a one-line note, not an empty or missing gallery
        assert image.height < 100


def test_recall_in_the_report_size_bins():
    # widths 16 (first bin), 30 (24-32), 128 (the last bin is closed: 64-128), 10 and 200 (outside)
    signs = [SignBox(0, 0, w - 1, w - 1, 1) for w in (16, 30, 128, 10, 200)]
    scenes = [Scene(Path(f"{i}.png"), (s,)) for i, s in enumerate(signs)]
    found = [[on(s, 0.9)] if i != 1 else [] for i, s in enumerate(signs)]
    bins = recall_by_width(scenes, match_scenes(scenes, found), SIZE_BINS)
    assert [(b["min_px"], b["max_px"], b["signs"], b["found"]) for b in bins] == [
        (16, 24, 1, 1), (24, 32, 1, 0), (32, 48, 0, 0), (48, 64, 0, 0), (64, 128, 1, 1)]
    assert bins[2]["recall"] is None and bins[1]["recall"] == 0.0


def test_recall_by_size_at_the_default_and_the_operating_threshold(tmp_path):
    # A 20 px sign found at 0.3, a 40 px sign at 0.9, no false positive: at 0.5 only the large one counts; the
    # operating point (the lowest score, 0.3) finds both. Two bars per bin, labelled by threshold.
    small, large = SignBox(0, 0, 19, 19, 1), SignBox(100, 0, 139, 39, 1)
    scenes = [write_scene(tmp_path, "s.png", small, large)]
    detections = [[on(small, 0.3), on(large, 0.9)]]
    series = size_series(scenes, detections, evaluate_detections(scenes, detections))
    default, operating = series.values()
    assert list(series) == ["score >= 0.5", "operating point: score >= 0.300, <= 0.05 FP/scene"]
    assert [b["recall"] for b in default] == [0.0, None, 1.0, None, None]  # 16-24 has the small, 32-48 the large
    assert [b["recall"] for b in operating] == [1.0, None, 1.0, None, None]
    # metrics without an operating point (an older metrics.json) draw the default bars alone
    assert len(size_series(scenes, detections, {"score_threshold": 0.5})) == 1
