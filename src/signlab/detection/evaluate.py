"""`signlab evaluate` for a detection run: every scene detected at a low threshold, then the benchmark's
figures (signlab.detection.metrics) and, with --report, the report folder (signlab.detection.report).

Scenes are detected at EVALUATION_THRESHOLD so that AP sees the whole precision-recall range; recall by size
and false positives per scene are counted at the detector's default threshold, the one a person sees, and
again at the operating point: the lowest threshold within FP_BUDGET false positives per scene (never below
EVALUATION_THRESHOLD, since nothing under it was detected).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from signlab.detection.boxes import RANKED_CATEGORIES
from signlab.detection.detect import DEFAULT_THRESHOLD, load_detector
from signlab.detection.metrics import FP_BUDGET
from signlab.errors import UserError

EVALUATION_THRESHOLD = 0.01
RUN_THRESHOLD_FILE = "operating_point.json"  # the threshold a run ships: its operating point on its validation scenes


def evaluation_scenes(run: Path, data: str | Path | None) -> tuple[list, str]:
    """--data's scenes, or the run's own validation scenes: the blocks its training held out."""
    from signlab.detection.scenes import read_gtsdb, split_scenes

    if data is not None:
        scenes, skipped = read_gtsdb(data)
        source = str(data)
    else:
        cfg = run_config(run)
        if cfg.get("val_data"):
            scenes, skipped = read_gtsdb(cfg["val_data"])
            source = cfg["val_data"]
        else:
            every, skipped = read_gtsdb(cfg["data"])
            scenes = split_scenes(every, cfg["val_fraction"], cfg["split_seed"])[1]
            source = f"validation blocks of {cfg['data']}"
    for name, why in skipped:
        print(f"skipped {name}: {why}", file=sys.stderr)
    if not scenes:
        raise UserError(f"{run}: no scenes to evaluate on (--val-fraction 0?); pass --data GTSDB_DIR")
    return scenes, source


def run_config(run: Path) -> dict:
    """The run's config.json, or for a folder written by `signlab export` the finder's config it carries."""
    from signlab.detection.onnx_backend import export_config, is_detector_export

    if (run / "config.json").is_file():
        return json.loads((run / "config.json").read_text())
    if is_detector_export(run):
        return export_config(run)
    raise UserError(f"{run}: not a run folder, so its validation scenes are unknown; pass --data GTSDB_DIR")


def detect_scenes(detector, scenes: list, threshold: float = EVALUATION_THRESHOLD) -> tuple[list, list, list, float]:
    """Every scene read and detected at `threshold`: the scenes read, their detections, one line per scene that
    could not be read, and the seconds taken (reading included). Benches reuse the detections."""
    from signlab.detection.scenes import load_scene

    kept, detections, unreadable = [], [], []
    start = time.perf_counter()
    for scene in scenes:
        try:
            image = load_scene(scene.path)
        except UserError as e:
            unreadable.append(str(e))
            print(e, file=sys.stderr)
            continue
        kept.append(scene)
        detections.append(detector.detect(image, threshold))
    return kept, detections, unreadable, time.perf_counter() - start


def evaluate_detector(target: str | Path, data: str | Path | None = None, report: str | Path | None = None,
                      device: str = "auto", finder=None, backend: str | None = None,
                      fp_budget: float = FP_BUDGET, verify: bool = True, tta: bool = False) -> dict:
    """Detect every scene, score the detections; returns the JSON-ready summary `signlab evaluate` prints.
    finder: another first stage in front of the run's classifier (bench/finders.py compares them); backend:
    as load_detector's (onnx: the files of `signlab export RUN`); fp_budget: false positives per scene allowed
    at the operating point (metrics.operating_point); verify False: without the run's verifier; tta: the
    finder also looks at each scene's mirror image (load_detector)."""
    from signlab.detection.metrics import evaluate_detections, point_at

    detector = load_detector(target, device, finder=finder, backend=backend, verify=verify, tta=tta)
    shipped = run_threshold(Path(target))
    scenes, source = evaluation_scenes(Path(target), data)
    kept, detections, unreadable, seconds = detect_scenes(detector, scenes)
    if not kept:
        raise UserError(f"{source}: none of its scenes could be read")
    metrics = evaluate_detections(kept, detections, score_threshold=DEFAULT_THRESHOLD, fp_budget=fp_budget)
    summary = {"task": "detect", "target": str(target), "backend": detector.backend,
               "verifier": detector.verifier is not None, "tta": bool(getattr(detector.finder, "flip", False)),
               "data": source,
               "seconds": seconds, "scenes_per_second": len(kept) / seconds, "unreadable": unreadable,
               **{k: v for k, v in metrics.items() if k != "pr_curves"}}
    if shipped is not None:
        summary["run_threshold_point"] = point_at(kept, detections, shipped)
    if report is not None:
        from signlab.detection.report import write_detection_report

        write_detection_report(Path(report), kept, detections, metrics)
        summary["report"] = str(report)
    return summary


