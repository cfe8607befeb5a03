"""Figures for the README: each registered lecture model trained with its defaults on a track split of GTSRB.

    python bench/models.py --data ../shared/datasets/GTSRB-original/Final_Training --models signnet lenet mlp

Prints a markdown table: model, parameters, MACs, epochs, validation accuracy, training seconds, images/s.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from runs import train_run
from signlab.models import count_macs, count_parameters, create_model

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared/datasets/GTSRB-original/Final_Training"))
    parser.add_argument("--models", nargs="+", default=["signnet", "lenet", "mlp"])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "models")
    parser.add_argument("--reuse", action="store_true", help="keep finished runs in --out instead of retraining")
    args = parser.parse_args()
    rows = []
    for name in args.models:
        run = args.out / name
        train_run(run, ["--model", name, "--data", args.data], args.reuse)
        metrics = list(csv.DictReader(open(run / "metrics.csv")))
        best = max(metrics, key=lambda r: float(r["val_accuracy"]))
        model = create_model(name)
        rows.append({"model": name, "parameters": count_parameters(model), "macs": count_macs(model),
                     "epochs": len(metrics), "val_accuracy": float(metrics[-1]["val_accuracy"]),
                     "best_val_accuracy": float(best["val_accuracy"]),
                     "train_seconds": float(metrics[-1]["train_seconds"]),
                     "images_per_second": sum(float(r["images_per_second"]) for r in metrics) / len(metrics)})
    (args.out / "models.json").write_text(json.dumps(rows, indent=1))
    print("\n| model | parameters | MACs/image | epochs | val accuracy (last / best) | train s | train img/s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['parameters']:,} | {r['macs'] / 1e6:.1f} M | {r['epochs']} | "
              f"{r['val_accuracy']:.4f} / {r['best_val_accuracy']:.4f} | {r['train_seconds']:.0f} | "
              f"{r['images_per_second']:.0f} |")


if __name__ == "__main__":
    main()
