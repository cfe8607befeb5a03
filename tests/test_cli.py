import json
import subprocess
import sys

import pytest
from conftest import make_gtsrb_train

from signlab.classes import GTSRB_CLASS_NAMES
from signlab.cli import main
from signlab.config import preset_names
from signlab.synth.default import HELDOUT_PER_CLASS, default_data


def signlab(*args):
    return subprocess.run([sys.executable, "-m", "signlab", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def test_train_evaluate_predict_on_the_default_data(tmp_path):
    run = tmp_path / "run"
    done = signlab("train", "--out", run, "--epochs", "2", "--no-progress")  # no --data: the drawn signs
    assert done.returncode == 0, done.stderr
    assert "epoch   2/2" in done.stdout and (run / "best.safetensors").is_file()
    trained = json.loads((run / "best.json").read_text())["val_accuracy"]
    assert trained > 3 / 43  # two epochs on drawn signs already beat guessing (1/43) by far
    _, heldout = default_data()
    n = 43 * HELDOUT_PER_CLASS
    ev = signlab("evaluate", run, "--data", heldout, "--json", "--report", tmp_path / "report")
    assert ev.returncode == 0, ev.stderr
    summary = json.loads(ev.stdout)
    # The held-out set is the run's validation data: evaluate must reproduce training's figure exactly.
    assert summary["n"] == n and summary["accuracy"] == pytest.approx(trained) and len(summary["per_class"]) == 43
    assert summary["correct"] == round(trained * n)
    assert (tmp_path / "report" / "confusion.png").is_file()
    assert (tmp_path / "report" / "misclassified.png").is_file()
    default = json.loads(signlab("evaluate", run, "--json").stdout)  # the run's own validation data
    assert default["n"] == n and default["correct"] == summary["correct"]
    image = next((heldout / "Images" / "00014").glob("*.png"))
    pred = signlab("predict", run, image, "--top-k", "3", "--json")
    assert pred.returncode == 0, pred.stderr
    top = json.loads(pred.stdout)[0]["top"]
    assert len(top) == 3 and top[0]["probability"] >= top[1]["probability"] >= top[2]["probability"]
    assert [t["name"] for t in top] == [GTSRB_CLASS_NAMES[t["class_id"]] for t in top]
    text = signlab("predict", run / "best.safetensors", image)
    assert text.returncode == 0 and text.stdout.startswith(f"{image}: {top[0]['class_id']} {top[0]['name']}")


def bad_csv(tmp_path):
    root = make_gtsrb_train(tmp_path / "badcsv", classes=(0,), tracks=1, frames=2)
    csv_path = root / "Images" / "00000" / "GT-00000.csv"
    csv_path.write_text(csv_path.read_text().replace("ClassId", "Label"))
    return root


@pytest.mark.parametrize("case", ["missing", "empty", "csv", "model", "depth", "weights", "pickle", "preset"])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, case):
    (tmp_path / "empty").mkdir()
    (tmp_path / "m.pt").write_bytes(b"\x80\x04K\x01.")
    argv = {
        "missing": ["train", "--data", tmp_path / "nope"],
        "empty": ["train", "--data", tmp_path / "empty"],
        "csv": ["train", "--data", bad_csv(tmp_path)],
        "model": ["train", "--model", "nope"],
        "depth": ["train", "--depth", "1,2"],
        "weights": ["evaluate", tmp_path / "empty"],
        "pickle": ["predict", tmp_path / "m.pt", tmp_path / "m.pt"],
        "preset": ["train", "--preset", "nope"],
    }[case]
    code = main([str(a) for a in argv] + (["--out", str(tmp_path / "run")] if argv[0] == "train" else []))
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err and err.startswith("signlab")
    expected = {"missing": "no such folder", "empty": "no images found", "csv": "missing column(s) ClassId",
                "model": "unknown model", "depth": "--model signnet: bad model option",
                "weights": "no best.safetensors", "pickle": "pickle",
                "preset": "no such preset"}[case]
    assert expected in err


def test_real_process_exit_code_and_no_traceback(tmp_path):
    done = signlab("train", "--data", tmp_path / "nope", "--out", tmp_path / "run")
    assert done.returncode == 2 and "Traceback" not in done.stderr and "no such folder" in done.stderr


def test_info(tmp_path, capsys):
    root = make_gtsrb_train(tmp_path / "g")
    (root / "Images" / "00001" / "00000_00001.ppm").write_bytes(b"")
    assert main(["info", str(root)]) == 0
    out = capsys.readouterr().out
    assert "layout gtsrb-train, 35 images, 43 classes, 9 tracks, 1 unusable" in out
    assert "zero-byte file" in out


def resolve(*argv, tmp_path=None):
    from signlab.cli import build_parser, given_train_fields
    from signlab.config import resolve_train_config

    args = build_parser().parse_args(["train", *argv])
    return resolve_train_config(given_train_fields(args), log=lambda _: None)


def test_model_train_defaults_apply_unless_the_user_sets_them():
    assert resolve("--model", "mlp").lr == 0.02  # the MLP diverges at 0.1
    assert resolve("--model", "mlp", "--lr", "0.5").lr == 0.5
    assert resolve().lr == 0.1


def test_augmentation_flags_change_one_field_of_the_presets_augmentation(tmp_path):
    from signlab.augment import AugmentConfig

    preset = tmp_path / "p.json"
    preset.write_text(json.dumps({"augment": {"rotate_degrees": 5.0}}))
    cfg = resolve("--preset", str(preset), "--erase", "0.5", "--saturation", "0.3")
    assert cfg.augment == AugmentConfig(rotate_degrees=5.0, erase=0.5, saturation=0.3)
    cfg = resolve("--preset", str(preset), "--scale", "0.2", "--translate", "0.15")
    assert cfg.augment == AugmentConfig(rotate_degrees=5.0, scale=0.2, translate=0.15)
    assert resolve("--preset", str(preset), "--rotate", "15").augment == AugmentConfig(rotate_degrees=15.0)


def test_the_resolved_config_is_frozen_and_complete():
    import dataclasses

    cfg = resolve("--preset", "fast")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0
    assert cfg.preset == "fast" and cfg.tta is True
    assert cfg.data is None and cfg.val_data is None  # the drawn signs, found where the machine caches them


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_builds_its_model_and_runs_a_batch(name):
    import torch

    from signlab.config import TrainConfig, load_preset
    from signlab.models import create_model

    cfg = TrainConfig.from_dict({k: v for k, v in load_preset(name).items() if not k.startswith("_")})
    model = create_model(cfg.model, image_size=cfg.image_size, **cfg.model_options).eval()
    size = (cfg.image_size, cfg.image_size)
    with torch.no_grad():
        out = model(torch.zeros(2, 3, *size))
    assert out.shape[0] == 2 and torch.isfinite(out).all()


def test_fast_is_24_px_with_one_conv_first_and_flags_still_win():
    cfg = resolve("--preset", "fast")
    assert (cfg.image_size, cfg.model_options, cfg.epochs) == (24, {"depth": [1, 2, 2]}, 2)
    assert resolve("--preset", "fast", "--depth", "2", "--image-size", "32").model_options == {"depth": [2]}


def test_medium_adds_camera_faults_and_the_flag_turns_them_off():
    assert resolve("--preset", "medium").augment.degrade == 0.3
    assert resolve("--preset", "medium", "--degrade", "0").augment.degrade == 0.0
    assert resolve().augment.degrade == 0.0  # off unless a preset or flag asks


def test_unknown_augment_field_is_one_line(tmp_path, capsys):
    preset = tmp_path / "p.json"
    preset.write_text(json.dumps({"augment": {"cutout": 0.5}}))
    assert main(["train", "--preset", str(preset), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown augment field(s) cutout" in err


def test_list_flags_set_model_options(capsys):
    assert resolve("--widths", "16,32", "--depth", "1,2").model_options == {"widths": [16, 32], "depth": [1, 2]}
    assert main(["train", "--depth", "1,x"]) == 2
    assert "--depth: '1,x' is not a comma-separated list of integers" in capsys.readouterr().err


def test_help_lists_come_from_the_registries(capsys):
    from signlab.config import preset_names
    from signlab.models import list_models

    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert all(name in text for name in list_models()) and all(name in text for name in preset_names())
    assert "sample)" not in text.split("--preset")[1][:80]  # no preset that does not exist


# Every command, bad values: one line on stderr naming the flag, exit 2, before any work (no run folder).
BAD_VALUES = [
    (["train", "--batch-size", "0"], "--batch-size: 0: must be at least 1"),
    (["train", "--batch-size", "x"], "--batch-size: 'x' is not a valid int"),
    (["train", "--lr", "-1"], "--lr: -1: must be greater than 0"),
    (["train", "--label-smoothing", "2"], "--label-smoothing: 2: must be in [0, 1)"),
    (["train", "--epochs", "-1"], "--epochs: -1: must be at least 1"),
    (["train", "--val-fraction", "1.5"], "--val-fraction: 1.5: must be in [0, 1)"),
    (["train", "--model", "nope"], "--model: nope: unknown model; choose one of"),
    (["train", "--crop", "middle"], "--crop: middle: use one of roi, full"),
    (["train", "--bf16", "maybe"], "--bf16: maybe: use one of auto, on, off"),
    (["train", "--device", "tpu"], "--device: tpu: use one of auto, cpu, cuda"),
    (["train", "--image-size", "4"], "--image-size: 4: must be in [8, 512]"),
    (["train", "--ema", "1"], "--ema: 1: must be in [0, 1)"),
    (["train", "--flips", "-0.5"], "--flips: -0.5: must be in [0, 1]"),
    (["train", "--rotate", "400"], "--rotate: 400: must be in [0, 180]"),
    (["train", "--keep", "0"], "--keep: 0: must be at least 1"),
    (["train", "--widths", "16,0"], "--widths: 16,0: must be at least 1"),
    (["train", "--activation", "swish"], "--activation: swish: use one of sigmoid, tanh, relu"),
    (["train", "--split-seed", "-2"], "--split-seed: -2: must be at least 0"),
    (["train", "--data", "NOPE"], "--data: NOPE: no such folder"),
    (["train", "--depth", "1,2"], "--model signnet: bad model option"),
    (["train", "--preset", "nope"], "--preset nope: no such preset"),
    (["evaluate", "RUN", "--device", "gpu"], "--device: gpu: use one of auto, cpu, cuda"),
    (["evaluate", "RUN", "--batch-size", "0"], "--batch-size: 0: must be at least 1"),
    (["evaluate"], "the following arguments are required: RUN_DIR_OR_WEIGHTS"),
    (["predict", "RUN", "x.png", "--top-k", "0"], "--top-k: 0: must be at least 1"),
    (["predict", "RUN"], "the following arguments are required: PATH"),
    (["info"], "the following arguments are required: DIR"),
    (["info", "NOPE"], "NOPE: no such folder"),
    (["lab", "nope"], "lab nope: unknown experiment"),
    (["lab", "descent", "--budget", "huge"], "--budget: invalid choice"),
    (["lab", "descent", "--data", "NOPE"], "NOPE: no such folder"),
    (["download", "mnist"], "DATASET: mnist: use one of gtsrb, gtsdb"),
    (["download", "gtsrb", "--url-base", "ftp://x"], "--url-base: ftp://x: use an http://, https:// or file://"),
    (["synth", "OUT"], "--per-class N is needed"),
    (["synth", "OUT", "--per-class", "0"], "--per-class: 0: must be at least 1"),
    (["synth", "OUT", "--per-class", "5", "--classes", "50"], "--classes: 50: must be in [0, 42]"),
    (["synth", "OUT", "--per-class", "5", "--backgrounds", "NOPE"], "--backgrounds NOPE: no such folder"),
    (["synth", "OUT", "--per-class", "5", "--workers", "0"], "--workers: 0: must be at least 1"),
    (["synth", "OUT", "--scenes", "0"], "--scenes: 0: must be at least 1"),
    (["synth", "OUT", "--scenes", "2", "--scene-size", "10x"], "--scene-size: '10x' is not a size"),
    (["synth", "OUT", "--scenes", "2", "--scene-size", "16x100"], "--scene-size: 16x100: each side must be at least"),
    (["synth", "OUT", "--scenes", "2", "--per-class", "3"], "--per-class is for sign sets, not --scenes"),
]


@pytest.mark.parametrize("argv, message", BAD_VALUES, ids=[" ".join(a) for a, _ in BAD_VALUES])
def test_bad_values_are_one_line_and_exit_2_before_any_work(tmp_path, monkeypatch, capfd, argv, message):
    monkeypatch.chdir(tmp_path)
    done = signlab(*argv, "--out", tmp_path / "run") if argv[0] == "train" else signlab(*argv)
    assert done.returncode == 2, done.stderr
    err = done.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("signlab") and message in err, err
    assert not (tmp_path / "run").exists()  # nothing was started


def test_a_preset_is_held_to_the_flags_ranges(tmp_path, capsys):
    preset = tmp_path / "p.json"
    preset.write_text(json.dumps({"batch_size": 0}))
    assert main(["train", "--preset", str(preset), "--out", str(tmp_path / "run")]) == 2
    assert f"--batch-size 0: must be at least 1 (from --preset {preset})" in capsys.readouterr().err
    preset.write_text(json.dumps({"epochs": "3"}))
    assert main(["train", "--preset", str(preset), "--out", str(tmp_path / "run")]) == 2
    assert "--epochs 3: must be an integer" in capsys.readouterr().err


def test_a_presets_verifier_can_be_turned_off(tmp_path):
    """detect_fast turns --verify on; --no-verify turns it off again, and nothing else does."""
    from conftest import write_tiny_classifier

    given = ("--data", str(tmp_path), "--classifier", str(write_tiny_classifier(tmp_path / "c.safetensors")))
    assert resolve("--preset", "detect_fast", *given).verify is True
    assert resolve("--preset", "detect_fast", "--no-verify", *given).verify is False
    assert resolve("--preset", "detect", *given).verify is False
    assert resolve("--preset", "detect", "--verify", *given).verify is True
