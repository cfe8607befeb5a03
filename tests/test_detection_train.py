"""Training the sign finder: a tiny one trained here finds easy signs in scenes it never saw; `signlab train`
recognises a GTSDB folder; a stopped run resumes bit-identically; a detection run needs a classifier."""

from __future__ import annotations

import csv
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_gtsrb_train
from PIL import Image, ImageDraw
from safetensors.torch import load_file

from signlab.api import train
from signlab.checkpoint import save_weights
from signlab.config import TrainConfig
from signlab.detection import mining, verify
from signlab.detection.detect import VERIFIER_FILE
from signlab.detection.evaluate import RUN_THRESHOLD_FILE
from signlab.detection.finder import load_finder
from signlab.detection.scenes import load_scene, read_gtsdb
from signlab.detection.synthetic import write_synthetic_scenes
from signlab.detection.train import FIELDS, finder_recall, scene_set
from signlab.errors import UserError
from signlab.models import create_model

# One class of each category: prohibitory (red ring), mandatory (blue disc), danger (red triangle), other
# (yellow diamond, "priority road").
CLASSES = (1, 38, 11, 12)


def draw_sign(draw: ImageDraw.ImageDraw, class_id: int, x1: int, y1: int, side: int) -> None:
    x2, y2 = x1 + side - 1, y1 + side - 1
    if class_id == 1:
        draw.ellipse((x1, y1, x2, y2), fill=(200, 20, 30))
        inset = max(2, side // 6)
        draw.ellipse((x1 + inset, y1 + inset, x2 - inset, y2 - inset), fill=(240, 240, 240))
    elif class_id == 38:
        draw.ellipse((x1, y1, x2, y2), fill=(20, 60, 200))
    elif class_id == 11:
        draw.polygon([(x1, y2), (x2, y2), ((x1 + x2) / 2, y1)], fill=(200, 20, 30))
    else:
        draw.polygon([((x1 + x2) / 2, y1), (x2, (y1 + y2) / 2), ((x1 + x2) / 2, y2), (x1, (y1 + y2) / 2)],
                     fill=(240, 200, 20))


def write_scenes(root: Path, count: int, seed: int, size=(256, 160), sign_px=(20, 48)) -> Path:
    """A GTSDB-layout folder of easy scenes: noisy sky-to-ground gradients with grey clutter, 0-2 flat signs a
    scene. signlab.detection.synthetic's road scenes (perspective, blur, fading, sign-like distractors) are
    the realistic ones; a finder small enough to train here finds about 55 % of their signs, and 240 of them
    take 10-20 s to write, so the recall test uses these and the other tests use those."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    lines = []
    w, h = size
    for i in range(count):
        sky = np.linspace([120, 150, 200], [90, 110, 80], h)[:, None, :]  # (h, 1, 3) sky to ground
        pixels = np.clip(sky + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels)
        draw = ImageDraw.Draw(image)
        for _ in range(3):  # clutter that is not a sign
            x, y = int(rng.integers(0, w - 30)), int(rng.integers(0, h - 30))
            grey = int(rng.integers(40, 200))
            draw.rectangle((x, y, x + int(rng.integers(8, 30)), y + int(rng.integers(8, 30))), fill=(grey,) * 3)
        placed: list[tuple[int, int, int]] = []
        for _ in range(int(rng.integers(0, 3))):
            side = int(rng.integers(sign_px[0], sign_px[1] + 1))
            x, y = int(rng.integers(0, w - side)), int(rng.integers(0, h - side))
            if any(abs(x - px) < max(side, ps) and abs(y - py) < max(side, ps) for px, py, ps in placed):
                continue
            class_id = CLASSES[int(rng.integers(len(CLASSES)))]
            draw_sign(draw, class_id, x, y, side)
            placed.append((x, y, side))
            lines.append(f"{i:05d}.png;{x};{y};{x + side - 1};{y + side - 1};{class_id}\n")
        image.save(root / f"{i:05d}.png")
    (root / "gt.txt").write_text("".join(lines))
    return root


def write_classifier(path: Path) -> Path:
    """A (untrained) GTSRB classifier weights file, as signlab train writes one."""
    model = create_model("signnet", widths=(8, 8, 8))
    cfg = TrainConfig(model_options={"widths": [8, 8, 8]}, task="classify")
    save_weights(path, {f"model.{k}": v for k, v in model.state_dict().items()},
                 {"config": cfg.to_dict(), "class_names": [str(i) for i in range(43)], "mean": [0.5] * 3,
                  "std": [0.25] * 3})
    return path


TINY = {"model_options": {"widths": [16, 24, 48, 64], "blocks": [1, 1, 1], "neck": 24}, "image_size": 128,
        "batch_size": 8, "threads": 1, "progress": False, "lr": 0.003}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    return write_scenes(tmp_path_factory.mktemp("gtsdb") / "train", 192, seed=0)


@pytest.fixture(scope="module")
def road_scenes(tmp_path_factory) -> Path:
    return write_synthetic_scenes(tmp_path_factory.mktemp("synthetic") / "train", 16, seed=0, size=(192, 128),
                                  signs=(0, 2), sign_px=(16, 40))


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    return write_classifier(tmp_path_factory.mktemp("clf") / "classifier.safetensors")


def test_a_tiny_finder_finds_easy_signs_in_scenes_it_never_saw(tmp_path, scenes, classifier, one_torch_thread):
    """`signlab train --data GTSDB_DIR` recognises the layout, trains a finder (about 10 s on one core), and the
    finder it writes finds >= 90 % of the signs of new scenes at IoU 0.5 with few false positives. (Seeds 0-4,
    bf16 on and off: 94-100 %; a narrower network, 8-32 channels, sized the signs too loosely: 84-98 %.)"""
    lines = []
    run = train(scenes, classifier=str(classifier), epochs=8, out=str(tmp_path / "run"), val_fraction=0.0,
                log=lines.append, **TINY)
    assert TrainConfig.from_dict(__import__("json").loads((run / "config.json").read_text())).task == "detect"
    assert (run / "classifier.safetensors").read_bytes() == classifier.read_bytes()
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == FIELDS and len(rows) == 8 and rows[0]["val_recall"] == ""
    assert float(rows[-1]["train_loss"]) < 0.5 * float(rows[0]["train_loss"])
    finder = load_finder(run, torch.device("cpu"))
    unseen, _ = read_gtsdb(write_scenes(tmp_path / "unseen", 48, seed=1))
    recall, fp_per_scene = finder_recall(finder, scene_set(unseen, load_scene), threshold=0.3)
    assert recall >= 0.9 and fp_per_scene <= 0.5, (recall, fp_per_scene, lines[-3:])


@pytest.mark.parametrize("paste", ["off", "drawn", "gtsrb", "mine", "verify", "val-every"])
def test_a_stopped_run_resumes_bit_identically(tmp_path, road_scenes, classifier, one_torch_thread, paste,
                                               monkeypatch):
    """fp32 pinned. The second run is stopped by SIGINT at the start of its second epoch and resumed: the same
    weights as the uninterrupted run; with signs pasted into every crop too (signlab.detection.paste), drawn
    ones or a GTSRB folder's; or with every crop of a scene that has mined false positives centred on one (the
    negatives are mined at the end of the first epoch and carried by the checkpoint); or with a verifier
    trained after the finder (the same verifier too); or validating every second epoch only (the first epoch's
    checkpoint then holds no best score)."""
    options = {**TINY, "classifier": str(classifier), "epochs": 2, "bf16": "off", "val_fraction": 0.25,
               "image_size": 64, "batch_size": 4,
               "model_options": {"widths": [8, 8, 8, 8], "blocks": [1, 1, 1], "neck": 8}}
    options["paste"] = 0.0 if paste in ("off", "mine", "verify", "val-every") else 1.0  # detect presets paste into half
    options["mine"] = 1.0 if paste == "mine" else 0.0
    options["verify"] = paste == "verify"
    options["val_every"] = 2 if paste == "val-every" else 1
    monkeypatch.setattr(mining, "MINE_THRESHOLD", 0.0)  # a finder one epoch old scores everything low
    monkeypatch.setattr(verify, "NEGATIVE_THRESHOLD", 0.0)
    if paste == "gtsrb":
        options["paste_from"] = str(make_gtsrb_train(tmp_path / "gtsrb", classes=(13, 14, 32), stored_size=32))
    lines: list[str] = []
    train(road_scenes, out=str(tmp_path / "whole"), log=lines.append, **options)
    banner = {"off": None, "mine": None, "verify": None, "val-every": None,
              "drawn": "paste: 129 signs of 43 classes from signlab's drawn signs (p=1.0)",
              "gtsrb": f"paste: 36 signs of 3 classes from {options.get('paste_from')} (p=1.0)"}[paste]
    assert [line for line in lines if line.startswith("paste:")] == ([banner] if banner else [])
    mined = [line for line in lines if line.startswith("mined ")]
    assert len(mined) == (2 if paste == "mine" else 0)
    assert paste != "mine" or int(mined[0].split()[1]) > 0, mined  # the crops really moved
    examples = [line for line in lines if line.startswith("verifier examples:")]
    assert len(examples) == (1 if paste == "verify" else 0)
    assert paste != "verify" or " 0 finder false positives" not in examples[0], examples

    def stop_after_the_first_epoch(line: str) -> None:
        if line.startswith("epoch   1/"):
            os.kill(os.getpid(), signal.SIGINT)  # the loop finishes its step, checkpoints and exits 130

    with pytest.raises(SystemExit) as stopped:
        train(road_scenes, out=str(tmp_path / "cut"), log=stop_after_the_first_epoch, **options)
    assert stopped.value.code == 130
    train(road_scenes, out=str(tmp_path / "cut"), resume=True, log=lambda _: None, **options)
    whole, cut = load_file(tmp_path / "whole" / "last.safetensors"), load_file(tmp_path / "cut" / "last.safetensors")
    assert whole.keys() == cut.keys() and all(torch.equal(whole[k], cut[k]) for k in whole)
    assert (tmp_path / "whole" / VERIFIER_FILE).is_file() == (paste == "verify")
    if paste == "verify":
        whole, cut = (load_file(tmp_path / r / VERIFIER_FILE) for r in ("whole", "cut"))
        assert whole.keys() == cut.keys() and all(torch.equal(whole[k], cut[k]) for k in whole)
    with open(tmp_path / "cut" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"] and rows[1]["val_recall"] != ""
    assert (rows[0]["val_recall"] == "") == (paste == "val-every")
    assert (tmp_path / "whole" / "best.json").read_text() == (tmp_path / "cut" / "best.json").read_text()
    if paste == "val-every":  # the best of the validated epochs: the second, the only one
        best = load_file(tmp_path / "cut" / "best.safetensors")
        assert all(torch.equal(best[k], cut[k]) for k in cut)
    shipped = [json.loads((tmp_path / r / RUN_THRESHOLD_FILE).read_text()) for r in ("whole", "cut")]
    assert shipped[0] == shipped[1] and shipped[0]["scenes"] == 8  # the held-out blocks of 16 scenes


def test_a_detection_run_needs_a_classifier(tmp_path, road_scenes):
    with pytest.raises(UserError, match=r"--classifier: .*signlab train --preset fast --out runs/classifier"):
        train(road_scenes, out=str(tmp_path / "run"))
    with pytest.raises(UserError, match="--model signnet: a classify model, but this is a detect run"):
        train(road_scenes, task="detect", model="signnet", classifier=str(tmp_path), out=str(tmp_path / "run"))


def test_the_classifier_must_be_a_classifier(tmp_path, road_scenes):
    weights = tmp_path / "finder.safetensors"
    model = create_model("signfinder")
    save_weights(weights, {f"model.{k}": v for k, v in model.state_dict().items()},
                 {"config": TrainConfig(task="detect", model="signfinder").to_dict(), "task": "detect"})
    with pytest.raises(UserError, match="a detection run, not a classifier"):
        train(road_scenes, classifier=str(weights), out=str(tmp_path / "run"), epochs=1, **TINY)


def test_cli_names_the_missing_classifier_in_one_line(tmp_path, road_scenes, capsys):
    from signlab.cli import main

    assert main(["train", "--data", str(road_scenes), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--classifier" in err and "signlab train --preset fast" in err
    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--task" in text and "--classifier" in text and "detect_fast" in text
