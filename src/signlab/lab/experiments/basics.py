"""Experiments with the lab's NumPy perceptron: loss, initialisation, standardisation, update rule.

Each changes one thing of the perceptron's recipe and keeps the rest fixed: tanh hidden units (128),
softmax + cross-entropy, He/Glorot init, standardised pixels, mini-batches of 32, learning rate 0.05.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from signlab.data import DataSplit
from signlab.lab import History, TwoLayerPerceptron, accuracy, fit
from signlab.lab.experiments.common import (
    Source,
    all_finite,
    columns,
    load_data,
    new_figure,
    num_classes,
    save_figure,
    table,
)


@dataclass(frozen=True)
class Recipe:
    activation: str = "tanh"
    loss: str = "cross_entropy"
    init: str = "modern"
    standardise: bool = True
    rule: str = "minibatch"
    lr: float = 0.05
    hidden: int = 128
    batch_size: int = 32


@dataclass
class Run:
    model: TwoLayerPerceptron
    history: History
    val_curve: list[float]  # validation accuracy after each epoch
    train_acc: float
    val_acc: float


def epochs_for(budget: str, full: int = 10) -> int:
    return {"full": full, "smoke": 1}[budget]


def train(split: DataSplit, r: Recipe, epochs: int, log_every: int | None = None, max_seconds: float | None = None,
          seed: int = 0) -> Run:
    """Train the perceptron with recipe r on split, tracking validation accuracy per epoch."""
    X_tr, Y_tr, X_va, Y_va = columns(split, standardise=r.standardise)  # (d, N) and (m, N)
    model = TwoLayerPerceptron(X_tr.shape[0], r.hidden, num_classes(split), r.activation, r.loss, r.init, seed)
    curve: list[float] = []

    def on_epoch(epoch: int, m: TwoLayerPerceptron) -> None:
        curve.append(accuracy(m.predict(X_va), Y_va))

    hist = fit(model, X_tr, Y_tr, r.rule, r.lr, epochs, r.batch_size, seed, log_every, on_epoch, max_seconds)
    return Run(model, hist, curve, accuracy(model.predict(X_tr), Y_tr), accuracy(model.predict(X_va), Y_va))


def plot_curves(runs: dict[str, Run], n: int, out: Path, name: str, title: str, relative: bool = False,
                styles: dict[str, dict] | None = None) -> Path:
    """Left: training loss per epoch (relative: divided by its start, for losses in different units);
    right: validation accuracy per epoch. styles: matplotlib keywords per run, e.g. a shared colour."""
    fig, (ax_l, ax_a) = new_figure(2)
    for label, run in runs.items():
        loss = np.array(run.history.loss)
        style = (styles or {}).get(label, {})
        ax_l.plot(np.array(run.history.examples_seen) / n, loss / loss[0] if relative else loss, marker=".",
                  label=label, **style)
        ax_a.plot(range(1, len(run.val_curve) + 1), run.val_curve, marker="o", label=label, **style)
    ylabel = "training loss / initial loss" if relative else "mean training loss"
    ax_l.set(xlabel="epoch", ylabel=ylabel, title=title)
    ax_a.set(xlabel="epoch", ylabel="validation accuracy", title="validation accuracy")
    ax_l.legend()
    return save_figure(fig, out, name)


def summary(runs: dict[str, Run]) -> dict:
    return {k: {"train_acc": r.train_acc, "val_acc": r.val_acc, "loss_start": r.history.loss[0],
                "loss_end": r.history.loss[-1]} for k, r in runs.items()}


def finite(res: dict) -> bool:
    return all_finite(*(v for r in res.values() for v in r.values()))


def run_loss(data: Source = None, out: Path = Path("runs/lab"), budget: str = "full") -> dict:
    """The lecture's sigmoid + squared error against softmax + cross-entropy, same everything else."""
    split, epochs = load_data(data, budget), epochs_for(budget)
    runs = {"sigmoid + squared error": train(split, Recipe(loss="squared"), epochs),
            "softmax + cross-entropy": train(split, Recipe(loss="cross_entropy"), epochs)}
    res = summary(runs)
    text = table(("output + loss", "loss start", "loss end", "train acc", "val acc"),
                 [(k, r["loss_start"], r["loss_end"], r["train_acc"], r["val_acc"]) for k, r in res.items()],
                 f"squared error vs cross-entropy: {epochs} epochs, lr 0.05, on {split.source}")
    png = plot_curves(runs, len(split.train), out, "loss", "Learning curves by loss", relative=True)
    return {**res, "table": text, "png": str(png), "finite": finite(res)}


def preactivation_std(split: DataSplit, r: Recipe) -> float:
    """Std of the hidden layer's input a = W x at init: about 1 is what a good init aims for."""
    X_tr = columns(split, standardise=r.standardise)[0]
    model = TwoLayerPerceptron(X_tr.shape[0], r.hidden, num_classes(split), r.activation, r.loss, r.init, seed=0)
    return float((model.W @ X_tr).std())


