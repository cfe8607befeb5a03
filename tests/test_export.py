"""signlab export and the onnxruntime backend: parity with torch fp32 for every registered model, the graph's
contrast step against signlab.contrast pixel for pixel, metadata, int8, the API and the CLI with --backend onnx,
and the model card."""

import json

import numpy as np
import onnx
import pytest
import torch
from conftest import make_gtsrb_train, sign_image

import signlab
from signlab.cli import main
from signlab.contrast import equalize_luminance
from signlab.errors import UserError
from signlab.export import LuminanceEqualizer, drawn_signs, export_model
from signlab.models import list_models
from signlab.onnx_backend import OnnxClassifier
from signlab.predict import load_model, predict_images
from signlab.preprocess import Preprocessing

TINY = {"batch_size": 8, "epochs": 1, "bf16": "off", "val_fraction": 0.25, "progress": False}
# Small widths keep each model's training and export within seconds; a model missing here runs at its default size.
TINY_OPTIONS = {"mlp": {"hidden": 16}, "lenet": {"widths": [4, 8], "hidden": 16},
                "signnet": {"widths": [8, 16], "depth": 1}, "signnet_wide": {"widths": [8, 16], "depth": 1},
                "signnet_stn": {"widths": [8, 16], "depth": 1, "stn_width": 4},
                "signnet_wide_stn": {"widths": [8, 16], "depth": 1, "stn_width": 4}}
CPU = torch.device("cpu")


def real_like(size: int = 32, n: int = 24) -> np.ndarray:
    """The 43 drawn signs on noise and conftest's framed signs, decoded to size×size as files are."""
    rng = np.random.default_rng(5)
    pre = Preprocessing(image_size=size)
    frames = [pre.decode_array(sign_image(i % 5, 40 + i, 44, (5, 6, 34 + i, 38), rng)) for i in range(n)]
    return np.concatenate([drawn_signs(size), *([np.stack(frames)] if frames else [])])


