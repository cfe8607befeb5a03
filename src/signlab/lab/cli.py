"""`signlab lab …`: the slides' framework examples and the lecture's experiments, one command each.

The experiments (torch, matplotlib) are imported inside the functions, so importing this module, like
importing signlab.lab, leaves torch unloaded.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
from pathlib import Path

from signlab.errors import UserError

SLIDES = {
    "slides-autodiff": "the slides' autodiff example: 100 steps of gradient descent on sum((x - y + z)^2)",
    "slides-checkpoint": "save a checkpoint after each epoch, stop, and restore the latest on start",
}


def list_experiments() -> dict[str, str]:
    from signlab.lab.experiments import EXPERIMENTS

    return {**SLIDES, **{name: text for name, (text, _) in EXPERIMENTS.items()}}


def slides_checkpoint(out: Path) -> dict:
    """Train a small CNN on the default drawn signs, stop it after its first epoch's checkpoint, then restart it:
    it restores the newest checkpoint and carries on, as the slides' training loop does."""
    run = out / "slides-checkpoint"
    preset = out / "slides-checkpoint.json"
    out.mkdir(parents=True, exist_ok=True)
    preset.write_text(json.dumps({"model": "signnet", "model_options": {"widths": [8, 16], "depth": 1},
                                  "epochs": 3, "batch_size": 128, "lr": 0.05}))
    base = [sys.executable, "-m", "signlab", "train", "--preset", str(preset), "--out", str(run), "--no-progress",
            "--overwrite"]
    print(f"1. train for 3 epochs, saving after each: {run / 'checkpoints'}", flush=True)
    proc = subprocess.Popen(base, stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        print("   " + line.rstrip(), flush=True)
        if line.lstrip().startswith("epoch   1/3"):
            proc.send_signal(signal.SIGTERM)  # as if the machine went down after epoch 1
            print("2. SIGTERM sent after epoch 1: the run saves where it is and stops", flush=True)
    code = proc.wait()
    saved = sorted(p.name for p in (run / "checkpoints").glob("ckpt-*"))
    print(f"   exit code {code}; checkpoints on disk: {', '.join(saved)}")
    print("3. start again with --resume: restore the newest checkpoint and continue", flush=True)
    done = subprocess.run(base + ["--resume"], capture_output=True, text=True)
    for line in done.stdout.splitlines():
        print("   " + line)
    if done.returncode != 0:
        raise UserError(f"slides-checkpoint: the resumed run failed: {done.stderr.strip().splitlines()[-1:]}")
    return {"stopped_exit_code": code, "checkpoints_after_stop": saved,
            "resumed_from": next((ln for ln in done.stdout.splitlines() if ln.startswith("resume:")), "")}


def run_lab(args: argparse.Namespace) -> int:
    experiments = list_experiments()
    if args.list or not args.name:
        for name, text in experiments.items():
            print(f"{name:<20} {text}")
        return 0
    if args.name not in experiments:
        raise UserError(f"lab {args.name}: unknown experiment; see signlab lab --list")
    out = Path(args.out)
    if args.name == "slides-autodiff":
        from signlab.lab.slides import slides_autodiff

        slides_autodiff()
        return 0
    if args.name == "slides-checkpoint":
        slides_checkpoint(out)
        return 0
    from signlab.lab.experiments import EXPERIMENTS

    _, run = EXPERIMENTS[args.name]
    run(data=args.data, out=out, budget=args.budget)
    return 0
