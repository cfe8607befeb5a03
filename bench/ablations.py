"""The ablation table of the README: one change at a time against the `fast` preset, on a track split of GTSRB.

    python bench/ablations.py --data ../shared/datasets/GTSRB/Final_Training [--only NAME ...] [--reuse]

Each variant is `signlab train --preset fast --epochs 2` plus its flags (later flags win). Prints a markdown
table: validation accuracy after each epoch, the last epoch's weights with test-time augmentation
(`signlab evaluate --tta`), training seconds and images/s.
One seed per row: read differences below ~0.3 % as noise (one physical sign is 30 of the 3,930 images).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from runs import train_run
from signlab.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[1]
BASE = ["--preset", "fast", "--epochs", "2"]  # the preset had 2 epochs when the table was made
VARIANTS = {  # name: flags after BASE
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
}


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared/datasets/GTSRB/Final_Training"))
    parser.add_argument("--only", nargs="+", choices=list(VARIANTS), metavar="NAME")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ablations")
    parser.add_argument("--reuse", action="store_true", help="keep finished runs in --out instead of retraining")
    args = parser.parse_args()
    rows = []
    for name in args.only or VARIANTS:
        run = args.out / slug(name)
        train_run(run, [*BASE, *VARIANTS[name], "--data", args.data], args.reuse)
        metrics = list(csv.DictReader(open(run / "metrics.csv")))
        tta = evaluate(run / "last.safetensors", tta=True, device_name="cpu")
        rows.append({"variant": name, "flags": " ".join(VARIANTS[name]),
                     "val_accuracy": [float(r["val_accuracy"]) for r in metrics],
                     "tta_accuracy": tta["accuracy"], "train_seconds": float(metrics[-1]["train_seconds"]),
                     "images_per_second": sorted(float(r["images_per_second"]) for r in metrics)[len(metrics) // 2]})
    (args.out / "ablations.json").write_text(json.dumps(rows, indent=1))
    print("\n| variant | flags | val accuracy per epoch | last epoch + TTA | train s | img/s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        per_epoch = " / ".join(f"{a:.2%}" for a in r["val_accuracy"])
        print(f"| {r['variant']} | `{r['flags']}` | {per_epoch} | {r['tta_accuracy']:.2%} | "
              f"{r['train_seconds']:.0f} | {r['images_per_second']:.0f} |")


if __name__ == "__main__":
    main()
