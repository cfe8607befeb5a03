"""What the benchmark scripts share: one `signlab train` in a subprocess, skipped with --reuse when done."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def train_run(run: Path, flags: list[str], reuse: bool) -> None:
    """`signlab train FLAGS --out RUN`, unless reuse and RUN holds a finished run (its done.txt)."""
    cmd = [sys.executable, "-m", "signlab", "train", *flags, "--out", str(run), "--no-progress", "--overwrite"]
    print("$", " ".join(cmd[1:]), flush=True)
    if reuse and (run / "done.txt").exists():
        return
    subprocess.run(cmd, check=True)
    (run / "done.txt").write_text(" ".join(cmd[1:]) + "\n")
