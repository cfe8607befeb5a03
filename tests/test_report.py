"""Tests of signlab.report: the numbers against hand-computed ones, and every report file on disk."""

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from signlab.classes import GTSRB_CLASS_NAMES
from signlab.report import (
    confusion_matrix,
    most_confused_pairs,
    per_class_accuracy,
    summarize,
    write_report,
)

NAMES4 = ("zero", "one", "two", "three")
# Hand-checked: class 0 -> 0,0,1; class 1 -> 1,2; class 2 -> 2,2,0,1; class 3 has no samples.
Y_TRUE = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
Y_PRED = np.array([0, 0, 1, 1, 2, 2, 2, 0, 1])
CM = np.array([[2, 1, 0, 0], [0, 1, 1, 0], [1, 1, 2, 0], [0, 0, 0, 0]])


def _read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def _inputs(y_true: np.ndarray, y_pred: np.ndarray, c: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities whose argmax is y_pred, and small random crops."""
    rng = np.random.default_rng(seed)
    probs = rng.random((y_true.size, c))
    probs[np.arange(y_true.size), y_pred] += c
    probs /= probs.sum(axis=1, keepdims=True)
    images = rng.integers(0, 256, (y_true.size, 16, 16, 3), dtype=np.uint8)
    return probs, images


def test_confusion_matrix_hand_example() -> None:
    cm = confusion_matrix(Y_TRUE, Y_PRED, 4)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, CM)


@pytest.mark.parametrize(
    ("y_true", "y_pred", "match"),
    [
        ([], [], "no samples"),
        ([0, 1], [0], "equal length"),
        ([0, 4], [0, 1], "outside"),
        ([0.0, 1.0], [0, 1], "integer"),
    ],
)
def test_confusion_matrix_rejects_bad_labels(y_true: list, y_pred: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        confusion_matrix(np.array(y_true), np.array(y_pred, dtype=np.int64), 4)


def test_per_class_accuracy_nan_for_empty_class() -> None:
    acc = per_class_accuracy(CM)
    np.testing.assert_allclose(acc[:3], [2 / 3, 1 / 2, 2 / 4])
    assert math.isnan(acc[3])


def test_most_confused_order_and_k() -> None:
    cm = np.array([[5, 3, 0], [1, 5, 3], [7, 0, 5]])
    original = cm.copy()
    # Ties (3) break by (true, predicted); the diagonal and zeros never appear.
    assert most_confused_pairs(cm) == [(2, 0, 7), (0, 1, 3), (1, 2, 3), (1, 0, 1)]
    assert most_confused_pairs(cm, k=2) == [(2, 0, 7), (0, 1, 3)]
    assert most_confused_pairs(cm, k=0) == []
    assert most_confused_pairs(np.diag([4, 4])) == []
    np.testing.assert_array_equal(cm, original)  # the input is not modified (the diagonal is zeroed on a copy)


def test_summarize_numbers() -> None:
    s = summarize(Y_TRUE, Y_PRED, NAMES4)
    json.dumps(s, allow_nan=False)  # strict JSON: no NaN sneaks in
    assert (s["n"], s["correct"]) == (9, 5)
    assert s["accuracy"] == pytest.approx(5 / 9)
    assert s["per_class"]["0"] == {"name": "zero", "n": 3, "accuracy": pytest.approx(2 / 3)}
    assert s["per_class"]["3"] == {"name": "three", "n": 0, "accuracy": None}
    assert s["most_confused"][0] == {
        "true": 0, "true_name": "zero", "predicted": 1, "predicted_name": "one", "count": 1,
    }
    # Four off-diagonal cells of 1 each: ties ordered by (true, predicted).
    assert [(p["true"], p["predicted"], p["count"]) for p in s["most_confused"]] == [
        (0, 1, 1), (1, 2, 1), (2, 0, 1), (2, 1, 1)]


def test_write_report_files_agree_with_summary(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    c = len(GTSRB_CLASS_NAMES)
    y_true = rng.integers(0, c - 1, 300)  # the last class gets no samples
    y_pred = np.where(rng.random(300) < 0.8, y_true, rng.integers(0, c, 300))
    probs, images = _inputs(y_true, y_pred, c)
    paths = [f"img/{i:05d}.ppm" for i in range(300)]
    out = tmp_path / "nested" / "report"

    result = write_report(out, y_true, y_pred, probs, images, paths, GTSRB_CLASS_NAMES, max_gallery=10)

    names = {"summary.json", "per_class.csv", "confusion.csv", "confusion.png", "most_confused.csv",
             "misclassified.csv", "misclassified.png"}
    assert {Path(f).name for f in result["files"]} == names
    assert all(Path(f).parent == out and Path(f).stat().st_size > 0 for f in result["files"])
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary == {k: v for k, v in result.items() if k != "files"}
    for png in ("confusion.png", "misclassified.png"):
        with Image.open(out / png) as im:
            im.verify()
            assert im.format == "PNG" and min(im.size) > 100

    per_class = _read_csv(out / "per_class.csv")
    assert per_class[0] == ["class_id", "name", "n", "correct", "accuracy"]
    assert len(per_class) == c + 1
    for cid, name, n, correct, acc in per_class[1:]:
        entry = summary["per_class"][cid]
        assert (name, int(n)) == (entry["name"], entry["n"])
        assert (acc == "") == (entry["accuracy"] is None)
        k = int(cid)
        assert int(n) == (y_true == k).sum() and int(correct) == ((y_true == k) & (y_pred == k)).sum()
        if acc:
            assert float(acc) == pytest.approx(entry["accuracy"], abs=1e-6)
            assert int(correct) / int(n) == pytest.approx(entry["accuracy"])
    assert sum(int(row[3]) for row in per_class[1:]) == summary["correct"]

    confusion = _read_csv(out / "confusion.csv")
    assert confusion[0][1:] == [str(i) for i in range(c)]
    assert [row[0] for row in confusion[1:]] == [str(i) for i in range(c)]
    cm = np.array([[int(v) for v in row[1:]] for row in confusion[1:]])
    expected = np.zeros((c, c), np.int64)
    for t, p in zip(y_true, y_pred, strict=True):  # counted one sample at a time, not by the code under test
        expected[t, p] += 1
    np.testing.assert_array_equal(cm, expected)
    assert int(np.trace(cm)) == summary["correct"] and int(cm.sum()) == summary["n"] == 300

    pairs = _read_csv(out / "most_confused.csv")
    top = [{"true": int(t), "true_name": tn, "predicted": int(p), "predicted_name": pn, "count": int(k)}
           for t, tn, p, pn, k in pairs[1:]]
    assert top[: len(summary["most_confused"])] == summary["most_confused"]
    assert sum(pair["count"] for pair in top) == summary["n"] - summary["correct"]

    errors = _read_csv(out / "misclassified.csv")[1:]
    assert sorted(int(row[0]) for row in errors) == np.flatnonzero(y_true != y_pred).tolist()
    for index, path, t, t_name, p, p_name, prob_p, prob_t in errors:
        i = int(index)
        assert (path, int(t), int(p)) == (paths[i], y_true[i], y_pred[i])
        assert (t_name, p_name) == (GTSRB_CLASS_NAMES[y_true[i]], GTSRB_CLASS_NAMES[y_pred[i]])
        assert float(prob_p) == pytest.approx(probs[i, y_pred[i]], abs=1e-6)
        assert float(prob_t) == pytest.approx(probs[i, y_true[i]], abs=1e-6)
    confidences = [float(row[6]) for row in errors]
    assert confidences == sorted(confidences, reverse=True)


def test_write_report_perfect_predictions(tmp_path: Path) -> None:
    y = np.array([0, 1, 2, 2])
    probs, images = _inputs(y, y, 4)
    result = write_report(tmp_path, y, y, probs, images, ["a", "b", "c", "d"], NAMES4)
    assert result["accuracy"] == 1.0 and result["most_confused"] == []
    assert len(_read_csv(tmp_path / "misclassified.csv")) == 1  # the header only
    assert len(_read_csv(tmp_path / "most_confused.csv")) == 1
    with Image.open(tmp_path / "misclassified.png") as im:
        im.verify()


def test_write_report_rejects_bad_input(tmp_path: Path) -> None:
    empty = np.zeros(0, dtype=np.int64)
    with pytest.raises(ValueError, match="no samples"):
        no_images = np.zeros((0, 8, 8, 3), np.uint8)
        write_report(tmp_path / "r", empty, empty, np.zeros((0, 4)), no_images, [], NAMES4)
    y = np.array([0, 1])
    probs, images = _inputs(y, y, 4)
    with pytest.raises(ValueError, match="probs"):
        write_report(tmp_path / "r", y, y, probs[:, :3], images, ["a", "b"], NAMES4)
    with pytest.raises(ValueError, match="images"):
        write_report(tmp_path / "r", y, y, probs, images.astype(np.float32), ["a", "b"], NAMES4)
    with pytest.raises(ValueError, match="paths"):
        write_report(tmp_path / "r", y, y, probs, images, ["a"], NAMES4)
    assert not (tmp_path / "r").exists()


def test_report_does_not_import_torch() -> None:
    # A fresh interpreter: this test session may already have torch loaded by other tests.
    code = "import sys, signlab.report; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_track_errors_name_the_physical_signs_that_hold_the_errors():
    from signlab.report import track_errors

    paths = [f"Images/{c:05d}/{t:05d}_{f:05d}.ppm" for c, t in ((38, 51), (16, 6), (1, 2)) for f in range(3)]
    tracks = np.repeat([38_000_051, 16_000_006, 1_000_002], 3)
    y_true = np.repeat([38, 16, 1], 3)
    y_pred = y_true.copy()
    y_pred[[0, 1, 2, 4]] = 39  # all of 38/51, one of 16/6
    summary = track_errors(y_true, y_pred, tracks, paths)
    assert summary["n"] == 3 and summary["with_errors"] == 2
    assert summary["worst"] == [{"track": "00038/00051", "class": 38, "errors": 3, "n": 3},
                                {"track": "00016/00006", "class": 16, "errors": 1, "n": 3}]
    assert track_errors(y_true, y_pred, np.full(9, -1), paths) is None  # test images carry no tracks


def test_gtsrb_classes_get_signlabs_drawings_matched_by_name():
    from signlab.report_plots import class_pictograms

    assert class_pictograms(NAMES4) is None  # not GTSRB's classes: no drawings
    icons = class_pictograms(GTSRB_CLASS_NAMES, side=24)
    assert len(icons) == 43 and all(i.shape == (24, 24, 3) and i.dtype == np.uint8 for i in icons)
    assert len({i.tobytes() for i in icons}) == 43  # every class drawn differently
    stop, no_entry = GTSRB_CLASS_NAMES[14], GTSRB_CLASS_NAMES[17]
    subset = class_pictograms([no_entry, stop], side=24)  # a model with two classes, in its own order
    assert np.array_equal(subset[0], icons[17]) and np.array_equal(subset[1], icons[14])
    corner = icons[14][0, 0]
    assert corner.tolist() == [255, 255, 255]  # on white, outside the octagon
    centre = icons[14][4, 8].astype(int)  # the stop sign's red, above its lettering
    assert centre[0] > 150 and centre[1] < 90 and centre[2] < 90


def test_gallery_tiles_show_the_true_and_predicted_drawings_below_the_crop():
    from signlab.report_plots import with_icons

    crop = np.zeros((32, 32, 3), np.uint8)
    red, blue = np.full((48, 48, 3), (200, 0, 0), np.uint8), np.full((48, 48, 3), (0, 0, 200), np.uint8)
    tile = with_icons(crop, red, blue)
    assert tile.shape == (48, 32, 3)
    assert (tile[:32] == 0).all()  # the crop, untouched
    assert (tile[32:, :16] == (200, 0, 0)).all() and (tile[32:, 16:] == (0, 0, 200)).all()  # true | predicted


def test_worst_signs_rows_show_every_error_of_a_sign_then_fill_with_correct_shots():
    from signlab.report_plots import pick_shots

    members = np.arange(100, 130)  # one track of 30 shots
    wrong = np.zeros(30, bool)
    wrong[[3, 17]] = True
    picked = pick_shots(members, wrong, 10)
    assert len(picked) == 10 and {103, 117} <= set(picked.tolist()) and (np.diff(picked) > 0).all()
    assert pick_shots(members, np.ones(30, bool), 4).tolist() == [100, 110, 119, 129]  # spread over the errors
    assert pick_shots(members[:3], wrong[:3], 10).tolist() == [100, 101, 102]  # a short track: all of it


def test_report_adds_worst_signs_only_with_tracks_and_errors(tmp_path):
    y_true = np.repeat([0, 1, 2], 6)
    y_pred = y_true.copy()
    y_pred[[1, 2, 8]] = [1, 1, 0]
    probs, images = _inputs(y_true, y_pred, 43)
    paths = [f"{i}.png" for i in range(18)]
    tracks = np.repeat([5, 6, 7], 6)
    with_tracks = write_report(tmp_path / "a", y_true, y_pred, probs, images, paths, GTSRB_CLASS_NAMES,
                               tracks=tracks)
    assert str(tmp_path / "a" / "worst_signs.png") in with_tracks["files"]
    assert Image.open(tmp_path / "a" / "worst_signs.png").size[1] > 100
    without = write_report(tmp_path / "b", y_true, y_pred, probs, images, paths, GTSRB_CLASS_NAMES)
    assert not (tmp_path / "b" / "worst_signs.png").exists() and len(without["files"]) == len(with_tracks["files"]) - 1
    perfect = write_report(tmp_path / "c", y_true, y_true, probs, images, paths, GTSRB_CLASS_NAMES, tracks=tracks)
    assert not (tmp_path / "c" / "worst_signs.png").exists() and perfect["accuracy"] == 1.0
