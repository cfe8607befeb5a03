"""Several processes on the CPU with torchrun (gloo).

What is claimed (README, "Several processes"): with a model without BatchNorm and without random augmentation,
two processes reach the weights of one process with the same global batch, up to float summation order, also
when the batch does not divide by the number of processes. What differs otherwise: each rank draws its own
augmentation and dropout (seeded by rank), and BatchNorm normalises over each rank's share (--sync-bn: CUDA).
"""

import csv
import json
import subprocess
import sys

import pytest
import torch
from conftest import make_gtsrb_train
from safetensors.torch import load_file

NO_AUGMENT = {"rotate_degrees": 0, "scale": 0, "translate": 0, "brightness": 0, "contrast": 0}


def train(out, data, preset, processes: int) -> subprocess.CompletedProcess:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
                if processes > 1 else [sys.executable])
    cmd = [*launcher, "-m", "signlab", "train", "--data", str(data), "--preset", str(preset), "--out", str(out),
           "--threads", "1", "--no-progress", "--bf16", "off", "--device", "cpu", "--val-fraction", "0.25"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture
def data(tmp_path):
    return make_gtsrb_train(tmp_path / "data", tracks=4, frames=6)


def test_two_processes_match_one_with_the_same_global_batch(tmp_path, data):
    preset = tmp_path / "mlp.json"  # 54 training images, batch 7: shares of 4 and 3 images
    preset.write_text(json.dumps({"model": "mlp", "model_options": {"hidden": 32}, "batch_size": 7, "epochs": 2,
                                  "lr": 0.05, "label_smoothing": 0.0, "augment": NO_AUGMENT}))
    train(tmp_path / "one", data, preset, 1)
    two = train(tmp_path / "two", data, preset, 2)
    assert "ranks: weights identical across 2 processes" in two.stdout
    assert two.stdout.count("epoch   1/2") == 1  # only rank 0 logs
    a, b = load_file(str(tmp_path / "one" / "last.safetensors")), load_file(str(tmp_path / "two" / "last.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), (k, (a[k] - b[k]).abs().max())
    rows = [list(csv.DictReader(open(tmp_path / d / "metrics.csv"))) for d in ("one", "two")]
    for r1, r2 in zip(*rows, strict=True):
        assert float(r1["train_loss"]) == pytest.approx(float(r2["train_loss"]), rel=1e-4)


def test_batchnorm_model_trains_and_ranks_agree(tmp_path, data):
    preset = tmp_path / "cnn.json"
    preset.write_text(json.dumps({"model": "signnet", "model_options": {"widths": [8, 16], "depth": 1},
                                  "batch_size": 8, "epochs": 1}))
    done = train(tmp_path / "ddp", data, preset, 2)
    assert "ranks: weights identical across 2 processes" in done.stdout
    assert len(list(csv.DictReader(open(tmp_path / "ddp" / "metrics.csv")))) == 1
