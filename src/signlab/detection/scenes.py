"""Whole road scenes in GTSDB's layout: find the layout, read gt.txt, decode a scene, split scenes in blocks.

    ROOT/00000.jpg (or .ppm, .png) ...   the scenes, 1360x800 in GTSDB
    ROOT/gt.txt                           Filename;x1;y1;x2;y2;ClassId, one line per sign, inclusive corners

The official archive stores .ppm scenes and our copy .jpg ones, each with a gt.txt naming its own extension;
a gt.txt line finds its scene by stem, so either gt.txt works with either set of files. A bad line (malformed,
unknown class, empty box or one outside the scene, no such scene) is skipped and listed, never fatal: the
other signs of that scene still count. NumPy and Pillow only (no torch), like signlab.data.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from signlab.data import to_rgb_array
from signlab.detection.boxes import SignBox
from signlab.errors import UserError

GT_FILE = "gt.txt"
SCENE_NAME = re.compile(r"^\d+\.(jpg|jpeg|ppm|png)$", re.IGNORECASE)  # 00000.jpg, as GTSDB names them
EXTENSION_PREFERENCE = (".jpg", ".jpeg", ".png", ".ppm")  # one file per stem when a folder holds two
MAX_SCENE_PIXELS = 40_000_000  # a larger scene is refused as a decompression bomb (GTSDB's are 1.1 MP)
NUM_CLASSES = 43
_TRANSPOSED = {5, 6, 7, 8}  # EXIF orientations that swap width and height


@dataclass(frozen=True)
class Scene:
    """One scene file and its ground-truth signs (empty for a scene without signs)."""

    path: Path
    boxes: tuple[SignBox, ...]


def _scene_files(root: Path) -> list[Path]:
    return sorted((p for p in root.iterdir() if p.is_file() and SCENE_NAME.match(p.name)), key=lambda p: p.name)


def is_gtsdb_layout(root: str | Path) -> bool:
    """True for a folder holding gt.txt and scene images named like 00000.jpg / .ppm / .png."""
    root = Path(root)
    return root.is_dir() and (root / GT_FILE).is_file() and bool(_scene_files(root))


HOLDS = f"a GTSDB folder holds the scenes (00000.jpg or 00000.ppm, ...) and {GT_FILE} (Filename;x1;y1;x2;y2;ClassId)"


def _by_stem(files: list[Path], named: set[str]) -> dict[str, Path]:
    """One scene per stem: the file gt.txt names when both 00000.jpg and 00000.ppm are there, else by preference."""
    found: dict[str, list[Path]] = {}
    for p in files:
        found.setdefault(p.stem, []).append(p)
    rank = {ext: i for i, ext in enumerate(EXTENSION_PREFERENCE)}
    return {stem: min(paths, key=lambda p: (p.name not in named, rank.get(p.suffix.lower(), 9), p.name))
            for stem, paths in found.items()}


def _oriented_size(path: Path) -> tuple[int, int]:
    """(width, height) as load_scene returns the scene (EXIF rotation applied); reads the header only."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as im:
            w, h = im.size
            if w * h > MAX_SCENE_PIXELS:
                raise ValueError(f"too large: {w}x{h} is over {MAX_SCENE_PIXELS:,} pixels (decompression bomb)")
            turned = im.getexif().get(0x0112) in _TRANSPOSED
    return (h, w) if turned else (w, h)


def _parse_line(line: str, where: str) -> tuple[str, tuple[float, float, float, float], int] | str:
    """(file name, box, class id), or the reason the line is malformed."""
    fields = [f.strip() for f in line.split(";")]
    if len(fields) != 6 or not fields[0]:
        return f"{where}: malformed, expected Filename;x1;y1;x2;y2;ClassId, got {line!r}"
    try:
        x1, y1, x2, y2 = (float(f) for f in fields[1:5])
        class_id = int(fields[5])
    except ValueError:
        return f"{where}: malformed, numbers expected, got {line!r}"
    return fields[0], (x1, y1, x2, y2), class_id


def _check_box(box: tuple[float, float, float, float], class_id: int, size: tuple[int, int], where: str
               ) -> str | None:
    x1, y1, x2, y2 = box
    w, h = size
    if not 0 <= class_id < NUM_CLASSES:
        return f"{where}: unknown class {class_id} (GTSRB classes are 0..{NUM_CLASSES - 1})"
    if x2 < x1 or y2 < y1:
        return f"{where}: empty box ({x1:g}, {y1:g}, {x2:g}, {y2:g})"
    if x1 < 0 or y1 < 0 or x2 > w - 1 or y2 > h - 1:
        return f"{where}: box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) outside the {w}x{h} scene"
    return None


