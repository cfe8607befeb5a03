"""`signlab export` on a detection run and the onnxruntime backend of the detector: the files and cards
written, the exported finder's maps against torch's on a scene of odd size, the same detections from both
backends through `signlab detect` and `signlab evaluate`, the int8 classifier, `signlab.load` on the export
folder, and the one-line error when there is no export. The tiny run (conftest) runs in fp32 (bf16 off), so
the comparisons hold with SIGNLAB_BF16 on or off."""

import json

import numpy as np
import onnx
import pytest
import torch
from conftest import draw_sign_scene, make_detection_run, make_exportable_detection_run
from PIL import Image

import signlab
from signlab.cli import main
from signlab.detection.detect import load_detector
from signlab.detection.finder import load_finder
from signlab.detection.onnx_backend import CLASSIFIER_INT8, OnnxFinder, export_config, load_onnx_detector
from signlab.detection.synthetic import write_synthetic_scenes

FILES = ["finder.onnx", "finder-flip.onnx", "classifier.onnx", "classifier.int8.onnx", "CLASSIFIER_CARD.md",
         "MODEL_CARD.md", "operating_point.json"]  # the run's threshold, for `signlab detect EXPORT --threshold run`


@pytest.fixture(scope="module")
def run(exportable_detection_run):
    """The tiny detection run, exported with --int8 by the CLI into RUN/export."""
    assert main(["export", str(exportable_detection_run), "--int8"]) == 0
    return exportable_detection_run


@pytest.fixture(scope="module")
def scene_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("scene") / "scene.png"
    Image.fromarray(draw_sign_scene(301, 203, (120, 80), 20)).save(path)  # odd sizes: padded inside the graph
    return path


def test_export_writes_the_onnx_pair_and_the_cards(run):
    export = run / "export"
    assert sorted(p.name for p in export.iterdir()) == sorted(FILES)
    card = (export / "MODEL_CARD.md").read_text()
    assert "finder.onnx" in card and "export check: max |map difference|" in card and "## How to use" in card
    classifier_card = (export / "CLASSIFIER_CARD.md").read_text()
    assert "# Model card: signnet" in classifier_card
    # bench/runtimes.py scores a classifier run, never the detection run that holds a copy of one
    assert f"bench/runtimes.py {run}" not in classifier_card and "CLASSIFIER_RUN" in classifier_card
    meta = {p.key: p.value for p in onnx.load(str(export / "finder.onnx")).metadata_props}
    assert json.loads(meta["signlab.categories"]) == ["prohibitory", "mandatory", "danger", "other"]
    assert meta["signlab.mirror_averaged"] == "false"
    flip_meta = {p.key: p.value for p in onnx.load(str(export / "finder-flip.onnx")).metadata_props}
    assert flip_meta["signlab.mirror_averaged"] == "true"
    assert export_config(export)["model"] == "signfinder"  # evaluate finds the run's validation split by it


def test_onnx_maps_equal_torch_maps_on_a_scene_of_odd_size(run):
    scene = np.random.default_rng(3).integers(0, 256, (97, 143, 3), dtype=np.uint8)
    finder = load_finder(run, torch.device("cpu"))
    assert finder.bf16 == "off"
    want = finder.maps(scene)
    got = OnnxFinder(run / "export" / "finder.onnx", device="cpu").maps(scene)
    assert got.shape == want.shape == (8, 28, 36)  # ceil(97/16)*4, ceil(143/16)*4
    assert float((got - want).abs().max()) <= 1e-4


