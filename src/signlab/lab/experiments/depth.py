"""Depth at an equal parameter budget: ReLU MLPs with 1, 2, 4, 8 hidden layers and a CNN with 2, 4, 8 conv
layers, each width chosen so every net has (nearly) the same number of parameters, several seeds each.

The deepest MLP is then retrained with one of the lecture's tricks taken away (sigmoid instead of ReLU,
N(0, 0.1) instead of He, raw pixels instead of standardised ones) to see which of them depth leans on.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from signlab.data import DataSplit
from signlab.lab.experiments.common import (
    Source,
    all_finite,
    load_data,
    new_figure,
    num_classes,
    num_params,
    save_figure,
    table,
    tensors,
    torch_accuracy,
    train_torch,
    val_part,
)

MLP_DEPTHS = (1, 2, 4, 8)  # hidden layers
CNN_DEPTHS = (2, 4, 8)  # conv layers
# 1 hidden layer of 256 on 32×32×3 pixels: big enough that the 8-layer net's h×h layers hold a third of it
MLP_BUDGET = 800_000
CNN_BUDGET = 40_000  # a bit under the lab's SmallCNN (68,651): CNN time is most of the run
MLP_EPOCHS = {"full": 10, "smoke": 1}
CNN_EPOCHS = {"full": 5, "smoke": 1}  # ~3.5 s an epoch each on the drawn signs
SEEDS = {"full": 3, "smoke": 2}
LR = 1e-3  # Adam
# the deepest MLP with one trick taken away: name -> (activation, init, standardised pixels)
ABLATIONS = {"sigmoid": ("sigmoid", "he", True), "N(0, 0.1) init": ("relu", "normal", True),
             "raw pixels": ("relu", "he", False)}
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid}


# --- the nets and their parameter counts ------------------------------------------------------------


def mlp_params(d: int, m: int, depth: int, width: int) -> int:
    """d → width (→ width)×(depth−1) → m, every linear layer with biases."""
    return (d + 1) * width + (depth - 1) * (width + 1) * width + (width + 1) * m


def cnn_params(m: int, depth: int, width: int) -> int:
    """depth 3×3 convs of `width` channels (with biases), a BatchNorm (γ, β) after each, a 4×4×width → m head."""
    convs = (9 * 3 + 1) * width + (depth - 1) * (9 * width + 1) * width
    return convs + 2 * width * depth + (16 * width + 1) * m


def match_width(count: Callable[[int], int], budget: int, widest: int = 4096) -> int:
    """The width whose parameter count lies closest to the budget."""
    return min(range(1, widest + 1), key=lambda w: abs(count(w) - budget))


def mlp(d: int, m: int, depth: int, width: int, act: str = "relu", init: str = "he") -> nn.Sequential:
    """A plain MLP with `depth` hidden layers; init "he" (Kaiming normal) or "normal", the slides' N(0, 0.1)."""
    sizes = [d] + [width] * depth + [m]
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        lin = nn.Linear(a, b)
        if init == "he":
            nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
        else:
            nn.init.normal_(lin.weight, std=0.1)
        nn.init.zeros_(lin.bias)
        layers += [lin] + ([ACTIVATIONS[act]()] if i < depth else [])
    return nn.Sequential(*layers)


