"""Evaluation report of a classifier: confusion matrix, per-class accuracy, worst confusions, error gallery.

NumPy, Pillow and matplotlib only (no torch), so a report can be rebuilt from saved predictions on any machine.
Figures are drawn on a bare Agg canvas instead of pyplot: no global backend switch, no figures left open.
Where the classes are GTSRB's, the figures show signlab's own drawing of each class (signlab.synth) beside
its id, so a reader sees which signs are confused without looking the numbers up.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter
from PIL import Image

_DPI = 110
_GALLERY_COLS = 8
_TILE_W, _TILE_H = 2.1, 2.2  # inches per gallery tile: an image plus a three-line caption
_CAPTION_CHARS = 26  # what fits on one 7 pt line of a 2.1 in tile
_PAIR_HEADER = ("true", "true_name", "predicted", "predicted_name", "count")
# Shorter wordings of long GTSRB names, tried before cutting; other names pass through unchanged.
_ABBREVIATIONS = (
    ("Vehicles over 3.5 metric tons", ">3.5t vehicles"),
    ("vehicles over 3.5 metric tons", ">3.5t"),
    ("Right-of-way at the next intersection", "Right-of-way at junction"),
    ("End of all speed and passing limits", "End of all limits"),
    ("End of speed limit", "End of limit"),
    (" to the ", " "),
    (" on the ", " "),
)


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


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)  # attaches an Agg canvas to the figure; pyplot is never involved
    fig.savefig(path, dpi=_DPI, facecolor="white")
    return path


def class_pictograms(class_names: Sequence[str], side: int = 48) -> list[np.ndarray] | None:
    """signlab's drawing of each class as (side, side, 3) uint8 on white, where every class is a GTSRB class
    (matched by name, so any order or subset works); None for other datasets."""
    from signlab.classes import GTSRB_CLASS_NAMES

    index = {name: i for i, name in enumerate(GTSRB_CLASS_NAMES)}
    if not class_names or any(name not in index for name in class_names):
        return None
    from signlab.synth.pictograms import draw_sign  # drawn only for a GTSRB report

    icons = []
    for name in class_names:
        canvas = Image.new("RGBA", (side, side), (255, 255, 255, 255))
        canvas.alpha_composite(draw_sign(index[name], side))
        icons.append(np.asarray(canvas.convert("RGB")))
    return icons


def _icon_strip(icons: list[np.ndarray], vertical: bool) -> np.ndarray:
    """The icons in a row (or column), a white pixel between neighbours so they do not touch."""
    padded = [np.pad(i, ((1, 1), (1, 1), (0, 0)), constant_values=255) for i in icons]
    return np.concatenate(padded, axis=0 if vertical else 1)


def _confusion_axes(fig: Figure, c: int, icons: list[np.ndarray] | None):
    """The matrix's axes and the colour bar's; with icons, a strip of pictograms above the matrix's columns
    and left of its rows, sharing its coordinates so each drawing sits on its class's column and row."""
    if icons is None:
        return fig.add_subplot(), None
    grid = fig.add_gridspec(2, 3, width_ratios=(1, c, 0.6), height_ratios=(1, c), wspace=0, hspace=0)
    ax = fig.add_subplot(grid[1, 1])
    top = fig.add_subplot(grid[0, 1], sharex=ax)
    left = fig.add_subplot(grid[1, 0], sharey=ax)
    top.imshow(_icon_strip(icons, vertical=False), extent=(-0.5, c - 0.5, 0, 1), aspect="auto")
    left.imshow(_icon_strip(icons, vertical=True), extent=(0, 1, c - 0.5, -0.5), aspect="auto")
    for strip in (top, left):
        strip.set_axis_off()
    return ax, fig.add_subplot(grid[1, 2])


