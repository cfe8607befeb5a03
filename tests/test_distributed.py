"""Two processes on the CPU with torchrun (gloo): training completes and both ranks hold identical weights."""

import csv
import subprocess
import sys

from safetensors.torch import load_file


def test_torchrun_two_processes_on_the_sample(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "signlab", "train", "--out", str(out), "--epochs", "1", "--batch-size", "128",
           "--threads", "1", "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ranks: weights identical across 2 processes" in done.stdout
    assert done.stdout.count("epoch   1/1") == 1  # only rank 0 logs
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert len(rows) == 1 and float(rows[0]["val_accuracy"]) >= 0
    assert len(load_file(str(out / "last.safetensors"))) > 0
