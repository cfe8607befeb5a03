"""The verifier (signlab.detection.verify): which proposals become its examples, that it learns signs from
clutter, and that the detector multiplies its P(sign) into the score."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import BoxFinder, draw_sign_scene, make_detection_run, make_gtsrb_train

from signlab.api import train
from signlab.detection import verify
from signlab.detection.boxes import box_iou
from signlab.detection.detect import VERIFIER_FILE, crop_signs, load_detector
from signlab.errors import UserError
from signlab.predict import load_model, predict_images
from signlab.preprocess import Preprocessing


class SceneFinder:
    """Per scene (by identity): the sign's box and three boxes of background, as a finder would propose."""

    def __init__(self, images, signs, clutter):
        self.by_scene = {id(im): (s, c) for im, s, c in zip(images, signs, clutter, strict=True)}

    def propose(self, scene, threshold):
        sign, clutter = self.by_scene[id(scene)]
        boxes = torch.tensor(np.concatenate([sign, clutter]), dtype=torch.float32)
        scores = torch.linspace(0.9, 0.3, len(boxes))
        return boxes, scores, torch.zeros(len(boxes), dtype=torch.long)


def sign_scenes(n: int, seed: int):
    """n grey scenes (160, 240) with one red-ringed disc each, its box (1, 4), and three boxes away from it."""
    rng = np.random.default_rng(seed)
    images, signs, clutter = [], [], []
    for i in range(n):
        r = int(rng.integers(10, 22))
        cx, cy = int(rng.integers(30, 90)), int(rng.integers(30, 130))
        images.append(draw_sign_scene(240, 160, (cx, cy), r, seed=seed * 1000 + i))
        signs.append(np.array([[cx - r, cy - r, cx + r, cy + r]], np.float32))
        side = rng.integers(16, 44, 3)
        x, y = rng.integers(120, 240 - 44, 3), rng.integers(0, 160 - 44, 3)
        clutter.append(np.stack([x, y, x + side - 1, y + side - 1], 1).astype(np.float32))
    return images, signs, clutter


def test_proposals_on_no_sign_are_negatives_and_those_on_half_a_sign_are_left_out():
    sign = np.array([[100, 100, 139, 139]], np.float32)
    finder = BoxFinder([[101, 100, 140, 139],  # on the sign: a positive
                         [120, 100, 159, 139],  # half on it (IoU 0.33): neither
                         [10, 10, 40, 40],  # nothing there: a negative
                         [300, 10, 330, 40]], [0.9, 0.6, 0.3, 0.01])  # under NEGATIVE_THRESHOLD: not proposed
    positives, negatives = verify.scene_examples(finder, np.zeros((200, 400, 3), np.uint8), sign,
                                                 np.random.default_rng(0))
    assert negatives.tolist() == [[10, 10, 40, 40]]
    assert len(positives) == 1 + 1 + verify.POSITIVE_JITTERS  # the finder's box, the sign's, its jitters
    assert positives[:2].tolist() == [[101, 100, 140, 139], [100, 100, 139, 139]]


def test_a_scene_without_signs_gives_only_negatives():
    finder = BoxFinder([[10, 10, 40, 40], [50, 10, 80, 40]], [0.9, 0.2])
    positives, negatives = verify.scene_examples(finder, np.zeros((64, 100, 3), np.uint8),
                                                 np.zeros((0, 4), np.float32), np.random.default_rng(0))
    assert positives.shape == (0, 4) and len(negatives) == 2


def test_jittered_boxes_still_cover_the_sign():
    """Positives must be what the evaluation counts as found (IoU >= 0.5), with room to spare."""
    sign = np.array([20, 30, 51, 61], np.float32)
    boxes = verify.jittered(sign, np.random.default_rng(0), 500)
    iou = box_iou(torch.from_numpy(boxes), torch.from_numpy(sign[None]))[:, 0]
    assert float(iou.min()) > 0.6 and float(iou.max()) < 1.0


def test_a_verifier_learns_signs_from_clutter(one_torch_thread):
    images, signs, clutter = sign_scenes(24, seed=0)
    pre = Preprocessing()
    crops, labels = verify.training_examples(SceneFinder(images, signs, clutter), images, signs, pre, None, 0,
                                             lambda _: None)
    assert labels.sum() == 24 * (2 + verify.POSITIVE_JITTERS) and (labels == 0).sum() == 24 * 3
    model = verify.fit(crops, labels, pre, torch.device("cpu"), seed=0, bf16="auto", epochs=8, batch=32)
    new_images, new_signs, new_clutter = sign_scenes(12, seed=1)
    with torch.no_grad():
        def p_sign(boxes):
            x = np.concatenate([crop_signs(im, b, pre) for im, b in zip(new_images, boxes, strict=True)])
            return torch.softmax(model(pre.to_tensor(pre.normalize(x), torch.device("cpu"))), 1)[:, 1]
        on_signs, on_clutter = p_sign(new_signs), p_sign(new_clutter)
    assert float(on_signs.min()) > float(on_clutter.max()), (on_signs, on_clutter)
    assert float(on_signs.mean()) > 0.8 and float(on_clutter.mean()) < 0.2


def test_gtsrb_crops_join_the_positives(tmp_path):
    images, signs, clutter = sign_scenes(2, seed=0)
    folder = make_gtsrb_train(tmp_path / "gtsrb", classes=(0, 1), tracks=2, frames=3)
    crops, labels = verify.training_examples(SceneFinder(images, signs, clutter), images, signs, Preprocessing(),
                                             folder, 0, lambda _: None)
    assert labels.sum() == 2 * (2 + verify.POSITIVE_JITTERS) + 12 and len(crops) == len(labels)


def test_the_detector_multiplies_the_verifiers_sign_probability(tmp_path, one_torch_thread):
    images, signs, clutter = sign_scenes(4, seed=0)
    run = make_detection_run(tmp_path / "run")
    finder = SceneFinder(images, signs, clutter)
    verify.train_verifier(run, finder, images, signs, Preprocessing(), None, 0, torch.device("cpu"),
                          log=lambda _: None)
    verifier = load_model(run / VERIFIER_FILE, torch.device("cpu"))
    assert verifier.class_names == verify.VERIFIER_CLASSES and verifier.info["task"] == "verify"
    scene = images[0]
    plain = load_detector(run, "cpu", finder=finder, verify=False).detect(scene, 0.0)
    checked = load_detector(run, "cpu", finder=finder).detect(scene, 0.0)
    boxes = torch.tensor([[d.x1, d.y1, d.x2, d.y2] for d in plain])
    p_sign = torch.softmax(predict_images(verifier, crop_signs(scene, boxes, verifier.preprocessing),
                                          torch.device("cpu"), tta=False), 1)[:, 1]
    expected = {tuple(b.tolist()): d.score * float(p) for b, d, p in zip(boxes, plain, p_sign, strict=True)}
    assert len(checked) == len(plain)
    for d in checked:
        assert d.score == pytest.approx(expected[(d.x1, d.y1, d.x2, d.y2)], rel=1e-5)


def test_verify_is_refused_in_a_classify_run(tmp_path, gtsrb_train):
    with pytest.raises(UserError, match="--verify"):
        train(gtsrb_train, verify=True, out=str(tmp_path / "run"), epochs=1)
