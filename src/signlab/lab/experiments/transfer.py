"""Synthetic → real: how far do drawn signs get on real photos, and what do they add to a few real ones?

The lab's small version of bench/synthetic_to_real.py (docs/synthetic_to_real.md): the lab's CNN trained on
signlab's rendered signs only, on one and on three real tracks a class, and on those plus the rendered signs;
always tested on real tracks held out (20 %, track-aware), which no condition trains on.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from signlab.classes import GTSRB_CLASS_NAMES
from signlab.contrast import normalize_contrast
from signlab.data import DataSplit, ImageSet, cache_dir, load_images, split_indices
from signlab.errors import UserError
from signlab.lab.experiments.common import (
    SMOKE_VAL,
    Source,
    all_finite,
    check_budget,
    new_figure,
    save_figure,
    table,
    tensors,
    torch_accuracy,
    train_torch,
)
from signlab.lab.experiments.nets import SmallCNN

NAME = "synthetic-to-real"
# budget: (rendered images a class, real tracks a class per size, training images seen per condition)
BUDGET = {"full": (100, (1, 3), 60_000), "smoke": (6, (1,), 200)}
RENDER_SEED = 7


def require_real(data: Source) -> ImageSet:
    """The real photos to test on: a GTSRB training folder (or an ImageSet of GTSRB classes)."""
    if data is None:
        raise UserError(f"lab {NAME}: needs real photos to test the drawn signs on; pass --data with a GTSRB "
                        "training folder (signlab download gtsrb gets one into data/GTSRB/Final_Training)")
    real = data if isinstance(data, ImageSet) else load_images(data)
    if list(real.class_names) != list(GTSRB_CLASS_NAMES):
        raise UserError(f"lab {NAME} --data {real.root}: the classes are not GTSRB's, and signlab draws only "
                        "GTSRB's 43 signs; pass a GTSRB training folder")
    return real


def whole_tracks(ds: ImageSet, per_class: int, seed: int = 0) -> np.ndarray:
    """Indices of the first per_class tracks of each class in one random order per class (so 1 track ⊂ 3
    tracks): real data grows a physical sign at a time, as it would be collected. No track ids: images."""
    keep = []
    for label in np.unique(ds.labels):
        members = np.flatnonzero(ds.labels == label)
        groups = ds.tracks[members] if (ds.tracks[members] >= 0).all() else members
        chosen = np.random.default_rng([seed, int(label)]).permutation(np.unique(groups))[:per_class]
        keep.append(members[np.isin(groups, chosen)])
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)


def rendered(classes: list[int], per_class: int) -> ImageSet:
    """signlab's rendered signs of these classes (every renderer effect on), rendered once into signlab's cache
    beside the default drawn set, keyed like it by the renderer's source (a changed renderer renders anew)."""
    from signlab.synth.dataset import write_dataset
    from signlab.synth.default import default_root

    key = hashlib.sha256(f"{default_root().name}|{classes}|{per_class}|{RENDER_SEED}".encode()).hexdigest()[:16]
    folder = cache_dir() / f"{NAME}-rendered-{key}"
    if not (folder / "complete").is_file():  # an interrupted render leaves only its staging folder behind
        staging = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        workers = max(1, min(2, len(os.sched_getaffinity(0))))
        write_dataset(staging, per_class, seed=RENDER_SEED, classes=classes, workers=workers)
        (staging / "complete").write_text("")
        shutil.rmtree(folder, ignore_errors=True)
        staging.replace(folder)
    return load_images(folder)


def concat(a: ImageSet, b: ImageSet) -> ImageSet:
    """Two sets of the same classes as one; b's track ids moved past a's so no track is shared."""
    shift = int(max(a.tracks.max(initial=0), 0)) + 1
    return ImageSet(np.concatenate([a.images, b.images]), np.concatenate([a.labels, b.labels]),
                    np.concatenate([a.tracks, np.where(b.tracks >= 0, b.tracks + shift, -1)]),
                    a.paths + b.paths, a.class_names, a.layout, a.root)


