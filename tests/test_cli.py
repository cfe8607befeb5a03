import json
import subprocess
import sys

import pytest
from conftest import make_gtsrb_train

from signlab.cli import main
from signlab.data import SAMPLE_HELDOUT


def signlab(*args):
    return subprocess.run([sys.executable, "-m", "signlab", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def test_train_evaluate_predict_on_the_shipped_sample(tmp_path):
    run = tmp_path / "run"
    done = signlab("train", "--out", run, "--epochs", "1", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "epoch   1/1" in done.stdout and (run / "best.safetensors").is_file()
    ev = signlab("evaluate", run, "--data", SAMPLE_HELDOUT, "--json", "--report", tmp_path / "report")
    assert ev.returncode == 0, ev.stderr
    summary = json.loads(ev.stdout)
    assert summary["n"] == 1290 and 0 <= summary["accuracy"] <= 1 and len(summary["per_class"]) == 43
    assert (tmp_path / "report" / "confusion.png").is_file()
    assert (tmp_path / "report" / "misclassified.png").is_file()
    default = json.loads(signlab("evaluate", run, "--json").stdout)  # the run's own validation data
    assert default["n"] == 1290
    image = next((SAMPLE_HELDOUT / "Images" / "00014").glob("*.png"))
    pred = signlab("predict", run, image, "--top-k", "3", "--json")
    assert pred.returncode == 0, pred.stderr
    top = json.loads(pred.stdout)[0]["top"]
    assert len(top) == 3 and top[0]["probability"] >= top[1]["probability"] and "name" in top[0]
    text = signlab("predict", run / "best.safetensors", image)
    assert text.returncode == 0 and str(image) in text.stdout


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


def test_model_train_defaults_apply_unless_the_user_sets_them():
    from signlab.cli import build_parser, train_overrides

    parse = build_parser().parse_args
    assert train_overrides(parse(["train", "--model", "mlp"]))["lr"] == 0.02  # the MLP diverges at 0.1
    assert train_overrides(parse(["train", "--model", "mlp", "--lr", "0.5"]))["lr"] == 0.5
    assert "lr" not in train_overrides(parse(["train"]))


def test_augmentation_flags_change_one_field_of_the_presets_augmentation(tmp_path):
    from signlab.cli import build_parser, train_overrides

    preset = tmp_path / "p.json"
    preset.write_text(json.dumps({"augment": {"rotate_degrees": 5.0}}))
    args = build_parser().parse_args(["train", "--preset", str(preset), "--erase", "0.5", "--saturation", "0.3"])
    assert train_overrides(args)["augment"] == {"rotate_degrees": 5.0, "erase": 0.5, "saturation": 0.3}
    args = build_parser().parse_args(["train", "--preset", str(preset), "--scale", "0.2", "--translate", "0.15"])
    assert train_overrides(args)["augment"] == {"rotate_degrees": 5.0, "scale": 0.2, "translate": 0.15}
    args = build_parser().parse_args(["train", "--preset", str(preset), "--rotate", "15"])
    assert train_overrides(args)["augment"] == {"rotate_degrees": 15.0}


def test_unknown_augment_field_is_one_line(tmp_path, capsys):
    preset = tmp_path / "p.json"
    preset.write_text(json.dumps({"augment": {"cutout": 0.5}}))
    assert main(["train", "--preset", str(preset), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown augment field(s) cutout" in err


def test_list_flags_set_model_options(capsys):
    from signlab.cli import build_parser, train_overrides

    args = build_parser().parse_args(["train", "--widths", "16,32", "--depth", "1,2"])
    assert train_overrides(args)["model_options"] == {"widths": [16, 32], "depth": [1, 2]}
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--depth", "1,x"])
    assert "--depth: '1,x' is not a comma-separated list of integers" in capsys.readouterr().err
