"""Shared fixtures: made-up datasets in each layout, and a private decode cache per test."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from signlab.synth.default import default_root

HEADER = ["Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId"]
PALETTE = [(220, 30, 30), (30, 200, 40), (40, 60, 230), (230, 220, 30), (200, 40, 220)]


@pytest.fixture(scope="session")
def shared_default_root(tmp_path_factory) -> Path:
    """Where this session's copy of the drawn-sign default set goes: rendered once, by the first test that asks."""
    folder = tmp_path_factory.mktemp("synth-default")
    return folder / default_root().name


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch, shared_default_root):
    """Each test decodes into its own cache (tests count decodes); the default data set is shared through a
    link, which signlab.synth.default follows, so it renders once per session, not once per test."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("SIGNLAB_CACHE", str(cache))
    (cache / shared_default_root.name).symlink_to(shared_default_root, target_is_directory=True)


@pytest.fixture
def one_torch_thread():
    """Tiny nets on a shared 2-core machine: a second thread mostly waits for the first."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def tiny_image_set():
    """4 classes of 32×32 noise images with 3 tracks each: load_data's split path, without the default data."""
    from signlab.data import ImageSet

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 15)
    images = rng.integers(0, 256, (60, 32, 32, 3), dtype=np.uint8)
    return ImageSet(images=images, labels=labels, tracks=np.repeat(np.arange(12), 5),
                    paths=[f"{i}.png" for i in range(60)], class_names=list("abcd"), layout="synthetic", root="")


def sign_image(label: int, width: int, height: int, roi: tuple[int, int, int, int], rng) -> np.ndarray:
    """A grey noisy frame with a coloured, class-specific square exactly at the ROI (inclusive corners)."""
    img = rng.integers(90, 110, size=(height, width, 3)).astype(np.uint8)
    x1, y1, x2, y2 = roi
    img[y1:y2 + 1, x1:x2 + 1] = PALETTE[label % len(PALETTE)]
    # A class-specific dark bar inside the sign, so classes differ in shape as well as colour.
    bar = y1 + (label % 3 + 1) * (y2 - y1) // 4
    img[bar:bar + 2, x1:x2 + 1] = 20
    return img


def make_gtsrb_train(root: Path, classes=(0, 1, 2), tracks=3, frames=4, stored_size: int | None = None,
                     seed: int = 0) -> Path:
    """Official training layout; with stored_size the images are resized but the CSV keeps original sizes."""
    rng = np.random.default_rng(seed)
    for label in classes:
        folder = root / "Images" / f"{label:05d}"
        folder.mkdir(parents=True)
        rows = []
        for t in range(tracks):
            for f in range(frames):
                w, h = 40 + 2 * f, 44 + 2 * f
                roi = (5, 6, w - 6, h - 5)
                img = sign_image(label, w, h, roi, rng)
                name = f"{t:05d}_{f:05d}.ppm"
                im = Image.fromarray(img)
                if stored_size:
                    im = im.resize((stored_size, stored_size), Image.Resampling.BILINEAR)
                im.save(folder / name)
                rows.append([name, w, h, *roi, label])
        with open(folder / f"GT-{label:05d}.csv", "w", newline="") as fh:
            writer = csv.writer(fh, delimiter=";")
            writer.writerow(HEADER)
            writer.writerows(rows)
    return root


def make_gtsrb_test(root: Path, n: int = 12, csv_inside: bool = True, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    images = root / "Images"
    images.mkdir(parents=True)
    rows = []
    for i in range(n):
        label = i % 3
        w, h = 36, 38
        roi = (4, 4, w - 5, h - 5)
        name = f"{i:05d}.ppm"
        Image.fromarray(sign_image(label, w, h, roi, rng)).save(images / name)
        rows.append([name, w, h, *roi, label])
    csv_path = (images if csv_inside else root) / "GT-final_test.csv"
    with open(csv_path, "w", newline="") as fh:
        writer = csv.writer(fh, delimiter=";")
        writer.writerow(HEADER)
        writer.writerows(rows)
    return root


def make_folders(root: Path, names=("cat", "dog"), per_class: int = 6, seed: int = 2) -> Path:
    rng = np.random.default_rng(seed)
    for label, name in enumerate(names):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            img = sign_image(label, 30, 30, (3, 3, 26, 26), rng)
            Image.fromarray(img).save(root / name / f"img{i}.{['png', 'jpg'][i % 2]}")
    return root


@pytest.fixture
def gtsrb_train(tmp_path) -> Path:
    return make_gtsrb_train(tmp_path / "gtsrb")


# ---------------------------------------------------------------- detection: a run folder without training


def write_tiny_classifier(path: Path, favourite: int = 14, seed: int = 0, num_classes: int = 43,
                          data: Path | None = None) -> Path:
    """An untrained GTSRB classifier (signnet, widths 8 and 16) whose head leans to `favourite`: confident
    enough that detections pass a 0.5 threshold, and still a function of the crop. Saved as training saves;
    data: the training folder its config names (export calibrates --int8 on it), bf16 then off."""
    import torch

    from signlab.checkpoint import save_weights
    from signlab.classes import GTSRB_CLASS_NAMES
    from signlab.config import TrainConfig
    from signlab.models import create_model
    from signlab.preprocess import Preprocessing

    cfg = TrainConfig(task="classify", model="signnet", model_options={"widths": [8, 16], "depth": 1})
    if data is not None:
        cfg = TrainConfig(task="classify", model="signnet", model_options={"widths": [8, 16], "depth": 1},
                          data=str(data), bf16="off")
    torch.manual_seed(seed)
    model = create_model(cfg.model, num_classes=num_classes, image_size=32, **cfg.model_options).eval()
    with torch.no_grad():
        model.head.bias.zero_()
        model.head.bias[favourite] = 8.0
    info = {"config": cfg.to_dict(), "preprocessing": Preprocessing().to_dict(),
            "class_names": list(GTSRB_CLASS_NAMES) if num_classes == 43 else [str(i) for i in range(num_classes)]}
    save_weights(path, {f"model.{k}": v for k, v in model.state_dict().items()}, info)
    return path


def make_detection_run(root: Path, favourite: int = 14) -> Path:
    """A detection run folder as `signlab train --task detect` leaves it, less the finder's weights: tests
    put a stand-in finder in front (signlab.detection.detect.load_run_finder)."""
    import json

    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps({"task": "detect"}))
    write_tiny_classifier(root / "classifier.safetensors", favourite)
    return root


