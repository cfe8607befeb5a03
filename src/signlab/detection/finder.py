"""The learned first stage: targets and loss for training SignFinderNet, decoding its maps into boxes, and
`SignFinder`, which proposes sign candidates in a whole scene (`load_finder(run_dir)`).

Box convention (boxes.py): inclusive pixel corners. In continuous coordinates pixel i spans [i, i + 1), so a
box covers [x1, x2 + 1): its centre is (x1 + x2 + 1) / 2 and its width x2 - x1 + 1. Maps have one cell per
STRIDE x STRIDE pixels; a sign is encoded at the cell holding its centre: a Gaussian peak on its category's
heatmap, log(size / STRIDE) and the centre's offset inside the cell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from signlab.detection.boxes import CATEGORIES, nms
from signlab.models.detector import STRIDE
from signlab.runtime import autocast

MEAN, STD = 0.5, 0.25  # fixed input standardisation: x / 255 -> (x - MEAN) / STD; no dataset statistics needed
NMS_IOU = 0.4
TOP_K = 100  # peaks decoded per scene, at most; GTSDB scenes hold up to six signs
SIZE_WEIGHT, OFFSET_WEIGHT = 1.0, 1.0


def to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> standardised float (B, 3, H, W), channels-last in memory."""
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    return x.sub_(MEAN).div_(STD).contiguous(memory_format=torch.channels_last)


def gaussian_sigma(w_cells: float, h_cells: float) -> float:
    """Peak width in cells: a sixth of the smaller side, at least half a cell, so that a centre one cell off
    still overlaps the box well (IoU > 0.5) for the smallest signs as for the largest."""
    return max(0.5, min(w_cells, h_cells) / 6.0)


def encode_targets(boxes: list[np.ndarray], categories: list[np.ndarray], out_h: int, out_w: int
                   ) -> dict[str, torch.Tensor]:
    """Training targets for a batch. boxes[i] (n, 4) inclusive pixel corners in the network input's pixels,
    categories[i] (n,) indices into CATEGORIES. Returns heat (B, C, h, w) in [0, 1] with 1 at each centre
    cell; box (B, 4, h, w): log w, log h (cells) and the centre's offset from the cell, at the centre cell and
    its 8 neighbours (the peak found may be one cell off; more cells also teach the size faster); mask
    (B, h, w): the weight of each such cell, the heatmap's value there (1 at the centre)."""
    b = len(boxes)
    heat = np.zeros((b, len(CATEGORIES), out_h, out_w), np.float32)
    box = np.zeros((b, 4, out_h, out_w), np.float32)
    mask = np.zeros((b, out_h, out_w), np.float32)
    ys, xs = np.arange(out_h, dtype=np.float32)[:, None], np.arange(out_w, dtype=np.float32)[None, :]
    for i, (bx, cat) in enumerate(zip(boxes, categories, strict=True)):
        for (x1, y1, x2, y2), c in zip(bx, cat, strict=True):
            w, h = (x2 - x1 + 1) / STRIDE, (y2 - y1 + 1) / STRIDE  # cells
            cx, cy = (x1 + x2 + 1) / (2 * STRIDE), (y1 + y2 + 1) / (2 * STRIDE)
            ix, iy = int(math.floor(cx)), int(math.floor(cy))
            if not (0 <= ix < out_w and 0 <= iy < out_h) or w <= 0 or h <= 0:
                continue  # its centre was cropped away
            s = gaussian_sigma(w, h)
            g = np.exp(-((xs - ix) ** 2 + (ys - iy) ** 2) / (2 * s * s))  # (h, w), exactly 1 at (iy, ix)
            np.maximum(heat[i, c], g, out=heat[i, c])
            for jy in range(max(0, iy - 1), min(out_h, iy + 2)):
                for jx in range(max(0, ix - 1), min(out_w, ix + 2)):
                    if g[jy, jx] > mask[i, jy, jx]:  # the nearer sign's centre owns a shared cell
                        box[i, :, jy, jx] = (math.log(w), math.log(h), cx - jx, cy - jy)
                        mask[i, jy, jx] = g[jy, jx]
    return {"heat": torch.from_numpy(heat), "box": torch.from_numpy(box), "mask": torch.from_numpy(mask)}


