"""The naming stage (signlab.detection.detect), `signlab detect` and `signlab.load(run).detect`, with a stand-in
finder in front of a tiny untrained classifier: what is tested here is how proposals become named detections,
not how good either stage is."""

import json

import numpy as np
import pytest
import torch
from conftest import BoxFinder, draw_sign_scene, make_detection_run, write_tiny_classifier
from PIL import Image

import signlab
from signlab.classes import GTSRB_CLASS_NAMES
from signlab.cli import main
from signlab.detection import detect as detect_module
from signlab.detection.boxes import category_of
from signlab.detection.detect import crop_signs, load_detector
from signlab.detection.synthetic import write_synthetic_scenes
from signlab.errors import UserError
from signlab.preprocess import Preprocessing

BOXES = [[100, 60, 139, 99], [300, 20, 315, 35], [10, 150, 73, 213]]  # inclusive corners, 40, 16, 64 px
SCORES = [0.95, 0.6, 0.3]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_detection_run(tmp_path_factory.mktemp("detect") / "run")


@pytest.fixture
def stand_in(monkeypatch):
    """The run's finder replaced by BoxFinder (signlab.detection.finder is another stage's business)."""
    finder = BoxFinder(BOXES, SCORES)
    monkeypatch.setattr(detect_module, "load_run_finder", lambda run, device, flip=False: finder)
    return finder


@pytest.fixture
def scenes(tmp_path):
    """Three GTSDB-layout scenes (00000.jpg, 00001.jpg, 00002.ppm) and their gt.txt."""
    folder = write_synthetic_scenes(tmp_path / "scenes", 3, seed=1, size=(360, 240), sign_px=(16, 48))
    Image.open(folder / "00002.jpg").save(folder / "00002.ppm")
    (folder / "00002.jpg").unlink()
    return folder


def test_crops_are_framed_as_the_classifiers_training_images():
    scene = np.zeros((100, 120, 3), np.uint8)
    scene[20:52, 30:62] = 200  # a 32x32 "sign" at inclusive corners (30, 20, 61, 51)
    scene[20:52, 30:46, 0] = 50  # its left half differs, so a shifted crop would show
    box = torch.tensor([[30.0, 20.0, 61.0, 51.0]])
    roi = crop_signs(scene, box, Preprocessing(image_size=32, crop="roi"))
    assert roi.shape == (1, 32, 32, 3) and np.array_equal(roi[0], scene[20:52, 30:62])  # the ROI, pixel for pixel
    full = crop_signs(scene, box, Preprocessing(image_size=32, crop="full"))[0]
    # crop "full": GTSRB's border (10 % of the side, at least 5 px) is background all round the sign.
    assert full[0].max() == 0 and full[-1].max() == 0 and full[:, 0].max() == 0 and full[:, -1].max() == 0
    assert full[16, 16].min() > 0
    edge = crop_signs(scene, torch.tensor([[0.0, 0.0, 9.0, 9.0], [110.0, 90.0, 119.0, 99.0]]),
                      Preprocessing(crop="full"))
    assert edge.shape == (2, 32, 32, 3)  # boxes at the scene's edges are clipped to it, not refused


def test_detections_are_proposals_named_in_one_forward_pass(run):
    finder = BoxFinder(BOXES, SCORES)
    detector = load_detector(run, "cpu", finder=finder)
    scene = draw_sign_scene(360, 240, (120, 80), 20)
    forwards = []
    detector.classifier.model.register_forward_hook(lambda *_: forwards.append(1))
    found = detector.detect(scene, threshold=0.01)
    assert finder.calls == 1 and len(forwards) == 1  # every crop of the scene in one batch
    probs = detector.probabilities(scene, torch.tensor(BOXES, dtype=torch.float32))  # (3, 43)
    # The score is the proposal's score times the classifier's probability of its top class.
    expected = sorted(((s * float(p.max()), int(p.argmax()), b) for s, p, b in zip(SCORES, probs, BOXES, strict=True)),
                      reverse=True)
    assert [(d.x1, d.y1, d.x2, d.y2) for d in found] == [tuple(float(v) for v in b) for _, _, b in expected]
    assert [d.class_id for d in found] == [c for _, c, _ in expected]
    assert [d.score for d in found] == pytest.approx([s for s, _, _ in expected], rel=1e-5)
    high = detector.detect(scene, threshold=0.5)
    assert [d.score for d in high] == [d.score for d in found if d.score >= 0.5] and len(high) < len(found)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        detector.detect(scene.astype(np.float32))


