"""Robustness of a trained model: accuracy on its validation images under blur, JPEG, light, scale, aspect,
crop and rotation perturbations (signlab.perturb), each at graded severities.

    .venv/bin/python bench/robustness.py RUN --data GTSRB_TRAIN_FOLDER [--split-seed N] [--max-per-class K]
        [--json OUT] [--png OUT] [--no-tta] [--seed S] [--device auto|cpu|cuda]

The images are the run's validation split, rebuilt as `signlab evaluate` rebuilds it
(signlab.evaluation.evaluation_set: split_indices with the run's --val-fraction and, unless --split-seed says
otherwise, its split seed) from --data, the run's own training folder by default. RUN/split.json tells whether
they are the images training validated on; the output says so. --max-per-class K draws K of them a class
(seeded), for a run of a few minutes on a CPU.

Every perturbation starts from the original photo and its CSV ROI (crops and distant signs need the frame
around the sign), then goes through signlab's own crop-and-resize (signlab.data.crop_resize, what decoding a
file does) and the model's preprocessing and test-time augmentation (predict_images, as evaluate calls it).
Before measuring, the unperturbed path is checked to give exactly the images `evaluate` decodes.

Prints one table (perturbation, severity, accuracy, change vs clean) and the robustness score: the mean over
perturbations (clean excluded) of each one's mean accuracy over its severities. Writes --json and a PNG of
accuracy against severity, one panel a perturbation (default RUN/robustness.png).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from signlab.data import ImageSet, align_labels, crop_resize, data_folders, split_digest, split_indices, to_rgb_array
from signlab.errors import UserError
from signlab.evaluation import evaluation_set
from signlab.layouts import list_entries
from signlab.perturb import PERTURBATIONS, Roi, roi_side
from signlab.predict import LoadedModel, load_model, predict_images
from signlab.runtime import pick_device

ROOT = Path(__file__).resolve().parents[1]
Frame = tuple[np.ndarray, Roi]


def validation_set(loaded: LoadedModel, data: str | None, split_seed: int | None) -> tuple[ImageSet, str]:
    """The run's validation split of --data (default: its own data), by the split evaluate uses."""
    cfg = loaded.config
    if data is None and split_seed is None:
        ds, source = evaluation_set(loaded, None)  # also refuses a dataset that changed since training
        return ds, f"{source} (the images the run validated on)"
    folder = Path(data) if data is not None else data_folders(cfg.data, cfg.val_data)[0]
    if cfg.data and folder.resolve() == Path(cfg.data).resolve():
        folder = Path(cfg.data)  # the run's spelling of it: split.json's digest covers the paths as listed
    full = loaded.preprocessing.load(folder, cfg.max_bad_fraction)
    seed = cfg.split_seed if split_seed is None else split_seed
    _, val_idx = split_indices(full, cfg.val_fraction, seed)
    if len(val_idx) == 0:
        raise UserError(f"--data {folder}: no validation split (the run's --val-fraction is 0); use a run with one")
    ds = full.subset(val_idx)
    record = loaded.path.parent / "split.json"
    same = record.is_file() and json.loads(record.read_text()).get("val_sha256") == split_digest(ds)
    note = "the images the run validated on" if same else "NOT the run's validation split: may overlap training"
    return ds, f"validation split (fraction {cfg.val_fraction}, seed {seed}) of {folder} ({note})"


def sample_per_class(ds: ImageSet, k: int | None, seed: int) -> ImageSet:
    """At most k images a class, drawn at random (seeded) so that they spread over the class's tracks."""
    if k is None:
        return ds
    if k < 1:
        raise UserError(f"--max-per-class {k}: must be at least 1")
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(ds.labels == c))[:k] for c in np.unique(ds.labels)]
    return ds.subset(np.sort(np.concatenate(keep)))


