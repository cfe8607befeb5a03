"""The ablation tables of the README: one change at a time against a base recipe, on a track split of GTSRB.

    python bench/ablations.py [--group fast|long] [--data DIR] [--only NAME ...] [--reuse]

Group `fast`: each variant is `signlab train --preset fast --epochs 2` plus its flags (later flags win), on
the usual 10 % split. Group `long`: `--preset fast --epochs 8 --val-fraction 0.3`, for techniques that may
only pay in longer training, judged on 30 % of the tracks (about 390 physical signs instead of 131, so one
odd sign moves accuracy by 0.25 % instead of 0.8 %). Prints a markdown table: validation accuracy after
each epoch, the last epoch's weights with test-time augmentation (`signlab evaluate --tta`), how many
physical signs hold the errors, training seconds and images/s.
One seed per row: read differences below ~0.3 % as noise. `--only NAME` reruns those rows and keeps the
other rows of the group's earlier ablations.json in the table.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from runs import train_run
from signlab.evaluation import evaluate

ROOT = Path(__file__).resolve().parents[1]
BASE = ["--preset", "fast", "--epochs", "2"]  # the preset had 2 epochs when the table was made
VARIANTS = {  # name: flags after the group's base
    "fast, 2 epochs": [],
    "spatial transformer": ["--model", "signnet_stn"],
    "no contrast normalisation": ["--contrast", "none"],
    "no class-aware flips": ["--flips", "0"],
    "no label smoothing": ["--label-smoothing", "0"],
    "EMA of weights 0.999": ["--ema", "0.999"],
    "NCHW (no channels_last)": ["--no-channels-last"],
    "torch.compile": ["--compile"],
    "batch 256": ["--batch-size", "256"],
    "peak LR 0.2": ["--lr", "0.2"],
    "peak LR 0.05": ["--lr", "0.05"],
    "warm-up 5 % (not 20 %)": ["--warmup", "0.05"],
    "3 epochs (not 2)": ["--epochs", "3"],
    "4x the MACs (signnet_wide)": ["--model", "signnet_wide"],
    "one conv at 32x32 (7.5M MACs)": ["--depth", "1,2,2"],
    "4 stages, one conv at 32x32 (8.7M MACs)": ["--widths", "16,32,64,128", "--depth", "1,2,2,1"],
}
LONG_BASE = ["--preset", "fast", "--epochs", "8", "--val-fraction", "0.3"]
LONG_VARIANTS = {
    "fast, 8 epochs, 30 % split": [],
    "random erasing 25 %": ["--erase", "0.25"],
    "saturation jitter 0.3": ["--saturation", "0.3"],
    "full frame (no ROI crop)": ["--crop", "full"],
    "40x40 inputs": ["--image-size", "40"],
    "4x the MACs (signnet_wide)": ["--model", "signnet_wide"],
    "spatial transformer": ["--model", "signnet_stn"],
    "16 epochs": ["--epochs", "16"],
    "colour cast 0.2": ["--color-cast", "0.2"],
    "the best preset": ["--preset", "best", "--epochs", "16"],  # the later --preset wins; --epochs undoes 8
    "stronger geometry": ["--rotate", "15", "--scale", "0.2", "--translate", "0.12"],
    "EMA of weights 0.999": ["--ema", "0.999"],
}
GROUPS = {"fast": (BASE, VARIANTS), "long": (LONG_BASE, LONG_VARIANTS)}


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared/datasets/GTSRB-original/Final_Training"))
    parser.add_argument("--group", choices=list(GROUPS), default="fast")
    parser.add_argument("--only", nargs="+", choices=[*VARIANTS, *LONG_VARIANTS], metavar="NAME")
    parser.add_argument("--out", type=Path, help="default bench/results/ablations (group long: ablations-long)")
    parser.add_argument("--reuse", action="store_true", help="keep finished runs in --out instead of retraining")
    args = parser.parse_args()
    base, variants = GROUPS[args.group]
    out = args.out or ROOT / "bench" / "results" / ("ablations" if args.group == "fast" else "ablations-long")
    results = out / "ablations.json"
    # --only reruns some rows; the other rows of an earlier run stay in the table.
    earlier = {r["variant"]: r for r in json.loads(results.read_text())} if results.exists() else {}
    fresh = {}
    for name in args.only or variants:
        if name not in variants:
            parser.error(f"--only {name!r} is not in group {args.group}")
        run = out / slug(name)
        train_run(run, [*base, *variants[name], "--data", args.data], args.reuse)
        metrics = list(csv.DictReader(open(run / "metrics.csv")))
        tta = evaluate(run / "last.safetensors", tta=True, device_name="cpu")
        fresh[name] = {"variant": name, "flags": " ".join(variants[name]),
                       "val_accuracy": [float(r["val_accuracy"]) for r in metrics],
                       "tta_accuracy": tta["accuracy"], "tracks": tta["tracks"],
                       "train_seconds": float(metrics[-1]["train_seconds"]),
                       "images_per_second": sorted(float(r["images_per_second"]) for r in metrics)[len(metrics) // 2]}
    rows = [fresh.get(name) or earlier[name] for name in variants if name in fresh or name in earlier]
    results.write_text(json.dumps(rows, indent=1))
    print("\n| variant | flags | val accuracy per epoch | last epoch + TTA | signs with errors | train s | img/s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        per_epoch = " / ".join(f"{a:.2%}" for a in r["val_accuracy"])
        signs = f"{r['tracks']['with_errors']} of {r['tracks']['n']}" if r.get("tracks") else "—"
        print(f"| {r['variant']} | `{r['flags']}` | {per_epoch} | {r['tta_accuracy']:.2%} | {signs} | "
              f"{r['train_seconds']:.0f} | {r['images_per_second']:.0f} |")

if __name__ == "__main__":
    main()
