"""Write a synthetic training set in GTSRB's training layout, as `signlab.layouts.list_entries` reads it.

    OUT/Images/000NN/GT-000NN.csv   Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId (X2, Y2 inclusive)
    OUT/Images/000NN/TTTTT_FFFFF.png   track TTTTT, frame FFFFF, lossless

A track is one physical sign (its weathering, occlusion, background, light and viewing angle) in frames of
growing size as a car approaches, like GTSRB's 30 shots of one sign; a validation split must keep tracks whole.
Every track draws from its own generator seeded by (seed, class, track): the files do not depend on the
order of work, the number of processes or the machine (given the same NumPy and Pillow versions).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from signlab.errors import UserError
from signlab.layouts import GTSRB_COLUMNS, IMAGE_EXTENSIONS
from signlab.synth.render import DEFAULT_PARAMS, RenderParams, draw_track, render_frame, streams, track_sides

NUM_CLASSES = 43
SIGN_PX = 256  # the drawn sign's side: enough for the largest frames (250 px)
MAX_FRAMES = 30  # GTSRB's tracks hold 30 frames

DrawSign = Callable[[int, int], Image.Image]  # (class id, side) -> RGBA sign touching the square's edges


def track_lengths(per_class: int, frames_per_track: int = 10) -> list[int]:
    """Frames in each track of a class: about frames_per_track, but at least 3 tracks when possible (a
    validation split holds out whole tracks); lengths differ by at most one."""
    frames = max(1, min(frames_per_track, per_class // 3 or 1))
    n_tracks = math.ceil(per_class / frames)
    return [per_class // n_tracks + (i < per_class % n_tracks) for i in range(n_tracks)]


def scene_files(folder: Path) -> list[Path]:
    """Every image file under a folder of scene photos, sorted, so the choice of scene is reproducible."""
    if not folder.is_dir():
        raise UserError(f"--backgrounds {folder}: no such folder; pass a folder of scene photos")
    files = sorted((p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
                   key=lambda p: p.as_posix())
    if not files:
        raise UserError(f"--backgrounds {folder}: no images found (png, jpg, ppm, ...); add scene photos")
    return files


def _load_scene(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except OSError as e:
        raise UserError(f"{path}: cannot read this background image ({e}); remove it or fix it") from None


def _default_draw(class_id: int, size: int) -> Image.Image:
    from signlab.synth.pictograms import draw_sign  # lazily: the writer works with any sign drawer

    return draw_sign(class_id, size)


def write_class(images: Path, class_id: int, per_class: int, seed: int, params: RenderParams,
                scenes: list[Path], frames_per_track: int = 10, draw: DrawSign | None = None) -> int:
    """One class folder: its tracks' frames and GT-000NN.csv. Returns the number of images written."""
    folder = images / f"{class_id:05d}"
    folder.mkdir(parents=True, exist_ok=True)
    sign = (draw or _default_draw)(class_id, SIGN_PX)
    rows = []
    for t, n in enumerate(track_lengths(per_class, frames_per_track)):
        s = streams(np.random.default_rng([seed, class_id, t]))
        sides = track_sides(s("size"), n, params)
        scene = None
        if scenes:
            path = scenes[int(s("scene").integers(len(scenes)))]
            scene = lambda path=path: _load_scene(path)  # noqa: E731 - decoded only if the track uses it
        track = draw_track(sign, s("track"), params, scene, max(sides))
        for f, side in enumerate(sides):
            img, roi = render_frame(track, side, s(f"frame {f}"), params)
            name = f"{t:05d}_{f:05d}.png"
            Image.fromarray(img).save(folder / name, compress_level=1)  # lossless; level 1: fast, 10 % larger
            rows.append([name, img.shape[1], img.shape[0], *roi, class_id])
    with open(folder / f"GT-{class_id:05d}.csv", "w", newline="") as fh:
        writer = csv.writer(fh, delimiter=";", lineterminator="\n")  # as GTSRB's own CSVs
        writer.writerow(GTSRB_COLUMNS)
        writer.writerows(rows)
    return len(rows)


def _write_class_job(job: tuple) -> int:
    return write_class(*job)


def write_dataset(out: Path, per_class: int, seed: int = 0, classes=range(NUM_CLASSES),
                  params: RenderParams = DEFAULT_PARAMS, backgrounds: Path | None = None,
                  size_range: tuple[int, int] | None = None, frames_per_track: int = 10, workers: int = 1,
                  draw: DrawSign | None = None) -> Path:
    """Render per_class images of each class into OUT/Images in GTSRB's training layout; returns OUT.

    size_range: the signs' sides in px before any turn (default params.size_range, 15-250); backgrounds: a
    folder of scene photos to crop backgrounds from (with probability params.scene_p per track); workers:
    processes, one class at a time each (the files are the same for any count); draw: (class id, side) ->
    RGBA sign, default signlab.synth.pictograms.draw_sign."""
    out = Path(out)
    classes = list(classes)
    if per_class < 1:
        raise UserError(f"--per-class {per_class}: must be at least 1")
    bad = [c for c in classes if not 0 <= c < NUM_CLASSES]
    if bad or not classes:
        raise UserError(f"--classes {','.join(map(str, classes))}: class ids must be in 0..{NUM_CLASSES - 1}")
    if size_range is not None:
        params = _with_sizes(params, size_range)
    if not 1 <= frames_per_track <= MAX_FRAMES:
        raise UserError(f"frames_per_track {frames_per_track}: must be in [1, {MAX_FRAMES}]")
    images = out / "Images"
    if images.is_dir() and any(images.iterdir()):
        raise UserError(f"{images}: already holds files; pass a new or empty folder")
    scenes = scene_files(Path(backgrounds)) if backgrounds is not None else []
    jobs = [(images, c, per_class, seed, params, scenes, frames_per_track, draw) for c in sorted(set(classes))]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(min(workers, len(jobs))) as pool:
            list(pool.map(_write_class_job, jobs))
    else:
        for job in jobs:
            _write_class_job(job)
    return out


def _with_sizes(params: RenderParams, size_range: tuple[int, int]) -> RenderParams:
    from dataclasses import replace

    lo, hi = size_range
    if not 8 <= lo <= hi <= 1000:
        raise UserError(f"size range {lo}-{hi}: need 8 <= smallest <= largest <= 1000 px")
    return replace(params, size_range=(int(lo), int(hi)))