def read_frames(ds: ImageSet, crop: str) -> list[Frame]:
    """Each image's original frame and its ROI on that frame's grid (the whole frame when the run crops none)."""
    entries = {e.path: e for e in list_entries(Path(ds.root))[2]}
    frames = []
    for path in ds.paths:
        with Image.open(path) as im:
            frame = to_rgb_array(im)
        h, w = frame.shape[:2]
        e = entries[path]
        if crop == "roi" and e.roi is not None:
            sx, sy = w / e.csv_size[0], h / e.csv_size[1]  # a copy may be stored at another size than the CSV's
            roi = (e.roi[0] * sx, e.roi[1] * sy, e.roi[2] * sx, e.roi[3] * sy)
        else:
            roi = (0.0, 0.0, float(w), float(h))
        frames.append((frame, roi))
    return frames


def crops(frames: list[Frame], size: int, name: str, severity: float, level: int,
          seed: int) -> tuple[np.ndarray, float]:
    """The model's decoded inputs (N, size, size, 3) for every frame under one perturbation at one severity,
    and the mean side of the box cropped over the ROI's: how much of a loose crop the frame's edges allowed."""
    apply, key = PERTURBATIONS[name].apply, zlib.crc32(name.encode())
    out, ratios = [], []
    for i, (frame, roi) in enumerate(frames):
        image, box = apply(frame, roi, severity, np.random.default_rng((seed, key, level, i)))
        out.append(crop_resize(Image.fromarray(image), size, box, (image.shape[1], image.shape[0])))
        ratios.append(roi_side(box) / roi_side(roi))
    return np.stack(out), float(np.mean(ratios))


def measure(loaded: LoadedModel, ds: ImageSet, frames: list[Frame], device: torch.device, tta: bool,
            seed: int) -> list[dict]:
    size = loaded.preprocessing.image_size
    clean, _ = crops(frames, size, "clean", 0, 0, seed)
    if not np.array_equal(clean, ds.images):
        raise SystemExit("robustness.py: the unperturbed crops differ from the decoded validation images; "
                         "signlab.data's decoding changed: update read_frames to match")
    rows = []
    for name, p in PERTURBATIONS.items():
        for level, severity in enumerate(p.severities):
            start = time.perf_counter()
            images, box = (clean, 1.0) if name == "clean" else crops(frames, size, name, severity, level, seed)
            logits = predict_images(loaded, images, device, tta=tta)
            acc = float((logits.argmax(1).numpy() == ds.labels).mean())
            changed = float((images != clean).any(axis=(1, 2, 3)).mean())  # e.g. ROIs already below a scale
            rows.append({"perturbation": name, "severity": severity, "unit": p.unit, "accuracy": acc,
                         "changed": changed, "box_side": box, "seconds": time.perf_counter() - start})
            print(f"  {name:<14} {severity:>5g} {p.unit:<14} {acc:7.2%}  {changed:4.0%} changed, "
                  f"box {box:.2f} x ROI  ({rows[-1]['seconds']:.0f} s)", flush=True)
    base = rows[0]["accuracy"]
    for r in rows:
        r["drop"] = r["accuracy"] - base
    return rows


def family_means(rows: list[dict]) -> dict[str, float]:
    names = [n for n in PERTURBATIONS if n != "clean"]
    return {n: float(np.mean([r["accuracy"] for r in rows if r["perturbation"] == n])) for n in names}


def format_table(report: dict) -> str:
    lines = ["| perturbation | severity | accuracy | vs clean | inputs changed |", "|---|---|---|---|---|"]
    for r in report["rows"]:
        sev = "-" if r["perturbation"] == "clean" else f"{r['unit']} {r['severity']:g}"
        drop = "" if r["perturbation"] == "clean" else f"{100 * r['drop']:+.1f} pt"
        lines.append(f"| {r['perturbation']} | {sev} | {r['accuracy']:.2%} | {drop} | {r['changed']:.0%} |")
    means = sorted(report["families"].items(), key=lambda kv: kv[1])
    lines += ["", "mean accuracy over severities, worst first: "
              + ", ".join(f"{n} {a:.2%}" for n, a in means),
              f"robustness score (mean over {len(means)} perturbations): {report['score']:.2%} "
              f"(clean {report['clean']:.2%})"]
    return "\n".join(lines)


