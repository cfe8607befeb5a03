"""The run folder and where training stands in it: opening a run, saving and restoring a `TrainState`.

A checkpoint carries weights (model, EMA), optimizer tensors, the TrainState and the RNG states; every other
random choice is a function of (seed, epoch, step, rank), so a resumed run is bit-identical (see trainer.py).
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from signlab import checkpoint as ckpt
from signlab import metrics_csv
from signlab.config import TrainConfig
from signlab.errors import UserError


def new_sums(train_seconds: float = 0.0) -> dict:
    """Running totals of an epoch; train_seconds carries the training time of the epochs before it."""
    return {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0, "train_seconds": train_seconds}


@dataclass
class TrainState:
    """Where training stands: what a checkpoint saves besides weights and optimizer tensors."""

    epoch: int = 0  # the epoch in progress, from 0 (= epochs completed)
    step: int = 0  # steps completed in it
    best_score: float = -math.inf  # best validation accuracy so far (-train loss without validation)
    sums: dict = field(default_factory=new_sums)
    ema: dict[str, torch.Tensor] | None = None  # float32 running average of the weights, on the model's device
    negatives: list[np.ndarray] | None = None  # detection --mine: per training scene (k, 4) float32 corners


def open_run(cfg: TrainConfig, is_main: bool) -> Path:
    """The run folder, writable, and cleared on --overwrite; a run already there needs --resume or --overwrite."""
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
        if is_main:
            clear_run(run)
    return run


def clear_run(run: Path) -> None:
    """--overwrite: remove what a previous run left, so its checkpoints and metrics cannot mix with ours."""
    shutil.rmtree(run / "checkpoints", ignore_errors=True)
    for name in ("metrics.csv", "best.json", "best.safetensors", "last.safetensors", "skipped.txt", "split.json",
                 "verifier.safetensors", "operating_point.json"):  # the last two: detection runs
        (run / name).unlink(missing_ok=True)


def init_ema(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().float() for k, v in model.state_dict().items()}


def restore_state(run: Path, cfg: TrainConfig, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                  log=print) -> TrainState:
    """A fresh TrainState, or on --resume the newest checkpoint that verifies, loaded into model and optimizer."""
    state = TrainState(ema=init_ema(model) if cfg.ema > 0 else None)
    if not cfg.resume:
        return state
    loaded, skipped = ckpt.load_latest(run)
    for name, reason in skipped:
        log(f"resume: skipped checkpoint {name}: {reason}")
    if loaded is None:
        log(f"resume: no usable checkpoint in {run / 'checkpoints'}; starting from scratch")
        (run / "metrics.csv").unlink(missing_ok=True)
        return state
    weights, tensors, meta = loaded
    try:  # fails only when --force-resume changed the model (its options, or the classes)
        model.load_state_dict({k[6:]: v for k, v in weights.items() if k.startswith("model.")})
        ckpt.load_optimizer_state(optimizer, tensors, meta["optimizer"])
    except (RuntimeError, ValueError, KeyError):
        raise UserError(f"--resume: checkpoint {meta['name']} holds another model's weights; they do not fit "
                        f"{cfg.model} {cfg.model_options}: keep the model or train into another --out") from None
    if state.ema is not None:
        saved = {k[4:]: v for k, v in weights.items() if k.startswith("ema.")}
        if saved:  # checkpoints load on the CPU: the average lives where the model does
            device = next(model.parameters()).device
            state.ema = {k: v.to(device).float() for k, v in saved.items()}
        else:
            log("resume: the checkpoint has no EMA weights (trained without --ema); the average starts from "
                "the restored weights")
            state.ema = init_ema(model)
    ckpt.restore_rng_states(meta, tensors)
    state.epoch, state.step, state.best_score, state.sums = meta["epoch"], meta["step"], meta["best_acc"], meta["sums"]
    if meta.get("negatives") is not None:  # float32 corners round-trip exactly through JSON's doubles
        state.negatives = [np.array(n, np.float32).reshape(-1, 4) for n in meta["negatives"]]
    log(f"resume: from {meta['name']} (epoch {state.epoch + 1}, step {state.step})")
    metrics_csv.truncate_metrics(run / "metrics.csv", state.epoch)
    return state


def weights_finite(model: torch.nn.Module, state: TrainState) -> bool:
    """Buffers count: BN running variances overflow before the loss does."""
    tensors = [*model.state_dict().values(), *(state.ema.values() if state.ema is not None else ())]
    return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())


def save_state(run: Path, name_step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               state: TrainState, info: dict) -> Path:
    """Checkpoint `ckpt-<name_step>`: weights, optimizer, TrainState, RNG states and `info` (config,
    preprocessing, class names)."""
    weights = {f"model.{k}": v for k, v in model.state_dict().items()}
    if state.ema is not None:
        weights.update({f"ema.{k}": v for k, v in state.ema.items()})
    opt_tensors, opt_meta = ckpt.optimizer_state(optimizer)
    tensors = {**opt_tensors, "rng.torch": torch.get_rng_state()}
    meta = {"name": f"{ckpt.CHECKPOINT_PREFIX}{name_step:09d}", "epoch": state.epoch, "step": state.step,
            "best_acc": state.best_score, "sums": state.sums, "optimizer": opt_meta, "rng": ckpt.rng_states(),
            **info}
    if state.negatives is not None:
        meta["negatives"] = [n.tolist() for n in state.negatives]
    return ckpt.save_checkpoint(run, name_step, weights, tensors, meta)
