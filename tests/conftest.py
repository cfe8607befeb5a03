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
