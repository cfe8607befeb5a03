"""The report's figures: confusion matrix, misclassified gallery, worst physical signs.

Drawn on a bare Agg canvas instead of pyplot: no global backend switch, no figures left open. Where the
classes are GTSRB's, each figure shows signlab's own drawing of the classes (signlab.synth), so a reader sees
which signs are confused without looking ids up, and no dataset image is needed to say what a class is.
"""

from __future__ import annotations

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


def plot_confusion(cm: np.ndarray, accuracy: float, path: Path, icons: list[np.ndarray] | None = None) -> Path:
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


def plot_gallery(
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
        tile = images[i] if icons is None else with_icons(images[i], icons[t], icons[p])
        ax.imshow(tile, interpolation="nearest")  # crops are tiny; smoothing would blur them further
        ax.set_title(
            f"T {t}: {_shorten(class_names[t])}\nP {p}: {_shorten(class_names[p])}\np = {conf[i]:.2f}",
            fontsize=7, loc="left",
        )
        ax.set_xticks([])
        ax.set_yticks([])
    return _save(fig, path)


def with_icons(image: np.ndarray, true_icon: np.ndarray, predicted_icon: np.ndarray) -> np.ndarray:
    """The crop on top, the two classes' drawings side by side below it, at the crop's width."""
    w = image.shape[1]
    half = w // 2
    pair = [np.asarray(Image.fromarray(icon).resize((half, half), Image.Resampling.LANCZOS))
            for icon in (true_icon, predicted_icon)]
    row = np.full((half, w, 3), 255, np.uint8)
    row[:, :half], row[:, w - half:] = pair
    return np.concatenate([image, row], axis=0)


def _framed(image: np.ndarray, side: int, colour: tuple[int, int, int] | None = None) -> np.ndarray:
    """The image resized to side x side inside a 2 px frame in `colour` (None: none), 2 px of white around."""
    framed = np.full((side + 8, side + 8, 3), 255, np.uint8)
    if colour is not None:
        framed[2:-2, 2:-2] = colour
    framed[4:-4, 4:-4] = np.asarray(Image.fromarray(image).resize((side, side), Image.Resampling.NEAREST))
    return framed


def _spread(items: np.ndarray, k: int) -> np.ndarray:
    return items[np.linspace(0, len(items) - 1, k).round().astype(int)] if k > 0 else items[:0]


def pick_shots(members: np.ndarray, wrong: np.ndarray, shots: int) -> np.ndarray:
    """Up to `shots` of a sign's images, in order: every misclassified one (evenly spread if there are more),
    then correct ones spread over the track to fill the row."""
    bad, good = members[wrong], members[~wrong]
    chosen = _spread(bad, min(shots, len(bad)))
    return np.sort(np.concatenate([chosen, _spread(good, min(shots - len(chosen), len(good)))]))


def plot_worst_signs(
    images: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, tracks: np.ndarray, class_names: Sequence[str],
    icons: list[np.ndarray] | None, path: Path, signs: int = 8, shots: int = 10,
) -> Path | None:
    """One row per physical sign (track) with the most errors: its class's drawing, up to `shots` of its
    images evenly spread (errors framed red), and the drawing of the class it was most often taken for.
    None (no file) without track ids or without errors."""
    if len(tracks) == 0 or (tracks < 0).any():
        return None
    keys, inverse = np.unique(tracks, return_inverse=True)
    wrong = np.bincount(inverse, weights=(y_true != y_pred), minlength=len(keys)).astype(int)
    worst = [t for t in np.argsort(-wrong, kind="stable")[:signs] if wrong[t] > 0]
    if not worst:
        return None
    side = 48
    fig = Figure(figsize=(1.0 + 0.62 * (shots + 2), 1.05 * len(worst) + 0.5), layout="constrained")
    fig.suptitle(f"The {len(worst)} physical signs with the most errors (red frame: misclassified)", fontsize=11)
    for row, t in enumerate(worst):
        members = np.flatnonzero(inverse == t)
        true = int(y_true[members[0]])
        picked = pick_shots(members, y_pred[members] != true, shots)
        errors = y_pred[members][y_pred[members] != true]
        taken_for = int(np.bincount(errors).argmax())
        tiles = [_framed(images[i], side, (220, 30, 30) if y_pred[i] != true else None) for i in picked]
        if icons is not None:
            tiles = [_framed(icons[true], side), *tiles, _framed(icons[taken_for], side)]
        ax = fig.add_subplot(len(worst), 1, row + 1)
        ax.imshow(np.concatenate(tiles, axis=1), interpolation="nearest")
        ax.set_title(f"{wrong[t]}/{len(members)} wrong: {_shorten(class_names[true], 40)} -> mostly "
                     f"{_shorten(class_names[taken_for], 40)} ({int((errors == taken_for).sum())})",
                     fontsize=8, loc="left")
        ax.set_axis_off()
    return _save(fig, path)
