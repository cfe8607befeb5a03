import json

import pytest
import torch
from conftest import make_gtsrb_train

from signlab.cli import main
from signlab.models import create_model

TINY = {"model_options": {"widths": [8, 16], "depth": 1}, "batch_size": 8, "epochs": 2}


@pytest.fixture
def trained(tmp_path):
    """A tiny model trained on a made-up GTSRB set whose frames are larger than their ROI."""
    data = make_gtsrb_train(tmp_path / "data", tracks=4, frames=4)
    preset = tmp_path / "tiny.json"
    preset.write_text(json.dumps(TINY))
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--preset", str(preset), "--out", str(out), "--no-progress",
                 "--val-fraction", "0.25"]) == 0
    return data, out


def test_evaluate_and_predict_give_the_same_logits_for_the_same_files(trained):
    """One preprocessing: evaluate's path (the dataset loader, ROI from the CSV) and predict's (files named on
    the command line, ROI looked up in the CSV beside them) must turn the same files into the same tensors."""
    from signlab.data import align_labels
    from signlab.evaluation import evaluation_set
    from signlab.predict import load_model, predict_files, predict_images

    data, out = trained
    cpu = torch.device("cpu")
    loaded = load_model(out, cpu)
    ds, _ = evaluation_set(loaded, str(data))
    ds = align_labels(ds, loaded.class_names)
    probs = torch.softmax(predict_images(loaded, ds.images, cpu, batch_size=64), 1)
    folder = predict_files(loaded, [str(data)], cpu, top_k=3, batch_size=64)
    assert [r["path"] for r in folder] == ds.paths
    assert all(r["top"][0]["class_id"] == int(probs[i].argmax()) for i, r in enumerate(folder))
    assert all(r["top"][0]["probability"] == pytest.approx(float(probs[i].max()), abs=1e-6)
               for i, r in enumerate(folder))
    one = ds.paths[5]  # a single file: its ROI comes from the GT-*.csv beside it
    single = predict_files(loaded, [one], cpu, top_k=3, batch_size=64)[0]["top"]  # a batch of 1: other kernels
    assert [t["class_id"] for t in single] == [t["class_id"] for t in folder[5]["top"]]
    assert [t["probability"] for t in single] == pytest.approx([t["probability"] for t in folder[5]["top"]],
                                                               abs=1e-5)


def test_predict_crops_gtsrb_files_to_their_roi(trained, tmp_path):
    """The same pixels without the CSV beside them are decoded whole and give other probabilities."""
    import shutil

    from signlab.predict import load_model, predict_files

    data, out = trained
    cpu = torch.device("cpu")
    loaded = load_model(out, cpu)
    image = sorted((data / "Images" / "00001").glob("*.ppm"))[0]
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(image, alone / image.name)
    with_roi = predict_files(loaded, [str(image)], cpu)[0]["top"]
    whole = predict_files(loaded, [str(alone / image.name)], cpu)[0]["top"]
    assert with_roi != whole


def test_contrast_and_tta_travel_with_the_model(tmp_path, capsys):
    """evaluate without TTA on the run's own split must reproduce training's validation accuracy, which it
    can only if it normalises contrast as training did; --tta/--no-tta override the run's default."""
    data = make_gtsrb_train(tmp_path / "data", tracks=4, frames=4)
    out = tmp_path / "run"
    preset = tmp_path / "tiny.json"
    preset.write_text(json.dumps({"model_options": {"widths": [8, 16], "depth": 1}, "batch_size": 8, "epochs": 2}))
    assert main(["train", "--data", str(data), "--preset", str(preset), "--out", str(out), "--no-progress",
                 "--val-fraction", "0.25", "--contrast", "equalize", "--tta"]) == 0
    best = json.loads((out / "best.json").read_text())
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json", "--no-tta"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert plain["tta"] is False and plain["accuracy"] == pytest.approx(best["val_accuracy"])
    assert main(["evaluate", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tta"] is True
    image = next((data / "Images" / "00001").glob("*.ppm"))
    probabilities = {}
    for flag in ("--tta", "--no-tta"):
        assert main(["predict", str(out), str(image), "--json", flag]) == 0
        top = json.loads(capsys.readouterr().out)[0]["top"]
        probabilities[flag] = [t["probability"] for t in top]
        assert len(top) == 3 and probabilities[flag] == sorted(probabilities[flag], reverse=True)
    assert probabilities["--tta"] != probabilities["--no-tta"]


def test_weights_saved_before_contrast_existed_are_evaluated_on_raw_pixels(tmp_path):
    """Today's default is equalisation; a weights file without the field was trained on raw pixels."""
    from signlab.checkpoint import load_weights, save_weights
    from signlab.config import TrainConfig
    from signlab.predict import load_model

    model = create_model("signnet", num_classes=43, widths=(8, 16), depth=1)
    config = TrainConfig(model_options={"widths": [8, 16], "depth": 1}).to_dict()
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    info = {"config": config, "mean": [0.5] * 3, "std": [0.25] * 3,  # before "preprocessing" was saved
            "class_names": [str(i) for i in range(43)]}
    save_weights(tmp_path / "new.safetensors", tensors, info)
    del config["contrast"]
    save_weights(tmp_path / "old.safetensors", tensors, info)
    assert load_weights(tmp_path / "old.safetensors")[1]["config"].get("contrast") is None
    new = load_model(tmp_path / "new.safetensors", torch.device("cpu")).preprocessing
    old = load_model(tmp_path / "old.safetensors", torch.device("cpu")).preprocessing
    assert new.contrast == "equalize" and old.contrast == "none"
    assert old.mean == (0.5, 0.5, 0.5) and old.std == (0.25, 0.25, 0.25)