def _plot_confusion(cm: np.ndarray, accuracy: float, path: Path, icons: list[np.ndarray] | None = None) -> Path:
    """Counts on a log colour scale: a linear one hides every error under the bright diagonal."""
    c = cm.shape[0]
    side = min(max(4.0, 0.22 * c + 2.0), 16.0)
    fig = Figure(figsize=(side + 1.2, side) if icons else (side + 0.8, side), layout="constrained")
    ax, bar_ax = _confusion_axes(fig, c, icons)
    masked = np.ma.masked_equal(cm, 0)  # empty cells stay white, so real (even single) errors stand out
    # aspect "auto" with icons: the matrix fills its grid cell, which the icon strips share exactly
    image = ax.imshow(masked, cmap="viridis", norm=LogNorm(vmin=1, vmax=max(2, int(cm.max()))),
                      interpolation="nearest", aspect="auto" if icons else "equal")
    ticks = np.arange(c)
    fontsize = 7 if c > 20 else 9
    ax.set_xticks(ticks, [str(i) for i in ticks], fontsize=fontsize, rotation=90)
    ax.set_yticks(ticks, [str(i) for i in ticks], fontsize=fontsize)
    ax.set_xticks(ticks - 0.5, minor=True)
    ax.set_yticks(ticks - 0.5, minor=True)
    ax.grid(which="minor", color="0.88", linewidth=0.4)  # faint cell borders help follow a row by eye
    ax.tick_params(which="minor", length=0)
    ax.set_xlabel("predicted class id")
    ax.set_ylabel("true class id")
    fig.suptitle(f"Confusion matrix: accuracy {accuracy:.2%} (n={int(cm.sum())})", fontsize=12)
    bar = (fig.colorbar(image, cax=bar_ax, label="samples (log scale; white = 0)") if bar_ax is not None
           else fig.colorbar(image, ax=ax, shrink=0.8, label="samples (log scale; white = 0)"))
    for axis_formatter in (bar.ax.yaxis.set_major_formatter, bar.ax.yaxis.set_minor_formatter):
        axis_formatter(LogFormatter())  # plain counts ("2", "50"), not "2×10⁰"
    return _save(fig, path)


def _shorten(text: str, width: int = _CAPTION_CHARS) -> str:
    for long, short in _ABBREVIATIONS:
        text = text.replace(long, short)
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def _plot_gallery(
    wrong: np.ndarray, images: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray,
    conf: np.ndarray, class_names: Sequence[str], total_wrong: int, path: Path,
    icons: list[np.ndarray] | None = None,
) -> Path:
    """Grid of misclassified crops; each caption gives true and predicted class and the predicted prob. With
    icons, each crop has the drawings of its true (left) and predicted (right) class below it."""
    if wrong.size == 0:  # no errors, or max_gallery=0: say which, so an empty image is never ambiguous
        text = "no misclassified images" if total_wrong == 0 else f"{total_wrong} misclassified (gallery off)"
        fig = Figure(figsize=(5, 1.5))
        fig.text(0.5, 0.5, text, ha="center", va="center", fontsize=14)
        return _save(fig, path)
    cols = min(_GALLERY_COLS, wrong.size)
    rows = math.ceil(wrong.size / cols)
    fig = Figure(figsize=(_TILE_W * cols, _TILE_H * rows + 0.5), layout="constrained")
    shown = f"the {wrong.size} most confident" if wrong.size < total_wrong else f"all {wrong.size}"
    fig.suptitle(f"Misclassified images: {shown} of {total_wrong} errors", fontsize=12)
    for slot, i in enumerate(wrong):
        ax = fig.add_subplot(rows, cols, slot + 1)
        t, p = int(y_true[i]), int(y_pred[i])
        tile = images[i] if icons is None else _with_icons(images[i], icons[t], icons[p])
        ax.imshow(tile, interpolation="nearest")  # crops are tiny; smoothing would blur them further
        ax.set_title(
            f"T {t}: {_shorten(class_names[t])}\nP {p}: {_shorten(class_names[p])}\np = {conf[i]:.2f}",
            fontsize=7, loc="left",
        )
        ax.set_xticks([])
        ax.set_yticks([])
    return _save(fig, path)


def _with_icons(image: np.ndarray, true_icon: np.ndarray, predicted_icon: np.ndarray) -> np.ndarray:
    """The crop on top, the two classes' drawings side by side below it, at the crop's width."""
    w = image.shape[1]
    half = w // 2
    pair = [np.asarray(Image.fromarray(icon).resize((half, half), Image.Resampling.LANCZOS))
            for icon in (true_icon, predicted_icon)]
    row = np.full((half, w, 3), 255, np.uint8)
    row[:, :half], row[:, w - half:] = pair
    return np.concatenate([image, row], axis=0)


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
        _plot_gallery(wrong[: max(max_gallery, 0)], images, yt, yp, conf, class_names, wrong.size,
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
) -> dict:
    """Write the report files into out_dir; return the summary plus "files", the paths written (as str)."""
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
    files.append(_plot_confusion(cm, summary["accuracy"], out / "confusion.png", icons))
    files += _write_errors(out, yt, yp, probs, images, paths, class_names, max_gallery, icons)
    return {**summary, "files": [str(f) for f in files]}
