"""Checkpoints that survive any kill, and weights files that load without running code.

A training checkpoint is a folder ``RUN/checkpoints/ckpt-<global step>/`` holding
- ``weights.safetensors``: the model (and its EMA copy, ``ema.*``),
- ``state.safetensors``: optimizer tensors and the torch RNG state,
- ``meta.json``: everything else (epoch, step, RNG states, config, statistics) and the SHA-256 of both files.
It is written under a temporary name, fsynced, and renamed into place in one ``os.replace``: a kill at any
moment leaves either the whole new checkpoint or none of it. Nothing here unpickles: safetensors and JSON only.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from signlab.errors import UserError

CHECKPOINT_PREFIX = "ckpt-"
PICKLE_SUFFIXES = {".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin"}
# Tests set this to a file path: the save then creates that file and pauses inside the write, so a SIGKILL
# lands mid-save deterministically.
PAUSE_HOOK_ENV = "SIGNLAB_TEST_PAUSE_IN_SAVE"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, write) -> None:
    write(path)
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in tensors.items()}


def _pause_for_tests() -> None:
    marker = os.environ.get(PAUSE_HOOK_ENV)
    if marker:
        # Written aside and renamed, so a test that sees the marker never reads it half-written.
        staged = Path(f"{marker}.{os.getpid()}.tmp")
        staged.write_text(str(os.getpid()))
        os.replace(staged, marker)
        time.sleep(60)


def save_checkpoint(run_dir: Path, global_step: int, weights: dict[str, torch.Tensor],
                    state: dict[str, torch.Tensor], meta: dict) -> Path:
    """Atomically write checkpoint `ckpt-<global_step>`; raise UserError when the folder cannot be written."""
    folder = run_dir / "checkpoints"
    final = folder / f"{CHECKPOINT_PREFIX}{global_step:09d}"
    tmp = folder / f".tmp-{final.name}-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        _write_durably(tmp / "weights.safetensors", lambda p: save_file(_contiguous(weights), str(p)))
        _pause_for_tests()
        _write_durably(tmp / "state.safetensors", lambda p: save_file(_contiguous(state), str(p)))
        meta = dict(meta, sha256={n: _sha256(tmp / n) for n in ("weights.safetensors", "state.safetensors")})
        _write_durably(tmp / "meta.json", lambda p: p.write_text(json.dumps(meta)))
        _fsync_dir(tmp)
        if final.exists():
            # A re-save of the same step (a stop on an epoch's last step, then resume). Two renames with the
            # old copy parked under .old-: a kill between them is undone by _recover_parked.
            parked = folder / f".old-{final.name}"
            shutil.rmtree(parked, ignore_errors=True)
            os.replace(final, parked)
            os.replace(tmp, final)
            shutil.rmtree(parked, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(folder)
    except (OSError, SafetensorError) as e:  # safetensors reports a full disk as a SafetensorError
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"{folder}: cannot write checkpoint ({getattr(e, 'strerror', None) or e}); "
                        f"free disk space or choose another --out", exit_code=2) from None
    return final


def verify_checkpoint(path: Path) -> tuple[dict, dict, dict]:
    """Load and check one checkpoint folder: (weights, state, meta); raise ValueError saying what is wrong."""
    try:
        meta = json.loads((path / "meta.json").read_text())
    except FileNotFoundError:
        raise ValueError("incomplete (no meta.json)") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"unreadable meta.json ({e})") from None
    for name, digest in meta.get("sha256", {}).items():
        if not (path / name).is_file():
            raise ValueError(f"{name} missing")
        if _sha256(path / name) != digest:
            raise ValueError(f"{name} checksum mismatch (corrupt)")
    if set(meta.get("sha256", {})) != {"weights.safetensors", "state.safetensors"}:
        raise ValueError("meta.json lists no checksums")
    try:
        weights = load_file(str(path / "weights.safetensors"))
        state = load_file(str(path / "state.safetensors"))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"not a safetensors file ({e})") from None
    return weights, state, meta


def _recover_parked(folder: Path) -> None:
    """Put back a checkpoint parked by a re-save that was killed before its replacement arrived."""
    for parked in folder.glob(".old-*"):
        original = folder / parked.name[len(".old-"):]
        try:
            if original.exists():
                shutil.rmtree(parked, ignore_errors=True)
            else:
                os.replace(parked, original)
        except OSError:
            pass  # a read-only run folder: leave it, the other checkpoints still load


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint folders, newest (highest global step) first."""
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    _recover_parked(folder)
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX)]
    return sorted(found, key=lambda p: p.name, reverse=True)