def test_the_crops_go_through_the_classifiers_own_preprocessing(run):
    """Naming a box gives what signlab.load(classifier).probabilities gives for that crop: one preprocessing."""
    detector = load_detector(run, "cpu", finder=BoxFinder(BOXES, SCORES))
    scene = draw_sign_scene(360, 240, (120, 80), 20)
    crops = crop_signs(scene, torch.tensor(BOXES, dtype=torch.float32), detector.preprocessing)
    by_api = signlab.load(run / "classifier.safetensors", device="cpu").probabilities(list(crops))
    by_detector = detector.probabilities(scene, torch.tensor(BOXES, dtype=torch.float32)).numpy()
    assert np.allclose(by_detector, by_api, atol=1e-5)
    assert len(set(by_detector.argmax(1).tolist())) >= 1 and not np.allclose(by_detector[0], by_detector[2])


def test_cli_json_is_one_array_with_the_documented_schema(run, stand_in, scenes, capsys):
    code = main(["detect", str(run), str(scenes / "00000.jpg"), str(scenes / "00001.jpg"), "--json", "--device", "cpu"])
    out = capsys.readouterr()
    assert code == 0 and out.err == ""
    results = json.loads(out.out)
    assert [r["path"] for r in results] == [str(scenes / "00000.jpg"), str(scenes / "00001.jpg")]
    for r in results:
        assert list(r) == ["path", "width", "height", "detections"] and (r["width"], r["height"]) == (360, 240)
        assert r["detections"], "the stand-in's two best proposals pass 0.5 with a confident classifier"
        for d in r["detections"]:
            assert list(d) == ["box", "class_id", "name", "category", "score"]
            assert len(d["box"]) == 4 and all(isinstance(v, float) for v in d["box"])
            assert isinstance(d["class_id"], int) and d["name"] == GTSRB_CLASS_NAMES[d["class_id"]]
            assert d["category"] == category_of(d["class_id"]) and 0.5 <= d["score"] <= 1.0
            assert d["box"] in [[float(v) for v in b] for b in BOXES]
        scores = [d["score"] for d in r["detections"]]
        assert scores == sorted(scores, reverse=True)


def test_threshold_sets_the_lowest_score_kept(run, stand_in, scenes, capsys):
    counts = {}
    for threshold in ("0.01", "0.5", "0.99"):
        assert main(["detect", str(run), str(scenes / "00000.jpg"), "--json", "--threshold", threshold]) == 0
        found = json.loads(capsys.readouterr().out)[0]["detections"]
        assert all(d["score"] >= float(threshold) for d in found)
        counts[threshold] = len(found)
    assert counts == {"0.01": 3, "0.5": 2, "0.99": 0}
    assert main(["detect", str(run), str(scenes / "00000.jpg"), "--threshold", "1.5"]) == 2
    assert "--threshold" in capsys.readouterr().err


