"""Evaluate a trained model: accuracy, per-class accuracy, confusion, and a report folder."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from signlab.data import ImageSet, align_labels, data_folders, split_digest, split_indices
from signlab.errors import UserError
from signlab.predict import LoadedModel, load_model, predict_images
from signlab.report import summarize, track_errors, write_report
from signlab.runtime import pick_device


def evaluation_set(loaded: LoadedModel, data: str | None) -> tuple[ImageSet, str]:
    """The images to evaluate on: --data if given, else the run's own validation data, which must be the
    split that training validated on (RUN/split.json records it)."""
    cfg, pre = loaded.config, loaded.preprocessing
    if data is not None:
        return pre.load(data, cfg.max_bad_fraction), str(data)
    train_folder, val_folder = data_folders(cfg.data, cfg.val_data)
    if val_folder:
        val, source = pre.load(val_folder, cfg.max_bad_fraction), str(val_folder)
    else:
        full = pre.load(train_folder, cfg.max_bad_fraction)
        _, val_idx = split_indices(full, cfg.val_fraction, cfg.split_seed)  # the split train made
        if len(val_idx) == 0:
            raise UserError(f"{loaded.path}: the run has no validation split (--val-fraction 0); pass --data")
        val = full.subset(val_idx)
        source = f"validation split of {train_folder}"
    record = loaded.path.parent / "split.json"
    if record.is_file() and json.loads(record.read_text()).get("val_sha256") != split_digest(val):
        raise UserError(f"{record}: the validation images differ from those the run validated on (the dataset "
                        f"folder changed since training); pass --data to evaluate on it as it is now")
    return val, source


def evaluate(target: str | Path, data: str | None = None, report_dir: str | Path | None = None,
             device_name: str = "auto", tta: bool | None = None, batch_size: int = 512,
             backend: str = "torch") -> dict:
    """Evaluate the model at `target` (run folder or weights file); returns a JSON-able summary.
    tta None: test-time augmentation as the run's config says; seconds include it and contrast normalisation.
    backend onnx: onnxruntime on the exported model (RUN/model.onnx or a .onnx file), never with TTA."""
    if backend == "onnx":
        from signlab.onnx_backend import NO_TTA, load_onnx

        if tta:
            raise UserError(NO_TTA)
        loaded, tta = load_onnx(target, device_name, batch_size), False  # a run trained with TTA: without it
    else:
        device = pick_device(device_name)
        loaded = load_model(target, device)
        tta = loaded.config.tta if tta is None else tta
    ds, source = evaluation_set(loaded, data)
    ds = align_labels(ds, loaded.class_names)
    y_true = ds.labels
    start = time.perf_counter()
    logits = (torch.from_numpy(loaded.logits(ds.images)) if backend == "onnx"
              else predict_images(loaded, ds.images, device, batch_size, tta=tta))
    seconds = time.perf_counter() - start
    probs = torch.softmax(logits, dim=1).numpy()
    y_pred = probs.argmax(1)
    summary = summarize(y_true, y_pred, loaded.class_names)
    summary.update(source=source, weights=str(loaded.path), backend=backend, skipped=len(ds.skipped), tta=tta,
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
        written = write_report(Path(report_dir), y_true, y_pred, probs, ds.images, ds.paths, loaded.class_names,
                               tracks=ds.tracks)
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
