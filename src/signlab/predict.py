"""Predict: class probabilities for images, from a run folder or a weights file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from signlab.checkpoint import load_weights
from signlab.config import TrainConfig
from signlab.errors import UserError
from signlab.inference import predict_logits
from signlab.layouts import entries_for_paths
from signlab.models import create_model
from signlab.preprocess import Preprocessing


@dataclass
class LoadedModel:
    model: nn.Module
    config: TrainConfig
    preprocessing: Preprocessing
    class_names: list[str]
    path: Path
    info: dict


def load_model(target: str | Path, device: torch.device, use_ema: bool = True) -> LoadedModel:
    """Rebuild the trained model from a run folder or weights file, with its standardisation statistics."""
    tensors, info, path = load_weights(target)
    if info.get("task") == "detect":
        raise UserError(f"{path}: the sign finder of a detection run, not a classifier; use signlab detect RUN "
                        f"SCENES..., signlab evaluate RUN or signlab export RUN (predict and serve take classifier "
                        f"runs)")
    cfg = TrainConfig.from_dict(TrainConfig.with_legacy_defaults(info["config"]))
    model = create_model(cfg.model, num_classes=len(info["class_names"]), image_size=cfg.image_size,
                         **cfg.model_options)
    prefix = "ema." if use_ema and any(k.startswith("ema.") for k in tensors) else "model."
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"{path}: weights do not fit model {cfg.model} ({str(e).splitlines()[0]})") from None
    model.to(device).to(memory_format=torch.channels_last).eval()
    return LoadedModel(model, cfg, saved_preprocessing(info, cfg), list(info["class_names"]), path, info)


def saved_preprocessing(info: dict, cfg: TrainConfig) -> Preprocessing:
    """The preprocessing saved with the weights; files from before it was saved carry mean and std apart."""
    if "preprocessing" in info:
        return Preprocessing.from_dict(info["preprocessing"])
    return Preprocessing.from_config(cfg, info["mean"], info["std"])


def predict_images(loaded: LoadedModel, images: np.ndarray, device: torch.device, batch_size: int = 512,
                   tta: bool | None = None) -> torch.Tensor:
    """Logits (N, classes) for decoded uint8 images (N, S, S, 3), preprocessed as the model was trained and,
    with tta None, test-time augmented as its config says."""
    inputs = loaded.preprocessing.normalize(images)
    return predict_logits(loaded.model, inputs, loaded.preprocessing, device, batch_size, loaded.config.bf16,
                          loaded.config.tta if tta is None else tta)


def predict_files(loaded: LoadedModel, paths: list[str], device: torch.device, top_k: int = 5,
                  batch_size: int = 256, tta: bool | None = None) -> list[dict]:
    """Top-k predictions per image file; unreadable files get an 'error' entry instead. Files that a GTSRB CSV
    lists are cropped to its ROI, as training crops them. tta None: as the run's config says."""
    entries = entries_for_paths(paths)
    decoded = [loaded.preprocessing.decode(e.path, e.roi, e.csv_size) for e in entries]
    good = [i for i, (a, _) in enumerate(decoded) if a is not None]
    results: list[dict] = [{"path": e.path, "error": reason} for e, (_, reason) in zip(entries, decoded, strict=True)]
    if good:
        logits = predict_images(loaded, np.stack([decoded[i][0] for i in good]), device, batch_size, tta)
        probs = torch.softmax(logits, dim=1)
        k = max(1, min(top_k, probs.shape[1]))
        top_p, top_i = probs.topk(k, dim=1)
        for row, i in enumerate(good):
            results[i] = {"path": entries[i].path, "top": [
                {"class_id": int(c), "name": loaded.class_names[int(c)], "probability": float(p)}
                for p, c in zip(top_p[row], top_i[row], strict=True)]}
    return results
