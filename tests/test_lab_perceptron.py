"""The lab's perceptron: its hand-derived gradients against finite differences, autograd and the slides."""

import subprocess
import sys

import numpy as np
import pytest

from signlab.lab import (
    ACTIVATIONS,
    LOSSES,
    Standardiser,
    TwoLayerPerceptron,
    accuracy,
    batches,
    fit,
    flatten_images,
    one_hot,
    train_perceptron,
)
from signlab.lab.perceptron import cross_entropy, sigmoid, sigmoid_backward, squared_error, tanh, tanh_backward

COMBOS = [(a, loss) for a in ACTIVATIONS for loss in LOSSES]


def problem(d=5, hidden=4, m=3, n=7, activation="tanh", loss="squared", seed=0, bias=False):
    """A small random model with data: X (d, n), one-hot Y (m, n)."""
    rng = np.random.default_rng(seed)
    model = TwoLayerPerceptron(d, hidden, m, activation, loss, init="modern", seed=seed, bias=bias)
    # larger weights than init so that sigmoids are off their linear middle and the check is not trivial
    model.W *= 3.0
    model.U *= 3.0
    if bias:  # biases start at 0: move them, so that a wrong ∂L/∂b or ∂L/∂c cannot hide
        model.b[...] = rng.standard_normal(model.b.shape)
        model.c[...] = rng.standard_normal(model.c.shape)
    X = rng.standard_normal((d, n))
    Y = one_hot(rng.integers(0, m, n), m)
    return model, X, Y


def numerical_grad(model, X, Y, name, eps=1e-6):
    p = model.parameters()[name]
    g = np.zeros_like(p)
    for i in np.ndindex(p.shape):
        old = p[i]
        p[i] = old + eps
        plus = model.loss(X, Y)
        p[i] = old - eps
        minus = model.loss(X, Y)
        p[i] = old
        g[i] = (plus - minus) / (2 * eps)
    return g


def rel_error(a, b):
    return np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-300)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("activation,loss", COMBOS)
