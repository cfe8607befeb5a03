"""Synthetic GTSDB scenes: the layout read_gtsdb reads, same bytes for a seed, boxes on the pasted signs, CLI."""

from __future__ import annotations

import numpy as np
import pytest

from signlab.cli import main
from signlab.detection.scenes import is_gtsdb_layout, load_scene, read_gtsdb
from signlab.detection.synthetic import write_synthetic_scenes
from signlab.errors import UserError

SIZE = (160, 96)
PX = (12, 40)


def files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_scenes_are_a_gtsdb_folder_with_boxes_inside_and_apart(tmp_path):
    out = write_synthetic_scenes(tmp_path / "s", 6, seed=0, size=SIZE, signs=(1, 4), sign_px=PX, classes=[1, 14, 38])
    assert out == tmp_path / "s" and is_gtsdb_layout(out)
    scenes, skipped = read_gtsdb(out)
    assert skipped == [] and [s.path.name for s in scenes] == [f"{i:05d}.jpg" for i in range(6)]
    assert sum(len(s.boxes) for s in scenes) >= 6
    for s in scenes:
        assert load_scene(s.path).shape == (SIZE[1], SIZE[0], 3)
        for i, b in enumerate(s.boxes):
            assert b.class_id in (1, 14, 38) and 0 <= b.x1 <= b.x2 < SIZE[0] and 0 <= b.y1 <= b.y2 < SIZE[1]
            assert 6 <= b.width <= 1.5 * PX[1] and 6 <= b.height <= 1.5 * PX[1]
            for o in s.boxes[i + 1:]:  # signs never overlap
                assert b.x2 < o.x1 or o.x2 < b.x1 or b.y2 < o.y1 or o.y2 < b.y1


def test_the_same_seed_writes_the_same_bytes(tmp_path):
    a = write_synthetic_scenes(tmp_path / "a", 3, seed=5, size=SIZE, sign_px=PX)
    b = write_synthetic_scenes(tmp_path / "b", 3, seed=5, size=SIZE, sign_px=PX)
    c = write_synthetic_scenes(tmp_path / "c", 3, seed=6, size=SIZE, sign_px=PX)
    assert files(a) == files(b)
    assert files(a)["00000.jpg"] != files(c)["00000.jpg"]


def test_gt_boxes_cover_the_pasted_signs(tmp_path):
    # Background, clutter, distractors and sensor noise draw from their own streams: the same scene without
    # signs differs from it only where signs (and their posts) were pasted.
    kw = dict(seed=3, size=SIZE, sign_px=(16, 40), image_format="png")
    signed = write_synthetic_scenes(tmp_path / "signs", 5, signs=(3, 3), **kw)
    bare = write_synthetic_scenes(tmp_path / "bare", 5, signs=(0, 0), **kw)
    assert read_gtsdb(bare)[0][0].boxes == () and (bare / "gt.txt").read_text() == ""
    covered = 0
    for scene in read_gtsdb(signed)[0]:
        diff = np.abs(load_scene(scene.path).astype(int) - load_scene(bare / scene.path.name).astype(int)).sum(-1)
        for b in scene.boxes:
            box = diff[int(b.y1):int(b.y2) + 1, int(b.x1):int(b.x2) + 1]
            assert (box > 24).mean() > 0.4, b  # most of the box is sign
            assert (diff[int(b.y1) + 1:int(b.y2), int(b.x1) + 1:int(b.x2)] > 0).any()
            covered += 1
        column = np.zeros(diff.shape, bool)  # posts run up or down from a sign, plates hang below it, and a
        for b in scene.boxes:  # blurred sign has a faint halo of a pixel or two
            column[:, max(0, int(b.x1) - 4):int(b.x2) + 5] = True
        assert not (diff[~column] > 0).any()  # nothing else changed: no sign left unboxed
    assert covered >= 10


def test_ppm_and_png_scenes_read_back(tmp_path):
    for fmt in ("ppm", "png"):
        out = write_synthetic_scenes(tmp_path / fmt, 2, size=SIZE, sign_px=PX, image_format=fmt)
        scenes, skipped = read_gtsdb(out)
        assert skipped == [] and [s.path.suffix for s in scenes] == [f".{fmt}"] * 2


def test_sign_free_scenes_hold_sign_coloured_distractors(tmp_path):
    out = write_synthetic_scenes(tmp_path / "d", 8, seed=1, size=SIZE, signs=(0, 0), sign_px=(20, 40),
                                 image_format="png")
    strong = 0
    for s in read_gtsdb(out)[0]:
        a = load_scene(s.path).astype(int)
        r, g, b = a[..., 0], a[..., 1], a[..., 2]
        strong += int(((r - np.maximum(g, b) > 60) | (b - np.maximum(r, g) > 60)).sum() > 30)
    assert strong >= 3  # red or blue blobs that are no sign: colour alone does not find signs


@pytest.mark.parametrize("kwargs, message", [
    (dict(count=0), "--scenes 0: must be at least 1"),
    (dict(count=1, size=(20, 100)), "--scene-size 20x100"),
    (dict(count=1, classes=[50]), "--classes 50"),
    (dict(count=1, image_format="gif"), "image format 'gif'"),
    (dict(count=1, signs=(3, 1)), "signs (3, 1)"),
    (dict(count=1, sign_px=(4, 10)), "sign_px (4, 10)"),
])
def test_bad_arguments_are_user_errors(tmp_path, kwargs, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        write_synthetic_scenes(tmp_path / "x", **kwargs)


def test_a_folder_with_files_is_refused(tmp_path):
    (tmp_path / "old.txt").write_text("keep me")
    with pytest.raises(UserError, match="already holds files"):
        write_synthetic_scenes(tmp_path, 1, size=SIZE)


def test_cli_writes_scenes_end_to_end(tmp_path, capsys):
    out = tmp_path / "scenes"
    assert main(["synth", str(out), "--scenes", "3", "--seed", "2", "--scene-size", "160x96", "--classes", "14"]) == 0
    assert "wrote 3 scenes of 160x96" in capsys.readouterr().out
    scenes, skipped = read_gtsdb(out)
    assert len(scenes) == 3 and skipped == [] and all(b.class_id == 14 for s in scenes for b in s.boxes)
    again = write_synthetic_scenes(tmp_path / "api", 3, seed=2, size=(160, 96), classes=[14])
    assert files(out) == files(again)  # the CLI is the API with the same defaults
    assert main(["synth", str(tmp_path / "x"), "--scene-size", "160x96", "--per-class", "2"]) == 2
    assert "--scene-size is for --scenes N" in capsys.readouterr().err


def test_texture_takes_a_kind():
    from signlab.synth.scene import TEXTURES, texture

    for kind in TEXTURES:
        assert texture(np.random.default_rng(0), 24, 16, kind).size == (24, 16)
    with pytest.raises(ValueError, match="unknown texture 'lava'"):
        texture(np.random.default_rng(0), 24, 16, "lava")
