import json

import numpy as np
import pytest
import torch

from signlab.cli import main
from signlab.models import create_model
from signlab.predict import TTA_VIEWS, predict_logits, tta_probabilities


@pytest.fixture
def model():
    torch.manual_seed(0)
    return create_model("signnet", num_classes=5, widths=(8, 16), depth=1).eval()


def test_tta_gives_the_mean_of_the_views_probabilities(model):
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    mean, std = torch.full((3,), 0.5), torch.full((3,), 0.25)
    plain = predict_logits(model, images, mean, std, torch.device("cpu"), batch_size=4)
    tta = predict_logits(model, images, mean, std, torch.device("cpu"), batch_size=4, tta=True)
    probs = torch.softmax(tta, 1)
    assert tta.shape == plain.shape == (6, 5)
    assert torch.allclose(probs.sum(1), torch.ones(6)) and torch.allclose(probs, tta.exp(), atol=1e-6)
    assert not torch.allclose(probs, torch.softmax(plain, 1), atol=1e-4)  # the other views count
    x = (torch.as_tensor(images).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
    with torch.no_grad():
        identity_only = tta_probabilities(model, x, views=TTA_VIEWS[:1])
        assert torch.allclose(identity_only, torch.softmax(model(x), 1), atol=1e-5)
        assert torch.allclose(tta_probabilities(model, x), probs, atol=1e-5)


def test_contrast_and_tta_travel_with_the_model(tmp_path, capsys):
    """evaluate without TTA on the run's own split must reproduce training's validation accuracy, which it
    can only if it normalises contrast as training did; --tta/--no-tta override the run's default."""
    from conftest import make_gtsrb_train

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
    info = {"config": config, "mean": [0.5] * 3, "std": [0.25] * 3, "class_names": [str(i) for i in range(43)]}
    save_weights(tmp_path / "new.safetensors", tensors, info)
    del config["contrast"]
    save_weights(tmp_path / "old.safetensors", tensors, info)
    assert load_weights(tmp_path / "old.safetensors")[1]["config"].get("contrast") is None
    assert load_model(tmp_path / "new.safetensors", torch.device("cpu")).config.contrast == "equalize"
    assert load_model(tmp_path / "old.safetensors", torch.device("cpu")).config.contrast == "none"
