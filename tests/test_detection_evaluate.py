"""`signlab evaluate` on a detection run: scenes detected, scored by signlab.detection.metrics, reported. The
finder is a stand-in that knows the truth (or finds nothing), so the figures are known exactly."""

import json

import pytest
import torch
from conftest import make_detection_run, write_tiny_classifier

from signlab.cli import main
from signlab.detection import detect as detect_module
from signlab.detection.scenes import read_gtsdb
from signlab.detection.synthetic import write_synthetic_scenes

CLASS = 1  # Speed limit (30km/h): prohibitory, one of the ranked categories


class TruthFinder:
    """Proposes each scene's ground-truth boxes at score 0.9, scenes taken in order; or nothing at all."""

    def __init__(self, scenes, blind: bool = False) -> None:
        self.boxes = [[(b.x1, b.y1, b.x2, b.y2) for b in s.boxes] for s in scenes]
        self.blind, self.calls = blind, 0

    def propose(self, scene, threshold):
        boxes = [] if self.blind else self.boxes[self.calls]
        self.calls += 1
        return (torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.full((len(boxes),), 0.9),
                torch.zeros(len(boxes), dtype=torch.long))


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return write_synthetic_scenes(tmp_path_factory.mktemp("eval") / "scenes", 4, seed=3, size=(320, 200),
                                  signs=(1, 3), sign_px=(20, 48), classes=[CLASS])


@pytest.fixture
def run(tmp_path):
    return make_detection_run(tmp_path / "run", favourite=CLASS)


