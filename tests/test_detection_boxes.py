import pytest
import torch

from signlab.detection.boxes import CATEGORIES, Detection, SignBox, box_iou, category_of, nms


def test_categories_follow_the_benchmark():
    counts = {c: sum(category_of(i) == c for i in range(43)) for c in CATEGORIES}
    assert counts == {"prohibitory": 12, "mandatory": 8, "danger": 15, "other": 8}
    assert category_of(14) == "other" and category_of(17) == "other"  # Stop and No entry are not ranked
    with pytest.raises(ValueError):
        category_of(43)


def test_iou_of_inclusive_pixel_boxes_by_hand():
    a = torch.tensor([[0.0, 0.0, 9.0, 9.0]])  # 10 x 10 pixels
    b = torch.tensor([[5.0, 0.0, 14.0, 9.0], [20.0, 20.0, 29.0, 29.0], [0.0, 0.0, 9.0, 9.0]])
    # overlap 5 x 10 = 50 of a union of 150
    assert torch.allclose(box_iou(a, b), torch.tensor([[50 / 150, 0.0, 1.0]]))


def test_nms_keeps_the_best_of_each_cluster():
    boxes = torch.tensor([[0.0, 0, 9, 9], [1, 1, 10, 10], [50, 50, 59, 59], [0, 0, 9, 9]])
    scores = torch.tensor([0.5, 0.9, 0.3, 0.4])
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]
    assert nms(boxes, scores, 1.0).tolist() == [1, 0, 3, 2]
    assert nms(boxes[:0], scores[:0], 0.5).tolist() == []


def test_sign_box_size_and_detection_json():
    assert SignBox(10, 20, 41, 51, 14).width == 32
    d = Detection(1.0, 2.0, 33.0, 34.0, 14, 0.97)
    assert d.to_json() == {"box": [1.0, 2.0, 33.0, 34.0], "class_id": 14, "name": "Stop", "category": "other",
                           "score": 0.97}
