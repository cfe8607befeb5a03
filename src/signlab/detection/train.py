"""Training the sign finder (signlab.models.detector) on GTSDB-layout scenes: `signlab train --task detect`.

The scenes are decoded once into memory (uint8). A step takes one random crop (cfg.image_size square) of each
scene in its share of the epoch's order, mostly around a sign, at a random scale, with --paste more signs pasted
in (signlab.detection.paste), flipped or not, with brightness, contrast and saturation jitter; validation runs
the finder on whole held-out scenes. Exact resume follows trainer.py's rule: every random choice is a function
of (seed, epoch, step), the learning rate of the global step, and the checkpoint (train_state.py) carries the
rest.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from signlab import checkpoint as ckpt
from signlab import metrics_csv
from signlab.config import TrainConfig
from signlab.detection.boxes import CATEGORIES
from signlab.detection.detect import VERIFIER_FILE
from signlab.detection.evaluate import RUN_THRESHOLD_FILE, write_run_threshold
from signlab.detection.finder import SignFinder, encode_targets, finder_loss, to_input
from signlab.detection.metrics import match_any_class
from signlab.detection.mining import mine, mining_epoch, no_negatives, scenes_to_mine
from signlab.detection.paste import SignBank, load_bank, paste_signs
from signlab.errors import UserError
from signlab.models import count_macs, count_parameters, create_model, model_task
from signlab.models.detector import STRIDE
from signlab.runtime import autocast, bf16_active, default_threads, keep_freed_memory, pick_device, threads_text
from signlab.train_state import TrainState, new_sums, open_run, restore_state, save_state, weights_finite
from signlab.trainer import (
    STOP_EXIT_CODES,
    NonFiniteError,
    StopRequest,
    build_optimizer,
    epoch_order,
    lr_at,
    step_seed,
    update_ema,
)

FIELDS = ["epoch", "train_loss", "heat_loss", "box_loss", "val_recall", "val_fp_per_scene", "lr",
          "crops_per_second", "train_seconds", "epoch_seconds"]
VAL_THRESHOLD, VAL_IOU = 0.3, 0.5  # the cheap per-epoch figure: recall and false positives at this score
FP_PENALTY = 0.1  # best weights: highest val recall - FP_PENALTY x false positives per scene
SIGN_CROP_P = 0.85  # share of crops placed around a sign (when the scene has one)
SCALES = (0.7, 1.4)  # crop scale, log-uniform: signs 16-128 px become 11-180 px
JITTER = 0.3  # brightness, contrast and saturation factors in [1 - JITTER, 1 + JITTER]
GREY = 128  # padding beyond the scene: standardises to about 0, as the inference padding


@dataclass
class SceneSet:
    """Decoded scenes and their signs: images[i] (H, W, 3) uint8, boxes[i] (n, 4) float32 inclusive pixel
    corners, categories[i] (n,) int64 indices into CATEGORIES."""

    images: list[np.ndarray]
    boxes: list[np.ndarray]
    categories: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.images)


def scene_set(scenes, load) -> SceneSet:
    """From signlab.detection.scenes' Scene records, decoded with `load` (load_scene)."""
    boxes = [np.array([(b.x1, b.y1, b.x2, b.y2) for b in s.boxes], np.float32).reshape(-1, 4) for s in scenes]
    cats = [np.array([CATEGORIES.index(b.category) for b in s.boxes], np.int64) for s in scenes]
    return SceneSet([load(s.path) for s in scenes], boxes, cats)


def load_scene_sets(cfg: TrainConfig, log) -> tuple[SceneSet, SceneSet]:
    """Training and validation scenes of cfg.data (split in blocks) or of cfg.val_data, decoded."""
    from signlab.detection.scenes import load_scene, read_gtsdb, split_scenes

    scenes, skipped = read_gtsdb(Path(cfg.data))
    if cfg.val_data:
        train, (val, more) = scenes, read_gtsdb(Path(cfg.val_data))
        skipped = [*skipped, *more]
    else:
        train, val = split_scenes(scenes, cfg.val_fraction, cfg.split_seed)
    for name, why in skipped:
        log(f"skipped {name}: {why}")
    if not train:
        raise UserError(f"--data {cfg.data}: no training scenes left; check gt.txt or lower --val-fraction")
    data = scene_set(train, load_scene), scene_set(val, load_scene)
    log(f"data: {len(train)} training scenes ({sum(map(len, data[0].boxes))} signs), {len(val)} validation "
        f"({sum(map(len, data[1].boxes))} signs), {len(skipped)} skipped")
    return data


