"""The second stage: the finder's proposals, cut from the full-resolution scene, named by the GTSRB classifier.

    scene (H, W, 3) uint8 --finder.propose--> boxes (N, 4), proposal scores (N,)
          --crop_signs--> (N, S, S, 3) uint8, framed as the classifier's training images were framed
          --the classifier's saved Preprocessing, one forward for the whole scene--> probabilities (N, 43)
          --> Detection(box, class_id = the classifier's top class, score = proposal score x its probability)

The score is the probability that a sign is there (the finder's) times the probability that it is this class
(the classifier's top softmax output); a run trained with --verify also has a verifier, a sign / not-sign CNN
on the same crops (signlab.detection.verify), whose P(sign) multiplies in. The score is never above the proposal
score, so the finder is asked only for proposals at or above the threshold, and a low threshold (0.01) gives
the whole precision-recall range. The class is the classifier's alone: the finder's category is a coarser
guess from fewer pixels.

A detection run folder holds config.json ("task": "detect"), the finder's weights, classifier.safetensors (a
copy of the GTSRB classifier it was given) and, with --verify, verifier.safetensors: `load_detector` puts them
together.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from PIL import Image

from signlab.classes import GTSRB_CLASS_NAMES
from signlab.data import crop_resize
from signlab.detection.boxes import Detection
from signlab.errors import UserError
from signlab.layouts import IMAGE_EXTENSIONS, image_files
from signlab.predict import LoadedModel, load_model, predict_images
from signlab.preprocess import Preprocessing
from signlab.runtime import keep_freed_memory, pick_device

if TYPE_CHECKING:
    from signlab.onnx_backend import OnnxClassifier

DEFAULT_THRESHOLD = 0.5  # lowest score `signlab detect` keeps unless told: what a person wants to look at
CLASSIFIER_FILE = "classifier.safetensors"
VERIFIER_FILE = "verifier.safetensors"  # signlab.detection.verify: optional
# GTSRB's whole images frame the sign with a border of 10 % of its size, at least 5 px (its description;
# docs/roi.md measured 4-6 px). A classifier trained on whole images (--crop full) expects that context.
FULL_BORDER_FRACTION, FULL_BORDER_MIN_PX = 0.10, 5.0


class SignFinder(Protocol):
    """The first stage (signlab.detection.finder, or signlab.detection.proposals' colour and shape finder)."""

    def propose(self, scene: np.ndarray, threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ...  # boxes (N, 4) inclusive corners, scores (N,), categories (N,); NMS done, best first, >= threshold


def border_px(side: float, pre: Preprocessing) -> float:
    """Context added on each side of a box `side` pixels long, so that the crop is framed as the classifier's
    training images were. crop "roi": the classifier saw GTSRB's ROI, the sign edge to edge, as a GTSDB box
    bounds it: no border. crop "full": it saw GTSRB's whole images, with their border around the sign."""
    if pre.crop == "roi":
        return 0.0
    return max(FULL_BORDER_FRACTION * side, FULL_BORDER_MIN_PX)


def crop_signs(scene: np.ndarray, boxes: torch.Tensor | np.ndarray, pre: Preprocessing) -> np.ndarray:
    """(N, S, S, 3) uint8: each inclusive box (N, 4) of the (H, W, 3) scene with its border, resized as decoding
    resizes a GTSRB file's ROI (signlab.data.crop_resize: bilinear over the box's pixel edges, clipped to the
    scene). Contrast normalisation and standardisation are left to the classifier's Preprocessing."""
    size = pre.image_size
    out = np.empty((len(boxes), size, size, 3), np.uint8)
    if len(boxes) == 0:
        return out
    image = Image.fromarray(np.ascontiguousarray(scene))
    for i, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, dtype=np.float64).tolist()):
        bx, by = border_px(x2 - x1 + 1, pre), border_px(y2 - y1 + 1, pre)
        edges = (x1 - bx, y1 - by, x2 + 1 + bx, y2 + 1 + by)  # inclusive corners -> pixel edges
        out[i] = crop_resize(image, size, edges, image.size)
    return out


