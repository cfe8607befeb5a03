"""Fault injection: run the real `signlab train` CLI in subprocesses, break it, and check that nothing was lost.

Every scenario checks the promised exit code and message, then that the run, once resumed, ends with the
weights of a run that never stopped, tensor for tensor: `last.safetensors`, `best.safetensors` and the newest
checkpoint's weights and optimizer state. The uninterrupted reference runs are made once per module.

A tiny model on a made-up GTSRB-layout set keeps a run at a few seconds (mostly Python and torch start-up);
one test uses the drawn-sign default set (no --data). Kills are aimed at the training loop by watching
/proc/PID/status: once the process catches SIGTERM, its stop handler is installed and the first step is about
to run. A kill inside a checkpoint write is made deterministic by the SIGNLAB_TEST_PAUSE_IN_SAVE hook.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import random
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import HEADER, make_gtsrb_train
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from signlab.checkpoint import CHECKPOINT_PREFIX, PAUSE_HOOK_ENV, list_checkpoints, load_latest, verify_checkpoint

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="watches /proc/PID/status")

TINY = {"model": "signnet", "model_options": {"widths": [8, 16], "depth": 1}, "batch_size": 8, "epochs": 3,
        "threads": 1}
STEPS = 6  # steps per epoch: 3 classes x 3 training tracks x 6 frames = 54 images, batch 8
MACHINE = ["--no-progress", "--threads", "1", "--device", "cpu"]  # bit-identity is promised on one CPU setup
DEFAULT_DATA_ARGS = ["--epochs", "1", "--batch-size", "256"]  # the tiny preset: 10 steps on the default data
RUN_TIMEOUT = 300
STOP_LINE = re.compile(r"^stopped by (SIG\w+) at epoch (\d+), step (\d+); resume with: (signlab train --out \S+ "
                       r"--resume)$", re.MULTILINE)


# ---------------------------------------------------------------- running the CLI


@dataclass
class Lab:
    root: Path
    data: Path  # 3 classes x 4 tracks x 6 frames
    preset: Path
    env: dict

    def fresh(self, seed: int, *extra: str, data: Path | None = None) -> list[str]:
        """The flags of a new run; a resume repeats them with --resume (they match the saved config)."""
        return ["--data", str(data or self.data), "--preset", str(self.preset), "--val-fraction", "0.25",
                "--seed", str(seed), *extra]


@pytest.fixture(scope="module")
def lab(tmp_path_factory, shared_default_root) -> Lab:
    root = tmp_path_factory.mktemp("faults")
    preset = root / "tiny.json"
    preset.write_text(json.dumps(TINY))
    env = {k: v for k, v in os.environ.items() if k != PAUSE_HOOK_ENV}
    env.update(SIGNLAB_CACHE=str(root / "cache"), PYTHONUNBUFFERED="1")
    (root / "cache").mkdir(parents=True)
    (root / "cache" / shared_default_root.name).symlink_to(shared_default_root)  # rendered once per session
    return Lab(root, make_gtsrb_train(root / "data", tracks=4, frames=6), preset, env)


def signlab(lab: Lab, *args, env: dict | None = None, preexec_fn=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "signlab", *map(str, args)], env=env or lab.env,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT, preexec_fn=preexec_fn)


def train(lab: Lab, out: Path, *args, **kwargs) -> subprocess.CompletedProcess:
    return signlab(lab, "train", "--out", out, *MACHINE, *args, **kwargs)


def run_printed_command(lab: Lab, stdout: str) -> subprocess.CompletedProcess:
    """Resume exactly as the stop message says: `signlab train --out RUN --resume`, nothing added."""
    command = shlex.split(STOP_LINE.search(stdout).group(4))
    return signlab(lab, *command[1:])


@pytest.fixture
def procs():
    """Started training processes; any still alive when a test ends (e.g. a failed one) are killed."""
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def start_train(lab: Lab, procs: list, out: Path, *args, pause_marker: Path | None = None) -> subprocess.Popen:
    env = dict(lab.env, **({PAUSE_HOOK_ENV: str(pause_marker)} if pause_marker else {}))
    proc = subprocess.Popen([sys.executable, "-m", "signlab", "train", "--out", str(out), *MACHINE, *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs.append(proc)
    return proc


def wait_until(condition, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (exit {proc.returncode}) before {what}:\n{out}\n{err}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)


def catches_sigterm(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(re.search(r"^SigCgt:\s*([0-9a-f]+)", status, re.MULTILINE).group(1), 16)
    return bool(caught >> (signal.SIGTERM - 1) & 1)


def wait_for_training_loop(proc: subprocess.Popen) -> None:
    """Until the stop handler is installed: data are loaded, the model built, the loop about to start."""
    wait_until(lambda: catches_sigterm(proc.pid), proc, "the training loop started")


def stop_with(proc: subprocess.Popen, signum: int) -> tuple[str, str]:
    proc.send_signal(signum)
    return proc.communicate(timeout=RUN_TIMEOUT)


def kill_inside_checkpoint_write(lab: Lab, procs: list, out: Path, *args) -> None:
    """Start a run whose next checkpoint save pauses after weights.safetensors; SIGKILL it there."""
    marker = out.parent / f"{out.name}-paused-in-save"
    marker.unlink(missing_ok=True)
    proc = start_train(lab, procs, out, *args, pause_marker=marker)
    wait_until(marker.exists, proc, "the checkpoint write paused")
    proc.kill()
    proc.communicate()
    assert marker.read_text() == str(proc.pid)


# ---------------------------------------------------------------- looking at run folders


def ckpt_name(global_step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{global_step:09d}"


def newest_good(out: Path) -> str | None:
    loaded, _ = load_latest(out)
    return loaded[2]["name"] if loaded else None


def leftovers(out: Path) -> list[Path]:
    return sorted((out / "checkpoints").glob(".tmp-*"))


def tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def assert_same_tensors(path: Path, ref: Path) -> None:
    a, b = tensors(path), tensors(ref)
    assert a.keys() == b.keys(), path
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), f"{path}: {k} differs from {ref}"


def metric_epochs(out: Path) -> list[str]:
    return [line.split(",")[0] for line in (out / "metrics.csv").read_text().splitlines()[1:]]


def assert_nothing_lost(out: Path, ref: Path) -> None:
    """The run ends exactly where the uninterrupted reference ended, tensor for tensor."""
    for name in ("last.safetensors", "best.safetensors"):
        assert_same_tensors(out / name, ref / name)
    newest, ref_newest = list_checkpoints(out)[0], list_checkpoints(ref)[0]
    assert newest.name == ref_newest.name
    for name in ("weights.safetensors", "state.safetensors"):
        assert_same_tensors(newest / name, ref_newest / name)
    assert metric_epochs(out) == metric_epochs(ref)  # no epoch lost or counted twice
    assert leftovers(out) == []  # a killed save's temporary folder is cleaned up


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def copy_run(ref: Path, out: Path, drop_after: int | None = None) -> Path:
    """A copy of a finished run; with drop_after=E, as if it had been killed after epoch E's checkpoint.

    last.safetensors is removed too, so a resumed run must write it again for the comparison to mean anything.
    """
    shutil.copytree(ref, out)
    (out / "last.safetensors").unlink()
    if drop_after is not None:
        for path in list_checkpoints(out):
            if int(path.name[len(CHECKPOINT_PREFIX):]) > drop_after * STEPS:
                shutil.rmtree(path)
    return out


def assert_one_error_line(result: subprocess.CompletedProcess, command: str, exit_code: int) -> str:
    assert result.returncode == exit_code, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"signlab {command}: error: "), result.stderr
    return lines[0]


def assert_stopped(stdout: str, signal_name: str, out: Path) -> tuple[int, int]:
    """The one stop line: the signal, the position (epoch, steps done in it) and the command to resume."""
    stops = STOP_LINE.findall(stdout)
    assert len(stops) == 1 and stops[0][0] == signal_name, stdout
    epoch, step = int(stops[0][1]), int(stops[0][2])
    assert stops[0][3] == f"signlab train --out {out} --resume"
    return epoch, step


def assert_stop_checkpoint(out: Path, epoch: int, step: int, steps_per_epoch: int) -> str:
    name = ckpt_name((epoch - 1) * steps_per_epoch + step)
    _, _, meta = verify_checkpoint(out / "checkpoints" / name)
    assert (meta["epoch"], meta["step"]) == (epoch - 1, step)  # the position in the epoch's data order
    assert newest_good(out) == name
    return name


# ---------------------------------------------------------------- references


# One step per epoch (batch 64 > 54 images); 10 of them, so that a signal sent at the start lands in training.
ONE_STEP_EPOCHS = ("--batch-size", "64", "--epochs", "10")
REFERENCES = {"seed0": (0,), "seed1": (1,), "seed2": (2,), "one-step-epochs": (0, *ONE_STEP_EPOCHS)}


@pytest.fixture(scope="module")
def reference(lab) -> dict[str, Path]:
    """Uninterrupted runs, made side by side once per module: name -> run folder."""
    procs = {}
    for name, (seed, *extra) in REFERENCES.items():
        out = lab.root / f"reference-{name}"
        procs[name] = (out, subprocess.Popen(
            [sys.executable, "-m", "signlab", "train", "--out", str(out), *MACHINE, *lab.fresh(seed, *extra)],
            env=lab.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [proc.communicate(timeout=RUN_TIMEOUT) for _, proc in procs.values()]
    for (_, proc), (stdout, stderr) in zip(procs.values(), outputs, strict=True):
        assert proc.returncode == 0, stdout + stderr
    return {name: out for name, (out, _) in procs.items()}


# ---------------------------------------------------------------- SIGKILL


def test_sigkill_right_after_a_checkpoint_and_at_a_random_moment(lab, reference, procs):
    out = lab.root / "sigkill"
    args = lab.fresh(2)
    # 1. As soon as the first checkpoint is renamed into place: whatever else the epoch writes (last, best,
    # best.json) must already be there, or a resume would find them behind the checkpoint it continues from.
    proc = start_train(lab, procs, out, *args)
    wait_until((out / "checkpoints" / ckpt_name(STEPS)).is_dir, proc, "the first checkpoint")
    proc.kill()
    proc.communicate()
    assert newest_good(out) == ckpt_name(STEPS)
    assert (out / "best.json").is_file() and (out / "best.safetensors").is_file()
    with safe_open(str(out / "last.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["signlab"])["epoch"] >= 1
    # 2. At a random moment of the resumed run's two epochs, about 0.2 s of training (the delay is drawn from a
    # fixed seed, so a failure can be replayed).
    proc = start_train(lab, procs, out, *args, "--resume")
    wait_for_training_loop(proc)
    time.sleep(random.Random(2).uniform(0.0, 0.15))
    proc.kill()
    stdout, _ = proc.communicate()
    assert f"resume: from {ckpt_name(STEPS)} (epoch 2, step 0)" in stdout
    print(f"random SIGKILL: {stdout.count('train loss')} epoch(s) done, newest checkpoint {newest_good(out)}")
    for path in list_checkpoints(out):
        verify_checkpoint(path)  # a kill never leaves a checkpoint folder that does not verify
    done = train(lab, out, *args, "--resume")
    assert done.returncode == 0, done.stderr
    assert_nothing_lost(out, reference["seed2"])


def test_sigkill_inside_the_first_checkpoint_write_then_sigint(lab, reference, procs):
    out = lab.root / "in-first-save"
    args = lab.fresh(1)
    kill_inside_checkpoint_write(lab, procs, out, *args)
    # Half a checkpoint (weights, no state, no meta.json) in a temporary folder that is not a checkpoint.
    (tmp,) = leftovers(out)
    assert sorted(p.name for p in tmp.iterdir()) == ["weights.safetensors"]
    assert list_checkpoints(out) == [] and newest_good(out) is None

    proc = start_train(lab, procs, out, *args, "--resume")
    wait_for_training_loop(proc)
    stdout, _ = stop_with(proc, signal.SIGINT)
    assert proc.returncode == 130
    assert f"resume: no usable checkpoint in {out / 'checkpoints'}; starting from scratch" in stdout
    epoch, step = assert_stopped(stdout, "SIGINT", out)
    name = assert_stop_checkpoint(out, epoch, step, STEPS)

    done = run_printed_command(lab, stdout)
    assert done.returncode == 0, done.stderr
    assert f"resume: from {name} (epoch {epoch}, step {step})" in done.stdout
    assert_nothing_lost(out, reference["seed1"])


# ---------------------------------------------------------------- SIGTERM / SIGINT


def test_sigterm_on_the_last_step_of_an_epoch_then_sigkill_inside_the_next_checkpoint_write(lab, reference, procs):
    # With one step per epoch a stop always lands on an epoch's last step, so the resumed run has nothing of
    # that epoch left to train, and its next save re-saves the same global step.
    out = lab.root / "last-step"
    proc = start_train(lab, procs, out, *lab.fresh(0, *ONE_STEP_EPOCHS))
    wait_for_training_loop(proc)
    stdout, stderr = stop_with(proc, signal.SIGTERM)
    assert proc.returncode == 143, stderr
    epoch, step = assert_stopped(stdout, "SIGTERM", out)
    assert step == 1
    name = assert_stop_checkpoint(out, epoch, step, steps_per_epoch=1)

    kill_inside_checkpoint_write(lab, procs, out, "--resume")
    assert len(leftovers(out)) == 1 and newest_good(out) == name  # the leftover never becomes the newest

    done = run_printed_command(lab, stdout)
    assert done.returncode == 0, done.stderr
    assert f"resume: from {name} (epoch {epoch}, step {step})" in done.stdout
    assert_nothing_lost(out, reference["one-step-epochs"])


def test_sigterm_mid_epoch_on_the_default_data(lab, procs):
    args = ["--preset", str(lab.preset), *DEFAULT_DATA_ARGS]  # no --data: the drawn signs, 2580 training images
    ref = lab.root / "default-reference"
    # Side by side with the run we stop; when the session has not rendered the default set yet, both render
    # it at once and one publishes it: that must not break either.
    uninterrupted = start_train(lab, procs, ref, *args)

    out = lab.root / "default-sigterm"
    proc = start_train(lab, procs, out, *args)
    wait_for_training_loop(proc)
    stdout, stderr = stop_with(proc, signal.SIGTERM)
    assert proc.returncode == 143, stderr
    epoch, step = assert_stopped(stdout, "SIGTERM", out)
    assert epoch == 1 and 1 <= step < 10  # mid-epoch
    name = assert_stop_checkpoint(out, epoch, step, steps_per_epoch=10)
    done = run_printed_command(lab, stdout)
    assert done.returncode == 0, done.stderr
    assert f"resume: from {name} (epoch 1, step {step})" in done.stdout
    ref_stdout, ref_stderr = uninterrupted.communicate(timeout=RUN_TIMEOUT)
    assert uninterrupted.returncode == 0, ref_stderr
    assert "2580 training images" in ref_stdout
    assert_nothing_lost(out, ref)


# ---------------------------------------------------------------- hostile and corrupt files


class Payload:
    """Unpickling this creates `path`: the stand-in for any code a hostile pickle could run."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def hostile_pickle(marker: Path) -> bytes:
    return pickle.dumps(Payload(marker))