def test_gradients_match_finite_differences(activation, loss, bias):
    model, X, Y = problem(activation=activation, loss=loss, bias=bias)
    assert model.W.dtype == np.float64
    _, grads = model.loss_and_grads(X, Y)
    assert set(grads) == set(model.parameters()) == ({"W", "b", "U", "c"} if bias else {"W", "U"})
    for name in grads:
        num = numerical_grad(model, X, Y, name)
        assert np.abs(grads[name]).max() > 1e-3  # a non-trivial gradient
        assert rel_error(grads[name], num) < 1e-6, name


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("activation,loss", COMBOS)
def test_loss_and_gradients_match_torch_autograd(activation, loss, bias):
    torch = pytest.importorskip("torch")
    model, X, Y = problem(activation=activation, loss=loss, seed=1, bias=bias)
    L, grads = model.loss_and_grads(X, Y)

    params = {k: torch.tensor(p, requires_grad=True) for k, p in model.parameters().items()}
    zero = torch.zeros((), dtype=torch.float64)
    W, U, b, c = params["W"], params["U"], params.get("b", zero), params.get("c", zero)
    Xt, Yt = torch.tensor(X), torch.tensor(Y)
    act = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}[activation]
    Z = U @ act(W @ Xt + b) + c  # (m, n)
    if loss == "squared":
        Lt = ((torch.sigmoid(Z) - Yt) ** 2).sum()
    elif loss == "linear_squared":
        Lt = ((Z - Yt) ** 2).sum()
    else:  # cross_entropy over classes = rows; torch wants samples as rows
        Lt = torch.nn.functional.cross_entropy(Z.T, Yt.T, reduction="sum")
    Lt.backward()
    assert L == pytest.approx(Lt.item(), rel=1e-12)
    for name, p in params.items():
        np.testing.assert_allclose(grads[name], p.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


def sig_prime(a):
    return sigmoid(a) * (1 - sigmoid(a))


@pytest.mark.parametrize("x,y,w,u", [(0.7, 1.0, 0.5, -1.2), (-2.0, 0.0, 1.3, 0.8), (1.5, 1.0, -0.4, 2.0)])
def test_scalar_case_matches_the_slides_closed_form(x, y, w, u):
    # d = m = hidden = 1: ỹ = σ(u σ(w x)), L = (ỹ − y)²
    model = TwoLayerPerceptron(1, 1, 1, "sigmoid", "squared")
    model.W[...] = w
    model.U[...] = u
    L, grads = model.loss_and_grads(np.array([[x]]), np.array([[y]]))

    h = sigmoid(w * x)
    y_hat = sigmoid(u * h)
    dL_du = 2 * (y_hat - y) * sig_prime(u * h) * h
    dL_dw = 2 * (y_hat - y) * sig_prime(u * h) * u * sig_prime(w * x) * x
    assert L == pytest.approx((y_hat - y) ** 2, rel=1e-14)
    assert grads["U"].item() == pytest.approx(dL_du, rel=1e-12)
    assert grads["W"].item() == pytest.approx(dL_dw, rel=1e-12)


def test_biases_are_optional_and_the_lectures_model_is_the_default():
    lecture = TwoLayerPerceptron(d=3, hidden=4, m=2)
    assert lecture.b is None and lecture.c is None and set(lecture.parameters()) == {"W", "U"}
    assert lecture.num_parameters() == 4 * 3 + 2 * 4 and "bias" not in repr(lecture)
    biased = TwoLayerPerceptron(d=1, hidden=4, m=1, loss="linear_squared", bias=True)
    assert biased.b.shape == (4, 1) and biased.c.shape == (1, 1) and not biased.b.any()
    assert biased.num_parameters() == 3 * 4 + 1  # the 3H + 1 of a one-input, one-output net
    X = np.linspace(-1, 1, 5)[None, :]  # (1, 5)
    biased.c[...] = 7.0
    # linear output: ỹ = U σ(W x + b) + c is not squashed into (0, 1)
    np.testing.assert_allclose(biased.predict(X), biased.U @ sigmoid(biased.W @ X) + 7.0, rtol=1e-14)


def test_linear_output_steps_fit_a_line():
    # the update rules work on every parameter, biases included: gradient descent fits y = 2x − 1
    X = np.linspace(-1, 1, 21)[None, :]
    Y = 2 * X - 1
    model = TwoLayerPerceptron(1, 4, 1, "tanh", "linear_squared", init="modern", seed=0, bias=True)
    hist = fit(model, X, Y, rule="gd", lr=0.2, epochs=2000)
    assert hist.loss[-1] < 1e-3 * hist.loss[0]
    assert abs(model.c.item()) > 0.1  # the offset −1 needed the output bias to move


# --- the non-linearity identities, over a wide range of z ------------------------------------------

Z_WIDE = np.concatenate([np.linspace(-40, 40, 8001), [-1000.0, -710.0, 710.0, 1000.0]])  # e^710 overflows


def sigmoid_by_definition(z):
    """1 / (1 + e^{−z}), evaluated so that exp only ever sees −|z|: e^{z}/(1 + e^{z}) for z < 0."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def test_sigmoid_is_half_of_one_plus_tanh_of_half_z():
    # the lab computes σ(z) as ½(1 + tanh(z/2)); it must equal the definition 1/(1 + e^{−z}) everywhere
    with np.errstate(over="raise", invalid="raise"):
        s = sigmoid(Z_WIDE)
        with pytest.raises(FloatingPointError):
            1.0 / (1.0 + np.exp(-Z_WIDE))  # the naive formula overflows at z = −710
    ref = sigmoid_by_definition(Z_WIDE)
    eps = np.finfo(float).eps
    assert np.abs(s - ref).max() <= eps  # absolute accuracy: about one rounding of the 1 in 1 + tanh
    pos = Z_WIDE >= 0
    assert (np.abs(s - ref)[pos] / ref[pos]).max() <= 2 * eps  # and relative accuracy where σ ≥ ½
    assert s[Z_WIDE == 1000.0] == 1.0 and s[Z_WIDE == -1000.0] == 0.0


def test_tanh_is_the_lab_tanh_by_definition():
    # (e^z − e^{−z}) / (e^z + e^{−z}) as sign(z)(1 − e^{−2|z|}) / (1 + e^{−2|z|}): no overflow, and expm1
    # keeps 1 − e^{−2|z|} exact near z = 0
    e = np.exp(-2 * np.abs(Z_WIDE))
    ref = np.sign(Z_WIDE) * -np.expm1(-2 * np.abs(Z_WIDE)) / (1 + e)
    np.testing.assert_allclose(tanh(Z_WIDE), ref, rtol=4 * np.finfo(float).eps, atol=0)


@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_derivatives_from_the_output_match_central_differences(name):
    f, backward = {"sigmoid": (sigmoid, sigmoid_backward), "tanh": (tanh, tanh_backward)}[name]
    z = np.linspace(-40, 40, 8001)
    # h ≈ ε^{1/3}: truncation (h²) and rounding (ε/h) errors are both about 1e-11
    h = 1e-5
    numeric = (f(z + h) - f(z - h)) / (2 * h)
    analytic = backward(f(z), np.ones_like(z))  # σ′ = σ(1 − σ), tanh′ = 1 − tanh², from the output alone
    assert analytic.max() == pytest.approx(0.25 if name == "sigmoid" else 1.0)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-7, atol=1e-10)
    # the grad argument is the chain rule's incoming factor: it multiplies
    np.testing.assert_allclose(backward(f(z), 3.0 * np.ones_like(z)), 3.0 * analytic, rtol=1e-15)


def test_loss_sums_over_samples_and_outputs():
    model, X, Y = problem(n=6)
    total = model.loss(X, Y)
    per_sample = sum(model.loss(X[:, [i]], Y[:, [i]]) for i in range(6))
    assert total == pytest.approx(per_sample, rel=1e-12)
    assert total == pytest.approx(np.sum((model.predict(X) - Y) ** 2), rel=1e-12)


def test_shapes_follow_the_slides():
    model = TwoLayerPerceptron(d=12, hidden=5, m=3)
    assert model.W.shape == (5, 12) and model.U.shape == (3, 5)
    assert model.predict(np.zeros((12, 4))).shape == (3, 4)  # samples are columns
    assert model.num_parameters() == 5 * 12 + 3 * 5


def test_numerically_stable_for_huge_inputs():
    Z = np.array([[1000.0, -1000.0], [-1000.0, 1000.0]])
    Y = np.eye(2)
    with np.errstate(over="raise", divide="raise", invalid="raise"):  # underflow to 0 is harmless
        assert cross_entropy(Z, Y) == pytest.approx(0.0, abs=1e-12)
        assert cross_entropy(Z, Y[::-1]) == pytest.approx(4000.0)
        assert squared_error(Z, Y) == pytest.approx(0.0, abs=1e-12)
        assert np.all(np.isfinite(sigmoid(np.array([-1e4, 1e4]))))


def test_init_lecture_is_std_0_1_and_modern_scales_with_fan_in():
    lec = TwoLayerPerceptron(3072, 200, 43, "relu", init="lecture")
    assert lec.W.std() == pytest.approx(0.1, rel=0.02)
    he = TwoLayerPerceptron(3072, 200, 43, "relu", init="modern")
    assert he.W.std() == pytest.approx(np.sqrt(2 / 3072), rel=0.02)
    glorot = TwoLayerPerceptron(3072, 200, 43, "tanh", init="modern")
    assert glorot.W.std() == pytest.approx(np.sqrt(2 / (3072 + 200)), rel=0.02)
    with pytest.raises(ValueError):
        TwoLayerPerceptron(3, 2, 1, init="zeros")


def test_accuracy_is_share_of_matching_argmax():
    Y = one_hot(np.array([0, 1, 2, 1]), 3)
    Y_hat = np.array([[0.9, 0.1, 0.2, 0.6], [0.05, 0.8, 0.1, 0.3], [0.05, 0.1, 0.7, 0.1]])
    assert accuracy(Y_hat, Y) == 0.75  # the last column predicts 0, the truth is 1
    assert accuracy(Y, Y) == 1.0


def test_standardiser_uses_training_statistics_only():
    rng = np.random.default_rng(0)
    X_tr = rng.normal(5.0, 2.0, (4, 200))
    X_va = rng.normal(-3.0, 7.0, (4, 50))
    X_tr[3] = 1.0  # a constant feature must not divide by zero
    std = Standardiser.fit(X_tr)
    Z_tr = std(X_tr)
    np.testing.assert_allclose(Z_tr[:3].mean(axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(Z_tr[:3].std(axis=1), 1.0, rtol=1e-12)
    assert np.all(Z_tr[3] == 0.0)
    # validation data is shifted and scaled with the *training* numbers, not its own
    np.testing.assert_allclose(std(X_va), (X_va - X_tr.mean(1, keepdims=True)) / std.std, rtol=1e-12)
    assert abs(std(X_va)[:3].mean()) > 1.0


def test_flatten_images_gives_columns_in_unit_range():
    images = np.arange(2 * 2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 2, 3) * 10
    X = flatten_images(images)
    assert X.shape == (12, 2) and X.dtype == np.float64
    np.testing.assert_allclose(X[:, 1], images[1].ravel() / 255.0)


def test_batches_per_rule():
    rng = np.random.default_rng(0)
    gd = list(batches(10, "gd", 4, rng))
    assert len(gd) == 1 and list(gd[0]) == list(range(10))
    sgd = list(batches(10, "sgd", 4, rng))
    assert len(sgd) == 10 and all(len(b) == 1 for b in sgd)
    mini = list(batches(10, "minibatch", 4, rng))
    assert [len(b) for b in mini] == [4, 4, 2]
    assert sorted(np.concatenate(mini)) == list(range(10))
    with pytest.raises(ValueError):
        list(batches(10, "adam", 4, rng))


def separable(n=120, seed=0):
    """Three well-separated Gaussian blobs in 2-D, samples as columns."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    centres = np.array([[3.0, 0.0], [-3.0, 3.0], [0.0, -3.0]])
    X = (centres[labels] + 0.5 * rng.standard_normal((n, 2))).T  # (2, n)
    return X, one_hot(labels, 3)


@pytest.mark.parametrize("loss", ["squared", "cross_entropy"])  # the classification losses; linear_squared is above
@pytest.mark.parametrize("rule,epochs", [("gd", 300), ("sgd", 5), ("minibatch", 40)])
def test_update_rules_reduce_loss_on_a_separable_problem(rule, epochs, loss):
    X, Y = separable()
    model = TwoLayerPerceptron(2, 8, 3, "tanh", loss, init="modern", seed=0)
    hist = fit(model, X, Y, rule=rule, lr=0.5, epochs=epochs, batch_size=10, seed=0)
    assert hist.loss[-1] < 0.5 * hist.loss[0]
    assert accuracy(model.predict(X), Y) >= 0.95
    assert hist.examples_seen[-1] == epochs * X.shape[1]
    assert len(hist.loss) == epochs + 1 and len(hist.seconds) == epochs + 1


def test_fit_logs_every_n_examples():
    X, Y = separable(n=40)
    model = TwoLayerPerceptron(2, 4, 3, "relu", "cross_entropy", init="modern")
    hist = fit(model, X, Y, rule="sgd", lr=0.1, epochs=2, log_every=10)
    assert hist.examples_seen == [0, 10, 20, 30, 40, 50, 60, 70, 80]
    assert hist.seconds == sorted(hist.seconds)


def test_fit_stops_after_max_seconds():
    X, Y = separable(n=40)
    model = TwoLayerPerceptron(2, 4, 3, "tanh", "cross_entropy", init="modern")
    hist = fit(model, X, Y, rule="sgd", lr=0.1, epochs=10**6, max_seconds=0.05)
    assert 0 < hist.examples_seen[-1] < 10**6 * 40
    assert 0.05 <= hist.seconds[-1] < 1.0
    untouched = TwoLayerPerceptron(2, 4, 3, "tanh", "cross_entropy", init="modern")
    W0 = untouched.W.copy()
    hist = fit(untouched, X, Y, epochs=5, max_seconds=0.0)
    assert hist.examples_seen == [0] and np.array_equal(untouched.W, W0)  # no step was taken


def test_importing_the_lab_does_not_load_torch():
    # a fresh interpreter: this test process may have loaded torch already
    code = "import signlab.lab, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    # nor do its slides (torch inside the functions) or the `signlab lab` command's module
    code = "import signlab.lab.slides, signlab.lab.cli, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def tiny_image_set(seed=0):
    """3 classes of 8×8 images told apart by colour, 4 tracks of 5 frames per class."""
    data = pytest.importorskip("signlab.data")
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), 20)
    tracks = np.repeat(np.arange(12), 5)
    base = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200]])[labels]  # (60, 3)
    images = np.clip(base[:, None, None, :] + rng.normal(0, 40, (60, 8, 8, 3)), 0, 255).astype(np.uint8)
    return data.ImageSet(images=images, labels=labels, tracks=tracks, paths=[f"{i}.png" for i in range(60)],
                         class_names=["red", "green", "blue"], layout="synthetic", root="")


