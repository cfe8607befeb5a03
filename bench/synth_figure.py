"""docs/synth/variants.png: a grid of rendered variants, one row per class, at GTSRB's sizes (upscaled, pixels kept).

    python bench/synth_figure.py                       # default classes, procedural backgrounds
    python bench/synth_figure.py --backgrounds DIR     # crops of your scene photos as well
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from signlab.synth.render import DEFAULT_PARAMS, RenderParams, render_variant

CLASSES = (1, 14, 13, 12, 17, 25, 33, 38)  # speed limit, stop, yield, priority, no entry, road work, turn, keep right


def _scenes(folder: Path | None, limit: int = 40) -> list[np.ndarray]:
    if folder is None:
        return []
    from signlab.synth.dataset import scene_files

    return [np.asarray(Image.open(p).convert("RGB")) for p in scene_files(folder)[:limit]]


def variants_grid(classes=CLASSES, per_class: int = 10, cell: int = 96, seed: int = 0,
                  params: RenderParams = DEFAULT_PARAMS, scenes: list[np.ndarray] | None = None,
                  draw=None) -> Image.Image:
    """Rendered variants, one row per class, each image scaled to cell x cell with nearest-neighbour (so the
    pixels show at GTSRB's sizes). scenes: photos to crop backgrounds from (with probability params.scene_p)."""
    if draw is None:
        from signlab.synth.pictograms import draw_sign as draw
    grid = Image.new("RGB", (per_class * cell, len(classes) * cell), (255, 255, 255))
    for r, c in enumerate(classes):
        sign = draw(c, 256)
        for i in range(per_class):
            g = np.random.default_rng([seed, c, i])
            scene = scenes[int(g.integers(len(scenes)))] if scenes else None
            img, _ = render_variant(sign, g, params, scene)
            grid.paste(Image.fromarray(img).resize((cell, cell), Image.Resampling.NEAREST), (i * cell, r * cell))
    return grid


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/synth/variants.png")
    ap.add_argument("--backgrounds", type=Path, help="folder of scene photos (default: procedural backgrounds)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    variants_grid(seed=args.seed, scenes=_scenes(args.backgrounds)).save(out, optimize=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
