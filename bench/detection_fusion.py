"""How a detection's score weighs the finder against the classifier: finder p x (class p)^beta (x the verifier's
P(sign), unchanged), for several beta, on detection runs' validation blocks with their last weights.

    python bench/detection_fusion.py RUN [RUN ...] [--betas 0 0.5 1 2] [--no-verifier] [--out FILE]

signlab scores a detection as the product (beta = 1). beta 0 trusts the finder alone; beta 2 lets the
classifier's doubt weigh twice. Each run's scenes go through the finder and the classifier once; every beta
rescores the same proposals. Per beta: signs >= 32 px and < 32 px found and named at the operating point
(<= 0.05 false positives per scene, signlab.detection.metrics.operating_point) and mAP@0.5 over the three
ranked categories and the 43 classes, as bench/detection_failures.py and bench/detection_map.py give them.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from runtimes import git_revision, machine

from signlab.detection.boxes import Detection
from signlab.detection.detect import crop_signs, load_detector
from signlab.detection.evaluate import EVALUATION_THRESHOLD, evaluation_scenes
from signlab.detection.finder import load_finder
from signlab.detection.metrics import evaluate_detections, operating_point
from signlab.detection.scenes import load_scene


def proposals(run: Path, verify: bool) -> tuple[list, list]:
    """The run's validation scenes and, per scene, (boxes, finder p, class p, verifier p, class id)."""
    det = load_detector(run, "cpu", finder=load_finder(run / "last.safetensors", torch.device("cpu")),
                        verify=verify)
    scenes, _ = evaluation_scenes(run, None)
    parts = []
    for scene in scenes:
        image = load_scene(scene.path)
        boxes, found, _ = det.finder.propose(image, EVALUATION_THRESHOLD)
        boxes, found = boxes.float(), found.float()
        crops = crop_signs(image, boxes, det.preprocessing)
        named, class_id = det.probabilities(image, boxes, crops).max(dim=1)
        parts.append((boxes, found, named, det.sign_probability(image, boxes, crops), class_id))
    return scenes, parts


def figures(scenes: list, parts: list, beta: float) -> dict:
    detections = [[Detection(*box.tolist(), class_id=int(k), score=float(f * c ** beta * v))
                   for box, f, c, v, k in zip(*part, strict=True)] for part in parts]
    point = operating_point(scenes, detections)
    metrics = evaluate_detections(scenes, detections)
    return {"beta": beta, "threshold": point["threshold"], "fp_per_scene": point["fp_per_scene"],
            "32px_and_over": point["32px_and_over"]["recall_named"], "under_32px": point["under_32px"]["recall_named"],
            "map50_categories": metrics["map50_categories"], "map50_classes": metrics["map50_classes"]}


def cell(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} ± {100 * sd:.1f} ({' / '.join(f'{100 * v:.1f}' for v in values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--betas", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0])
    parser.add_argument("--no-verifier", action="store_true", help="leave out RUN/verifier.safetensors")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write every figure as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = {}
    for run in args.runs:
        scenes, parts = proposals(run, not args.no_verifier)
        rows[str(run)] = [figures(scenes, parts, beta) for beta in args.betas]
    print(f"{len(args.runs)} runs, last weights, validation blocks, verifier {'off' if args.no_verifier else 'on'}; "
          f"{machine()}; commit {git_revision()}")
    print("| beta | >= 32 px found and named at <= 0.05 FP/scene | < 32 px | mAP@0.5, 3 categories "
          "| mAP@0.5, classes |")
    print("|---|---|---|---|---|")
    keys = ("32px_and_over", "under_32px", "map50_categories", "map50_classes")
    for i, beta in enumerate(args.betas):
        print(f"| {beta:g} | " + " | ".join(cell([rows[r][i][k] for r in rows]) for k in keys) + " |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"commit": git_revision(), "machine": machine(), "threads": args.threads,
                                        "verifier": not args.no_verifier, "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
