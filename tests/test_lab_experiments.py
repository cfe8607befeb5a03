"""Each lab experiment, on a smoke budget: it prints a table, writes its PNG, and its numbers are finite."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("matplotlib")

from signlab.data import ImageSet  # noqa: E402
from signlab.errors import UserError  # noqa: E402
from signlab.experiments import EXPERIMENTS  # noqa: E402
from signlab.experiments.common import load_data  # noqa: E402

ISSUE_NAMES = {"mlp-vs-cnn", "vanishing-gradient", "loss", "init", "standardise", "descent", "filters"}


@pytest.fixture(autouse=True)
def one_torch_thread():
    # smoke runs are tiny: on a shared 2-core machine a second thread mostly waits for the first
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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
    assert set(EXPERIMENTS) == ISSUE_NAMES
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


def tiny_set():
    """4 classes of 32×32 images with 3 tracks each: the split path of load_data, without the sample."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 15)
    images = rng.integers(0, 256, (60, 32, 32, 3), dtype=np.uint8)
    return ImageSet(images=images, labels=labels, tracks=np.repeat(np.arange(12), 5),
                    paths=[f"{i}.png" for i in range(60)], class_names=list("abcd"), layout="synthetic", root="")


def test_load_data_splits_a_given_set_by_track():
    ds = load_data(tiny_set(), "full")
    assert ds.m == 4 and len(ds.train) + len(ds.val) == 60
    assert not set(ds.train.tracks) & set(ds.val.tracks)


def test_an_experiment_runs_on_a_given_set(tmp_path):
    res = EXPERIMENTS["mlp-vs-cnn"][1](data=tiny_set(), out=tmp_path, budget="smoke")
    assert res["finite"] and (tmp_path / "mlp-vs-cnn.png").exists()


def test_unknown_budget_is_a_user_error(tmp_path):
    with pytest.raises(UserError):
        EXPERIMENTS["loss"][1](out=tmp_path, budget="huge")
