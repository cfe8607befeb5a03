"""Experiments with small torch nets: perceptron vs CNN, vanishing gradients, and learned filters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

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
from signlab.models.mlp import MLP

STOP = 14  # GTSRB class id of the stop sign, the sign whose feature maps we draw when it is there


class SmallCNN(nn.Module):
    """Three conv → BatchNorm → ReLU → 2×2 max-pool stages, then one linear layer: 68,651 parameters (m = 43).

    BatchNorm is there because without it this CNN, trained on the sample's 2 tracks a class, generalised
    no better than the perceptron (about 0.30 held-out accuracy for both; 0.47 with it).
    """

    def __init__(self, m: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 5, padding=2)  # 5×5 so the learned filters are big enough to look at
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 64, 3, padding=1)
        self.bn1, self.bn2, self.bn3 = nn.BatchNorm2d(16), nn.BatchNorm2d(32), nn.BatchNorm2d(64)
        self.pool = nn.MaxPool2d(2)
        self.squeeze = nn.AdaptiveAvgPool2d(4)  # 32×32 input: already 4×4, other sizes: made 4×4
        self.head = nn.Linear(64 * 4 * 4, m)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn1(self.conv1(x)))  # (N, 16, H, W): what the first filters respond to

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))  # (N, 16, 16, 16)
        x = self.pool(torch.relu(self.bn2(self.conv2(x))))  # (N, 32, 8, 8)
        x = self.pool(torch.relu(self.bn3(self.conv3(x))))  # (N, 64, 4, 4)
        return self.head(self.squeeze(x).flatten(1))  # (N, m)


def perceptron(d: int, hidden: int, m: int, activation: str = "relu") -> MLP:
    """The two-layer perceptron (with biases) in torch: d → hidden → m, signlab's `mlp` model itself."""
    return MLP(d, hidden, m, activation)


def run_mlp_vs_cnn(data: Source = None, out: Path = Path("runs/lab"), budget: str = "full") -> dict:
    """The perceptron against a CNN with the same number of parameters, same data, same optimiser."""
    split = load_data(data, budget)
    x_tr, y_tr, x_va, y_va = tensors(split)
    m = num_classes(split)
    epochs, lr = {"full": 12, "smoke": 1}[budget], 3e-3
    torch.manual_seed(0)
    cnn = SmallCNN(m)
    d = x_tr[0].numel()
    # parameters of d → h → m with biases: h(d + 1) + m(h + 1); pick h to match the CNN's count
    hidden = max(1, round((num_params(cnn) - m) / (d + 1 + m)))
    torch.manual_seed(0)
    mlp = perceptron(d, hidden, m)

    curves, rows, res = {}, [], {}
    for name, model in (("perceptron", mlp), ("cnn", cnn)):
        curves[name] = []
        secs = train_torch(model, x_tr, y_tr, epochs, lr, on_epoch=lambda e, net=model, c=curves[name]:
                           c.append(torch_accuracy(net, x_va, y_va)))
        tr, va = torch_accuracy(model, x_tr, y_tr), curves[name][-1]
        rows.append((name, num_params(model), tr, va, secs))
        res[name] = {"params": num_params(model), "train_acc": tr, "val_acc": va, "seconds": secs}
    text = table(("model", "parameters", "train acc", "val acc", "train s"), rows,
                 f"perceptron (hidden {hidden}) vs CNN at equal parameter count, {epochs} epochs of Adam on "
                 f"{len(y_tr)} images of {split.source}")

    fig, (ax,) = new_figure(1)
    for name, accs in curves.items():
        ax.plot(range(1, epochs + 1), accs, marker="o", label=f"{name} ({res[name]['params']:,} params)")
    ax.set(xlabel="epoch", ylabel="validation accuracy", title="Same parameters, different architecture")
    ax.legend()
    png = save_figure(fig, out, "mlp-vs-cnn")
    return {**res, "hidden": hidden, "table": text, "png": str(png),
            "finite": all_finite(*(v for r in res.values() for v in r.values()))}


def deep_net(d: int, m: int, act: type[nn.Module], width: int = 64, depth: int = 6) -> nn.Sequential:
    """depth linear layers, act between them: d → width → … → width → m."""
    sizes = [d] + [width] * (depth - 1) + [m]
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers += [nn.Linear(a, b)] + ([act()] if i < depth - 1 else [])
    return nn.Sequential(*layers)


