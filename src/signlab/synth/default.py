"""The embedded default dataset: signlab's own drawn signs, rendered once and cached.

`signlab train` with no --data, `make demo`, the lab and the tests run on it: offline, on any machine, with no
third-party image in the project. A training set and a held-out set of other physical signs (another seed),
both in GTSRB's training layout, so every path that reads GTSRB reads them too.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import PIL

TRAIN_PER_CLASS = 60  # 43 x 60 = 2,580 images in 6 tracks a class: seconds to render, a minute to train
HELDOUT_PER_CLASS = 30  # 1,290 images, 3 tracks a class
TRAIN_SEED, HELDOUT_SEED = 0, 1  # different seeds: the held-out signs are other signs, not other frames


def _renderer_digest() -> str:
    """What decides the pixels: the synth package's source and the NumPy and Pillow versions. A change to any
    renders a new default set instead of reading a stale one."""
    h = hashlib.sha256(f"{np.__version__}|{PIL.__version__}|{TRAIN_PER_CLASS}|{HELDOUT_PER_CLASS}".encode())
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()[:16]


def default_root() -> Path:
    from signlab.data import cache_dir  # lazily: data imports this module for its default

    return cache_dir() / f"synth-default-{_renderer_digest()}"


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)  # stdout may be JSON (evaluate --json)


def default_data(log: Callable[[str], object] = _to_stderr, workers: int | None = None) -> tuple[Path, Path]:
    """(train, held-out) folders of the default synthetic dataset, rendered on first use (about 10 s on 2
    cores). Concurrent callers (torchrun ranks, parallel tests) each render into a private folder and the
    first to finish publishes it with an atomic rename; the files are identical, so which one wins is moot."""
    root = default_root().resolve()  # through a link to a shared copy: publish there, not over the link
    if not (root / "complete").is_file():
        from signlab.synth.dataset import write_dataset

        workers = workers or max(1, min(4, len(os.sched_getaffinity(0))))
        log(f"rendering signlab's default synthetic dataset ({43 * TRAIN_PER_CLASS} training and "
            f"{43 * HELDOUT_PER_CLASS} held-out images) into {root} (once)")
        staging = root.with_name(f"{root.name}.tmp-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        write_dataset(staging / "train", TRAIN_PER_CLASS, seed=TRAIN_SEED, workers=workers)
        write_dataset(staging / "heldout", HELDOUT_PER_CLASS, seed=HELDOUT_SEED, workers=workers)
        (staging / "complete").write_text("rendered by signlab.synth.default\n")
        try:
            os.replace(staging, root)
        except OSError:  # another process published it first
            shutil.rmtree(staging, ignore_errors=True)
            if not (root / "complete").is_file():
                raise
    return root / "train", root / "heldout"
