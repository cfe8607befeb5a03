"""Detection metrics on whole scenes: AP per GTSDB category and per class, recall by sign size, false positives.

Average precision comes from pycocotools (COCO's own evaluator), not from maths written here: each question
below is put to it as a small COCO data set, and its matching (greedy by score, IoU >= threshold, each sign
matched once) also decides which signs were found and which detections were right.

Boxes. signlab's boxes are inclusive pixel corners (x1, y1, x2, y2), width x2 - x1 + 1, as GTSDB's gt.txt.
COCO's are [x, y, w, h] on a continuous plane; a box becomes [x1, y1, x2 - x1 + 1, y2 - y1 + 1], which covers
exactly the same pixels, so COCO's IoU equals signlab.detection.boxes.box_iou (a test pins the 0.5 border).

The benchmark's rule per category (as the GTSDB papers rank prohibitory, mandatory and danger): that
category's signs are the ground truth, detections of that category the predictions, and every sign of another
category is an ignored region: a detection on it (IoU >= 0.5) is neither a true nor a false positive. The
ignored signs are COCO "ignore" annotations with the ordinary IoU (not COCO's crowd regions, whose IoU is
measured over the detection's area only). As in COCO, an ignored sign absorbs one detection; a second
detection on it counts as a false positive (VOC's devkit would ignore that one too).

Interpolation: COCO's, not VOC's. pycocotools makes precision monotone (each point takes the best precision at
any higher recall), then reads it at 101 recall points 0, 0.01, ..., 1 and averages them; recall points that
are never reached count as precision 0. VOC 2010-2012's devkit (which "VOC-style" GTSDB figures such as
Arcos-García et al. 2018 follow) takes the exact area under the same monotone curve ("all points"); VOC 2007
sampled 11 points. The two agree at 1.0 and 0.0 and otherwise differ only by the sampling: each of the 101
points stands for a 0.01-wide strip of recall, so a curve with few signs can move by up to about a point (one
found sign of two: all-point AP 0.5, COCO 51/101 = 0.505); on GTSDB's 600 training scenes (114 to 396 signs
per category) with made-up random detections the two differed by under 0.2 points. Compare our figures with
published VOC-style ones to a few tenths of a point, no finer.

Operating point (issue #17: "recall >= 0.99 for signs >= 32 px at <= 0.05 false positives per scene"): the
lowest score threshold whose false positives per scene stay within FP_BUDGET, and recall there. There a false
positive is a detection that covers no sign at all (IoU 0.5, class-blind: match_any_class); a sign found but
misnamed is counted apart, as misnamed, not as a false positive.

Classes: "map50_classes" averages AP over the classes that have at least one sign in the ground truth (COCO
leaves a class without signs out; its detections then cost nothing there); "ap50_by_class" names them.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from signlab.classes import GTSRB_CLASS_NAMES
from signlab.detection.boxes import RANKED_CATEGORIES, Detection, SignBox, box_iou, category_of

SMALL_PX = 32  # signs narrower than this are "small" (a third of GTSDB's), reported apart
_IOU = 0.5
FP_BUDGET = 0.05  # false positives per scene at the operating point: issue #17's goal


@dataclass(frozen=True)
class SceneMatch:
    """One scene's signs and its detections at or above the score threshold, matched class-aware at IoU 0.5."""

    found: tuple[bool, ...]  # per sign of the scene: a detection of its class covers it
    detections: tuple[Detection, ...]  # the detections kept (score >= threshold), in the order given
    right: tuple[bool, ...]  # per kept detection: it covers a sign of its class

    @property
    def misses(self) -> int:
        return self.found.count(False)

    @property
    def wrong(self) -> int:
        return self.right.count(False)

    @property
    def errors(self) -> int:
        """Misses plus wrong detections: a sign found but misnamed counts twice (once each way)."""
        return self.misses + self.wrong


class _IgnoringEval(COCOeval):
    """COCOeval whose ignore flags come from our annotations' "signlab_ignore", keeping the ordinary IoU.

    COCOeval._prepare overwrites every "ignore" with "iscrowd"; crowd regions would change the IoU, so the
    flags are set again after it.
    """

    def _prepare(self) -> None:
        super()._prepare()
        for anns in self._gts.values():
            for ann in anns:
                ann["ignore"] = int(ann.get("signlab_ignore", 0))


