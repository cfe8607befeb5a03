"""Pooling: does the exact location of a patch matter? The same CNN with max-pooling, with strided convolutions,
and with no downsampling before a global average, tested on shifted and rescaled signs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

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
)

VARIANTS = ("max-pool", "strided", "no-downsampling")
# the conv widths every variant shares; half the lab's SmallCNN's, because without downsampling every conv
# runs at 32×32 and the no-downsampling net costs 5× the max-pool net's arithmetic
WIDTHS = (8, 16, 32)
SHIFTS = (0, 2, 4, 6, 8)  # px, for the accuracy table
SCALES = (0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3)
PROBE_SHIFTS = tuple(range(9))  # px, for the feature measures: every step, so a stride's period shows
DIRECTIONS = ((0, 1), (0, -1), (1, 0), (-1, 0))  # (dy, dx): right, left, down, up
BUDGET = {"full": {"seeds": 2, "epochs": 8}, "smoke": {"seeds": 1, "epochs": 1}}


class PoolingCNN(nn.Module):
    """Three conv → BatchNorm → ReLU stages (8, 16, 32 channels), a global average and one linear layer.

    Only where the map shrinks differs: "max-pool" halves it with a 2×2 max-pool after each stage (32 → 4),
    "strided" gives each conv stride 2 instead (32 → 4), "no-downsampling" keeps 32×32 to the end. The
    global average makes the head the same 32 → m layer for all three, so all have the same parameters.
    """

    def __init__(self, m: int, variant: str, padding_mode: str = "zeros") -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant {variant!r}: use one of {', '.join(VARIANTS)}")
        self.variant = variant
        stride = 2 if variant == "strided" else 1
        ins, kernels = (3,) + WIDTHS[:-1], (5, 3, 3)
        self.convs = nn.ModuleList(nn.Conv2d(i, o, k, stride=stride, padding=k // 2, padding_mode=padding_mode)
                                   for i, o, k in zip(ins, WIDTHS, kernels, strict=True))
        self.bns = nn.ModuleList(nn.BatchNorm2d(o) for o in WIDTHS)
        self.pool = nn.MaxPool2d(2) if variant == "max-pool" else nn.Identity()
        self.head = nn.Linear(WIDTHS[-1], m)

    def last_map(self, x: torch.Tensor) -> torch.Tensor:
        """The last conv's map after ReLU, before any pooling: (N, 32, 8, 8), (N, 32, 4, 4) or (N, 32, 32, 32)."""
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns, strict=True)):
            x = self.pool(x) if i else x  # pool after each stage: before the next conv, and below after the last
            x = torch.relu(bn(conv(x)))
        return x

    def pooled(self, last: torch.Tensor) -> torch.Tensor:
        """What the linear head sees: (N, 32), the global average of the (pooled) last map."""
        return self.pool(last).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled(self.last_map(x)))  # (N, m)


def shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Move the content of (N, C, H, W) images dy px down and dx px right (negative: up, left).

    The vacated rows and columns repeat the image's own edge pixels, so the background goes on as it was.
    Zero fill would be the mean colour here (the pixels are standardised): a flat band with a straight edge,
    a new pattern the net never saw in training. Pixels that stay in the frame are copied exactly.
    """
    h, w = x.shape[-2:]
    rows = (torch.arange(h) - dy).clamp(0, h - 1)
    cols = (torch.arange(w) - dx).clamp(0, w - 1)
    return x[..., rows[:, None], cols]


def rescale(x: torch.Tensor, s: float) -> torch.Tensor:
    """Zoom (N, C, H, W) images by s about their centre (s > 1: the sign grows and its rim leaves the frame),
    bilinear; what comes into view when s < 1 repeats the edge pixels, as in shift."""
    if s == 1:
        return x.clone()
    theta = torch.tensor([[1 / s, 0.0, 0.0], [0.0, 1 / s, 0.0]], dtype=x.dtype).expand(len(x), 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def shift_each(x: torch.Tensor, k: int) -> torch.Tensor:
    """Image i moved k px in DIRECTIONS[i % 4]: all four directions in one pass over the images."""
    out = torch.empty_like(x)
    for j, (dy, dx) in enumerate(DIRECTIONS):
        out[j::4] = shift(x[j::4], k * dy, k * dx)
    return out


@torch.no_grad()
def displacement(model: PoolingCNN, x: torch.Tensor, k: int) -> tuple[float, float]:
    """How the net's features follow a shift of the input by k px to the right, as two numbers:

    - the relative change of the pooled vector, mean over images of ‖p(shifted) − p(x)‖ / ‖p(x)‖:
      0 means the head sees exactly the same thing (invariance);
    - how far the centroid of the last conv map (channels summed, only its above-mean part) moves right, in
      input px: k would mean the map moves with the sign (equivariance), 0 that it stays put.
    """
    model.eval()
    xs = shift(x, 0, k)
    m0, m1 = model.last_map(x), model.last_map(xs)  # (N, 32, h, w)
    p0, p1 = model.pooled(m0), model.pooled(m1)  # (N, 32)
    change = ((p1 - p0).norm(dim=1) / p0.norm(dim=1).clamp_min(1e-12)).mean().item()
    a0, a1 = m0.sum(1), m1.sum(1)  # (N, h, w)
    w = a0.shape[-1]
    px = (torch.arange(w, dtype=a0.dtype) + 0.5) * (x.shape[-1] / w)  # map column centres in input px

    def centroid(a: torch.Tensor) -> torch.Tensor:  # (N,)
        # only where the map stands out above its own mean: the flat background response would pin the
        # centroid to the middle of the frame
        a = (a - a.mean(dim=(1, 2), keepdim=True)).clamp_min(0)
        col = a.sum(1)  # (N, w)
        return (col * px).sum(1) / col.sum(1).clamp_min(1e-12)

    model.train()
    return change, (centroid(a1) - centroid(a0)).mean().item()


def train_variant(variant: str, split_tensors: tuple, m: int, epochs: int, seed: int) -> dict:
    """Train one variant with one seed (no augmentation), then measure it on shifted and rescaled signs."""
    x_tr, y_tr, x_va, y_va = split_tensors
    torch.manual_seed(seed)
    net = PoolingCNN(m, variant)
    secs = train_torch(net, x_tr, y_tr, epochs, lr=3e-3, seed=seed)
    # 256 signs spread over the validation part (it is sorted by class): enough for the feature measures
    probe = x_va[:: max(1, len(x_va) // 256)][:256]
    moves = [displacement(net, probe, k) for k in PROBE_SHIFTS]
    return {"params": num_params(net), "seconds": secs,
            "shift": [torch_accuracy(net, shift_each(x_va, k), y_va) for k in SHIFTS],
            "scale": [torch_accuracy(net, rescale(x_va, s), y_va) for s in SCALES],
            "feature_change": [c for c, _ in moves], "centroid_move": [d for _, d in moves]}


def mean_sd(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def summary(runs: dict[str, list[dict]], key: str) -> dict[str, tuple[list[float], list[float]]]:
    """variant -> (mean, sd over seeds) of a per-amount list."""
    return {v: (np.mean([r[key] for r in rs], 0).tolist(), np.std([r[key] for r in rs], 0).tolist())
            for v, rs in runs.items()}


def tables(runs: dict[str, list[dict]], title: str) -> str:
    def rows(key: str, picks: range | list[int]) -> list[list]:
        return [[v, *(mean_sd([r[key][i] for r in rs]) for i in picks)] for v, rs in runs.items()]

    acc = table(["variant", "params", "train s", *(f"shift {k}" for k in SHIFTS)],
                [[v, rs[0]["params"], float(np.mean([r["seconds"] for r in rs])),
                  *(mean_sd([r["shift"][i] for r in rs]) for i in range(len(SHIFTS)))] for v, rs in runs.items()],
                title + "\nvalidation accuracy on signs shifted k px (a quarter each right, left, down, up; edge "
                "pixels repeated)")
    scale = table(["variant", *(f"×{s}" for s in SCALES)], rows("scale", range(len(SCALES))),
                  "validation accuracy on signs zoomed about their centre")
    picks = [PROBE_SHIFTS.index(k) for k in (1, 2, 4, 8)]
    feat = table(["variant", *(f"Δp k={PROBE_SHIFTS[i]}" for i in picks),
                  *(f"centroid k={PROBE_SHIFTS[i]}" for i in picks)],
                 [[v, *r, *c] for (v, *r), (_, *c)
                  in zip(rows("feature_change", picks), rows("centroid_move", picks), strict=True)],
                 "input shifted k px right: relative change of the pooled features ‖Δp‖/‖p‖, and how far the "
                 "last conv map's centroid moves (px)")
    return "\n".join((acc, scale, feat))  # as printed: one table after the other


def run_pooling(data: Source = None, out: Path = Path("runs/lab"), budget: str = "full") -> dict:
    """Max-pool vs strided vs no downsampling: accuracy on shifted and zoomed signs, and how the features move."""
    split = load_data(data, budget)
    parts = tensors(split)
    m, cfg = num_classes(split), BUDGET[budget]
    runs = {v: [train_variant(v, parts, m, cfg["epochs"], seed) for seed in range(cfg["seeds"])]
            for v in VARIANTS}
    text = tables(runs, f"the same CNN, three ways to shrink its maps; {cfg['epochs']} epochs of Adam, no "
                        f"augmentation, {cfg['seeds']} seed(s), on {len(parts[1])} images of {split.source}")
    png = plot(runs, parts[2][:1], out)
    res = {v: {"params": rs[0]["params"], "seconds": [r["seconds"] for r in rs],
               **{key: dict(zip(("mean", "sd"), ms, strict=True)) for key, ms in
                  ((k, summary({v: rs}, k)[v]) for k in ("shift", "scale", "feature_change", "centroid_move"))}}
           for v, rs in runs.items()}
    nums = [x for r in res.values() for key in ("shift", "scale", "feature_change", "centroid_move")
            for part in r[key].values() for x in part]
    return {**res, "shifts": list(SHIFTS), "scales": list(SCALES), "probe_shifts": list(PROBE_SHIFTS),
            "table": text, "png": str(png), "finite": all_finite(*nums)}


def plot(runs: dict[str, list[dict]], example: torch.Tensor, out: Path) -> Path:
    """Four panels of curves (mean ± sd over seeds) and one strip of the transformed example sign."""
    fig, axes = new_figure(3, 2, size=(4.2, 3.2))
    panels = (("shift", SHIFTS, "shift (px)", "validation accuracy"),
              ("scale", SCALES, "zoom factor", "validation accuracy"),
              ("feature_change", PROBE_SHIFTS, "input shift (px, right)", "‖Δ pooled features‖ / ‖p‖"),
              ("centroid_move", PROBE_SHIFTS, "input shift (px, right)", "last map's centroid moves (px)"))
    for ax, (key, xs, xlabel, ylabel) in zip(axes, panels, strict=False):
        for v, (mean, sd) in summary(runs, key).items():
            ax.errorbar(xs, mean, yerr=sd, marker="o", ms=3, capsize=2, label=v)
        ax.set(xlabel=xlabel, ylabel=ylabel)
    axes[3].plot(PROBE_SHIFTS, PROBE_SHIFTS, "k:", lw=1, label="moves with the sign")
    axes[0].legend(fontsize=8)
    axes[3].legend(fontsize=8)
    axes[0].set_title("Accuracy against shift")
    axes[1].set_title("Accuracy against zoom")
    axes[2].set_title("Invariance of what the head sees")
    axes[3].set_title("Equivariance of the last conv map")
    strips = [shift(example, 0, k) for k in SHIFTS[1::2]] + [rescale(example, s) for s in (0.7, 1.3)]
    img = torch.cat([example, *strips], dim=3)[0].permute(1, 2, 0).numpy()  # (H, 6W, 3)
    axes[4].remove()
    axes[5].remove()
    strip = fig.add_subplot(axes[0].get_subplotspec().get_gridspec()[1, 1:])  # the two free panels as one
    strip.imshow((img - img.min()) / (img.max() - img.min()))
    strip.set_title("one validation sign: as is, shifted right 2 and 6 px, zoomed ×0.7 and ×1.3")
    strip.axis("off")
    return save_figure(fig, out, "pooling")
