"""Datasets: decode every image of a layout (signlab.layouts) once into an NHWC uint8 array, cache it,
split it by track.

NumPy and Pillow only (the lab imports this module and never imports torch)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from signlab.errors import UserError
from signlab.layouts import Entry, list_entries

# What Pillow must find inside a file with this extension; anything else is a mislabelled file.
EXPECTED_FORMATS = {
    ".png": {"PNG"}, ".jpg": {"JPEG", "MPO"}, ".jpeg": {"JPEG", "MPO"}, ".ppm": {"PPM"}, ".pgm": {"PPM"},
    ".pnm": {"PPM"}, ".bmp": {"BMP", "DIB"}, ".gif": {"GIF"}, ".tif": {"TIFF"}, ".tiff": {"TIFF"},
    ".webp": {"WEBP"},
}
CACHE_VERSION = 2  # bump when decoding changes, so stale caches are never read
DEFAULT_MAX_PIXELS = 40_000_000  # a larger image is refused as a decompression bomb
DECODE_COUNTER = {"images": 0}  # tests read this to prove a cached load decodes nothing


@dataclass
class ImageSet:
    """Decoded images with their labels, in NHWC order as the lecture stacks them."""

    images: np.ndarray  # (N, H, W, 3) uint8
    labels: np.ndarray  # (N,) int64 class ids
    tracks: np.ndarray  # (N,) int64 track key, unique across classes; -1 where the layout has none
    paths: list[str]  # source file of each image, relative to root
    class_names: list[str]
    layout: str
    root: str
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of unusable entries

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: np.ndarray) -> ImageSet:
        idx = np.asarray(idx, dtype=np.int64)
        return replace(self, images=self.images[idx], labels=self.labels[idx], tracks=self.tracks[idx],
                       paths=[self.paths[i] for i in idx])

    def counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=len(self.class_names))


@dataclass
class DataSplit:
    """A dataset split into a training and a validation part (training, the lab's experiments)."""

    train: ImageSet
    val: ImageSet | None
    source: str  # where the images came from, for logs and printed headers


# ---------------------------------------------------------------- decoding


def to_rgb_array(im: Image.Image) -> np.ndarray:
    """Any Pillow mode (RGBA, L, P, 16-bit, float, CMYK) as (H, W, 3) uint8."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        hi = a.max() if a.size else 1.0
        scale = 255.0 / (65535.0 if hi > 255 else 255.0) if im.mode != "F" or hi > 1.0 else 255.0
        a = np.clip(a * scale, 0, 255).astype(np.uint8)
        return np.repeat(a[:, :, None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im)  # transparent pixels become white, not black
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def decode_image(path: str | Path, size: int, roi=None, csv_size=None,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray | None, str]:
    """Decode one file to (size, size, 3) uint8, or (None, reason) when it cannot be used."""
    path = Path(path)
    try:
        if not path.is_file():
            return None, "missing file"
        if path.stat().st_size == 0:
            return None, "zero-byte file"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.size[0] * im.size[1] > max_pixels:
                    return None, f"too large: {im.size[0]}x{im.size[1]} > {max_pixels} pixels (decompression bomb)"
                expected = EXPECTED_FORMATS.get(path.suffix.lower())
                if expected and im.format not in expected:
                    return None, f"wrong extension: content is {im.format}, name says {path.suffix}"
                im.load()
                DECODE_COUNTER["images"] += 1
                rgb = Image.fromarray(to_rgb_array(im))
    except Image.DecompressionBombError as e:
        return None, f"too large (decompression bomb): {e}"
    except OSError as e:  # truncated data, unknown format, unsupported mode
        text = str(e)
        reason = "not an image" if "cannot identify" in text else f"unreadable: {text}"
        return None, reason
    except (ValueError, SyntaxError, Image.UnidentifiedImageError) as e:
        return None, f"unreadable: {e}"
    return crop_resize(rgb, size, roi, csv_size), ""


def crop_resize(rgb: Image.Image, size: int, roi=None, csv_size=None) -> np.ndarray:
    """A decoded RGB frame's ROI (on the CSV's grid), or the whole frame, resized to (size, size, 3) uint8.
    Public so that bench/robustness.py crops a perturbed frame exactly as decoding crops a file."""
    box = roi_box(rgb.size, roi, csv_size) if roi is not None else None  # degenerate: the whole frame
    out = rgb.resize((size, size), Image.Resampling.BILINEAR, box=box, reducing_gap=None)
    return np.asarray(out, dtype=np.uint8)


def roi_box(stored_size: tuple[int, int], roi, csv_size) -> tuple[float, float, float, float] | None:
    """The ROI (x1, y1, x2 + 1, y2 + 1 on the CSV's grid) in the stored image's pixels, clipped to it; None when
    it is degenerate (under a pixel wide or high)."""
    # The CSV gives the ROI on the original grid; this copy may be stored at another size.
    w, h = stored_size
    sx, sy = w / csv_size[0], h / csv_size[1]
    x1, y1, x2, y2 = roi
    box = (max(0.0, x1 * sx), max(0.0, y1 * sy), min(w, x2 * sx), min(h, y2 * sy))
    return None if box[2] - box[0] < 1 or box[3] - box[1] < 1 else box


def _decode_chunk(args) -> tuple[list[np.ndarray | None], list[str], int]:
    entries, size, crop, max_pixels = args
    arrays, reasons = [], []
    for e in entries:
        roi, csv_size = (e.roi, e.csv_size) if crop == "roi" else (None, None)
        a, reason = decode_image(e.path, size, roi, csv_size, max_pixels)
        arrays.append(a)
        reasons.append(reason)
    return arrays, reasons, DECODE_COUNTER["images"]


def decode_entries(entries: list[Entry], size: int, crop: str, max_pixels: int, workers: int | None = None):
    """Decode in parallel processes for big sets; a small set decodes in this process."""
    workers = workers or min(os.cpu_count() or 1, 8)
    if len(entries) < 2000 or workers < 2:
        arrays, reasons, _ = _decode_chunk((entries, size, crop, max_pixels))
        return arrays, reasons
    chunks = [entries[i:i + 1000] for i in range(0, len(entries), 1000)]
    arrays, reasons = [], []
    with ProcessPoolExecutor(workers) as pool:
        for a, r, _ in pool.map(_decode_chunk, [(c, size, crop, max_pixels) for c in chunks]):
            arrays += a
            reasons += r
    DECODE_COUNTER["images"] += sum(a is not None for a in arrays)
    return arrays, reasons


# ---------------------------------------------------------------- cache


def cache_dir() -> Path:
    return Path(os.environ.get("SIGNLAB_CACHE", Path.home() / ".cache" / "signlab"))


def fingerprint(entries: list[Entry], csvs: list[Path], size: int, crop: str, max_pixels: int) -> str:
    """A key that changes when any file's path, size or mtime changes, or how we decode."""
    h = hashlib.sha256(f"v{CACHE_VERSION}|{size}|{crop}|{max_pixels}".encode())
    for p in sorted({e.path for e in entries} | {str(c) for c in csvs}):
        try:
            st = os.stat(p)
            h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}|missing\n".encode())
    for e in entries:
        h.update(f"{e.label},{e.track},{e.roi},{e.csv_size}\n".encode())
    return h.hexdigest()[:32]


