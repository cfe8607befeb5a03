"""Boxes in whole scenes: what a ground-truth sign and a detection hold, GTSDB's categories, IoU and NMS.

Pixel boxes are (x1, y1, x2, y2) in GTSDB's convention: left, top, right, bottom, with x2/y2 the last column
and row of the sign (inclusive), as GTSRB's ROI (docs/roi.md). Width is therefore x2 - x1 + 1. Every module of
signlab.detection imports these; NMS is written in torch because torchvision's ops cannot load beside the CPU
build of torch that signlab pins.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from signlab.classes import GTSRB_CLASS_NAMES

# The three categories the IJCNN 2013 benchmark and its papers rank, and "other" for the rest.
CATEGORIES: tuple[str, ...] = ("prohibitory", "mandatory", "danger", "other")
_PROHIBITORY = (0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 15, 16)
_MANDATORY = tuple(range(33, 41))
_DANGER = (11, *range(18, 32))
RANKED_CATEGORIES: tuple[str, ...] = CATEGORIES[:3]


def category_of(class_id: int) -> str:
    """GTSDB's category of a GTSRB class id (0..42)."""
    if not 0 <= class_id < len(GTSRB_CLASS_NAMES):
        raise ValueError(f"class id {class_id} is not a GTSRB class (0..42)")
    if class_id in _PROHIBITORY:
        return "prohibitory"
    if class_id in _MANDATORY:
        return "mandatory"
    if class_id in _DANGER:
        return "danger"
    return "other"


@dataclass(frozen=True)
class SignBox:
    """One ground-truth sign: its pixel box (inclusive corners) and GTSRB class."""

    x1: float
    y1: float
    x2: float
    y2: float
    class_id: int

    @property
    def width(self) -> float:
        return self.x2 - self.x1 + 1

    @property
    def height(self) -> float:
        return self.y2 - self.y1 + 1

    @property
    def category(self) -> str:
        return category_of(self.class_id)


@dataclass(frozen=True)
class Detection:
    """One found sign: box (inclusive corners, pixels of the original scene), class, score in [0, 1]."""

    x1: float
    y1: float
    x2: float
    y2: float
    class_id: int
    score: float

    @property
    def category(self) -> str:
        return category_of(self.class_id)

    def to_json(self) -> dict:
        """The object `signlab detect --json` prints for one detection (README: "Detect")."""
        return {"box": [round(v, 1) for v in (self.x1, self.y1, self.x2, self.y2)], "class_id": self.class_id,
                "name": GTSRB_CLASS_NAMES[self.class_id], "category": self.category,
                "score": round(self.score, 4)}

    def as_dict(self) -> dict:
        return asdict(self)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of every box in a (N, 4) with every box in b (M, 4), inclusive pixel corners: (N, M)."""
    area_a = (a[:, 2] - a[:, 0] + 1).clamp(min=0) * (a[:, 3] - a[:, 1] + 1).clamp(min=0)  # (N,)
    area_b = (b[:, 2] - b[:, 0] + 1).clamp(min=0) * (b[:, 3] - b[:, 1] + 1).clamp(min=0)  # (M,)
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])  # (N, M, 2)
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])  # (N, M, 2)
    wh = (bottom_right - top_left + 1).clamp(min=0)  # (N, M, 2)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-9)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression: indices of the kept boxes, highest score first.

    boxes (N, 4), scores (N,). A box is dropped when it overlaps a kept, higher-scoring box by more than
    iou_threshold. O(N^2) memory in one IoU matrix: fine for the few hundred candidates a scene gives.
    """
    order = torch.argsort(scores, descending=True)
    boxes = boxes[order]
    iou = box_iou(boxes, boxes)  # (N, N)
    keep: list[int] = []
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold
    return order[torch.tensor(keep, dtype=torch.long)] if keep else order[:0]
