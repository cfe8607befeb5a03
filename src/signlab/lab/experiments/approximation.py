"""Approximation: the perceptron, polynomials and Fourier series fit 1-D functions with equal parameter counts.

The lecture: "the net can approximate each continuous function; polynomials can; sine functions can (Fourier
series)". Four targets on [−π, π]: sin 3x (smooth), |x| (a kink), a step (a jump) and three Gaussian bumps of
different widths (bumpy). Three families, each given the same number of parameters P:

- the lab's perceptron ỹ = U σ(W x + b) + c with H sigmoid units: P = 3H + 1, trained by full-batch gradient
  descent with momentum on its own hand-written gradients (TwoLayerPerceptron, bias=True, linear output);
- the polynomial of degree 3H (P = 3H + 1) closest in mean square: its Legendre coefficients by Gauss quadrature;
- the truncated Fourier series a₀ + Σₖ₌₁ᴷ (aₖ cos kx + bₖ sin kx) with K = ⌊3H/2⌋ (P = 2K + 1: 3H + 1 for even
  H, one fewer for H = 1), by least squares on a fine periodic grid, which gives the Fourier coefficients.

NumPy and matplotlib only: this module never imports torch.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np
from numpy.polynomial import legendre

from signlab.lab.experiments.report import all_finite, check_budget, new_figure, save_figure, table
from signlab.lab.perceptron import TwoLayerPerceptron

Fn = Callable[[np.ndarray], np.ndarray]


def bumps(x: np.ndarray) -> np.ndarray:
    """Three Gaussian bumps, wide, narrow and negative, medium; near 0 at ±π so its periodic copy barely jumps."""
    g = [(1.0, -2.0, 0.3), (-0.7, 0.5, 0.15), (0.8, 1.8, 0.4)]  # (height, centre, width)
    return sum(a * np.exp(-0.5 * ((x - m) / s) ** 2) for a, m, s in g)


TARGETS: dict[str, Fn] = {
    "sin 3x": lambda x: np.sin(3 * x),
    "|x|": np.abs,
    "step": lambda x: np.heaviside(x, 0.5),  # 0 left of 0, 1 right of it: a jump of 1
    "bumps": bumps,
}
FAMILIES = ("net", "polynomial", "Fourier")
SIZES = {"full": (1, 2, 4, 8, 16, 32, 64), "smoke": (2, 8, 32)}  # hidden units H
STEPS = {"full": 10_000, "smoke": 1_500}  # gradient-descent steps per net
MID = 8  # the size whose fits are drawn: 25 parameters
N_TRAIN, N_EVAL = 256, 4001  # the net's training points; the fine grid every error is measured on
X_EVAL = np.linspace(-np.pi, np.pi, N_EVAL)  # (N_EVAL,)


def param_counts(hidden: int) -> dict[str, int]:
    return {"net": 3 * hidden + 1, "polynomial": 3 * hidden + 1, "Fourier": 2 * (3 * hidden // 2) + 1}


# --- the three families -------------------------------------------------------------------------


@lru_cache(maxsize=2)
def gauss_legendre(nodes: int) -> tuple[np.ndarray, np.ndarray]:
    return legendre.leggauss(nodes)  # an eigenvalue problem: worth computing once, not per fit


def fit_polynomial(f: Fn, n_params: int, nodes: int = 512) -> Fn:
    """The degree n_params − 1 polynomial nearest f in mean square on [−π, π] (Legendre in t = x/π).

    Legendre polynomials are orthogonal on [−1, 1], so each coefficient is a separate integral,
    aₖ = (2k + 1)/2 ∫ f(πt) Pₖ(t) dt, here by Gauss–Legendre quadrature; the monomials xᵏ would make the
    least-squares problem hopelessly ill-conditioned at degree 192.
    """
    t, w = gauss_legendre(nodes)  # (nodes,) each
    degree = n_params - 1
    V = legendre.legvander(t, degree)  # (nodes, degree + 1)
    coef = (V * w[:, None]).T @ f(np.pi * t) * (2 * np.arange(degree + 1) + 1) / 2
    return lambda x: legendre.legval(x / np.pi, coef)


def fourier_basis(x: np.ndarray, K: int) -> np.ndarray:
    """(N,) -> (N, 2K + 1): 1, cos x, sin x, …, cos Kx, sin Kx."""
    k = np.arange(1, K + 1)
    return np.hstack([np.ones((len(x), 1)), np.cos(np.outer(x, k)), np.sin(np.outer(x, k))])


def fit_fourier(f: Fn, n_params: int, grid: int = 4096) -> Fn:
    """The truncated Fourier series with K = (n_params − 1) // 2: least squares on `grid` equally spaced points
    of one period, where the basis is orthogonal, so the coefficients are the Fourier coefficients."""
    K = (n_params - 1) // 2
    x = -np.pi + 2 * np.pi * np.arange(grid) / grid  # (grid,) one period, −π counted once
    coef = np.linalg.lstsq(fourier_basis(x, K), f(x), rcond=None)[0]  # (2K + 1,)
    return lambda z: fourier_basis(z, K) @ coef


def init_net(hidden: int, y_mean: float, seed: int) -> TwoLayerPerceptron:
    """Sigmoid kinks spread over [−π, π]: unit k rises around a random centre x_k, over a few centre spacings."""
    rng = np.random.default_rng(seed)
    net = TwoLayerPerceptron(1, hidden, 1, "sigmoid", "linear_squared", seed=seed, bias=True)
    centres = np.sort(rng.uniform(-np.pi, np.pi, hidden))  # (H,)
    slopes = rng.choice([-1.0, 1.0], hidden) * (1 + hidden / (2 * np.pi)) * rng.uniform(0.5, 1.5, hidden)
    net.W[:, 0] = slopes
    net.b[:, 0] = -slopes * centres  # σ(w(x − x_k)): the kink sits at x_k
    net.U[...] = 0.0  # start from the constant ỹ = mean(y); the hidden layer's gradients start once U moves
    net.c[...] = y_mean
    return net


def train_net(f: Fn, hidden: int, steps: int, seed: int = 0, momentum: float = 0.99) -> TwoLayerPerceptron:
    """Full-batch gradient descent with heavy-ball momentum on the mean squared error, using the net's
    hand-written gradients. If the loss blows up, start again from the same init with a third of the step."""
    X = np.linspace(-np.pi, np.pi, N_TRAIN)[None, :]  # (1, N)
    Y = f(X)  # (1, N)
    lr = min(0.1, 3.0 / hidden)  # the output layer's curvature grows with H: wide nets need smaller steps
    for _ in range(4):
        net = init_net(hidden, float(Y.mean()), seed)
        params = net.parameters()
        velocity = {k: np.zeros_like(p) for k, p in params.items()}
        start = net.loss(X, Y)
        with np.errstate(over="ignore", invalid="ignore"):  # a diverging run is caught below, not warned about
            for _ in range(steps):
                loss, grads = net.loss_and_grads(X, Y)
                if not loss <= 10 * start:  # also catches nan
                    break
                for k, p in params.items():
                    velocity[k] = momentum * velocity[k] - (lr / N_TRAIN) * grads[k]
                    p += velocity[k]
            else:
                if np.isfinite(net.loss(X, Y)):
                    return net
        lr /= 3
    raise RuntimeError(f"approximation: gradient descent diverged for H = {hidden} at every step size tried")


def fit_all(f: Fn, hidden: int, steps: int) -> dict[str, Fn]:
    n = param_counts(hidden)
    net = train_net(f, hidden, steps)
    return {"net": lambda x: net.predict(x[None, :])[0], "polynomial": fit_polynomial(f, n["polynomial"]),
            "Fourier": fit_fourier(f, n["Fourier"])}


# --- the experiment -----------------------------------------------------------------------------

COLOURS = {"net": "C0", "polynomial": "C1", "Fourier": "C2"}


def measure(budget: str) -> tuple[dict, dict]:
    """Errors per target, family and size on the fine grid; and every family's curve at H = MID."""
    errors: dict = {t: {fam: {"max": [], "mean": []} for fam in FAMILIES} for t in TARGETS}
    curves: dict = {}
    for name, f in TARGETS.items():
        truth = f(X_EVAL)  # (N_EVAL,)
        for hidden in SIZES[budget]:
            for fam, fit in fit_all(f, hidden, STEPS[budget]).items():
                y = fit(X_EVAL)  # (N_EVAL,)
                err = np.abs(y - truth)
                errors[name][fam]["max"].append(float(err.max()))
                errors[name][fam]["mean"].append(float(err.mean()))
                if hidden == MID:
                    curves[(name, fam)] = y
    return errors, curves


