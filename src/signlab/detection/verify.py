"""The verifier: a sign / not-sign CNN on the finder's proposals, trained on the finder's own false positives.

The finder's strongest false positives (a wheel hub, a red tail lamp, a shop's round sign) are things the
43-class classifier then names with confidence, since it never saw anything but signs. The 2013 GTSDB winners
verified their colour and shape proposals with a classifier that had seen such things; this is that stage:

    training scenes --finder at NEGATIVE_THRESHOLD--> proposals covering no sign: negatives
                                                   proposals on a sign, and each sign's box jittered: positives
    GTSRB's training crops (the classifier's folder), a sample: positives
        --crop_signs with the classifier's framing--> signnet, 2 classes, a few epochs

At detection the score becomes finder x verifier's P(sign) x classifier's class probability. The verifier is
saved as a classifier weights file (RUN/verifier.safetensors, classes "not a sign" and "sign") with the
classifier's preprocessing, so it loads, exports and runs as one.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from signlab.augment import AugmentConfig, augment_batch
from signlab.checkpoint import save_weights
from signlab.config import TrainConfig
from signlab.detection.boxes import box_iou
from signlab.detection.detect import CLASSIFIER_FILE, VERIFIER_FILE, crop_signs
from signlab.detection.paste import gtsrb_folder
from signlab.models import create_model
from signlab.preprocess import Preprocessing
from signlab.runtime import autocast

if TYPE_CHECKING:
    from signlab.detection.detect import SignFinder
    from signlab.detection.train import SceneSet

Log = Callable[[str], object]

VERIFIER_CLASSES = ["not a sign", "sign"]
NEGATIVE_THRESHOLD = 0.05  # proposals at or above this score are mined
NEGATIVES_PER_SCENE = 40  # the best-scoring ones; the finder's top peaks are what the operating point meets
NEGATIVE_MAX_IOU = 0.3  # a proposal overlapping a sign more than this is neither: half a sign is not "no sign"
POSITIVE_JITTERS = 6  # jittered boxes per annotated sign, besides the box itself
JITTER_SHIFT, JITTER_SCALE = 0.08, 0.12  # share of the side; the finder's boxes on signs are this far off
GTSRB_POSITIVES = 6000  # GTSRB crops sampled as positives: 43 classes' worth of signs the scenes lack
EPOCHS, BATCH, LR, WEIGHT_DECAY = 6, 128, 3e-3, 5e-4  # AdamW on every parameter (as measured), one-cycle cosine
WARMUP = 0.05  # share of the steps
AUGMENT = AugmentConfig(rotate_degrees=8.0, scale=0.1, translate=0.06, brightness=0.3, contrast=0.3,
                        saturation=0.3)


def jittered(box: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """n copies of an inclusive box (4,) shifted and scaled at random: (n, 4)."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1 + 1, y2 - y1 + 1
    cx = (x1 + x2 + 1) / 2 + rng.uniform(-JITTER_SHIFT, JITTER_SHIFT, n) * w
    cy = (y1 + y2 + 1) / 2 + rng.uniform(-JITTER_SHIFT, JITTER_SHIFT, n) * h
    s = np.exp(rng.uniform(-JITTER_SCALE, JITTER_SCALE, n))
    a = np.exp(rng.uniform(-JITTER_SCALE / 2, JITTER_SCALE / 2, n))  # aspect
    nw, nh = w * s * a, h * s / a
    return np.stack([cx - nw / 2, cy - nh / 2, cx + nw / 2 - 1, cy + nh / 2 - 1], 1).astype(np.float32)