def make_exportable_detection_run(root: Path, favourite: int = 14, options: dict | None = None,
                                  heat_bias: float = 1.0) -> Path:
    """A detection run with a tiny untrained finder (bf16 off; options: its model_options; heat_bias: its
    heatmaps' logit everywhere, about) and a classifier whose training folder exists: what `signlab export`
    and the onnx backend need, in seconds."""
    import json

    import torch

    from signlab.checkpoint import save_weights
    from signlab.config import TrainConfig
    from signlab.models import create_model

    run = root / "run"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"task": "detect"}))
    write_tiny_classifier(run / "classifier.safetensors", favourite,
                          data=make_gtsrb_train(root / "gtsrb", classes=(0, 1, 2), tracks=2, frames=4))
    options = options or {"widths": [8, 8, 16, 16], "neck": 8}
    torch.manual_seed(0)
    model = create_model("signfinder", **options)
    with torch.no_grad():
        model.heat[-1].bias.fill_(heat_bias)  # 1.0, sigmoid 0.73: peaks pass the 0.5 threshold, detections made
    cfg = TrainConfig(task="detect", model="signfinder", model_options=options, bf16="off")
    save_weights(run / "last.safetensors", {f"model.{k}": v for k, v in model.state_dict().items()},
                 {"config": cfg.to_dict(), "task": "detect"})
    (run / "operating_point.json").write_text(json.dumps({"threshold": 0.6, "fp_budget": 0.05}))  # training's
    return run


@pytest.fixture(scope="session")
def exportable_detection_run(tmp_path_factory) -> Path:
    return make_exportable_detection_run(tmp_path_factory.mktemp("detection-export"))


class BoxFinder:
    """A stand-in first stage: the same boxes and scores for every scene (those >= threshold, best first)."""

    def __init__(self, boxes, scores) -> None:
        import torch

        self.boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        self.scores = torch.tensor(scores, dtype=torch.float32)
        self.calls = 0

    def propose(self, scene, threshold):
        import torch

        self.calls += 1
        order = torch.argsort(self.scores, descending=True)
        order = order[self.scores[order] >= threshold]
        return self.boxes[order], self.scores[order], torch.zeros(len(order), dtype=torch.long)


class RedFinder:
    """A stand-in first stage for one red sign: the box around the scene's strongly red pixels, score 0.9."""

    def propose(self, scene, threshold):
        import torch

        r, g, b = (scene[..., i].astype(np.int16) for i in range(3))
        ys, xs = np.nonzero((r > 150) & (g < 90) & (b < 90))
        if len(xs) < 4 or threshold > 0.9:
            return torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long)
        box = torch.tensor([[xs.min(), ys.min(), xs.max(), ys.max()]], dtype=torch.float32)
        return box, torch.tensor([0.9]), torch.zeros(1, dtype=torch.long)


def draw_sign_scene(width: int, height: int, centre: tuple[int, int], radius: int, seed: int = 0) -> np.ndarray:
    """A grey noisy (H, W, 3) uint8 scene with a red-ringed white disc (a prohibitory-like sign)."""
    rng = np.random.default_rng(seed)
    scene = rng.integers(80, 120, size=(height, width, 3)).astype(np.uint8)
    yy, xx = np.mgrid[:height, :width]
    d2 = (xx - centre[0]) ** 2 + (yy - centre[1]) ** 2
    scene[d2 <= radius ** 2] = (220, 30, 30)
    scene[d2 <= (0.7 * radius) ** 2] = (245, 245, 245)
    return scene
