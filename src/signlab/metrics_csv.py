"""metrics.csv: one row per epoch, written by rank 0, trimmed on resume to the checkpoint's epochs."""

from __future__ import annotations

import csv
from pathlib import Path

METRIC_FIELDS = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr",
                 "images_per_second", "train_seconds", "epoch_seconds"]


def append_metrics(path: Path, row: dict, fields: list[str] = METRIC_FIELDS) -> None:
    """Append one row; `fields` are the columns (a detection run has its own, signlab.detection.train)."""
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        if new:
            writer.writeheader()
        writer.writerow({k: ("" if row[k] is None else row[k]) for k in fields})


def truncate_metrics(path: Path, completed_epochs: int) -> None:
    """Drop rows of epochs after the checkpoint we resume from (a kill can land between row and checkpoint)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if int(r["epoch"]) <= completed_epochs]
        fields = list(reader.fieldnames or METRIC_FIELDS)  # the file's own columns
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def format_row(row: dict, epochs: int) -> str:
    val = (f"val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.4f}" if row["val_accuracy"] is not None
           else "no validation set")
    return (f"epoch {row['epoch']:>3}/{epochs}  train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.4f}  "
            f"{val}  lr {row['lr']:.4g}  {row['images_per_second']:.0f} img/s  {row['train_seconds']:.1f} s")
