"""The detector's operating point and its failure cases, on each run's validation blocks (issue #17).

    python bench/detection_failures.py RUN [RUN ...] [--threads 1] [--crops /tmp/det-failures] [--no-verifier] [--flip]

RUN is a detection run (`signlab train --task detect`); each is evaluated on the blocks its training held out,
with its verifier where it has one (--no-verifier: without, for a paired comparison).
Per run: the operating point (signlab.detection.metrics.operating_point: the lowest threshold with <= 0.05
false positives per scene, recall found and found-and-named by size) with the last epoch's weights, and with
best.safetensors, which was chosen on these very scenes and so is optimistic; with two runs or more, also the
last weights at a threshold fixed in advance (the mean of the other runs' operating thresholds). Then, with the
last weights at their operating threshold, every missed or misnamed sign by width, class and category, light
(mean luma of the sign's box) and stacking (another sign just above or below), and every false positive.

Writes operating-point-split{S}.json per run and failures.json (figures only, no image data) into --out-dir;
crops of the failures and false positives, and one contact sheet per run, go to --crops (outside the repo).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from runtimes import git_revision, machine

from signlab.classes import GTSRB_CLASS_NAMES
from signlab.detection.boxes import box_iou
from signlab.detection.detect import load_detector
from signlab.detection.draw import label_font
from signlab.detection.evaluate import detect_scenes, evaluation_scenes
from signlab.detection.finder import load_finder
from signlab.detection.metrics import MISNAMED, MISSED, NAMED, evaluate_detections, point_at, sign_outcomes
from signlab.detection.scenes import load_scene

WIDTH_BINS = ((0, 24), (24, 32), (32, 48), (48, 64), (64, math.inf))  # px, [low, high)
# Mean luma (BT.601, 0-255) of the sign's box. GTSDB is a dark data set: its 852 signs' median is 78, a fifth
# are under 40 (dusk, shade, backlit) and a tenth at or over 150 (sun on the face, overexposed).
DARK, BRIGHT = 40, 150
STACK_GAP = 0.5  # another sign within half this sign's height above or below, overlapping half the narrower width
SIZES = ("under_32px", "32px_and_over")


def width_bin(width: float) -> str:
    low, high = next(b for b in WIDTH_BINS if b[0] <= width < b[1])
    return f">= {low}" if math.isinf(high) else f"{low}-{high}" if low else f"< {high}"


def light_of(luma: float) -> str:
    return "dark" if luma < DARK else "bright" if luma >= BRIGHT else "normal"


def stacked(boxes, j: int) -> bool:
    """Another sign of the scene sits just above or below sign j (GTSDB's stacked pairs on one post)."""
    a = boxes[j]
    for k, b in enumerate(boxes):
        overlap = min(a.x2, b.x2) - max(a.x1, b.x1) + 1
        gap = max(a.y1, b.y1) - min(a.y2, b.y2) - 1  # negative where they overlap vertically
        if k != j and overlap >= 0.5 * min(a.width, b.width) and gap <= STACK_GAP * a.height:
            return True
    return False


def best_cover(sign, found) -> float | None:
    """The highest score among all detections (any class, down to the detection threshold) covering the sign
    at IoU 0.5: under the operating threshold it was seen but not believed; None: never seen."""
    if not found:
        return None
    iou = box_iou(torch.tensor([[sign.x1, sign.y1, sign.x2, sign.y2]], dtype=torch.float64),
                  torch.tensor([[d.x1, d.y1, d.x2, d.y2] for d in found], dtype=torch.float64))[0]
    scores = [d.score for d, v in zip(found, iou.tolist(), strict=True) if v >= 0.5]
    return round(max(scores), 4) if scores else None


def luma(image: np.ndarray, box) -> float:
    patch = image[int(box.y1): int(box.y2) + 1, int(box.x1): int(box.x2) + 1].astype(np.float32)
    return float((patch @ np.array([0.299, 0.587, 0.114], np.float32)).mean())


def records(scenes, detections, outcomes) -> tuple[list[dict], list[dict]]:
    """One JSON-ready record per sign and per false positive at the operating threshold."""
    signs, false = [], []
    for scene, found, outcome in zip(scenes, detections, outcomes, strict=True):
        image = load_scene(scene.path)
        for j, (s, status) in enumerate(zip(scene.boxes, outcome.signs, strict=True)):
            covers = [d for d in outcome.detections if status == MISNAMED and box_overlap(d, s) >= 0.5]
            named = max(covers, key=lambda d: d.score, default=None)
            signs.append({"scene": Path(scene.path).name, "box": [s.x1, s.y1, s.x2, s.y2], "width": s.width,
                          "class_id": s.class_id, "name": GTSRB_CLASS_NAMES[s.class_id], "category": s.category,
                          "status": status, "luma": round(luma(image, s), 1), "stacked": stacked(scene.boxes, j),
                          "best_score": best_cover(s, found),
                          "read_as": None if named is None else named.class_id})
        for d, is_false in zip(outcome.detections, outcome.false, strict=True):
            if is_false:
                false.append({"scene": Path(scene.path).name, "box": [round(v, 1) for v in (d.x1, d.y1, d.x2, d.y2)],
                              "width": round(d.x2 - d.x1 + 1, 1), "score": round(d.score, 4),
                              "class_id": d.class_id, "name": GTSRB_CLASS_NAMES[d.class_id]})
    for r in signs:
        r["width_bin"], r["light"] = width_bin(r["width"]), light_of(r["luma"])
    return signs, false


def box_overlap(d, s) -> float:
    return float(box_iou(torch.tensor([[d.x1, d.y1, d.x2, d.y2]], dtype=torch.float64),
                         torch.tensor([[s.x1, s.y1, s.x2, s.y2]], dtype=torch.float64))[0, 0])


def evaluate_weights(run: Path, weights: str, scenes, verify: bool = True, flip: bool = False
                     ) -> tuple[dict, list, list]:
    """The run's detector with the finder from `weights`, on the scenes: figures, scenes read, detections."""
    finder = load_finder(run / weights, torch.device("cpu"), flip=flip)
    detector = load_detector(run, "cpu", finder=finder, verify=verify)
    kept, detections, unreadable, seconds = detect_scenes(detector, scenes)
    m = evaluate_detections(kept, detections)
    figures = {"weights": weights, "operating_point": m["operating_point"], "map50_categories": m["map50_categories"],
               "map50_classes": m["map50_classes"], "fp_per_scene_at_0.5": m["fp_per_scene"],
               "recall_by_size_at_0.5": m["recall_by_size"], "scenes": len(kept), "signs": m["signs"],
               "unreadable": unreadable, "seconds": round(seconds, 2)}
    return figures, kept, detections


def write_crops(out: Path, scenes, signs: list[dict], false: list[dict]) -> Path | None:
    """Each failure and false positive cut from its scene with a margin, 4x at most, on one contact sheet."""
    shown = [(r, "sign") for r in signs if r["status"] != NAMED] + [(r, "fp") for r in false]
    if not shown:
        return None
    out.mkdir(parents=True, exist_ok=True)
    paths = {Path(s.path).name: s.path for s in scenes}
    tiles = []
    for r, kind in shown:
        x1, y1, x2, y2 = r["box"]
        m = max(8.0, 0.6 * (x2 - x1 + 1))
        with Image.open(paths[r["scene"]]) as image:
            crop = image.convert("RGB").crop((int(x1 - m), int(y1 - m), int(x2 + m) + 1, int(y2 + m) + 1))
        scale = min(4.0, 160 / max(crop.size))
        crop = crop.resize((round(crop.width * scale), round(crop.height * scale)), Image.Resampling.LANCZOS)
        ImageDraw.Draw(crop).rectangle((m * scale, m * scale, (m + x2 - x1 + 1) * scale, (m + y2 - y1 + 1) * scale),
                                       outline=(255, 0, 255))
        label = (f"{r['status']} {r['class_id']} {r['width']:.0f}px {r['light']}" if kind == "sign"
                 else f"FP {r['score']:.2f} as {r['class_id']}")
        crop.save(out / f"{kind}-{Path(r['scene']).stem}-{int(x1)}-{int(y1)}.png")
        tile = Image.new("RGB", (170, 190), (255, 255, 255))
        tile.paste(crop, (5, 5))
        ImageDraw.Draw(tile).text((5, 172), f"{r['scene']} {label}", fill=(0, 0, 0), font=label_font(10))
        tiles.append(tile)
    cols = 6
    sheet = Image.new("RGB", (cols * 170, math.ceil(len(tiles) / cols) * 190), (255, 255, 255))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % cols) * 170, (i // cols) * 190))
    sheet.save(out / "sheet.png")
    return out / "sheet.png"


def breakdown(signs: list[dict], key) -> list[dict]:
    """Signs, named, misnamed and missed per value of key(record), in the values' first-seen order."""
    rows: dict = {}
    for r in signs:
        row = rows.setdefault(key(r), Counter())
        row["signs"] += 1
        row[r["status"]] += 1
    return [{"value": v, "signs": c["signs"], NAMED: c[NAMED], MISNAMED: c[MISNAMED], MISSED: c[MISSED]}
            for v, c in rows.items()]


def breakdowns(signs: list[dict]) -> dict[str, list[dict]]:
    order = [width_bin(low) for low, _ in WIDTH_BINS]
    by_width = sorted(breakdown(signs, lambda r: r["width_bin"]), key=lambda row: order.index(row["value"]))
    by_class = sorted(breakdown(signs, lambda r: f"{r['class_id']} {r['name']}"), key=lambda row: -row["signs"])
    return {"width (px)": by_width,
            "category": sorted(breakdown(signs, lambda r: r["category"]), key=lambda row: -row["signs"]),
            f"light (mean luma: dark < {DARK}, bright >= {BRIGHT})":
                sorted(breakdown(signs, lambda r: r["light"]), key=lambda row: ("dark", "normal", "bright").index(
                    row["value"])),
            "stacked": sorted(breakdown(signs, lambda r: "stacked" if r["stacked"] else "alone"),
                              key=lambda row: row["value"]),
            "class (those with a failure)": [row for row in by_class if row["signs"] > row[NAMED]]}


def mean_sd(values: list) -> dict:
    kept = [v for v in values if v is not None]
    return {"mean": statistics.mean(kept) if kept else None,
            "sd": statistics.stdev(kept) if len(kept) > 1 else None, "n": len(kept)}


def summary(results: list[dict]) -> dict:
    """Mean and sample sd over the runs of each operating-point figure, per weights file."""
    out = {}
    for weights in ("last", "best", "fixed"):
        points = [r["weights"][weights]["operating_point"] for r in results if weights in r["weights"]]
        if not points:
            continue
        out[weights] = {"fp_per_scene": mean_sd([p["fp_per_scene"] for p in points]),
                        "threshold": mean_sd([p["threshold"] for p in points]),
                        **{f"{size} {what}": mean_sd([p[size][f"recall_{what}"] for p in points])
                           for size in SIZES for what in ("found", "named")}}
    return out


def pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}"