def plot(report: dict, png: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(report["families"])
    cols = 4
    fig = Figure(figsize=(13, 3.0 * -(-len(names) // cols)), layout="constrained")
    axes = fig.subplots(-(-len(names) // cols), cols, sharey=True).ravel()
    lowest = min(r["accuracy"] for r in report["rows"])
    for ax, name in zip(axes, names, strict=False):
        rows = [r for r in report["rows"] if r["perturbation"] == name]
        xs = range(len(rows) + 1)
        ax.plot(xs, [100 * report["clean"]] + [100 * r["accuracy"] for r in rows], marker="o")
        ax.set_xticks(xs, ["clean"] + [f"{r['severity']:g}" for r in rows])
        ax.set(title=name, xlabel=rows[0]["unit"], ylim=(max(0, 100 * lowest - 5), 100.5))
        ax.grid(alpha=0.3)
    for ax in axes[len(names):]:
        ax.axis("off")
    axes[0].set_ylabel("accuracy %")
    fig.suptitle(f"{report['run']}: {report['n']} validation images, robustness score {report['score']:.2%} "
                 f"(clean {report['clean']:.2%})", fontsize=10)
    png.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(png, dpi=100)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="run folder or weights file")
    p.add_argument("--data", help="the folder the run trained on (default: the run's --data)")
    p.add_argument("--split-seed", type=int, help="default: the run's split seed")
    p.add_argument("--max-per-class", type=int, help="validation images a class, drawn at random (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seeds the draw and the random parts of perturbations")
    p.add_argument("--no-tta", action="store_true", help="no test-time augmentation, whatever the run says")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", type=Path)
    p.add_argument("--png", type=Path, help="default: RUN/robustness.png")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    device = pick_device(args.device)
    loaded = load_model(args.run, device)
    ds, source = validation_set(loaded, args.data, args.split_seed)
    ds = sample_per_class(align_labels(ds, loaded.class_names), args.max_per_class, args.seed)
    tta = loaded.config.tta and not args.no_tta
    frames = read_frames(ds, loaded.preprocessing.crop)
    sides = [roi_side(roi) for _, roi in frames]
    per_class = f", at most {args.max_per_class} a class" if args.max_per_class else ""
    print(f"{len(ds)} images{per_class} from {source}; ROI side median {np.median(sides):.0f} px "
          f"(quartiles {np.percentile(sides, 25):.0f}-{np.percentile(sides, 75):.0f}); tta {tta}", flush=True)
    start = time.perf_counter()
    rows = measure(loaded, ds, frames, device, tta, args.seed)
    families = family_means(rows)
    return {"command": "python bench/robustness.py " + " ".join(sys.argv[1:]),
            "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                     cwd=ROOT).stdout.strip(),
            "machine": f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores, "
                       f"torch {torch.__version__} on {device}",
            "run": str(loaded.path.parent), "source": source, "n": len(ds), "max_per_class": args.max_per_class,
            "tta": tta, "seed": args.seed, "roi_side_median": float(np.median(sides)),
            "clean": rows[0]["accuracy"], "score": float(np.mean(list(families.values()))),
            "families": families, "rows": rows, "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        report = run(args)
    except UserError as e:
        raise SystemExit(f"robustness.py: {e}") from None
    print(format_table(report))
    png = args.png or Path(report["run"]) / "robustness.png"
    plot(report, png)
    print(f"wrote {png}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
        print(f"wrote {args.json}")
    print(f"{report['seconds'] / 60:.1f} min measuring")


if __name__ == "__main__":
    main()