class SignDetector:
    """Finds the signs of a scene (the finder) and names them (the classifier). Detections are in the scene's
    own pixels, highest score first."""

    def __init__(self, finder: SignFinder, classifier: LoadedModel | OnnxClassifier, device: torch.device,
                 verifier: LoadedModel | OnnxClassifier | None = None) -> None:
        if len(classifier.class_names) != len(GTSRB_CLASS_NAMES):  # its outputs are GTSRB's class ids, in order
            raise UserError(f"{classifier.path}: the classifier knows {len(classifier.class_names)} classes, not "
                            f"GTSRB's 43; detection names signs with a classifier trained on GTSRB's layout")
        self.finder, self.classifier, self.device = finder, classifier, device
        self.verifier = verifier  # signlab.detection.verify: P(sign) of each proposal, or None

    @property
    def backend(self) -> str:
        """"torch" or "onnx": what names the crops (load_detector gives both stages the same backend)."""
        return "torch" if isinstance(self.classifier, LoadedModel) else "onnx"

    @property
    def preprocessing(self) -> Preprocessing:
        return self.classifier.preprocessing

    def probabilities(self, scene: np.ndarray, boxes: torch.Tensor | np.ndarray,
                      crops: np.ndarray | None = None) -> torch.Tensor:
        """Class probabilities (N, 43) float32 of the boxes' crops: one forward pass, the crops as they are (test-
        time augmentation is the finder's: load_detector's tta)."""
        crops = crop_signs(scene, boxes, self.preprocessing) if crops is None else crops
        if len(crops) == 0:
            return torch.zeros(0, len(GTSRB_CLASS_NAMES))
        if isinstance(self.classifier, LoadedModel):
            logits = predict_images(self.classifier, crops, self.device, batch_size=len(crops), tta=False)
        else:  # the exported classifier (signlab.onnx_backend)
            logits = torch.from_numpy(self.classifier.logits(crops))
        return torch.softmax(logits.float(), dim=1)

    def sign_probability(self, scene: np.ndarray, boxes: torch.Tensor, crops: np.ndarray) -> torch.Tensor:
        """The verifier's P(sign) (N,) of each box, or ones without a verifier."""
        if self.verifier is None:
            return torch.ones(len(boxes))
        if self.verifier.preprocessing.image_size != self.preprocessing.image_size or \
                self.verifier.preprocessing.crop != self.preprocessing.crop:
            crops = crop_signs(scene, boxes, self.verifier.preprocessing)
        if isinstance(self.verifier, LoadedModel):
            logits = predict_images(self.verifier, crops, self.device, batch_size=len(crops), tta=False)
        else:  # the exported verifier (signlab.onnx_backend)
            logits = torch.from_numpy(self.verifier.logits(crops))
        return torch.softmax(logits.float(), dim=1)[:, 1]

    def detect(self, scene: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> list[Detection]:
        """The named signs of one (H, W, 3) uint8 RGB scene with score >= threshold, best first."""
        check_scene(scene)
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        boxes, scores, _ = self.finder.propose(scene, threshold)
        if len(boxes) == 0:
            return []
        boxes, scores = boxes.detach().float().cpu(), scores.detach().float().cpu()  # (N, 4), (N,)
        crops = crop_signs(scene, boxes, self.preprocessing)
        probability, class_id = self.probabilities(scene, boxes, crops).max(dim=1)
        final = scores * probability * self.sign_probability(scene, boxes, crops)  # (N,)
        order = [i for i in torch.argsort(final, descending=True).tolist() if final[i] >= threshold]
        return [Detection(*(float(v) for v in boxes[i].tolist()), class_id=int(class_id[i]), score=float(final[i]))
                for i in order]


def check_scene(scene: np.ndarray) -> None:
    if not isinstance(scene, np.ndarray) or scene.dtype != np.uint8 or scene.ndim != 3 or scene.shape[2] != 3:
        got = f"{scene.dtype} {scene.shape}" if isinstance(scene, np.ndarray) else type(scene).__name__
        raise ValueError(f"a scene is an (H, W, 3) uint8 RGB array, got {got}")


# ---------------------------------------------------------------- run folders


def run_task(target: str | Path) -> str | None:
    """The task a run folder was trained for ("detect", "classify"), or None when it is not a run folder."""
    config = Path(target) / "config.json"
    if not config.is_file():
        return None
    try:
        saved = json.loads(config.read_text())
    except (OSError, ValueError):
        return None
    return saved.get("task", "classify") if isinstance(saved, dict) else None


def is_detection_run(target: str | Path) -> bool:
    return run_task(target) == "detect"


def check_detection_run(target: str | Path) -> Path:
    """The run folder, or a UserError of one line saying why it is not a detection run."""
    run = Path(target)
    how = "signlab detect needs a run trained by signlab train --task detect (or --data GTSDB_DIR)"
    task = run_task(run)
    if task == "detect":
        return run
    if task is not None:
        raise UserError(f"{run}: not a detection run (its config.json says task {task}); {how}; "
                        f"signlab predict names cropped signs")
    if run.is_file() or run.is_dir():
        raise UserError(f"{run}: not a detection run (no readable config.json with \"task\": \"detect\"); {how}")
    raise UserError(f"{run}: no such run folder; {how}")


def load_run_finder(run: Path, device: torch.device, flip: bool = False) -> SignFinder:
    """The run's trained finder (signlab.detection.finder); flip: averaged with the scene's mirror image."""
    from signlab.detection.finder import load_finder

    return load_finder(run, device, flip)


def load_detector(run_dir: str | Path, device: str | torch.device = "auto", finder: SignFinder | None = None,
                  tta: bool = False, backend: str | None = None, verify: bool = True) -> SignDetector:
    """The detector of a detection run: its finder and the classifier it was given (classifier.safetensors).
    finder: another first stage to put in front of the run's classifier (e.g. the colour and shape finder).
    backend "onnx": the files `signlab export RUN` wrote (RUN/export, or run_dir is that folder), run by
    onnxruntime; None: onnx for such a folder, else torch. verify: put the run's verifier in (signlab.detection.
    verify), where it has one. tta: the run's finder also looks at the scene's mirror image and averages the two
    (finder.SceneGraph; twice the finder's time; docs/detection.md, "Test-time mirroring"); the classifier names
    the crops as they are."""
    from signlab.detection.onnx_backend import is_detector_export, load_onnx_detector

    keep_freed_memory()  # each scene's maps are tens of MB: reuse them rather than map fresh pages
    if backend not in (None, "torch", "onnx"):
        raise UserError(f"--backend {backend}: use torch or onnx")
    if backend == "onnx" or (backend is None and is_detector_export(run_dir)):
        if not is_detector_export(run_dir):
            check_detection_run(run_dir)
        return load_onnx_detector(run_dir, device if isinstance(device, str) else device.type, finder, tta,
                                  verify=verify)
    if tta and finder is not None:
        raise ValueError("tta mirrors the run's own finder; give a finder built with flip=True instead")
    run = check_detection_run(run_dir)
    torch_device = pick_device(device) if isinstance(device, str) else device
    if not (run / CLASSIFIER_FILE).is_file():
        raise UserError(f"{run}: no {CLASSIFIER_FILE} in this detection run; train it again with "
                        f"signlab train --task detect --classifier RUN_OR_WEIGHTS")
    classifier = load_model(run / CLASSIFIER_FILE, torch_device)
    verifier = load_model(run / VERIFIER_FILE, torch_device) if verify and (run / VERIFIER_FILE).is_file() else None
    return SignDetector(finder if finder is not None else load_run_finder(run, torch_device, tta), classifier,
                        torch_device, verifier=verifier)


# ---------------------------------------------------------------- `signlab detect`


def detect_scene_file(detector: SignDetector, path: Path, threshold: float, out_stem: Path | None = None) -> dict:
    """One scene file's object in `signlab detect --json`; with out_stem, its drawing goes to
    OUT_STEM.annotated.jpg. An unreadable scene is a UserError naming it."""
    from signlab.detection.draw import draw_detections
    from signlab.detection.scenes import load_scene

    scene = load_scene(path)
    detections = detector.detect(scene, threshold)
    if out_stem is not None:
        target = Path(f"{out_stem}.annotated.jpg")
        try:
            Image.fromarray(draw_detections(scene, detections)).save(target, quality=92)
        except OSError as e:
            raise UserError(f"{target}: cannot write it ({e.strerror or e}); choose another --out") from None
    return {"path": str(path), "width": scene.shape[1], "height": scene.shape[0],
            "detections": [d.to_json() for d in detections]}


def expand_inputs(paths: Iterable[str | Path]) -> tuple[list[Path], list[str]]:
    """Files to run on, in order (a folder: its images, sorted by name), and one line per unusable argument."""
    files: list[Path] = []
    problems: list[str] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            images = list(image_files(path))
            if not images:
                problems.append(f"{path}: no images in this folder ({', '.join(sorted(IMAGE_EXTENSIONS))})")
            files.extend(images)
        elif path.is_file():
            files.append(path)
        else:
            problems.append(f"{path}: no such file or folder")
    return files, problems


def output_stem(out_dir: Path, source: Path, used: set[Path]) -> Path:
    """out_dir/STEM for a source's output files, numbered (STEM-2, ...) when two inputs of one call share a stem;
    the caller appends the suffixes (".annotated.jpg", ...)."""
    stem, n = out_dir / source.stem, 1
    while stem in used:
        n += 1
        stem = out_dir / f"{source.stem}-{n}"
    used.add(stem)
    return stem
