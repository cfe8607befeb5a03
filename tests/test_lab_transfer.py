"""The lab's synthetic-to-real experiment on tiny made-up real data: runs, measures on held-out real tracks only,
samples whole tracks, and refuses to run without real photos."""

import math
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("matplotlib")

from conftest import make_folders, make_gtsrb_train  # noqa: E402

from signlab.data import load_images  # noqa: E402
from signlab.errors import UserError  # noqa: E402
from signlab.lab.experiments import EXPERIMENTS  # noqa: E402
from signlab.lab.experiments.transfer import concat, run_synthetic_to_real, whole_tracks  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_smoke_run_on_made_up_real_data(tmp_path, capsys):
    real = make_gtsrb_train(tmp_path / "real", classes=(0, 1, 14), tracks=5, frames=4)
    res = run_synthetic_to_real(real, out=tmp_path / "out", budget="smoke")
    assert res["table"] in capsys.readouterr().out
    assert (tmp_path / "out" / "synthetic-to-real.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["synthetic-to-real.png"]  # renders go to the cache
    cond = res["conditions"]
    assert set(cond) == {"rendered signs only", "1 real track(s)/class", "1 real track(s)/class + rendered"}
    # rendered-only trains on no real photo; one track a class of made-up real data is 4 frames x 3 classes
    assert cond["rendered signs only"]["real_images"] == 0 and cond["rendered signs only"]["rendered_images"] > 0
    assert cond["1 real track(s)/class"] == {**cond["1 real track(s)/class"], "real_images": 12, "rendered_images": 0}
    both = cond["1 real track(s)/class + rendered"]
    assert both["real_images"] == 12 and both["rendered_images"] == cond["rendered signs only"]["rendered_images"]
    # 20 % of 15 tracks held out: 3 tracks of 4 frames, real photos only
    assert res["val_images"] == 12
    assert all(0.0 <= c["val_acc"] <= 1.0 for c in cond.values()) and res["finite"] is True
    assert all(math.isfinite(c["val_acc"]) for c in cond.values())


def test_registered_as_a_lab_experiment():
    description, fn = EXPERIMENTS["synthetic-to-real"]
    assert fn is run_synthetic_to_real and "\n" not in description


def test_without_real_data_one_clear_line():
    with pytest.raises(UserError) as err:
        run_synthetic_to_real(None, budget="smoke")
    message = str(err.value)
    assert "--data" in message and "signlab download gtsrb" in message and "\n" not in message


def test_cli_without_data_fails_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "signlab", "lab", "synthetic-to-real", "--out", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "--data" in proc.stderr


def test_refuses_classes_that_are_not_gtsrb(tmp_path):
    with pytest.raises(UserError, match="GTSRB"):
        run_synthetic_to_real(make_folders(tmp_path / "pets"), out=tmp_path, budget="smoke")


def test_whole_tracks_are_whole_and_nested(tmp_path):
    ds = load_images(make_gtsrb_train(tmp_path / "real", classes=(0, 1), tracks=5, frames=3))
    one, three = whole_tracks(ds, 1), whole_tracks(ds, 3)
    assert set(one) <= set(three)
    for idx, k in ((one, 1), (three, 3)):
        for label in (0, 1):
            tracks = ds.tracks[idx][ds.labels[idx] == label]
            assert len(np.unique(tracks)) == k
            assert len(tracks) == 3 * k  # every frame of a chosen track, none of the others


def test_concat_keeps_tracks_apart(tmp_path):
    a = load_images(make_gtsrb_train(tmp_path / "a", classes=(0,), tracks=2, frames=2))
    b = load_images(make_gtsrb_train(tmp_path / "b", classes=(0,), tracks=2, frames=2, seed=1))
    both = concat(a, b)
    assert len(both) == 8 and len(np.unique(both.tracks)) == 4