def test_the_payload_is_live(tmp_path):
    # So that its absence below means nothing unpickled it.
    pickle.loads(hostile_pickle(tmp_path / "ran")).close()
    assert (tmp_path / "ran").exists()


def flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 4):  # in the tensor data: the file still parses
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_flipped_bytes_and_a_hostile_pickle_in_checkpoints_are_skipped(lab, reference):
    out = copy_run(reference["seed0"], lab.root / "damaged")
    newest, middle = out / "checkpoints" / ckpt_name(3 * STEPS), out / "checkpoints" / ckpt_name(2 * STEPS)
    flip_bytes(newest / "weights.safetensors")
    # A pickle with a payload in place of the optimizer state, with a matching checksum in meta.json, so
    # that it is the loader itself that must refuse it.
    marker = lab.root / "hostile-payload-ran"
    (middle / "state.safetensors").write_bytes(hostile_pickle(marker))
    meta = json.loads((middle / "meta.json").read_text())
    meta["sha256"]["state.safetensors"] = hashlib.sha256(hostile_pickle(marker)).hexdigest()
    (middle / "meta.json").write_text(json.dumps(meta))

    done = train(lab, out, "--resume")
    assert done.returncode == 0, done.stderr
    assert (f"resume: skipped checkpoint {newest.name}: weights.safetensors checksum mismatch (corrupt)"
            in done.stdout)
    assert f"resume: skipped checkpoint {middle.name}: not a safetensors file" in done.stdout
    assert f"resume: from {ckpt_name(STEPS)} (epoch 2, step 0)" in done.stdout
    assert not marker.exists()
    assert_nothing_lost(out, reference["seed0"])


