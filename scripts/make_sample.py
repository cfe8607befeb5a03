"""Build the shipped sample: whole tracks of every GTSRB class, split by track into train and held-out parts.

    python scripts/make_sample.py --source ../shared/datasets/GTSRB/Final_Training

Reproducible: the tracks are chosen by a seeded generator from the sorted track list of each class. Images
are stored as PNG (lossless, ~2.3 KB each at 32x32) under the official layout, and the CSV rows keep the
original Width/Height/ROI, so the loader's ROI scaling is exercised by the sample too.
"""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from signlab.layouts import GTSRB_COLUMNS, TRACK_NAME


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="GTSRB Final_Training folder")
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "src/signlab/sample")
    parser.add_argument("--train-tracks", type=int, default=2, help="tracks per class in the training part")
    parser.add_argument("--heldout-tracks", type=int, default=1, help="tracks per class in the held-out part")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    images = args.source / "Images" if (args.source / "Images").is_dir() else args.source
    rng = np.random.default_rng(args.seed)
    shutil.rmtree(args.out / "train", ignore_errors=True)
    shutil.rmtree(args.out / "heldout", ignore_errors=True)
    total = 0
    for class_dir in sorted(p for p in images.iterdir() if p.is_dir()):
        csv_path = next(class_dir.glob("GT-*.csv"))
        with open(csv_path, newline="") as f:
            rows = list(csv.DictReader(f, delimiter=";"))
        tracks = sorted({TRACK_NAME.match(r["Filename"]).group(1) for r in rows})
        chosen = rng.choice(len(tracks), args.train_tracks + args.heldout_tracks, replace=False)
        parts = {"train": {tracks[i] for i in chosen[:args.train_tracks]},
                 "heldout": {tracks[i] for i in chosen[args.train_tracks:]}}
        for part, keep in parts.items():
            out_dir = args.out / part / "Images" / class_dir.name
            out_dir.mkdir(parents=True, exist_ok=True)
            kept = [r for r in rows if TRACK_NAME.match(r["Filename"]).group(1) in keep]
            for r in kept:
                png_name = Path(r["Filename"]).with_suffix(".png").name
                Image.open(class_dir / r["Filename"]).save(out_dir / png_name, optimize=True)
                r["Filename"] = png_name
            with open(out_dir / csv_path.name, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=GTSRB_COLUMNS, delimiter=";", lineterminator="\n")
                writer.writeheader()
                writer.writerows(kept)
            total += len(kept)
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {total} images, {size / 1e6:.1f} MB, to {args.out}")


if __name__ == "__main__":
    main()