def jump_and_kink(curves: dict) -> dict[str, dict[str, float]]:
    """At H = MID: how far each fit overshoots the top of the step (as a share of the jump, which is 1),
    and how far it misses |x| at its kink x = 0."""
    at_zero = np.argmin(np.abs(X_EVAL))
    return {fam: {"overshoot": float(curves[("step", fam)].max() - 1.0),
                  "kink_error": float(abs(curves[("|x|", fam)][at_zero]))} for fam in FAMILIES}


def plot(errors: dict, curves: dict, sizes: tuple[int, ...], out: Path) -> Path:
    """Top row: max (dashed) and mean (solid) error against parameter count; bottom: the fits at H = MID."""
    fig, axes = new_figure(4, 2, size=(4.0, 3.1))
    for ax, name in zip(axes[:4], TARGETS, strict=True):
        for fam in FAMILIES:
            p = [param_counts(h)[fam] for h in sizes]
            floor = 1e-16  # Fourier fits sin 3x to rounding error: keep it on the log axis
            ax.plot(p, np.maximum(errors[name][fam]["mean"], floor), "o-", color=COLOURS[fam], label=f"{fam} mean")
            ax.plot(p, np.maximum(errors[name][fam]["max"], floor), "x--", color=COLOURS[fam], label=f"{fam} max")
        ax.set(xscale="log", yscale="log", xlabel="parameters", ylabel="|error| on [−π, π]", title=name)
    axes[0].legend(fontsize=7)
    for ax, (name, f) in zip(axes[4:], TARGETS.items(), strict=True):
        ax.plot(X_EVAL, f(X_EVAL), color="black", lw=2.5, alpha=0.3, label="target")
        for fam in FAMILIES:
            ax.plot(X_EVAL, curves[(name, fam)], color=COLOURS[fam], lw=1, label=fam)
        zoom = name in ("|x|", "step")  # the kink and the jump are where the families differ
        ax.set(xlim=(-1.2, 1.2) if zoom else None, xlabel="x",
               title=f"{name}, {param_counts(MID)['net']} parameters" + (" (zoomed)" if zoom else ""))
        if name == "|x|":
            ax.set_ylim(-0.1, 1.3)
    axes[4].legend(fontsize=7)
    return save_figure(fig, out, "approximation")