def _coco_box(b: SignBox | Detection) -> list[float]:
    return [float(b.x1), float(b.y1), float(b.x2 - b.x1 + 1), float(b.y2 - b.y1 + 1)]


def _dataset(n_images: int, cat_ids: Sequence[int], anns: list[dict]) -> COCO:
    """A COCO object built in memory (COCO() would read a file), without its "creating index" printing."""
    for i, ann in enumerate(anns):
        ann["id"] = i + 1  # COCOeval takes id 0 for "unmatched": ids start at 1
        ann.setdefault("iscrowd", 0)
        ann["area"] = ann["bbox"][2] * ann["bbox"][3]
    coco = COCO()
    coco.dataset = {"images": [{"id": i} for i in range(n_images)],
                    "categories": [{"id": int(c)} for c in cat_ids], "annotations": anns}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _evaluate(n_images: int, cat_ids: Sequence[int], gt: list[dict], dt: list[dict],
              iou_thresholds: Sequence[float] | None = None, use_cats: bool = True,
              accumulate: bool = True) -> _IgnoringEval:
    """Run pycocotools' box evaluation over one area range ("all") with no cap on detections per scene."""
    per_image = np.bincount([d["image_id"] for d in dt], minlength=1) if dt else np.zeros(1, int)
    evaluator = _IgnoringEval(_dataset(n_images, cat_ids, gt), _dataset(n_images, cat_ids, dt), "bbox")
    p = evaluator.params
    p.imgIds = list(range(n_images))
    p.catIds = [int(c) for c in cat_ids]
    p.maxDets = [max(1, int(per_image.max()))]
    p.areaRng, p.areaRngLbl = [[0.0, 1e12]], ["all"]
    p.useCats = int(use_cats)
    if iou_thresholds is not None:
        p.iouThrs = np.asarray(iou_thresholds, dtype=float)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress on every call
        evaluator.evaluate()
        if accumulate:
            evaluator.accumulate()
    return evaluator


def _check(scenes: Sequence, detections: Sequence[Sequence[Detection]], score_threshold: float) -> None:
    if len(scenes) != len(detections):
        raise ValueError(f"{len(scenes)} scenes but detections for {len(detections)}: give one list per scene")
    if not 0.0 <= score_threshold <= 1.0:
        raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")


def _ap(evaluator: _IgnoringEval, k: int, t: int = 0) -> float | None:
    """AP of the k-th category at the t-th IoU threshold; None where it has no (non-ignored) sign."""
    precision = evaluator.eval["precision"][t, :, k, 0, -1]  # (R,) at COCO's 101 recall points
    return None if (precision < 0).any() else float(precision.mean())


def _mean(values) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def _category_eval(scenes: Sequence, detections: Sequence[Sequence[Detection]]) -> _IgnoringEval:
    """One COCO category per ranked category; every sign of another category is an ignored region in it."""
    gt, dt = [], []
    for i, (scene, found) in enumerate(zip(scenes, detections, strict=True)):
        for sign in scene.boxes:
            for k, category in enumerate(RANKED_CATEGORIES):
                gt.append({"image_id": i, "category_id": k, "bbox": _coco_box(sign),
                           "signlab_ignore": int(sign.category != category)})
        for d in found:
            if d.category in RANKED_CATEGORIES:
                dt.append({"image_id": i, "category_id": RANKED_CATEGORIES.index(d.category),
                           "bbox": _coco_box(d), "score": float(d.score)})
    return _evaluate(len(scenes), range(len(RANKED_CATEGORIES)), gt, dt)


def _class_eval(scenes: Sequence, detections: Sequence[Sequence[Detection]]) -> _IgnoringEval:
    """One COCO category per GTSRB class, at COCO's ten IoU thresholds 0.5:0.05:0.95."""
    gt = [{"image_id": i, "category_id": s.class_id, "bbox": _coco_box(s)}
          for i, scene in enumerate(scenes) for s in scene.boxes]
    dt = [{"image_id": i, "category_id": d.class_id, "bbox": _coco_box(d), "score": float(d.score)}
          for i, found in enumerate(detections) for d in found]
    return _evaluate(len(scenes), range(len(GTSRB_CLASS_NAMES)), gt, dt)


