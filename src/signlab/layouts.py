"""Dataset layouts: find which one a folder holds and list its images, with labels, tracks and ROIs.

NumPy-free and torch-free: the lab and the decoder (signlab.data) build on it.

- ``gtsrb-train``: ``Images/000NN/GT-000NN.csv`` (the folder holding ``Images``, ``Images`` itself,
  or one class folder). ROI crop, scaled when the stored image size differs from the CSV's size.
- ``gtsrb-test``: ``Images/*.ppm`` with ``GT-final_test.csv`` inside ``Images`` or beside it.
- ``folders``: one sub-folder per class holding png/jpg/ppm/bmp files.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, replace
from pathlib import Path

from signlab.classes import GTSRB_CLASS_NAMES
from signlab.errors import UserError

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".pnm", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
GTSRB_COLUMNS = ("Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId")
TRACK_NAME = re.compile(r"^(\d+)_(\d+)\.[A-Za-z]+$")  # TTTTT_FFFFF.ppm: track, frame


@dataclass
class Entry:
    """One image to decode: where it is, its label, and the ROI box in stored-pixel units if any."""

    path: str
    label: int
    track: int = -1
    roi: tuple[float, float, float, float] | None = None  # (x1, y1, x2, y2) in the CSV's pixel grid
    csv_size: tuple[int, int] | None = None  # (width, height) the CSV's ROI refers to


def detect_layout(root: Path) -> tuple[str, Path]:
    """Return (layout, base folder) for a dataset folder, or raise UserError saying what was expected."""
    if not root.exists():
        raise UserError(f"{root}: no such folder; pass --data with a GTSRB or class-per-folder dataset")
    if not root.is_dir():
        raise UserError(f"{root}: not a folder; pass --data with a dataset folder")
    for images in (root / "Images", root):
        if images.is_dir() and any(images.glob("*/GT-[0-9]*.csv")):
            return "gtsrb-train", images
        if images.is_dir() and any(images.glob("GT-[0-9]*.csv")) and TRACK_NAME.match(_first_image_name(images)):
            return "gtsrb-train", images  # one class folder of the training layout
    for images in (root / "Images", root):
        for csv_path in (images / "GT-final_test.csv", images.parent / "GT-final_test.csv"):
            if images.is_dir() and csv_path.is_file():
                return "gtsrb-test", images
    if any(p.is_dir() and any(image_files(p)) for p in root.iterdir()):
        return "folders", root
    raise UserError(f"{root}: no images found; expected GTSRB's Images/000NN/GT-000NN.csv, "
                    f"Images/ with GT-final_test.csv, or one sub-folder of images per class")


def _first_image_name(folder: Path) -> str:
    return next((p.name for p in image_files(folder)), "")


def image_files(folder: Path):
    """The image files directly in a folder, sorted by name."""
    return (p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _read_gtsrb_csv(csv_path: Path, num_classes: int, image_dir: Path | None = None
                    ) -> tuple[list[Entry], list[tuple[str, str]]]:
    with open(csv_path, newline="") as f:
        rows = list(csv.reader(f, delimiter=";"))
    if not rows:
        raise UserError(f"{csv_path}: empty CSV; expected header {';'.join(GTSRB_COLUMNS)}")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in GTSRB_COLUMNS if c not in header]
    if missing:
        raise UserError(f"{csv_path}: missing column(s) {', '.join(missing)}; "
                        f"expected header {';'.join(GTSRB_COLUMNS)}")
    col = {name: header.index(name) for name in GTSRB_COLUMNS}
    entries, bad = [], []
    for line_no, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        where = f"{csv_path.name}:{line_no}"
        try:
            name = row[col["Filename"]].strip()
            w, h, x1, y1, x2, y2, label = (int(row[col[c]]) for c in GTSRB_COLUMNS[1:])
        except (IndexError, ValueError):
            bad.append((where, "malformed CSV row"))
            continue
        path = str((image_dir or csv_path.parent) / name)
        if not 0 <= label < num_classes:
            bad.append((path, f"label {label} out of range 0..{num_classes - 1} ({where})"))
            continue
        match = TRACK_NAME.match(name)
        track = label * 1_000_000 + int(match.group(1)) if match else -1
        # Roi.X2/Y2 are inclusive pixel indices: the box ends one pixel further. In GTSRB's images (docs/roi.md)
        # a red ring still shows in column X2, and symmetric signs' axes lie 0.6-0.7 px past (X1+X2)/2: inclusive.
        entries.append(Entry(path, label, track, (x1, y1, x2 + 1, y2 + 1), (w, h)))
    return entries, bad


def list_entries(root: Path) -> tuple[str, Path, list[Entry], list[tuple[str, str]], list[str]]:
    """Every image a dataset folder names: (layout, base, entries, bad entries, class names)."""
    layout, base = detect_layout(root)
    names = list(GTSRB_CLASS_NAMES)
    entries: list[Entry] = []
    bad: list[tuple[str, str]] = []
    if layout == "gtsrb-train":
        for csv_path in sorted(base.glob("*/GT-[0-9]*.csv")) or sorted(base.glob("GT-[0-9]*.csv")):
            more, more_bad = _read_gtsrb_csv(csv_path, len(names))
            entries += more
            bad += more_bad
    elif layout == "gtsrb-test":
        csv_path = next(p for p in (base / "GT-final_test.csv", base.parent / "GT-final_test.csv") if p.is_file())
        entries, bad = _read_gtsrb_csv(csv_path, len(names), image_dir=base)
        for e in entries:  # test images are not in tracks
            e.track = -1
    else:
        class_dirs = sorted(p for p in base.iterdir() if p.is_dir() and any(image_files(p)))
        numeric = all(p.name.isdigit() for p in class_dirs)
        if numeric and max(int(p.name) for p in class_dirs) < len(GTSRB_CLASS_NAMES):
            labels = [int(p.name) for p in class_dirs]  # GTSRB-style ids keep their meaning
        else:
            names, labels = [p.name for p in class_dirs], list(range(len(class_dirs)))
        for label, folder in zip(labels, class_dirs, strict=True):
            for p in image_files(folder):
                match = TRACK_NAME.match(p.name)
                track = label * 1_000_000 + int(match.group(1)) if match else -1
                entries.append(Entry(str(p), label, track))
    if not entries and not bad:
        raise UserError(f"{root}: the dataset is empty; add images or point --data at another folder")
    return layout, base, entries, bad, names


def _csv_rows(folder: Path) -> dict[str, Entry]:
    """GTSRB CSV rows of a folder (GT-*.csv inside it; GT-final_test.csv beside it too), by image path."""
    rows: dict[str, Entry] = {}
    csvs = sorted(folder.glob("GT-*.csv")) + sorted(folder.parent.glob("GT-final_test.csv"))
    for csv_path in csvs:
        try:
            entries, _ = _read_gtsrb_csv(csv_path, len(GTSRB_CLASS_NAMES), image_dir=folder)
        except (UserError, OSError):
            continue  # not a GTSRB CSV: the files are decoded whole
        rows.update({str(Path(e.path)): e for e in entries})
    return rows


def entries_for_paths(paths: list[str | Path]) -> list[Entry]:
    """The images named on a command line, with their ROI where a GTSRB CSV gives one, as training crops them.

    A folder in a GTSRB layout gives its listed images; any other folder its image files (recursively,
    sorted); a file is looked up in the GT-*.csv beside it. Labels are -1: predict does not know them."""
    entries: list[Entry] = []
    csv_cache: dict[Path, dict[str, Entry]] = {}
    for p in map(Path, paths):
        if p.is_dir():
            layout = None
            try:
                layout, _, listed, _, _ = list_entries(p)
            except UserError:
                pass
            if layout in ("gtsrb-train", "gtsrb-test"):
                entries += [replace(e, label=-1) for e in listed]
            else:
                entries += [Entry(str(f), -1) for f in sorted(p.rglob("*"))
                            if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS]
        elif p.is_file():
            rows = csv_cache.setdefault(p.parent, _csv_rows(p.parent))
            row = rows.get(str(p))
            entries.append(replace(row, path=str(p), label=-1) if row else Entry(str(p), -1))
        else:
            raise UserError(f"{p}: no such file or folder")
    if not entries:
        raise UserError(f"{', '.join(map(str, paths))}: no images found")
    return entries
