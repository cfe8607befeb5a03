"""signlab as a library: load a trained model and use it in your own code; train and evaluate with the
options the CLI takes (the CLI calls these functions).

    import signlab

    model = signlab.load("runs/demo")
    for p in model.predict(["stop.jpg", "sign.png"]):
        print(p.name, p.probability)

`signlab.load` returns what its run was trained for: a `Classifier` of cropped signs (`predict`), or for a
detection run (`signlab train --task detect`) a `Detector` of signs in whole road scenes:

    detector = signlab.load("runs/gtsdb")
    for d in detector.detect("scene.jpg"):
        print(d.class_id, d.category, d.score, (d.x1, d.y1, d.x2, d.y2))

Both share `task`, `class_names`, `preprocessing` and `path`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from signlab.detection.boxes import Detection
from signlab.detection.detect import DEFAULT_THRESHOLD, is_detection_run, load_detector
from signlab.detection.onnx_backend import is_detector_export
from signlab.errors import UserError
from signlab.layouts import entries_for_paths
from signlab.predict import LoadedModel, load_model, predict_images
from signlab.runtime import pick_device

# One image: a file path, a PIL image, or an (H, W, 3) uint8 array (RGB, NHWC like the lecture's tensors).
ImageInput = str | Path | Image.Image | np.ndarray


@dataclass(frozen=True)
class ClassScore:
    class_id: int
    name: str
    probability: float


@dataclass(frozen=True)
class Prediction:
    """One image's result: its best class and the top k, best first."""

    class_id: int
    name: str
    probability: float
    top: tuple[ClassScore, ...]
    source: str | None = None  # the file's path; None for an image given in memory

    def to_dict(self) -> dict:
        return {"path": self.source, "class_id": self.class_id, "name": self.name,
                "probability": self.probability, "top": [vars(t) for t in self.top]}


class Classifier:
    """A trained classifier of cropped signs. Thread-safe for concurrent `predict` calls on CPU."""

    task = "classify"

    def __init__(self, loaded: LoadedModel, device: torch.device, batch_size: int = 256) -> None:
        self._loaded, self.device, self.batch_size = loaded, device, batch_size

    @property
    def class_names(self) -> list[str]:
        return self._loaded.class_names

    @property
    def preprocessing(self):
        return self._loaded.preprocessing

    @property
    def path(self) -> Path:
        return self._loaded.path

    @property
    def config(self):
        return self._loaded.config

    @property
    def module(self) -> torch.nn.Module:
        """The torch model, in eval mode, for export or inspection."""
        return self._loaded.model

    def __repr__(self) -> str:
        return (f"Classifier({self.config.model}, {len(self.class_names)} classes, "
                f"{self.preprocessing.image_size}x{self.preprocessing.image_size}, from {self.path})")

    def decode(self, images: ImageInput | Sequence[ImageInput]) -> tuple[np.ndarray, list[str | None]]:
        """The images as the model's decoded input (N, S, S, 3) uint8 and their sources. Files listed in a
        GTSRB CSV are cropped to its ROI, as training crops them; anything else is taken whole."""
        items = _as_list(images)
        paths = [str(i) for i in items if isinstance(i, (str, Path))]
        entries = iter(entries_for_paths(paths)) if paths else iter(())
        pre, arrays, sources = self.preprocessing, [], []
        for item in items:
            if isinstance(item, (str, Path)):
                entry = next(entries)
                array, reason = pre.decode(entry.path, entry.roi, entry.csv_size)
                if array is None:
                    raise UserError(f"{item}: {reason}; pass a readable image file")
                arrays.append(array)
                sources.append(str(item))
            elif isinstance(item, (Image.Image, np.ndarray)):
                arrays.append(pre.decode_array(_checked_array(item)))
                sources.append(None)
            else:
                raise TypeError(f"an image is a path, a PIL image or an (H, W, 3) uint8 array, not {type(item)}")
        size = pre.image_size
        return (np.stack(arrays) if arrays else np.zeros((0, size, size, 3), np.uint8)), sources

    def probabilities(self, images: ImageInput | Sequence[ImageInput], tta: bool | None = None) -> np.ndarray:
        """(N, classes) float32 softmax probabilities. tta None: as the model was trained to be used."""
        decoded, _ = self.decode(images)
        if len(decoded) == 0:
            return np.zeros((0, len(self.class_names)), np.float32)
        return torch.softmax(self._logits(decoded, tta).float(), dim=1).numpy()

    def predict(self, images: ImageInput | Sequence[ImageInput], top_k: int = 5,
                tta: bool | None = None) -> list[Prediction]:
        """One Prediction per image, in order. A single image gives a list of one."""
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        decoded, sources = self.decode(images)
        if len(decoded) == 0:
            return []
        probs = torch.softmax(self._logits(decoded, tta).float(), dim=1)
        top_p, top_i = probs.topk(min(top_k, probs.shape[1]), dim=1)
        results = []
        for p_row, i_row, source in zip(top_p.tolist(), top_i.tolist(), sources, strict=True):
            top = tuple(ClassScore(c, self.class_names[c], p) for p, c in zip(p_row, i_row, strict=True))
            results.append(Prediction(top[0].class_id, top[0].name, top[0].probability, top, source))
        return results

    def _logits(self, decoded: np.ndarray, tta: bool | None) -> torch.Tensor:
        """Logits for decoded images; the onnxruntime backend (signlab.onnx_backend) overrides this."""
        return predict_images(self._loaded, decoded, self.device, self.batch_size, tta)