def finder_loss(out: torch.Tensor, targets: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CenterNet's penalty-reduced focal loss on the heatmaps plus L1 on size and offset at the centres, each
    normalised by the number of signs. out (B, C + 4, h, w) logits. Returns (total, heat part, box part)."""
    out = out.float()
    c = targets["heat"].shape[1]
    logits, pred_box = out[:, :c], out[:, c:]
    heat, mask = targets["heat"], targets["mask"]
    n = heat.eq(1.0).sum().clamp(min=1).float()  # signs
    p = torch.sigmoid(logits)
    pos = heat.eq(1.0).float()
    # logsigmoid keeps log p and log(1 - p) finite where p saturates
    pos_loss = -(F.logsigmoid(logits) * (1 - p) ** 2 * pos).sum()
    neg_loss = -(F.logsigmoid(-logits) * p ** 2 * (1 - heat) ** 4 * (1 - pos)).sum()
    heat_loss = (pos_loss + neg_loss) / n
    l1 = (pred_box - targets["box"]).abs() * mask[:, None]  # (B, 4, h, w)
    box_loss = (SIZE_WEIGHT * l1[:, :2].sum() + OFFSET_WEIGHT * l1[:, 2:].sum()) / mask.sum().clamp(min=1.0)
    return heat_loss + box_loss, heat_loss.detach(), box_loss.detach()


def decode(out: torch.Tensor, threshold: float, size: tuple[int, int] | None = None, top_k: int = TOP_K,
           nms_iou: float = NMS_IOU) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image's maps (C + 4, h, w) -> boxes (N, 4) inclusive pixel corners, scores (N,), categories (N,):
    the 3x3 local maxima of the heatmaps, the top_k best, those >= threshold, clipped to size (H, W) if given,
    then NMS over all categories (one sign belongs to one category: two boxes on one sign would be two
    candidates for the classifier)."""
    out = out.float()
    c = out.shape[0] - 4
    heat = torch.sigmoid(out[:c])  # (C, h, w)
    peaks = heat * (F.max_pool2d(heat[None], 3, stride=1, padding=1)[0] == heat)
    scores, idx = peaks.flatten().topk(min(top_k, peaks.numel()))
    keep = scores >= threshold
    scores, idx = scores[keep], idx[keep]
    h, w = heat.shape[1:]
    cats, cell = idx // (h * w), idx % (h * w)
    iy, ix = cell // w, cell % w
    box = out[c:, iy, ix]  # (4, N)
    bw, bh = box[0].exp() * STRIDE, box[1].exp() * STRIDE
    cx, cy = (ix + box[2]) * STRIDE, (iy + box[3]) * STRIDE
    boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2 - 1, cy + bh / 2 - 1], dim=1)  # (N, 4)
    if size is not None:
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, size[1] - 1)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, size[0] - 1)
    order = nms(boxes, scores, nms_iou)
    return boxes[order], scores[order], cats[order]


# Written out rather than F.logsigmoid and torch.logaddexp: the ONNX exporter turns those into log(sigmoid(x))
# and log(exp(u) + exp(v)), and onnxruntime's sigmoid is exact only to ~1 % in its far tail (e^-12), which the
# log then makes an absolute error of 0.01. These forms take exp only of values <= 0 and log only of 1 + that.
def log_sigmoid(x: torch.Tensor) -> torch.Tensor:
    return torch.clamp(x, max=0.0) - torch.log1p(torch.exp(-x.abs()))


