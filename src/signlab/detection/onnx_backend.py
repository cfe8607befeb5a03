"""The onnxruntime backend of a detection run: the finder (and its mirror-averaged twin for --tta), the
classifier (and the verifier of a run trained with --verify) written by `signlab export RUN`
(into RUN/export unless --out said otherwise), put together as `load_detector` puts the run's torch models.

finder.onnx takes a whole scene, uint8 (1, H, W, 3) RGB of any H and W, and gives the network's raw maps
(signlab.detection.finder.SceneGraph: standardisation and padding are inside the graph). Turning maps into
proposals (peaks, NMS) is MapsFinder's, shared with the torch backend; cropping and naming are SignDetector's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from signlab.detection.finder import MapsFinder
from signlab.errors import UserError

EXPORT_FOLDER = "export"  # RUN/export: where `signlab export RUN` writes a detection run's files
FINDER_FILE, CLASSIFIER_ONNX, CLASSIFIER_INT8 = "finder.onnx", "classifier.onnx", "classifier.int8.onnx"
FINDER_FLIP_FILE = "finder-flip.onnx"  # the finder averaged with the scene's mirror image: `--tta`
VERIFIER_ONNX = "verifier.onnx"  # only for runs trained with --verify (signlab.detection.verify)
SCENE_INPUT, MAPS_OUTPUT = "scene", "maps"
MIRROR_KEY = "signlab.mirror_averaged"  # finder metadata: "true" in finder-flip.onnx, "false" in finder.onnx


class OnnxFinder(MapsFinder):
    """finder.onnx or finder-flip.onnx run by onnxruntime: the same maps as the torch SignFinder (within 1e-4,
    checked on export). flip: whether the file averages the scene with its mirror image (its metadata says)."""

    def __init__(self, path: str | Path, device: str = "auto") -> None:
        from signlab.onnx_backend import open_session

        self.path = Path(path)
        self._session = open_session(path, device)
        meta = self._session.get_modelmeta().custom_metadata_map
        self.flip = meta.get(MIRROR_KEY) == "true"

    def maps(self, scene: np.ndarray) -> torch.Tensor:
        out = self._session.run([MAPS_OUTPUT], {SCENE_INPUT: np.ascontiguousarray(scene)[None]})[0]
        return torch.from_numpy(out[0])


def is_detector_export(target: str | Path) -> bool:
    """Whether `target` is a folder written by `signlab export` on a detection run."""
    return (Path(target) / FINDER_FILE).is_file()


def export_folder(target: str | Path) -> Path:
    """The folder holding a detection run's ONNX files: `target` itself when it holds finder.onnx, else the
    run's RUN/export; a UserError saying to export first when neither does."""
    target = Path(target)
    if is_detector_export(target):
        return target
    folder = target / EXPORT_FOLDER
    if not is_detector_export(folder):
        raise UserError(f"{target}: no ONNX export of this detection run ({folder / FINDER_FILE} is missing); "
                        f"run `signlab export {target}` first, or use --backend torch")
    return folder


def export_config(folder: str | Path) -> dict:
    """The finder's training config saved in finder.onnx's metadata (its data, split seed, ...)."""
    from signlab.onnx_backend import open_session

    path = Path(folder) / FINDER_FILE
    meta = open_session(path, "cpu").get_modelmeta().custom_metadata_map
    try:
        return json.loads(meta["signlab.config"])
    except (KeyError, ValueError):
        raise UserError(f"{path}: no signlab.config in its metadata; export the run again") from None


def load_onnx_detector(target: str | Path, device: str = "auto", finder=None, tta: bool = False,
                       classifier_file: str = CLASSIFIER_ONNX, verify: bool = True):
    """A SignDetector of the exported finder and classifier (classifier_file: CLASSIFIER_INT8 for the int8
    one). finder: another first stage in front of the exported classifier; tta: the exported finder averaged
    with the scene's mirror image (finder-flip.onnx), as the torch backend's tta."""
    from signlab.detection.detect import SignDetector
    from signlab.onnx_backend import OnnxClassifier

    if tta and finder is not None:
        raise ValueError("tta mirrors the export's own finder; give an OnnxFinder of finder-flip.onnx instead")
    folder = export_folder(target)
    finder_path = folder / (FINDER_FLIP_FILE if tta else FINDER_FILE)
    if not finder_path.is_file():  # an export written before --tta had its own graph
        raise UserError(f"{finder_path}: not found (--tta needs it); run `signlab export RUN --out {folder}` "
                        f"again, or use --backend torch")
    path = folder / classifier_file
    if not path.is_file():
        flag = " --int8" if classifier_file == CLASSIFIER_INT8 else ""
        raise UserError(f"{path}: not found; run `signlab export RUN{flag} --out {folder}` first")
    classifier = OnnxClassifier(path, device)
    found = finder if finder is not None else OnnxFinder(finder_path, device)
    has_verifier = verify and (folder / VERIFIER_ONNX).is_file()
    verifier = OnnxClassifier(folder / VERIFIER_ONNX, device) if has_verifier else None
    return SignDetector(found, classifier, classifier.device, verifier=verifier)