def read_gtsdb(root: str | Path) -> tuple[list[Scene], list[tuple[str, str]]]:
    """Every scene of a GTSDB folder, sorted by name (scenes without signs too), and the skipped [(name, why)].

    Skipped: gt.txt lines that are malformed, name an unknown class, hold an empty box or one outside the
    scene, or name a scene that is not there; and scene files whose header cannot be read (not an image, or a
    decompression bomb), with every line naming them. A truncated scene passes here: load_scene finds it.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder; {HOLDS}")
    gt = root / GT_FILE
    if not gt.is_file():
        raise UserError(f"{root}: no {GT_FILE} here; {HOLDS}")
    files = _scene_files(root)
    if not files:
        raise UserError(f"{root}: no scene images (00000.jpg, .ppm or .png) here; {HOLDS}")
    try:
        lines = gt.read_text(encoding="utf-8-sig", errors="replace").splitlines()
    except OSError as e:
        raise UserError(f"{gt}: cannot read it ({e.strerror or e}); fix its permissions or replace it") from None

    parsed = [(n, _parse_line(line, f"{GT_FILE} line {n}")) for n, line in enumerate(lines, 1) if line.strip()]
    named = {Path(p[0]).name for _, p in parsed if not isinstance(p, str)}
    scenes_by_stem = _by_stem(files, named)
    sizes: dict[str, tuple[int, int] | str] = {}
    skipped: list[tuple[str, str]] = []
    ordered = sorted(scenes_by_stem.items(), key=lambda kv: kv[1].name)
    for stem, path in ordered:
        try:
            sizes[stem] = _oriented_size(path)
        except Image.DecompressionBombError as e:
            sizes[stem] = f"too large (decompression bomb): {e}"
        except (OSError, ValueError, SyntaxError) as e:
            sizes[stem] = "not an image" if isinstance(e, Image.UnidentifiedImageError) else str(e)
        if isinstance(sizes[stem], str):
            skipped.append((path.name, f"unreadable scene: {sizes[stem]}"))

    boxes: dict[str, list[SignBox]] = {stem: [] for stem in scenes_by_stem}
    for n, p in parsed:
        if isinstance(p, str):
            skipped.append((GT_FILE, p))
            continue
        name, box, class_id = p
        stem, where = Path(name).stem, f"{GT_FILE} line {n}"
        size = sizes.get(stem)
        why = (f"{where}: no scene {name} (nor another file named {stem}.*) in {root}" if size is None
               else f"{where}: its scene is unreadable" if isinstance(size, str)
               else _check_box(box, class_id, size, where))
        if why:
            skipped.append((name, why))
        else:
            boxes[stem].append(SignBox(*box, class_id=class_id))
    scenes = [Scene(path, tuple(boxes[stem])) for stem, path in ordered if not isinstance(sizes[stem], str)]
    return scenes, skipped


def load_scene(path: str | Path) -> np.ndarray:
    """A scene as (H, W, 3) uint8 RGB, upright (EXIF rotation applied); UserError naming the file when it is
    missing, not an image, truncated or corrupt, or larger than MAX_SCENE_PIXELS (a decompression bomb)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such scene file; check the path")
    with warnings.catch_warnings():
        # Pillow only warns from 89 MP and refuses from 179 MP; our own, lower limit is checked before decoding.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as im:
                w, h = im.size
                if w * h > MAX_SCENE_PIXELS:
                    raise UserError(f"{path}: scene too large ({w}x{h} is over {MAX_SCENE_PIXELS:,} pixels, "
                                    "refused as a possible decompression bomb); shrink it")
                im.load()
                return to_rgb_array(ImageOps.exif_transpose(im))
        except Image.UnidentifiedImageError:
            raise UserError(f"{path}: not an image signlab can read; replace or remove it") from None
        except Image.DecompressionBombError as e:
            raise UserError(f"{path}: scene too large (decompression bomb: {e}); shrink it") from None
        except (OSError, ValueError, SyntaxError) as e:  # truncated data, a broken chunk, an odd mode
            raise UserError(f"{path}: unreadable scene (truncated or corrupt: {e}); replace or remove it") from None


def split_scenes(scenes: list[Scene], val_fraction: float, seed: int, block: int = 20
                 ) -> tuple[list[Scene], list[Scene]]:
    """(train, val): whole blocks of `block` consecutive scenes (by name) held out, chosen by seed.

    GTSDB's neighbouring scenes come from one drive (the same signs seen again metres later), so a split by
    scene would leak; by block it does not. About val_fraction of the blocks go to val, and at least one
    block to each side when there are two or more; a set smaller than two blocks is cut in smaller blocks
    so that both sides still get scenes. val_fraction 0: everything trains.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise UserError(f"--val-fraction {val_fraction}: must be in [0, 1)")
    if block < 1:
        raise ValueError(f"block must be at least 1, got {block}")
    ordered = sorted(scenes, key=lambda s: s.path.name)
    if val_fraction == 0 or len(ordered) < 2:
        return ordered, []
    block = min(block, len(ordered) // 2)
    starts = range(0, len(ordered), block)
    n_val = min(max(round(val_fraction * len(starts)), 1), len(starts) - 1)
    held = set(np.random.default_rng(seed).permutation(len(starts))[:n_val].tolist())
    train = [s for i, start in enumerate(starts) if i not in held for s in ordered[start:start + block]]
    val = [s for i, start in enumerate(starts) if i in held for s in ordered[start:start + block]]
    return train, val