class Detector:
    """A trained detector of signs in whole road scenes: its finder, its verifier if it was trained with one, and
    the classifier that names the signs.

    `detect` returns `signlab.detection.boxes.Detection`s: boxes (x1, y1, x2, y2) in the scene's pixels with
    inclusive corners, GTSRB class id, score = the finder's probability that a sign is there (times the
    verifier's) times the classifier's probability of its class (signlab.detection.detect)."""

    task = "detect"

    def __init__(self, detector, run: Path) -> None:
        self._detector, self._run = detector, run

    @property
    def class_names(self) -> list[str]:
        return self._detector.classifier.class_names

    @property
    def preprocessing(self):
        """The classifier's preprocessing of the sign crops."""
        return self._detector.preprocessing

    @property
    def path(self) -> Path:
        return self._run

    @property
    def device(self) -> torch.device:
        return self._detector.device

    def __repr__(self) -> str:
        return f"Detector({len(self.class_names)} classes, from {self.path})"

    @property
    def run_threshold(self) -> float | None:
        """The threshold the run chose on its validation scenes (RUN/operating_point.json), or None."""
        from signlab.detection.evaluate import run_threshold

        return run_threshold(self._run)

    def detect(self, scenes: ImageInput | Sequence[ImageInput], threshold: float | str | None = None
               ) -> list[Detection] | list[list[Detection]]:
        """The signs of one scene (a path, a PIL image or an (H, W, 3) uint8 array), best first; for a list of
        scenes (or an (N, H, W, 3) array), one such list per scene. threshold: lowest score kept (default 0.5,
        as `signlab detect`; 0.01 for evaluation; "run": run_threshold)."""
        from signlab.detection.evaluate import resolve_threshold

        threshold = resolve_threshold(self._run, DEFAULT_THRESHOLD if threshold is None else threshold)
        single = isinstance(scenes, (str, Path, Image.Image)) or (isinstance(scenes, np.ndarray) and scenes.ndim != 4)
        found = [self._detector.detect(_scene_array(s), threshold) for s in _as_list(scenes)]
        return found[0] if single else found


def _scene_array(item) -> np.ndarray:
    """A scene as (H, W, 3) uint8 RGB: files through signlab.detection.scenes.load_scene (UserError when
    unreadable), images in memory converted as the classifier converts them."""
    from signlab.data import to_rgb_array

    if isinstance(item, (str, Path)):
        from signlab.detection.scenes import load_scene

        return load_scene(item)
    if isinstance(item, np.ndarray) and item.ndim == 3 and item.shape[2] == 3 and item.dtype == np.uint8:
        return item
    if isinstance(item, (Image.Image, np.ndarray)):
        image = _checked_array(item)
        return to_rgb_array(image if isinstance(image, Image.Image) else Image.fromarray(image))
    raise TypeError(f"a scene is a path, a PIL image or an (H, W, 3) uint8 array, not {type(item)}")


