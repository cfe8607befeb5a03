"""Evaluation report of a classifier: confusion matrix, per-class accuracy, worst confusions, the physical
signs that hold the errors, and a report folder of CSVs and figures (drawn by signlab.report_plots).

NumPy, Pillow and matplotlib only (no torch), so a report can be rebuilt from saved predictions on any machine.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from signlab.report_plots import class_pictograms, plot_confusion, plot_gallery, plot_worst_signs

_PAIR_HEADER = ("true", "true_name", "predicted", "predicted_name", "count")

def _labels(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the labels as 1-D int64 arrays, or raise ValueError saying what is wrong with them."""
    yt, yp = np.asarray(y_true), np.asarray(y_pred)
    if yt.ndim != 1 or yp.ndim != 1 or yt.shape != yp.shape:
        raise ValueError(f"y_true and y_pred must be 1-D of equal length, got {yt.shape} and {yp.shape}")
    if yt.size == 0:
        raise ValueError("no samples: y_true and y_pred are empty, there is nothing to report")
    for name, y in (("y_true", yt), ("y_pred", yp)):
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"{name} must hold integer class ids, got dtype {y.dtype}")
        if y.min() < 0 or y.max() >= num_classes:
            raise ValueError(f"{name} has class ids outside 0..{num_classes - 1}: {y.min()}..{y.max()}")
    return yt.astype(np.int64), yp.astype(np.int64)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts; row = true class, column = predicted class."""
    yt, yp = _labels(y_true, y_pred, num_classes)
    flat = np.bincount(yt * num_classes + yp, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """(C,) recall of each true class; NaN where the class has no samples (0/0 is not 0 % or 100 %)."""
    n = cm.sum(axis=1)
    acc = np.full(cm.shape[0], np.nan)
    np.divide(np.diag(cm), n, out=acc, where=n > 0)
    return acc


def most_confused_pairs(cm: np.ndarray, k: int = 10) -> list[tuple[int, int, int]]:
    """The k largest off-diagonal cells as (true, predicted, count), count > 0, ties by (true, predicted)."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    t, p = np.nonzero(off > 0)
    counts = off[t, p]
    order = np.lexsort((p, t, -counts))[: max(k, 0)]  # lexsort: the last key is the primary one
    return [(int(t[i]), int(p[i]), int(counts[i])) for i in order]


def summarize(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str], k: int = 10
) -> dict:
    """JSON-able summary; a class without samples has accuracy None (JSON null), not NaN."""
    cm = confusion_matrix(y_true, y_pred, len(class_names))
    acc, n = per_class_accuracy(cm), cm.sum(axis=1)
    correct = int(np.trace(cm))
    per_class = {
        str(c): {"name": class_names[c], "n": int(n[c]), "accuracy": None if n[c] == 0 else float(acc[c])}
        for c in range(len(class_names))
    }
    confused = [
        {"true": t, "true_name": class_names[t], "predicted": p, "predicted_name": class_names[p], "count": c}
        for t, p, c in most_confused_pairs(cm, k)
    ]
    total = int(cm.sum())
    return {"accuracy": correct / total, "n": total, "correct": correct,
            "per_class": per_class, "most_confused": confused}


def track_errors(y_true: np.ndarray, y_pred: np.ndarray, tracks: np.ndarray, paths: Sequence[str],
                 k: int = 5) -> dict | None:
    """How the errors spread over physical signs (GTSRB tracks of ~30 shots): a split's accuracy that hangs
    on two or three signs says more about those signs than about the model. None without track ids."""
    if len(tracks) == 0 or (tracks < 0).any():
        return None
    keys, first, inverse = np.unique(tracks, return_index=True, return_inverse=True)  # first: one shot each
    n = np.bincount(inverse, minlength=len(keys))
    wrong = np.bincount(inverse, weights=(y_true != y_pred), minlength=len(keys)).astype(int)
    worst = [i for i in np.argsort(-wrong, kind="stable")[:k] if wrong[i] > 0]

    def name(i: int) -> str:  # GTSRB's class folder and track number: 00038/00051
        shot = Path(paths[first[i]])
        return f"{shot.parent.name}/{shot.name.split('_')[0]}"

    return {"n": len(keys), "with_errors": int((wrong > 0).sum()),
            "worst": [{"track": name(i), "class": int(y_true[first[i]]), "errors": int(wrong[i]), "n": int(n[i])}
                      for i in worst]}


