"""Training: one function whose epoch loop reads top to bottom, checkpointing so that a resumed run is
bit-identical.

Exact resume rests on one rule: every random choice is a function of (seed, epoch, step, rank). The data
order of an epoch is drawn from a generator seeded by (seed, epoch); the augmentation and dropout of a step
from generators seeded by (seed, epoch, step, rank). The learning rate is a function of the global step. So
the checkpoint only has to carry weights, optimizer state, EMA, position and running sums (train_state.py);
the RNG states are saved and restored too, for code that draws from the global generators.
"""

from __future__ import annotations

import gc
import json
import math
import random
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from signlab import checkpoint as ckpt
from signlab import metrics_csv
from signlab.augment import augment_batch, flip_batch, gtsrb_flip_tables
from signlab.classes import GTSRB_CLASS_NAMES
from signlab.config import TrainConfig
from signlab.data import DataSplit, align_labels, channel_stats, data_folders, split_digest, split_indices
from signlab.distributed import Distributed
from signlab.errors import UserError
from signlab.inference import predict_logits
from signlab.models import count_macs, count_parameters, create_model
from signlab.preprocess import Preprocessing
from signlab.runtime import autocast, bf16_active, default_threads, keep_freed_memory, pick_device, threads_text
from signlab.train_state import TrainState, new_sums, open_run, restore_state, save_state, weights_finite

STOP_EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class NonFiniteError(UserError):
    def __init__(self, what: str, epoch: int, step: int) -> None:
        super().__init__(f"non-finite {what} at epoch {epoch + 1}, step {step + 1}; the last good checkpoint is "
                         f"kept; lower --lr or check the data", exit_code=3)


def prepare_data(cfg: TrainConfig, log=print) -> tuple[DataSplit, Preprocessing]:
    """The training and validation images, decoded and contrast-normalised by the run's Preprocessing, which
    comes back with the training split's per-channel statistics."""
    pre = Preprocessing.from_config(cfg)
    data, val_data = data_folders(cfg.data, cfg.val_data, log)
    full = pre.load(data, cfg.max_bad_fraction, progress=True)
    if val_data:  # its own folder: its classes are matched to the training set's by name
        train = full
        val = align_labels(pre.load(val_data, cfg.max_bad_fraction, progress=True), full.class_names)
    else:
        train_idx, val_idx = split_indices(full, cfg.val_fraction, cfg.split_seed)
        train, val = full.subset(train_idx), (full.subset(val_idx) if len(val_idx) else None)
    if len(train) == 0:
        raise UserError(f"{cfg.data}: no training images left after the validation split; lower --val-fraction")
    train = replace(train, images=pre.normalize(train.images))
    val = replace(val, images=pre.normalize(val.images)) if val is not None else None
    pre = pre.with_stats(*channel_stats(train.images))
    tracks = len(set(train.tracks[train.tracks >= 0].tolist()))
    log(f"data: {len(train)} training images ({tracks} tracks), {len(val) if val else 0} validation, "
        f"{len(full.class_names)} classes, layout {full.layout}, {len(full.skipped)} skipped")
    return DataSplit(train, val, str(data)), pre


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """One-cycle: linear warm-up from lr/20 to lr, then cosine down to lr/1000 (step counts from 0)."""
    warm = max(1, int(cfg.warmup * total))
    if step < warm:
        return cfg.lr * (0.05 + 0.95 * step / warm)
    progress = (step - warm) / max(1, total - warm)
    return cfg.lr * (0.001 + 0.999 * 0.5 * (1 + math.cos(math.pi * progress)))


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.ndim > 1]  # BN scales and biases are not decayed
    rest = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)


def loss_fn(logits: torch.Tensor, y: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    logits = logits.float()
    if cfg.loss == "squared":  # the lecture's L = Σ_j (σ(z_j) − y_j)², averaged over the batch
        target = F.one_hot(y, logits.shape[1]).float()
        return ((torch.sigmoid(logits) - target) ** 2).sum(1).mean()
    return F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)


def step_seed(cfg: TrainConfig, epoch: int, step: int, rank: int) -> int:
    return int(np.random.SeedSequence([cfg.seed, epoch, step, rank]).generate_state(1)[0])


