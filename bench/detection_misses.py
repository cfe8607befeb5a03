"""Why each missed sign is missed, and which false positives hold the operating threshold (issue #17).

    python bench/detection_misses.py RUN [RUN ...] [--threads 1] [--min-width 32] [--no-verifier] [--out FILE]

RUN is a detection run, scored with its last weights on the blocks its training held out, at its operating
point (<= 0.05 false positives per scene), as bench/detection_failures.py scores it. Then two questions:

1. **Where does each sign at least --min-width px wide that is not named get lost?** A detection's score is the
   finder's heat times the classifier's probability (times the verifier's P(sign)). For each such sign: the
   finder's heat at its centre (the highest of any category within one cell), the best proposal covering it at
   IoU 0.5 (its heat and IoU), the classifier's probability of the true class and its top class on that
   proposal's crop and on the true box's crop, the verifier's P(sign) of the proposal where the run has one,
   and the best final score of a detection of its own class covering it, against the threshold. The verdict is
   "unseen" (no proposal covers it at heat >= 0.01), "box" (the classifier names the true box but not the
   proposal's crop), "named low" (it names the proposal's crop, but the product stays under the threshold; with
   a verifier, its P(sign) is part of that product) or "misnamed". For comparison, the median and lowest heat at
   the centres of the signs >= --min-width px that it does name.
2. **What would removing a scene's false positives buy?** For each scene holding a false positive at or above
   the first one over budget: the operating threshold without that scene's false positives (all of them, at any
   score), and how many more signs >= --min-width px would then be named. It bounds what negatives like them
   could give (for example, examples of the power pylon read as yield): nothing, if the threshold stays over
   the misses. Each row lists the scene's four highest false positives and what they were read as.

Also per run: the median ratio of the best proposal's width to the sign's, by sign width (do boxes run small?).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from detection_failures import WIDTH_BINS as FAILURE_BINS
from runtimes import git_revision, machine

from signlab.classes import GTSRB_CLASS_NAMES
from signlab.detection.boxes import Detection, box_iou
from signlab.detection.detect import crop_signs, load_detector
from signlab.detection.evaluate import EVALUATION_THRESHOLD, detect_scenes, evaluation_scenes
from signlab.detection.finder import load_finder
from signlab.detection.metrics import (
    FP_BUDGET,
    NAMED,
    match_any_class,
    match_scenes,
    operating_threshold,
    sign_outcomes,
)
from signlab.detection.scenes import load_scene
from signlab.models.detector import STRIDE

PROPOSAL_FLOOR = EVALUATION_THRESHOLD  # proposals under it are never scored
WIDTH_BINS = tuple(low for low, _ in FAILURE_BINS)  # px, lower edges of bench/detection_failures.py's bins


def iou(a, b) -> float:
    return float(box_iou(torch.tensor([a], dtype=torch.float64), torch.tensor([b], dtype=torch.float64))[0, 0])


def centre_heat(maps: torch.Tensor, sign) -> float:
    """The finder's highest heat of any category within one cell of the sign's centre cell."""
    c = maps.shape[0] - 4
    ix, iy = int((sign.x1 + sign.x2 + 1) / (2 * STRIDE)), int((sign.y1 + sign.y2 + 1) / (2 * STRIDE))
    window = maps[:c, max(0, iy - 1):iy + 2, max(0, ix - 1):ix + 2]
    return round(float(torch.sigmoid(window).max()), 4) if window.numel() else 0.0


def why_missed(detector, scene, sign, found: list[Detection], threshold: float) -> dict:
    """Where one sign is lost between finder, crop and classifier (the module docstring's question 1)."""
    image = load_scene(scene.path)
    truth = [sign.x1, sign.y1, sign.x2, sign.y2]
    boxes, heat, _ = detector.finder.propose(image, PROPOSAL_FLOOR)
    covering = [(float(h), b.tolist()) for b, h in zip(boxes, heat, strict=True) if iou(b.tolist(), truth) >= 0.5]
    row = {"scene": Path(scene.path).name, "box": truth, "width": sign.width, "class_id": sign.class_id,
           "name": GTSRB_CLASS_NAMES[sign.class_id], "threshold": round(threshold, 4),
           "centre_heat": centre_heat(detector.finder.maps(image), sign)}
    covers = [d.score for d in found if iou([d.x1, d.y1, d.x2, d.y2], truth) >= 0.5 and d.class_id == sign.class_id]
    row["best_named_score"] = round(max(covers), 4) if covers else None
    p_truth = detector.probabilities(image, torch.tensor([truth], dtype=torch.float32))[0]
    row.update(class_p_true_box=round(float(p_truth[sign.class_id]), 4),
               true_box_read_as=GTSRB_CLASS_NAMES[int(p_truth.argmax())])
    if not covering:
        return {**row, "proposal": None, "verdict": "unseen"}
    h, box = max(covering)
    crop = torch.tensor([box], dtype=torch.float32)
    p = detector.probabilities(image, crop)[0]
    sign_p = detector.sign_probability(image, crop, crop_signs(image, crop, detector.preprocessing))[0]
    row.update(proposal={"heat": round(h, 4), "box": [round(v, 1) for v in box], "iou": round(iou(box, truth), 3)},
               class_p_proposal=round(float(p[sign.class_id]), 4), proposal_read_as=GTSRB_CLASS_NAMES[int(p.argmax())],
               proposal_read_as_p=round(float(p.max()), 4),
               verifier_p_sign=None if detector.verifier is None else round(float(sign_p), 4))
    if int(p.argmax()) != sign.class_id:
        verdict = "box" if int(p_truth.argmax()) == sign.class_id else "misnamed"
    else:
        verdict = "named low"
    return {**row, "verdict": verdict}


def named_count(scenes, detections, threshold: float, min_width: float) -> int:
    outcomes = sign_outcomes(scenes, detections, threshold)
    return sum(1 for scene, o in zip(scenes, outcomes, strict=True)
               for s, status in zip(scene.boxes, o.signs, strict=True) if s.width >= min_width and status == NAMED)


def false_positive_scenes(scenes, detections, threshold: float, min_width: float) -> list[dict]:
    """Question 2 of the module docstring: one row per scene holding a false positive at or above the first one
    over budget (the false positives the threshold is set against). Its false positives at every score go, one
    scene at a time; a detection that names a sign (class-aware matching) stays even where the class-blind
    matching gave that sign to another detection."""
    false = []  # per scene: the false positives, highest score first
    for scene, found in zip(scenes, detections, strict=True):
        blind, named = match_any_class(scene.boxes, found), match_scenes([scene], [found], 0.0)[0].right
        false.append(sorted((d for d, j, right in zip(found, blind, named, strict=True) if j < 0 and not right),
                            key=lambda d: -d.score))
    allowed = math.floor(FP_BUDGET * len(scenes) + 1e-9)  # as metrics.operating_threshold counts them
    every = sorted((d.score for f in false for d in f), reverse=True)
    limit = every[allowed] if len(every) > allowed else threshold  # the first false positive over budget
    base = named_count(scenes, detections, threshold, min_width)
    rows = []
    for i, gone in enumerate(false):
        if not any(d.score >= limit for d in gone):
            continue
        without = list(detections)
        without[i] = [d for d in detections[i] if all(d is not g for g in gone)]
        t = operating_threshold(scenes, without)
        rows.append({"scene": Path(scenes[i].path).name, "false_positives": len(gone),
                     "top_false": [{"score": round(d.score, 4), "read_as": GTSRB_CLASS_NAMES[d.class_id]}
                                   for d in gone[:4]],
                     "threshold_without": round(t, 4),
                     "more_named": named_count(scenes, without, t, min_width) - base})
    return rows


def box_widths(detector, scenes) -> dict:
    """Median (proposal width / sign width) by sign width, over the signs that a proposal covers at IoU >= 0.3
    (the best-overlapping proposal): whether the finder's boxes run small or large at some size."""
    ratios: dict[str, list[float]] = {}
    for scene in scenes:
        if not scene.boxes:
            continue
        boxes, _, _ = detector.finder.propose(load_scene(scene.path), PROPOSAL_FLOOR)
        for s in scene.boxes:
            overlap = [iou(b.tolist(), [s.x1, s.y1, s.x2, s.y2]) for b in boxes]
            if max(overlap, default=0.0) >= 0.3:
                b = boxes[int(np.argmax(overlap))]
                low = max(v for v in WIDTH_BINS if v <= s.width)
                ratios.setdefault(f">= {low} px", []).append(float(b[2] - b[0] + 1) / s.width)
    return {k: {"signs": len(v), "median": round(statistics.median(v), 3), "min": round(min(v), 3)}
            for k, v in sorted(ratios.items(), key=lambda kv: int(kv[0].split()[1]))}


def score_run(run: Path, verify: bool, min_width: float) -> dict:
    finder = load_finder(run / "last.safetensors", torch.device("cpu"))
    detector = load_detector(run, "cpu", finder=finder, verify=verify)
    scenes, source = evaluation_scenes(run, None)
    kept, detections, unreadable, _ = detect_scenes(detector, scenes)
    threshold = operating_threshold(kept, detections)
    outcomes = sign_outcomes(kept, detections, threshold)
    missed = [why_missed(detector, scene, s, found, threshold)
              for scene, found, o in zip(kept, detections, outcomes, strict=True)
              for s, status in zip(scene.boxes, o.signs, strict=True) if s.width >= min_width and status != NAMED]
    signs = sum(1 for scene in kept for s in scene.boxes if s.width >= min_width)
    named_heat = []
    for scene, o in zip(kept, outcomes, strict=True):
        named = [s for s, status in zip(scene.boxes, o.signs, strict=True) if s.width >= min_width and status == NAMED]
        if named:  # one finder pass per scene, not per sign
            maps = detector.finder.maps(load_scene(scene.path))
            named_heat += [centre_heat(maps, s) for s in named]
    return {"run": str(run), "data": source, "unreadable": unreadable, "verifier": detector.verifier is not None,
            "threshold": round(threshold, 4), "signs": signs, "named": signs - len(missed), "missed": missed,
            "named_centre_heat": {"min": min(named_heat, default=None),
                                  "median": statistics.median(named_heat) if named_heat else None},
            "false_positive_scenes": false_positive_scenes(kept, detections, threshold, min_width),
            "proposal_width_ratio": box_widths(detector, kept)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--min-width", type=float, default=32.0, help="signs at least this wide (px)")
    parser.add_argument("--no-verifier", action="store_true", help="leave out RUN/verifier.safetensors")
    parser.add_argument("--out", type=Path, help="write every figure as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = [score_run(run, not args.no_verifier, args.min_width) for run in args.runs]
    for r in results:
        print(f"{r['run']}: threshold {r['threshold']}, {r['named']} of {r['signs']} signs "
              f">= {args.min_width:g} px named; the finder's heat at the named ones' centres: median "
              f"{r['named_centre_heat']['median']}, lowest {r['named_centre_heat']['min']}")
        for m in r["missed"]:
            p = m["proposal"] or {}
            print(f"  missed {m['scene']} {m['name']} ({m['width']:g} px): {m['verdict']}; centre heat "
                  f"{m['centre_heat']}, proposal heat {p.get('heat')} IoU {p.get('iou')}, class p on it "
                  f"{m.get('class_p_proposal')} (read as {m.get('proposal_read_as')} {m.get('proposal_read_as_p')}), "
                  f"on the true box {m['class_p_true_box']} (read as {m['true_box_read_as']}), best named score "
                  f"{m['best_named_score']}")
        for f in r["false_positive_scenes"]:
            top = ", ".join(f"{t['read_as']} {t['score']}" for t in f["top_false"])
            print(f"  the {f['false_positives']} false positives of {f['scene']} ({top}, ...): without them the "
                  f"threshold would be {f['threshold_without']}, {f['more_named']:+d} signs named")
        print("  proposal width / sign width:", ", ".join(f"{k}: {v['median']} (min {v['min']}, {v['signs']} signs)"
                                                       for k, v in r["proposal_width_ratio"].items()))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        context = {"commit": git_revision(), "machine": machine(), "threads": torch.get_num_threads(),
                   "command": "python " + " ".join(sys.argv), "min_width": args.min_width}
        args.out.write_text(json.dumps({**context, "runs": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
