"""Regions: how the hidden ReLU units of a two-layer net cut the plane, on 2-D data the lab draws itself.

NumPy only (no torch here), like the lab's perceptron. A net x ↦ o = U relu(W x + b) + c with H hidden units
learns XOR, two moons and two spirals. Each hidden unit k draws a line w_k·x + b_k = 0 and is on on one side of
it; the on/off pattern of all H units splits the plane into convex regions, and inside each region the net is a
plain linear function of x whose slope and offset the second-layer weights U, c set.

Why ReLU, not tanh: a ReLU unit is exactly on or off, so a point's region (its on/off pattern) is well defined and
the net is exactly linear inside it; a tanh unit is never quite off, its regions would depend on a threshold.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from signlab.errors import UserError
from signlab.lab.experiments.report import all_finite, check_budget, new_figure, save_figure, table
from signlab.lab.perceptron import cross_entropy, cross_entropy_backward, relu, relu_backward, softmax
from signlab.lab.training import accuracy, one_hot

HIDDEN = (2, 4, 8, 32)
Box = tuple[float, float, float, float]  # (x_min, x_max, y_min, y_max)

# --- the lab's own 2-D data: two classes each, deterministic for a seed -----------------------------


def xor_data(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Uniform in [−1, 1]², class 1 where the two coordinates have the same sign, none within 0.1 of an axis
    (a margin, so that "solved" can mean every held-out point right)."""
    mag = rng.uniform(0.1, 1.0, (2, n))  # (2, N)
    X = mag * rng.choice((-1.0, 1.0), (2, n))
    return X, (np.sign(X[0]) == np.sign(X[1])).astype(int)


def moons_data(n: int, rng: np.random.Generator, noise: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved half circles of radius 1, centred on the origin, with Gaussian noise."""
    y = rng.integers(0, 2, n)
    t = rng.uniform(0.0, np.pi, n)
    X = np.stack([np.where(y == 0, np.cos(t), 1.0 - np.cos(t)) - 0.5,
                  np.where(y == 0, np.sin(t), 0.5 - np.sin(t)) - 0.25])  # (2, N)
    return X + noise * rng.standard_normal(X.shape), y


def spirals_data(n: int, rng: np.random.Generator, noise: float = 0.04) -> tuple[np.ndarray, np.ndarray]:
    """Two spirals of 1.5 turns each, the second the first turned by π; radius grows from 0.1 to 1."""
    y = rng.integers(0, 2, n)
    s = np.sqrt(rng.uniform(0.0, 1.0, n))  # sqrt: the same density of points per unit length along the arm
    r, angle = 0.1 + 0.9 * s, 3.0 * np.pi * s + np.pi * y
    X = np.stack([r * np.cos(angle), r * np.sin(angle)])  # (2, N)
    return X + noise * rng.standard_normal(X.shape), y


DATASETS: dict[str, Callable[[int, np.random.Generator], tuple[np.ndarray, np.ndarray]]] = {
    "xor": xor_data, "moons": moons_data, "spirals": spirals_data}


def make_data(name: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """n training and n held-out points of one dataset, drawn independently: X (2, n), labels (n,)."""
    rng = np.random.default_rng([seed, list(DATASETS).index(name)])
    return (*DATASETS[name](n, rng), *DATASETS[name](n, rng))


def data_box(X: np.ndarray, margin: float = 0.1) -> Box:
    """The data's bounding box, widened by margin on each side: where regions are drawn and counted."""
    lo, hi = X.min(axis=1) - margin, X.max(axis=1) + margin
    return float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])


# --- the net: o = U relu(W x + b) + c, backward beside forward --------------------------------------


