"""The lecture's two-layer perceptron, ỹ = σ(U σ(W x)), in NumPy with hand-derived gradients.

Beyond the lecture, two options for fitting functions rather than classes: biases (ỹ = σ(U σ(W x + b) + c))
and a linear output with squared error (ỹ = U σ(W x + b) + c). The defaults are the lecture's model.

Conventions (as on the slides): a sample x is a column vector, so a batch of N samples is a matrix
whose *columns* are the samples: X is (d, N), the targets Y are (m, N), the outputs Ỹ are (m, N).
Every nonlinearity keeps its derivative right beside it (micrograd style), and each derivative is
written in terms of the function's *output*, which is what the backward pass has at hand:
σ′ = σ(1 − σ), tanh′ = 1 − tanh², relu′ = [relu > 0].
"""

from __future__ import annotations

import numpy as np

# --- activations: forward and backward side by side ----------------------------------------------


def sigmoid(a: np.ndarray) -> np.ndarray:
    # σ(a) = 1 / (1 + e^{-a}) written via tanh so that exp never overflows for large |a|
    return 0.5 * (1.0 + np.tanh(0.5 * a))


def sigmoid_backward(s: np.ndarray, grad: np.ndarray) -> np.ndarray:
    return grad * s * (1.0 - s)  # σ′ = σ(1 − σ)


def tanh(a: np.ndarray) -> np.ndarray:
    return np.tanh(a)


def tanh_backward(t: np.ndarray, grad: np.ndarray) -> np.ndarray:
    return grad * (1.0 - t * t)  # tanh′ = 1 − tanh²


def relu(a: np.ndarray) -> np.ndarray:
    return np.maximum(a, 0.0)


def relu_backward(r: np.ndarray, grad: np.ndarray) -> np.ndarray:
    return grad * (r > 0)  # relu′ = 1 where the unit is on, else 0 (we pick 0 at the kink)


ACTIVATIONS = {
    "sigmoid": (sigmoid, sigmoid_backward),
    "tanh": (tanh, tanh_backward),
    "relu": (relu, relu_backward),
}

# --- output layer + loss: forward and backward side by side ------------------------------------


def squared_error(o: np.ndarray, y: np.ndarray) -> float:
    """The lecture's loss on the output ỹ = σ(o): L = Σᵢ Σⱼ (ỹⱼ⁽ⁱ⁾ − yⱼ⁽ⁱ⁾)²."""
    return float(np.sum((sigmoid(o) - y) ** 2))


def squared_error_backward(y_hat: np.ndarray, y: np.ndarray) -> np.ndarray:
    return sigmoid_backward(y_hat, 2.0 * (y_hat - y))  # ∂L/∂o = 2(ỹ − y) ⊙ σ′(o)


def log_softmax(o: np.ndarray) -> np.ndarray:
    # log-sum-exp with the column max pulled out: exp never sees a positive argument
    o = o - o.max(axis=0, keepdims=True)
    return o - np.log(np.exp(o).sum(axis=0, keepdims=True))


def softmax(o: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(o))


def cross_entropy(o: np.ndarray, y: np.ndarray) -> float:
    """Cross-entropy on the output ỹ = softmax(o): L = −Σᵢ Σⱼ yⱼ⁽ⁱ⁾ log ỹⱼ⁽ⁱ⁾, via log-softmax."""
    return float(-np.sum(y * log_softmax(o)))


def cross_entropy_backward(y_hat: np.ndarray, y: np.ndarray) -> np.ndarray:
    # ∂L/∂o = ỹ·Σⱼyⱼ − y, which is the familiar ỹ − y when each target column sums to one
    return y_hat * y.sum(axis=0, keepdims=True) - y


def identity(o: np.ndarray) -> np.ndarray:
    return o


def linear_squared_error(o: np.ndarray, y: np.ndarray) -> float:
    """Squared error on a linear output ỹ = o, for regression: L = Σᵢ Σⱼ (oⱼ⁽ⁱ⁾ − yⱼ⁽ⁱ⁾)²."""
    return float(np.sum((o - y) ** 2))


