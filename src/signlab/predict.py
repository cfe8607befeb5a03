"""Predict: class probabilities for images, from a run folder or a weights file."""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from signlab.augment import affine_warp
from signlab.checkpoint import load_weights
from signlab.config import TrainConfig
from signlab.contrast import normalize_contrast
from signlab.data import IMAGE_EXTENSIONS, decode_image
from signlab.errors import UserError
from signlab.models import create_model


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise UserError(f"--device {name}: unknown device; use auto, cpu or cuda")
    return torch.device(name)


def bf16_supported(device: torch.device) -> bool:
    """bf16 autocast pays only where the hardware has bf16 arithmetic; elsewhere it is emulated and slower."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.backends.mkldnn.is_available() and torch.cpu._is_avx512_bf16_supported())


def bf16_active(device: torch.device, enabled: bool) -> bool:
    """Whether `autocast` runs bf16: asked for and the hardware has it."""
    return enabled and bf16_supported(device)


def autocast(device: torch.device, enabled: bool):
    if bf16_active(device, enabled):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def to_input(images: np.ndarray | torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
             device: torch.device, channels_last: bool = True) -> torch.Tensor:
    """uint8 NHWC images (B, H, W, 3) -> standardised float (B, 3, H, W) on `device`."""
    x = torch.as_tensor(images).to(device, non_blocking=True)
    x = x.permute(0, 3, 1, 2).float().div_(255.0)  # (B, 3, H, W), NHWC memory: already channels_last
    x = (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


# Test-time augmentation: views inside the training augmentation's range, as
# (rotation in degrees, zoom, shift x, shift y in half image sides). The mean of their softmax outputs
# smooths over the exact framing of the crop, which is where the remaining errors on GTSRB sit.
TTA_VIEWS = ((0.0, 1.0, 0.0, 0.0), (0.0, 1.08, 0.0, 0.0), (0.0, 0.92, 0.0, 0.0),
             (6.0, 1.0, 0.0, 0.0), (-6.0, 1.0, 0.0, 0.0))


def tta_probabilities(model: nn.Module, x: torch.Tensor, views=TTA_VIEWS) -> torch.Tensor:
    """Mean softmax over the views of a standardised batch x (B, 3, H, W) -> (B, classes) float32."""
    b = x.shape[0]
    total = 0.0
    for degrees, zoom, dx, dy in views:
        angle = torch.full((b,), math.radians(degrees), device=x.device)
        warped = affine_warp(x, angle, torch.full((b,), zoom, device=x.device),
                             torch.tensor([[dx, dy]], device=x.device).expand(b, 2))
        total = total + torch.softmax(model(warped).float(), dim=1)
    return total / len(views)


@torch.no_grad()
def predict_logits(model: nn.Module, images: np.ndarray, mean: torch.Tensor, std: torch.Tensor,
                   device: torch.device, batch_size: int = 512, bf16: bool = True, tta: bool = False) -> torch.Tensor:
    """Float32 logits (N, classes) on the CPU for uint8 images (N, H, W, 3). With tta, the log of the mean
    softmax over TTA_VIEWS (a softmax of it gives those mean probabilities back)."""
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = to_input(images[i:i + batch_size], mean.to(device), std.to(device), device)
        with autocast(device, bf16):
            out.append(tta_probabilities(model, x).log().cpu() if tta else model(x).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)


@dataclass
class LoadedModel:
    model: nn.Module
    config: TrainConfig
    mean: torch.Tensor  # (3,)
    std: torch.Tensor  # (3,)
    class_names: list[str]
    path: Path
    info: dict


def load_model(target: str | Path, device: torch.device, use_ema: bool = True) -> LoadedModel:
    """Rebuild the trained model from a run folder or weights file, with its standardisation statistics."""
    tensors, info, path = load_weights(target)
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
    return LoadedModel(model, cfg, torch.tensor(info["mean"]), torch.tensor(info["std"]),
                       list(info["class_names"]), path, info)


def predict_images(loaded: LoadedModel, images: np.ndarray, device: torch.device, batch_size: int = 512,
                   tta: bool | None = None) -> torch.Tensor:
    """Logits (N, classes) for raw uint8 images (N, H, W, 3), preprocessed as the model was trained
    (contrast normalisation) and, with tta None, test-time augmented as its config says."""
    inputs = normalize_contrast(images, loaded.config.contrast)
    return predict_logits(loaded.model, inputs, loaded.mean, loaded.std, device, batch_size, loaded.config.bf16,
                          loaded.config.tta if tta is None else tta)


def expand_paths(paths: list[str]) -> list[Path]:
    """Files as given, folders expanded to the images inside them (recursively, sorted)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
        elif p.is_file():
            files.append(p)
        else:
            raise UserError(f"{p}: no such file or folder")
    if not files:
        raise UserError(f"{', '.join(paths)}: no images found")
    return files


def predict_files(loaded: LoadedModel, paths: list[str], device: torch.device, top_k: int = 5,
                  batch_size: int = 256, tta: bool | None = None) -> list[dict]:
    """Top-k predictions per image file; unreadable files get an 'error' entry instead.
    tta None: test-time augmentation as the run's config says."""
    files = expand_paths(paths)
    size = loaded.config.image_size
    decoded = [decode_image(f, size, max_pixels=loaded.config.max_image_pixels) for f in files]
    good = [i for i, (a, _) in enumerate(decoded) if a is not None]
    results: list[dict] = [{"path": str(f), "error": reason} for f, (_, reason) in zip(files, decoded, strict=True)]
    if good:
        logits = predict_images(loaded, np.stack([decoded[i][0] for i in good]), device, batch_size, tta)
        probs = torch.softmax(logits, dim=1)
        k = max(1, min(top_k, probs.shape[1]))
        top_p, top_i = probs.topk(k, dim=1)
        for row, i in enumerate(good):
            results[i] = {"path": str(files[i]), "top": [
                {"class_id": int(c), "name": loaded.class_names[int(c)], "probability": float(p)}
                for p, c in zip(top_p[row], top_i[row], strict=True)]}
    return results
