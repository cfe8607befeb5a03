"""The lab's regions experiment: its net's gradients, its region counting on nets with known lines, and the
directions the lecture predicts (more hidden units, more regions; never more than the bound; XOR solved at H = 4)."""

import ast
import inspect

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from signlab.errors import UserError  # noqa: E402
from signlab.lab.experiments import regions  # noqa: E402
from signlab.lab.experiments.regions import (  # noqa: E402
    DATASETS,
    HIDDEN,
    RegionNet,
    count_regions,
    data_box,
    edit_one_column,
    exact_regions_in_box,
    fit_best,
    grid,
    held_out,
    make_data,
    region_bound,
    region_ids,
    region_maps,
    run_regions,
    similarity,
)
from signlab.lab.training import one_hot  # noqa: E402

SQUARE = (-1.0, 1.0, -1.0, 1.0)


def net_with_lines(lines, m=2, seed=0):
    """A net whose hidden unit k is on where a·x + b·y + c > 0, for lines [(a, b, c), ...]."""
    net = RegionNet(len(lines), SQUARE, m=m, seed=seed)
    L = np.array(lines, dtype=float)
    net.W, net.b = L[:, :2].copy(), L[:, 2:].copy()
    return net


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return run_regions(out=tmp_path_factory.mktemp("regions"), budget="smoke")


def test_gradients_match_finite_differences():
    rng = np.random.default_rng(1)
    net = RegionNet(5, SQUARE, m=3, seed=2)
    X, Y = rng.uniform(-1, 1, (2, 9)), one_hot(rng.integers(0, 3, 9), 3)
    _, grads = net.loss_and_grads(X, Y)
    for name, p in net.parameters().items():
        num = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            keep = p[i]
            p[i] = keep + 1e-6
            up = net.loss_and_grads(X, Y)[0]
            p[i] = keep - 1e-6
            down = net.loss_and_grads(X, Y)[0]
            p[i] = keep
            num[i] = (up - down) / 2e-6
        assert np.abs(grads[name]).max() > 1e-3, name  # a non-trivial gradient
        np.testing.assert_allclose(grads[name], num, rtol=1e-5, atol=1e-7, err_msg=name)


def test_data_is_deterministic_for_a_seed_and_has_both_classes():
    for name in DATASETS:
        a, b, c = make_data(name, 50, seed=0), make_data(name, 50, seed=0), make_data(name, 50, seed=1)
        for u, v in zip(a, b, strict=True):
            np.testing.assert_array_equal(u, v)
        assert not np.array_equal(a[0], c[0])
        X, y, X_te, y_te = a
        assert X.shape == X_te.shape == (2, 50) and set(y) == set(y_te) == {0, 1}
        assert not np.array_equal(X, X_te)  # held-out points are drawn anew, not copied
    X, y, _, _ = make_data("xor", 200)
    np.testing.assert_array_equal(y, (X[0] * X[1] > 0).astype(int))
    assert np.abs(X).min() >= 0.1  # the margin around the axes


def test_bound_is_the_lazy_caterers_numbers():
    assert [region_bound(H) for H in (0, 1, 2, 4, 8, 32)] == [1, 2, 4, 11, 37, 529]


def test_known_lines_give_known_counts():
    # x = 0, y = 0 and x + y = 0.5: three crossings inside the square, 1 + 3 + 3 = 7 regions
    net = net_with_lines([(1, 0, 0), (0, 1, 0), (1, 1, -0.5)])
    assert exact_regions_in_box(net.W, net.b, SQUARE) == 7
    assert count_regions(net, SQUARE, 200) == 7
    # a line outside the square cuts nothing there; two parallels cross each other nowhere: 1 + 3 + 2 = 6
    net = net_with_lines([(1, 0, -0.3), (1, 0, 0.3), (0, 1, 0), (1, 0, -5)])
    assert exact_regions_in_box(net.W, net.b, SQUARE) == 6
    assert count_regions(net, SQUARE, 200) == 6
    # three lines through one point: 6 wedges, not the 7 of general position (the grid count sees it)
    assert count_regions(net_with_lines([(1, 0, 0), (0, 1, 0), (1, -1, 0)]), SQUARE, 201) == 6