def load_latest(run_dir: Path) -> tuple[tuple[dict, dict, dict] | None, list[tuple[str, str]]]:
    """The newest checkpoint that verifies, and (name, reason) for each newer one that did not."""
    skipped = []
    for path in list_checkpoints(run_dir):
        try:
            return verify_checkpoint(path), skipped
        except ValueError as e:
            skipped.append((path.name, str(e)))
    return None, skipped


def prune_checkpoints(run_dir: Path, keep: int, protect: set[str]) -> None:
    """Keep the newest `keep` checkpoints and those named in `protect` (the best); delete the rest."""
    for path in list_checkpoints(run_dir)[max(keep, 1):]:
        if path.name not in protect:
            shutil.rmtree(path, ignore_errors=True)
    for stale in (run_dir / "checkpoints").glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)  # leftovers of a save that was killed


# ---------------------------------------------------------------- weights files for evaluate/predict


def save_weights(path: Path, tensors: dict[str, torch.Tensor], info: dict) -> None:
    """Write a standalone weights file (model + everything needed to use it) atomically."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        _write_durably(tmp, lambda p: save_file(_contiguous(tensors), str(p), metadata={"signlab": json.dumps(info)}))
        os.replace(tmp, path)
    except (OSError, SafetensorError) as e:
        tmp.unlink(missing_ok=True)
        raise UserError(f"{path}: cannot write weights ({getattr(e, 'strerror', None) or e}); "
                        f"free disk space or choose another --out") from None


def resolve_weights(target: str | Path) -> Path:
    """RUN_DIR (-> best, else last) or a .safetensors file; refuse pickles with the reason."""
    target = Path(target)
    if target.is_dir():
        for name in ("best.safetensors", "last.safetensors"):
            if (target / name).is_file():
                return target / name
        raise UserError(f"{target}: no best.safetensors or last.safetensors in this folder; "
                        f"train first (signlab train --out {target}) or pass a weights file")
    if not target.is_file():
        raise UserError(f"{target}: no such run folder or weights file")
    if target.suffix.lower() in PICKLE_SUFFIXES:
        raise UserError(f"{target}: pickle-based checkpoints can run code when loaded and are refused; "
                        f"use a .safetensors file written by signlab")
    return target


def load_weights(target: str | Path) -> tuple[dict[str, torch.Tensor], dict, Path]:
    """Load a weights file: (tensors, info, path). Never unpickles."""
    path = resolve_weights(target)
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            info = json.loads((f.metadata() or {}).get("signlab", "null"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not a valid safetensors weights file ({e}); it may be corrupt or a "
                        f"pickle, which signlab refuses to load") from None
    if not isinstance(info, dict) or "config" not in info:
        raise UserError(f"{path}: safetensors file without signlab metadata; use RUN/best.safetensors "
                        f"or RUN/last.safetensors written by signlab train")
    return tensors, info, path


# ---------------------------------------------------------------- training state as tensors + JSON


def rng_states() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state()[1].tolist(),
            "numpy_pos": int(np.random.get_state()[2])}


def restore_rng_states(meta: dict, state: dict) -> None:
    py = meta["rng"]["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np.random.set_state(("MT19937", np.array(meta["rng"]["numpy"], dtype=np.uint32), meta["rng"]["numpy_pos"]))
    torch.set_rng_state(state["rng.torch"])


def optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Split the optimizer state into tensors (for safetensors) and plain values (for JSON): no pickle."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer_state(optimizer: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for name, value in meta["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