def scene_examples(finder: SignFinder, image: np.ndarray, signs: np.ndarray, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Boxes of one scene (H, W, 3) with its signs (n, 4): positives (p, 4) and negatives (q, 4) float32."""
    boxes, scores, _ = finder.propose(image, NEGATIVE_THRESHOLD)
    boxes = boxes.detach().float().cpu()[:NEGATIVES_PER_SCENE]  # best first
    if len(signs) and len(boxes):
        best = box_iou(boxes, torch.from_numpy(signs)).amax(1).numpy()  # (N,)
    else:
        best = np.zeros(len(boxes), np.float32)
    negatives = boxes[torch.from_numpy(best < NEGATIVE_MAX_IOU)].numpy()
    positives = [boxes[torch.from_numpy(best >= 0.5)].numpy()]
    for sign in signs:
        positives += [sign[None], jittered(sign, rng, POSITIVE_JITTERS)]
    return np.concatenate(positives).reshape(-1, 4).astype(np.float32), negatives.reshape(-1, 4)


def training_examples(finder: SignFinder, images: list[np.ndarray], signs: list[np.ndarray], pre: Preprocessing,
                      gtsrb: str | Path | None, seed: int, log: Log) -> tuple[np.ndarray, np.ndarray]:
    """Crops (N, S, S, 3) uint8 framed as the classifier's, and labels (N,) int64 (1 = sign)."""
    rng = np.random.default_rng([seed, 17])
    crops, labels = [], []
    for image, boxes in zip(images, signs, strict=True):
        pos, neg = scene_examples(finder, image, boxes, rng)
        crops += [crop_signs(image, pos, pre), crop_signs(image, neg, pre)]
        labels += [np.ones(len(pos), np.int64), np.zeros(len(neg), np.int64)]
    scene_pos, scene_neg = int(sum(map(np.sum, labels))), int(sum(len(x) - x.sum() for x in labels))
    if gtsrb is not None:
        bank = pre.load(gtsrb).images  # (M, S, S, 3), cached decode
        pick = rng.choice(len(bank), min(GTSRB_POSITIVES, len(bank)), replace=False)
        crops.append(bank[np.sort(pick)])
        labels.append(np.ones(len(pick), np.int64))
    log(f"verifier examples: {scene_pos} sign boxes and {scene_neg} finder false positives from "
        f"{len(images)} scenes, {len(crops[-1]) if gtsrb is not None else 0} GTSRB crops")
    return np.concatenate(crops), np.concatenate(labels)


def fit(crops: np.ndarray, labels: np.ndarray, pre: Preprocessing, device: torch.device, seed: int,
        bf16: str = "off", epochs: int = EPOCHS, batch: int = BATCH) -> torch.nn.Module:
    """signnet with 2 outputs trained on (N, S, S, 3) crops; balanced by weighting the loss per class."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = create_model("signnet", num_classes=2, image_size=pre.image_size).to(
        device, memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    inputs = pre.normalize(crops)  # (N, S, S, 3) contrast-normalised
    y_all = torch.from_numpy(labels)
    counts = torch.bincount(y_all, minlength=2).clamp(min=1).float()
    weight = (counts.sum() / (2 * counts)).to(device)  # (2,) each class weighs half the loss
    steps = max(1, len(inputs) // batch)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(inputs), generator=generator)
        for step in range(steps):
            t = (epoch * steps + step) / (epochs * steps)
            for group in optimizer.param_groups:
                group["lr"] = LR * min(1.0, t / WARMUP) * 0.5 * (1 + math.cos(math.pi * t))
            idx = order[step * batch:(step + 1) * batch]
            x = pre.to_tensor(inputs[idx.numpy()], device)  # (B, 3, S, S)
            flip = torch.rand(len(idx), generator=generator) < 0.5  # sign or not, a mirror image stays so
            x = torch.where(flip.to(device).view(-1, 1, 1, 1), x.flip(3), x)
            x = augment_batch(x, AUGMENT, generator)
            with autocast(device, bf16):
                logits = model(x)  # (B, 2)
            loss = F.cross_entropy(logits.float(), y_all[idx].to(device), weight=weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


def train_verifier(run: Path, finder: SignFinder, images: list[np.ndarray], signs: list[np.ndarray],
                   pre: Preprocessing, gtsrb: str | Path | None, seed: int, device: torch.device, bf16: str = "off",
                   log: Log = print) -> Path:
    """Mine, train and save RUN/verifier.safetensors; returns its path."""

    start = time.perf_counter()
    crops, labels = training_examples(finder, images, signs, pre, gtsrb, seed, log)
    model = fit(crops, labels, pre, device, seed, bf16)
    cfg = TrainConfig(data=str(gtsrb) if gtsrb is not None else None, task="classify", model="signnet",
                      image_size=pre.image_size, crop=pre.crop, contrast=pre.contrast, epochs=EPOCHS,
                      batch_size=BATCH, optimizer="adamw", lr=LR, weight_decay=WEIGHT_DECAY, warmup=WARMUP,
                      augment=AUGMENT, flips=0.0, tta=False, bf16=bf16, seed=seed)  # the recipe, as fit runs it
    info = {"config": cfg.to_dict(), "task": "verify", "class_names": VERIFIER_CLASSES,
            "preprocessing": pre.to_dict()}
    path = run / VERIFIER_FILE
    save_weights(path, {f"model.{k}": v.detach().cpu() for k, v in model.state_dict().items()}, info)
    log(f"verifier: {len(crops)} crops, {time.perf_counter() - start:.0f} s, in {path}")
    return path


def train_run_verifier(run: Path, cfg: TrainConfig, train_set: SceneSet, device: torch.device, log: Log = print,
                       weights: str | None = None) -> Path:
    """RUN/verifier.safetensors for a detection run whose finder is trained: its training scenes (a SceneSet),
    its finder (weights: a file of the run; default the one `signlab detect` loads), the classifier's framing,
    and GTSRB crops from the folder it pasted from, else the classifier's training folder where it exists."""
    from signlab.detection.finder import load_finder
    from signlab.predict import load_model

    classifier = load_model(run / CLASSIFIER_FILE, device)
    finder = load_finder(run / weights if weights else run, device)
    gtsrb = gtsrb_folder(cfg.paste_from) or classifier.config.data
    if gtsrb is not None and not Path(gtsrb).is_dir():
        gtsrb = None
    return train_verifier(run, finder, train_set.images, train_set.boxes, classifier.preprocessing, gtsrb,
                          cfg.seed, device, cfg.bf16, log)


def add_verifier(run: Path, weights: str | None = None, device: str = "auto", log: Log = print) -> Path:
    """A verifier for a finished detection run, as --verify trains one at the end of training: on the scenes
    its config names, then the run's operating threshold chosen again with the verifier in place."""
    from signlab.detection.evaluate import write_run_threshold
    from signlab.detection.train import load_scene_sets
    from signlab.runtime import pick_device

    cfg = TrainConfig.from_dict(TrainConfig.with_legacy_defaults(json.loads((run / "config.json").read_text())))
    train_set, _ = load_scene_sets(cfg, log)
    path = train_run_verifier(run, cfg, train_set, pick_device(device), log, weights)
    write_run_threshold(run, device=device)
    return path