def log_add_exp(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.maximum(u, v) + torch.log1p(torch.exp(-(u - v).abs()))


class SceneGraph(nn.Module):
    """A whole scene to the finder's maps: uint8 (1, H, W, 3) RGB -> standardisation -> zero padding (after
    standardisation: mid-grey is 0) on the right and bottom to H', W', multiples of the model's coarsest stride
    (`pad_to`: 16 for three stages, 32 for four) -> the network's maps (1, C + 4, H'/4, W'/4). The torch
    backend runs this module and `signlab export` exports it, so both backends prepare a scene by the same ops.

    flip=True also runs the mirror image (the finder trained on mirrored crops; its four categories are
    shapes that a mirror keeps) and averages the two: heat as probabilities, log sizes as they are; the
    offsets stay the unmirrored pass's (CenterNet's flip test). The padded width divides by the stride, so
    cell ix of the mirror is cell w - 1 - ix of the scene."""

    def __init__(self, model: nn.Module, flip: bool = False) -> None:
        super().__init__()
        self.model, self.flip = model, flip

    def forward(self, scene: torch.Tensor) -> torch.Tensor:
        h, w = scene.shape[1], scene.shape[2]
        pad_to = self.model.pad_to
        x = F.pad(to_input(scene), (0, -w % pad_to, 0, -h % pad_to))  # (1, 3, H', W')
        if not self.flip:
            return self.model(x)
        both = self.model(torch.cat([x, x.flip(3)])).float()  # (2, C + 4, h', w'); fp32 even under bf16
        out, mirrored = both[:1], both[1:].flip(3)
        c = out.shape[1] - 4
        a, b = out[:, :c], mirrored[:, :c]
        # the logit of the mean probability, log p - log(1 - p), from log-sigmoids: 1 - p is never formed, so a
        # confident peak (p within float32's step of 1) keeps its logit, and both backends agree on it
        logits = log_add_exp(log_sigmoid(a), log_sigmoid(b)) - log_add_exp(log_sigmoid(-a), log_sigmoid(-b))
        sizes = (out[:, c:c + 2] + mirrored[:, c:c + 2]) / 2
        return torch.cat([logits, sizes, out[:, c + 2:]], dim=1)


class MapsFinder:
    """A finder that gives the network's maps of a scene; decoding them into proposals (peaks, NMS) is shared.
    Subclasses: `SignFinder` (torch) and signlab.detection.onnx_backend's `OnnxFinder` (onnxruntime)."""

    def maps(self, scene: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 -> float32 maps (C + 4, H'/4, W'/4) on the CPU, H' and W' padded (SceneGraph)."""
        raise NotImplementedError

    def propose(self, scene: np.ndarray, threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """scene (H, W, 3) uint8 RGB -> boxes (N, 4) float inclusive pixel corners, clipped to the scene,
        scores (N,) in [0, 1], categories (N,) long indices into CATEGORIES; after NMS, best first."""
        if scene.ndim != 3 or scene.shape[2] != 3 or scene.dtype != np.uint8:
            raise ValueError(f"scene must be (H, W, 3) uint8 RGB, got {scene.shape} {scene.dtype}")
        boxes, scores, cats = decode(self.maps(scene), threshold, size=scene.shape[:2])
        return boxes, scores, cats.long()


@dataclass
class SignFinder(MapsFinder):
    """A trained finder run by torch: `propose(scene, threshold)` gives sign candidates of a whole scene."""

    model: nn.Module
    device: torch.device
    bf16: str = "off"
    flip: bool = False  # SceneGraph's mirror averaging
    graph: SceneGraph = field(init=False, repr=False)

    def __post_init__(self) -> None:
        from signlab.models import fold_batchnorm

        self.graph = SceneGraph(fold_batchnorm(self.model), self.flip)  # a copy: a training run's model trains on

    @torch.no_grad()
    def maps(self, scene: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.array(scene))[None].to(self.device)  # a copy: scenes may be read-only
        with autocast(self.device, self.bf16):
            out = self.graph(x)
        return out[0].float().cpu()


def load_finder(run_dir: Path, device: torch.device, flip: bool = False) -> SignFinder:
    """The finder of a detection run folder (best.safetensors, else last) or of one of its weights files;
    flip: average it with its mirror image (SceneGraph)."""
    from signlab.checkpoint import load_weights
    from signlab.config import TrainConfig
    from signlab.errors import UserError
    from signlab.models import create_model

    tensors, info, path = load_weights(run_dir)
    if info.get("task") != "detect":
        raise UserError(f"{path}: not a detection run's weights (a classifier?); train a finder with "
                        f"signlab train --task detect --data GTSDB_DIR --classifier RUN")
    cfg = TrainConfig.from_dict(TrainConfig.with_legacy_defaults(info["config"]))
    model = create_model(cfg.model, num_classes=len(CATEGORIES), image_size=cfg.image_size, **cfg.model_options)
    prefix = "ema." if any(k.startswith("ema.") for k in tensors) else "model."
    try:
        model.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    except RuntimeError as e:
        raise UserError(f"{path}: weights do not fit model {cfg.model} ({str(e).splitlines()[0]})") from None
    model.to(device, memory_format=torch.channels_last).eval()
    return SignFinder(model, device, cfg.bf16, flip)