def copy_classifier(cfg: TrainConfig, run: Path) -> None:
    """RUN/classifier.safetensors: the classifier that names the signs, so the run folder is self-contained."""
    tensors, info, path = ckpt.load_weights(cfg.classifier)
    if info.get("task") == "detect" or model_task(info["config"].get("model", "signnet")) != "classify":
        raise UserError(f"--classifier {cfg.classifier}: a detection run, not a classifier; train one with "
                        f"signlab train --preset fast --out runs/classifier")
    tmp = run / f".classifier.safetensors.tmp{os.getpid()}"
    shutil.copyfile(path, tmp)
    os.replace(tmp, run / "classifier.safetensors")


def sample_crop(image: np.ndarray, boxes: np.ndarray, cats: np.ndarray, size: int, rng: np.random.Generator,
                negatives: np.ndarray | None = None, mine: float = 0.0
                ) -> tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray]:
    """A size x size crop (uint8 (size, size, 3)) at a random scale, around a random sign most of the time (or,
    with probability `mine`, around one of the scene's mined negatives (k, 4)), the signs whose centre it
    holds, in its pixels, and every sign's box in its pixels (in view or not)."""
    h, w = image.shape[:2]
    scale = math.exp(rng.uniform(math.log(SCALES[0]), math.log(SCALES[1])))
    side = max(1, round(size / scale))  # the crop's side in scene pixels
    # no draw without negatives, so that crops stay as they were with --mine 0 and before the first mining
    if negatives is not None and len(negatives) and mine > 0 and rng.random() < mine:
        centre_on = negatives[rng.integers(len(negatives))]
    elif len(boxes) and rng.random() < SIGN_CROP_P:
        centre_on = boxes[rng.integers(len(boxes))]
    else:
        centre_on = None
    if centre_on is not None:
        x1, y1, x2, y2 = centre_on
        cx, cy = (x1 + x2 + 1) / 2, (y1 + y2 + 1) / 2  # its centre lands anywhere but the outer 8th
        x0 = int(cx - side * rng.uniform(0.125, 0.875))
        y0 = int(cy - side * rng.uniform(0.125, 0.875))
    else:
        x0 = int(rng.integers(min(0, w - side), max(0, w - side) + 1))
        y0 = int(rng.integers(min(0, h - side), max(0, h - side) + 1))
    region = np.full((side, side, 3), GREY, np.uint8)
    sx, sy = max(0, x0), max(0, y0)
    ex, ey = min(w, x0 + side), min(h, y0 + side)
    if ex > sx and ey > sy:
        region[sy - y0:ey - y0, sx - x0:ex - x0] = image[sy:ey, sx:ex]
    crop = torch.from_numpy(region).permute(2, 0, 1)[None]  # (1, 3, side, side) uint8
    if side != size:  # torch's uint8 kernel: 8x the float path's speed, within one grey level of it
        crop = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=side > size)
    crop = crop[0].permute(1, 2, 0).contiguous()  # (size, size, 3) uint8
    k = size / side
    # continuous edges [x1, x2 + 1) move with the crop; x2 stays inclusive
    moved = np.stack([(boxes[:, 0] - x0) * k, (boxes[:, 1] - y0) * k,
                      (boxes[:, 2] + 1 - x0) * k - 1, (boxes[:, 3] + 1 - y0) * k - 1], axis=1).reshape(-1, 4)
    centre_x, centre_y = (moved[:, 0] + moved[:, 2] + 1) / 2, (moved[:, 1] + moved[:, 3] + 1) / 2
    inside = (centre_x >= 0) & (centre_x < size) & (centre_y >= 0) & (centre_y < size)
    return crop, moved[inside].astype(np.float32), cats[inside], moved


