"""Copy-paste augmentation: the sign bank (GTSRB crops masked by their shape, or the drawn signs), the shapes,
pasting (deterministic, boxes where the pixels changed, inside the crop, clear of other signs) and the flags."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import PALETTE, make_gtsrb_train, write_tiny_classifier

from signlab.api import train
from signlab.cli import main
from signlab.detection.boxes import CATEGORIES, category_of
from signlab.detection.paste import MARGIN, drawn_bank, gtsrb_bank, load_bank, paste_signs, shape_mask
from signlab.errors import UserError
from signlab.synth.pictograms import SIGN_SHAPES


@pytest.fixture(scope="module")
def bank():
    return drawn_bank()


@pytest.mark.parametrize("shape, fill", [("circle", math.pi / 4), ("triangle", 0.5), ("inverted_triangle", 0.5),
                                         ("diamond", 0.5), ("octagon", 1 - 2 / (2 + math.sqrt(2)) ** 2)])
def test_shape_masks_cover_their_share_of_the_box(shape, fill):
    mask = shape_mask(shape, 64, 64)
    assert mask.shape == (64, 64) and mask.min() == 0 and mask.max() == 1
    assert abs(float(mask.mean()) - fill) < 0.01
    assert ((mask > 0) & (mask < 1)).sum() < 4 * 64 * 1.5  # anti-aliased over about a pixel, not blurred


def test_each_class_has_its_outline():
    assert [SIGN_SHAPES[c] for c in (1, 11, 12, 13, 14, 25, 32, 38, 42)] == [
        "circle", "triangle", "diamond", "inverted_triangle", "octagon", "triangle", "circle", "circle", "circle"]
    down, up = shape_mask("inverted_triangle", 40, 40), shape_mask("triangle", 40, 40)
    assert down[:4].sum() > 5 * down[-4:].sum()  # yield points down: wide at the top
    assert up[-4:].sum() > 5 * up[:4].sum()
    assert np.array_equal(down, up[::-1])


def test_a_gtsrb_bank_crops_each_scaled_roi_and_masks_it_by_the_class_shape(tmp_path):
    """The stored images are 32 x 32, the CSV's 40-46 x 44-50: the ROI is scaled by stored size / CSV size.
    Per class the picks spread over the tracks, the largest (last) frames first."""
    root = make_gtsrb_train(tmp_path / "gtsrb", classes=(1, 13, 14), tracks=3, frames=4, stored_size=32)
    bank = gtsrb_bank(root, per_class=5, seed=0)
    assert bank.class_ids.tolist() == [1] * 5 + [13] * 5 + [14] * 5
    assert bank.describe(0.5) == f"paste: 15 signs of 3 classes from {root} (p=0.5)"
    sizes = [p.shape[:2] for p in bank.patches[:5]]
    assert sizes[:3] == [(26, 25)] * 3 and sizes[3:] == [(25, 25)] * 2  # frame 3 of each track, then frame 2
    for patch, class_id in zip(bank.patches, bank.class_ids, strict=True):
        inside = patch[..., 3] == 255
        colour = np.median(patch[inside][:, :3], axis=0)  # the sign's colour, not the grey around the ROI
        assert np.abs(colour - PALETTE[class_id % len(PALETTE)]).max() <= 12
        expected = shape_mask(SIGN_SHAPES[int(class_id)], patch.shape[1], patch.shape[0])
        assert np.abs(patch[..., 3] / 255 - expected).max() < 0.01
    assert bank.categories.tolist() == [CATEGORIES.index(category_of(int(c))) for c in bank.class_ids]
    again = gtsrb_bank(root, per_class=5, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(bank.patches, again.patches, strict=True))


def test_the_drawn_bank_holds_every_class_cut_to_the_sign(bank):
    assert len(bank) == 3 * 43 and sorted(set(bank.class_ids.tolist())) == list(range(43))
    for patch in bank.patches:
        alpha = patch[..., 3]
        assert alpha[0].max() >= 64 and alpha[-1].max() >= 64 and alpha[:, 0].max() >= 64 and alpha[:, -1].max() >= 64


def scene_crop(seed: int, size: int = 160) -> np.ndarray:
    g = np.random.default_rng(seed)
    return np.clip(np.linspace(40, 200, size)[:, None, None] + g.normal(0, 3, (size, size, 3)), 0, 255
                   ).astype(np.uint8)


def test_pasting_is_deterministic_and_its_boxes_lie_where_the_pixels_changed(bank):
    held = np.array([[20, 30, 59, 69]], np.float32)
    partly = np.array([[-20, 100, 9, 129]], np.float32)  # a sign whose centre is outside the crop
    pasted = 0
    for seed in range(12):
        crop = scene_crop(seed)
        out, boxes, cats = paste_signs(crop.copy(), held, np.array([0]), bank, np.random.default_rng(seed),
                                       taken=partly)
        again = paste_signs(crop.copy(), held, np.array([0]), bank, np.random.default_rng(seed), taken=partly)
        assert np.array_equal(out, again[0]) and np.array_equal(boxes, again[1]) and np.array_equal(cats, again[2])
        assert boxes.dtype == np.float32 and cats.dtype == np.int64 and len(boxes) == len(cats)
        assert np.array_equal(boxes[:1], held) and cats[0] == 0 and out.shape == crop.shape
        new = boxes[1:]
        pasted += len(new)
        assert (new[:, :2] >= 0).all() and (new[:, 2:] <= 159).all() and (new[:, 2:] - new[:, :2] >= 3).all()
        others = np.concatenate([held, partly, new])
        for i, (x1, y1, x2, y2) in enumerate(new):
            for j, (a1, b1, a2, b2) in enumerate(others):
                if j != i + 2:
                    assert x2 < a1 or a2 < x1 or y2 < b1 or b2 < y1, (new, others)
        changed = np.abs(out.astype(int) - crop).max(2) > 0  # (S, S)
        near = np.zeros_like(changed)
        for x1, y1, x2, y2 in new.astype(int):
            near[max(0, y1 - MARGIN):y2 + MARGIN + 1, max(0, x1 - MARGIN):x2 + MARGIN + 1] = True
            cy, cx = (y1 + y2) // 2, (x1 + x2) // 2
            assert changed[cy - 1:cy + 2, cx - 1:cx + 2].any()  # the sign is there
        assert not (changed & ~near).any()
        assert {int(c) for c in cats[1:]} <= set(range(len(CATEGORIES)))
    assert pasted >= 12
    other = paste_signs(scene_crop(0), held, np.array([0]), bank, np.random.default_rng(99))
    assert not np.array_equal(other[0], paste_signs(scene_crop(0), held, np.array([0]), bank,
                                                    np.random.default_rng(0))[0])


def test_a_dark_scene_gets_darker_signs_on_average(bank):
    def mean_of_signs(level: int) -> float:
        values = []
        for seed in range(10):
            crop = np.full((128, 128, 3), level, np.uint8)
            out, boxes, _ = paste_signs(crop, np.zeros((0, 4), np.float32), np.zeros(0, np.int64), bank,
                                        np.random.default_rng(seed))
            values += [out[int(b[1]) + 2:int(b[3]) - 1, int(b[0]) + 2:int(b[2]) - 1].mean() for b in boxes]
        return float(np.mean(values))

    assert mean_of_signs(20) < 0.8 * mean_of_signs(200)


@pytest.mark.parametrize("make", ["missing", "empty", "folders"])
def test_a_bad_paste_from_folder_is_one_line(tmp_path, capsys, make):
    folder = tmp_path / "signs"
    if make != "missing":
        folder.mkdir()
    if make == "folders":
        (folder / "a").mkdir()
        (folder / "a" / "x.png").write_bytes(b"not a png")
    code = main(["train", "--task", "detect", "--data", str(tmp_path), "--classifier", str(tmp_path), "--paste",
                 "0.5", "--paste-from", str(folder), "--out", str(tmp_path / "run"), "--threads", "1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--paste-from" in err and str(folder) in err, err
    assert "GTSRB training folder" in err and not (tmp_path / "run").exists()


def test_a_classify_run_takes_no_paste_flags(tmp_path):
    root = make_gtsrb_train(tmp_path / "gtsrb", classes=(0, 1), tracks=2, frames=2)
    with pytest.raises(UserError, match="--paste: pastes signs into detection scenes"):
        train(root, paste=0.5, out=str(tmp_path / "run"), epochs=1)
    with pytest.raises(UserError, match="--paste-from: "):
        train(root, paste_from=str(root), out=str(tmp_path / "run"), epochs=1)
    with pytest.raises(UserError, match="pastes nothing at --paste 0; give --paste P too"):
        train(root, task="detect", paste=0, paste_from=str(root), classifier=str(root), out=str(tmp_path / "run"))
    with pytest.raises(UserError, match=r"--paste 1.5: must be in \[0, 1\]"):
        train(root, task="detect", paste=1.5, out=str(tmp_path / "run"))


def test_without_paste_from_the_signs_come_from_the_classifiers_training_folder(tmp_path):
    """The detect presets paste; without --paste-from the bank is the GTSRB folder the classifier trained on,
    recorded in the config. A classifier of the drawn signs (no folder) leaves it unset: drawn signs. --paste-from
    drawn asks for the drawn signs whatever the classifier learned from."""
    from signlab.config import resolve_train_config

    gtsrb = make_gtsrb_train(tmp_path / "gtsrb", classes=(0, 1), tracks=2, frames=2)
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    lines: list[str] = []

    def resolve(classifier, **flags):
        given = {"task": "detect", "data": str(scenes), "classifier": str(classifier), **flags}
        return resolve_train_config(given, log=lines.append)

    real = write_tiny_classifier(tmp_path / "real.safetensors", data=gtsrb)
    cfg = resolve(real)
    assert cfg.paste == 0.5 and cfg.paste_from == str(gtsrb.resolve())
    assert lines == [f"paste: signs from {gtsrb.resolve()}, the classifier's training folder (--paste-from overrides)"]
    assert resolve(real, paste=0.0).paste_from is None  # not pasting: no folder either
    assert resolve(real, paste_from=str(tmp_path)).paste_from == str(tmp_path.resolve())
    assert resolve(write_tiny_classifier(tmp_path / "drawn.safetensors")).paste_from is None
    lines.clear()
    assert resolve(real, paste_from="drawn").paste_from == "drawn" and lines == []  # a name, not a folder here
    assert load_bank("drawn").source == load_bank(None).source == "signlab's drawn signs"
    assert load_bank(str(gtsrb)).source == str(gtsrb)


def test_make_batch_pastes_only_when_asked(bank):
    """paste 0 draws nothing, so a run without pasting is the crops it was; paste 1 adds signs to the targets."""
    from signlab.detection.train import SceneSet, make_batch

    scenes = SceneSet([scene_crop(i, 200) for i in range(4)], [np.array([[50, 60, 79, 89]], np.float32)] * 4,
                      [np.array([1])] * 4)
    idx = np.arange(4)
    plain = make_batch(scenes, idx, 96, np.random.default_rng(5))
    off = make_batch(scenes, idx, 96, np.random.default_rng(5), 0.0, bank)
    on = make_batch(scenes, idx, 96, np.random.default_rng(5), 1.0, bank)
    assert torch.equal(plain[0], off[0]) and all(torch.equal(plain[1][k], off[1][k]) for k in plain[1])
    assert not torch.equal(plain[0], on[0])
    assert (on[1]["heat"] == 1).sum() > (plain[1]["heat"] == 1).sum()  # one 1 at each sign's centre
