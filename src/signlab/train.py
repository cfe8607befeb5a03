"""Training: one function that reads top to bottom, checkpointing so that a resumed run is bit-identical.

Exact resume rests on one rule: every random choice is a function of (seed, epoch, step, rank). The data
order of an epoch is drawn from a generator seeded by (seed, epoch); the augmentation and dropout of a step
from generators seeded by (seed, epoch, step, rank). The learning rate is a function of the global step. So
the checkpoint only has to carry weights, optimizer state, EMA, position and running sums; the RNG states are
saved and restored too, for code that draws from the global generators.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from signlab import checkpoint as ckpt
from signlab import metrics
from signlab.augment import augment_batch, flip_batch, gtsrb_flip_tables
from signlab.classes import GTSRB_CLASS_NAMES
from signlab.config import TrainConfig, resolve_config
from signlab.contrast import normalize_contrast
from signlab.data import SAMPLE_HELDOUT, ImageSet, channel_stats, load_images, split_indices
from signlab.distributed import Distributed
from signlab.errors import UserError
from signlab.models import count_macs, count_parameters, create_model
from signlab.predict import autocast, bf16_active, pick_device, predict_logits, to_input

STOP_EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class NonFiniteError(UserError):
    def __init__(self, what: str, epoch: int, step: int) -> None:
        super().__init__(f"non-finite {what} at epoch {epoch + 1}, step {step + 1}; the last good checkpoint is "
                         f"kept; lower --lr or check the data", exit_code=3)


@dataclass
class Data:
    train: ImageSet
    val: ImageSet | None
    mean: np.ndarray  # (3,) in [0, 1] units, from the training split only
    std: np.ndarray


def prepare_data(cfg: TrainConfig, log=print) -> Data:
    if cfg.data is None and cfg.val_data is None:
        # The shipped sample comes split by track: validate on its held-out part, train on all the rest.
        cfg.val_data = str(SAMPLE_HELDOUT)
    load = dict(size=cfg.image_size, crop=cfg.crop, max_pixels=cfg.max_image_pixels,
                max_bad_fraction=cfg.max_bad_fraction, progress=True)
    full = load_images(cfg.data, **load)
    if cfg.val_data:
        train, val = full, load_images(cfg.val_data, **load)
    else:
        train_idx, val_idx = split_indices(full, cfg.val_fraction, cfg.seed)
        train, val = full.subset(train_idx), (full.subset(val_idx) if len(val_idx) else None)
    if len(train) == 0:
        raise UserError(f"{cfg.data}: no training images left after the validation split; lower --val-fraction")
    train.images = normalize_contrast(train.images, cfg.contrast)
    if val is not None:
        val.images = normalize_contrast(val.images, cfg.contrast)
    mean, std = channel_stats(train.images)
    tracks = len(set(train.tracks[train.tracks >= 0].tolist()))
    log(f"data: {len(train)} training images ({tracks} tracks), {len(val) if val else 0} validation, "
        f"{len(full.class_names)} classes, layout {full.layout}, {len(full.skipped)} skipped")
    return Data(train, val, mean, std)


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """One-cycle: linear warm-up from lr/20 to lr, then cosine down to lr/1000 (step counts from 0)."""
    warm = max(1, int(cfg.warmup * total))
    if step < warm:
        return cfg.lr * (0.05 + 0.95 * step / warm)
    progress = (step - warm) / max(1, total - warm)
    return cfg.lr * (0.001 + 0.999 * 0.5 * (1 + math.cos(math.pi * progress)))


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.ndim > 1]  # BN scales and biases are not decayed
    rest = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    raise UserError(f"--optimizer {cfg.optimizer}: unknown; use sgd or adamw")


def loss_fn(logits: torch.Tensor, y: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    logits = logits.float()
    if cfg.loss == "cross_entropy":
        return F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
    if cfg.loss == "squared":  # the lecture's L = Σ_j (σ(z_j) − y_j)², averaged over the batch
        target = F.one_hot(y, logits.shape[1]).float()
        return ((torch.sigmoid(logits) - target) ** 2).sum(1).mean()
    raise UserError(f"--loss {cfg.loss}: unknown; use cross_entropy or squared")


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


def weights_info(cfg: TrainConfig, data: Data, class_names: list[str], epoch: int, val_acc: float | None) -> dict:
    return {"config": cfg.to_dict(), "mean": data.mean.tolist(), "std": data.std.tolist(),
            "class_names": class_names, "epoch": epoch, "val_accuracy": val_acc}


def train(cfg: TrainConfig, overrides: dict | None = None) -> dict:
    """Train a model as `cfg` says; returns the final metrics. Raises UserError on bad input or a fault."""
    dist = Distributed.from_env()
    log = print if dist.is_main else (lambda *a, **k: None)
    cfg = resolve_config(cfg, overrides or {}, log)
    device = dist.device if dist.world > 1 else pick_device(cfg.device)
    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    run = Path(cfg.out)
    try:
        run.mkdir(parents=True, exist_ok=True)
        probe = run / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise UserError(f"--out {run}: cannot write there ({e.strerror or e}); choose another folder") from None

    if not cfg.resume and (ckpt.list_checkpoints(run) or (run / "metrics.csv").exists()):
        if not cfg.overwrite:
            raise UserError(f"--out {run}: already holds a run; pass --resume to continue it, --overwrite to "
                            f"start it again, or choose another --out")
        if dist.is_main:
            clear_run(run)
    dist.barrier()

    data = prepare_data(cfg, log)
    class_names = list(data.train.class_names)
    if dist.is_main:
        cfg.save(run / "config.json")
        write_skipped(run / "skipped.txt", data)
    model = create_model(cfg.model, num_classes=len(class_names), image_size=cfg.image_size, init=cfg.init,
                         **cfg.model_options)
    log(f"model {cfg.model}: {count_parameters(model):,} parameters, {count_macs(model, cfg.image_size):,} MACs "
        f"per image; device {device}, bf16 {'on' if bf16_active(device, cfg.bf16) else 'off'}, "
        f"{torch.get_num_threads()} threads")
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(device, memory_format=memory_format)
    optimizer = build_optimizer(model, cfg)
    ema = {k: v.detach().clone().float() for k, v in model.state_dict().items()} if cfg.ema > 0 else None
    mean, std = torch.tensor(data.mean, device=device), torch.tensor(data.std, device=device)

    batch = min(cfg.batch_size, len(data.train))
    steps_per_epoch = max(1, len(data.train) // batch)  # drop the ragged tail: the next epoch's order differs
    total_steps = cfg.epochs * steps_per_epoch
    start_epoch, start_step, best_acc, sums = 0, 0, -math.inf, new_sums()  # a score may be any -train_loss

    if cfg.resume:
        loaded, skipped = ckpt.load_latest(run)
        for name, reason in skipped:
            log(f"resume: skipped checkpoint {name}: {reason}")
        if loaded is None:
            log(f"resume: no usable checkpoint in {run / 'checkpoints'}; starting from scratch")
            (run / "metrics.csv").unlink(missing_ok=True)
        else:
            weights, state, meta = loaded
            try:  # fails only when --force-resume changed the model (its options, or the classes)
                model.load_state_dict({k[6:]: v for k, v in weights.items() if k.startswith("model.")})
                ckpt.load_optimizer_state(optimizer, state, meta["optimizer"])
            except (RuntimeError, ValueError, KeyError):
                raise UserError(f"--resume: checkpoint {meta['name']} holds another model's weights; they do not "
                                f"fit {cfg.model} {cfg.model_options}: keep the model or train into another "
                                f"--out") from None
            if ema is not None:
                ema = {k[4:]: v for k, v in weights.items() if k.startswith("ema.")}
            ckpt.restore_rng_states(meta, state)
            start_epoch, start_step, best_acc, sums = meta["epoch"], meta["step"], meta["best_acc"], meta["sums"]
            log(f"resume: from {meta['name']} (epoch {start_epoch + 1}, step {start_step})")
            metrics.truncate_metrics(run / "metrics.csv", start_epoch)
    ddp_model = dist.wrap(model)
    # torch.compile fuses the elementwise work of BN and ReLU, forward and backward, into generated C++ (CPU) or
    # Triton (CUDA) kernels; the first step pays the compilation (~45 s on a CPU), logged, in train_seconds.
    step_model = torch.compile(ddp_model) if cfg.compile else ddp_model
    compile_pending = cfg.compile
    flip_tables = None
    if cfg.flips > 0:
        if list(class_names) == list(GTSRB_CLASS_NAMES):
            flip_tables = gtsrb_flip_tables()
        else:
            log("flips: off, the classes are not GTSRB's and their mirror images are unknown")

    def check_finite(epoch: int, step: int) -> None:
        """Never save non-finite numbers: buffers too (BN running variances overflow before the loss does)."""
        tensors = [*model.state_dict().values(), *(ema.values() if ema is not None else ())]
        if not all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point()):
            raise NonFiniteError("weights", epoch, step)  # never replace a good checkpoint

    def save(epoch: int, step: int, name_step: int) -> Path:
        check_finite(epoch, max(step - 1, 0))
        weights = {f"model.{k}": v for k, v in model.state_dict().items()}
        if ema is not None:
            weights.update({f"ema.{k}": v for k, v in ema.items()})
        opt_tensors, opt_meta = ckpt.optimizer_state(optimizer)
        state = {**opt_tensors, "rng.torch": torch.get_rng_state()}
        meta = {"name": f"{ckpt.CHECKPOINT_PREFIX}{name_step:09d}", "epoch": epoch, "step": step,
                "best_acc": best_acc, "sums": sums, "optimizer": opt_meta, "rng": ckpt.rng_states(),
                "config": cfg.to_dict(), "mean": data.mean.tolist(), "std": data.std.tolist(),
                "class_names": class_names}
        return ckpt.save_checkpoint(run, name_step, weights, state, meta)

    history: list[dict] = []
    with StopRequest() as stop:
        for epoch in range(start_epoch, cfg.epochs):
            order = epoch_order(cfg, epoch, len(data.train))
            model.train()
            bar = tqdm(range(start_step, steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step",
                       initial=start_step, total=steps_per_epoch, leave=False,
                       disable=not (cfg.progress and dist.is_main and sys.stderr.isatty()), file=sys.stderr)
            for step in bar:
                t0 = time.perf_counter()
                global_step = epoch * steps_per_epoch + step
                idx = dist.shard(order[step * batch:(step + 1) * batch])
                x = to_input(data.train.images[idx], mean, std, device, cfg.channels_last)  # (b, 3, H, W)
                y = torch.from_numpy(data.train.labels[idx]).to(device)  # (b,)
                seed = step_seed(cfg, epoch, step, dist.rank)
                generator = torch.Generator().manual_seed(seed)
                if flip_tables is not None:
                    x, y = flip_batch(x, y, flip_tables, generator, cfg.flips)
                x = augment_batch(x, cfg.augment, generator)
                torch.manual_seed(seed)  # dropout and any other draw from the global generator
                lr = lr_at(global_step, total_steps, cfg)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                with autocast(device, cfg.bf16):
                    logits = step_model(x)  # (b, classes)
                loss = loss_fn(logits, y, cfg)
                if not torch.isfinite(loss):
                    raise NonFiniteError("loss", epoch, step)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grads = [p.grad for p in model.parameters() if p.grad is not None]
                if not torch.isfinite(torch.stack(torch._foreach_norm(grads)).sum()):
                    raise NonFiniteError("gradient", epoch, step)
                optimizer.step()
                if ema is not None:
                    update_ema(ema, model, cfg.ema, global_step)
                correct = int((logits.argmax(1) == y).sum())
                if compile_pending:
                    compile_pending = False
                    log(f"compile: the first step took {time.perf_counter() - t0:.1f} s (compilation included)")
                sums = dist.add_sums(sums, float(loss.detach()) * len(idx), correct, len(idx), time.perf_counter() - t0)
                bar.set_postfix(loss=f"{sums['loss'] / sums['seen']:.3f}", acc=f"{sums['correct'] / sums['seen']:.3f}",
                                img_s=f"{sums['seen'] / max(sums['seconds'], 1e-9):.0f}")
                if dist.any_flag(stop.signum is not None):
                    bar.close()
                    return stop_mid_epoch(stop, dist, save, epoch, step + 1, global_step + 1, run, cfg)
            bar.close()
            dist.sync_buffers(model)

            val_loss, val_acc = validate(model, ema, data.val, mean, std, device, cfg, len(class_names))
            seen = max(sums["seen"], 1)
            row = {"epoch": epoch + 1, "train_loss": sums["loss"] / seen, "train_accuracy": sums["correct"] / seen,
                   "val_loss": val_loss, "val_accuracy": val_acc,
                   "lr": lr_at((epoch + 1) * steps_per_epoch - 1, total_steps, cfg),  # the epoch's last step's
                   "images_per_second": sums["seen"] / max(sums["seconds"], 1e-9),
                   "train_seconds": sums["train_seconds"] + sums["seconds"], "epoch_seconds": sums["seconds"]}
            history.append(row)
            score = val_acc if val_acc is not None else -row["train_loss"]
            improved = score > best_acc
            best_acc = max(best_acc, score)
            sums = new_sums(train_seconds=row["train_seconds"])
            start_step = 0
            if dist.is_main:
                check_finite(epoch, steps_per_epoch - 1)
                metrics.append_metrics(run / "metrics.csv", row)
                log(metrics.format_row(row, cfg.epochs))
                # The checkpoint is the commit point, so it is written last: a kill before it leaves the previous
                # checkpoint the newest, and the resumed run writes last, best and best.json again, identically.
                name_step = (epoch + 1) * steps_per_epoch
                tensors = {f"{'ema' if ema is not None else 'model'}.{k}": v
                           for k, v in (ema or model.state_dict()).items()}
                info = weights_info(cfg, data, class_names, epoch + 1, val_acc)
                ckpt.save_weights(run / "last.safetensors", tensors, info)
                if improved:
                    ckpt.save_weights(run / "best.safetensors", tensors, info)
                    best = {"checkpoint": f"{ckpt.CHECKPOINT_PREFIX}{name_step:09d}", **row}
                    (run / "best.json").write_text(json.dumps(best) + "\n")
                save(epoch + 1, 0, name_step)
                best_name = json.loads((run / "best.json").read_text())["checkpoint"]
                ckpt.prune_checkpoints(run, cfg.keep, protect={best_name})
    if dist.world > 1:
        agree = dist.replicas_agree(model)
        log(f"ranks: weights {'identical' if agree else 'DIFFER'} across {dist.world} processes")
    dist.close()
    final = history[-1] if history else {}
    if dist.is_main:
        log(f"done: weights in {run / 'best.safetensors'} and {run / 'last.safetensors'}")
    return final


def stop_mid_epoch(stop: StopRequest, dist: Distributed, save, epoch: int, step: int, global_step: int,
                   run: Path, cfg: TrainConfig) -> dict:
    signum = stop.signum or signal.SIGTERM
    if dist.is_main:
        save(epoch, step, global_step)
        name = signal.Signals(signum).name
        print(f"stopped by {name} at epoch {epoch + 1}, step {step}; resume with: "
              f"signlab train --out {run} --resume", flush=True)
    dist.close()
    raise SystemExit(STOP_EXIT_CODES.get(signum, 143))


def clear_run(run: Path) -> None:
    """--overwrite: remove what a previous run left, so its checkpoints and metrics cannot mix with ours."""
    shutil.rmtree(run / "checkpoints", ignore_errors=True)
    for name in ("metrics.csv", "best.json", "best.safetensors", "last.safetensors", "skipped.txt"):
        (run / name).unlink(missing_ok=True)


def new_sums(train_seconds: float = 0.0) -> dict:
    return {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0, "train_seconds": train_seconds}


@torch.no_grad()
def update_ema(ema: dict, model: torch.nn.Module, decay: float, step: int) -> None:
    """Average weights (and BN statistics) over recent steps. The decay ramps up as (1 + step) / (10 + step):
    a fixed 0.999 would keep 76 % of the random initial weights after an epoch of 275 steps (measured: 0.7 %
    validation accuracy), so short runs average only over the steps they have."""
    decay = min(decay, (1 + step) / (10 + step))
    for k, v in model.state_dict().items():
        if v.dtype.is_floating_point:
            ema[k].mul_(decay).add_(v.float(), alpha=1 - decay)
        else:
            ema[k].copy_(v)


def validate(model, ema, val: ImageSet | None, mean, std, device, cfg,
             num_classes: int) -> tuple[float | None, float | None]:
    if val is None or len(val) == 0:
        return None, None
    eval_model = model
    if ema is not None:
        eval_model = create_model(cfg.model, num_classes=num_classes, image_size=cfg.image_size,
                                  **cfg.model_options).to(device, memory_format=torch.channels_last)
        eval_model.load_state_dict(ema)
    logits = predict_logits(eval_model, val.images, mean, std, device, bf16=cfg.bf16)
    y = torch.from_numpy(val.labels)
    loss = float(F.cross_entropy(logits, y))
    return loss, float((logits.argmax(1) == y).float().mean())


def write_skipped(path: Path, data: Data) -> None:
    skipped = list(data.train.skipped)
    if data.val is not None and data.val.root != data.train.root:  # a split of one folder shares its list
        skipped += data.val.skipped
    path.write_text("".join(f"{p}\t{reason}\n" for p, reason in skipped))
    if skipped:
        print(f"skipped {len(skipped)} unusable image(s); listed in {path}")