def test_random_lines_reach_the_bound_in_the_plane_and_the_grid_never_overcounts():
    rng = np.random.default_rng(0)
    for H in (3, 6, 10):
        net = RegionNet(H, SQUARE, seed=H)
        huge = (-1e4, 1e4, -1e4, 1e4)  # holds every crossing of these lines: the whole plane, in effect
        assert exact_regions_in_box(net.W, net.b, huge) == region_bound(H)
        box = tuple(float(v) for v in np.sort(rng.uniform(-2, 2, 4)).reshape(2, 2).ravel())
        assert count_regions(net, box, 150) <= exact_regions_in_box(net.W, net.b, box) <= region_bound(H)


def test_smoke_regions_stay_under_the_bound_and_grow_with_H(smoke):
    for name in DATASETS:
        rows = [smoke[f"{name} H={H}"] for H in HIDDEN]
        for r in rows:
            assert r["regions_grid"] <= r["regions_box"] <= r["bound"] == region_bound(r["hidden"])
        counts = [r["regions_box"] for r in rows]
        assert counts[0] <= counts[1] and counts[1] < counts[2] < counts[3], (name, counts)


def test_xor_is_solved_at_four_hidden_units():
    X, y, X_te, y_te = make_data("xor", 200)
    best = fit_best(X, y, 4, data_box(X), steps=1500, seeds=3)[0]
    assert held_out(best, X_te, y_te) >= 0.98


def test_each_region_is_a_linear_map_set_by_U_and_all_off_outputs_c():
    net = net_with_lines([(1, 0, 0), (0, 1, 0), (1, 1, -0.5)], m=3, seed=4)
    net.c[:] = np.array([[0.5], [-1.0], [2.0]])
    P = grid(SQUARE, 60)
    pats, ids = region_ids(net, P)
    Z = net.logits(P)
    for r, on in enumerate(pats):
        M, v = region_maps(net, on)
        np.testing.assert_allclose(M @ P[:, ids == r] + v, Z[:, ids == r], atol=1e-12)
    off = ~net.patterns(P).any(axis=0)  # x < 0, y < 0: all three units off
    assert off.any()
    np.testing.assert_array_equal(Z[:, off], np.broadcast_to(net.c, (3, off.sum())))
    moved_off, moved_on = edit_one_column(net, P, k=2)
    assert moved_off == 0.0 and moved_on == 1.0


def test_a_unit_reacts_to_inputs_along_its_weight_vector():
    net = net_with_lines([(1, 0, 0), (0, 2, 0.5), (-1, 1, -0.3)])
    angle = np.linspace(-np.pi, np.pi, 73)
    for r in (0.5, 1.0):
        X = r * np.stack([np.cos(angle), np.sin(angle)])  # a circle: |x| fixed, only the angle varies
        cos = (net.W @ X) / (np.linalg.norm(net.W, axis=1, keepdims=True) * r)
        h = net.forward(X)[1]["H"]
        for k in range(3):  # on a circle the activation only grows with the similarity, whatever the bias
            order = np.argsort(cos[k])
            assert np.all(np.diff(h[k, order]) >= -1e-12)
        assert np.all(similarity(net, X) > 0.75)
    # off-centre points: unit 1 (w along x) is on only for points on its side, so similarity is positive
    X = np.random.default_rng(0).uniform(-1, 1, (2, 500))
    assert similarity(net, X)[0] > 0.5


def test_second_layer_check_and_shape_of_the_result(smoke):
    for s in smoke["second_layer"].values():
        assert s["linear_gap"] < 1e-9 and s["edit_moved_off"] == 0.0 and s["all_off_minus_c"] == 0.0
    assert smoke["finite"] is True


def test_bad_input_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="budget"):
        run_regions(out=tmp_path, budget="huge")
    with pytest.raises(UserError, match="--data"):
        run_regions(data=tmp_path, out=tmp_path, budget="smoke")


def test_the_module_imports_no_torch():
    tree = ast.parse(inspect.getsource(regions))
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert names and not any(name.split(".")[0] == "torch" for name in names)