def run_approximation(data: object = None, out: Path = Path("runs/lab"), budget: str = "full") -> dict:
    """Max and mean error of the net, polynomials and Fourier series against parameter count, on four targets."""
    check_budget(budget)
    if data is not None:
        print("approximation fits functions of one variable: --data is not used")
    sizes = SIZES[budget]
    errors, curves = measure(budget)
    rows = []
    for name in TARGETS:
        for i, hidden in enumerate(sizes):
            n = param_counts(hidden)
            rows.append((name, hidden, n["net"], n["Fourier"],
                         *(errors[name][fam][k][i] for fam in FAMILIES for k in ("max", "mean"))))
    text = table(("target", "H", "params", "Fourier params", "net max", "net mean", "poly max", "poly mean",
                  "Fourier max", "Fourier mean"), rows,
                 f"|error| on {N_EVAL} points of [−π, π]; net: ỹ = U σ(Wx + b) + c, {STEPS[budget]} steps of "
                 f"gradient descent on {N_TRAIN} points; polynomial of degree 3H; Fourier K = ⌊3H/2⌋")
    mid = jump_and_kink(curves)
    mid_text = table(("family", "step: overshoot / jump", "|x|: error at the kink"),
                     [(fam, mid[fam]["overshoot"], mid[fam]["kink_error"]) for fam in FAMILIES],
                     f"at H = {MID} ({param_counts(MID)['net']} parameters)")
    png = plot(errors, curves, sizes, out)
    numbers = [v for t in errors.values() for fam in t.values() for vs in fam.values() for v in vs]
    numbers += [v for fam in mid.values() for v in fam.values()]
    return {"sizes": list(sizes), "params": {h: param_counts(h) for h in sizes}, "errors": errors, "at_mid": mid,
            "table": text, "table_mid": mid_text, "png": str(png), "finite": all_finite(*numbers)}