def linear_squared_error_backward(y_hat: np.ndarray, y: np.ndarray) -> np.ndarray:
    return 2.0 * (y_hat - y)  # ∂L/∂o = 2(ỹ − y): the output's derivative is 1


# loss name -> (output nonlinearity o -> ỹ, loss (o, y) -> L, backward (ỹ, y) -> ∂L/∂o)
LOSSES = {
    "squared": (sigmoid, squared_error, squared_error_backward),
    "cross_entropy": (softmax, cross_entropy, cross_entropy_backward),
    "linear_squared": (identity, linear_squared_error, linear_squared_error_backward),
}

INITS = ("lecture", "modern")

# --- the model ----------------------------------------------------------------------------------


def init_weights(
    shape: tuple[int, int], init: str, activation: str, rng: np.random.Generator, dtype=np.float64
) -> np.ndarray:
    """One weight matrix of shape (fan_out, fan_in).

    "lecture": N(0, 0.1) as on the slides, where 0.1 is read as the *standard deviation*.
    "modern": He (std √(2/fan_in)) for ReLU layers, Glorot (std √(2/(fan_in + fan_out))) otherwise;
    both keep the activations' variance roughly constant from layer to layer, whatever d is.
    """
    fan_out, fan_in = shape
    if init == "lecture":
        std = 0.1
    elif init == "modern":
        std = np.sqrt(2.0 / fan_in) if activation == "relu" else np.sqrt(2.0 / (fan_in + fan_out))
    else:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    return (rng.standard_normal(shape) * std).astype(dtype)