def _pr_curve(evaluator: _IgnoringEval, k: int) -> dict[str, list[float]]:
    """COCO's monotone precision at its recall points, up to the highest recall reached (beyond it COCO
    counts 0, which would draw a cliff that is not a measured point)."""
    precision = evaluator.eval["precision"][0, :, k, 0, -1]  # (R,)
    top = evaluator.eval["recall"][0, k, 0, -1]
    if (precision < 0).any() or top <= 0:
        return {"precision": [], "recall": []}
    points = evaluator.params.recThrs <= top + 1e-12
    return {"precision": [round(float(v), 6) for v in precision[points]],
            "recall": [round(float(v), 6) for v in evaluator.params.recThrs[points]]}


def match_scenes(scenes: Sequence, detections: Sequence[Sequence[Detection]],
                 score_threshold: float = 0.5) -> list[SceneMatch]:
    """Which signs were found and which detections (score >= threshold) were right, per scene: pycocotools'
    matching at IoU 0.5 within each class (the class must be right for both)."""
    _check(scenes, detections, score_threshold)
    kept = [tuple(d for d in found if d.score >= score_threshold) for found in detections]
    gt = [{"image_id": i, "category_id": s.class_id, "bbox": _coco_box(s), "ref": (i, j)}
          for i, scene in enumerate(scenes) for j, s in enumerate(scene.boxes)]
    dt = [{"image_id": i, "category_id": d.class_id, "bbox": _coco_box(d), "score": float(d.score), "ref": (i, j)}
          for i, found in enumerate(kept) for j, d in enumerate(found)]
    evaluator = _evaluate(len(scenes), range(len(GTSRB_CLASS_NAMES)), gt, dt, [_IOU], accumulate=False)
    found = [[False] * len(scene.boxes) for scene in scenes]
    right = [[False] * len(k) for k in kept]
    gt_ref = {a["id"]: a["ref"] for a in gt}
    dt_ref = {a["id"]: a["ref"] for a in dt}
    for result in evaluator.evalImgs:
        if result is None:
            continue
        for ann_id, match in zip(result["gtIds"], result["gtMatches"][0], strict=True):
            i, j = gt_ref[ann_id]
            found[i][j] = bool(match > 0)
        for ann_id, match in zip(result["dtIds"], result["dtMatches"][0], strict=True):
            i, j = dt_ref[ann_id]
            right[i][j] = bool(match > 0)
    return [SceneMatch(tuple(f), k, tuple(r)) for f, k, r in zip(found, kept, right, strict=True)]


def _corners(boxes) -> torch.Tensor:
    """(N, 4) float64 inclusive corners from SignBoxes, Detections or anything array-like of that shape."""
    if len(boxes) and isinstance(boxes[0], (SignBox, Detection)):
        boxes = [(b.x1, b.y1, b.x2, b.y2) for b in boxes]
    return torch.as_tensor(np.asarray(boxes, dtype=np.float64).reshape(-1, 4))


def match_any_class(signs, detections, scores=None, iou: float = _IOU) -> list[int]:
    """Which sign each detection covers, whatever the classes: per detection (in the order given) the index of
    its sign, or -1 for none. The one home of "found" (a sign some detection covers) and of false positives
    (detections that cover none).

    Greedy, as COCO's and the training's validation: detections in descending score (ties in the order given)
    each take the untaken sign of highest IoU >= iou (ties: the first sign). A second detection on a taken
    sign therefore covers nothing. signs: SignBoxes or (M, 4) corners; detections: Detections (their scores
    used) or (N, 4) corners with scores (N,).
    """
    if scores is None:
        scores = [d.score for d in detections]
    sign_boxes, det_boxes = _corners(signs), _corners(detections)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(scores) != len(det_boxes):
        raise ValueError(f"{len(det_boxes)} detections but {len(scores)} scores")
    sign_of = [-1] * len(det_boxes)
    if not len(sign_boxes) or not len(det_boxes):
        return sign_of
    overlap = box_iou(det_boxes, sign_boxes)  # (N, M)
    taken = torch.zeros(len(sign_boxes), dtype=torch.bool)
    for i in np.argsort(-scores, kind="stable").tolist():
        row = overlap[i].masked_fill(taken, -1.0)
        j = int(row.argmax())  # the first of equal maxima
        if row[j] >= iou:
            taken[j] = True
            sign_of[i] = j
    return sign_of