def epoch_order(cfg: TrainConfig, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([cfg.seed, epoch]).permutation(n)


class StopRequest:
    """SIGINT/SIGTERM set a flag; the loop finishes its step, checkpoints and exits with 130/143."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old = {}

    def __enter__(self) -> StopRequest:
        for s in STOP_EXIT_CODES:
            self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, _frame) -> None:
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)


@dataclass
class Training:
    """What stays fixed for a whole run: the config, the machine, the model and its data."""

    cfg: TrainConfig
    run: Path
    dist: Distributed
    device: torch.device
    model: nn.Module  # the module whose weights are saved
    step_model: nn.Module  # what the step calls: the model, wrapped by DDP and/or torch.compile
    optimizer: torch.optim.Optimizer
    data: DataSplit
    pre: Preprocessing
    steps_per_epoch: int
    batch: int  # global batch
    flip_tables: tuple | None
    log: Callable[[str], object]
    compile_logged: bool = False  # the first step of a compiled model (after a resume too) compiles

    def close(self) -> None:
        """Leave the process group. The DDP wrapper goes first: its reducer holds the group, and freed after
        destroy_process_group its gloo threads wait for ranks that have left (a hang at exit)."""
        self.step_model = self.model
        gc.collect()
        self.dist.close()

    @property
    def total_steps(self) -> int:
        return self.cfg.epochs * self.steps_per_epoch

    @property
    def class_names(self) -> list[str]:
        return list(self.data.train.class_names)

    def info(self, state: TrainState | None = None) -> dict:
        """What a weights file or checkpoint needs besides tensors to be used on its own."""
        info = {"config": self.cfg.to_dict(), "preprocessing": self.pre.to_dict(), "class_names": self.class_names}
        if state is not None:
            info["epoch"] = state.epoch
        return info


def train(cfg: TrainConfig, log: Callable[[str], object] | None = None) -> dict:
    """Train a model as the resolved config says (config.resolve_train_config); returns the last epoch's
    metrics. Raises UserError on bad input or a fault. log: where rank 0's lines go (default print)."""
    dist = Distributed.from_env()
    log = (log or print) if dist.is_main else (lambda *a, **k: None)
    if dist.world > 1 and cfg.batch_size < dist.world:
        raise UserError(f"--batch-size {cfg.batch_size}: must be at least the number of processes ({dist.world})")
    device = dist.device if dist.world > 1 else pick_device(cfg.device)
    if cfg.sync_bn and dist.world > 1 and device.type != "cuda":
        raise UserError("--sync-bn: PyTorch's SyncBatchNorm runs on CUDA only; on CPUs each process normalises "
                        "over its own share of the batch (drop --sync-bn)")
    torch.set_num_threads(cfg.threads or default_threads())
    keep_freed_memory()
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    run = open_run(cfg, dist.is_main)
    dist.barrier()
    t = setup(cfg, run, dist, device, log)
    state = restore_state(run, cfg, t.model, t.optimizer, log)
    history: list[dict] = []
    with StopRequest() as stop:
        for epoch in range(state.epoch, cfg.epochs):
            order = epoch_order(cfg, epoch, len(t.data.train))
            t.model.train()
            bar = tqdm(range(state.step, t.steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step",
                       initial=state.step, total=t.steps_per_epoch, leave=False, file=sys.stderr,
                       disable=not (cfg.progress and dist.is_main and sys.stderr.isatty()))
            for step in bar:
                stop_asked = train_step(t, state, epoch, step, order, stop.signum is not None)
                sums = state.sums
                bar.set_postfix(loss=f"{sums['loss'] / sums['seen']:.3f}", acc=f"{sums['correct'] / sums['seen']:.3f}",
                                img_s=f"{sums['seen'] / max(sums['seconds'], 1e-9):.0f}")
                if stop_asked:
                    bar.close()
                    stop_mid_epoch(t, state, stop.signum)
            bar.close()
            history.append(end_epoch(t, state))
    if dist.world > 1:
        agree = dist.replicas_agree(t.model)
        log(f"ranks: weights {'identical' if agree else 'DIFFER'} across {dist.world} processes")
    t.close()
    log(f"done: weights in {run / 'best.safetensors'} and {run / 'last.safetensors'}")
    return history[-1] if history else {}


def setup(cfg: TrainConfig, run: Path, dist: Distributed, device: torch.device, log) -> Training:
    """Data, model, optimizer and the run's config files: everything the epoch loop needs."""
    data, pre = prepare_data(cfg, log)
    class_names = list(data.train.class_names)
    if dist.is_main:
        cfg.save(run / "config.json")
        write_skipped(run / "skipped.txt", data)
        write_split(run / "split.json", cfg, data)
    model = create_model(cfg.model, num_classes=len(class_names), image_size=cfg.image_size, init=cfg.init,
                         **cfg.model_options)
    log(f"model {cfg.model}: {count_parameters(model):,} parameters, {count_macs(model, cfg.image_size):,} MACs "
        f"per image; device {device}, bf16 {'on' if bf16_active(device, cfg.bf16) else 'off'}, "
        f"{threads_text()}")
    if cfg.sync_bn and dist.world > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device, memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format)
    optimizer = build_optimizer(model, cfg)
    # torch.compile fuses the elementwise work of BN and ReLU, forward and backward, into generated C++ (CPU) or
    # Triton (CUDA) kernels; the first step pays the compilation (~45 s on a CPU), logged, in train_seconds.
    step_model = dist.wrap(model)
    step_model = torch.compile(step_model) if cfg.compile else step_model
    flip_tables = None
    if cfg.flips > 0:
        if class_names == list(GTSRB_CLASS_NAMES):
            flip_tables = gtsrb_flip_tables()
        else:
            log("flips: off, the classes are not GTSRB's and their mirror images are unknown")
    batch = min(cfg.batch_size, len(data.train))
    steps_per_epoch = max(1, len(data.train) // batch)  # drop the ragged tail: the next epoch's order differs
    return Training(cfg, run, dist, device, model, step_model, optimizer, data, pre, steps_per_epoch, batch,
                    flip_tables, log)


def train_step(t: Training, state: TrainState, epoch: int, step: int, order: np.ndarray, stop_flag: bool) -> bool:
    """One optimisation step on this rank's share of the global batch; True when any rank was asked to stop.

    Under DDP a rank's share may be one image short (a batch that does not divide by the world size): its
    loss is scaled by share × world / batch, so DDP's mean over ranks is the global batch's mean gradient."""
    t0 = time.perf_counter()
    cfg, dist = t.cfg, t.dist
    global_step = epoch * t.steps_per_epoch + step
    idx = dist.shard(order[step * t.batch:(step + 1) * t.batch])
    x = t.pre.to_tensor(t.data.train.images[idx], t.device, cfg.channels_last)  # (b, 3, S, S)
    y = torch.from_numpy(t.data.train.labels[idx]).to(t.device)  # (b,)
    seed = step_seed(cfg, epoch, step, dist.rank)
    generator = torch.Generator().manual_seed(seed)
    if t.flip_tables is not None:
        x, y = flip_batch(x, y, t.flip_tables, generator, cfg.flips)
    x = augment_batch(x, cfg.augment, generator)
    torch.manual_seed(seed)  # dropout and any other draw from the global generator
    for group in t.optimizer.param_groups:
        group["lr"] = lr_at(global_step, t.total_steps, cfg)
    with autocast(t.device, cfg.bf16):
        logits = t.step_model(x)  # (b, classes)
    loss = loss_fn(logits, y, cfg)
    t.optimizer.zero_grad(set_to_none=True)
    (loss * (len(idx) * dist.world / t.batch)).backward()
    grads = [p.grad for p in t.model.parameters() if p.grad is not None]
    grad_ok = bool(torch.isfinite(torch.nn.utils.get_total_norm(grads)))
    loss_value, correct = float(loss.detach()), int((logits.argmax(1) == y).sum())
    # One reduction per step carries the sums and every rank's flags, so all ranks raise or stop together.
    loss_total, correct, seen, loss_bad, grad_bad, stops = dist.sum(
        [loss_value * len(idx), correct, len(idx), not math.isfinite(loss_value), not grad_ok, stop_flag])
    if loss_bad:
        raise NonFiniteError("loss", epoch, step)
    if grad_bad:
        raise NonFiniteError("gradient", epoch, step)
    t.optimizer.step()
    if state.ema is not None:
        update_ema(state.ema, t.model, cfg.ema, global_step)
    if cfg.compile and not t.compile_logged:
        t.compile_logged = True
        t.log(f"compile: the first step took {time.perf_counter() - t0:.1f} s (compilation included)")
    s = state.sums
    state.sums = {**s, "loss": s["loss"] + loss_total, "correct": s["correct"] + int(correct),
                  "seen": s["seen"] + int(seen), "seconds": s["seconds"] + time.perf_counter() - t0}
    state.step = step + 1
    return bool(stops)


def end_epoch(t: Training, state: TrainState) -> dict:
    """Validate, log a metrics row, write last/best weights and the checkpoint (the commit point, written last:
    a kill before it leaves the previous checkpoint the newest, and the resumed run writes the rest again)."""
    cfg, dist, run, epoch = t.cfg, t.dist, t.run, state.epoch
    dist.sync_buffers(t.model)
    if dist.sum([not weights_finite(t.model, state)])[0]:
        raise NonFiniteError("weights", epoch, t.steps_per_epoch - 1)  # never replace a good checkpoint
    sums = state.sums
    seen = max(sums["seen"], 1)
    row = {"epoch": epoch + 1, "train_loss": sums["loss"] / seen, "train_accuracy": sums["correct"] / seen,
           "val_loss": None, "val_accuracy": None,
           "lr": lr_at((epoch + 1) * t.steps_per_epoch - 1, t.total_steps, cfg),  # the epoch's last step's
           "images_per_second": sums["seen"] / max(sums["seconds"], 1e-9),
           "train_seconds": sums["train_seconds"] + sums["seconds"], "epoch_seconds": sums["seconds"]}
    state.epoch, state.step, state.sums = epoch + 1, 0, new_sums(train_seconds=row["train_seconds"])
    if not dist.is_main:  # only rank 0 validates and writes: the others go on to the next epoch's first step
        return row
    row["val_loss"], row["val_accuracy"] = validate(t, state)
    score = row["val_accuracy"] if row["val_accuracy"] is not None else -row["train_loss"]
    improved = score > state.best_score
    state.best_score = max(state.best_score, score)
    metrics_csv.append_metrics(run / "metrics.csv", row)
    t.log(metrics_csv.format_row(row, cfg.epochs))
    name_step = state.epoch * t.steps_per_epoch
    tensors = {f"{'ema' if state.ema is not None else 'model'}.{k}": v
               for k, v in (state.ema or t.model.state_dict()).items()}
    info = {**t.info(state), "val_accuracy": row["val_accuracy"]}
    ckpt.save_weights(run / "last.safetensors", tensors, info)
    if improved:
        ckpt.save_weights(run / "best.safetensors", tensors, info)
        best = {"checkpoint": f"{ckpt.CHECKPOINT_PREFIX}{name_step:09d}", **row}
        (run / "best.json").write_text(json.dumps(best) + "\n")
    save_state(run, name_step, t.model, t.optimizer, state, t.info())
    best_name = json.loads((run / "best.json").read_text())["checkpoint"]
    ckpt.prune_checkpoints(run, cfg.keep, protect={best_name})
    return row


def stop_mid_epoch(t: Training, state: TrainState, signum: int | None) -> None:
    """SIGINT/SIGTERM: checkpoint where the epoch stands and exit 130/143; `--resume` continues from here."""
    signum = signum or signal.SIGTERM
    if t.dist.sum([not weights_finite(t.model, state)])[0]:
        raise NonFiniteError("weights", state.epoch, state.step - 1)
    if t.dist.is_main:
        save_state(t.run, state.epoch * t.steps_per_epoch + state.step, t.model, t.optimizer, state, t.info())
        print(f"stopped by {signal.Signals(signum).name} at epoch {state.epoch + 1}, step {state.step}; resume "
              f"with: signlab train --out {t.run} --resume", flush=True)
    t.close()
    raise SystemExit(STOP_EXIT_CODES.get(signum, 143))


@torch.no_grad()
def update_ema(ema: dict, model: nn.Module, decay: float, step: int) -> None:
    """Average weights (and BN statistics) over recent steps. The decay ramps up as (1 + step) / (10 + step):
    a fixed 0.999 would keep 76 % of the random initial weights after an epoch of 275 steps (measured: 0.7 %
    validation accuracy), so short runs average only over the steps they have."""
    decay = min(decay, (1 + step) / (10 + step))
    for k, v in model.state_dict().items():
        if v.dtype.is_floating_point:
            ema[k].mul_(decay).add_(v.float(), alpha=1 - decay)
        else:
            ema[k].copy_(v)


def validate(t: Training, state: TrainState) -> tuple[float | None, float | None]:
    """Loss and accuracy on the validation part, with the EMA weights when there are any."""
    val = t.data.val
    if val is None or len(val) == 0:
        return None, None
    eval_model = t.model
    if state.ema is not None:
        eval_model = create_model(t.cfg.model, num_classes=len(t.class_names), image_size=t.cfg.image_size,
                                  **t.cfg.model_options).to(t.device, memory_format=torch.channels_last)
        eval_model.load_state_dict(state.ema)
    logits = predict_logits(eval_model, val.images, t.pre, t.device, bf16=t.cfg.bf16)
    y = torch.from_numpy(val.labels)
    return float(F.cross_entropy(logits, y)), float((logits.argmax(1) == y).float().mean())


def write_skipped(path: Path, data: DataSplit) -> None:
    skipped = list(data.train.skipped)
    if data.val is not None and data.val.root != data.train.root:  # a split of one folder shares its list
        skipped += data.val.skipped
    path.write_text("".join(f"{p}\t{reason}\n" for p, reason in skipped))
    if skipped:
        print(f"skipped {len(skipped)} unusable image(s); listed in {path}")


def write_split(path: Path, cfg: TrainConfig, data: DataSplit) -> None:
    """Which images validated the run: evaluate without --data checks that it finds the same ones."""
    val = data.val
    record = {"data": cfg.data, "val_data": cfg.val_data, "val_fraction": cfg.val_fraction,
              "split_seed": cfg.split_seed, "train_images": len(data.train), "val_images": len(val) if val else 0,
              "val_sha256": split_digest(val) if val is not None else None}
    path.write_text(json.dumps(record, indent=2) + "\n")