def torch_fp32_logits(run, images: np.ndarray) -> np.ndarray:
    """The torch backend's own path (contrast in NumPy, standardisation, model) with bf16 off and no TTA."""
    loaded = load_model(run, CPU)
    assert loaded.config.bf16 == "off"
    return predict_images(loaded, images, CPU, tta=False).numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny signnet run with TTA on (the onnx backend must then run without it), exported with --int8 by
    the CLI."""
    root = tmp_path_factory.mktemp("export")
    data = make_gtsrb_train(root / "data", tracks=4, frames=4)
    run = signlab.train(data, out=str(root / "run"), log=lambda _: None, tta=True,
                        model_options=TINY_OPTIONS["signnet"], **TINY)
    assert main(["export", str(run), "--int8"]) == 0
    return data, run


@pytest.mark.parametrize("name", list_models(task="classify"))
def test_every_model_exports_with_logits_within_1e4_of_torch_fp32(name, tmp_path):
    data = make_gtsrb_train(tmp_path / "data", classes=(0, 1, 2), tracks=2, frames=4)
    run = signlab.train(data, out=str(tmp_path / "run"), log=lambda _: None, model=name,
                        model_options=TINY_OPTIONS.get(name, {}), **TINY)
    paths = export_model(run)
    assert [p.name for p in paths] == ["model.onnx", "MODEL_CARD.md"]
    images = real_like()
    got = OnnxClassifier(paths[0], device="cpu").logits(images)
    want = torch_fp32_logits(run, images)
    assert got.shape == want.shape == (len(images), 43)
    assert np.abs(got - want).max() <= 1e-4
    assert np.abs(want).max() > 1e-2  # the logits are not all zero, so the comparison means something


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.export internals, not ours
def test_the_graph_equalises_contrast_exactly_as_signlab_contrast(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)  # ~1 luminance tie (x.5) per 1000 pixels
    images[0] = 77  # one grey level: kept as it is
    images[1] = np.where(rng.random((32, 32, 1)) < 0.5, 10, 200).astype(np.uint8)  # two levels
    images[2] //= 8  # a dark image
    want = equalize_luminance(images)
    assert np.array_equal(LuminanceEqualizer()(torch.from_numpy(images)).numpy(), want)
    import onnxruntime as ort

    program = torch.onnx.export(LuminanceEqualizer().eval(), (torch.from_numpy(images[:2]),), dynamo=True,
                                verbose=False, input_names=["images"],
                                dynamic_shapes={"images": {0: torch.export.Dim("batch")}})
    program.save(str(tmp_path / "eq.onnx"))
    got = ort.InferenceSession(str(tmp_path / "eq.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"images": images})[0]
    assert np.array_equal(got, want)


def test_dynamic_batch_and_parity_on_training_images(exported):
    data, run = exported
    model = OnnxClassifier(run / "model.onnx", device="cpu", batch_size=256)
    images = real_like(n=0)[:7]
    seven = model.logits(images)
    singles = np.concatenate([model.logits(images[i:i + 1]) for i in range(7)])
    assert seven.shape == (7, 43) and np.abs(seven - singles).max() <= 1e-5
    train = Preprocessing().load(data).images  # contrast equalize, as the run was trained
    assert np.abs(model.logits(train) - torch_fp32_logits(run, train)).max() <= 1e-4


def test_metadata_round_trip(exported):
    _, run = exported
    loaded = load_model(run, CPU)
    proto = onnx.load(str(run / "model.onnx"))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["signlab.class_names"]) == loaded.class_names
    assert Preprocessing.from_dict(json.loads(meta["signlab.preprocessing"])) == loaded.preprocessing
    assert json.loads(meta["signlab.config"]) == loaded.config.to_dict()
    assert meta["signlab.version"] == signlab.__version__ and meta["signlab.in_graph"] == "contrast,standardisation"
    (images,), (logits,) = proto.graph.input, proto.graph.output
    assert images.name == "images" and images.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = [d.dim_param or d.dim_value for d in images.type.tensor_type.shape.dim]
    assert dims[1:] == [32, 32, 3] and isinstance(dims[0], str)  # NHWC, batch dynamic
    assert logits.name == "logits" and logits.type.tensor_type.shape.dim[1].dim_value == 43
    model = signlab.load(run / "model.onnx")
    assert model.class_names == loaded.class_names and model.preprocessing == loaded.preprocessing
    assert model.config == loaded.config


def test_int8_model_runs_and_agrees_with_fp32_on_most_images(exported):
    data, run = exported
    int8 = onnx.load(str(run / "model.int8.onnx"))
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in int8.graph.node}
    images = np.concatenate([Preprocessing().load(data).images, real_like(n=0)])
    fp32 = OnnxClassifier(run / "model.onnx", device="cpu").logits(images).argmax(1)
    q = OnnxClassifier(run / "model.int8.onnx", device="cpu").logits(images).argmax(1)
    assert (fp32 == q).mean() >= 0.9


def test_onnx_classifier_predicts_as_the_torch_classifier(exported):
    data, run = exported
    files = sorted(str(p) for p in (data / "Images").rglob("*.ppm"))[::3]
    torch_model = signlab.load(run, device="cpu")
    onnx_model = signlab.load(run, backend="onnx")
    assert isinstance(onnx_model, OnnxClassifier) and onnx_model.path == run / "model.onnx"
    want = [p.class_id for p in torch_model.predict(files, tta=False)]
    assert [p.class_id for p in onnx_model.predict(files)] == want
    probs = onnx_model.probabilities(files)
    assert np.allclose(probs, torch_model.probabilities(files, tta=False), atol=1e-5)
    with pytest.raises(UserError, match="--tta: not available with --backend onnx"):
        onnx_model.predict(files, tta=True)


def test_the_web_app_serves_the_onnx_model(exported):
    pytest.importorskip("fastapi")
    import io

    from fastapi.testclient import TestClient
    from PIL import Image

    from signlab.serve.app import create_app

    data, run = exported
    photo = next((data / "Images" / "00000").glob("*.ppm")).read_bytes()
    with TestClient(create_app(signlab.load(run, backend="onnx"))) as client:
        r = client.post("/api/classify", files={"file": ("sign.ppm", photo, "image/x-portable-pixmap")})
    assert r.status_code == 200, r.text
    top = r.json()["top"]
    # the whole upload (no CSV beside it, so no ROI crop), as torch fp32 sees it without TTA
    want = signlab.load(run, device="cpu").probabilities(np.asarray(Image.open(io.BytesIO(photo))), tta=False)[0]
    assert top[0]["class_id"] == int(want.argmax())
    assert [t["probability"] for t in top] == pytest.approx([float(want[t["class_id"]]) for t in top], abs=1e-5)


def test_cli_predict_and_evaluate_with_backend_onnx(exported, capsys):
    data, run = exported
    files = sorted(str(p) for p in (data / "Images" / "00001").glob("*.ppm"))[:3]
    capsys.readouterr()
    assert main(["predict", str(run), *files, "--backend", "onnx", "--json", "--top-k", "2"]) == 0
    by_onnx = json.loads(capsys.readouterr().out)
    assert main(["predict", str(run), *files, "--json", "--top-k", "2", "--no-tta"]) == 0
    by_torch = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in by_onnx] == files
    assert [[t["class_id"] for t in r["top"]] for r in by_onnx] == [[t["class_id"] for t in r["top"]] for r in by_torch]
    assert main(["evaluate", str(run), "--backend", "onnx", "--json"]) == 0
    onnx_summary = json.loads(capsys.readouterr().out)
    assert main(["evaluate", str(run), "--json", "--no-tta", "--device", "cpu"]) == 0
    torch_summary = json.loads(capsys.readouterr().out)
    assert onnx_summary["backend"] == "onnx" and onnx_summary["tta"] is False
    assert onnx_summary["weights"] == str(run / "model.onnx")
    assert (onnx_summary["n"], onnx_summary["correct"]) == (torch_summary["n"], torch_summary["correct"])
    assert main(["evaluate", str(run), "--backend", "onnx", "--tta"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--tta: not available with --backend onnx" in err


def test_user_errors_are_one_line(exported, tmp_path, capsys):
    _, run = exported
    (tmp_path / "empty").mkdir()
    for argv, message in [
        (["export", str(tmp_path / "empty")], "no best.safetensors or last.safetensors"),
        (["predict", str(tmp_path / "empty"), "x.png", "--backend", "onnx"], "run `signlab export"),
        (["export", str(run), "--out", str(tmp_path / "model.txt")], "must end in .onnx"),
        (["evaluate", str(run / "best.safetensors"), "--backend", "onnx"], "takes a run folder or a .onnx"),
    ]:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err, err
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    with pytest.raises(UserError, match="bad.onnx: not a usable ONNX model"):
        signlab.load(tmp_path / "bad.onnx")


def test_missing_deploy_packages_are_one_clear_error(exported, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a))
    with pytest.raises(UserError, match=r"onnxscript: not installed; .* pip install 'signlab\[deploy\]'"):
        export_model(exported[1])


def test_a_model_the_exporter_refuses_is_a_user_error(exported, monkeypatch, tmp_path):
    _, run = exported

    def refuse(*args, **kwargs):
        raise RuntimeError("Exporting the operator 'aten::something' is not supported\nmore detail")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    with pytest.raises(UserError, match=r"model signnet cannot be exported to ONNX \(Exporting the operator "
                                        r"'aten::something' is not supported\); use it with --backend torch"):
        export_model(run, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_model_card_has_its_sections_and_measured_figures(exported):
    _, run = exported
    card = (run / "MODEL_CARD.md").read_text()
    for section in ("## Data", "## Training recipe", "## Validation figures", "## Cross-domain figures",
                    "## Known failure modes", "## How to use"):
        assert section in card
    best = json.loads((run / "best.json").read_text())
    assert f"validation accuracy {best['val_accuracy']:.4f}" in card
    assert "36 training and 12 validation images" in card and "None measured" in card
    assert "max |logit difference| onnxruntime vs torch fp32" in card and "model.int8.onnx" in card


def test_model_card_usage_snippet_runs_as_written(exported, monkeypatch, capsys):
    from PIL import Image

    data, run = exported
    code = (run / "MODEL_CARD.md").read_text().split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(run)
    Image.open(next((data / "Images" / "00002").glob("*.ppm"))).save(run / "sign.png")
    exec(compile(code, "MODEL_CARD.md", "exec"), {})
    assert capsys.readouterr().out.strip() in load_model(run, CPU).class_names
