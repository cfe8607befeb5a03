"""The slides' autodiff example gives the slides' numbers."""

import pytest

from signlab.lab.slides import slides_autodiff


def test_slides_autodiff_numbers(capsys):
    pytest.importorskip("torch")
    r = slides_autodiff()
    assert r["loss_before"] == 17.0  # (2 − 3 + 2)² + (1 − 5 + 0)² = 1 + 16
    assert 0.0 <= r["loss_after"] < 1e-10  # float32 leaves it at about 1e-12
    assert r["x"] == pytest.approx([1.0, 5.0], abs=1e-5)
    out = capsys.readouterr().out
    assert "17.0" in out and "x = [1.0000" in out


def test_slides_autodiff_follows_the_gradient_descent_recursion():
    pytest.importorskip("torch")
    # each step scales the residual x − y + z by (1 − 2·lr): after one step the loss is 17 · 0.8²
    r = slides_autodiff(steps=1, verbose=False)
    assert r["loss_after"] == pytest.approx(17.0 * 0.8**2, rel=1e-6)
    # x ← x − 0.1 · 2(x − y + z) = [2 − 0.2·1, 1 − 0.2·(−4)]
    assert r["x"] == pytest.approx([1.8, 1.8], rel=1e-6)