def detect_json(capsys, *args) -> list[dict]:
    capsys.readouterr()
    assert main(["detect", *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)[0]["detections"]


def same_detections(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b) > 0
    key = lambda d: tuple(d["box"])  # noqa: E731 - order by box: scores within 2e-4 may swap places
    for x, y in zip(sorted(a, key=key), sorted(b, key=key), strict=True):
        assert x["box"] == y["box"] and x["class_id"] == y["class_id"]
        assert x["score"] == pytest.approx(y["score"], abs=2e-4)


def test_detect_with_backend_onnx_finds_what_torch_finds(run, scene_file, capsys):
    torch_found = detect_json(capsys, run, scene_file)
    same_detections(detect_json(capsys, run, scene_file, "--backend", "onnx"), torch_found)
    same_detections(detect_json(capsys, run / "export", scene_file), torch_found)  # the folder alone: onnx
    at_run = detect_json(capsys, run / "export", scene_file, "--threshold", "run")  # the run's 0.6, copied over
    assert [d["box"] for d in at_run] == [d["box"] for d in torch_found if d["score"] >= 0.6]


def test_tta_with_backend_onnx_runs_the_mirrored_finder_as_torch_does(run, scene_file, capsys):
    """finder-flip.onnx gives torch's mirror-averaged maps on a scene the graph pads, and `detect --tta` finds
    the same with either backend, and not what it finds without --tta."""
    scene = np.random.default_rng(4).integers(0, 256, (97, 143, 3), dtype=np.uint8)
    want = load_finder(run, torch.device("cpu"), flip=True).maps(scene)
    onnx_finder = OnnxFinder(run / "export" / "finder-flip.onnx", device="cpu")
    assert onnx_finder.flip and not OnnxFinder(run / "export" / "finder.onnx", device="cpu").flip  # metadata
    got = onnx_finder.maps(scene)
    assert got.shape == want.shape and float((got - want).abs().max()) <= 1e-4
    plain = detect_json(capsys, run, scene_file, "--threshold", "0.01")
    torch_tta = detect_json(capsys, run, scene_file, "--threshold", "0.01", "--tta")
    assert [d["score"] for d in torch_tta] != [d["score"] for d in plain]
    same_detections(detect_json(capsys, run, scene_file, "--threshold", "0.01", "--tta", "--backend", "onnx"),
                    torch_tta)
    assert load_onnx_detector(run, "cpu", tta=True).finder.flip
    api = signlab.load(run, device="cpu", backend="onnx", tta=True).detect(scene_file, threshold=0.01)
    assert [d.class_id for d in api] == [d["class_id"] for d in torch_tta]


def test_evaluate_tta_with_backend_onnx_says_what_ran(run, tmp_path, capsys):
    scenes = write_synthetic_scenes(tmp_path / "scenes", 2, seed=1, size=(300, 200), sign_px=(16, 48))
    capsys.readouterr()
    assert main(["evaluate", str(run / "export"), "--data", str(scenes), "--tta", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["tta"] is True and summary["backend"] == "onnx"  # an export folder runs on onnxruntime


def test_a_four_stage_finder_with_confident_peaks_exports_both_graphs(tmp_path):
    """A finder with a stage at stride 32 pads scenes to 32, and says so in its metadata; with heat logits near
    12 (probabilities within float32's step of 1) the mirrored graph still matches torch within 1e-4, which
    averaging probabilities and taking log(1 - p) did not."""
    four = {"widths": [8, 8, 16, 16, 16], "blocks": [1, 1, 1, 1], "neck": 8}
    run = make_exportable_detection_run(tmp_path, options=four, heat_bias=12.0)
    assert main(["export", str(run)]) == 0
    meta = {p.key: p.value for p in onnx.load(str(run / "export" / "finder-flip.onnx")).metadata_props}
    assert "multiple of 32" in meta["signlab.input"] and "ceil(H/32)*8" in meta["signlab.maps"]
    scene = np.random.default_rng(5).integers(0, 256, (97, 143, 3), dtype=np.uint8)
    want = load_finder(run, torch.device("cpu"), flip=True).maps(scene)
    got = OnnxFinder(run / "export" / "finder-flip.onnx", device="cpu").maps(scene)
    assert got.shape == want.shape == (8, 32, 40)  # 97 -> 128 and 143 -> 160 pixels, over 4
    assert float(want[:4].min()) > 9.0 and float((got - want).abs().max()) <= 1e-4


def test_tta_with_an_export_that_has_no_mirrored_finder_is_one_line(run, tmp_path, scene_file, capsys):
    """An export written before --tta had finder-flip.onnx: --tta names the file and says to export again."""
    import shutil

    old = shutil.copytree(run / "export", tmp_path / "old")
    (old / "finder-flip.onnx").unlink()
    assert main(["detect", str(old), str(scene_file), "--tta"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "finder-flip.onnx: not found" in err and "signlab export" in err
    assert main(["detect", str(old), str(scene_file)]) == 0  # without --tta it still works


def test_the_int8_classifier_names_the_same_proposals(run, scene_file):
    scene = np.asarray(Image.open(scene_file).convert("RGB"))
    fp32 = load_onnx_detector(run, "cpu").detect(scene, 0.01)
    int8 = load_onnx_detector(run, "cpu", classifier_file=CLASSIFIER_INT8).detect(scene, 0.01)
    assert len(int8) == len(fp32) > 0
    assert sorted(d.class_id for d in int8) == sorted(d.class_id for d in fp32)


def test_signlab_load_detects_with_the_export(run, scene_file):
    by_folder = signlab.load(run / "export", device="cpu").detect(scene_file)
    by_run = signlab.load(run, device="cpu", backend="onnx").detect(scene_file)
    torch_found = signlab.load(run, device="cpu").detect(scene_file)
    assert len(by_folder) == len(by_run) == len(torch_found) > 0
    assert [d.class_id for d in by_folder] == [d.class_id for d in by_run]
    assert [d.score for d in by_run] == pytest.approx([d.score for d in torch_found], abs=2e-4)


def test_evaluate_with_backend_onnx_scores_as_torch(run, tmp_path, capsys):
    scenes = write_synthetic_scenes(tmp_path / "scenes", 2, seed=1, size=(300, 200), sign_px=(16, 48))
    summaries = {}
    for backend in ("torch", "onnx"):
        capsys.readouterr()
        assert main(["evaluate", str(run), "--data", str(scenes), "--backend", backend, "--json"]) == 0
        summaries[backend] = json.loads(capsys.readouterr().out)
    assert summaries["onnx"]["backend"] == "onnx" and summaries["onnx"]["scenes"] == 2
    for key in ("map50_categories", "map50_classes", "fp_per_scene"):
        assert summaries["onnx"][key] == pytest.approx(summaries["torch"][key], abs=1e-3)


@pytest.mark.parametrize("command", ["detect", "evaluate"])
def test_without_an_export_backend_onnx_is_one_line(command, tmp_path, scene_file, capsys):
    bare = make_detection_run(tmp_path / "bare")
    extra = [str(scene_file)] if command == "detect" else ["--data", str(tmp_path)]
    assert main([command, str(bare), *extra, "--backend", "onnx"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"run `signlab export {bare}` first" in err and "Traceback" not in err


def test_export_to_an_onnx_file_name_is_one_line(exportable_detection_run, tmp_path, capsys):
    assert main(["export", str(exportable_detection_run), "--out", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "give a folder" in err


def test_a_runs_verifier_is_exported_and_scores_as_in_torch(exportable_detection_run, tmp_path, scene_file,
                                                           capsys):
    """A run trained with --verify exports verifier.onnx too; the onnx detector multiplies it in as torch
    does. Exported again without the verifier, the stale verifier.onnx goes."""
    import shutil

    from signlab.detection import verify
    from signlab.preprocess import Preprocessing

    run = tmp_path / "run"
    shutil.copytree(exportable_detection_run, run, ignore=shutil.ignore_patterns("export"))
    scene = np.asarray(Image.open(scene_file).convert("RGB"))
    finder = load_finder(run, torch.device("cpu"))
    signs = [np.array([[100, 60, 140, 100]], np.float32)]
    verify.train_verifier(run, finder, [scene], signs, Preprocessing(), None, 0, torch.device("cpu"),
                          log=lambda _: None)
    assert main(["export", str(run)]) == 0
    assert (run / "export" / "verifier.onnx").is_file() and (run / "export" / "VERIFIER_CARD.md").is_file()
    assert "verifier.onnx" in (run / "export" / "MODEL_CARD.md").read_text()
    torch_found = detect_json(capsys, run, scene_file, "--threshold", "0.01")
    same_detections(detect_json(capsys, run / "export", scene_file, "--threshold", "0.01"), torch_found)
    card = (run / "export" / "VERIFIER_CARD.md").read_text()
    assert "not a sign" in card and "pylons" in card
    onnx_detector = load_onnx_detector(run, "cpu")
    assert onnx_detector.verifier is not None
    for backend in ("torch", "onnx"):  # the verifier's P(sign) is in each score, whichever backend
        checked = load_detector(run, "cpu", backend=backend).detect(scene, 0.01)
        plain = load_detector(run, "cpu", backend=backend, verify=False).detect(scene, 0.01)
        p_sign = {(d.x1, d.y1, d.x2, d.y2): d.score for d in plain}
        ratios = [d.score / p_sign[(d.x1, d.y1, d.x2, d.y2)] for d in checked]
        assert ratios and all(0.0 < r < 1.0 for r in ratios) and max(ratios) - min(ratios) > 1e-3, ratios
    capsys.readouterr()
    assert main(["detect", str(run), str(scene_file), "--json", "--threshold", "0.01", "--no-verify"]) == 0
    without = json.loads(capsys.readouterr().out)[0]["detections"]
    assert sorted(d["score"] for d in without) == pytest.approx(sorted(d.score for d in plain), abs=2e-4)
    (run / "verifier.safetensors").unlink()
    assert main(["export", str(run)]) == 0
    assert not (run / "export" / "verifier.onnx").exists() and not (run / "export" / "VERIFIER_CARD.md").exists()
