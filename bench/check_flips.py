"""Evidence for the class-aware flip tables: correlate each class's flipped mean image with every class's mean.

    python bench/check_flips.py --data ../shared/datasets/GTSRB-original/Final_Training

For each class the table of `signlab.augment.gtsrb_flip_tables` names, prints the correlation of the flipped
mean image with the target class's mean next to the best-matching class. Mean images are blurry, so this is
a sanity check of the pairs (a swap pair should match its partner better than itself), not a proof.
"""

from __future__ import annotations

import argparse

import numpy as np

from signlab.augment import gtsrb_flip_tables
from signlab.data import load_images

FLIPS = {"left-right": lambda a: a[:, ::-1], "up-down": lambda a: a[::-1], "rotate-180": lambda a: a[::-1, ::-1]}


def unit(a: np.ndarray) -> np.ndarray:
    a = a - a.mean()
    return a / np.linalg.norm(a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/datasets/GTSRB-original/Final_Training")
    args = parser.parse_args()
    ds = load_images(args.data)
    means = [ds.images[ds.labels == c].astype(np.float32).mean(0) for c in range(43)]
    plain = np.stack([unit(m) for m in means]).reshape(43, -1)
    tables = gtsrb_flip_tables()
    for row, (name, flip) in enumerate(FLIPS.items()):
        flipped = np.stack([unit(flip(m)) for m in means]).reshape(43, -1)
        corr = flipped @ plain.T  # corr[c, d]: flipped mean of c against mean of d
        print(f"{name}:")
        for c in range(43):
            target = int(tables[row, c])
            if target >= 0:
                best = int(corr[c].argmax())
                print(f"  {c:>2} -> {target:>2}: {corr[c, target]:.2f}  (best match {best}: {corr[c, best]:.2f}, "
                      f"unflipped self {float(plain[c] @ plain[c]):.2f})")


if __name__ == "__main__":
    main()