def layer_grad_norms(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """‖∂L/∂W‖ of each linear layer, input side first, for the mean cross-entropy on (x, y)."""
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    return [m.weight.grad.norm().item() for m in model if isinstance(m, nn.Linear)]


def run_vanishing_gradient(data: Source = None, out: Path = Path("runs/lab"), budget: str = "full") -> dict:
    """Gradient norm per layer of a 6-layer net, sigmoid vs ReLU, at init and after training with SGD."""
    split = load_data(data, budget)
    x_tr, y_tr, x_va, y_va = tensors(split)
    epochs = {"full": 30, "smoke": 1}[budget]
    probe = slice(0, 512)  # the same fixed batch measures every gradient
    norms, res = {}, {}
    for name, act in (("sigmoid", nn.Sigmoid), ("relu", nn.ReLU)):
        torch.manual_seed(0)  # the same initial weights for both: only the nonlinearity differs
        net = deep_net(x_tr[0].numel(), num_classes(split), act)
        norms[f"{name} at init"] = layer_grad_norms(net, x_tr[probe], y_tr[probe])
        # SGD, not Adam: Adam rescales each parameter's step and so would hide how small the gradients are
        train_torch(net, x_tr, y_tr, epochs, lr=0.01, optimizer="sgd")
        norms[f"{name} trained"] = layer_grad_norms(net, x_tr[probe], y_tr[probe])
        res[name] = {"train_acc": torch_accuracy(net, x_tr, y_tr), "val_acc": torch_accuracy(net, x_va, y_va),
                     "first_over_last_at_init": norms[f"{name} at init"][0] / norms[f"{name} at init"][-1]}
    depth = len(next(iter(norms.values())))
    rows = [[f"layer {i + 1}"] + [n[i] for n in norms.values()] for i in range(depth)]
    rows.append(["train acc", "", res["sigmoid"]["train_acc"], "", res["relu"]["train_acc"]])
    rows.append(["val acc", "", res["sigmoid"]["val_acc"], "", res["relu"]["val_acc"]])
    text = table(["‖∂L/∂W‖", *norms], rows,
                 f"6-layer net, gradient norm per layer (layer 1 = input side), "
                 f"{epochs} epochs of SGD with momentum 0.9")

    fig, (ax,) = new_figure(1)
    for name, n in norms.items():
        ax.semilogy(range(1, depth + 1), n, marker="o", color="C0" if "sigmoid" in name else "C3",
                    linestyle="-" if "init" in name else "--", label=name)
    ax.set(xlabel="layer (1 = input side)", ylabel="‖∂L/∂W‖ (log scale)", title="Vanishing gradients")
    ax.legend()
    png = save_figure(fig, out, "vanishing-gradient")
    return {"norms": norms, **res, "table": text, "png": str(png),
            "finite": all_finite(*(v for n in norms.values() for v in n), res["sigmoid"]["val_acc"])}


def grid(tiles: np.ndarray, cols: int, pad: int = 1) -> np.ndarray:
    """(n, h, w[, c]) tiles, each scaled to [0, 1] on its own, laid out in a grid with white gaps."""
    n, h, w = tiles.shape[:3]
    rows = -(-n // cols)
    canvas = np.ones((rows * (h + pad) - pad, cols * (w + pad) - pad) + tiles.shape[3:])
    for i, t in enumerate(tiles):
        t = (t - t.min()) / max(t.max() - t.min(), 1e-12)
        r, c = divmod(i, cols)
        canvas[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = t
    return canvas


def run_filters(data: Source = None, out: Path = Path("runs/lab"), budget: str = "full") -> dict:
    """Train the CNN, then draw its first layer's 5×5 filters and their feature maps on one sign."""
    split = load_data(data, budget)
    x_tr, y_tr, x_va, y_va = tensors(split)
    epochs = {"full": 10, "smoke": 1}[budget]
    torch.manual_seed(0)
    cnn = SmallCNN(num_classes(split))
    train_torch(cnn, x_tr, y_tr, epochs, lr=3e-3)
    acc = torch_accuracy(cnn, x_va, y_va)

    val = val_part(split)
    stops = np.flatnonzero(val.labels == STOP)
    i = int(stops[0]) if len(stops) else 0
    w = cnn.conv1.weight.detach().numpy()  # (16, 3, 5, 5)
    with torch.no_grad():
        maps = cnn.features(x_va[i : i + 1])[0].numpy()  # (16, H, W)
    rows = [(k, float(np.linalg.norm(w[k])), *map(float, w[k].mean(axis=(1, 2))), float(maps[k].mean()))
            for k in range(len(w))]
    text = table(("filter", "‖w‖", "mean R", "mean G", "mean B", "mean activation"), rows,
                 f"first conv layer after {epochs} epochs (val acc {acc:.3f}); "
                 f"activations on {val.class_names[val.labels[i]]!r}")

    fig, axes = new_figure(3, size=(4.0, 4.0))
    axes[0].imshow(val.images[i])
    axes[0].set_title(val.class_names[val.labels[i]])
    axes[1].imshow(grid(w.transpose(0, 2, 3, 1), cols=4))  # filters as tiny RGB images
    axes[1].set_title("first-layer filters (5×5×RGB)")
    axes[2].imshow(grid(maps, cols=4), cmap="gray")
    axes[2].set_title("their feature maps (after ReLU)")
    for ax in axes:
        ax.axis("off")
    png = save_figure(fig, out, "filters")
    return {"val_acc": acc, "sign": val.class_names[val.labels[i]],
            "weight_norms": [r[1] for r in rows], "table": text, "png": str(png),
            "finite": all_finite(acc, *(v for r in rows for v in r[1:]))}
