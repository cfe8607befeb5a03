"""What 10 % more training tracks buy: the same recipe trained on 70 % and on 63 % of GTSRB's tracks,
both scored on the same held-out 30 %.

    python bench/more_tracks.py --preset fast --seeds 0 1 2 3 4 --extra --threads 2

`best` validates on 10 % of the tracks and trains on the other 90 %; with `--val-fraction 0` it would train
on all of them, 11 % more. This measures that ratio one step down, where it can be scored: on split seed S,
run A holds out 30 % of the tracks (`--val-fraction 0.3`), run B 37 % (`--val-fraction 0.37`: the same
per-class track order, so on GTSRB its held-out tracks contain A's; the scoring checks it). B trains on 90 %
of what A trains on. Both are scored on A's held-out images (any that B trained on are left out, and
counted) with their last weights, without and with test-time augmentation; the table gives A − B per split
and its mean ± sd.
Writes bench/results/more_tracks/PRESET.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from signlab.data import split_indices
from signlab.predict import load_model, predict_images

sys.path.insert(0, str(Path(__file__).resolve().parent))
from protocol import mean_sd  # noqa: E402
from records import run_preset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared/datasets/GTSRB-original/Final_Training"
COMMON, FEWER = 0.3, 0.37  # 0.63 = 0.9 x 0.7: B trains on nine tenths of A's tracks


def score(weights: Path, data: str, common: float, split_seed: int) -> dict:
    """Accuracy of `weights` on the held-out tracks of a `common` split, leaving out images it trained on."""
    loaded = load_model(weights, torch.device("cpu"))
    cfg = loaded.config
    full = loaded.preprocessing.load(data, cfg.max_bad_fraction)
    _, held_out = split_indices(full, common, split_seed)
    trained, _ = split_indices(full, cfg.val_fraction, cfg.split_seed)
    keep = np.setdiff1d(held_out, trained)
    images, labels = full.images[keep], full.labels[keep]
    out = {"images": len(keep), "left_out": int(len(held_out) - len(keep))}
    for tta in (False, True):
        predicted = predict_images(loaded, images, torch.device("cpu"), tta=tta).argmax(1).numpy()
        out["tta" if tta else "plain"] = float((predicted == labels).mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "more_tracks")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="flags passed to signlab train")
    args = parser.parse_args()
    pairs = []
    for seed in args.seeds:
        pair = {"split_seed": seed}
        for arm, fraction in (("more", COMMON), ("fewer", FEWER)):
            work = args.out / "runs" / f"{args.preset}-{arm}-s{seed}"
            run = run_preset(args.preset, args.data, work, [*args.extra, "--val-fraction", str(fraction),
                                                            "--split-seed", str(seed), "--seed", str(seed)])
            # Both arms are scored on the common split, so the larger arm's own validation figure is not used.
            pair[arm] = {"train_seconds": run["curve"][-1]["train_seconds"],
                         **score(work / args.preset / "last.safetensors", args.data, COMMON, seed)}
        pair["gain_tta"] = pair["more"]["tta"] - pair["fewer"]["tta"]
        pair["gain_plain"] = pair["more"]["plain"] - pair["fewer"]["plain"]
        pairs.append(pair)
        print(f"split {seed}: 70 % {pair['more']['tta']:.4f}  63 % {pair['fewer']['tta']:.4f} (TTA; "
              f"{pair['fewer']['left_out']} images left out)  gain {100 * pair['gain_tta']:+.2f} points", flush=True)
    gains = {key: [p[key] for p in pairs] for key in ("gain_tta", "gain_plain")}
    summary = {key: mean_sd(v) for key, v in gains.items()}
    report = {"preset": args.preset, "extra": args.extra, "data": args.data, "fractions": [COMMON, FEWER],
              "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                       cwd=ROOT).stdout.strip(),
              "threads": torch.get_num_threads(), "summary": summary, "pairs": pairs}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.preset}.json").write_text(json.dumps(report, indent=1))
    for key, (mean, sd) in summary.items():
        print(f"{key}: {100 * mean:+.2f} ± {100 * sd:.2f} points over {len(pairs)} splits "
              f"(negative on {sum(g < 0 for g in gains[key])})")


if __name__ == "__main__":
    main()
