"""The onnxruntime backend: a model written by `signlab export`, used through the same interface as the torch
one (`signlab.load(path_to.onnx)`, `signlab.load(run, backend="onnx")`, `--backend onnx`).

Class names, preprocessing and config come from the file's metadata, so the run folder is not needed. Images
are decoded and resized exactly as for torch (Preprocessing.decode / decode_array); the graph does the rest.
No test-time augmentation: the exported graph is the plain forward pass, so asking for TTA is an error and a
run trained to use it is evaluated without it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from signlab.api import Classifier
from signlab.config import TrainConfig
from signlab.errors import UserError
from signlab.layouts import entries_for_paths
from signlab.preprocess import Preprocessing
from signlab.runtime import default_threads

MODEL_FILE = "model.onnx"
NO_TTA = "--tta: not available with --backend onnx (the exported graph has no test-time augmentation); " \
         "drop --tta or use --backend torch"


def require(*modules: str) -> None:
    """A clear error, not an ImportError, where the optional `deploy` packages are not installed."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"{', '.join(missing)}: not installed; signlab export and --backend onnx need them: "
                        f"pip install 'signlab[deploy]' (in a checkout: pip install -e '.[deploy]')")


def providers(device: str) -> list[str]:
    """onnxruntime execution providers for `--device auto|cpu|cuda`."""
    import onnxruntime as ort

    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if device == "cuda" and not cuda:
        raise UserError("--device cuda: this onnxruntime has no CUDA provider (pip install onnxruntime-gpu); "
                        "use --device cpu or auto")
    if device not in ("auto", "cpu", "cuda"):
        raise UserError(f"--device {device}: unknown device; use auto, cpu or cuda")
    return (["CUDAExecutionProvider"] if cuda and device != "cpu" else []) + ["CPUExecutionProvider"]


def open_session(path: str | Path, device: str):
    """An onnxruntime session on `path` with this process's CPU threads; a UserError for an unusable file."""
    require("onnxruntime")
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = default_threads()
    # Idle workers would otherwise spin after each run and hold the cores that the torch and NumPy steps around
    # it need (a detector's peaks, NMS and crops ran 4x slower on 2 threads, bench/detection_speed.py).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: its warnings are about graph rewrites, not the user's input
    try:
        return ort.InferenceSession(str(path), options, providers=providers(device))
    except UserError:
        raise
    except Exception as e:  # onnxruntime raises its own exception types for unreadable or invalid files
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"{path}: not a usable ONNX model ({first}); export it again with signlab export") from None


class OnnxClassifier(Classifier):
    """A classifier exported by `signlab export`, run by onnxruntime. Thread-safe (onnxruntime sessions are)."""

    def __init__(self, path: str | Path, device: str = "auto", batch_size: int = 256) -> None:
        self._path, self.batch_size = Path(path), batch_size
        self._session = open_session(path, device)
        meta = self._session.get_modelmeta().custom_metadata_map
        try:
            self._class_names = json.loads(meta["signlab.class_names"])
            self._preprocessing = Preprocessing.from_dict(json.loads(meta["signlab.preprocessing"]))
            saved = json.loads(meta["signlab.config"])
        except (KeyError, ValueError, TypeError):
            raise UserError(f"{path}: an ONNX file without signlab's metadata; use one written by "
                            f"signlab export") from None
        self._config = TrainConfig.from_dict(TrainConfig.with_legacy_defaults(saved))
        self._in_graph = set(meta.get("signlab.in_graph", "").split(","))
        self._input = self._session.get_inputs()[0].name
        used = self._session.get_providers()[0]
        self.device = torch.device("cuda" if used == "CUDAExecutionProvider" else "cpu")

    @property
    def class_names(self) -> list[str]:
        return self._class_names

    @property
    def preprocessing(self) -> Preprocessing:
        return self._preprocessing

    @property
    def path(self) -> Path:
        return self._path

    @property
    def config(self) -> TrainConfig:
        return self._config

    @property
    def module(self):
        raise AttributeError("an ONNX model has no torch module; load the run with backend='torch'")

    def __repr__(self) -> str:
        size = self.preprocessing.image_size
        return (f"OnnxClassifier({self.config.model}, {len(self.class_names)} classes, {size}x{size}, "
                f"onnxruntime on {self.device.type}, from {self.path})")

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Float32 logits (N, classes) for decoded uint8 images (N, S, S, 3), batch_size at a time."""
        if "contrast" not in self._in_graph:  # a graph that leaves contrast to its caller (none so far)
            images = self.preprocessing.normalize(images)
        out = [self._session.run(None, {self._input: np.ascontiguousarray(images[i:i + self.batch_size])})[0]
               for i in range(0, len(images), self.batch_size)]
        return np.concatenate(out) if out else np.zeros((0, len(self.class_names)), np.float32)

    def _logits(self, decoded: np.ndarray, tta: bool | None) -> torch.Tensor:
        if tta:
            raise UserError(NO_TTA)
        return torch.from_numpy(self.logits(decoded))


def onnx_file(target: str | Path) -> Path:
    """The ONNX file for `--backend onnx`: the file itself, or RUN/model.onnx."""
    target = Path(target)
    if target.is_dir():
        path = target / MODEL_FILE
        if not path.is_file():
            raise UserError(f"{path}: not found; run `signlab export {target}` first, or use --backend torch")
        return path
    if target.suffix.lower() != ".onnx":
        raise UserError(f"{target}: --backend onnx takes a run folder or a .onnx file written by signlab export")
    if not target.is_file():
        raise UserError(f"{target}: no such file; run `signlab export RUN --out {target}` first")
    return target


def load_onnx(target: str | Path, device: str = "auto", batch_size: int = 256) -> OnnxClassifier:
    return OnnxClassifier(onnx_file(target), device, batch_size)


def predict_files(model: OnnxClassifier, paths: list[str], top_k: int = 5, tta: bool | None = None) -> list[dict]:
    """signlab.predict.predict_files's output for the onnx backend: top-k per file, an 'error' entry for a file
    that cannot be read; files listed in a GTSRB CSV are cropped to its ROI."""
    if tta:
        raise UserError(NO_TTA)
    entries = entries_for_paths(paths)
    decoded = [model.preprocessing.decode(e.path, e.roi, e.csv_size) for e in entries]
    good = [i for i, (a, _) in enumerate(decoded) if a is not None]
    results: list[dict] = [{"path": e.path, "error": reason} for e, (_, reason) in zip(entries, decoded, strict=True)]
    if good:
        probs = torch.softmax(torch.from_numpy(model.logits(np.stack([decoded[i][0] for i in good]))), dim=1)
        top_p, top_i = probs.topk(max(1, min(top_k, probs.shape[1])), dim=1)
        for row, i in enumerate(good):
            results[i] = {"path": entries[i].path, "top": [
                {"class_id": int(c), "name": model.class_names[int(c)], "probability": float(p)}
                for p, c in zip(top_p[row], top_i[row], strict=True)]}
    return results