def test_threshold_run_is_the_runs_own_operating_threshold(run, stand_in, scenes, capsys):
    assert main(["detect", str(run), str(scenes / "00000.jpg"), "--threshold", "run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "operating_point.json" in err[0] and "--threshold 0.3" in err[0]
    detector = signlab.load(run, device="cpu")
    assert detector.run_threshold is None
    with pytest.raises(UserError, match="operating_point.json"):
        detector.detect(scenes / "00000.jpg", threshold="run")
    (run / "operating_point.json").write_text(json.dumps({"threshold": 0.01}))
    assert main(["detect", str(run), str(scenes / "00000.jpg"), "--json", "--threshold", "run"]) == 0
    assert len(json.loads(capsys.readouterr().out)[0]["detections"]) == 3  # as at --threshold 0.01 (default: 2)
    assert detector.run_threshold == 0.01 and len(detector.detect(scenes / "00000.jpg", threshold="run")) == 3


def test_folders_text_output_and_drawn_scenes(run, stand_in, scenes, tmp_path, capsys):
    out = tmp_path / "drawn"
    assert main(["detect", str(run), str(scenes), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = ("00000.jpg", "00001.jpg", "00002.ppm")  # sorted, and gt.txt is no scene
    assert [line.split(":")[0] for line in lines] == [str(scenes / n) for n in names]
    assert "2 signs: Stop" in lines[0]  # the tiny classifier leans to class 14
    for name in names:
        drawn = np.asarray(Image.open(out / f"{name[:5]}.annotated.jpg").convert("RGB"))
        original = np.asarray(Image.open(scenes / name).convert("RGB"))
        assert drawn.shape == original.shape
        x1, y1, x2, y2 = BOXES[0]  # the best box is outlined just outside its edge, in "other"'s green (Stop)
        column = drawn[y1:y2 + 1, x1 - 1].astype(int)
        assert (column[:, 1] - (column[:, 0] + column[:, 2]) / 2).mean() > 30
        assert np.abs(original[y1:y2 + 1, x1 - 1].astype(int) - column).mean() > 15


def test_unreadable_scenes_are_named_and_the_others_still_reported(run, stand_in, scenes, tmp_path, capsys):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes((scenes / "00000.jpg").read_bytes()[:2000])
    args = [scenes / "00000.jpg", tmp_path / "broken.jpg", truncated, tmp_path / "missing.jpg", scenes / "00001.jpg"]
    code = main(["detect", str(run), *map(str, args), "--json"])
    out = capsys.readouterr()
    assert code == 2
    assert [r["path"] for r in json.loads(out.out)] == [str(scenes / "00000.jpg"), str(scenes / "00001.jpg")]
    errors = out.err.strip().splitlines()
    assert len(errors) == 3 and "Traceback" not in out.err
    for bad, line in zip(("missing.jpg", "broken.jpg", "truncated.jpg"), errors, strict=True):
        assert bad in line and line.startswith("signlab detect: error:")


def test_a_run_that_is_not_a_detection_run_is_one_line(tmp_path, capsys):
    classify = tmp_path / "classify"
    classify.mkdir()
    (classify / "config.json").write_text(json.dumps({"model": "signnet"}))
    write_tiny_classifier(classify / "best.safetensors")
    for target, says in ((classify, "task classify"), (tmp_path, "no readable config.json"),
                         (tmp_path / "nope", "no such run folder")):
        assert main(["detect", str(target), str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and says in err and "signlab train --task detect" in err
    assert isinstance(signlab.load(classify, device="cpu"), signlab.Classifier)  # classification unchanged


def test_a_detection_run_needs_a_gtsrb_classifier(tmp_path, stand_in):
    run = make_detection_run(tmp_path / "run")
    (run / "classifier.safetensors").unlink()
    with pytest.raises(UserError, match="no classifier.safetensors"):
        load_detector(run, "cpu")
    write_tiny_classifier(run / "classifier.safetensors", favourite=1, num_classes=3)
    with pytest.raises(UserError, match="knows 3 classes, not GTSRB's 43"):
        load_detector(run, "cpu")


def test_api_load_gives_a_detector_that_agrees_with_the_cli(run, stand_in, scenes, capsys):
    detector = signlab.load(run, device="cpu")
    assert isinstance(detector, signlab.Detector) and detector.task == "detect" and len(detector.class_names) == 43
    assert "Detector" in repr(detector)
    by_path = detector.detect(scenes / "00000.jpg")
    array = np.asarray(Image.open(scenes / "00000.jpg").convert("RGB"))
    assert by_path == detector.detect(array) == detector.detect(Image.fromarray(array).convert("RGBA"))
    both = detector.detect([scenes / "00000.jpg", array], threshold=0.01)
    assert len(both) == 2 and len(both[0]) == 3 and both[0] == both[1]
    assert main(["detect", str(run), str(scenes / "00000.jpg"), "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)[0]["detections"]
    assert [d.to_json() for d in by_path] == cli
    with pytest.raises(UserError, match="missing.jpg"):
        detector.detect(scenes / "missing.jpg")


def test_a_real_detection_run_with_its_own_finder(tmp_path, capsys):
    """The real pieces together: a detection run folder as training writes it (an untrained finder here), read
    by load_finder, in front of the classifier; the CLI and the API agree on it."""
    from signlab.checkpoint import save_weights
    from signlab.config import TrainConfig
    from signlab.models import create_model

    torch.manual_seed(0)
    options = {"widths": [8, 8, 16, 16], "neck": 8}
    cfg = TrainConfig(task="detect", model="signfinder", model_options=options, bf16="off", out=str(tmp_path / "run"))
    run = make_detection_run(tmp_path / "run")
    cfg.save(run / "config.json")
    tensors = {f"model.{k}": v for k, v in create_model("signfinder", **options).state_dict().items()}
    save_weights(run / "last.safetensors", tensors, {"config": cfg.to_dict(), "task": "detect"})
    scenes = write_synthetic_scenes(tmp_path / "scenes", 2, seed=3, size=(256, 160), sign_px=(16, 40))
    assert main(["detect", str(run), str(scenes), "--json", "--threshold", "0", "--device", "cpu"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results[0]["detections"], "at threshold 0 every proposal of the finder is named"
    assert [r["path"] for r in results] == [str(scenes / "00000.jpg"), str(scenes / "00001.jpg")]
    assert all((r["width"], r["height"]) == (256, 160) for r in results)
    api = signlab.load(run, device="cpu").detect(scenes / "00000.jpg", threshold=0.0)
    assert [d.to_json() for d in api] == results[0]["detections"]
    assert main(["detect", str(run), str(scenes / "00000.jpg"), "--json", "--threshold", "0", "--tta"]) == 0
    mirrored = json.loads(capsys.readouterr().out)[0]["detections"]
    assert mirrored and mirrored != results[0]["detections"], "--tta: the finder looks at the mirror image too"
    api = signlab.load(run, device="cpu", tta=True).detect(scenes / "00000.jpg", threshold=0.0)
    assert [d.to_json() for d in api] == mirrored


def test_another_finder_in_front_of_the_runs_classifier(run, tmp_path):
    """load_detector(finder=...) puts another first stage before the run's classifier: here the colour and
    shape proposals (no weights), which find the drawn signs of signlab's synthetic scenes."""
    from signlab.detection.boxes import box_iou
    from signlab.detection.proposals import ColourShapeFinder
    from signlab.detection.scenes import load_scene, read_gtsdb

    detector = load_detector(run, "cpu", finder=ColourShapeFinder())
    root = write_synthetic_scenes(tmp_path / "scenes", 3, seed=2, size=(360, 240), signs=(2, 3), sign_px=(24, 48))
    scenes, _ = read_gtsdb(root)
    matched = total = 0
    for scene in scenes:
        found = detector.detect(load_scene(scene.path), threshold=0.3)
        truth = torch.tensor([[b.x1, b.y1, b.x2, b.y2] for b in scene.boxes])
        if found:
            boxes = torch.tensor([[d.x1, d.y1, d.x2, d.y2] for d in found])
            matched += int((box_iou(truth, boxes).amax(dim=1) >= 0.5).sum())
        total += len(truth)
    assert total == 8 and matched >= 6


def test_predict_on_a_detection_run_is_one_line(tmp_path, capsys):
    from signlab.checkpoint import save_weights

    run = make_detection_run(tmp_path / "run")
    save_weights(run / "best.safetensors", {"model.w": torch.zeros(1)}, {"task": "detect", "config": {}})
    Image.new("RGB", (40, 40), "red").save(tmp_path / "sign.png")
    assert main(["predict", str(run), str(tmp_path / "sign.png")]) == 2
    err = capsys.readouterr().err
    assert "detection run" in err and "signlab detect" in err and len(err.strip().splitlines()) == 1