def write_run_threshold(run: Path, fp_budget: float = FP_BUDGET, device: str = "auto") -> dict | None:
    """RUN/operating_point.json: the operating point of the run's detector (the weights `signlab detect` loads)
    on its validation scenes. Chosen there, it is fixed in advance for any other scenes: `signlab evaluate RUN
    --data TEST` scores the test at it too, as a deployed detector would run. None without validation scenes."""
    from signlab.detection.metrics import operating_point

    try:
        scenes, source = evaluation_scenes(run, None)
    except UserError:
        return None
    kept, detections, _, _ = detect_scenes(load_detector(run, device), scenes)
    if not kept:
        return None
    point = {"data": source, "scenes": len(kept), **operating_point(kept, detections, fp_budget)}
    tmp = run / f".{RUN_THRESHOLD_FILE}.tmp"
    tmp.write_text(json.dumps(point, indent=1) + "\n")
    tmp.replace(run / RUN_THRESHOLD_FILE)
    return point


def run_threshold(target: Path) -> float | None:
    """The threshold the run chose on its validation scenes (write_run_threshold), if it has one."""
    path = target / RUN_THRESHOLD_FILE
    if not path.is_file():
        return None
    try:
        return float(json.loads(path.read_text())["threshold"])
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{path}: unreadable; delete it (signlab evaluate still scores the run without it)") from None


def resolve_threshold(target: Path, threshold: float | str) -> float:
    """A score threshold as given, or for "run" the run's own (run_threshold); UserError when it has none."""
    if threshold != "run":
        return float(threshold)
    shipped = run_threshold(target)
    if shipped is None:
        raise UserError(f"--threshold run: {target} has no {RUN_THRESHOLD_FILE} (runs trained with validation "
                        f"scenes write it); give a number, e.g. --threshold 0.3")
    return shipped


def format_operating_point(p: dict) -> str:
    """One line: recall found and found-and-named by size at the operating threshold, misnamed signs apart."""
    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.1f}"

    sizes = "; ".join(f"{k.replace('_', ' ')}: found {pct(v['recall_found'])} %, named {pct(v['recall_named'])} % "
                      f"of {v['signs']}" for k, v in p.items() if isinstance(v, dict))
    misnamed = sum(v["misnamed"] for v in p.values() if isinstance(v, dict))
    where = f"at <= {p['fp_budget']:g} FP/scene " if p.get("fp_budget") is not None else ""
    return (f"{where}(score >= {p['threshold']:.3f}): {sizes}; {misnamed} misnamed; "
            f"{p['fp_per_scene']:.2f} FP/scene")


def format_detection_summary(s: dict) -> str:
    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.2f}"

    per_category = ", ".join(f"{c} {pct(s['ap50'][c])}" for c in RANKED_CATEGORIES)
    by_size = ", ".join(f"{k.replace('_', ' ')} {pct(v['recall'])} % of {v['signs']}"
                        for k, v in s["recall_by_size"].items())
    stages = "finder, verifier and classifier" if s.get("verifier") else "finder and classifier"
    lines = [f"{s['scenes']} scenes, {s['signs']} signs ({s['data']}); {stages}; {s['scenes_per_second']:.2f} "
             f"scenes/s",
             f"mAP@0.5 over the three ranked categories: {pct(s['map50_categories'])} % ({per_category})",
             f"mAP@0.5 over the classes (find and name): {pct(s['map50_classes'])} %; "
             f"AP@[.5:.95]: {pct(s['ap50_95'])} %",
             f"at score >= {s['score_threshold']}: recall {by_size}; {s['fp_per_scene']:.2f} false positives per scene",
             format_operating_point(s["operating_point"])]
    if s.get("run_threshold_point"):
        lines.append("at the run's own threshold, chosen on its validation scenes: "
                     + format_operating_point({**s["run_threshold_point"], "fp_budget": None}))
    if s.get("report"):
        lines.append(f"report: {s['report']}")
    return "\n".join(lines)
