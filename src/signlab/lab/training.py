"""Training the lecture's perceptron: standardisation, the three update rules, accuracy, and GTSRB.

Samples are columns throughout, as on the slides: X is (d, N), one-hot targets Y are (m, N).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from signlab.lab.perceptron import TwoLayerPerceptron

RULES = ("gd", "sgd", "minibatch")


@dataclass
class Standardiser:
    """x ↦ (x − μ) / s with the per-feature mean μ and std s of the *training* set only.

    Validation and test data are transformed with the training statistics: computing them on the
    data we evaluate on would leak information about it into the model.
    """

    mean: np.ndarray  # (d, 1)
    std: np.ndarray  # (d, 1)

    @classmethod
    def fit(cls, X: np.ndarray) -> Standardiser:
        mean = X.mean(axis=1, keepdims=True)
        std = X.std(axis=1, keepdims=True)
        # a constant feature (std 0) carries no information: leave it at 0 instead of dividing by 0
        return cls(mean, np.where(std > 1e-12, std, 1.0))

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean) / self.std


def one_hot(labels: np.ndarray, m: int, dtype: type = np.float64) -> np.ndarray:
    """Class ids (N,) -> targets (m, N) with a single 1 per column."""
    Y = np.zeros((m, len(labels)), dtype=dtype)
    Y[labels, np.arange(len(labels))] = 1.0
    return Y


def accuracy(Y_hat: np.ndarray, Y: np.ndarray) -> float:
    """As on the slides: the share of samples (columns) whose argmax of ỹ equals the argmax of y."""
    return float(np.mean(Y_hat.argmax(axis=0) == Y.argmax(axis=0)))


def flatten_images(images: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    """(N, H, W, C) uint8 images -> (H·W·C, N) columns of pixel values in [0, 1]."""
    return (images.reshape(len(images), -1).T / 255.0).astype(dtype)


# --- the slides' three update rules -------------------------------------------------------------


def batches(n: int, rule: str, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """One epoch of sample indices: all n at once ("gd"), one at a time ("sgd"), or batch_size at a time."""
    if rule == "gd":
        yield np.arange(n)
        return
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    size = 1 if rule == "sgd" else batch_size
    order = rng.permutation(n)  # a fresh shuffle per epoch, so batches differ from epoch to epoch
    for start in range(0, n, size):
        yield order[start : start + size]


def step(model: TwoLayerPerceptron, X: np.ndarray, Y: np.ndarray, lr: float) -> float:
    """One gradient step on the batch X (d, B), Y (m, B); returns the batch's summed loss.

    The slides' L sums over samples; we step along the *mean* gradient (∂L/∂θ / B) so that one
    learning rate means the same for all three rules instead of growing with the batch size.
    """
    L, grads = model.loss_and_grads(X, Y)
    for name, p in model.parameters().items():
        p -= (lr / X.shape[1]) * grads[name]  # in place: the model's arrays are updated
    return L


@dataclass
class History:
    """Mean loss on the training data, recorded as training goes on."""

    examples_seen: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)


def fit(
    model: TwoLayerPerceptron,
    X: np.ndarray,
    Y: np.ndarray,
    rule: str = "minibatch",
    lr: float = 0.1,
    epochs: int = 10,
    batch_size: int = 32,
    seed: int = 0,
    log_every: int | None = None,
    on_epoch: Callable[[int, TwoLayerPerceptron], None] | None = None,
    max_seconds: float | None = None,
) -> History:
    """Train with one of the update rules; every log_every examples (default: each epoch) record the loss.

    The recorded loss is the mean over all of X: it costs a forward pass, and its time is not counted
    in History.seconds, which measures training alone. With max_seconds, training stops (after the
    current step) once that much training time has passed, however many epochs are left.
    """
    rng = np.random.default_rng(seed)
    n = X.shape[1]
    log_every = log_every or n
    hist, seen, clock = History(), 0, 0.0

    def record() -> None:
        hist.examples_seen.append(seen)
        hist.seconds.append(clock)
        hist.loss.append(model.loss(X, Y) / n)

    record()
    next_log = log_every
    for epoch in range(epochs):
        for idx in batches(n, rule, batch_size, rng):
            if max_seconds is not None and clock >= max_seconds:
                break
            t0 = time.perf_counter()
            step(model, X[:, idx], Y[:, idx], lr)
            clock += time.perf_counter() - t0
            seen += len(idx)
            if seen >= next_log:
                record()
                while next_log <= seen:  # one full-batch step may cross several log points
                    next_log += log_every
        if on_epoch is not None:
            on_epoch(epoch, model)
        if max_seconds is not None and clock >= max_seconds:
            break
    if hist.examples_seen[-1] != seen:  # stopped between two log points: record where we stopped
        record()
    return hist


# --- the perceptron on traffic signs -----------------------------------------------------------


@dataclass
class PerceptronResult:
    model: TwoLayerPerceptron
    standardiser: Standardiser | None
    history: History
    train_accuracy: float
    val_accuracy: float

    def accuracy_on(self, ds) -> float:
        """Accuracy on another ImageSet (e.g. the held-out part), with the training set's standardisation."""
        X = flatten_images(ds.images)
        X = self.standardiser(X) if self.standardiser is not None else X
        return accuracy(self.model.predict(X), one_hot(ds.labels, self.model.U.shape[0]))


