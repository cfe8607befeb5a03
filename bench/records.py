"""Records benchmark: presets against the machine's GEMM peak and against a Keras peer, in one run.

    python bench/records.py --data ../shared/datasets/GTSRB-original/Final_Training --presets fast best --peer

Prints, and writes to bench/results/records.json:
- this machine's GEMM peak (fp32 and bf16, measured now), decode and cached-load times;
- per preset: the time-to-accuracy curve (validation accuracy after each epoch against cumulative training
  seconds, evaluation excluded), images/s, achieved GFLOP/s (3 x forward MACs x 2 per image) against the
  peak, peak memory, time to 99 % validation accuracy;
- the last epoch's weights on the validation split, without and with test-time augmentation;
- inference (contrast normalisation and TTA included): images/s at batch 1 and 256, latency (median of 200);
- the peer (bench/keras_peer.py, installed into bench/.venv-keras by this script): its curve and the ratios.
A script, not a test: figures drift on shared machines, so quote ratios from one run.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from signlab.config import TrainConfig, load_preset
from signlab.data import load_images, split_indices
from signlab.evaluation import evaluate
from signlab.models import count_macs, create_model
from signlab.predict import load_model, predict_images
from signlab.runtime import bf16_active

ROOT = Path(__file__).resolve().parents[1]
KERAS_VENV = ROOT / "bench" / ".venv-keras"


def gemm_peak(dtype: torch.dtype, n: int = 1024, repeats: int = 20) -> float:
    """Best GFLOP/s of an n x n matmul: the ceiling a training step can approach."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def run_preset(preset: str, data: str, out: Path, extra: list[str]) -> dict:
    run_dir = out / preset
    cmd = [sys.executable, "-m", "signlab", "train", "--preset", preset, "--data", data, "--out", str(run_dir),
           "--no-progress", "--overwrite", *extra]
    print("$", " ".join(cmd), flush=True)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{preset}: training failed")
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    cfg = TrainConfig.from_dict(TrainConfig.with_legacy_defaults(json.loads((run_dir / "config.json").read_text())))
    macs = count_macs(create_model(cfg.model, **cfg.model_options), cfg.image_size)
    curve = [{"epoch": int(r["epoch"]), "train_seconds": float(r["train_seconds"]),
              "val_accuracy": float(r["val_accuracy"]), "images_per_second": float(r["images_per_second"])}
             for r in rows]
    ips = statistics.median(c["images_per_second"] for c in curve)
    return {"preset": preset, "command": " ".join(cmd[2:]), "wall_seconds": time.perf_counter() - start,
            "macs_per_image": macs, "images_per_second": ips, "gflops": ips * macs * 2 * 3 / 1e9,
            "peak_rss_mb": usage.ru_maxrss / 1024, "curve": curve, "bf16": bf16_active(torch.device("cpu"), cfg.bf16),
            "seconds_to_99": next((c["train_seconds"] for c in curve if c["val_accuracy"] >= 0.99), None),
            "final_val_accuracy": curve[-1]["val_accuracy"]}


def inference_speed(weights: Path, images: np.ndarray, tta: bool) -> dict:
    """predict's path: contrast normalisation and (with tta) the test-time views inside the timings."""
    loaded = load_model(weights, torch.device("cpu"))
    cpu = torch.device("cpu")

    def predict(batch: np.ndarray, batch_size: int) -> torch.Tensor:
        return predict_images(loaded, batch, cpu, batch_size, tta)

    predict(images[:64], 64)  # warm-up
    latencies = []
    for i in range(200):
        start = time.perf_counter()
        predict(images[i:i + 1], 1)
        latencies.append(time.perf_counter() - start)
    start = time.perf_counter()
    predict(images, 256)
    batch_seconds = time.perf_counter() - start
    return {"tta": tta, "latency_ms_median": 1000 * statistics.median(latencies),
            "images_per_second_batch1": 1 / statistics.mean(latencies),
            "images_per_second_batch256": len(images) / batch_seconds}


def final_evaluation(run_dir: Path) -> dict:
    """The last epoch's weights (not the best: choosing by validation accuracy would flatter it) on the
    run's validation split, without and with test-time augmentation; seconds include TTA."""
    out = {}
    for tta in (False, True):
        summary = evaluate(run_dir / "last.safetensors", tta=tta, device_name="cpu")
        out["tta" if tta else "plain"] = {"accuracy": summary["accuracy"], "seconds": summary["seconds"]}
    return out


def run_peer(data: str, out: Path, epochs: int) -> dict:
    if not (KERAS_VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(KERAS_VENV)], check=True)
        subprocess.run([str(KERAS_VENV / "bin" / "pip"), "install", "-q", "tensorflow-cpu==2.21.0", "keras"],
                       check=True)
    cfg = TrainConfig()
    full = load_images(data, size=cfg.image_size, crop=cfg.crop)
    train_idx, val_idx = split_indices(full, cfg.val_fraction, cfg.split_seed)  # the same split signlab trains on
    npz = out / "peer-data.npz"
    np.savez(npz, x_train=full.images[train_idx], y_train=full.labels[train_idx], x_val=full.images[val_idx],
             y_val=full.labels[val_idx])
    result_path = out / "peer.json"
    subprocess.run([str(KERAS_VENV / "bin" / "python"), str(ROOT / "bench" / "keras_peer.py"), str(npz),
                    "--epochs", str(epochs), "--out", str(result_path)], check=True)
    peer = json.loads(result_path.read_text())
    peer["seconds_to_99"] = next((c["train_seconds"] for c in peer["curve"] if c["val_accuracy"] >= 0.99), None)
    peer["images_per_second"] = statistics.median(c["images_per_second"] for c in peer["curve"])
    return peer