class RegionNet:
    """Two-layer ReLU net with biases on the plane: W (H, 2), b (H, 1), U (m, H), c (m, 1); softmax output.

    Samples are columns, as in the lab's perceptron. Per sample: a = W x + b, h = relu(a), o = U h + c, and
    with δ = ∂L/∂o = ỹ − y: ∂L/∂U = δ hᵀ, ∂L/∂c = δ, ε = (Uᵀ δ) ⊙ [a > 0], ∂L/∂W = ε xᵀ, ∂L/∂b = ε.
    """

    def __init__(self, hidden: int, box: Box = (-1.0, 1.0, -1.0, 1.0), m: int = 2, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.W = rng.standard_normal((hidden, 2))  # He: std √(2 / fan_in) = 1
        # each line starts through a random point of the data's box: with b = 0 all H lines would start
        # through the origin, cutting the plane into 2H wedges only
        p = np.stack([rng.uniform(box[0], box[1], hidden), rng.uniform(box[2], box[3], hidden)])  # (2, H)
        self.b = -np.sum(self.W * p.T, axis=1, keepdims=True)  # (H, 1)
        self.U = rng.standard_normal((m, hidden)) * np.sqrt(2.0 / (hidden + m))  # Glorot
        self.c = np.zeros((m, 1))

    def parameters(self) -> dict[str, np.ndarray]:
        return {"W": self.W, "b": self.b, "U": self.U, "c": self.c}

    def forward(self, X: np.ndarray) -> tuple[np.ndarray, dict]:
        """X (2, N) -> outputs o (m, N) before the softmax, and the cache for backward."""
        Hd = relu(self.W @ X + self.b)  # (H, N)
        return self.U @ Hd + self.c, {"X": X, "H": Hd}

    def backward(self, Z: np.ndarray, Y: np.ndarray, cache: dict) -> dict[str, np.ndarray]:
        delta = cross_entropy_backward(softmax(Z), Y)  # (m, N)
        eps = relu_backward(cache["H"], self.U.T @ delta)  # (H, N)
        return {"W": eps @ cache["X"].T, "b": eps.sum(axis=1, keepdims=True),
                "U": delta @ cache["H"].T, "c": delta.sum(axis=1, keepdims=True)}

    def loss_and_grads(self, X: np.ndarray, Y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        Z, cache = self.forward(X)
        return cross_entropy(Z, Y), self.backward(Z, Y, cache)

    def logits(self, X: np.ndarray) -> np.ndarray:
        return self.forward(X)[0]

    def patterns(self, X: np.ndarray) -> np.ndarray:
        """Which hidden units are on at each point: (H, N) bools. The region of x is its column."""
        return self.W @ X + self.b > 0


def train(net: RegionNet, X: np.ndarray, labels: np.ndarray, steps: int, lr: float = 0.02) -> list[float]:
    """Full-batch Adam on the mean cross-entropy; returns the loss every 100 steps.

    Adam, not the lab's plain gradient step: the spirals need thousands of plain steps more to come out.
    """
    Y = one_hot(labels, net.U.shape[0])
    moments = {k: (np.zeros_like(p), np.zeros_like(p)) for k, p in net.parameters().items()}
    curve = []
    for t in range(1, steps + 1):
        L, grads = net.loss_and_grads(X, Y)
        for k, p in net.parameters().items():
            g, (m1, m2) = grads[k] / X.shape[1], moments[k]
            m1 += 0.1 * (g - m1)
            m2 += 0.001 * (g * g - m2)
            p -= lr * (m1 / (1 - 0.9**t)) / (np.sqrt(m2 / (1 - 0.999**t)) + 1e-8)  # in place
        if t % 100 == 0 or t == 1:
            curve.append(L / X.shape[1])
    return curve


# --- counting regions ----------------------------------------------------------------------------


def region_bound(hidden: int) -> int:
    """The most regions H lines can cut from the plane: 1 + H + H(H − 1)/2 (each new line crosses all others)."""
    return 1 + hidden + hidden * (hidden - 1) // 2


def grid(box: Box, res: int) -> np.ndarray:
    """res × res points filling the box, row by row from the bottom: (2, res²)."""
    xs, ys = np.linspace(box[0], box[1], res), np.linspace(box[2], box[3], res)
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()])


