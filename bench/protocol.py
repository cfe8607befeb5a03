"""Recipe protocol: one recipe trained on several validation splits, reported as mean ± sd.

    python bench/protocol.py --name fast --preset fast --seeds 0 1 2
    python bench/protocol.py --name fast-e2 --preset fast --seeds 0 1 2 --extra --epochs 2

The 10 % track split holds 131 physical signs and one odd sign moves it by up to 0.8 %, so a recipe is
judged on several splits (`--split-seed S --seed S`: other tracks held out, other init and data order),
never on one. Each run's last-epoch weights are evaluated without and with test-time augmentation.
Prints a table and writes bench/results/protocol/NAME.json. Timings are only comparable within one quiet
sitting on one machine: the JSON records the CPU capability and bf16 state each run trained with.
For the AVX2-without-bf16 figures on a newer CPU, cap the kernels:
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python bench/protocol.py ... --extra --bf16 off
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from records import final_evaluation, run_preset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared/datasets/GTSRB-original/Final_Training"


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(runs: list[dict]) -> dict:
    out = {}
    for key, get in [("plain", lambda r: r["evaluation"]["plain"]["accuracy"]),
                     ("tta", lambda r: r["evaluation"]["tta"]["accuracy"]),
                     ("train_seconds", lambda r: r["curve"][-1]["train_seconds"]),
                     ("images_per_second", lambda r: r["images_per_second"])]:
        out[key] = mean_sd([get(r) for r in runs])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="the recipe's name in the table and the JSON file")
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "protocol")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="flags passed to signlab train")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in args.seeds:
        work = args.out / "runs" / f"{args.name}-s{seed}"
        result = run_preset(args.preset, args.data, work,
                            [*args.extra, "--split-seed", str(seed), "--seed", str(seed)])
        result["split_seed"] = seed
        result["evaluation"] = final_evaluation(work / args.preset)
        runs.append(result)
        ev = result["evaluation"]
        print(f"{args.name} split {seed}: plain {ev['plain']['accuracy']:.4f}  tta {ev['tta']['accuracy']:.4f}  "
              f"{result['curve'][-1]['train_seconds']:.0f} s  {result['images_per_second']:.0f} img/s", flush=True)
    summary = summarise(runs)
    report = {"name": args.name, "preset": args.preset, "extra": args.extra, "data": args.data,
              "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                       cwd=ROOT).stdout.strip(),
              "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "(not capped)"),
              "threads": torch.get_num_threads(), "summary": summary, "runs": runs}
    (args.out / f"{args.name}.json").write_text(json.dumps(report, indent=1))
    (p, ps), (t, ts) = summary["plain"], summary["tta"]
    (s, ss), (ips, _) = summary["train_seconds"], summary["images_per_second"]
    print(f"| {args.name} | {' '.join(args.extra)} | {100 * p:.2f} ± {100 * ps:.2f} | {100 * t:.2f} ± {100 * ts:.2f} "
          f"| {s:.0f} ± {ss:.0f} s | {ips:.0f} |")


if __name__ == "__main__":
    main()