def unmatched_per_scene(scenes: Sequence, detections: Sequence[Sequence[Detection]],
                        score_threshold: float = 0.5) -> list[int]:
    """Per scene, the detections (score >= threshold) that cover no sign at IoU 0.5, whatever the classes:
    the false alarms a driver would see, a misnamed sign not among them."""
    _check(scenes, detections, score_threshold)
    return [match_any_class(scene.boxes, kept).count(-1)
            for scene, kept in ((s, [d for d in found if d.score >= score_threshold])
                                for s, found in zip(scenes, detections, strict=True))]


def recall_by_width(scenes: Sequence, matches: Sequence[SceneMatch], edges: Sequence[float]) -> list[dict]:
    """Recall of the signs whose width (px) lies in each bin [edges[b], edges[b + 1]), the last bin closed
    (a 128 px sign is in 64-128): signs, found, recall (None for an empty bin). Signs outside are not counted."""
    widths = np.array([s.width for scene in scenes for s in scene.boxes], dtype=float)
    found = np.array([f for m in matches for f in m.found], dtype=bool)
    bins = []
    for b, (low, high) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        inside = (widths >= low) & ((widths < high) | ((widths == high) & (b == len(edges) - 2)))
        n, k = int(inside.sum()), int(found[inside].sum())
        bins.append({"min_px": low, "max_px": high, "signs": n, "found": k, "recall": k / n if n else None})
    return bins


NAMED, MISNAMED, MISSED = "named", "misnamed", "missed"


@dataclass(frozen=True)
class SceneOutcome:
    """One scene at one score threshold, as a driver would see it."""

    signs: tuple[str, ...]  # per sign: NAMED (a detection of its class covers it), MISNAMED (only others do), MISSED
    detections: tuple[Detection, ...]  # the detections kept (score >= threshold), in the order given
    false: tuple[bool, ...]  # per kept detection: it covers no sign at all (match_any_class), a false positive


def sign_outcomes(scenes: Sequence, detections: Sequence[Sequence[Detection]],
                  score_threshold: float) -> list[SceneOutcome]:
    """Each sign named, misnamed or missed and each kept detection false or not, at score >= threshold.

    "Named" is match_scenes' class-aware matching, "found" match_any_class's; a sign named counts as found
    even where the class-blind matching gave its detection to an overlapping sign, so named <= found."""
    _check(scenes, detections, 0.0)
    # filtered here rather than by match_scenes, whose threshold stops at 1: operating_threshold may lie above
    kept = [[d for d in found if d.score >= score_threshold] for found in detections]
    outcomes = []
    for scene, match in zip(scenes, match_scenes(scenes, kept, 0.0), strict=True):
        sign_of = match_any_class(scene.boxes, match.detections)
        covered = set(sign_of)
        signs = tuple(NAMED if named else MISNAMED if j in covered else MISSED for j, named in enumerate(match.found))
        outcomes.append(SceneOutcome(signs, match.detections, tuple(j < 0 for j in sign_of)))
    return outcomes


def operating_threshold(scenes: Sequence, detections: Sequence[Sequence[Detection]],
                        fp_budget: float = FP_BUDGET) -> float:
    """The lowest score threshold at which the detections scoring >= it make at most fp_budget false positives
    per scene (detections covering no sign at IoU 0.5, whatever the classes; a misnamed sign is not one).

    Matching is greedy in score order, so lowering the threshold only adds false positives: one matching of
    every detection gives the count at each threshold. The answer is one of the detections' scores (detections
    of equal score are kept or dropped together), the lowest score when every detection fits the budget (0.0
    without detections), or just above the top score (nothing kept) when even that is over budget. Nothing
    below the scores given is known: detections made at 0.01 cannot give a threshold under 0.01.
    """
    _check(scenes, detections, 0.0)
    if fp_budget < 0:
        raise ValueError(f"fp_budget must be >= 0 false positives per scene, got {fp_budget}")
    scores, false_scores = [], []
    for scene, found in zip(scenes, detections, strict=True):
        scores += [d.score for d in found]
        false_scores += [d.score for d, j in zip(found, match_any_class(scene.boxes, found), strict=True) if j < 0]
    allowed = math.floor(fp_budget * len(scenes) + 1e-9)  # 0.29 x 100 is 28.999999999999996 in floats
    if len(false_scores) <= allowed:
        return min(scores, default=0.0)
    limit = sorted(false_scores, reverse=True)[allowed]  # the first false positive over budget: drop it
    return min((v for v in scores if v > limit), default=math.nextafter(limit, math.inf))