def run_init(data: Source = None, out: Path = Path("runs/lab"), budget: str = "full") -> dict:
    """N(0, 0.1), the lecture's init, against He (ReLU) / Glorot (sigmoid, tanh), per hidden activation."""
    split, epochs = load_data(data, budget), epochs_for(budget)
    runs, stds, styles = {}, {}, {}
    for colour, act in zip(("C0", "C1", "C2"), ("sigmoid", "tanh", "relu"), strict=True):
        for init, name in (("lecture", "N(0, 0.1)"), ("modern", "He" if act == "relu" else "Glorot")):
            key = f"{act}, {name}"
            stds[key] = preactivation_std(split, Recipe(activation=act, init=init))
            runs[key] = train(split, Recipe(activation=act, init=init), epochs)
            styles[key] = {"color": colour, "linestyle": "--" if init == "lecture" else "-"}
    res = summary(runs)
    for k in res:
        res[k]["preact_std"] = stds[k]
    text = table(("hidden, init", "std of Wx at init", "loss start", "loss end", "train acc", "val acc"),
                 [(k, r["preact_std"], r["loss_start"], r["loss_end"], r["train_acc"], r["val_acc"])
                  for k, r in res.items()],
                 f"initialisation: {epochs} epochs, lr 0.05, d = {split.train.images[0].size} inputs, "
                 f"on {split.source}")
    png = plot_curves(runs, len(split.train), out, "init", "Learning curves by initialisation", styles=styles)
    return {**res, "table": text, "png": str(png), "finite": finite(res)}


def run_standardise(data: Source = None, out: Path = Path("runs/lab"), budget: str = "full") -> dict:
    """Raw pixels in [0, 1] against pixels standardised with the training set's mean and std."""
    split, epochs = load_data(data, budget), epochs_for(budget)
    runs, styles = {}, {}
    for colour, lr in zip(("C0", "C1"), (0.01, 0.05), strict=True):
        for std in (False, True):
            key = f"{'standardised' if std else 'raw [0, 1]'}, lr {lr}"
            runs[key] = train(split, replace(Recipe(), standardise=std, lr=lr), epochs)
            styles[key] = {"color": colour, "linestyle": "-" if std else "--"}
    res = summary(runs)
    text = table(("inputs, learning rate", "loss start", "loss end", "train acc", "val acc"),
                 [(k, r["loss_start"], r["loss_end"], r["train_acc"], r["val_acc"]) for k, r in res.items()],
                 f"input standardisation: {epochs} epochs, on {split.source}")
    png = plot_curves(runs, len(split.train), out, "standardise", "Learning curves, raw vs standardised",
                      styles=styles)
    return {**res, "table": text, "png": str(png), "finite": finite(res)}


def run_descent(data: Source = None, out: Path = Path("runs/lab"), budget: str = "full") -> dict:
    """Gradient descent vs SGD vs mini-batch, each given the same training time and learning rate."""
    split = load_data(data, budget)
    seconds = {"full": 8.0, "smoke": 0.15}[budget]
    n = len(split.train.labels)
    runs = {rule: train(split, Recipe(rule=rule), epochs=10_000, log_every=max(1, n // 10), max_seconds=seconds)
            for rule in ("gd", "sgd", "minibatch")}
    names = {"gd": "gradient descent (all N)", "sgd": "SGD (1 sample)", "minibatch": "mini-batch (32)"}
    steps = {"gd": lambda s: s // n, "sgd": lambda s: s, "minibatch": lambda s: -(-s // 32)}  # ≈ updates
    res = {rule: {"examples_seen": float(r.history.examples_seen[-1]),
                  "updates": float(steps[rule](r.history.examples_seen[-1])),
                  "seconds": r.history.seconds[-1],
                  "loss_end": r.history.loss[-1], "train_acc": r.train_acc, "val_acc": r.val_acc}
           for rule, r in runs.items()}
    text = table(("update rule", "examples seen", "updates", "train s", "loss end", "train acc", "val acc"),
                 [(names[k], int(r["examples_seen"]), int(r["updates"]), r["seconds"], r["loss_end"],
                   r["train_acc"], r["val_acc"]) for k, r in res.items()],
                 f"update rules: {seconds:g} s of training each, lr 0.05, on {split.source}")

    fig, (ax_n, ax_t) = new_figure(2)
    for rule, r in runs.items():
        ax_n.plot(np.array(r.history.examples_seen) / 1000, r.history.loss, label=names[rule])
        ax_t.plot(r.history.seconds, r.history.loss, label=names[rule])
    ax_n.set(xlabel="examples seen (thousands)", ylabel="mean training loss", title="per example seen")
    ax_t.set(xlabel="training time (s)", ylabel="mean training loss", title="per second of training")
    ax_n.legend()
    png = save_figure(fig, out, "descent")
    return {**res, "table": text, "png": str(png), "finite": finite(res)}