def pool_after(depth: int) -> set[int]:
    """Which conv layers (0-based) a 2×2 max-pool follows: always the first, then the rest split between
    16×16 and 8×8, so every depth ends on 4×4 maps and the deep nets spend their layers where maps are small."""
    rest = depth - 1
    return {0, (rest + 1) // 2, depth - 1} if depth > 1 else {0}


class DepthCNN(nn.Module):
    """depth × (3×3 conv → BatchNorm → ReLU), three 2×2 max-pools, a linear head on the 4×4 maps."""

    def __init__(self, m: int, depth: int, width: int) -> None:
        super().__init__()
        pools = pool_after(depth)
        layers: list[nn.Module] = []
        for i in range(depth):
            conv = nn.Conv2d(3 if i == 0 else width, width, 3, padding=1)
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            layers += [conv, nn.BatchNorm2d(width), nn.ReLU()] + ([nn.MaxPool2d(2)] if i in pools else [])
        if len(pools) < 3:  # depth 1 or 2: the same 32 → 4 reduction needs its missing pools at the end
            layers += [nn.MaxPool2d(2)] * (3 - len(pools))
        self.body = nn.Sequential(*layers)
        self.squeeze = nn.AdaptiveAvgPool2d(4)  # inputs larger than 32×32 end on 4×4 too
        self.head = nn.Linear(16 * width, m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.squeeze(self.body(x)).flatten(1))  # (N, m)


# --- training ---------------------------------------------------------------------------------------


def raw_tensors(split: DataSplit) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels in [0, 1], NCHW, not standardised: the "raw pixels" ablation's view of train and val."""
    return tuple(torch.from_numpy(s.images).permute(0, 3, 1, 2).float().div(255).contiguous()
                 for s in (split.train, val_part(split)))


def fit(make: Callable[[], nn.Module], data: tuple, epochs: int, seeds: int) -> dict:
    """Train a fresh net per seed (its weights and its batch order); validation accuracy after every epoch."""
    x_tr, y_tr, x_va, y_va = data
    curves, train_accs, seconds = [], [], 0.0
    for seed in range(seeds):
        torch.manual_seed(seed)
        net, curve = make(), []
        seconds += train_torch(net, x_tr, y_tr, epochs, LR, seed=seed,
                               on_epoch=lambda e, n=net, c=curve: c.append(torch_accuracy(n, x_va, y_va)))
        curves.append(curve)
        train_accs.append(torch_accuracy(net, x_tr, y_tr))
    acc = np.array(curves)  # (seeds, epochs)
    return {"params": num_params(net), "val_mean": float(acc[:, -1].mean()), "val_sd": float(acc[:, -1].std()),
            "train_mean": float(np.mean(train_accs)), "curve_mean": acc.mean(0).tolist(),
            "curve_sd": acc.std(0).tolist(), "seconds_per_seed": seconds / seeds}


def train_all(split: DataSplit, budget: str) -> dict[str, dict]:
    """Every plain MLP and CNN depth, then the deepest MLP without each trick: name -> its numbers."""
    std_data, (raw_tr, raw_va) = tensors(split), raw_tensors(split)
    raw_data = (raw_tr, std_data[1], raw_va, std_data[3])
    d, m, seeds = std_data[0][0].numel(), num_classes(split), SEEDS[budget]
    e_mlp, e_cnn = MLP_EPOCHS[budget], CNN_EPOCHS[budget]
    runs: dict[str, dict] = {}
    for depth in MLP_DEPTHS:
        w = match_width(lambda w, k=depth: mlp_params(d, m, k, w), MLP_BUDGET)
        runs[f"mlp {depth}"] = {"depth": depth, "width": w,
                                **fit(lambda k=depth, w=w: mlp(d, m, k, w), std_data, e_mlp, seeds)}
    deep = runs[f"mlp {MLP_DEPTHS[-1]}"]
    for name, (act, init, standardised) in ABLATIONS.items():
        make = lambda a=act, i=init: mlp(d, m, deep["depth"], deep["width"], a, i)  # noqa: E731
        runs[f"mlp {deep['depth']}, {name}"] = {"depth": deep["depth"], "width": deep["width"],
                                                **fit(make, std_data if standardised else raw_data, e_mlp, seeds)}
    for depth in CNN_DEPTHS:
        w = match_width(lambda w, k=depth: cnn_params(m, k, w), CNN_BUDGET, widest=512)
        runs[f"cnn {depth}"] = {"depth": depth, "width": w,
                                **fit(lambda k=depth, w=w: DepthCNN(m, k, w), std_data, e_cnn, seeds)}
    return runs


def run_depth(data: Source = None, out: Path = Path("runs/lab"), budget: str = "full") -> dict:
    """Plain ReLU MLPs and CNNs of growing depth at a fixed parameter budget, then the deepest MLP ablated."""
    split = load_data(data, budget)
    threads = torch.get_num_threads()
    # one thread: these nets are small, and on a busy 2-core machine two threads ran the CNNs 3-8x slower
    torch.set_num_threads(1)
    try:
        runs = train_all(split, budget)
    finally:
        torch.set_num_threads(threads)
    m = num_classes(split)
    rows = [(name, r["depth"], r["width"], r["params"], r["val_mean"], r["val_sd"], r["train_mean"],
             r["seconds_per_seed"]) for name, r in runs.items()]
    text = table(("net", "layers", "width", "parameters", "val acc", "± sd", "train acc", "train s/seed"), rows,
                 f"depth at an equal parameter budget: MLPs ~{MLP_BUDGET:,} ({MLP_EPOCHS[budget]} epochs), "
                 f"CNNs ~{CNN_BUDGET:,} ({CNN_EPOCHS[budget]} epochs), Adam lr {LR:g}, {SEEDS[budget]} seeds "
                 f"(mean ± sd of the final val accuracy); {len(split.train)} training images of {split.source}")
    png = plot(runs, out, chance=1 / m)
    return {"runs": runs, "table": text, "png": str(png),
            "finite": all_finite(*(v for r in runs.values() for v in (*r["curve_mean"], r["val_sd"])))}


# --- the figure -------------------------------------------------------------------------------------


def plot(runs: dict[str, dict], out: Path, chance: float) -> Path:
    """Learning curves (mean ± sd band) of the MLPs and the CNNs, and final accuracy against depth."""
    fig, (ax_m, ax_c, ax_d) = new_figure(3, size=(4.4, 3.5))
    for ax, kind in ((ax_m, "mlp"), (ax_c, "cnn")):
        plain = [r for n, r in runs.items() if n.startswith(kind) and "," not in n]
        for i, r in enumerate(plain):
            mean, sd = np.array(r["curve_mean"]), np.array(r["curve_sd"])
            x = np.arange(1, len(mean) + 1)
            ax.plot(x, mean, marker="o", ms=3, color=f"C{i}", label=f"{r['depth']} layers, width {r['width']}")
            ax.fill_between(x, mean - sd, mean + sd, color=f"C{i}", alpha=0.2)
        ax.axhline(chance, color="grey", lw=0.8, ls=":")
        ax.set(xlabel="epoch", ylabel="validation accuracy", title=f"{kind.upper()}s at equal parameters")
        ax.legend(fontsize=8)
    for kind, marker in (("mlp", "o"), ("cnn", "s")):
        plain = [r for n, r in runs.items() if n.startswith(kind) and "," not in n]
        ax_d.errorbar([r["depth"] for r in plain], [r["val_mean"] for r in plain], [r["val_sd"] for r in plain],
                      marker=marker, capsize=3, label=f"{kind.upper()}, ReLU + He + standardised")
    for i, (name, r) in enumerate((n, r) for n, r in runs.items() if "," in n):
        ax_d.errorbar(r["depth"] * (1.08 + 0.08 * i), r["val_mean"], r["val_sd"], marker="x", capsize=3,
                      ls="none", color=f"C{i + 2}", label=f"MLP {r['depth']} layers, {name.split(', ', 1)[1]}")
    ax_d.axhline(chance, color="grey", lw=0.8, ls=":")
    ax_d.set_xscale("log", base=2)
    ax_d.set_xticks([1, 2, 4, 8], ["1", "2", "4", "8"])
    ax_d.set(xlabel="layers (log scale)", ylabel="final validation accuracy", title="Depth, and the tricks")
    ax_d.legend(fontsize=8)
    return save_figure(fig, out, "depth")


__all__ = ["DepthCNN", "cnn_params", "match_width", "mlp", "mlp_params", "pool_after", "run_depth"]