@pytest.mark.parametrize("command, name, reason", [
    ("evaluate", "model.pt", "pickle-based checkpoints can run code when loaded and are refused"),
    ("predict", "model.safetensors", "not a valid safetensors weights file"),
])
def test_evaluate_and_predict_refuse_pickles(lab, tmp_path, command, name, reason):
    marker = tmp_path / "payload-ran"
    weights = tmp_path / name
    weights.write_bytes(hostile_pickle(marker))
    image = next((lab.data / "Images" / "00000").glob("*.ppm"))
    args = [command, weights, *([image] if command == "predict" else []), "--device", "cpu"]
    line = assert_one_error_line(signlab(lab, *args), command, exit_code=2)
    assert reason in line
    assert not marker.exists()


# ---------------------------------------------------------------- NaN / Inf


NON_FINITE = re.compile(r"non-finite (loss|gradient|weights) at epoch (\d+), step (\d+); the last good checkpoint "
                        r"is kept")


def test_lr_1e6_stops_with_exit_3_and_keeps_the_last_good_checkpoint(lab, reference):
    out = copy_run(reference["seed0"], lab.root / "nan", drop_after=1)
    good = ckpt_name(STEPS)
    before = snapshot(out / "checkpoints")
    result = train(lab, out, "--resume", "--force-resume", "--lr", "1e6")
    line = assert_one_error_line(result, "train", exit_code=3)
    assert "resume: overriding lr: 0.1 -> 1000000.0" in result.stdout
    assert NON_FINITE.search(line), line  # names the epoch and step
    assert snapshot(out / "checkpoints") == before  # no bad checkpoint written, the good one untouched
    # Nothing lost: undo the override and the run ends as if the huge learning rate had never been tried.
    done = train(lab, out, "--resume", "--force-resume", "--lr", "0.1")
    assert done.returncode == 0, done.stderr
    assert f"resume: from {good} (epoch 2, step 0)" in done.stdout
    assert_nothing_lost(out, reference["seed0"])