def point_row(split, weights: str, p: dict) -> str:
    sizes = " | ".join(f"{pct(p[s]['recall_found'])} / {pct(p[s]['recall_named'])} ({p[s]['misnamed']} misnamed, "
                       f"{p[s]['signs']} signs)" for s in reversed(SIZES))
    return f"| {split} | {weights} | {p['threshold']:.3f} | {p['fp_per_scene']:.3f} | {sizes} |"


def print_tables(results: list[dict], mean: dict, fails: dict) -> None:
    print("\n| split | weights | threshold | FP/scene | >= 32 px: found / named % | < 32 px: found / named % |")
    print("|---|---|---|---|---|---|")
    for r in results:
        for weights, figures in r["weights"].items():
            print(point_row(r["split_seed"], weights, figures["operating_point"]))
    for weights, m in mean.items():
        cells = " | ".join(" / ".join(f"{pct(m[f'{s} {w}']['mean'])} ± {pct(m[f'{s} {w}']['sd'])}"
                                      for w in ("found", "named")) for s in reversed(SIZES))
        print(f"| **mean ± sd** | {weights} | {m['threshold']['mean']:.3f} | {m['fp_per_scene']['mean']:.3f} | "
              f"{cells} |")
    for title, rows in fails["breakdown"].items():
        print(f"\n| {title} | signs | named | misnamed | missed | named % |\n|---|---|---|---|---|---|")
        for row in rows:
            print(f"| {row['value']} | {row['signs']} | {row[NAMED]} | {row[MISNAMED]} | {row[MISSED]} | "
                  f"{pct(row[NAMED] / row['signs'])} |")
    print("\n| split | scene | sign | class | width | luma | stacked | status | best score (any class) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        for s in r["signs"]:
            if s["status"] != NAMED:
                read = f" (read as {s['read_as']})" if s["read_as"] is not None else ""
                print(f"| {r['split_seed']} | {s['scene']} | {[round(v) for v in s['box']]} | {s['class_id']} "
                      f"{s['name']} | {s['width']:.0f} | {s['luma']:.0f} | {'yes' if s['stacked'] else 'no'} | "
                      f"{s['status']}{read} | {s['best_score']} |")
    print("\n| split | scene | box | score | named as |\n|---|---|---|---|---|")
    for r in results:
        for f in r["false_positives"]:
            print(f"| {r['split_seed']} | {f['scene']} | {f['box']} | {f['score']:.3f} | {f['class_id']} {f['name']} |")


def evaluate_run(run: Path, crops: Path, best: bool, verify: bool = True, flip: bool = False
                 ) -> tuple[dict, tuple[list, list]]:
    """The run's figures, and the scenes scored with their detections (for thresholds fixed elsewhere)."""
    cfg = json.loads((run / "config.json").read_text())
    scenes, source = evaluation_scenes(run, None)
    last, kept, detections = evaluate_weights(run, "last.safetensors", scenes, verify, flip)
    weights = {"last": last}
    if best and (run / "best.safetensors").is_file():
        weights["best"] = evaluate_weights(run, "best.safetensors", scenes, verify, flip)[0]
    outcomes = sign_outcomes(kept, detections, last["operating_point"]["threshold"])
    signs, false = records(kept, detections, outcomes)
    sheet = write_crops(crops / f"split{cfg['split_seed']}", kept, signs, false)
    print(f"{run}: {len(kept)} scenes, {len(signs)} signs ({source}); crops: {sheet}", file=sys.stderr)
    return {"run": str(run), "split_seed": cfg["split_seed"], "seed": cfg["seed"], "data": source,
            "weights": weights, "signs": signs, "false_positives": false}, (kept, detections)


def fix_thresholds_in_advance(results: list[dict], scored: list[tuple[list, list]]) -> None:
    """Each run's last weights at a threshold it did not choose: the mean of the other runs' operating
    thresholds (weights "fixed"), as a test set would be scored. Needs two runs or more."""
    for r, (scenes, detections) in zip(results, scored, strict=True):
        others = [q["weights"]["last"]["operating_point"]["threshold"] for q in results if q is not r]
        if others:
            r["weights"]["fixed"] = {"operating_point": point_at(scenes, detections, statistics.mean(others))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-best", action="store_true", help="skip best.safetensors (a second detection pass)")
    parser.add_argument("--crops", type=Path, default=Path("/tmp/det-failures"))
    parser.add_argument("--out-dir", type=Path, default=Path("docs/results/detection"))
    parser.add_argument("--no-verifier", action="store_true", help="leave out RUN/verifier.safetensors")
    parser.add_argument("--flip", action="store_true", help="average the finder with its mirror image")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    context = {"commit": git_revision(), "machine": machine(), "threads": torch.get_num_threads(),
               "command": "python " + " ".join(sys.argv)}
    results, scored = zip(*(evaluate_run(run, args.crops, not args.no_best, not args.no_verifier, args.flip)
                            for run in args.runs), strict=True)
    results = list(results)
    fix_thresholds_in_advance(results, list(scored))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for r in results:
        (args.out_dir / f"operating-point-split{r['split_seed']}.json").write_text(
            json.dumps({**context, **r}, indent=1) + "\n")
    every = [s for r in results for s in r["signs"]]
    fails = {**context, "runs": [str(r["run"]) for r in results], "summary": summary(results),
             "light_cutoffs": {"dark_below": DARK, "bright_from": BRIGHT},
             "stacked": f"another sign overlapping half the narrower width, within {STACK_GAP} x height above or below",
             "breakdown": breakdowns(every),
             "false_positives": {str(r["split_seed"]): r["false_positives"] for r in results}}
    (args.out_dir / "failures.json").write_text(json.dumps(fails, indent=1) + "\n")
    print(f"{len(results)} runs, {len(every)} signs (a sign held out by two splits counts twice); "
          f"{context['threads']} thread(s); {context['machine']}; commit {context['commit']}")
    print_tables(results, fails["summary"], fails)


if __name__ == "__main__":
    main()