def train_perceptron(
    data=None,
    hidden: int = 128,
    activation: str = "tanh",
    loss: str = "cross_entropy",
    init: str = "modern",
    rule: str = "minibatch",
    lr: float = 0.05,
    epochs: int = 20,
    batch_size: int = 32,
    standardise: bool = True,
    size: int = 32,
    val_fraction: float = 0.1,
    seed: int = 0,
    verbose: bool = True,
) -> PerceptronResult:
    """Train the perceptron on flattened GTSRB pixels and report train/validation accuracy.

    data: an ImageSet, a folder for signlab.data.load_images, or None for signlab's drawn signs. The
    validation part is split off by track (signlab.data.split_indices), so that near-identical frames
    of one physical sign never sit on both sides. For the lecture's exact setup pass
    activation="sigmoid", loss="squared", init="lecture".
    """
    # imported here: the maths above needs only NumPy, loading images needs Pillow
    from signlab.data import ImageSet, load_images, split_indices

    ds = data if isinstance(data, ImageSet) else load_images(data, size=size)
    tr, va = split_indices(ds, val_fraction=val_fraction, seed=seed)
    m = len(ds.class_names)
    X_tr, X_va = flatten_images(ds.images[tr]), flatten_images(ds.images[va])  # (d, N)
    Y_tr, Y_va = one_hot(ds.labels[tr], m), one_hot(ds.labels[va], m)  # (m, N)
    std = Standardiser.fit(X_tr) if standardise else None
    if std is not None:
        X_tr, X_va = std(X_tr), std(X_va)

    model = TwoLayerPerceptron(X_tr.shape[0], hidden, m, activation, loss, init, seed)
    if verbose:
        print(f"{model}: {model.num_parameters():,} parameters, {len(tr)} train / {len(va)} val images")

    def report(epoch: int, model: TwoLayerPerceptron) -> None:
        if verbose:
            tr_acc = accuracy(model.predict(X_tr), Y_tr)
            va_acc = accuracy(model.predict(X_va), Y_va) if len(va) else float("nan")
            print(f"epoch {epoch + 1:3d}  train acc {tr_acc:.3f}  val acc {va_acc:.3f}")

    hist = fit(model, X_tr, Y_tr, rule, lr, epochs, batch_size, seed, on_epoch=report)
    tr_acc = accuracy(model.predict(X_tr), Y_tr)
    va_acc = accuracy(model.predict(X_va), Y_va) if len(va) else float("nan")
    if verbose:
        print(f"train accuracy {tr_acc:.3f}, validation accuracy {va_acc:.3f}")
    return PerceptronResult(model, std, hist, tr_acc, va_acc)
