"""`signlab synth`: a synthetic sign set in GTSRB's layout, the drawn pictograms, or road scenes in GTSDB's."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from signlab.errors import UserError


def run_synth(args: argparse.Namespace) -> int:
    if args.scenes is not None:
        return write_scenes(args)
    if args.scene_size is not None:
        raise UserError("--scene-size is for --scenes N (road scenes), e.g. signlab synth OUT --scenes 50")
    if args.pictograms:
        from signlab.synth.pictograms import write_pictograms

        print(f"wrote {len(write_pictograms(Path(args.out)))} files to {args.out}")
        return 0
    if args.per_class is None:
        raise UserError("--per-class N is needed (images per class), e.g. signlab synth OUT --per-class 300")
    from signlab.synth.dataset import NUM_CLASSES, write_dataset

    classes = sorted(set(args.classes)) if args.classes else list(range(NUM_CLASSES))
    workers = args.workers or min(os.cpu_count() or 1, len(classes))
    start = time.perf_counter()
    write_dataset(Path(args.out), args.per_class, args.seed, classes, backgrounds=args.backgrounds, workers=workers)
    n, seconds = args.per_class * len(classes), time.perf_counter() - start
    print(f"wrote {n} images of {len(classes)} classes to {Path(args.out) / 'Images'} in {seconds:.1f} s "
          f"({n / seconds:.0f} images/s, {workers} process{'es' if workers > 1 else ''})")
    print(f"next: signlab train --data {args.out}")
    return 0


def write_scenes(args: argparse.Namespace) -> int:
    for flag, given in (("--per-class", args.per_class is not None), ("--pictograms", args.pictograms),
                        ("--backgrounds", args.backgrounds is not None), ("--workers", args.workers is not None)):
        if given:
            raise UserError(f"{flag} is for sign sets, not --scenes; leave it out")
    from signlab.detection.synthetic import NUM_CLASSES, write_synthetic_scenes

    classes = sorted(set(args.classes)) if args.classes else list(range(NUM_CLASSES))
    size = args.scene_size or (1360, 800)
    start = time.perf_counter()
    out = write_synthetic_scenes(Path(args.out), args.scenes, seed=args.seed, size=size, classes=classes)
    seconds = time.perf_counter() - start
    signs = sum(1 for line in (out / "gt.txt").read_text().splitlines() if line)
    print(f"wrote {args.scenes} scenes of {size[0]}x{size[1]} with {signs} signs to {out} in {seconds:.1f} s "
          f"({args.scenes / seconds:.1f} scenes/s)")
    return 0
