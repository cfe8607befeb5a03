"""Evidence for how to read GTSRB's Roi.X2/Roi.Y2: inclusive pixel indices (box ends one pixel further) or not.

    python bench/roi_convention.py --data ../shared/datasets/GTSRB-original/Final_Training

Prints three measurements (docs/roi.md records them and the decision):

1. margins, over every CSV row: left = X1, top = Y1, right = Width-1-X2 (inclusive) or Width-X2
   (exclusive), bottom likewise; the official text promises a border of 10 % of the sign, at least 5 px.
2. the pixels at the box's edges: the mean redness profile of red-rimmed round signs (classes 0-5, 7-10, 15,
   16), each image normalised by its peak, at the columns/rows around X1, X2 (Y1, Y2). Whichever reading is
   right, the sign's first pixel is X1; its last is X2 (inclusive) or X2-1 (exclusive).
3. the symmetry axis of left-right symmetric signs (classes 11-13, 15, 17, 18, 22, 26, 35; up-down for 12,
   15, 17): the mirror line that best matches each image to its mirror image, as an offset from the
   exclusive box centre (X1+X2)/2; the inclusive box centre is (X1+X2+1)/2, +0.5. And which of the two
   crops, [X1, X2] or [X1, X2), is nearer its own mirror image.

Measurements 2 and 3 use the images stored at their CSV size (a downscaled copy resamples the pixel grid).
NumPy and Pillow only; about 10 s on one core.
"""

from __future__ import annotations

import argparse
import csv
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

RED_ROUND = {0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 15, 16}
LEFT_RIGHT = {11, 12, 13, 15, 17, 18, 22, 26, 35}
UP_DOWN = {12, 15, 17}
OFFSETS = np.arange(-2, 3)


def read_rows(root: Path) -> list[tuple[Path, int, int, int, int, int, int, int]]:
    rows = []
    for csv_path in sorted(root.glob("Images/*/GT-*.csv")) or sorted(root.glob("*/GT-*.csv")):
        with open(csv_path, newline="") as f:
            lines = list(csv.reader(f, delimiter=";"))
        rows += [(csv_path.parent / r[0], *map(int, r[1:8])) for r in lines[1:] if r]
    if not rows:
        raise SystemExit(f"{root}: no GT-*.csv files; pass --data with GTSRB's Final_Training folder")
    return rows


def margins(rows) -> None:
    a = np.array([r[1:] for r in rows])
    w, h, x1, y1, x2, y2, _ = a.T
    print(f"1. margins over {len(a)} rows (px)")
    print(f"   {'margin':<22}{'min':>5}{'median':>8}{'mean':>8}{'< 5 px':>8}  most common")
    for name, m in (("left   X1", x1), ("top    Y1", y1), ("right  W-1-X2 (incl)", w - 1 - x2),
                    ("right  W-X2   (excl)", w - x2), ("bottom H-1-Y2 (incl)", h - 1 - y2),
                    ("bottom H-Y2   (excl)", h - y2)):
        common = ", ".join(f"{v}: {n}" for v, n in Counter(m.tolist()).most_common(2))
        print(f"   {name:<22}{m.min():>5}{np.median(m):>8.0f}{m.mean():>8.2f}{(m < 5).sum():>8}  {common}")
    for name, d in (("left - right (incl)", x1 - (w - 1 - x2)), ("left - right (excl)", x1 - (w - x2)),
                    ("top - bottom (incl)", y1 - (h - 1 - y2)), ("top - bottom (excl)", y1 - (h - y2))):
        common = ", ".join(f"{v:+d}: {n}" for v, n in Counter(d.tolist()).most_common(3))
        print(f"   {name:<22} mean {d.mean():+.2f}  most common {common}")


def redness(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] - (rgb[..., 1] + rgb[..., 2]) / 2


