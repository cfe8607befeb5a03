"""mAP of detection runs' last weights on the blocks their training held out, with and without their verifiers.

    python bench/detection_map.py RUN [RUN ...] [--threads 1] [--out FILE] [--flip]

The companion of bench/detection_failures.py, which gives the operating point (≤ 0.05 false positives per
scene) of the same weights: this gives the whole precision-recall curve's figures, AP at IoU 0.5 over GTSDB's
three ranked categories and over the 43 classes (signlab.detection.evaluate, as `signlab evaluate` computes
them). The last epoch's weights, since best.safetensors was chosen on these very scenes. Each run with a
verifier is scored with it and without it, so the pair shares one finder and one classifier.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from runtimes import git_revision, machine

from signlab.detection.detect import VERIFIER_FILE
from signlab.detection.evaluate import evaluate_detector
from signlab.detection.finder import load_finder

FIGURES = ("map50_categories", "map50_classes")


def score(run: Path, verify: bool, flip: bool = False) -> dict:
    last = load_finder(run / "last.safetensors", torch.device("cpu"), flip=flip)
    s = evaluate_detector(run, None, device="cpu", finder=last, verify=verify)
    return {"run": str(run), "verifier": verify, "flip": flip, **{k: s[k] for k in (*FIGURES, "ap50", "data")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write every figure as JSON here")
    parser.add_argument("--flip", action="store_true", help="average the finder with its mirror image")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [score(run, verify, args.flip) for verify in (True, False) for run in args.runs
            if not verify or (run / VERIFIER_FILE).is_file()]
    print(f"{len(args.runs)} runs, last weights, validation blocks; {machine()}; commit {git_revision()}")
    print("| verifier | mAP@0.5, 3 ranked categories | mAP@0.5, 43 classes |")
    print("|---|---|---|")
    for verify in (True, False):
        mine = [r for r in rows if r["verifier"] == verify]
        if mine:
            cells = [f"{100 * statistics.mean(v):.1f} ± {100 * (statistics.stdev(v) if len(v) > 1 else 0):.1f} "
                     f"({' / '.join(f'{100 * x:.1f}' for x in v)})" for v in ([r[k] for r in mine] for k in FIGURES)]
            print(f"| {'with' if verify else 'without'} | {cells[0]} | {cells[1]} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"commit": git_revision(), "machine": machine(), "threads": args.threads,
                                        "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
