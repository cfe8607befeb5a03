"""signlab as a library: load, predict on paths / PIL images / arrays, train and evaluate with CLI options,
and the README's example run as written."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_gtsrb_train
from PIL import Image

import signlab
from signlab.errors import UserError

TINY = {"model_options": {"widths": [8, 16], "depth": 1}, "batch_size": 8, "epochs": 2, "bf16": "off",
        "val_fraction": 0.25, "progress": False}
README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    data = make_gtsrb_train(root / "data", tracks=4, frames=4)
    out = signlab.train(data, out=str(root / "runs" / "demo"), log=lambda _: None, **TINY)
    return data, out


def test_train_returns_the_run_and_load_gives_a_classifier(run):
    data, out = run
    model = signlab.load(out, device="cpu")
    assert isinstance(model, signlab.Classifier) and model.task == "classify"
    assert model.path == out / "best.safetensors" and len(model.class_names) == 43  # GTSRB's layout: its 43
    assert "43 classes" in repr(model)


def test_paths_pil_images_and_arrays_give_the_same_answer(run, tmp_path):
    data, out = run
    model = signlab.load(out, device="cpu")
    frame = np.asarray(Image.open(next((data / "Images" / "00001").glob("*.ppm"))).convert("RGB"))
    Image.fromarray(frame).save(tmp_path / "plain.png")  # not in a GTSRB CSV: taken whole, like the arrays
    by_path = model.probabilities([tmp_path / "plain.png"])
    by_pil = model.probabilities([Image.fromarray(frame).convert("RGBA")])  # any mode is converted
    by_array = model.probabilities(frame)  # one (H, W, 3) array
    batch = model.probabilities(np.stack([frame, frame]))  # (N, H, W, 3)
    assert by_path.shape == (1, 43) and np.allclose(by_path.sum(1), 1.0, atol=1e-5)
    assert np.array_equal(by_path, by_pil) and np.array_equal(by_path, by_array)
    assert batch.shape == (2, 43) and np.allclose(batch, by_path, atol=1e-6)


def test_predict_matches_the_cli_and_crops_gtsrb_files_to_their_roi(run):
    from signlab.predict import load_model, predict_files
    from signlab.runtime import pick_device

    data, out = run
    files = sorted(str(p) for p in (data / "Images" / "00002").glob("*.ppm"))[:4]
    model = signlab.load(out, device="cpu")
    api = model.predict(files, top_k=2)
    cli = predict_files(load_model(out, pick_device("cpu")), files, pick_device("cpu"), top_k=2)
    assert [p.source for p in api] == files
    for p, c in zip(api, cli, strict=True):
        assert [t.class_id for t in p.top] == [t["class_id"] for t in c["top"]]
        assert [t.probability for t in p.top] == pytest.approx([t["probability"] for t in c["top"]], abs=1e-6)
        assert p.class_id == p.top[0].class_id and p.name == model.class_names[p.class_id]
        assert p.to_dict()["top"][0]["name"] == p.name


def test_bad_images_and_options_fail_clearly(run, tmp_path):
    data, out = run
    model = signlab.load(out, device="cpu")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="broken.png: not an image"):
        model.predict([tmp_path / "broken.png"])
    with pytest.raises(ValueError, match="must be uint8"):
        model.predict(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(TypeError):
        model.predict([42])
    assert model.predict([]) == []
    with pytest.raises(UserError, match="--epochs 0: must be at least 1"):
        signlab.train(data, out=str(tmp_path / "x"), epochs=0)
    with pytest.raises(UserError, match="unknown field"):
        signlab.train(data, out=str(tmp_path / "x"), epoch=3)
    with pytest.raises(UserError, match="for detection runs"):
        signlab.load(out, device="cpu", tta=True)


def test_evaluate_returns_the_cli_summary(run):
    data, out = run
    summary = signlab.evaluate(out, data, device="cpu")
    assert summary["n"] == 48 and 0 <= summary["correct"] <= 48 and len(summary["per_class"]) == 43


def test_the_readme_example_runs_as_written(run, tmp_path, monkeypatch, capsys):
    data, out = run
    block = re.search(r"## Python API\n.*?```python\n(.*?)```", README.read_text(), re.S)
    assert block, "README has a ## Python API section with a python example"
    code = block.group(1)
    assert len(code.strip().splitlines()) <= 6
    monkeypatch.chdir(out.parents[1])  # where runs/demo is
    for name in re.findall(r'"([\w-]+\.(?:png|jpg))"', code):  # the images it names
        Image.open(next((data / "Images" / "00000").glob("*.ppm"))).save(name)
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert any(name in printed for name in signlab.load(out).class_names)


def test_import_signlab_does_not_load_torch():
    code = "import sys, signlab, signlab.lab; assert 'torch' not in sys.modules; print(signlab.__version__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
