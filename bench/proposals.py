"""How many GTSDB signs the colour-and-shape finder (signlab.detection.proposals) proposes, and how fast.

    OMP_NUM_THREADS=1 taskset -c 1 python bench/proposals.py --data ../shared/datasets/GTSDB/TrainIJCNN2013

Prints, for the scenes [--first, --last) of the folder (all 600 by default; the finder's levels were set by
looking at scenes 0-299, so 300-599 is the fairer half):

- recall at IoU 0.5 of the signs, class-agnostic ("any") and with the right category ("cat"; a ranked sign
  must be proposed as its own category, an "other" sign as "other"), overall and by width (< 32 px, >= 32 px),
  and per category;
- proposals per scene (after NMS, at --threshold) and the share of scenes with none;
- milliseconds per scene for `propose` alone (decoding the JPEG excluded), mean, 95th percentile and max, as
  wall time and as the process's CPU time (the fairer figure when other jobs share the pinned core).

Reads gt.txt as `Filename;x1;y1;x2;y2;ClassId` itself, so it runs before signlab.detection.scenes lands.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from signlab.detection.boxes import CATEGORIES, box_iou, category_of
from signlab.detection.proposals import ColourShapeFinder


def read_gt(root: Path) -> dict[str, list[tuple[int, int, int, int, int]]]:
    signs: dict[str, list[tuple[int, int, int, int, int]]] = defaultdict(list)
    for line in (root / "gt.txt").read_text().splitlines():
        if line.strip():
            name, *values = line.strip().split(";")
            signs[Path(name).stem].append(tuple(int(v) for v in values))
    return signs


def measure(root: Path, first: int, last: int, threshold: float) -> dict:
    finder, signs = ColourShapeFinder(), read_gt(root)
    scenes = sorted(root.glob("*.jpg"))[first:last]
    hits: dict[str, list[tuple[bool, bool]]] = defaultdict(list)  # group -> (found, found with category)
    times, counts = [], []
    for path in scenes:
        scene = np.asarray(Image.open(path).convert("RGB"))
        start, cpu = time.perf_counter(), time.process_time()
        boxes, _, categories = finder.propose(scene, threshold)
        times.append((time.perf_counter() - start, time.process_time() - cpu))
        counts.append(len(boxes))
        for x1, y1, x2, y2, class_id in signs.get(path.stem, []):
            truth = torch.tensor([[x1, y1, x2, y2]], dtype=torch.float32)
            match = box_iou(truth, boxes)[0] >= 0.5 if len(boxes) else torch.zeros(0, dtype=torch.bool)
            category = category_of(class_id)
            right = bool((match & (categories == CATEGORIES.index(category))).any())
            found = (bool(match.any()), right)
            hits["all"].append(found)
            hits["< 32 px" if x2 - x1 + 1 < 32 else ">= 32 px"].append(found)
            hits[category].append(found)
    return {"hits": hits, "times": np.array(times), "counts": np.array(counts), "scenes": len(scenes)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets/GTSDB/TrainIJCNN2013"))
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--last", type=int, default=600)
    parser.add_argument("--threshold", type=float, default=0.5, help="lowest shape fit kept")
    args = parser.parse_args()
    result = measure(args.data, args.first, args.last, args.threshold)
    print(f"scenes {args.first}-{args.last - 1} ({result['scenes']}), threshold {args.threshold}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'signs':<12} {'n':>5} {'recall any':>11} {'recall cat':>11}")
    for group in ("all", "< 32 px", ">= 32 px", *CATEGORIES):
        rows = np.array(result["hits"].get(group, []), dtype=bool).reshape(-1, 2)
        if len(rows):
            print(f"{group:<12} {len(rows):>5} {rows[:, 0].mean():>11.3f} {rows[:, 1].mean():>11.3f}")
    counts, times = result["counts"], result["times"] * 1000
    print(f"proposals per scene: mean {counts.mean():.1f}, median {np.median(counts):.0f}, max {counts.max()}")
    for column, what in enumerate(("wall", "CPU")):
        print(f"ms per scene (propose, {what}): mean {times[:, column].mean():.1f}, "
              f"p95 {np.percentile(times[:, column], 95):.1f}, max {times[:, column].max():.1f}")


if __name__ == "__main__":
    main()