def make_batch(data: SceneSet, idx: np.ndarray, size: int, rng: np.random.Generator, paste: float = 0.0,
               bank: SignBank | None = None, negatives: list[np.ndarray] | None = None, mine: float = 0.0
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Standardised crops (b, 3, size, size), with bank signs pasted into a share `paste` of them, a share
    `mine` of the scenes with mined negatives centred on one, flipped and colour-jittered, and their targets."""
    crops, boxes, cats = [], [], []
    for i in idx:
        crop, b, c, every = sample_crop(data.images[i], data.boxes[i], data.categories[i], size, rng,
                                        None if negatives is None else negatives[i], mine)
        if bank is not None and paste > 0 and rng.random() < paste:  # off: no draw, so the crops stay as they were
            _, b, c = paste_signs(crop.numpy(), b, c, bank, rng, taken=every)  # into the crop's memory
        if rng.random() < 0.5:  # a mirrored sign keeps its category (left and right turns are both mandatory)
            crop = crop.flip(1)
            b = np.stack([size - 1 - b[:, 2], b[:, 1], size - 1 - b[:, 0], b[:, 3]], axis=1).reshape(-1, 4)
        crops.append(crop)
        boxes.append(b)
        cats.append(c)
    x = torch.stack(crops).float()  # (b, S, S, 3) in 0..255
    factors = torch.from_numpy(rng.uniform(1 - JITTER, 1 + JITTER, (len(idx), 3)).astype(np.float32))
    light, contrast, saturation = factors.T[..., None, None, None]  # (b, 1, 1, 1) each
    # Saturation about each pixel's grey, contrast about the crop's mean (saturation keeps it), then light:
    # l(c(s x + (1 - s) grey) + (1 - c) mean), one multiply-add per value instead of a pass per step.
    grey = x.mean(3, keepdim=True)  # (b, S, S, 1)
    mean = grey.mean((1, 2), keepdim=True)  # (b, 1, 1, 1)
    offset = grey.mul_(light * contrast * (1 - saturation)).add_(light * (1 - contrast) * mean)  # (b, S, S, 1)
    x = to_input(x.mul_(light * contrast * saturation).add_(offset).clamp_(0, 255))
    out = size // STRIDE + (size % STRIDE > 0)
    return x, encode_targets(boxes, cats, out, out)


def train_detector(cfg: TrainConfig, log: Callable[[str], object] | None = None,
                   data: tuple[SceneSet, SceneSet] | None = None) -> dict:
    """Train a sign finder as the resolved config says; returns the last epoch's metrics row. data: the
    (training, validation) scenes already decoded (tests), else read from cfg.data."""
    log = log or print
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        raise UserError("signlab train --task detect runs in one process; start it without torchrun")
    device = pick_device(cfg.device)
    torch.set_num_threads(cfg.threads or default_threads())
    keep_freed_memory()
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    # the bank before the run folder, so that a bad --paste-from leaves none behind
    bank = load_bank(cfg.paste_from, cfg.seed) if cfg.paste > 0 else None
    if bank is not None:
        log(bank.describe(cfg.paste))
    run = open_run(cfg, is_main=True)
    copy_classifier(cfg, run)
    train_set, val_set = data or load_scene_sets(cfg, log)
    cfg.save(run / "config.json")
    model = create_model(cfg.model, num_classes=len(CATEGORIES), image_size=cfg.image_size, init=cfg.init,
                         **cfg.model_options)
    log(f"model {cfg.model}: {count_parameters(model):,} parameters, {count_macs(model, cfg.image_size):,} MACs "
        f"per {cfg.image_size}x{cfg.image_size} crop; device {device}, bf16 "
        f"{'on' if bf16_active(device, cfg.bf16) else 'off'}, {threads_text()}")
    model.to(device, memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg)
    state = restore_state(run, cfg, model, optimizer, log)
    if cfg.mine > 0 and state.negatives is None:
        state.negatives = no_negatives(len(train_set))
    batch = min(cfg.batch_size, len(train_set))
    steps = max(1, len(train_set) // batch)  # one crop per training scene and epoch, ragged tail dropped
    total = cfg.epochs * steps
    info = {"config": cfg.to_dict(), "task": "detect", "categories": list(CATEGORIES), "stride": STRIDE}
    row: dict = {}
    with StopRequest() as stop:
        for epoch in range(state.epoch, cfg.epochs):
            order = epoch_order(cfg, epoch, len(train_set))
            model.train()
            bar = tqdm(range(state.step, steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step",
                       initial=state.step, total=steps, leave=False, file=sys.stderr,
                       disable=not (cfg.progress and sys.stderr.isatty()))
            for step in bar:
                t0 = time.perf_counter()
                global_step = epoch * steps + step
                seed = step_seed(cfg, epoch, step, 0)
                x, targets = make_batch(train_set, order[step * batch:(step + 1) * batch], cfg.image_size,
                                        np.random.default_rng(seed), cfg.paste, bank, state.negatives, cfg.mine)
                torch.manual_seed(seed)
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(global_step, total, cfg)
                with autocast(device, cfg.bf16):
                    out = model(x.to(device))  # (b, C + 4, S/4, S/4)
                loss, heat_loss, box_loss = finder_loss(out, {k: v.to(device) for k, v in targets.items()})
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if not math.isfinite(float(loss.detach())):
                    raise NonFiniteError("loss", epoch, step)
                grads = [p.grad for p in model.parameters() if p.grad is not None]
                if not torch.isfinite(torch.nn.utils.get_total_norm(grads)):
                    raise NonFiniteError("gradient", epoch, step)
                optimizer.step()
                if state.ema is not None:
                    update_ema(state.ema, model, cfg.ema, global_step)
                s = state.sums
                state.sums = {**s, "loss": s["loss"] + float(loss.detach()) * len(x), "seen": s["seen"] + len(x),
                              "heat": s.get("heat", 0.0) + float(heat_loss) * len(x),
                              "box": s.get("box", 0.0) + float(box_loss) * len(x),
                              "seconds": s["seconds"] + time.perf_counter() - t0}
                state.step = step + 1
                bar.set_postfix(loss=f"{state.sums['loss'] / state.sums['seen']:.3f}")
                if stop.signum is not None:
                    bar.close()
                    save_state(run, global_step + 1, model, optimizer, state, info)
                    print(f"stopped by {signal.Signals(stop.signum).name} at epoch {epoch + 1}, step {step + 1}; "
                          f"resume with: signlab train --out {run} --resume", flush=True)
                    raise SystemExit(STOP_EXIT_CODES.get(stop.signum, 143))
            bar.close()
            row = end_epoch(cfg, run, model, optimizer, state, train_set, val_set, device, steps, total, info,
                            log)
    log(f"done: finder weights in {run / 'best.safetensors'} and {run / 'last.safetensors'}, the classifier in "
        f"{run / 'classifier.safetensors'}")
    if cfg.verify:  # before the threshold: the detector it measures includes the verifier
        from signlab.detection.verify import train_run_verifier

        train_run_verifier(run, cfg, train_set, device, log)
    else:  # one left by a resumed run's earlier --verify would judge this finder's proposals
        (run / VERIFIER_FILE).unlink(missing_ok=True)
    point = write_run_threshold(run, device=str(device)) if len(val_set) else None
    if point is not None:
        log(f"threshold for <= {point['fp_budget']:g} false positives per validation scene: {point['threshold']:.3f} "
            f"(in {run / RUN_THRESHOLD_FILE}; signlab evaluate RUN --data TEST scores the test at it too)")
    return row


def end_epoch(cfg: TrainConfig, run: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
              state: TrainState, train_set: SceneSet, val_set: SceneSet, device: torch.device, steps: int,
              total: int, info: dict, log) -> dict:
    """Validate, mine (--mine), append the metrics row, write last/best weights, then the checkpoint (the commit
    point)."""
    epoch = state.epoch
    if not weights_finite(model, state):
        raise NonFiniteError("weights", epoch, steps - 1)
    sums = state.sums
    seen = max(sums["seen"], 1)
    row = {"epoch": epoch + 1, "train_loss": sums["loss"] / seen, "heat_loss": sums.get("heat", 0.0) / seen,
           "box_loss": sums.get("box", 0.0) / seen, "val_recall": None, "val_fp_per_scene": None,
           "lr": lr_at((epoch + 1) * steps - 1, total, cfg),
           "crops_per_second": sums["seen"] / max(sums["seconds"], 1e-9),
           "train_seconds": sums["train_seconds"] + sums["seconds"], "epoch_seconds": sums["seconds"]}
    weights = state.ema if state.ema is not None else model.state_dict()
    mining = cfg.mine > 0 and mining_epoch(epoch, cfg.epochs)
    validating = len(val_set) > 0 and ((epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs)
    finder = eval_finder(cfg, model, state, device) if validating or mining else None
    if validating:
        row["val_recall"], row["val_fp_per_scene"] = finder_recall(finder, val_set)
    if mining:
        t0 = time.perf_counter()
        state.negatives, found = mine(finder, train_set.images, train_set.boxes, state.negatives, epoch)
        seconds = time.perf_counter() - t0
        row["train_seconds"] += seconds  # mining is part of training
        log(f"mined {found} false positives in {len(scenes_to_mine(epoch, len(train_set)))} training scenes "
            f"({seconds:.1f} s); {sum(map(len, state.negatives))} remembered")
    model.train()
    state.epoch, state.step, state.sums = epoch + 1, 0, new_sums(train_seconds=row["train_seconds"])
    if validating:
        score = row["val_recall"] - FP_PENALTY * row["val_fp_per_scene"]
    elif len(val_set):  # between --val-every passes no epoch is a candidate for the best weights
        score = -math.inf
    else:  # without validation scenes the loss ranks the epochs
        score = -row["train_loss"]
    improved = score > state.best_score
    state.best_score = max(state.best_score, score)
    metrics_csv.append_metrics(run / "metrics.csv", row, FIELDS)
    val = (f"val recall {row['val_recall']:.3f} at {row['val_fp_per_scene']:.2f} FP/scene" if validating
           else f"validates every {cfg.val_every} epochs" if len(val_set) else "no validation scenes")
    log(f"epoch {epoch + 1:>3}/{cfg.epochs}  loss {row['train_loss']:.4f} (heat {row['heat_loss']:.4f}, box "
        f"{row['box_loss']:.4f})  {val}  lr {row['lr']:.4g}  {row['crops_per_second']:.1f} crops/s  "
        f"{row['train_seconds']:.1f} s")
    name_step = state.epoch * steps
    tensors = {f"{'ema' if state.ema is not None else 'model'}.{k}": v for k, v in weights.items()}
    weights_info = {**info, "epoch": state.epoch, "val_recall": row["val_recall"],
                    "val_fp_per_scene": row["val_fp_per_scene"]}
    ckpt.save_weights(run / "last.safetensors", tensors, weights_info)
    if improved:
        ckpt.save_weights(run / "best.safetensors", tensors, weights_info)
        (run / "best.json").write_text(f'{{"checkpoint": "{ckpt.CHECKPOINT_PREFIX}{name_step:09d}"}}\n')
    save_state(run, name_step, model, optimizer, state, info)
    best = run / "best.json"  # none yet before the first --val-every pass
    ckpt.prune_checkpoints(run, cfg.keep, protect={best.read_text().split('"')[3]} if best.exists() else set())
    return row


def eval_finder(cfg: TrainConfig, model: torch.nn.Module, state: TrainState, device: torch.device) -> SignFinder:
    """The finder as it stands, in eval mode: the EMA weights when there are any."""
    eval_model = model
    if state.ema is not None:
        eval_model = create_model(cfg.model, num_classes=len(CATEGORIES), image_size=cfg.image_size,
                                  **cfg.model_options).to(device, memory_format=torch.channels_last)
        eval_model.load_state_dict(state.ema)
    return SignFinder(eval_model.eval(), device, cfg.bf16)


def finder_recall(finder: SignFinder, scenes: SceneSet, threshold: float = VAL_THRESHOLD,
                  iou: float = VAL_IOU) -> tuple[float, float]:
    """Share of the signs found (any category) at IoU >= iou among proposals scoring >= threshold, and the
    proposals per scene that match no sign (metrics.match_any_class: one proposal per sign, best score first)."""
    found = signs = false = 0
    for image, truth in zip(scenes.images, scenes.boxes, strict=True):
        boxes, scores, _ = finder.propose(image, threshold)
        sign_of = match_any_class(truth, boxes.detach().cpu(), scores.detach().float().cpu(), iou)
        signs += len(truth)
        found += len(sign_of) - sign_of.count(-1)
        false += sign_of.count(-1)
    return found / max(signs, 1), false / max(len(scenes), 1)
