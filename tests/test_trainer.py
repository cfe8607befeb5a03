import csv
import json
import math
import shutil

import pytest
from conftest import make_gtsrb_train
from safetensors.torch import load_file

from signlab.checkpoint import list_checkpoints
from signlab.cli import main
from signlab.config import TrainConfig
from signlab.trainer import lr_at

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
    for name in ("config.json", "metrics.csv", "last.safetensors", "best.safetensors", "skipped.txt", "split.json"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    split = json.loads((out / "split.json").read_text())
    assert split["train_images"] + split["val_images"] == 48 and split["val_images"] == 12  # 1 of 4 tracks
    steps = split["train_images"] // TINY["batch_size"]
    cfg = TrainConfig(**{k: v for k, v in TINY.items() if k != "model_options"})
    for epoch, r in enumerate(rows, start=1):  # the schedule's value at the epoch's last step
        assert float(r["lr"]) == pytest.approx(lr_at(epoch * steps - 1, 2 * steps, cfg))
        assert round(float(r["val_accuracy"]) * 12) == pytest.approx(float(r["val_accuracy"]) * 12)  # k of 12
    assert float(rows[1]["train_seconds"]) == pytest.approx(float(rows[0]["epoch_seconds"])
                                                            + float(rows[1]["epoch_seconds"]), rel=1e-6)
    best = json.loads((out / "best.json").read_text())
    assert best["val_accuracy"] == max(float(r["val_accuracy"]) for r in rows)
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


@pytest.mark.parametrize("extra, recorded", [
    (["--loss", "squared", "--init", "normal", "--model", "mlp", "--hidden", "16"],
     {"loss": "squared", "init": "normal", "model": "mlp", "model_options": {"hidden": 16}}),
    (["--optimizer", "adamw", "--lr", "0.003", "--ema", "0.9"], {"optimizer": "adamw", "lr": 0.003, "ema": 0.9}),
    (["--erase", "0.5", "--saturation", "0.5", "--flips", "0.5"],
     {"flips": 0.5, "augment": {"erase": 0.5, "saturation": 0.5}})])
def test_lecture_and_modern_options_train(tmp_path, tiny, extra, recorded):
    code, out = run(tmp_path, "opt", *tiny, "--epochs", "1", *extra)
    assert code == 0 and (out / "best.safetensors").is_file()
    config = json.loads((out / "config.json").read_text())
    for key, value in recorded.items():
        if isinstance(value, dict):
            assert {k: config[key][k] for k in value} == value
        else:
            assert config[key] == value
    row = next(csv.DictReader(open(out / "metrics.csv")))
    assert math.isfinite(float(row["train_loss"])) and math.isfinite(float(row["val_loss"]))
    assert any(k.startswith("ema.") for k in weights(out)) == ("--ema" in extra)


def test_existing_run_needs_resume_or_overwrite(tmp_path, tiny, capsys):
    run(tmp_path, "a", *tiny, "--epochs", "1")
    code, out = run(tmp_path, "a", *tiny, "--epochs", "1")
    assert code == 2 and "already holds a run" in capsys.readouterr().err
    code, out = run(tmp_path, "a", *tiny, "--epochs", "1", "--overwrite")
    assert code == 0 and len(list(csv.DictReader(open(out / "metrics.csv")))) == 1


def test_ema_decay_ramps_up_so_short_runs_forget_the_initial_weights():
    import torch

    from signlab.trainer import update_ema

    model = torch.nn.Linear(2, 1)
    torch.nn.init.ones_(model.weight)
    ema = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    update_ema(ema, model, 0.999, step=0)  # decay (1 + 0) / (10 + 0) = 0.1
    assert torch.allclose(ema["weight"], torch.full((1, 2), 0.9))
    ema = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    update_ema(ema, model, 0.999, step=100_000)  # the ramp is above 0.999 by now
    assert torch.allclose(ema["weight"], torch.full((1, 2), 0.001))


def test_compiled_run_with_ema_resumes_exactly_and_reports_its_first_step(tmp_path, tiny, capsys):
    """torch.compile generates C++ on the CPU (about half a minute a compilation), hence one run, cut and
    resumed: the resumed process compiles again and must end with the uninterrupted run's weights."""
    code, full = run(tmp_path, "compiled", *tiny, "--compile", "--ema", "0.9")
    assert code == 0 and "compile: the first step took" in capsys.readouterr().out
    assert json.loads((full / "config.json").read_text())["compile"] is True
    cut = tmp_path / "cut"
    shutil.copytree(full, cut)
    shutil.rmtree(list_checkpoints(cut)[0])
    code, _ = run(tmp_path, "cut", *tiny, "--compile", "--ema", "0.9", "--resume")
    assert code == 0 and "compile: the first step took" in capsys.readouterr().out
    assert_same(weights(full), weights(cut))


def test_resume_with_ema_is_exact(tmp_path, tiny):
    _, full = run(tmp_path, "full", *tiny, "--ema", "0.9")
    _, cut = run(tmp_path, "cut", *tiny, "--ema", "0.9")
    shutil.rmtree(list_checkpoints(cut)[0])
    assert run(tmp_path, "cut", *tiny, "--ema", "0.9", "--resume")[0] == 0
    assert any(k.startswith("ema.") for k in weights(cut)) and any(k.startswith("ema.") for k in weights(full))
    assert_same(weights(full), weights(cut))


def test_force_resume_adding_ema_starts_the_average_from_the_restored_weights(tmp_path, tiny, capsys):
    _, out = run(tmp_path, "a", *tiny)
    shutil.rmtree(list_checkpoints(out)[0])  # epoch 2 to run again, now with an EMA
    capsys.readouterr()
    code, _ = run(tmp_path, "a", *tiny, "--resume", "--force-resume", "--ema", "0.9")
    text = capsys.readouterr().out
    assert code == 0 and "resume: overriding ema: 0.0 -> 0.9" in text and "the average starts from" in text
    assert any(k.startswith("ema.") for k in weights(out))


def test_split_seed_draws_the_split_apart_from_the_seed(tmp_path, tiny):
    def val_hash(*extra):
        _, out = run(tmp_path, f"s{len(list(tmp_path.iterdir()))}", *tiny, "--epochs", "1", *extra)
        return json.loads((out / "split.json").read_text())["val_sha256"]

    base = val_hash()
    assert val_hash("--seed", "5") == base  # another initialisation, the same validation tracks
    assert val_hash("--split-seed", "5") != base


def test_evaluate_refuses_when_the_data_changed_since_training(tmp_path, tiny, capsys):
    data, _ = tiny
    _, out = run(tmp_path, "a", *tiny, "--epochs", "1")
    assert main(["evaluate", str(out), "--json"]) == 0
    make_gtsrb_train(tmp_path / "more", classes=(1,), tracks=1, frames=4, seed=7)  # one more track of class 1
    for f in (tmp_path / "more" / "Images" / "00001").glob("*.ppm"):
        shutil.copy(f, data / "Images" / "00001" / f.name.replace("00000_", "00009_"))
    rows = (tmp_path / "more" / "Images" / "00001" / "GT-00001.csv").read_text().splitlines()[1:]
    with open(data / "Images" / "00001" / "GT-00001.csv", "a") as fh:
        fh.write("".join(row.replace("00000_", "00009_") + "\n" for row in rows))
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json"]) == 2
    assert "the dataset folder changed since training" in capsys.readouterr().err
    assert main(["evaluate", str(out), "--json", "--data", str(data)]) == 0


def test_val_fraction_zero_trains_on_every_track_and_evaluate_then_needs_data(tmp_path, tiny, capsys):
    data, _ = tiny
    code, out = run(tmp_path, "all", *tiny, "--epochs", "1", "--val-fraction", "0")  # the later flag wins
    assert code == 0
    split = json.loads((out / "split.json").read_text())
    assert (split["train_images"], split["val_images"]) == (48, 0)
    assert (out / "last.safetensors").is_file()
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no validation split (--val-fraction 0); pass --data" in err and len(err.splitlines()) == 1
    assert main(["evaluate", str(out), "--json", "--data", str(data)]) == 0


def test_val_data_with_a_class_missing_keeps_the_other_labels(tmp_path):
    """Class-per-folder sets number classes by position: a validation folder without `b` must not turn `c`
    into class 1."""
    from conftest import make_folders

    from signlab.config import resolve_train_config
    from signlab.trainer import prepare_data

    train_dir = make_folders(tmp_path / "train", names=("a", "b", "c"))
    val_dir = make_folders(tmp_path / "val", names=("a", "c"))
    cfg = resolve_train_config({"data": str(train_dir), "val_data": str(val_dir), "out": str(tmp_path / "r")})
    split, _ = prepare_data(cfg, log=lambda _: None)
    assert split.val.class_names == ["a", "b", "c"]
    assert sorted(set(split.val.labels.tolist())) == [0, 2]
    assert all(split.val.labels[i] == (0 if "/a/" in p else 2) for i, p in enumerate(split.val.paths))


def test_bf16_forced_on_trains_finite_agrees_with_fp32_and_resumes_exactly(tmp_path, tiny):
    """The bf16 path on any CPU (emulated without bf16 arithmetic): what must hold there, not fp32 numbers."""
    import torch

    from signlab.inference import predict_logits
    from signlab.predict import load_model

    _, full = run(tmp_path, "full", *tiny, "--bf16", "on", "--epochs", "3")
    _, cut = run(tmp_path, "cut", *tiny, "--bf16", "on", "--epochs", "3")
    shutil.rmtree(list_checkpoints(cut)[0])
    assert run(tmp_path, "cut", *tiny, "--bf16", "on", "--epochs", "3", "--resume")[0] == 0
    assert_same(weights(full), weights(cut))
    rows = list(csv.DictReader(open(full / "metrics.csv")))
    assert all(math.isfinite(float(r[k])) for r in rows for k in ("train_loss", "val_loss"))
    loaded = load_model(full, torch.device("cpu"))
    from signlab.data import load_images

    images = loaded.preprocessing.normalize(load_images(tiny[0]).images)
    logits = {mode: predict_logits(loaded.model, images, loaded.preprocessing, torch.device("cpu"), bf16=mode)
              for mode in ("on", "off")}
    assert all(torch.isfinite(v).all() for v in logits.values())
    assert not torch.equal(logits["on"], logits["off"])  # bf16 really ran
    agree = (logits["on"].argmax(1) == logits["off"].argmax(1)).float().mean()
    assert agree >= 0.95, agree