def test_train_perceptron_on_images(capsys):
    ds = tiny_image_set()
    r = train_perceptron(ds, hidden=8, epochs=10, batch_size=8, val_fraction=0.25)
    assert r.model.W.shape == (8, 8 * 8 * 3) and r.model.U.shape == (3, 8)
    assert r.train_accuracy == 1.0 and r.val_accuracy == 1.0
    assert r.accuracy_on(tiny_image_set(seed=1)) == 1.0
    # standardised with the training part's statistics, not those of all the images
    from signlab.data import split_indices

    tr, _ = split_indices(ds, val_fraction=0.25, seed=0)
    np.testing.assert_allclose(r.standardiser.mean, flatten_images(ds.images[tr]).mean(1, keepdims=True))
    assert not np.allclose(r.standardiser.mean, flatten_images(ds.images).mean(1, keepdims=True))
    out = capsys.readouterr().out
    assert "train accuracy 1.000, validation accuracy 1.000" in out


def test_train_perceptron_on_the_default_drawn_signs_beats_chance():
    pytest.importorskip("signlab.data")
    r = train_perceptron(hidden=16, epochs=2, verbose=False)
    assert r.model.U.shape[0] == 43
    assert r.train_accuracy > 0.2  # chance is 1/43
    assert np.isfinite(r.history.loss).all() and r.history.loss[-1] < r.history.loss[0]