def _save_cache(folder: Path, ds: ImageSet) -> None:
    """Best effort: a cache that cannot be written (a full disk, say) only means decoding again next time."""
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        np.save(tmp / "images.npy", ds.images)
        np.save(tmp / "labels.npy", ds.labels)
        np.save(tmp / "tracks.npy", ds.tracks)
        meta = {"paths": ds.paths, "class_names": ds.class_names, "layout": ds.layout, "root": ds.root,
                "skipped": ds.skipped}
        (tmp / "meta.json").write_text(json.dumps(meta))
        os.replace(tmp, folder)  # atomic: a reader sees the whole cache or none
    except OSError:
        pass  # the disk is full, or another process cached it first (ours is identical)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load_cache(folder: Path) -> ImageSet | None:
    try:
        meta = json.loads((folder / "meta.json").read_text())
        return ImageSet(np.load(folder / "images.npy"), np.load(folder / "labels.npy"),
                        np.load(folder / "tracks.npy"), meta["paths"], meta["class_names"], meta["layout"],
                        meta["root"], [tuple(s) for s in meta["skipped"]])
    except (OSError, ValueError, KeyError):
        return None


# ---------------------------------------------------------------- public entry points


def load_images(root: str | Path | None = None, size: int = 32, crop: str = "roi", cache: bool = True,
                max_pixels: int = DEFAULT_MAX_PIXELS, max_bad_fraction: float = 1.0,
                progress: bool = False) -> ImageSet:
    """Decode a dataset folder (default: the training part of signlab's synthetic default set) into an ImageSet.

    Unusable files are skipped and listed in ``.skipped``; more than ``max_bad_fraction`` of them is a
    UserError. The result is cached on disk keyed by the files' fingerprint, so a second call decodes nothing.
    """
    if root is None:
        from signlab.synth.default import default_data

        root = default_data()[0]
    root = Path(root)
    if crop not in ("roi", "full"):
        raise UserError(f"--crop {crop}: unknown crop; use roi or full")
    layout, base, entries, bad, names = list_entries(root)
    csvs = [p for pattern in ("*/GT-[0-9]*.csv", "GT-[0-9]*.csv", "GT-final_test.csv") for p in base.glob(pattern)]
    csvs += list(base.parent.glob("GT-final_test.csv"))
    key = fingerprint(entries, csvs, size, crop, max_pixels)
    folder = cache_dir() / key
    ds = _load_cache(folder) if cache else None
    if ds is None:
        if progress:
            print(f"decoding {len(entries)} images from {root} (cached for the next run)", flush=True)
        arrays, reasons = decode_entries(entries, size, crop, max_pixels)
        keep = [i for i, a in enumerate(arrays) if a is not None]
        bad = bad + [(entries[i].path, reasons[i]) for i, a in enumerate(arrays) if a is None]
        images = np.stack([arrays[i] for i in keep]) if keep else np.zeros((0, size, size, 3), np.uint8)
        ds = ImageSet(images, np.array([entries[i].label for i in keep], dtype=np.int64),
                      np.array([entries[i].track for i in keep], dtype=np.int64),
                      [entries[i].path for i in keep], names, layout, str(root), bad)
        if cache:
            _save_cache(folder, ds)
    total = len(ds) + len(ds.skipped)
    if len(ds) == 0:
        raise UserError(f"{root}: no usable images ({len(ds.skipped)} unreadable); check the files")
    if len(ds.skipped) > max_bad_fraction * total:
        raise UserError(f"{root}: {len(ds.skipped)} of {total} images are unusable "
                        f"({len(ds.skipped) / total:.1%} > {max_bad_fraction:.1%}); first: "
                        f"{ds.skipped[0][0]}: {ds.skipped[0][1]}; fix them or raise --max-bad-fraction")
    return ds