def edge_profiles(rows) -> None:
    sums = {k: np.zeros(len(OFFSETS)) for k in ("X1", "X2", "Y1", "Y2")}
    n = 0
    for path, w, h, x1, y1, x2, y2, label in rows:
        if label not in RED_ROUND or x1 < 2 or y1 < 2 or x2 + 2 >= w or y2 + 2 >= h:
            continue
        with Image.open(path) as im:
            if im.size != (w, h):
                continue
            r = redness(np.asarray(im.convert("RGB"), np.float32))
        cy, cx = (y1 + y2) // 2, (x1 + x2) // 2
        row, col = r[cy - 1:cy + 2].mean(0), r[:, cx - 1:cx + 2].mean(1)  # 3 central rows / columns
        peak = max(row[x1:x2 + 1].max(), col[y1:y2 + 1].max(), 1.0)
        for key, prof, at in (("X1", row, x1), ("X2", row, x2), ("Y1", col, y1), ("Y2", col, y2)):
            sums[key] += prof[at + OFFSETS] / peak
        n += 1
    print(f"2. mean redness at the box's edges, red round signs, {n} images (1 = the sign's peak)")
    print("   " + " ".join(f"{'X1' if k == 0 else f'X1{k:+d}':>6}" for k in OFFSETS) + "   |"
          + " ".join(f"{'X2' if k == 0 else f'X2{k:+d}':>6}" for k in OFFSETS))
    for a, b in (("X1", "X2"), ("Y1", "Y2")):
        print("   " + " ".join(f"{v:6.2f}" for v in sums[a] / n) + "   |" + " ".join(f"{v:6.2f}" for v in sums[b] / n)
              + f"   ({'columns' if a == 'X1' else 'rows'})")


def mirror_axis(a: np.ndarray, lo: int, hi: int) -> float | None:
    """The mirror line (in pixel-edge coordinates: pixel i spans [i, i+1)) of the columns of `a` around the
    box [lo, hi], searched within ±3 px of (lo+hi)/2 in half-pixel steps, refined by a parabola."""
    n = a.shape[1]
    half = (hi - lo) / 2 + 1
    cands = (lo + hi) / 2 + np.arange(-6, 7) / 2
    errs = []
    for c in cands:
        i = np.arange(n)
        j = (2 * c - 1 - i).astype(int)  # mirror of pixel i: its centre i+0.5 reflected about c
        keep = (np.abs(i + 0.5 - c) <= half) & (j >= 0) & (j < n)
        if keep.sum() < 2 * half - 2:
            return None  # the window leaves the image
        errs.append(((a[:, i[keep]] - a[:, j[keep]]) ** 2).mean())
    k = int(np.argmin(errs))
    if k in (0, len(errs) - 1):
        return None  # no minimum inside the search range
    e0, e1, e2 = errs[k - 1:k + 2]
    return float(cands[k] + 0.25 * (e0 - e2) / (e0 - 2 * e1 + e2 + 1e-12))


def symmetry_axes(rows) -> None:
    found = {"x": [], "y": [], "crop": [], "width": []}
    for path, w, h, x1, y1, x2, y2, label in rows:
        if label not in LEFT_RIGHT:
            continue
        with Image.open(path) as im:
            if im.size != (w, h):
                continue
            grey = np.asarray(im.convert("L"), np.float32)
        c = mirror_axis(grey[y1 + 2:y2 - 1], x1, x2)
        if c is not None:
            found["x"].append(c - (x1 + x2) / 2)
            found["width"].append(x2 - x1)
            inclusive, exclusive = grey[y1:y2 + 1, x1:x2 + 1], grey[y1:y2, x1:x2]
            found["crop"].append(((inclusive - inclusive[:, ::-1]) ** 2).mean()
                                 < ((exclusive - exclusive[:, ::-1]) ** 2).mean())
        if label in UP_DOWN:
            c = mirror_axis(grey[:, x1 + 2:x2 - 1].T, y1, y2)
            if c is not None:
                found["y"].append(c - (y1 + y2) / 2)
    print("3. symmetry axis of symmetric signs, offset from the exclusive centre (inclusive centre: +0.50)")
    for axis, name in (("x", "left-right"), ("y", "up-down")):
        d = np.array(found[axis])
        near = np.abs(d - 0.5) < np.abs(d)
        print(f"   {name:<10} {len(d):>5} images: median {np.median(d):+.2f}, mean {d.mean():+.2f} px; "
              f"nearer the inclusive centre in {near.mean():.0%}")
    d, width = np.array(found["x"]), np.array(found["width"])
    bins = [(lo, hi) for lo, hi in ((0, 25), (25, 35), (35, 50), (50, 80), (80, 300))
            if ((width >= lo) & (width < hi)).any()]
    print("   left-right median by box width: " + ", ".join(
        f"{lo}-{hi - 1} px {np.median(d[(width >= lo) & (width < hi)]):+.2f}" for lo, hi in bins))
    print(f"   the inclusive crop is the more left-right symmetric one in {np.mean(found['crop']):.0%} of "
          f"{len(found['crop'])} images")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/datasets/GTSRB-original/Final_Training")
    args = parser.parse_args()
    rows = read_rows(Path(args.data))
    margins(rows)
    edge_profiles(rows)
    symmetry_axes(rows)


if __name__ == "__main__":
    main()