def operating_point(scenes: Sequence, detections: Sequence[Sequence[Detection]],
                    fp_budget: float = FP_BUDGET) -> dict:
    """At operating_threshold: recall found (any class) and found and named, for signs under SMALL_PX wide and
    the rest, the misnamed signs apart, and the false positives per scene; JSON-ready."""
    threshold = operating_threshold(scenes, detections, fp_budget)
    return {"fp_budget": fp_budget, **point_at(scenes, detections, threshold)}


def point_at(scenes: Sequence, detections: Sequence[Sequence[Detection]], threshold: float) -> dict:
    """Recall found and found and named by size, misnamed signs and false positives per scene at a given score
    threshold: operating_point's figures for a threshold chosen elsewhere (fixed in advance)."""
    outcomes = sign_outcomes(scenes, detections, threshold)
    false = sum(sum(o.false) for o in outcomes)
    point = {"threshold": threshold, "false_positives": false, "fp_per_scene": false / len(scenes) if scenes else None}
    statuses = [(s.width < SMALL_PX, status) for scene, o in zip(scenes, outcomes, strict=True)
                for s, status in zip(scene.boxes, o.signs, strict=True)]
    for small, key in ((True, f"under_{SMALL_PX}px"), (False, f"{SMALL_PX}px_and_over")):
        counts = {v: sum(1 for sm, st in statuses if sm == small and st == v) for v in (NAMED, MISNAMED, MISSED)}
        n, found = sum(counts.values()), counts[NAMED] + counts[MISNAMED]
        point[key] = {"signs": n, "found": found, "named": counts[NAMED], "misnamed": counts[MISNAMED],
                      "recall_found": found / n if n else None, "recall_named": counts[NAMED] / n if n else None}
    return point


def evaluate_detections(scenes: Sequence, detections: Sequence[Sequence[Detection]],
                        score_threshold: float = 0.5, fp_budget: float = FP_BUDGET) -> dict:
    """The detection benchmark's figures as a JSON-ready dict (the module docstring says how AP is counted).

    scenes: objects with .boxes (SignBox); detections[i]: scene i's detections at any score (AP uses them all;
    recall and false positives only those with score >= score_threshold; "operating_point" those at
    operating_threshold for fp_budget).
    """
    _check(scenes, detections, score_threshold)
    by_category = _category_eval(scenes, detections)
    ap50 = {c: _ap(by_category, k) for k, c in enumerate(RANKED_CATEGORIES)}
    by_class = _class_eval(scenes, detections)
    counts = np.bincount([s.class_id for scene in scenes for s in scene.boxes], minlength=len(GTSRB_CLASS_NAMES))
    present = [c for c in range(len(GTSRB_CLASS_NAMES)) if counts[c]]
    class_ap = {c: _ap(by_class, c) for c in present}
    # (T, R, K) -> mean over IoU thresholds and recall points, then over the classes with signs
    ap_95 = [float(by_class.eval["precision"][:, :, c, 0, -1].mean()) for c in present]
    matches = match_scenes(scenes, detections, score_threshold)
    small, large = recall_by_width(scenes, matches, (0, SMALL_PX, math.inf))
    large["max_px"] = None  # JSON has no infinity
    false_positives = unmatched_per_scene(scenes, detections, score_threshold)
    return {
        "ap50": ap50,
        "map50_categories": _mean(ap50.values()),
        "map50_classes": _mean(class_ap.values()),
        "ap50_95": _mean(ap_95),
        "ap50_by_class": {str(c): {"name": GTSRB_CLASS_NAMES[c], "category": category_of(c),
                                   "signs": int(counts[c]), "ap50": class_ap[c]} for c in present},
        "classes_in_ground_truth": len(present),
        "score_threshold": score_threshold,
        "recall_by_size": {f"under_{SMALL_PX}px": small, f"{SMALL_PX}px_and_over": large},
        "fp_per_scene": sum(false_positives) / len(scenes) if scenes else None,
        "false_positives": sum(false_positives),
        "operating_point": operating_point(scenes, detections, fp_budget),
        "pr_curves": {c: _pr_curve(by_category, k) for k, c in enumerate(RANKED_CATEGORIES)},
        "scenes": len(scenes),
        "signs": int(counts.sum()),
    }