def data_folders(data: str | Path | None, val_data: str | Path | None,
                 log: Callable[[str], object] | None = None) -> tuple[Path, Path | None]:
    """The folders a run trains and validates on: --data and --val-data as given; without --data, signlab's
    drawn-sign default set (signlab.synth.default), validated on its held-out part unless --val-data says."""
    if data is not None:
        return Path(data), Path(val_data) if val_data else None
    from signlab.synth.default import default_data

    train, heldout = default_data(log) if log else default_data()
    return train, Path(val_data) if val_data else heldout


def split_indices(ds: ImageSet, val_fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Train/validation indices, stratified by class; whole tracks stay on one side when there are tracks."""
    if not 0.0 <= val_fraction < 1.0:
        raise UserError(f"--val-fraction {val_fraction}: must be in [0, 1)")
    rng = np.random.default_rng(seed)
    groups_per_class = []
    for label in np.unique(ds.labels):
        members = np.flatnonzero(ds.labels == label)
        groups = ds.tracks[members] if (ds.tracks[members] >= 0).all() else members  # a sample is its own group
        groups_per_class.append((members, groups, rng.permutation(np.unique(groups))))
    # Each class gets floor(fraction * its groups); the groups left over go to the classes with the largest
    # remainders, so a small set with 2 tracks a class still gets about val_fraction of its tracks.
    quota = np.array([val_fraction * len(units) for _, _, units in groups_per_class])
    n_val = np.floor(quota).astype(int)
    spare = int(round(quota.sum())) - n_val.sum()
    order = np.lexsort((rng.random(len(quota)), -(quota - n_val)))
    n_val[order[:spare]] += 1
    val = [members[np.isin(groups, units[:k])]
           for (members, groups, units), k in zip(groups_per_class, n_val, strict=True)]
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, np.int64)
    train_idx = np.setdiff1d(np.arange(len(ds)), val_idx)
    return train_idx, val_idx


def align_labels(ds: ImageSet, class_names: list[str]) -> ImageSet:
    """`ds` with its labels renumbered to `class_names` (a model's, a training set's), matching by name.

    A class-per-folder set numbers its classes by position among its own folders: a validation folder that
    lacks one class would shift every later label. Classes the reference list does not know are an error."""
    if list(ds.class_names) == list(class_names):
        return ds
    index = {name: i for i, name in enumerate(class_names)}
    missing = sorted({ds.class_names[c] for c in np.unique(ds.labels)} - set(index))
    if missing:
        raise UserError(f"{ds.root}: classes {', '.join(missing[:5])} are unknown to the model (it knows "
                        f"{len(class_names)} classes); use data with the model's classes")
    labels = np.array([index[ds.class_names[c]] for c in ds.labels], dtype=np.int64)
    return replace(ds, labels=labels, class_names=list(class_names))


def split_digest(ds: ImageSet) -> str:
    """SHA-256 of the images' paths and class names, in order: the identity of a validation split, recorded
    in RUN/split.json so that `evaluate` can tell when the dataset changed since training."""
    rows = (f"{path}\t{ds.class_names[label]}" for path, label in zip(ds.paths, ds.labels, strict=True))
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of (N, H, W, 3) uint8 images, in [0, 1] units (float32, shape (3,))."""
    total = np.zeros(3)
    total_sq = np.zeros(3)
    count = 0
    for i in range(0, len(images), 4096):  # chunks keep float64 memory small on 39k images
        chunk = images[i:i + 4096].reshape(-1, 3).astype(np.float64) / 255.0
        total += chunk.sum(0)
        total_sq += (chunk**2).sum(0)
        count += len(chunk)
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(total_sq / max(count, 1) - mean**2, 1e-12))
    return mean.astype(np.float32), std.astype(np.float32)
