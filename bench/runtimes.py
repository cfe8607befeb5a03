"""Runtimes side by side on one run's model: torch fp32, torch bf16 (autocast), onnxruntime fp32 and int8.

    signlab export RUN --int8
    .venv/bin/python bench/runtimes.py RUN [--data DIR] [--threads N] [--repeats R] [--json OUT]

Each row takes decoded uint8 images (N, S, S, 3), cropped and resized as files are decoded, to logits: for
torch the backend's own path (signlab.inference.predict_logits: contrast normalisation in NumPy,
standardisation, the model), for onnxruntime the exported graph, which does both steps itself
(signlab.onnx_backend). No test-time augmentation anywhere: the exported graph has none, so every accuracy is
the plain forward pass, whatever the run's --tta.

Columns: images/s at batch 1 (one image per call, the first --single images) and at batch 256 (the whole
evaluation set), p50 latency of a batch-1 call, accuracy on the evaluation set (the run's validation split, as
`signlab evaluate` rebuilds it, or --data), its change against torch fp32 in points, and max |logit
difference| against torch fp32. The runtimes take turns, --repeats times, and each time figure is the median
of its repeats, so that a burst of load from other processes does not land on one runtime only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from signlab.data import align_labels
from signlab.errors import UserError
from signlab.evaluation import evaluation_set
from signlab.inference import predict_logits
from signlab.predict import LoadedModel, load_model
from signlab.runtime import cpu_has_bf16, default_threads

ROOT = Path(__file__).resolve().parents[1]
BATCH = 256
Runner = Callable[[np.ndarray], np.ndarray]  # decoded uint8 (n, S, S, 3) -> logits (n, classes)


def torch_runner(loaded: LoadedModel, bf16: str) -> Runner:
    pre, cpu = loaded.preprocessing, torch.device("cpu")
    return lambda images: predict_logits(loaded.model, pre.normalize(images), pre, cpu, BATCH, bf16, False).numpy()


def onnx_runner(path: Path) -> Runner:
    from signlab.onnx_backend import OnnxClassifier

    return OnnxClassifier(path, device="cpu", batch_size=BATCH).logits


def runners(run: Path, loaded: LoadedModel) -> dict[str, Runner]:
    files = {name: run / name for name in ("model.onnx", "model.int8.onnx")}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise UserError(f"{', '.join(missing)}: not found; run `signlab export {run} --int8` first")
    bf16 = "torch bf16 (autocast)" + ("" if cpu_has_bf16() else ", emulated: no bf16 hardware")
    return {"torch fp32": torch_runner(loaded, "off"), bf16: torch_runner(loaded, "on"),
            "onnxruntime fp32": onnx_runner(files["model.onnx"]),
            "onnxruntime int8": onnx_runner(files["model.int8.onnx"])}


def time_singles(run: Runner, images: np.ndarray) -> tuple[float, float]:
    """(images/s, p50 latency in ms) of one-image calls."""
    for image in images[:10]:  # warm-up: first calls allocate and pick kernels
        run(image[None])
    latencies = []
    for image in images:
        start = time.perf_counter()
        run(image[None])
        latencies.append(time.perf_counter() - start)
    return len(images) / sum(latencies), 1000 * float(np.median(latencies))


def time_batches(run: Runner, images: np.ndarray) -> tuple[float, np.ndarray]:
    """(images/s, logits) of the whole set in batches of BATCH (each runner batches it itself)."""
    run(images[:BATCH])  # warm-up
    start = time.perf_counter()
    logits = run(images)
    return len(images) / (time.perf_counter() - start), logits


def measure(runs: dict[str, Runner], images: np.ndarray, labels: np.ndarray, singles: int, repeats: int) -> list[dict]:
    times: dict[str, dict[str, list[float]]] = {name: {"b1": [], "p50": [], "b256": []} for name in runs}
    logits: dict[str, np.ndarray] = {}
    for _ in range(repeats):
        for name, run in runs.items():  # in turns: a burst of outside load spreads over all of them
            b256, logits[name] = time_batches(run, images)
            b1, p50 = time_singles(run, images[:singles])
            for key, value in (("b1", b1), ("p50", p50), ("b256", b256)):
                times[name][key].append(value)
    reference = logits["torch fp32"]
    base = float((reference.argmax(1) == labels).mean())
    rows = []
    for name in runs:
        accuracy = float((logits[name].argmax(1) == labels).mean())
        rows.append({"runtime": name, **{k: float(np.median(v)) for k, v in times[name].items()},
                     "accuracy": accuracy, "points_vs_torch_fp32": 100 * (accuracy - base),
                     "max_logit_diff_vs_torch_fp32": float(np.abs(logits[name] - reference).max())})
    return rows


def machine() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown")
    except OSError:
        cpu = platform.processor() or "unknown"
    return (f"{cpu}; {len(os.sched_getaffinity(0))} cores usable; bf16 hardware: "
            f"{'yes' if cpu_has_bf16() else 'no'}; torch {torch.__version__}")


def git_revision() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def table(rows: list[dict]) -> str:
    lines = ["| runtime | images/s, batch 1 | images/s, batch 256 | p50 latency, batch 1 | accuracy | "
             "vs torch fp32 | max \\|logit diff\\| |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['runtime']} | {r['b1']:.0f} | {r['b256']:.0f} | {r['p50']:.2f} ms | "
                     f"{100 * r['accuracy']:.2f} % | {r['points_vs_torch_fp32']:+.2f} pt | "
                     f"{r['max_logit_diff_vs_torch_fp32']:.1e} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", metavar="RUN", help="run folder holding model.onnx and model.int8.onnx")
    parser.add_argument("--data", help="evaluate on this folder instead of the run's validation split")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for every runtime (default: all usable)")
    parser.add_argument("--single", type=int, default=300, help="images timed one at a time (default 300)")
    parser.add_argument("--repeats", type=int, default=3, help="turns of every runtime (default 3)")
    parser.add_argument("--json", metavar="OUT", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    try:
        threads = args.threads or default_threads()
        os.environ["OMP_NUM_THREADS"] = str(threads)  # onnxruntime sessions take their thread count from it
        torch.set_num_threads(threads)
        run = Path(args.run)
        loaded = load_model(run, torch.device("cpu"))
        ds, source = evaluation_set(loaded, args.data)
        ds = align_labels(ds, loaded.class_names)
        rows = measure(runners(run, loaded), ds.images, ds.labels, min(args.single, len(ds)), args.repeats)
    except UserError as e:
        print(f"runtimes: error: {e}", file=sys.stderr)
        return 2
    by_name = {r["runtime"]: r for r in rows}
    int8_delta = 100 * (by_name["onnxruntime int8"]["accuracy"] - by_name["onnxruntime fp32"]["accuracy"])
    print(f"command: python bench/runtimes.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    print(f"git {git_revision()}; {machine()}; {threads} threads each; onnxruntime and torch on the CPU")
    print(f"model {loaded.config.model} from {run}; {len(ds)} images: {source}; no TTA; "
          f"median of {args.repeats} turns\n")
    print(table(rows))
    print(f"\nint8 vs onnxruntime fp32: {int8_delta:+.2f} points of accuracy")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "source": source, "n": len(ds), "threads": threads,
                                               "machine": machine(), "git": git_revision()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
