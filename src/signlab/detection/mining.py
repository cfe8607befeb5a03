"""Hard-negative mining for the sign finder (`--mine P`): crops placed on the finder's own false positives.

Random crops rarely land on what fools a half-trained finder (a wheel hub, a tail lamp, a pylon's triangle), so
from a third of the way through training, each epoch ends by running the finder on a rotating fifth of its
training scenes and remembering the proposals that cover no sign. Later crops of a scene are centred on one of
its remembered negatives with probability P, as crops around a sign are; their targets are the usual ones (any
sign in view is still a sign), so a mined crop can only teach "this is not a sign" where no sign is annotated.
This is the bootstrapping of the sliding-window detectors (Sung & Poggio 1998; Felzenszwalb et al. 2010).

The negatives live in the training state and in each checkpoint, and mining is a function of the weights at the
end of the epoch, so exact resume holds.
"""

from __future__ import annotations

import numpy as np
import torch

from signlab.detection.boxes import box_iou
from signlab.detection.metrics import match_any_class

MINE_THRESHOLD = 0.2  # lowest proposal score remembered as a negative
MINE_IOU = 0.5  # a proposal covering no sign at this IoU is a false positive (metrics.match_any_class)
MINE_FROM = 1 / 3  # share of the epochs trained before the first mining
MINE_SHARDS = 5  # each epoch mines the scenes i with i % MINE_SHARDS == epoch % MINE_SHARDS
MINE_KEEP = 8  # negatives remembered per scene, newest first
MINE_SAME = 0.5  # a new negative overlapping a remembered one by more than this replaces it


def mining_epoch(epoch: int, epochs: int) -> bool:
    """Whether the end of `epoch` (from 0) mines."""
    return epoch + 1 >= max(1, round(epochs * MINE_FROM))


def scenes_to_mine(epoch: int, n_scenes: int) -> range:
    return range(epoch % MINE_SHARDS, n_scenes, MINE_SHARDS)


def scene_negatives(finder, image: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """The finder's proposals on one scene (H, W, 3) uint8 that cover none of its signs (n, 4): (k, 4) float32
    inclusive corners, best first."""
    boxes, scores, _ = finder.propose(image, MINE_THRESHOLD)
    boxes, scores = boxes.detach().float().cpu(), scores.detach().float().cpu()  # (N, 4), (N,)
    sign_of = match_any_class(signs, boxes, scores, MINE_IOU)
    false = [i for i, s in enumerate(sign_of) if s == -1]
    return boxes[false].numpy().reshape(-1, 4)  # float32 already


def remember(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """New negatives first, then the old ones that none of them repeats, at most MINE_KEEP: (k, 4) float32."""
    if len(new) and len(old):
        repeated = (box_iou(torch.from_numpy(old), torch.from_numpy(new)) > MINE_SAME).any(1).numpy()  # (len(old),)
        old = old[~repeated]
    return np.concatenate([new, old]).astype(np.float32).reshape(-1, 4)[:MINE_KEEP]


def mine(finder, images: list[np.ndarray], signs: list[np.ndarray], negatives: list[np.ndarray],
         epoch: int) -> tuple[list[np.ndarray], int]:
    """Negatives of every training scene after mining this epoch's shard, and how many the shard gave."""
    negatives = list(negatives)
    found = 0
    for i in scenes_to_mine(epoch, len(images)):
        new = scene_negatives(finder, images[i], signs[i])
        found += len(new)
        negatives[i] = remember(negatives[i], new)
    return negatives, found


def no_negatives(n_scenes: int) -> list[np.ndarray]:
    return [np.zeros((0, 4), np.float32) for _ in range(n_scenes)]