class TwoLayerPerceptron:
    """ỹ = σ(U σ(W x)) with W of shape (hidden, d) and U of shape (m, hidden); no biases by default, as on the slides.

    Samples are columns: X is (d, N), Y and Ỹ are (m, N). Names used below, per sample x⁽ⁱ⁾:

        a = W x        (hidden,)   the hidden layer's input
        h = σ(a)       (hidden,)   the hidden layer's output ("hidden" activation: sigmoid, tanh or relu)
        o = U h        (m,)        the output layer's input
        ỹ = σ(o)       (m,)        the prediction

    Loss "squared" (the lecture's): L = Σᵢ Σⱼ (ỹⱼ⁽ⁱ⁾ − yⱼ⁽ⁱ⁾)². By the chain rule, for one sample

        δ = ∂L/∂o = 2(ỹ − y) ⊙ σ′(o) = 2(ỹ − y) ⊙ ỹ ⊙ (1 − ỹ)          (m,)
        ∂L/∂U     = δ hᵀ                                               (m, hidden)
        ε = ∂L/∂a = (Uᵀ δ) ⊙ σ′(a) = (Uᵀ δ) ⊙ h ⊙ (1 − h)               (hidden,)
        ∂L/∂W     = ε xᵀ                                               (hidden, d)

    i.e. elementwise ∂L/∂U_jk = Σᵢ 2(ỹⱼ − yⱼ) σ′(oⱼ) h_k and
    ∂L/∂W_kl = Σᵢ Σⱼ 2(ỹⱼ − yⱼ) σ′(oⱼ) U_jk σ′(a_k) x_l, summed over the samples i. With the
    batch as columns the sums over i are just matrix products: ∂L/∂U = Δ Hᵀ and ∂L/∂W = E Xᵀ, where
    Δ, E and H hold the δ, ε and h of all samples as columns.
    For tanh hidden units σ′(a) becomes 1 − h², for relu [h > 0].
    In the scalar case d = m = hidden = 1 this is the slides' ∂L/∂u = 2(ỹ − y) σ′(u h) h and
    ∂L/∂w = 2(ỹ − y) σ′(u h) u σ′(w x) x.

    Loss "cross_entropy": ỹ = softmax(o), L = −Σᵢ Σⱼ yⱼ log ỹⱼ, and only δ changes: δ = ỹ − y
    (for targets whose columns sum to one); the rest of the backward pass is the same.
    Loss "linear_squared": ỹ = o, L = Σᵢ Σⱼ (ỹⱼ⁽ⁱ⁾ − yⱼ⁽ⁱ⁾)², and δ = 2(ỹ − y).

    bias=True adds b (hidden, 1) and c (m, 1), both starting at 0: a = W x + b and o = U h + c. They enter
    with derivative 1, so ∂L/∂b = Σᵢ ε and ∂L/∂c = Σᵢ δ; nothing else changes.
    """

    def __init__(
        self,
        d: int,
        hidden: int,
        m: int,
        activation: str = "sigmoid",
        loss: str = "squared",
        init: str = "lecture",
        seed: int = 0,
        dtype: type = np.float64,
        bias: bool = False,
    ) -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {tuple(LOSSES)}, got {loss!r}")
        self.activation, self.loss_name, self.init = activation, loss, init
        rng = np.random.default_rng(seed)
        # the output layer feeds a sigmoid/softmax, not a relu: Glorot, never He, for U
        self.W = init_weights((hidden, d), init, activation, rng, dtype)  # (hidden, d)
        self.U = init_weights((m, hidden), init, "sigmoid", rng, dtype)  # (m, hidden)
        self.bias = bias
        self.b = np.zeros((hidden, 1), dtype) if bias else None  # (hidden, 1)
        self.c = np.zeros((m, 1), dtype) if bias else None  # (m, 1)

    def parameters(self) -> dict[str, np.ndarray]:
        if self.bias:
            return {"W": self.W, "b": self.b, "U": self.U, "c": self.c}
        return {"W": self.W, "U": self.U}

    def num_parameters(self) -> int:
        return sum(p.size for p in self.parameters().values())

    def forward(self, X: np.ndarray, Y: np.ndarray | None = None) -> tuple[np.ndarray, float | None, dict]:
        """X (d, N) -> ỹ (m, N), the loss L if targets Y (m, N) are given, and the cache for backward."""
        act, _ = ACTIVATIONS[self.activation]
        out, loss_fn, _ = LOSSES[self.loss_name]
        A = self.W @ X if self.b is None else self.W @ X + self.b  # (hidden, N)
        H = act(A)  # (hidden, N)
        Z = self.U @ H if self.c is None else self.U @ H + self.c  # (m, N)   the o of every sample
        L = None if Y is None else loss_fn(Z, Y)
        return out(Z), L, {"X": X, "H": H}

    def backward(self, Y_hat: np.ndarray, Y: np.ndarray, cache: dict) -> dict[str, np.ndarray]:
        """The docstring's four lines, for the whole batch at once: returns ∂L/∂W and ∂L/∂U (and ∂L/∂b, ∂L/∂c)."""
        _, act_backward = ACTIVATIONS[self.activation]
        _, _, out_backward = LOSSES[self.loss_name]
        delta = out_backward(Y_hat, Y)  # (m, N)        δ = ∂L/∂o
        dU = delta @ cache["H"].T  # (m, hidden)        Σᵢ δ hᵀ
        eps = act_backward(cache["H"], self.U.T @ delta)  # (hidden, N)  ε = (Uᵀδ) ⊙ σ′(a)
        dW = eps @ cache["X"].T  # (hidden, d)          Σᵢ ε xᵀ
        if not self.bias:
            return {"W": dW, "U": dU}
        # (hidden, 1) and (m, 1): a bias's input is a constant 1, so its gradient is the sum over samples
        return {"W": dW, "b": eps.sum(axis=1, keepdims=True), "U": dU, "c": delta.sum(axis=1, keepdims=True)}

    def loss_and_grads(self, X: np.ndarray, Y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        """L summed over the batch (as on the slides) and its gradients with respect to every parameter."""
        Y_hat, L, cache = self.forward(X, Y)
        return L, self.backward(Y_hat, Y, cache)

    def loss(self, X: np.ndarray, Y: np.ndarray) -> float:
        return self.forward(X, Y)[1]

    def predict(self, X: np.ndarray) -> np.ndarray:
        """ỹ for X (d, N): (m, N)."""
        return self.forward(X)[0]

    def __repr__(self) -> str:
        (h, d), m = self.W.shape, self.U.shape[0]
        return (
            f"TwoLayerPerceptron(d={d}, hidden={h}, m={m}, activation={self.activation!r}, "
            f"loss={self.loss_name!r}, init={self.init!r}{', bias=True' if self.bias else ''})"
        )
