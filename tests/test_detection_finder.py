"""The sign finder: target encoding and decoding agree, the loss behaves, the network's shape and cost, and
load_finder/propose on a saved run. Training it is tests/test_detection_train.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from signlab.checkpoint import save_weights
from signlab.config import TrainConfig
from signlab.detection.boxes import CATEGORIES, box_iou
from signlab.detection.finder import SceneGraph, decode, encode_targets, finder_loss, load_finder, to_input
from signlab.errors import UserError
from signlab.models import count_macs, create_model, list_models, model_task
from signlab.models.detector import STRIDE


def test_the_finder_is_registered_as_a_detector():
    assert "signfinder" in list_models() and "signfinder" in list_models(task="detect")
    assert "signfinder" not in list_models(task="classify") and model_task("signfinder") == "detect"
    assert model_task("signnet") == "classify"


FOUR_STAGES = {"widths": (16, 24, 48, 96, 128), "blocks": (1, 2, 2, 2)}  # a stage at stride 32 too


@pytest.mark.parametrize("options, pad_to", [({}, 16), (FOUR_STAGES, 32)])
def test_maps_have_stride_4_and_any_size_works(options, pad_to):
    model = create_model("signfinder", **options).eval()
    assert model.pad_to == pad_to  # the coarsest stride: SceneGraph pads scenes to it
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 160, 256)).shape == (1, len(CATEGORIES) + 4, 40, 64)
        assert model(torch.zeros(2, 3, 100, 76)).shape == (2, len(CATEGORIES) + 4, 25, 19)


def test_a_stage_at_stride_32_widens_the_view_for_little_cost():
    """The fourth stage more than doubles how far a centre cell sees (the input pixels its maps depend on: ±83 px
    with three stages, ±179 with four) for an eighth more MACs on a whole scene."""
    reach = []
    for options in ({}, FOUR_STAGES):
        model = create_model("signfinder", **options).eval()
        x = torch.randn(1, 3, 640, 640, requires_grad=True)
        model(x)[0, :, 80, 80].sum().backward()  # the cell whose centre is pixel (322, 322)
        seen = torch.nonzero(x.grad[0].abs().sum(dim=(0, 1)) > 0).flatten()
        reach.append(int(seen.max() - seen.min() + 1))
    assert reach[0] < 180 and reach[1] > 2 * reach[0]
    three, four = (count_macs(create_model("signfinder", **o), (800, 1360)) for o in ({}, FOUR_STAGES))
    assert four < 1.15 * three


def test_the_default_finder_keeps_the_weights_layout_of_earlier_runs():
    """Runs trained before the stage count became an option must still load: three stages, three laterals,
    two merges."""
    keys = create_model("signfinder").state_dict().keys()
    modules = {".".join(k.split(".")[:2]) for k in keys if k.split(".")[0] in ("stages", "lateral", "merge")}
    assert modules == {"stages.0", "stages.1", "stages.2", "lateral.0", "lateral.1", "lateral.2", "merge.0",
                       "merge.1"}


@pytest.mark.parametrize("widths, blocks", [((16, 24, 48), (1, 2)), ((16, 24, 48, 96), (1, 2, 2, 2))])
def test_stage_counts_that_do_not_fit_are_refused(widths, blocks):
    with pytest.raises(UserError, match="block count for each stage"):
        create_model("signfinder", widths=widths, blocks=blocks)


def test_a_full_scene_costs_well_under_one_and_a_half_gmac():
    # 1360 x 800 is 7.4 crops of 384 x 384 worth of pixels; the network is fully convolutional
    per_crop = count_macs(create_model("signfinder"), image_size=384)
    per_scene = count_macs(create_model("signfinder"), image_size=(800, 1360))  # (H, W): a whole scene
    assert per_scene < 1.4e9
    assert per_scene == pytest.approx(per_crop * (1360 * 800) / (384 * 384), rel=1e-6)  # cost ∝ pixels


def sign_boxes() -> tuple[np.ndarray, np.ndarray]:
    boxes = np.array([[10, 20, 25, 35], [100, 40, 163, 103], [201, 3, 230, 40]], np.float32)  # 16, 64, 30x38 px
    return boxes, np.array([0, 2, 3])


def perfect_maps(boxes: np.ndarray, cats: np.ndarray, h: int, w: int) -> torch.Tensor:
    """The maps a perfect network would give: logits of the target heatmap, the target box values."""
    t = encode_targets([boxes], [cats], h, w)
    heat = t["heat"][0].clamp(1e-6, 1 - 1e-6)
    return torch.cat([torch.log(heat / (1 - heat)), t["box"][0]])


def test_encoding_then_decoding_gives_the_boxes_back():
    boxes, cats = sign_boxes()
    maps = perfect_maps(boxes, cats, 160 // STRIDE, 256 // STRIDE)
    found, scores, found_cats = decode(maps, threshold=0.5)
    assert len(found) == 3 and torch.allclose(scores, torch.ones(3), atol=1e-4)
    order = torch.argsort(found[:, 0])
    assert torch.allclose(found[order], torch.from_numpy(boxes), atol=1e-3)
    assert found_cats[order].tolist() == cats.tolist()


def test_targets_peak_once_per_sign_on_its_category():
    boxes, cats = sign_boxes()
    t = encode_targets([boxes, boxes[:0]], [cats, cats[:0]], 40, 64)
    assert t["heat"].shape == (2, 4, 40, 64) and t["mask"].eq(1).sum() == 3 and t["mask"].gt(0).sum() == 27
    assert [int(t["heat"][0, c].eq(1).sum()) for c in range(4)] == [1, 0, 1, 1]
    assert t["heat"][1].sum() == 0
    # the 16-px box's centre: x (10 + 25 + 1) / 2 = 18 px -> cell 4, offset 0.5; y 28 px -> cell 7, offset 0;
    # size log(16 px / 4) = log 4 cells
    expected = torch.tensor([np.log(4.0), np.log(4.0), 0.5, 0.0], dtype=torch.float32)
    assert torch.allclose(t["box"][0, :, 7, 4], expected)


def test_loss_is_smaller_for_the_right_maps_and_has_gradients():
    boxes, cats = sign_boxes()
    t = encode_targets([boxes], [cats], 40, 64)
    good = perfect_maps(boxes, cats, 40, 64)[None]
    blank = torch.cat([torch.full((1, 4, 40, 64), -4.6), torch.zeros(1, 4, 40, 64)], 1).requires_grad_()
    loss_good, _, box_good = finder_loss(good, t)
    loss_blank, heat_blank, _ = finder_loss(blank, t)
    assert loss_good < 0.1 * loss_blank and box_good < 1e-6 and heat_blank > 1
    loss_blank.backward()
    assert torch.isfinite(blank.grad).all() and blank.grad.abs().sum() > 0


def test_decode_keeps_only_scores_above_the_threshold_and_one_box_per_sign():
    boxes, cats = sign_boxes()
    maps = perfect_maps(boxes, cats, 40, 64)
    maps[1] = maps[0] - 0.5  # the first sign also peaks, lower, on a second category: NMS keeps one box
    found, scores, found_cats = decode(maps, threshold=0.5)
    assert len(found) == 3 and scores.tolist() == sorted(scores.tolist(), reverse=True)
    assert len(decode(maps, threshold=1.01)[0]) == 0


def test_load_finder_and_propose(tmp_path):
    torch.manual_seed(0)
    model = create_model("signfinder", widths=(8, 8, 16, 16), neck=8)
    cfg = TrainConfig(task="detect", model="signfinder", model_options={"widths": [8, 8, 16, 16], "neck": 8},
                      bf16="off")
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    save_weights(tmp_path / "last.safetensors", tensors, {"config": cfg.to_dict(), "task": "detect"})
    finder = load_finder(tmp_path, torch.device("cpu"))
    scene = np.random.default_rng(0).integers(0, 256, (150, 230, 3), dtype=np.uint8)  # not a multiple of 16
    boxes, scores, cats = finder.propose(scene, threshold=0.0)
    assert boxes.shape[1] == 4 and len(boxes) == len(scores) == len(cats) > 0
    assert cats.dtype == torch.long and bool((scores >= 0).all() and (scores <= 1).all())
    assert bool((boxes[:, 0::2] <= 229).all() and (boxes[:, 1::2] <= 149).all() and (boxes >= 0).all())
    assert not (box_iou(boxes, boxes) - torch.eye(len(boxes)) > 0.4).any()  # after NMS
    save_weights(tmp_path / "c.safetensors", tensors, {"config": TrainConfig().to_dict()})
    with pytest.raises(UserError, match="not a detection run"):
        load_finder(tmp_path / "c.safetensors", torch.device("cpu"))


@pytest.mark.parametrize("blocks", [(1, 1, 1), (1, 1, 1, 1)])  # coarsest stride 16, and 32
@pytest.mark.parametrize("width", [160, 150])  # a multiple of 16 and 32, and one the graph pads by 10
def test_mirror_averaging_averages_the_padded_scene_and_its_mirror(width, blocks):
    """SceneGraph(flip=True): the scene is padded first and the padded scene mirrored, so the views' cells line
    up; heat is the mean of their probabilities, log sizes their mean, offsets the unmirrored view's. Where no
    padding moves, a mirrored scene then gets the mirror of the scene's heat and sizes, which one view alone
    does not give."""
    torch.manual_seed(0)
    model = create_model("signfinder", widths=(8, 8, 16, 16, 16)[:len(blocks) + 1], blocks=blocks, neck=8).eval()
    graph = SceneGraph(model, flip=True)
    scene = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (1, 90, width, 3), dtype=np.uint8))
    c = len(CATEGORIES)
    with torch.no_grad():
        x = F.pad(to_input(scene), (0, -width % model.pad_to, 0, 6))  # (1, 3, 96, 160)
        one, other = model(x), model(x.flip(3)).flip(3)  # (1, C + 4, 24, 40) each
        both = graph(scene)
        both_of_mirror = graph(scene.flip(2))
    heat = (torch.sigmoid(one[:, :c]) + torch.sigmoid(other[:, :c])) / 2
    torch.testing.assert_close(torch.sigmoid(both[:, :c]), heat, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(both[:, c:c + 2], (one[:, c:c + 2] + other[:, c:c + 2]) / 2)
    torch.testing.assert_close(both[:, c + 2:], one[:, c + 2:])
    assert (one[:, :c + 2] - other[:, :c + 2]).abs().max() > 1e-2, "one view alone is not mirror-symmetric"
    if width % model.pad_to == 0:
        torch.testing.assert_close(both_of_mirror[:, :c + 2].flip(3), both[:, :c + 2], atol=1e-4, rtol=1e-4)
