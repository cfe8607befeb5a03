"""The approximation experiment: the three families at equal parameter counts, and what each pays for."""

import ast
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from signlab.errors import UserError  # noqa: E402
from signlab.lab import TwoLayerPerceptron  # noqa: E402
from signlab.lab.experiments import approximation as ap  # noqa: E402

GIBBS = 0.0895  # the Fourier series' overshoot at a jump, as a share of the jump, for many terms


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return ap.run_approximation(out=tmp_path_factory.mktemp("approx"), budget="smoke")


def err(res, target, family, kind="mean"):
    return dict(zip(res["sizes"], res["errors"][target][family][kind], strict=True))


def test_parameter_counts_match_the_nets():
    for h in (1, 2, 8, 64):
        n = ap.param_counts(h)
        net = TwoLayerPerceptron(1, h, 1, "sigmoid", "linear_squared", bias=True)
        assert n["net"] == net.num_parameters() == n["polynomial"] == 3 * h + 1
        assert n["Fourier"] == 3 * h + 1 - (h % 2)  # 2⌊3H/2⌋ + 1: one fewer for odd H


def test_fits_reproduce_what_their_family_contains():
    x = ap.X_EVAL
    cubic = lambda z: z**3 - 2 * z + 0.5  # noqa: E731
    np.testing.assert_allclose(ap.fit_polynomial(cubic, 4)(x), cubic(x), atol=1e-10)
    np.testing.assert_allclose(ap.fit_fourier(ap.TARGETS["sin 3x"], 7)(x), np.sin(3 * x), atol=1e-12)
    # one term short (K = 2), the series cannot hold sin 3x at all: it is orthogonal to every term
    assert np.abs(ap.fit_fourier(ap.TARGETS["sin 3x"], 5)(x)).max() < 1e-12


def test_more_hidden_units_fit_sin_3x_better(smoke):
    net = err(smoke, "sin 3x", "net")
    assert net[32] < 0.5 * net[2]
    assert err(smoke, "sin 3x", "net", "max")[32] < err(smoke, "sin 3x", "net", "max")[2]


def test_fourier_beats_polynomials_on_sin_3x(smoke):
    for h in smoke["sizes"]:
        assert err(smoke, "sin 3x", "Fourier", "max")[h] < err(smoke, "sin 3x", "polynomial", "max")[h]


def test_gibbs_overshoot_at_the_jump(smoke):
    # the truncated Fourier series overshoots the step by about 9 % of the jump, whatever its length;
    # the L2-best polynomial does much the same
    assert smoke["at_mid"]["Fourier"]["overshoot"] == pytest.approx(GIBBS, abs=0.015)
    assert smoke["at_mid"]["polynomial"]["overshoot"] > 0.05
    # and no continuous fit gets within less than half the jump of the step next to it
    for fam in ap.FAMILIES:
        assert min(err(smoke, "step", fam, "max").values()) > 0.45


def test_a_steep_sigmoid_makes_the_jump_that_series_pay_for(smoke):
    # with 7 parameters the net's mean error on the step is far below the polynomial's and the series'
    for fam in ("polynomial", "Fourier"):
        assert err(smoke, "step", "net")[2] < 0.5 * err(smoke, "step", fam)[2]


def test_series_converge_on_the_kink(smoke):
    for fam in ("polynomial", "Fourier"):
        means = [err(smoke, "|x|", fam)[h] for h in smoke["sizes"]]
        assert all(b < a for a, b in zip(means, means[1:], strict=False))


def imported_modules(path):
    names = set()
    for node in ast.walk(ast.parse(Path(path).read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module or "")
    return names


def test_module_never_imports_torch():
    # the module and its torch-free helpers; common.py (which imports torch) is not among their imports
    for path in (Path(ap.__file__), Path(ap.__file__).with_name("report.py")):
        names = imported_modules(path)
        assert names and not any(n.split(".")[0] == "torch" or n.endswith(".common") for n in names), path


def test_bad_budget_is_a_user_error(tmp_path):
    with pytest.raises(UserError):
        ap.run_approximation(out=tmp_path, budget="tiny")