def region_ids(net: RegionNet, P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct on/off patterns among points P (2, N) as (R, H) bools, and each point's index into them."""
    packed = np.packbits(net.patterns(P).T, axis=1)  # (N, ⌈H/8⌉): one row of bytes per point
    uniq, ids = np.unique(packed, axis=0, return_inverse=True)
    H = net.W.shape[0]
    return np.unpackbits(uniq, axis=1, count=H).astype(bool), ids.ravel()


def count_regions(net: RegionNet, box: Box, res: int) -> int:
    """Distinct activation patterns on a res × res grid over the box. Each pattern is one convex region (an
    intersection of half-planes), so this never overcounts; it misses regions thinner than the grid step."""
    return len(region_ids(net, grid(box, res))[0])


def exact_regions_in_box(W: np.ndarray, b: np.ndarray, box: Box) -> int:
    """Regions the lines w_k·x + b_k = 0 cut from the box, for lines in general position (no three through one
    point, none parallel): 1, plus 1 for each line that crosses the box, plus 1 for each crossing inside it."""
    corners = np.array([[box[0], box[0], box[1], box[1]], [box[2], box[3], box[2], box[3]]])  # (2, 4)
    side = W @ corners + b.reshape(-1, 1)  # (H, 4)
    cuts = np.flatnonzero((side.min(axis=1) < 0) & (side.max(axis=1) > 0))
    inside = 0
    for i, k in enumerate(cuts):
        for j in cuts[i + 1:]:
            A = W[[k, j]]
            if abs(np.linalg.det(A)) < 1e-12:
                continue
            x, y = np.linalg.solve(A, -b.reshape(-1)[[k, j]])
            inside += box[0] < x < box[1] and box[2] < y < box[3]
    return 1 + len(cuts) + inside


def region_maps(net: RegionNet, on: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The linear function the net is inside the region with pattern on (H,) bools: o = M x + v with
    M = U diag(on) W (m, 2) and v = U diag(on) b + c (m, 1). All units off: M = 0 and v = c, the output bias."""
    U_on = net.U * on  # (m, H): the columns of the units that are off drop out
    return U_on @ net.W, U_on @ net.b + net.c


# --- the two other claims: similarity to w, and U setting each region's output ------------------------


def similarity(net: RegionNet, X: np.ndarray) -> np.ndarray:
    """Per unit, the correlation over points X between its activation h = relu(|w| |x| cos θ + b) and cos θ,
    θ the angle between x and w: near 1 when a unit reacts to inputs pointing its way. (H,)"""
    cos = (net.W @ X) / (np.linalg.norm(net.W, axis=1, keepdims=True) * np.linalg.norm(X, axis=0) + 1e-12)
    Hd = relu(net.W @ X + net.b)
    out = np.zeros(net.W.shape[0])
    for k in range(len(out)):
        if Hd[k].std() > 0:  # a unit that is off at every point has no correlation to speak of
            out[k] = np.corrcoef(cos[k], Hd[k])[0, 1]
    return out


def edit_one_column(net: RegionNet, P: np.ndarray, k: int) -> tuple[float, float]:
    """Flip the sign of unit k's second-layer weights U[:, k] and see where the output moves, over points P:
    returns the largest change where k is off (0: those regions keep their linear function) and the share of
    points where k is on whose output changed (1 unless U[:, k] = 0)."""
    before = net.logits(P)
    net.U[:, k] *= -1.0
    after = net.logits(P)
    net.U[:, k] *= -1.0
    on = net.patterns(P)[k]
    change = np.abs(after - before).max(axis=0)  # (N,)
    return float(change[~on].max(initial=0.0)), float(np.mean(change[on] > 0)) if on.any() else 0.0


# --- the experiment ------------------------------------------------------------------------------

# points per part, Adam steps, seeds per net (the lowest training loss is kept), grid side for counting
BUDGET = {"full": {"n": 400, "steps": 4000, "seeds": 3, "res": 600},
          "smoke": {"n": 100, "steps": 300, "seeds": 1, "res": 120}}


def mean_loss(net: RegionNet, X: np.ndarray, labels: np.ndarray) -> float:
    return cross_entropy(net.logits(X), one_hot(labels, net.U.shape[0])) / X.shape[1]


def fit_best(X: np.ndarray, labels: np.ndarray, hidden: int, box: Box, steps: int, seeds: int) -> list[RegionNet]:
    """One net per seed, trained alike; sorted by training loss, so the first is the one the experiment keeps
    (chosen on training data only: some seeds stall in a poor local minimum, e.g. moons at H = 4)."""
    nets = [RegionNet(hidden, box, seed=seed) for seed in range(seeds)]
    for net in nets:
        train(net, X, labels, steps)
    return sorted(nets, key=lambda net: mean_loss(net, X, labels))


def held_out(net: RegionNet, X: np.ndarray, labels: np.ndarray) -> float:
    return accuracy(net.logits(X), one_hot(labels, net.U.shape[0]))


def second_layer(net: RegionNet, P: np.ndarray) -> dict[str, float]:
    """Check on grid points P that inside each region the net is the linear map region_maps gives, and that the
    all-off region (if it meets the box) outputs exactly the output bias c; flip U[:, k] of the most used unit."""
    pats, ids = region_ids(net, P)
    Z = net.logits(P)
    gap = 0.0
    for r, on in enumerate(pats):
        M, v = region_maps(net, on)
        gap = max(gap, float(np.abs(M @ P[:, ids == r] + v - Z[:, ids == r]).max()))
    off = ~net.patterns(P).any(axis=0)
    k = int(np.argmax(net.patterns(P).mean(axis=1)))
    moved_off, moved_on = edit_one_column(net, P, k)
    return {"linear_gap": gap, "all_off_share": float(off.mean()),
            "all_off_minus_c": float(np.abs(Z[:, off] - net.c).max(initial=0.0)),
            "edit_moved_off": moved_off, "edit_moved_on": moved_on}


def run_regions(data: object = None, out: Path = Path("runs/lab"), budget: str = "full") -> dict:
    """XOR, moons and spirals with H = 2, 4, 8, 32 hidden ReLU units: regions against the bound, accuracy."""
    check_budget(budget)
    if data is not None:
        raise UserError("lab regions: draws its own 2-D points (XOR, moons, spirals); --data does not apply")
    cfg, t0 = BUDGET[budget], time.perf_counter()
    res: dict = {}
    nets: dict[tuple[str, int], RegionNet] = {}
    sets: dict[str, tuple] = {}
    checks: dict[tuple[str, int], dict] = {}
    for name in DATASETS:
        X, y, X_te, y_te = make_data(name, cfg["n"])
        box = data_box(np.hstack([X, X_te]))
        sets[name] = (X, y, box)
        for H in HIDDEN:
            runs = fit_best(X, y, H, box, cfg["steps"], cfg["seeds"])
            net = nets[name, H] = runs[0]
            checks[name, H] = second_layer(net, grid(box, cfg["res"] // 2))
            res[f"{name} H={H}"] = {
                "hidden": H, "bound": region_bound(H), "regions_box": exact_regions_in_box(net.W, net.b, box),
                "regions_grid": count_regions(net, box, cfg["res"]),
                "regions_seeds": [exact_regions_in_box(n.W, n.b, box) for n in runs],
                "train_loss": mean_loss(net, X, y), "test_acc": held_out(net, X_te, y_te),
                "test_acc_seeds": [held_out(n, X_te, y_te) for n in runs],
                "similarity": float(similarity(net, X_te).mean()),
                "all_off_share": checks[name, H]["all_off_share"]}
    # per dataset, the second-layer check on the net whose all-off region covers most of the box
    second = {}
    for name in DATASETS:
        H = max(HIDDEN, key=lambda H, name=name: checks[name, H]["all_off_share"])
        second[name] = {"hidden": H, **checks[name, H]}
    text = report(res, second, cfg)
    png = plot_regions(nets, sets, res, out)
    res["second_layer"] = second
    res["seconds"] = time.perf_counter() - t0
    flat = [v for r in (*res.values(), *second.values()) if isinstance(r, dict) for v in r.values()
            if isinstance(v, (int, float))]
    return {**res, "table": text, "png": str(png), "finite": all_finite(*flat)}


def report(res: dict, second: dict, cfg: dict) -> str:
    """The two printed tables: regions and accuracy per net, then the second-layer checks."""

    def spread(v: list) -> str:
        return f"{min(v):.3g}–{max(v):.3g}" if len(v) > 1 else f"{v[0]:.3g}"

    seeds = f"{cfg['seeds']} seeds"
    text = table(("data", "H", "bound 1+H+H(H-1)/2", "regions in box", "on grid", seeds, "train loss",
                  "held-out acc", seeds, "corr(h, cos θ)", "all off"),
                 [(k.split()[0], r["hidden"], r["bound"], r["regions_box"], r["regions_grid"],
                   spread(r["regions_seeds"]), r["train_loss"], r["test_acc"], spread(r["test_acc_seeds"]),
                   r["similarity"], r["all_off_share"]) for k, r in res.items()],
                 f"regions of a ReLU net o = U relu(Wx + b) + c: {cfg['n']} training and {cfg['n']} held-out "
                 f"points, {cfg['steps']} Adam steps, best of {cfg['seeds']} seeds by training loss, "
                 f"{cfg['res']}² grid")
    print()
    return text + "\n\n" + table(
        ("data", "H", "max |o − (Mx + v)|", "all-off share of box", "all-off max |o − c|",
         "flip U[:,k]: max change, k off", "share moved, k on"),
        [(name, s["hidden"], s["linear_gap"], s["all_off_share"], s["all_off_minus_c"], s["edit_moved_off"],
          s["edit_moved_on"]) for name, s in second.items()],
        "second-layer weights set each region's output: o = M x + v with M = U diag(on) W, v = U diag(on) b + c")


# --- the figure ----------------------------------------------------------------------------------


def draw_net(ax, net: RegionNet, X: np.ndarray, y: np.ndarray, box: Box, res: int = 200) -> None:
    """Plane coloured by activation pattern, each hidden unit's line, the decision boundary, the points."""
    P = grid(box, res)
    _, ids = region_ids(net, P)
    colours = np.random.default_rng(0).permutation(max(ids.max() + 1, 20)) % 20  # neighbours rarely share one
    ax.imshow(colours[ids].reshape(res, res), origin="lower", extent=box, cmap="tab20", alpha=0.45,
              interpolation="nearest", aspect="auto", vmin=0, vmax=19)
    xs = np.array(box[:2])
    for (w1, w2), b in zip(net.W, net.b.ravel(), strict=True):
        if abs(w2) > 1e-9:  # w1 x + w2 y + b = 0, drawn as y(x); a vertical line otherwise
            ax.plot(xs, -(w1 * xs + b) / w2, color="0.3", lw=0.6)
        elif abs(w1) > 1e-9:
            ax.axvline(-b / w1, color="0.3", lw=0.6)
    Z = net.logits(P)
    ax.contour(P[0].reshape(res, res), P[1].reshape(res, res), (Z[1] - Z[0]).reshape(res, res), levels=[0.0],
               colors="k", linewidths=1.8)
    ax.scatter(X[0], X[1], c=np.where(y == 1, "C3", "C0"), s=2, linewidths=0)
    ax.set(xlim=box[:2], ylim=box[2:], xticks=[], yticks=[])


def plot_regions(nets: dict, sets: dict, res: dict, out: Path) -> Path:
    fig, axes = new_figure(len(HIDDEN), len(DATASETS) + 1, size=(2.7, 2.6))
    for i, name in enumerate(DATASETS):
        X, y, box = sets[name]
        for j, H in enumerate(HIDDEN):
            ax, r = axes[i * len(HIDDEN) + j], res[f"{name} H={H}"]
            draw_net(ax, nets[name, H], X, y, box)
            ax.set_title(f"{name}, H={H}: {r['regions_box']} regions (≤ {r['bound']})\n"
                         f"held-out accuracy {r['test_acc']:.2f}", fontsize=8)
    ax_sim, ax_reg, ax_acc, ax_edit = axes[-4:]
    # a hidden unit reacts to inputs that point its way: activation against cos(x, w), one colour per unit
    net, (X, y, box) = nets["moons", 4], sets["moons"]
    cos = (net.W @ X) / (np.linalg.norm(net.W, axis=1, keepdims=True) * np.linalg.norm(X, axis=0))
    for k, (c, h) in enumerate(zip(cos, relu(net.W @ X + net.b), strict=True)):
        ax_sim.scatter(c, h, s=3, linewidths=0, label=f"unit {k + 1}")
    ax_sim.set(xlabel="cos θ between x and w", ylabel="h = relu(|w| |x| cos θ + b)",
               title="moons, H=4: units react to x along w")
    ax_sim.legend(fontsize=7, markerscale=3)
    for name in DATASETS:
        ax_reg.plot(HIDDEN, [res[f"{name} H={H}"]["regions_box"] for H in HIDDEN], marker="o", label=name)
        ax_acc.plot(HIDDEN, [res[f"{name} H={H}"]["test_acc"] for H in HIDDEN], marker="o", label=name)
    ax_reg.plot(HIDDEN, [region_bound(H) for H in HIDDEN], "k--", label="bound")
    ax_reg.set(xscale="log", yscale="log", xlabel="hidden units H", ylabel="regions in the data's box",
               title="regions against H")
    ax_acc.set(xscale="log", xlabel="hidden units H", ylabel="held-out accuracy", title="accuracy against H")
    for ax in (ax_reg, ax_acc):
        ax.minorticks_off()
        ax.set_xticks(HIDDEN, [str(H) for H in HIDDEN])
        ax.legend(fontsize=7)
    draw_edit(ax_edit, nets["spirals", 8], *sets["spirals"])
    for ax in (ax_sim, ax_reg, ax_acc):
        ax.title.set_fontsize(9)
    path = save_figure(fig, out, "regions")
    # a palette of 256 colours keeps the twelve region maps' PNG at a third of its size, with no visible change
    Image.open(path).convert("RGB").quantize(256, dither=Image.Dither.NONE).save(path, optimize=True)
    return path


def draw_edit(ax, net: RegionNet, X: np.ndarray, y: np.ndarray, box: Box, res: int = 200) -> None:
    """Flip the sign of U[:, k]: the predicted class changes (red) only where unit k is on (green)."""
    P = grid(box, res)
    on = net.patterns(P)  # (H, res²)
    k = int(np.argsort(on.mean(axis=1))[len(on) // 2])  # a unit on over a middling share of the box
    gx, gy = P[0].reshape(res, res), P[1].reshape(res, res)
    before = net.logits(P).argmax(axis=0)
    net.U[:, k] *= -1.0
    after = net.logits(P).argmax(axis=0)
    net.U[:, k] *= -1.0
    ax.contourf(gx, gy, on[k].reshape(res, res), levels=[0.5, 1.5], colors=["C2"], alpha=0.25)
    ax.contourf(gx, gy, (before != after).reshape(res, res), levels=[0.5, 1.5], colors="none", hatches=["////"])
    ax.contour(gx, gy, before.reshape(res, res), levels=[0.5], colors="k", linewidths=1.5)
    ax.scatter(X[0], X[1], c=np.where(y == 1, "C3", "C0"), s=2, linewidths=0)
    ax.set(xlim=box[:2], ylim=box[2:], xticks=[], yticks=[])
    ax.set_title(f"spirals, H=8: U[:, {k + 1}] flipped\nclass changes (hatched) only where\n"
                 f"unit {k + 1} is on (green)", fontsize=8)