def print_report(report: dict) -> None:
    peak = report["peak_gflops"]
    print(f"\nGEMM peak: {peak['fp32']:.0f} GFLOP/s fp32, {peak['bf16']:.0f} GFLOP/s bf16 "
          f"({torch.get_num_threads()} threads); decode {report['decode_seconds']:.1f} s, "
          f"cached load {report['cached_load_seconds']:.2f} s")
    for r in report["presets"]:
        ceiling = peak["bf16"] if r["bf16"] and peak["bf16"] > peak["fp32"] else peak["fp32"]
        print(f"\n{r['preset']}: {r['command']}")
        print(f"  {r['images_per_second']:.0f} img/s, {r['gflops']:.1f} GFLOP/s = {r['gflops'] / ceiling:.0%} of "
              f"peak, peak memory {r['peak_rss_mb']:.0f} MB, final val acc {r['final_val_accuracy']:.4f}, "
              f"99 % after {r['seconds_to_99'] or float('nan'):.1f} s "
              f"({r.get('seconds_to_99_tta') or float('nan'):.1f} s counting TTA on the last epoch)")
        print("  curve: " + "  ".join(f"{c['train_seconds']:.0f}s:{c['val_accuracy']:.4f}" for c in r["curve"]))
        for kind, e in r.get("evaluation", {}).items():
            print(f"  last epoch's weights, {kind}: val acc {e['accuracy']:.4f} in {e['seconds']:.1f} s")
        for i in r.get("inference", []):
            print(f"  inference{' with TTA' if i['tta'] else ''}: {i['images_per_second_batch1']:.0f} img/s at "
                  f"batch 1, {i['images_per_second_batch256']:.0f} img/s at batch 256, "
                  f"latency {i['latency_ms_median']:.2f} ms")
    peer = report.get("peer")
    if peer:
        print(f"\npeer {peer['framework']} ({peer['policy']}): {peer['images_per_second']:.0f} img/s, "
              f"99 % after {peer['seconds_to_99'] or float('nan'):.1f} s")
        print("  curve: " + "  ".join(f"{c['train_seconds']:.0f}s:{c['val_accuracy']:.4f}" for c in peer["curve"]))
        for r in report["presets"]:
            ratio = (peer["seconds_to_99"] / r["seconds_to_99"]) if peer["seconds_to_99"] and r["seconds_to_99"] \
                else float("nan")
            with_tta = (peer["seconds_to_99"] / r["seconds_to_99_tta"]) \
                if peer["seconds_to_99"] and r.get("seconds_to_99_tta") else float("nan")
            print(f"  {r['preset']}: {ratio:.1f}x sooner to 99 % ({with_tta:.1f}x counting TTA on the last epoch), "
                  f"{r['images_per_second'] / peer['images_per_second']:.1f}x the images/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared/datasets/GTSRB-original/Final_Training"))
    parser.add_argument("--presets", nargs="+", default=["fast", "best"])
    parser.add_argument("--peer", action="store_true", help="also run the Keras peer")
    parser.add_argument("--peer-epochs", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="flags passed to signlab train")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.presets:
        load_preset(name)  # fail early on a typo
    report = {"peak_gflops": {"fp32": gemm_peak(torch.float32), "bf16": gemm_peak(torch.bfloat16)},
              "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                       cwd=ROOT).stdout.strip(), "presets": []}
    os.environ.setdefault("SIGNLAB_CACHE", str(args.out / "cache"))
    start = time.perf_counter()
    full = load_images(args.data)
    report["decode_seconds"] = time.perf_counter() - start
    start = time.perf_counter()
    load_images(args.data)
    report["cached_load_seconds"] = time.perf_counter() - start
    _, val_idx = split_indices(full, 0.1, 0)
    for name in args.presets:
        result = run_preset(name, args.data, args.out, args.extra)
        result["evaluation"] = final_evaluation(args.out / name)
        # The model that ends the run, evaluated as `signlab evaluate` does by default (TTA if the preset says).
        ends_above = result["evaluation"]["tta"]["accuracy"] >= 0.99
        result["seconds_to_99_tta"] = min(filter(None, [result["seconds_to_99"],
                                                        result["curve"][-1]["train_seconds"] if ends_above else None]),
                                          default=None)
        result["inference"] = [inference_speed(args.out / name / "last.safetensors", full.images[val_idx], tta)
                               for tta in (False, True)]
        report["presets"].append(result)
        (args.out / "records.json").write_text(json.dumps(report, indent=1))  # an hour's figures survive a crash
    if args.peer:
        try:
            report["peer"] = run_peer(args.data, args.out, args.peer_epochs)
        except (subprocess.CalledProcessError, OSError, KeyError) as e:
            print(f"peer failed: {e}", flush=True)
        (args.out / "records.json").write_text(json.dumps(report, indent=1))
    print_report(report)


if __name__ == "__main__":
    main()
