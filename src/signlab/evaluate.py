"""Evaluate a trained model: accuracy, per-class accuracy, confusion, and a report folder."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from signlab.data import ImageSet, load_images, split_indices
from signlab.errors import UserError
from signlab.predict import LoadedModel, load_model, pick_device, predict_images
from signlab.report import summarize, track_errors, write_report


def evaluation_set(loaded: LoadedModel, data: str | None) -> tuple[ImageSet, str]:
    """The images to evaluate on: --data if given, else the run's own validation data."""
    cfg = loaded.config
    load = dict(size=cfg.image_size, crop=cfg.crop, max_pixels=cfg.max_image_pixels,
                max_bad_fraction=cfg.max_bad_fraction)
    if data is not None:
        return load_images(data, **load), str(data)
    if cfg.val_data:
        return load_images(cfg.val_data, **load), str(cfg.val_data)
    full = load_images(cfg.data, **load)
    _, val_idx = split_indices(full, cfg.val_fraction, cfg.seed)  # the same split train made
    if len(val_idx) == 0:
        raise UserError(f"{loaded.path}: the run has no validation split (--val-fraction 0); pass --data")
    val = full.subset(val_idx)
    val.skipped = full.skipped
    return val, f"validation split of {cfg.data or 'the shipped sample'}"


def align_labels(ds: ImageSet, model_names: list[str]) -> np.ndarray:
    """The dataset's labels as the model's class ids, matching classes by name when the lists differ."""
    if list(ds.class_names) == list(model_names):
        return ds.labels
    index = {name: i for i, name in enumerate(model_names)}
    missing = sorted({ds.class_names[c] for c in np.unique(ds.labels)} - set(index))
    if missing:
        raise UserError(f"{ds.root}: classes {', '.join(missing[:5])} are unknown to the model; "
                        f"evaluate on data with the model's classes")
    return np.array([index[ds.class_names[c]] for c in ds.labels], dtype=np.int64)


def evaluate(target: str | Path, data: str | None = None, report_dir: str | Path | None = None,
             device_name: str = "auto", tta: bool | None = None) -> dict:
    """Evaluate the model at `target` (run folder or weights file); returns a JSON-able summary.
    tta None: test-time augmentation as the run's config says; seconds include it and contrast normalisation."""
    device = pick_device(device_name)
    loaded = load_model(target, device)
    ds, source = evaluation_set(loaded, data)
    y_true = align_labels(ds, loaded.class_names)
    tta = loaded.config.tta if tta is None else tta
    start = time.perf_counter()
    logits = predict_images(loaded, ds.images, device, tta=tta)
    seconds = time.perf_counter() - start
    probs = torch.softmax(logits, dim=1).numpy()
    y_pred = probs.argmax(1)
    summary = summarize(y_true, y_pred, loaded.class_names)
    summary.update(source=source, weights=str(loaded.path), skipped=len(ds.skipped), tta=tta,
                   seconds=seconds, images_per_second=len(ds) / max(seconds, 1e-9),
                   tracks=track_errors(y_true, y_pred, ds.tracks, ds.paths))
    run_dir = loaded.path.parent
    if ds.skipped:
        listing = "".join(f"{p}\t{r}\n" for p, r in ds.skipped)
        for folder in (run_dir, Path(report_dir) if report_dir else None):
            if folder is not None:
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                    (folder / "skipped-evaluate.txt").write_text(listing)
                except OSError:
                    pass  # a read-only run folder: the count is still reported
    if report_dir is not None:
        written = write_report(Path(report_dir), y_true, y_pred, probs, ds.images, ds.paths, loaded.class_names)
        summary["report"] = written.get("files", [])
    return summary


def format_summary(summary: dict, worst: int = 5) -> str:
    tta = " with test-time augmentation" if summary.get("tta") else ""
    lines = [f"accuracy {summary['accuracy']:.4f} ({summary['correct']}/{summary['n']}) on {summary['source']}",
             f"  {summary['images_per_second']:.0f} images/s{tta}; weights {summary['weights']}"]
    if summary.get("skipped"):
        lines.append(f"  skipped {summary['skipped']} unusable image(s)")
    per_class = [(v["accuracy"], k, v) for k, v in summary["per_class"].items() if v["accuracy"] is not None]
    if per_class:
        lines.append("  weakest classes:")
        for acc, cid, v in sorted(per_class, key=lambda t: t[0])[:worst]:
            lines.append(f"    {int(cid):>2} {v['name']:<50} {acc:.3f} (n={v['n']})")
    if summary["most_confused"]:
        lines.append("  most confused (true -> predicted: count):")
        for p in summary["most_confused"]:
            lines.append(f"    {p['true']:>2} {p['true_name']} -> {p['predicted']:>2} {p['predicted_name']}: "
                         f"{p['count']}")
    tracks = summary.get("tracks")
    if tracks and tracks["with_errors"]:
        worst = ", ".join(f"{t['track']} ({t['errors']}/{t['n']})" for t in tracks["worst"])
        lines.append(f"  errors lie in {tracks['with_errors']} of {tracks['n']} physical signs (tracks); "
                     f"most in {worst}")
    if summary.get("report"):
        lines.append(f"  report written to {Path(summary['report'][0]).parent}")
    return "\n".join(lines)
