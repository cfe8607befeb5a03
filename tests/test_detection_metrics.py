"""Detection metrics against values worked out by hand.

COCO's AP (pycocotools): precision at each rank = TP so far / detections so far, made monotone (each point
takes the best precision at any higher recall), read at the 101 recall points 0, 0.01, ..., 1 (0 where the
recall is never reached), averaged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from signlab.detection.boxes import Detection, SignBox
from signlab.detection.metrics import (
    MISNAMED,
    MISSED,
    NAMED,
    evaluate_detections,
    match_any_class,
    match_scenes,
    operating_point,
    operating_threshold,
    point_at,
    sign_outcomes,
    unmatched_per_scene,
)


@dataclass(frozen=True)
class Scene:  # the duck type evaluate_detections reads: .path and .boxes
    path: Path
    boxes: tuple[SignBox, ...]


def scene(*boxes: SignBox) -> Scene:
    return Scene(Path("scene.jpg"), tuple(boxes))


def sign(x: float, y: float, class_id: int, w: float = 40) -> SignBox:
    return SignBox(x, y, x + w - 1, y + w - 1, class_id)  # w x w pixels


def hit(s: SignBox, score: float, class_id: int | None = None) -> Detection:
    """A detection exactly on the sign (IoU 1), of its class unless told."""
    return Detection(s.x1, s.y1, s.x2, s.y2, s.class_id if class_id is None else class_id, score)


def far(score: float, class_id: int, x: float = 1000) -> Detection:
    return Detection(x, 700, x + 29, 729, class_id, score)  # overlaps no sign of these tests


# Classes by category: 1 and 2 prohibitory, 38 mandatory, 11 danger, 14 (Stop) other.
P1, M, D, OTHER = 1, 38, 11, 14


def test_perfect_detections_score_one_everywhere():
    # Every sign found at IoU 1 with its class, nothing else: precision 1 at every recall, AP 1 for all.
    a, b, c, d = sign(10, 10, P1), sign(100, 10, M), sign(200, 10, D, w=20), sign(300, 10, OTHER)
    scenes = [scene(a, b), scene(c, d)]
    m = evaluate_detections(scenes, [[hit(a, 0.9), hit(b, 0.8)], [hit(c, 0.7), hit(d, 0.6)]])
    # (pycocotools divides by TP + FP + 1e-16: "1" is 1 - 1e-16, hence approx)
    assert m["ap50"] == pytest.approx({"prohibitory": 1.0, "mandatory": 1.0, "danger": 1.0})
    assert m["map50_categories"] == pytest.approx(1.0) and m["map50_classes"] == pytest.approx(1.0)
    assert m["ap50_95"] == pytest.approx(1.0)
    assert m["classes_in_ground_truth"] == 4 and sorted(m["ap50_by_class"]) == ["1", "11", "14", "38"]
    assert m["ap50_by_class"]["14"] == {"name": "Stop", "category": "other", "signs": 1, "ap50": pytest.approx(1.0)}
    assert m["recall_by_size"]["under_32px"]["recall"] == 1.0  # c, 20 px
    assert m["recall_by_size"]["32px_and_over"]["recall"] == 1.0
    assert m["fp_per_scene"] == 0.0 and m["scenes"] == 2 and m["signs"] == 4
    curve = m["pr_curves"]["prohibitory"]
    assert len(curve["recall"]) == 101 and curve["recall"][-1] == 1.0 and set(curve["precision"]) == {1.0}


def test_one_of_two_signs_missed():
    # Two prohibitory signs, one found: one point, recall 0.5 at precision 1. The 51 recall points
    # 0, 0.01, ..., 0.50 read precision 1; the 50 above 0.5 are never reached and read 0: AP = 51/101.
    # (VOC's all-point AP would be 0.5: the module docstring's example.)
    a, b = sign(10, 10, P1), sign(100, 10, P1)
    m = evaluate_detections([scene(a, b)], [[hit(a, 0.9)]])
    assert m["ap50"]["prohibitory"] == pytest.approx(51 / 101)
    assert m["ap50"]["mandatory"] is None and m["ap50"]["danger"] is None  # no such signs: no AP, not 0
    assert m["map50_categories"] == pytest.approx(51 / 101)  # the mean over categories that have signs
    assert m["pr_curves"]["prohibitory"]["recall"][-1] == 0.5  # drawn up to the recall reached, no cliff
    assert m["pr_curves"]["mandatory"] == {"precision": [], "recall": []}


def test_false_positive_ranked_above_the_true_one():
    # One sign; ranked: 0.9 false (precision 0/1), 0.8 true (recall 1, precision 1/2). Monotone precision is
    # 1/2 at every recall point up to 1: AP = 0.5. Below it, a false positive ranked after the true one does
    # not lower AP: (1 at every recall point) = 1.
    a = sign(10, 10, D)
    m = evaluate_detections([scene(a)], [[far(0.9, D), hit(a, 0.8)]])
    assert m["ap50"]["danger"] == pytest.approx(0.5)
    m = evaluate_detections([scene(a)], [[hit(a, 0.8), far(0.7, D)]])
    assert m["ap50"]["danger"] == pytest.approx(1.0)


def test_signs_of_other_categories_are_ignored_regions():
    # A prohibitory sign p and a danger sign d. For prohibitory, d is an ignored region: the 0.9 prohibitory
    # detection on d is neither true nor false, so the ranking is just the true 0.8 one: AP 1 (were d not
    # ignored it would be a false positive ranked first, AP 0.5 as above). Danger: its sign d has no danger
    # detection: AP 0. Mandatory: no sign, no AP.
    p, d = sign(10, 10, P1), sign(100, 10, D)
    m = evaluate_detections([scene(p, d)], [[hit(d, 0.9, class_id=P1), hit(p, 0.8)]])
    assert m["ap50"] == {"prohibitory": pytest.approx(1.0), "mandatory": None, "danger": 0.0}
    assert m["map50_categories"] == pytest.approx(0.5)
    # Over classes nothing is ignored: class 1 ranks a false 0.9 above a true 0.8 (AP 0.5), class 11 is never
    # found (AP 0): mean 0.25.
    assert m["ap50_by_class"]["1"]["ap50"] == pytest.approx(0.5) and m["ap50_by_class"]["11"]["ap50"] == 0.0
    assert m["map50_classes"] == pytest.approx(0.25)
    # An "other" sign (Stop) is ignored by all three categories, and its detections are in none of them.
    s = sign(10, 10, OTHER)
    m = evaluate_detections([scene(s, p)], [[hit(s, 0.9, class_id=P1), hit(s, 0.95), hit(p, 0.5)]])
    assert m["ap50"]["prohibitory"] == pytest.approx(1.0)


def test_right_place_wrong_class():
    # A 30 km/h sign found as 50 km/h: both prohibitory, so the category's AP is 1; but class 1 is never
    # found (AP 0) and class 2 has no sign (left out), so the 43-class mAP is 0. Recall needs the class
    # right (0); the detection covers a sign, so it is no false positive per scene.
    a = sign(10, 10, P1)
    m = evaluate_detections([scene(a)], [[hit(a, 0.9, class_id=2)]])
    assert m["ap50"]["prohibitory"] == pytest.approx(1.0)
    assert m["map50_classes"] == 0.0 and list(m["ap50_by_class"]) == ["1"]
    assert m["recall_by_size"]["32px_and_over"] == {"min_px": 32, "max_px": None, "signs": 1, "found": 0,
                                                   "recall": 0.0}
    assert m["fp_per_scene"] == 0.0
    match = match_scenes([scene(a)], [[hit(a, 0.9, class_id=2)]])[0]
    assert match.found == (False,) and match.right == (False,) and match.errors == 2  # a miss and a wrong one


def test_scenes_without_signs_and_only_false_positives():
    # Scene 0 has a sign found at 0.9; scenes 1 and 2 have no sign, only false detections at 0.95 and 0.3.
    # Ranked: 0.95 false, 0.9 true (recall 1, precision 1/2), 0.3 false: AP = 0.5. At threshold 0.5 only
    # the 0.95 one is a false positive: 1 in 3 scenes.
    a = sign(10, 10, M)
    scenes = [scene(a), scene(), scene()]
    m = evaluate_detections(scenes, [[hit(a, 0.9)], [far(0.95, M)], [far(0.3, M)]])
    assert m["ap50"]["mandatory"] == pytest.approx(0.5)
    assert m["fp_per_scene"] == pytest.approx(1 / 3) and m["false_positives"] == 1
    # No sign anywhere: nothing to find, so no AP at all (None, not 0 or 1); the false positives still count.
    m = evaluate_detections([scene(), scene()], [[far(0.9, P1), far(0.8, D, x=500)], []])
    assert m["ap50"] == {"prohibitory": None, "mandatory": None, "danger": None}
    assert m["map50_categories"] is None and m["map50_classes"] is None and m["ap50_95"] is None
    assert m["fp_per_scene"] == 1.0 and m["signs"] == 0


def test_no_detections_at_all():
    a, b = sign(10, 10, P1), sign(100, 10, D, w=20)
    m = evaluate_detections([scene(a), scene(b)], [[], []])
    assert m["ap50"] == {"prohibitory": 0.0, "mandatory": None, "danger": 0.0}
    assert m["map50_classes"] == 0.0 and m["ap50_95"] == 0.0 and m["fp_per_scene"] == 0.0
    assert m["recall_by_size"]["under_32px"]["recall"] == 0.0
    assert m["pr_curves"]["prohibitory"] == {"precision": [], "recall": []}
    empty = evaluate_detections([], [])
    assert empty["scenes"] == 0 and empty["fp_per_scene"] is None and empty["map50_categories"] is None


def test_inclusive_corners_become_coco_boxes_exactly():
    # The sign covers pixels 0..9 x 0..9 (100 px); the detection 0..9 x 0..4 (50 px), all inside: IoU
    # exactly 0.5, which counts as a match. Read as exclusive corners (9 x 9 and 9 x 4) it would be
    # 36/81 = 0.44, a miss: AP would be 0 instead of 1.
    s = SignBox(0, 0, 9, 9, P1)
    m = evaluate_detections([scene(s)], [[Detection(0, 0, 9, 4, P1, 0.9)]])
    assert m["ap50"]["prohibitory"] == pytest.approx(1.0)
    # One pixel row less (45 px): IoU 0.45, a miss.
    m = evaluate_detections([scene(s)], [[Detection(0, 0, 8, 4, P1, 0.9)]])
    assert m["ap50"]["prohibitory"] == 0.0


def test_ap_over_iou_thresholds():
    # 100 x 100 sign, detection 100 x 82 inside it: IoU 0.82. It matches at the thresholds 0.50, 0.55, ...,
    # 0.80 (7 of COCO's 10) with AP 1 and misses at 0.85 ... 0.95 with AP 0: AP@[.5:.95] = 0.7.
    s = SignBox(0, 0, 99, 99, D)
    m = evaluate_detections([scene(s)], [[Detection(0, 0, 99, 81, D, 0.9)]])
    assert m["ap50"]["danger"] == pytest.approx(1.0)
    assert m["ap50_95"] == pytest.approx(0.7)


def test_recall_by_size_counts_only_confident_detections():
    # A 20 px sign found at score 0.3 and a 40 px sign found at 0.9. At threshold 0.5 only the large one
    # counts (small recall 0/1); at 0.2 both do. AP uses every score: both found, AP 1 at either threshold.
    small, large = sign(10, 10, P1, w=20), sign(100, 10, P1, w=40)
    dets = [[hit(small, 0.3), hit(large, 0.9)]]
    m = evaluate_detections([scene(small, large)], dets, score_threshold=0.5)
    assert m["recall_by_size"]["under_32px"] == {"min_px": 0, "max_px": 32, "signs": 1, "found": 0, "recall": 0.0}
    assert m["recall_by_size"]["32px_and_over"]["recall"] == 1.0
    assert m["ap50"]["prohibitory"] == pytest.approx(1.0)
    m = evaluate_detections([scene(small, large)], dets, score_threshold=0.2)
    assert m["recall_by_size"]["under_32px"]["recall"] == 1.0
    # Width is x2 - x1 + 1: a sign from x 0 to 31 is 32 px wide, so not small.
    edge = SignBox(0, 0, 31, 31, P1)
    m = evaluate_detections([scene(edge)], [[hit(edge, 0.9)]])
    assert m["recall_by_size"]["32px_and_over"]["signs"] == 1


def test_false_positives_per_scene_ignore_classes_and_low_scores():
    # Scene 0: a sign with a right detection, a misnamed duplicate on it (the sign is taken: it matches
    # nothing, a false positive), and a confident one far away (false). Scene 1: a low-score far one (not
    # counted at 0.5). Class-agnostic: 2 false positives in scene 0, 0 in scene 1: 1 per scene.
    a = sign(10, 10, P1)
    dets = [[hit(a, 0.9), hit(a, 0.8, class_id=D), far(0.7, M)], [far(0.4, P1)]]
    scenes = [scene(a), scene()]
    assert unmatched_per_scene(scenes, dets) == [2, 0]
    assert evaluate_detections(scenes, dets)["fp_per_scene"] == 1.0
    matches = match_scenes(scenes, dets)
    assert matches[0].right == (True, False, False) and matches[0].found == (True,)
    assert matches[1].detections == () and matches[1].errors == 0


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="one list per scene"):
        evaluate_detections([scene()], [])
    with pytest.raises(ValueError, match="score_threshold"):
        evaluate_detections([scene()], [[]], score_threshold=1.5)


def test_match_any_class_is_greedy_by_score_and_blind_to_classes():
    # A duplicate: the 0.9 detection (another class) takes the sign, the 0.6 one covers nothing.
    a = sign(10, 10, P1)
    assert match_any_class([a], [hit(a, 0.6), hit(a, 0.9, class_id=D)]) == [-1, 0]
    # Equal scores: the one given first takes the sign.
    assert match_any_class([a], [hit(a, 0.8, class_id=M), hit(a, 0.8)]) == [0, -1]
    # Two overlapping signs, 20 x 10 px, shifted by 4: a box between them covers each at IoU 180/220 = 0.82.
    # Equal IoU: the first sign; the next detection, lower, takes the second.
    left, right = SignBox(0, 0, 19, 9, P1), SignBox(4, 0, 23, 9, D)
    between = Detection(2, 0, 21, 9, M, 0.9)
    assert match_any_class([left, right], [between, Detection(2, 0, 21, 9, M, 0.5)]) == [0, 1]
    # Plain corners and scores as the training's validation gives them; nothing to match with no sign.
    assert match_any_class([(0, 0, 9, 9)], [(0, 0, 9, 4), (0, 0, 8, 4)], [0.2, 0.9]) == [0, -1]
    assert match_any_class([], [hit(a, 0.9)]) == [-1] and match_any_class([a], []) == []


def lone_scenes(n: int) -> list[Scene]:
    return [scene() for _ in range(n)]


def test_operating_threshold_meets_the_budget_exactly():
    # 20 scenes, 0.05 false positives per scene: 1 allowed. Scores: 0.9 true (a), 0.8 false, 0.7 true (b),
    # 0.6 false, 0.4 true (c). Two false positives are one too many: the threshold must drop the 0.6 one, and
    # the lowest score above it is 0.7. There: 1 false positive in 20 scenes, exactly 0.05; c missed.
    a, b, c = sign(10, 10, P1), sign(10, 10, M), sign(10, 10, D, w=20)
    scenes = [scene(a), scene(b), scene(c), *lone_scenes(17)]
    dets = [[hit(a, 0.9), far(0.8, P1)], [hit(b, 0.7)], [hit(c, 0.4), far(0.6, D)], *[[]] * 17]
    assert operating_threshold(scenes, dets) == 0.7
    point = operating_point(scenes, dets)
    assert point["threshold"] == 0.7 and point["false_positives"] == 1 and point["fp_per_scene"] == 0.05
    assert point["32px_and_over"] == {"signs": 2, "found": 2, "named": 2, "misnamed": 0, "recall_found": 1.0,
                                      "recall_named": 1.0}
    assert point["under_32px"]["recall_found"] == 0.0
    # 40 scenes allow 2: every detection fits, and the threshold is the lowest score, 0.4; all signs found.
    scenes, dets = scenes + lone_scenes(20), dets + [[]] * 20
    assert operating_threshold(scenes, dets) == 0.4
    assert operating_point(scenes, dets)["under_32px"]["recall_named"] == 1.0
    # A larger budget or none: 0.1 per scene over 20 scenes allows 2; 0 allows none (above the 0.8 one: 0.9).
    assert operating_threshold(scenes[:20], dets[:20], fp_budget=0.1) == 0.4
    assert operating_threshold(scenes[:20], dets[:20], fp_budget=0.0) == 0.9


def test_point_at_a_threshold_fixed_in_advance():
    # The scenes of the budget test above, at thresholds chosen elsewhere. At 0.65: the 0.9, 0.8 and 0.7
    # detections kept, so a and b found, 1 false positive. At 0.5 the 0.6 false one joins: 2 in 20 scenes,
    # over the 0.05 budget, which point_at does not enforce.
    a, b, c = sign(10, 10, P1), sign(10, 10, M), sign(10, 10, D, w=20)
    scenes = [scene(a), scene(b), scene(c), *lone_scenes(17)]
    dets = [[hit(a, 0.9), far(0.8, P1)], [hit(b, 0.7)], [hit(c, 0.4), far(0.6, D)], *[[]] * 17]
    point = point_at(scenes, dets, 0.65)
    assert point["threshold"] == 0.65 and point["false_positives"] == 1 and "fp_budget" not in point
    assert point["32px_and_over"]["named"] == 2 and point["under_32px"]["found"] == 0
    point = point_at(scenes, dets, 0.5)
    assert point["false_positives"] == 2 and point["fp_per_scene"] == 0.1
    assert point_at(scenes, dets, 0.3)["under_32px"]["recall_named"] == 1.0
    # At the operating threshold, the figures are operating_point's.
    assert {"fp_budget": 0.05, **point_at(scenes, dets, 0.7)} == operating_point(scenes, dets)


def test_operating_threshold_keeps_or_drops_equal_scores_together():
    # 20 scenes (1 allowed). 0.9 false, 0.8 true (a), and at 0.6 both a true one (b) and a false one. Keeping
    # 0.6 would make 2 false positives, so both 0.6 detections go: threshold 0.8, b missed.
    a, b = sign(10, 10, P1), sign(10, 10, M)
    scenes = [scene(a), scene(b), *lone_scenes(18)]
    dets = [[hit(a, 0.8), far(0.9, P1)], [hit(b, 0.6), far(0.6, M)], *[[]] * 18]
    point = operating_point(scenes, dets)
    assert point["threshold"] == 0.8 and point["false_positives"] == 1
    assert point["32px_and_over"]["found"] == 1 and point["32px_and_over"]["recall_found"] == 0.5


def test_operating_point_when_everything_is_false_or_empty():
    # 10 scenes allow 0.5 false positives: none. Every detection is false, so the threshold goes just above the
    # top score: nothing kept, the sign missed, no false positive.
    a = sign(10, 10, P1)
    scenes, dets = [scene(a), *lone_scenes(9)], [[far(0.9, P1), far(0.3, D, x=500)], *[[]] * 9]
    threshold = operating_threshold(scenes, dets)
    assert 0.9 < threshold <= 0.9 + 1e-12
    point = operating_point(scenes, dets)
    assert point["false_positives"] == 0 and point["32px_and_over"]["found"] == 0
    # Empty scenes and no detections: nothing to keep or find; threshold 0, recall unknown (None, not 0).
    point = operating_point(lone_scenes(3), [[]] * 3)
    assert point["threshold"] == 0.0 and point["fp_per_scene"] == 0.0
    assert point["under_32px"] == {"signs": 0, "found": 0, "named": 0, "misnamed": 0, "recall_found": None,
                                   "recall_named": None}
    assert operating_point([], [])["fp_per_scene"] is None
    with pytest.raises(ValueError, match="fp_budget"):
        operating_threshold([scene()], [[]], fp_budget=-0.1)


def test_a_misnamed_sign_is_found_not_named_and_no_false_positive():
    # A 40 px 30 km/h sign read as 50 km/h (0.9), a 20 px sign named (0.8), a 40 px sign named (0.7); no false
    # positive, so the threshold is the lowest score and every sign is found, one of the large ones misnamed.
    big, small, other = sign(10, 10, P1), sign(100, 10, D, w=20), sign(200, 10, M)
    scenes = [scene(big, small, other)]
    dets = [[hit(big, 0.9, class_id=2), hit(small, 0.8), hit(other, 0.7)]]
    point = evaluate_detections(scenes, dets)["operating_point"]
    assert point["threshold"] == 0.7 and point["false_positives"] == 0
    assert point["32px_and_over"] == {"signs": 2, "found": 2, "named": 1, "misnamed": 1, "recall_found": 1.0,
                                      "recall_named": 0.5}
    assert point["under_32px"]["recall_named"] == 1.0
    outcome = sign_outcomes(scenes, dets, 0.75)[0]
    assert outcome.signs == (MISNAMED, NAMED, MISSED) and outcome.false == (False, False)