def _write_csv(path: Path, header: Sequence[str], rows: list[Sequence[object]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _check_arrays(n: int, c: int, probs: np.ndarray, images: np.ndarray, paths: Sequence[object]) -> None:
    if probs.shape != (n, c):
        raise ValueError(f"probs must have shape (N, C) = ({n}, {c}), got {probs.shape}")
    if images.ndim != 4 or images.shape[0] != n or images.shape[3] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 of shape ({n}, H, W, 3), got {images.dtype} {images.shape}")
    if len(paths) != n:
        raise ValueError(f"paths must have one entry per sample ({n}), got {len(paths)}")


def _write_tables(out: Path, cm: np.ndarray, class_names: Sequence[str]) -> list[Path]:
    """per_class.csv, confusion.csv and most_confused.csv (every non-zero off-diagonal cell, not just k)."""
    c, acc, n = cm.shape[0], per_class_accuracy(cm), cm.sum(axis=1)
    per_class = [
        [k, class_names[k], int(n[k]), int(cm[k, k]), "" if n[k] == 0 else f"{acc[k]:.6f}"] for k in range(c)
    ]
    pairs = [[t, class_names[t], p, class_names[p], k] for t, p, k in most_confused_pairs(cm, k=c * c)]
    confusion = [[k, *cm[k].tolist()] for k in range(c)]
    return [
        _write_csv(out / "per_class.csv", ["class_id", "name", "n", "correct", "accuracy"], per_class),
        _write_csv(out / "confusion.csv", ["true/predicted", *range(c)], confusion),
        _write_csv(out / "most_confused.csv", _PAIR_HEADER, pairs),
    ]


def _write_errors(
    out: Path, yt: np.ndarray, yp: np.ndarray, probs: np.ndarray, images: np.ndarray,
    paths: Sequence[str | Path], class_names: Sequence[str], max_gallery: int, icons: list[np.ndarray] | None,
) -> list[Path]:
    """misclassified.csv (every error, with its file) and the misclassified.png gallery."""
    conf = probs[np.arange(yt.size), yp]
    wrong = np.flatnonzero(yt != yp)
    # Most confident errors first: they show systematic confusions rather than borderline guesses.
    wrong = wrong[np.argsort(-conf[wrong], kind="stable")]
    rows = [
        [int(i), str(paths[i]), int(yt[i]), class_names[yt[i]], int(yp[i]), class_names[yp[i]],
         f"{conf[i]:.6f}", f"{probs[i, yt[i]]:.6f}"]
        for i in wrong
    ]
    header = ["index", "path", *_PAIR_HEADER[:4], "prob_predicted", "prob_true"]
    return [
        _write_csv(out / "misclassified.csv", header, rows),
        plot_gallery(wrong[: max(max_gallery, 0)], images, yt, yp, conf, class_names, wrong.size,
                      out / "misclassified.png", icons),
    ]


def write_report(
    out_dir: Path,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    probs: np.ndarray,
    images: np.ndarray,
    paths: Sequence[str | Path],
    class_names: Sequence[str],
    max_gallery: int = 64,
    tracks: np.ndarray | None = None,
) -> dict:
    """Write the report files into out_dir; return the summary plus "files", the paths written (as str).
    tracks: each image's physical sign (GTSRB track key, -1 unknown); with them, worst_signs.png."""
    c = len(class_names)
    yt, yp = _labels(y_true, y_pred, c)
    probs, images = np.asarray(probs), np.asarray(images)
    _check_arrays(yt.size, c, probs, images, paths)  # before mkdir: bad input leaves nothing behind
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    summary = summarize(yt, yp, class_names)
    cm = confusion_matrix(yt, yp, c)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", "utf-8")
    files = [out / "summary.json", *_write_tables(out, cm, class_names)]
    icons = class_pictograms(class_names)
    files.append(plot_confusion(cm, summary["accuracy"], out / "confusion.png", icons))
    files += _write_errors(out, yt, yp, probs, images, paths, class_names, max_gallery, icons)
    if tracks is not None:
        worst = plot_worst_signs(images, yt, yp, np.asarray(tracks), class_names, icons, out / "worst_signs.png")
        files += [worst] if worst is not None else []
    return {**summary, "files": [str(f) for f in files]}
