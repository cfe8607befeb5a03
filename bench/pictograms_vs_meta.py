"""How close are our drawn pictograms to GTSRB's reference pictograms? A nearest-neighbour check.

    python bench/pictograms_vs_meta.py --meta ../shared/datasets/GTSRB-original/Meta

Both sets are cropped to the sign (the references are tight crops: triangles are 100x88), composited on the
same grey, shrunk to 32x32 and standardised; each of our 43 drawings is
assigned the reference class it is nearest to (Euclidean distance). A drawing "matches" when that is its own
class. The references are read at run time only, never copied: they are not ours to redistribute, and
some differ in design from the German signs we draw (yellow warning signs, serif digits).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from signlab.classes import GTSRB_CLASS_NAMES
from signlab.synth.pictograms import NUM_CLASSES, draw_sign

SIDE = 32
BACKGROUND = (128, 128, 128, 255)


def features(image: Image.Image) -> np.ndarray:
    """The sign cropped to its opaque part, on grey, 32x32, as a zero-mean, unit-norm vector."""
    image = image.convert("RGBA")
    image = image.crop(image.getchannel("A").point(lambda a: 255 if a > 128 else 0).getbbox())
    base = Image.new("RGBA", image.size, BACKGROUND)
    base.alpha_composite(image)
    a = np.asarray(base.convert("RGB").resize((SIDE, SIDE), Image.Resampling.LANCZOS), dtype=np.float32).ravel()
    a -= a.mean()
    return a / np.linalg.norm(a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meta", type=Path, default=Path("../shared/datasets/GTSRB-original/Meta"))
    args = parser.parse_args()
    refs = np.stack([features(Image.open(args.meta / f"{c}.png")) for c in range(NUM_CLASSES)])
    ours = np.stack([features(draw_sign(c, 128)) for c in range(NUM_CLASSES)])
    dist = np.linalg.norm(ours[:, None] - refs[None], axis=2)  # dist[ours, ref]
    nearest = dist.argmin(1)
    rank = (dist < dist.diagonal()[:, None]).sum(1) + 1  # where the own class comes among the 43 references
    print(f"{'id':>3} {'nearest':>7} {'rank':>4} {'d(own)':>7} {'d(near)':>7}  name")
    for c in range(NUM_CLASSES):
        mark = "" if nearest[c] == c else f"  <- drawn {c}, nearest reference {nearest[c]}"
        row = f"{c:>3} {nearest[c]:>7} {rank[c]:>4} {dist[c, c]:>7.3f} {dist[c, nearest[c]]:>7.3f}"
        print(f"{row}  {GTSRB_CLASS_NAMES[c]}{mark}")
    print(
        f"matched to their own class: {int((rank == 1).sum())}/{NUM_CLASSES}; own class among the nearest 3:", end=" "
    )
    print(f"{int((rank <= 3).sum())}/{NUM_CLASSES}")


if __name__ == "__main__":
    main()