def _as_list(images) -> list:
    if isinstance(images, (str, Path, Image.Image)):
        return [images]
    if isinstance(images, np.ndarray):
        if images.ndim == 4:  # a batch (N, H, W, C)
            return list(images)
        return [images]
    if isinstance(images, Iterable):
        return list(images)
    raise TypeError(f"images: a path, a PIL image, an array or a list of them, not {type(images)}")


def _checked_array(image):
    if isinstance(image, Image.Image):
        return image
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
        raise ValueError(f"an image array must be uint8 (H, W, 3), (H, W, 4) or (H, W), got {image.dtype} "
                         f"{image.shape}")
    return image


def load(target: str | Path, device: str = "auto", batch_size: int = 256,
         backend: str = "torch", tta: bool = False) -> Classifier | Detector:
    """The model in a run folder or weights file, ready to use: a Classifier, or a Detector for a detection
    run. device: auto, cpu or cuda. backend onnx, or a .onnx file as target: the classifier written by
    `signlab export`, run by onnxruntime (same interface); for a detection run, backend onnx (or the folder
    `signlab export RUN` wrote as target) runs its exported finder and classifier. tta, detection runs (either
    backend): the finder also looks at each scene's mirror image (`signlab detect --tta`); a Classifier takes
    tta in each call instead."""
    if backend not in ("torch", "onnx"):
        raise UserError(f"--backend {backend}: use torch or onnx")
    if is_detection_run(target):
        return Detector(load_detector(target, device, backend=backend, tta=tta), Path(target))
    if is_detector_export(target):  # the folder `signlab export` wrote for a detection run: onnxruntime only
        return Detector(load_detector(target, device, backend="onnx", tta=tta), Path(target))
    if tta:
        raise UserError(f"{target}: load(tta=True) is for detection runs; a classifier takes tta= in each call")
    if backend == "onnx" or Path(target).suffix.lower() == ".onnx":
        from signlab.onnx_backend import load_onnx

        return load_onnx(target, device, batch_size)
    torch_device = pick_device(device)
    return Classifier(load_model(target, torch_device), torch_device, batch_size)


def train(data: str | Path | None = None, *, preset: str | None = None,
          log: Callable[[str], object] = print, **options) -> Path:
    """Train as `signlab train` does and return the run folder. Options are the CLI's flags as keyword
    arguments with underscores (`val_data`, `epochs`, `batch_size`, `out`, `bf16`, ...), `augment={...}` and
    `model_options={...}`; checked exactly as the flags are (signlab.errors.UserError on a bad value or an
    unknown name)."""
    from signlab.config import resolve_train_config
    from signlab.trainer import train as run_training

    given = {**options, **({"data": str(data)} if data is not None else {}),
             **({"preset": preset} if preset else {})}
    cfg = resolve_train_config(given, log)
    if cfg.task == "detect":  # GTSDB scenes: the sign finder's loop
        from signlab.detection.train import train_detector

        train_detector(cfg, log)
    else:
        run_training(cfg, log)
    return Path(cfg.out)


def evaluate(target: str | Path, data: str | Path | None = None, *, report: str | Path | None = None,
             device: str = "auto", tta: bool | None = None, batch_size: int = 256, backend: str = "torch") -> dict:
    """Evaluate as `signlab evaluate` does; returns its JSON summary as a dict (accuracy, n, per_class, ...).
    backend onnx: the model written by `signlab export` (RUN/model.onnx or a .onnx file), without TTA."""
    from signlab.evaluation import evaluate as run_evaluation

    if backend not in ("torch", "onnx"):
        raise UserError(f"--backend {backend}: use torch or onnx")
    return run_evaluation(target, None if data is None else str(data), report, device, tta, batch_size, backend)