# ---------------------------------------------------------------- bad images and CSV rows


def ppm(pixels: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (pixels, pixels), (90, 100, 110)).save(buf, "PPM")
    return buf.getvalue()


def add_bad_entries(data: Path) -> dict[str, str]:
    """One unusable entry of each kind, appended to class 0's CSV: file name -> the reason it is skipped."""
    folder = data / "Images" / "00000"
    good = (folder / "00000_00000.ppm").read_bytes()
    png = io.BytesIO()
    Image.open(folder / "00000_00000.ppm").save(png, "PNG")
    files = {
        "zero.ppm": (b"", "zero-byte file"),
        "truncated.ppm": (good[:len(good) // 2], "unreadable: image file is truncated"),
        "text.ppm": (b"this is not an image\n", "not an image"),
        "png.ppm": (png.getvalue(), "wrong extension: content is PNG, name says .ppm"),
        "bomb.ppm": (b"P6\n100000 100000\n255\n" + bytes(64), "too large (decompression bomb)"),  # 10^10 pixels
        "big.ppm": (ppm(200), "too large: 200x200 > 10000 pixels"),  # over --max-image-pixels 10000
        "label.ppm": (good, "label 99 out of range 0..42"),
        "missing.ppm": (None, "missing file"),
    }
    rows = []
    for name, (content, _) in files.items():
        if content is not None:
            (folder / name).write_bytes(content)
        rows.append(";".join(map(str, [name, 40, 44, 5, 6, 34, 38, 99 if name == "label.ppm" else 0])))
    csv_path = folder / "GT-00000.csv"
    assert csv_path.read_text().splitlines()[0] == ";".join(HEADER)
    csv_path.write_text(csv_path.read_text() + "\n".join(rows) + "\n")
    return {name: reason for name, (_, reason) in files.items()}


@pytest.fixture(scope="module")
def bad_data(lab) -> tuple[Path, dict[str, str]]:
    data = make_gtsrb_train(lab.root / "bad-data", tracks=4, frames=6)  # the same good images as lab.data
    return data, add_bad_entries(data)


def test_bad_entries_are_skipped_listed_and_counted(lab, reference, bad_data):
    data, expected = bad_data
    out = lab.root / "bad-images"
    args = lab.fresh(0, "--max-image-pixels", "10000", "--max-bad-fraction", "0.5", data=data)
    done = train(lab, out, *args)
    assert done.returncode == 0, done.stderr
    n = len(expected)
    assert f"{n} skipped" in done.stdout and f"skipped {n} unusable image(s); listed in {out / 'skipped.txt'}" \
        in done.stdout
    listed = dict(line.split("\t") for line in (out / "skipped.txt").read_text().splitlines())
    assert {Path(p).name for p in listed} == set(expected)
    for path, reason in listed.items():
        assert reason.startswith(expected[Path(path).name]), (path, reason)
    # The good images train exactly as if the bad entries had never been there.
    for name in ("last.safetensors", "best.safetensors"):
        assert_same_tensors(out / name, reference["seed0"] / name)

    evaluated = signlab(lab, "evaluate", out, "--device", "cpu")
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"skipped {n} unusable image(s)" in evaluated.stdout
    assert len((out / "skipped-evaluate.txt").read_text().splitlines()) == n


def test_too_many_bad_entries_stop_before_training(lab, bad_data):
    data, expected = bad_data
    out = lab.root / "bad-images-default-threshold"
    result = train(lab, out, *lab.fresh(0, "--max-image-pixels", "10000", data=data))
    line = assert_one_error_line(result, "train", exit_code=2)
    n = len(expected)
    assert f"{n} of {3 * 4 * 6 + n} images are unusable" in line and "> 1.0%" in line and "--max-bad-fraction" in line
    assert "model signnet" not in result.stdout and not (out / "checkpoints").exists()


def test_info_lists_bad_entries(lab, bad_data):
    data, expected = bad_data
    result = signlab(lab, "info", data)
    assert result.returncode == 0, result.stderr
    usable_at_default_limit = {"big.ppm"}  # 200x200 is only too large for --max-image-pixels 10000
    listed = dict(re.findall(r"^  unusable: (.+?): (.+)$", result.stdout, re.MULTILINE))
    assert {Path(p).name for p in listed} == set(expected) - usable_at_default_limit
    for path, reason in listed.items():
        assert reason.startswith(expected[Path(path).name])
    assert f"{len(listed)} unusable" in next(line for line in result.stdout.splitlines() if "layout" in line)


# ---------------------------------------------------------------- unwritable output, full disk


def test_out_under_a_regular_file_is_one_clear_error(lab, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    line = assert_one_error_line(train(lab, blocker / "run", *lab.fresh(0)), "train", exit_code=2)
    assert f"--out {blocker / 'run'}: cannot write there" in line


def limit_file_size(limit: int):
    """For preexec_fn: every file the child writes is cut at `limit` bytes (EFBIG), like a full disk."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_disk_full_is_one_clear_error_and_loses_nothing(lab, reference, tmp_path):
    out = copy_run(reference["seed0"], lab.root / "disk-full", drop_after=1)
    before = snapshot(out / "checkpoints")
    env = dict(lab.env, SIGNLAB_CACHE=str(tmp_path / "empty-cache"))  # the decode cache cannot be written either
    result = train(lab, out, "--resume", env=env, preexec_fn=limit_file_size(4096))
    line = assert_one_error_line(result, "train", exit_code=2)
    assert "cannot write" in line and "File too large" in line
    assert snapshot(out / "checkpoints") == before and newest_good(out) == ckpt_name(STEPS)
    done = train(lab, out, "--resume")
    assert done.returncode == 0, done.stderr
    assert_nothing_lost(out, reference["seed0"])


# ---------------------------------------------------------------- resume with another config


def test_resume_with_a_changed_config_names_the_fields(lab, reference, tmp_path):
    out = copy_run(reference["seed0"], lab.root / "changed-config")
    before = snapshot(out)
    result = train(lab, out, "--resume", "--batch-size", "4", "--model", "lenet", "--data", tmp_path)
    line = assert_one_error_line(result, "train", exit_code=2)
    for field in ("batch_size: 8 -> 4", "model: 'signnet' -> 'lenet'", f"data: '{lab.data}' -> '{tmp_path}'"):
        assert field in line
    assert "--force-resume" in line
    assert snapshot(out) == before


def test_force_resume_says_what_it_overrides(lab, reference):
    out = copy_run(reference["seed0"], lab.root / "forced", drop_after=2)
    done = train(lab, out, "--resume", "--force-resume", "--batch-size", "4")
    assert done.returncode == 0, done.stderr
    assert "resume: overriding batch_size: 8 -> 4" in done.stdout
    assert f"resume: from {ckpt_name(2 * STEPS)} (epoch 3, step 0)" in done.stdout
    assert json.loads((out / "config.json").read_text())["batch_size"] == 4


def test_force_resume_with_another_model_shape_is_one_clear_error(lab, reference, tmp_path):
    out = copy_run(reference["seed0"], lab.root / "forced-model", drop_after=2)
    narrow = tmp_path / "narrow.json"
    narrow.write_text(json.dumps({**TINY, "model_options": {"widths": [4, 8], "depth": 1}}))
    result = train(lab, out, "--resume", "--force-resume", "--preset", narrow)
    line = assert_one_error_line(result, "train", exit_code=2)
    assert "resume: overriding model_options" in result.stdout
    assert f"checkpoint {ckpt_name(2 * STEPS)} holds another model's weights" in line
