"""Each lab experiment, on a smoke budget: it prints a table, writes its PNG, and its numbers are finite."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("matplotlib")

from signlab.data import DataSplit  # noqa: E402
from signlab.errors import UserError  # noqa: E402
from signlab.lab.experiments import EXPERIMENTS  # noqa: E402
from signlab.lab.experiments.common import columns, load_data, num_classes, tensors  # noqa: E402
from signlab.lab.experiments.nets import perceptron  # noqa: E402
from signlab.models.mlp import MLP  # noqa: E402

ISSUE_NAMES = {"approximation", "regions", "standardise", "descent", "loss", "init", "vanishing-gradient", "depth",
               "mlp-vs-cnn", "filters", "pooling"}
NEEDS_REAL_DATA = {"synthetic-to-real"}  # smoke-tested on made-up real tracks in test_lab_transfer.py


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def numbers(obj):
    """Every number inside a (nested) result dict."""
    if isinstance(obj, dict):
        for v in obj.values():
            yield from numbers(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from numbers(v)
    elif isinstance(obj, (int, float, np.number)) and not isinstance(obj, bool):
        yield float(obj)


def test_registry_lists_the_issues_experiments_with_one_line_each():
    assert set(EXPERIMENTS) == ISSUE_NAMES | NEEDS_REAL_DATA
    for description, fn in EXPERIMENTS.values():
        assert description and "\n" not in description and callable(fn)


@pytest.mark.parametrize("name", sorted(ISSUE_NAMES))
def test_experiment_smoke(name, tmp_path, capsys):
    _, fn = EXPERIMENTS[name]
    res = fn(out=tmp_path, budget="smoke")
    printed = capsys.readouterr().out
    assert res["table"] and res["table"] in printed
    assert res["table"].count("\n") >= 3  # a title or header, a rule and rows
    png = tmp_path / f"{name}.png"
    assert res["png"] == str(png) and png.stat().st_size > 1000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert res["finite"] is True
    values = list(numbers({k: v for k, v in res.items() if k not in ("table", "png")}))
    assert values and all(math.isfinite(v) for v in values)




def test_load_data_splits_a_given_set_by_track(tiny_image_set):
    split = load_data(tiny_image_set, "full")
    assert isinstance(split, DataSplit) and split.val is not None
    assert num_classes(split) == 4 and len(split.train) + len(split.val) == 60
    assert not set(split.train.tracks) & set(split.val.tracks)


def test_columns_and_tensors_are_the_perceptrons_and_torchs_views_of_a_split(tiny_image_set):
    split = load_data(tiny_image_set, "full")
    n_tr, n_va = len(split.train), len(split.val)
    X_tr, Y_tr, X_va, Y_va = columns(split)
    assert X_tr.shape == (32 * 32 * 3, n_tr) and Y_tr.shape == (4, n_tr) and Y_va.shape == (4, n_va)
    np.testing.assert_allclose(X_tr.mean(axis=1), 0.0, atol=1e-9)  # standardised by the training part
    assert columns(split, standardise=False)[0].max() <= 1.0
    x_tr, y_tr, x_va, y_va = tensors(split)
    assert x_tr.shape == (n_tr, 3, 32, 32) and x_va.shape == (n_va, 3, 32, 32)
    assert x_tr.is_contiguous() and torch.equal(y_va, torch.from_numpy(split.val.labels))
    # a split without a validation part cannot be measured on: say so instead of failing inside numpy
    with pytest.raises(ValueError):
        columns(DataSplit(split.train, None, "no val"))


def test_the_torch_perceptron_is_the_mlp_model():
    assert isinstance(perceptron(12, 5, 3), MLP)


def test_an_experiment_runs_on_a_given_set(tmp_path, tiny_image_set):
    res = EXPERIMENTS["mlp-vs-cnn"][1](data=tiny_image_set, out=tmp_path, budget="smoke")
    assert res["finite"] and (tmp_path / "mlp-vs-cnn.png").exists()


def test_unknown_budget_is_a_user_error(tmp_path):
    with pytest.raises(UserError):
        EXPERIMENTS["loss"][1](out=tmp_path, budget="huge")
