"""What copy-paste augmentation (signlab.detection.paste) costs a training step of the sign finder.

    .venv/bin/python bench/paste_cost.py [--data GTSDB_DIR] [--paste-from GTSRB_TRAIN_DIR] [--steps 60]

Builds the bank (GTSRB's signs with --paste-from, else the drawn ones), then times detection.train.make_batch
(8 crops of 384 px from real GTSDB scenes, as the detect presets) with --paste 0 and 1 in turns, the same
seeds for both, on one thread; prints the medians per step and the median extra milliseconds per pasted
crop (paired by step).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from signlab.detection.paste import load_bank
from signlab.detection.scenes import load_scene, read_gtsdb
from signlab.detection.train import make_batch, scene_set

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "GTSDB" / "TrainIJCNN2013"))
    parser.add_argument("--paste-from", default=None, help="GTSRB training folder (default: the drawn signs)")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    scenes, _ = read_gtsdb(Path(args.data))
    data = scene_set(scenes[:64], load_scene)
    t0 = time.perf_counter()
    bank = load_bank(args.paste_from)
    print(f"{bank.describe(1.0)}: built in {time.perf_counter() - t0:.2f} s")
    times: dict[float, list[float]] = {0.0: [], 1.0: []}
    for step in range(args.steps):
        idx = np.random.default_rng(step).integers(len(data), size=args.batch)
        for p in times:
            t0 = time.perf_counter()
            make_batch(data, idx, args.size, np.random.default_rng([0, step]), p, bank)
            times[p].append(time.perf_counter() - t0)
    off, on = (statistics.median(times[p]) * 1e3 for p in (0.0, 1.0))
    extra = statistics.median(b - a for a, b in zip(times[0.0], times[1.0], strict=True)) * 1e3 / args.batch
    print(f"make_batch, {args.batch} crops of {args.size} px, 1 thread, median of {args.steps}: paste 0 "
          f"{off:.1f} ms, paste 1 {on:.1f} ms; {extra:.2f} ms more per pasted crop (median of the steps' "
          f"differences)")


if __name__ == "__main__":
    main()
