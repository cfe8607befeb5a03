"""The two first stages compared on the same held-out scenes, each in front of the same classifier.

    python bench/finders.py RUN [--data GTSDB_DIR]

RUN is a detection run (`signlab train --data GTSDB_DIR --classifier CLF`); without --data, its validation
blocks. Rows: the run's learned finder (signfinder, its last epoch's weights) and the colour-and-shape finder of
signlab.detection.proposals (the IJCNN 2013 approach, nothing learned). Both are named by the run's
classifier, so the difference is the finder's. Prints the benchmark's figures (mAP over the three ranked
categories, mAP over classes, recall by size, false positives per scene) and scenes/s including naming.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from signlab.detection.evaluate import evaluate_detector
from signlab.detection.finder import load_finder
from signlab.detection.proposals import ColourShapeFinder


def row(name: str, s: dict) -> str:
    def pct(v):
        return "n/a" if v is None else f"{100 * v:.1f}"

    sizes = " / ".join(pct(v["recall"]) for v in s["recall_by_size"].values())
    cats = " / ".join(pct(s["ap50"][c]) for c in ("prohibitory", "mandatory", "danger"))
    return (f"| {name} | {pct(s['map50_categories'])} ({cats}) | {pct(s['map50_classes'])} | {sizes} | "
            f"{s['fp_per_scene']:.2f} | {s['scenes_per_second']:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--data")
    parser.add_argument("--out", type=Path, default=Path("bench/results/finders.json"))
    args = parser.parse_args()
    # The last epoch's finder, not best.safetensors: that one was chosen on these very validation scenes.
    last = load_finder(Path(args.run) / "last.safetensors", torch.device("cpu"))
    results = {"learned (signfinder)": evaluate_detector(args.run, args.data, device="cpu", finder=last),
               "colour and shape": evaluate_detector(args.run, args.data, device="cpu", finder=ColourShapeFinder())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"threads": torch.get_num_threads(), **results}, indent=1))
    first = next(iter(results.values()))
    print(f"{first['scenes']} scenes, {first['signs']} signs ({first['data']}), {torch.get_num_threads()} threads")
    print("| finder | mAP@0.5, 3 categories (prohibitory / mandatory / danger) | mAP@0.5, classes | "
          "recall < 32 px / >= 32 px at 0.5 | FP per scene at 0.5 | scenes/s |")
    print("|---|---|---|---|---|---|")
    for name, s in results.items():
        print(row(name, s))


if __name__ == "__main__":
    main()
