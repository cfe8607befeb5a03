"""What every lab experiment shares: its data, its budget, its table, its figure, a small torch loop."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from signlab.data import DataSplit, ImageSet, data_folders, load_images, split_indices
from signlab.lab import Standardiser, flatten_images, one_hot
from signlab.lab.experiments.report import (  # noqa: F401  (re-exported: the experiments import them from here)
    BUDGETS,
    all_finite,
    check_budget,
    fmt,
    new_figure,
    save_figure,
    table,
)

SMOKE_TRAIN, SMOKE_VAL = 256, 128  # images kept on a smoke budget: enough to run every code path, fast
# What an experiment's data= takes: an ImageSet, a dataset folder, or None for signlab's drawn-sign default set.
Source = ImageSet | str | Path | None


def num_classes(split: DataSplit) -> int:
    """m, the number of classes: every class the dataset names, even one a small split happens to miss."""
    return len(split.train.class_names)


def val_part(split: DataSplit) -> ImageSet:
    """The validation part, which every lab experiment measures on (load_data always makes one)."""
    if split.val is None:
        raise ValueError(f"{split.source}: the lab's experiments need a validation part")
    return split.val


def columns(split: DataSplit, standardise: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The lab perceptron's view: X (d, N) pixel columns and one-hot Y (m, N), for train and val."""
    train, val, m = split.train, val_part(split), num_classes(split)
    X_tr, X_va = flatten_images(train.images), flatten_images(val.images)
    if standardise:
        std = Standardiser.fit(X_tr)  # the training part's statistics, for both parts
        X_tr, X_va = std(X_tr), std(X_va)
    return X_tr, one_hot(train.labels, m), X_va, one_hot(val.labels, m)


def tensors(split: DataSplit) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """torch's view: NCHW float32 standardised per channel with the training part's statistics."""
    parts = (split.train, val_part(split))
    x_tr, x_va = (torch.from_numpy(s.images).permute(0, 3, 1, 2).float() / 255 for s in parts)  # (N, 3, H, W)
    mean, std = x_tr.mean(dim=(0, 2, 3), keepdim=True), x_tr.std(dim=(0, 2, 3), keepdim=True) + 1e-6
    y_tr, y_va = (torch.from_numpy(s.labels).long() for s in parts)
    # contiguous: indexing mini-batches out of a permuted view costs twice the time of a conv epoch
    return ((x_tr - mean) / std).contiguous(), y_tr, ((x_va - mean) / std).contiguous(), y_va


def load_data(data: Source, budget: str, seed: int = 0) -> DataSplit:
    """None: signlab's drawn-sign default set (signlab.synth.default), validated on its held-out part: other
    physical signs of every class. A folder or an ImageSet: split by track with signlab.data.split_indices."""
    check_budget(budget)
    if data is None:
        train_folder, heldout = data_folders(None, None)
        train, val = load_images(train_folder), load_images(heldout)
        source = "signlab's drawn signs (val: their held-out set)"
    else:
        ds = data if isinstance(data, ImageSet) else load_images(data)
        tr, va = split_indices(ds, val_fraction=0.2, seed=seed)
        train, val, source = ds.subset(tr), ds.subset(va), str(getattr(ds, "root", "") or "an ImageSet")
    if budget == "smoke":
        rng = np.random.default_rng(seed)
        train = train.subset(np.sort(rng.permutation(len(train))[:SMOKE_TRAIN]))
        val = val.subset(np.sort(rng.permutation(len(val))[:SMOKE_VAL]))
    return DataSplit(train, val, source)


# --- a small torch loop -------------------------------------------------------------------------


@torch.no_grad()
def torch_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 512) -> float:
    model.eval()
    hits = sum((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum().item()
               for i in range(0, len(x), batch))
    model.train()
    return hits / max(len(x), 1)


def train_torch(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
    on_epoch: Callable[[int], None] | None = None,
    optimizer: str = "adam",
) -> float:
    """Adam or SGD (momentum 0.9) on mean cross-entropy, shuffled mini-batches; returns training seconds."""
    g = torch.Generator().manual_seed(seed)
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    seconds = 0.0
    for epoch in range(epochs):
        t0 = time.perf_counter()
        for idx in torch.randperm(len(x), generator=g).split(batch_size):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        seconds += time.perf_counter() - t0
        if on_epoch is not None:
            on_epoch(epoch)
    return seconds


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