def equalized(ds: ImageSet) -> ImageSet:
    """Histogram-equalised luminance, as signlab's presets train: dusk and glare count for less."""
    return ImageSet(normalize_contrast(ds.images, "equalize"), ds.labels, ds.tracks, ds.paths,
                    ds.class_names, ds.layout, ds.root)


def train_and_test(train: ImageSet, val: ImageSet, images_seen: int) -> tuple[float, int]:
    """The lab's CNN, Adam, equal images seen whatever the set's size; (real validation accuracy, epochs)."""
    x_tr, y_tr, x_va, y_va = tensors(DataSplit(train, val, ""))
    epochs = max(1, round(images_seen / len(train)))
    torch.manual_seed(0)
    cnn = SmallCNN(len(train.class_names))
    train_torch(cnn, x_tr, y_tr, epochs, lr=3e-3)
    return torch_accuracy(cnn, x_va, y_va), epochs


def run_synthetic_to_real(data: Source = None, out: Path = Path("runs/lab"), budget: str = "full") -> dict:
    """Rendered signs only vs a few real tracks a class vs both, tested on held-out real tracks."""
    check_budget(budget)
    per_class, sizes, images_seen = BUDGET[budget]
    real = require_real(data)
    tr, va = split_indices(real, val_fraction=0.2, seed=0)
    pool, val = real.subset(tr), real.subset(va)
    if budget == "smoke":
        val = val.subset(np.sort(np.random.default_rng(0).permutation(len(val))[:SMOKE_VAL]))
    if len(val) == 0:
        raise UserError(f"lab {NAME} --data {real.root}: too few tracks to hold 20 % out; pass the GTSRB folder")
    synth = equalized(rendered(sorted(set(real.labels.tolist())), per_class))
    val = equalized(val)
    conditions = {"rendered signs only": (synth, 0)}
    for k in sizes:
        part = equalized(pool.subset(whole_tracks(pool, k)))
        conditions[f"{k} real track(s)/class"] = (part, k)
        conditions[f"{k} real track(s)/class + rendered"] = (concat(part, synth), k)
    rows, res = [], {}
    for name, (train, k) in conditions.items():
        acc, epochs = train_and_test(train, val, images_seen)
        n_syn = len(synth) if "rendered" in name else 0
        rows.append((name, len(train) - n_syn, n_syn, epochs, acc))
        res[name] = {"tracks_per_class": k, "real_images": len(train) - n_syn, "rendered_images": n_syn,
                     "epochs": epochs, "val_acc": acc}
    text = table(("training data", "real images", "rendered", "epochs", "real val acc"), rows,
                 f"the lab's CNN, {images_seen:,} images seen per condition, tested on {len(val)} real images "
                 f"of held-out tracks of {real.root or 'an ImageSet'}")
    png = plot(res, sizes, out)
    return {"conditions": res, "val_images": len(val), "table": text, "png": str(png),
            "finite": all_finite(*(r["val_acc"] for r in res.values()))}


def plot(res: dict, sizes: tuple[int, ...], out: Path) -> Path:
    fig, (ax,) = new_figure(1)
    xs = [0, *sizes]
    real_only = [np.nan] + [res[f"{k} real track(s)/class"]["val_acc"] for k in sizes]
    with_synth = [res["rendered signs only"]["val_acc"]] + [res[f"{k} real track(s)/class + rendered"]["val_acc"]
                                                             for k in sizes]
    ax.plot(xs, real_only, marker="o", label="real only")
    ax.plot(xs, with_synth, marker="s", label="real + rendered signs")
    ax.set(xticks=xs, xlabel="real tracks per class (≈30 photos each)", ylabel="accuracy on held-out real tracks",
           ylim=(0, 1), title="Rendered signs → real photos")
    ax.legend()
    return save_figure(fig, out, NAME)
