"""`signlab export` on a detection run: the finder and the classifier as ONNX files that onnxruntime runs,
in one folder (RUN/export unless --out says), with a model card for the pair and the classifier's own card.

    finder.onnx           scene uint8 (1, H, W, 3) RGB, any H and W -> maps float32 (1, C + 4, h, w)
    finder-flip.onnx      the same, averaged with the scene's mirror image (`--tta`)
    classifier.onnx       sign crops uint8 (N, S, S, 3) -> logits (N, 43): signlab.export's graph, unchanged
    classifier.int8.onnx  with --int8: its int8 copy (calibrated on the classifier's training images)
    verifier.onnx         a run trained with --verify: crops -> logits (N, 2), "not a sign" and "sign"
    MODEL_CARD.md, CLASSIFIER_CARD.md (and VERIFIER_CARD.md)

The finder's graph is signlab.detection.finder.SceneGraph, the module the torch backend runs: standardisation
and padding to a multiple of the coarsest stride happen inside it. Its maps are the network's raw output: the C
heatmap logits (sigmoid: the probability of a sign of that category centred in the cell), then log w and log h
(in cells of STRIDE pixels) and the centre's offset inside its cell (x, y). Peaks, NMS, crops and naming stay in Python,
shared by both backends (signlab.detection.finder.decode, signlab.detection.detect).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import torch

from signlab.detection.boxes import CATEGORIES
from signlab.detection.detect import CLASSIFIER_FILE, DEFAULT_THRESHOLD, VERIFIER_FILE, check_detection_run
from signlab.detection.evaluate import RUN_THRESHOLD_FILE
from signlab.detection.finder import NMS_IOU, TOP_K, SignFinder
from signlab.detection.onnx_backend import (
    CLASSIFIER_ONNX,
    EXPORT_FOLDER,
    FINDER_FILE,
    FINDER_FLIP_FILE,
    MAPS_OUTPUT,
    MIRROR_KEY,
    SCENE_INPUT,
    VERIFIER_ONNX,
    OnnxFinder,
)
from signlab.errors import UserError
from signlab.export import META, PARITY_TOLERANCE, graph_to_onnx, save_checked
from signlab.models.detector import STRIDE

CHECK_SIZE = (203, 341)  # the synthetic check scene: odd, so padding and every stage's rounding are exercised
CARD, CLASSIFIER_CARD, VERIFIER_CARD = "MODEL_CARD.md", "CLASSIFIER_CARD.md", "VERIFIER_CARD.md"


def export_detector(target: str | Path, out: str | Path | None = None, int8: bool = False) -> list[Path]:
    """Write finder.onnx, finder-flip.onnx (for --tta), classifier.onnx (and classifier.int8.onnx with int8) and
    the cards into `out` (default RUN/export); each ONNX file is checked against torch fp32 first. Returns the
    paths written."""
    from signlab.checkpoint import load_weights
    from signlab.detection.finder import load_finder
    from signlab.export import export_model
    from signlab.onnx_backend import require

    require("onnx", "onnxruntime", "onnxscript")
    run = check_detection_run(target)
    folder = Path(out) if out else run / EXPORT_FOLDER
    if folder.suffix.lower() == ".onnx" or folder.is_file():
        raise UserError(f"--out {folder}: a detection run exports several files; give a folder")
    if not (run / CLASSIFIER_FILE).is_file():
        raise UserError(f"{run}: no {CLASSIFIER_FILE} in this detection run; train it again with "
                        f"signlab train --task detect --classifier RUN_OR_WEIGHTS")
    _, info, weights = load_weights(run)
    scenes, source = check_scenes(info["config"])
    (folder / FINDER_FLIP_FILE).unlink(missing_ok=True)  # never beside a finder.onnx of other weights
    finder = load_finder(run, torch.device("cpu"))
    diff = 0.0
    for flip, name in ((False, FINDER_FILE), (True, FINDER_FLIP_FILE)):  # the second for --tta
        graphed = dataclasses.replace(finder, flip=flip)  # the same weights, its own folded SceneGraph
        diff = max(diff, export_finder(graphed, folder / name, info, weights, scenes))
    written = [folder / FINDER_FILE, folder / FINDER_FLIP_FILE,
               *export_model(run / CLASSIFIER_FILE, folder / CLASSIFIER_ONNX, int8, card=CLASSIFIER_CARD)]
    if (run / VERIFIER_FILE).is_file():
        written += export_model(run / VERIFIER_FILE, folder / VERIFIER_ONNX, card=VERIFIER_CARD)
        write_verifier_card(folder / VERIFIER_CARD, run)  # in place of the classifier-style card
    else:  # an earlier export's would be loaded with this run's finder
        (folder / VERIFIER_ONNX).unlink(missing_ok=True)
        (folder / VERIFIER_CARD).unlink(missing_ok=True)
    if (run / RUN_THRESHOLD_FILE).is_file():  # so that `signlab detect EXPORT --threshold run` works too
        shutil.copyfile(run / RUN_THRESHOLD_FILE, folder / RUN_THRESHOLD_FILE)
        written.append(folder / RUN_THRESHOLD_FILE)
    figures = {"parity": diff, "scenes": source, "info": info, "weights": weights}
    return [*written, write_detector_card(run, written, figures)]


def export_finder(finder: SignFinder, path: Path, info: dict, weights: Path, scenes: list[np.ndarray]) -> float:
    """Write `finder`'s SceneGraph (mirror averaging included where finder.flip) to `path`, checked against torch
    fp32 on `scenes`; returns the largest map difference."""
    finder.bf16 = "off"  # the reference is fp32, as onnxruntime computes
    finder.graph.model.to(memory_format=torch.contiguous_format)  # the folded copy it runs
    proto = graph_to_onnx(finder.graph.eval(), torch.zeros(1, *CHECK_SIZE, 3, dtype=torch.uint8),
                          SCENE_INPUT, MAPS_OUTPUT, {1: torch.export.Dim.DYNAMIC, 2: torch.export.Dim.DYNAMIC},
                          f"{weights}: finder {info['config'].get('model')}")
    set_finder_metadata(proto, info, weights, finder.graph.model.pad_to, finder.flip)
    return save_checked(proto, path, lambda written: verify_finder(written, finder, scenes))


def set_finder_metadata(proto, info: dict, weights: Path, pad_to: int, flip: bool) -> None:
    import onnx

    import signlab

    proto.doc_string = "signlab sign finder: whole scene -> heatmaps, sizes and offsets; see signlab.* metadata"
    onnx.helper.set_model_props(proto, {
        f"{META}categories": json.dumps(list(CATEGORIES)),
        f"{META}input": f"{SCENE_INPUT}: uint8 (1, H, W, 3) RGB, any H and W; standardised and padded to a "
                        f"multiple of {pad_to} inside the graph",
        f"{META}maps": f"{MAPS_OUTPUT}: float32 (1, {len(CATEGORIES)} + 4, ceil(H/{pad_to})*{pad_to // STRIDE}, "
                       f"ceil(W/{pad_to})*{pad_to // STRIDE}): heatmap "
                       f"logits per category, log w, log h (cells of {STRIDE} px), centre offset x, y (cells)",
        MIRROR_KEY: str(flip).lower(),  # --tta's graph: the scene and its mirror image, averaged
        f"{META}stride": str(STRIDE), f"{META}nms_iou": str(NMS_IOU), f"{META}top_k": str(TOP_K),
        f"{META}version": signlab.__version__, f"{META}weights": weights.name,
        f"{META}config": json.dumps(info["config"])})


def check_scenes(config: dict) -> tuple[list[np.ndarray], str]:
    """Scenes to compare the backends on: a seeded noise scene of odd size, and the first scene of the run's
    training folder when it is there (a real 1360x800 GTSDB scene)."""
    from signlab.detection.scenes import load_scene
    from signlab.layouts import image_files

    scenes = [np.random.default_rng(0).integers(0, 256, (*CHECK_SIZE, 3), dtype=np.uint8)]
    source = f"a {CHECK_SIZE[1]}x{CHECK_SIZE[0]} noise scene"
    data = config.get("data")
    first = next(iter(image_files(Path(data))), None) if data and Path(data).is_dir() else None
    if first is not None:
        try:
            scenes.append(load_scene(first))
            source += f" and {first}"
        except UserError:
            pass  # a check scene, not the user's input: the noise scene still checks the graph
    return scenes, source


def verify_finder(path: Path, finder: SignFinder, scenes: list[np.ndarray]) -> float:
    """max |map difference| between onnxruntime on `path` and torch fp32 over `scenes`; an error above
    PARITY_TOLERANCE (absolute: the maps are logits and log sizes of moderate range, 6e-06 apart on a real
    1360x800 scene)."""
    onnx_finder = OnnxFinder(path, device="cpu")
    worst = 0.0
    for scene in scenes:
        got, want = onnx_finder.maps(scene).numpy(), finder.maps(scene).numpy()
        diff = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
        if diff > PARITY_TOLERANCE:
            raise RuntimeError(f"{path}: onnxruntime's maps differ from torch's by {diff:.2e} on a "
                               f"{scene.shape[1]}x{scene.shape[0]} scene; the export is wrong, please report it")
        worst = max(worst, diff)
    return worst


def write_verifier_card(path: Path, run: Path) -> None:
    """VERIFIER_CARD.md: what verifier.onnx decides and how it was trained (signlab.detection.verify)."""
    from signlab.checkpoint import load_weights
    from signlab.detection import verify

    config = load_weights(run / VERIFIER_FILE)[1]["config"]
    lines = [
        f"# Model card: sign / not-sign verifier of {run}", "",
        "`verifier.onnx` takes the same crops as `classifier.onnx` (uint8 (N, S, S, 3), framed and sized as its "
        "metadata says) and gives two logits: \"not a sign\", \"sign\". The detector multiplies the softmax of the "
        "second into each detection's score.", "",
        "## Training", "",
        f"- {config.get('model')}, {config.get('epochs')} epochs of AdamW, trained after the finder: positives are "
        f"the signs of the run's training scenes (their boxes, {verify.POSITIVE_JITTERS} jittered copies each, and "
        f"the finder's proposals on them) and {verify.GTSRB_POSITIVES} GTSRB crops from "
        f"{config.get('data') or 'no GTSRB folder (none was given)'}; negatives are the finder's proposals scoring "
        f">= {verify.NEGATIVE_THRESHOLD} that overlap no sign by more than IoU {verify.NEGATIVE_MAX_IOU}.",
        "- Figures and how it was chosen: docs/detection.md, section \"The verifier\".", "",
        "## Known failure modes", "",
        "- It knows only the kinds of false positives the finder made in the training scenes: power-line pylons, "
        "whose lattice draws an inverted white triangle, still pass as \"sign\" (read as \"yield\").", ""]
    try:
        path.write_text("\n".join(lines))
    except OSError as e:
        raise UserError(f"{path}: cannot write the model card ({e.strerror or e}); choose another --out") from None


def write_detector_card(run: Path, written: list[Path], figures: dict) -> Path:
    """MODEL_CARD.md beside the files: what the pair is, its figures, how to use it."""
    config, info = figures["info"]["config"], figures["info"]
    folder = written[0].parent
    verified = (folder / VERIFIER_ONNX).is_file()
    recall = info.get("val_recall")
    trained = (f"- finder alone, during training (epoch {info.get('epoch')}): validation recall {recall:.4f} at "
               f"{info.get('val_fp_per_scene', float('nan')):.2f} proposals per scene matching no sign"
               if isinstance(recall, (int, float)) else "- no validation figure saved with the finder's weights")
    saved = sorted(run.glob("eval*.json"))
    lines = [
        f"# Model card: traffic-sign detector from {run}", "",
        "Files: " + ", ".join(f"`{p.name}`" for p in written) + f"; the finder exported from "
        f"`{figures['weights']}`, the classifier from `{run / CLASSIFIER_FILE}` (its own card: `{CLASSIFIER_CARD}`).",
        "", "## What it does", "",
        f"{'Three' if verified else 'Two'} stages: `finder.onnx` proposes where signs are in a whole road scene, "
        "`classifier.onnx` names each proposal's crop as one of GTSRB's 43 classes. A detection's score is the "
        "proposal's score times the "
        "classifier's probability of its class"
        + (", times `verifier.onnx`'s probability that the crop is a sign at all (class 1 of its two)."
           if verified else "."), "",
        "## Data and training", "",
        f"- scenes: {config.get('data')} (GTSDB layout), validation: {config.get('val_data') or 'held-out blocks'}"
        f" (split seed {config.get('split_seed')})",
        f"- finder: {config.get('model')} {config.get('model_options') or ''}, {config.get('epochs')} epochs, "
        f"crops of {config.get('image_size')} px, seed {config.get('seed')}", "",
        "## Figures", "", trained,
        *[f"- `signlab evaluate` result saved in the run: `{p.name}`" for p in saved],
        *([] if saved else [f"- none of the whole detector saved; `signlab evaluate {run} --json > "
                            f"{run}/eval.json`, then export again"]),
        f"- export check: max |map difference| onnxruntime vs torch fp32, over `{FINDER_FILE}` and "
        f"`{FINDER_FLIP_FILE}` = {figures['parity']:.2e} on "
        f"{figures['scenes']}", "",
        "## Known failure modes", "",
        "- Small signs (under 32 px) are the weak part, as for every published detector (docs/detection.md).",
        ("- The verifier was trained on the finder's false positives in the training scenes; things unlike them "
         "can still pass it." if verified else
         "- The classifier has no \"not a sign\" answer: a false proposal is named as some sign; its score keeps "
         "the finder's doubt."), "",
        "## How to use", "",
        f"`signlab detect {folder} scene.jpg`, `signlab evaluate {folder}`"
        + (f" (or with {run} and --backend onnx)" if folder == run / EXPORT_FOLDER else "")
        + ". Without signlab: run `finder.onnx` on the scene "
        f"(`{SCENE_INPUT}`: uint8 (1, H, W, 3) RGB); in `{MAPS_OUTPUT}`, take the 3x3 local maxima of "
        f"sigmoid(heatmaps) up to {TOP_K}, a box per peak from its cell (ix, iy): centre ((ix + offset x) * "
        f"{STRIDE}, (iy + offset y) * {STRIDE}), size exp(log w) * {STRIDE} by exp(log h) * {STRIDE}; NMS at "
        f"IoU {NMS_IOU}; crop each box (bilinear, to the size in classifier.onnx's metadata) and run "
        f"`classifier.onnx`" + (" and `verifier.onnx`" if verified else "")
        + f". signlab keeps detections scoring >= {DEFAULT_THRESHOLD} by default. `--tta` runs "
        f"`{FINDER_FLIP_FILE}` in place of `{FINDER_FILE}`: the same maps averaged with the scene's mirror image's "
        "(slower by the finder's time again).", ""]
    path = folder / CARD
    try:
        path.write_text("\n".join(lines))
    except OSError as e:
        raise UserError(f"{path}: cannot write the model card ({e.strerror or e}); choose another --out") from None
    return path