def evaluate_json(run, scenes, monkeypatch, capsys, blind=False, extra=()):
    finder = TruthFinder(read_gtsdb(scenes)[0], blind)
    monkeypatch.setattr(detect_module, "load_run_finder", lambda run, device, flip=False: finder)
    assert main(["evaluate", str(run), "--data", str(scenes), "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_detector_that_finds_and_names_every_sign_scores_one(run, scenes, monkeypatch, capsys):
    s = evaluate_json(run, scenes, monkeypatch, capsys)
    signs = sum(len(x.boxes) for x in read_gtsdb(scenes)[0])
    assert s["task"] == "detect" and s["scenes"] == 4 and s["signs"] == signs > 0
    assert s["ap50"]["prohibitory"] == pytest.approx(1.0) and s["map50_categories"] == pytest.approx(1.0)
    assert s["ap50"]["danger"] is None  # no danger signs in these scenes: not a zero
    assert s["map50_classes"] == pytest.approx(1.0) and s["fp_per_scene"] == 0
    assert all(v["recall"] in (None, 1.0) for v in s["recall_by_size"].values())
    assert s["scenes_per_second"] > 0 and "pr_curves" not in s
    point = s["operating_point"]  # nothing false at any score: the threshold is the lowest score detected
    assert point["fp_budget"] == 0.05 and point["fp_per_scene"] == 0 and point["threshold"] > 0
    assert all(point[k]["recall_named"] in (None, 1.0) for k in ("under_32px", "32px_and_over"))


def test_fp_budget_sets_the_operating_point(run, scenes, monkeypatch, capsys):
    point = evaluate_json(run, scenes, monkeypatch, capsys, extra=["--fp-budget", "0.5"])["operating_point"]
    assert point["fp_budget"] == 0.5


def test_fp_budget_on_a_classifier_is_one_line(tmp_path, capsys):
    weights = write_tiny_classifier(tmp_path / "clf.safetensors")
    assert main(["evaluate", str(weights), "--fp-budget", "0.1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--fp-budget is for detection runs" in err and len(err.splitlines()) == 1


def test_a_blind_detector_scores_zero_and_the_text_says_so(run, scenes, monkeypatch, capsys):
    s = evaluate_json(run, scenes, monkeypatch, capsys, blind=True)
    assert s["map50_categories"] == 0 and s["map50_classes"] == 0
    finder = TruthFinder(read_gtsdb(scenes)[0], blind=True)
    monkeypatch.setattr(detect_module, "load_run_finder", lambda run, device, flip=False: finder)
    assert main(["evaluate", str(run), "--data", str(scenes)]) == 0
    text = capsys.readouterr().out
    assert "mAP@0.5 over the three ranked categories: 0.00 %" in text
    assert "at <= 0.05 FP/scene (score >= 0.000): under 32px: found 0.0 %, named 0.0 %" in text


def test_the_report_folder_holds_the_figures(run, scenes, monkeypatch, capsys, tmp_path):
    s = evaluate_json(run, scenes, monkeypatch, capsys, extra=["--report", str(tmp_path / "report")])
    written = {p.name for p in (tmp_path / "report").iterdir()}
    assert {"metrics.json", "pr_curves.png", "worst_scenes.png"} <= written
    assert s["report"] == str(tmp_path / "report")


def test_without_data_the_runs_own_validation_blocks_are_used(run, scenes, monkeypatch, capsys):
    config = json.loads((run / "config.json").read_text())
    config.update(data=str(scenes), val_data=None, val_fraction=0.5, split_seed=0)
    (run / "config.json").write_text(json.dumps(config))
    finder = TruthFinder(read_gtsdb(scenes)[0])
    monkeypatch.setattr(detect_module, "load_run_finder", lambda run, device, flip=False: finder)
    assert main(["evaluate", str(run), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["data"].startswith("validation blocks of") and 1 <= s["scenes"] < 4


def test_tta_for_a_detection_run_mirrors_the_finder(run, scenes, monkeypatch, capsys):
    """--tta asks the run's finder for mirror averaging (finder.SceneGraph; tested in test_detection_finder)
    and the summary says so; without it the finder is asked for none."""
    asked = []
    finder = TruthFinder(read_gtsdb(scenes)[0])

    def load_run_finder(run, device, flip=False):
        asked.append(flip)
        finder.flip = flip  # as SignFinder records it
        return finder

    monkeypatch.setattr(detect_module, "load_run_finder", load_run_finder)
    assert main(["evaluate", str(run), "--data", str(scenes), "--json", "--tta"]) == 0
    assert json.loads(capsys.readouterr().out)["tta"] is True
    finder.calls = 0
    assert main(["evaluate", str(run), "--data", str(scenes), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tta"] is False and asked == [True, False]


def test_a_run_ships_its_validation_threshold_and_evaluate_scores_other_scenes_at_it(run, scenes, monkeypatch,
                                                                                     capsys):
    """write_run_threshold (the end of detector training) keeps the operating point of the run's validation
    scenes; `signlab evaluate RUN --data OTHER` scores OTHER at that fixed threshold beside its own."""
    from signlab.detection.evaluate import RUN_THRESHOLD_FILE, write_run_threshold

    config = json.loads((run / "config.json").read_text())
    config.update(val_data=str(scenes))
    (run / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(detect_module, "load_run_finder",
                        lambda r, device, flip=False: TruthFinder(read_gtsdb(scenes)[0]))
    point = write_run_threshold(run, device="cpu")
    saved = json.loads((run / RUN_THRESHOLD_FILE).read_text())
    assert saved == point and saved["scenes"] == 4 and saved["fp_budget"] == 0.05 and 0 < saved["threshold"] <= 0.9
    s = evaluate_json(run, scenes, monkeypatch, capsys)
    assert s["run_threshold_point"]["threshold"] == saved["threshold"] == s["operating_point"]["threshold"]
    assert s["run_threshold_point"]["32px_and_over"]["recall_named"] in (None, 1.0)

    (run / RUN_THRESHOLD_FILE).write_text(json.dumps({**saved, "threshold": 0.95}))  # above every score
    fixed = evaluate_json(run, scenes, monkeypatch, capsys)["run_threshold_point"]
    assert fixed["threshold"] == 0.95 and all(fixed[k]["found"] == 0 for k in ("under_32px", "32px_and_over"))
    finder = TruthFinder(read_gtsdb(scenes)[0])
    monkeypatch.setattr(detect_module, "load_run_finder", lambda r, device, flip=False: finder)
    assert main(["evaluate", str(run), "--data", str(scenes)]) == 0
    assert "at the run's own threshold, chosen on its validation scenes: (score >= 0.950)" in capsys.readouterr().out

    (run / RUN_THRESHOLD_FILE).write_text("{")
    assert main(["evaluate", str(run), "--data", str(scenes)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and RUN_THRESHOLD_FILE in err[0] and "delete it" in err[0]
