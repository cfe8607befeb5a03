import csv
import json
import shutil

import pytest
from conftest import make_gtsrb_train
from safetensors.torch import load_file

from signlab.checkpoint import list_checkpoints
from signlab.cli import main
from signlab.config import TrainConfig
from signlab.train import lr_at

TINY = {"model": "signnet", "model_options": {"widths": [8, 16], "depth": 1}, "batch_size": 8, "epochs": 2,
        "threads": 1}


@pytest.fixture
def tiny(tmp_path):
    data = make_gtsrb_train(tmp_path / "data", tracks=4, frames=4)
    preset = tmp_path / "tiny.json"
    preset.write_text(json.dumps(TINY))
    return data, preset


def run(tmp_path, name, data, preset, *extra):
    out = tmp_path / name
    code = main(["train", "--data", str(data), "--preset", str(preset), "--out", str(out), "--no-progress",
                 "--val-fraction", "0.25", *extra])
    return code, out


def weights(out):
    return load_file(str(out / "last.safetensors"))


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].equal(b[k]), k


def test_run_folder_layout_and_metrics(tmp_path, tiny):
    code, out = run(tmp_path, "a", *tiny)
    assert code == 0
    for name in ("config.json", "metrics.csv", "last.safetensors", "best.safetensors", "skipped.txt"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for field in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "images_per_second",
                  "train_seconds"):
        assert float(rows[-1][field]) >= 0
    assert float(rows[1]["train_seconds"]) > float(rows[0]["train_seconds"])
    assert len(list_checkpoints(out)) == 2
    assert json.loads((out / "config.json").read_text())["model_options"] == TINY["model_options"]


def test_same_seed_same_weights_other_seed_differs(tmp_path, tiny):
    _, a = run(tmp_path, "a", *tiny)
    _, b = run(tmp_path, "b", *tiny)
    _, c = run(tmp_path, "c", *tiny, "--seed", "1")
    assert_same(weights(a), weights(b))
    assert not weights(a)["model.head.weight"].equal(weights(c)["model.head.weight"])


def test_resume_from_epoch_checkpoint_is_exact(tmp_path, tiny):
    _, full = run(tmp_path, "full", *tiny)
    _, cut = run(tmp_path, "cut", *tiny)
    shutil.rmtree(list_checkpoints(cut)[0])  # as if killed before the last epoch's checkpoint
    code, _ = run(tmp_path, "cut", *tiny, "--resume")
    assert code == 0
    assert_same(weights(full), weights(cut))
    rows = list(csv.DictReader(open(cut / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]  # the re-run epoch's row is not duplicated


def test_resume_with_changed_config_is_refused(tmp_path, tiny, capsys):
    run(tmp_path, "a", *tiny)
    code, _ = run(tmp_path, "a", *tiny, "--resume", "--batch-size", "4")
    err = capsys.readouterr().err
    assert code == 2 and "batch_size: 8 -> 4" in err and "--force-resume" in err
    code, _ = run(tmp_path, "a", *tiny, "--resume", "--erase", "0.5")
    err = capsys.readouterr().err
    assert code == 2 and "augment: {" in err and "'erase': 0.5" in err and "'rotate_degrees': 10.0" in err


def test_one_cycle_schedule_shape():
    cfg = TrainConfig(lr=1.0, warmup=0.2)
    lrs = [lr_at(s, 100, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.05) and max(lrs) == pytest.approx(1.0) and lrs.index(max(lrs)) == 20
    assert lrs[-1] < 0.01


@pytest.mark.parametrize("extra", [["--loss", "squared", "--init", "normal", "--model", "mlp", "--hidden", "16"],
                                   ["--optimizer", "adamw", "--lr", "0.003", "--ema", "0.9"],
                                   ["--erase", "0.5", "--saturation", "0.5", "--flips", "0.5"]])
def test_lecture_and_modern_options_train(tmp_path, tiny, extra):
    code, out = run(tmp_path, "opt", *tiny, "--epochs", "1", *extra)
    assert code == 0 and (out / "best.safetensors").is_file()


def test_existing_run_needs_resume_or_overwrite(tmp_path, tiny, capsys):
    run(tmp_path, "a", *tiny, "--epochs", "1")
    code, out = run(tmp_path, "a", *tiny, "--epochs", "1")
    assert code == 2 and "already holds a run" in capsys.readouterr().err
    code, out = run(tmp_path, "a", *tiny, "--epochs", "1", "--overwrite")
    assert code == 0 and len(list(csv.DictReader(open(out / "metrics.csv")))) == 1


def test_ema_decay_ramps_up_so_short_runs_forget_the_initial_weights():
    import torch

    from signlab.train import update_ema

    model = torch.nn.Linear(2, 1)
    torch.nn.init.ones_(model.weight)
    ema = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    update_ema(ema, model, 0.999, step=0)  # decay (1 + 0) / (10 + 0) = 0.1
    assert torch.allclose(ema["weight"], torch.full((1, 2), 0.9))
    ema = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    update_ema(ema, model, 0.999, step=100_000)  # the ramp is above 0.999 by now
    assert torch.allclose(ema["weight"], torch.full((1, 2), 0.001))


def test_compile_trains_and_reports_its_first_step(tmp_path, tiny, capsys):
    """torch.compile generates C++ on the CPU: about half a minute, hence one short run."""
    code, out = run(tmp_path, "compiled", *tiny, "--epochs", "1", "--compile")
    assert code == 0 and (out / "best.safetensors").is_file()
    assert "compile: the first step took" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["compile"] is True
