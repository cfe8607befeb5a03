"""GTSDB scenes: layout, gt.txt parsing (.ppm and .jpg), bad lines, bad scene files, the split by blocks."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from signlab.detection.boxes import SignBox
from signlab.detection.scenes import MAX_SCENE_PIXELS, Scene, is_gtsdb_layout, load_scene, read_gtsdb, split_scenes
from signlab.errors import UserError

W, H = 64, 48


def make_scenes(root: Path, n: int, ext: str = "ppm") -> list[np.ndarray]:
    """n small noise scenes 00000.EXT ...; returns their pixels."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    pixels = []
    for i in range(n):
        a = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        Image.fromarray(a).save(root / f"{i:05d}.{ext}")
        pixels.append(a)
    return pixels


def bomb_png(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height pixels, with almost no data behind it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def test_a_good_folder_loads_every_scene_with_its_signs(tmp_path):
    make_scenes(tmp_path, 4, "ppm")
    (tmp_path / "gt.txt").write_text("00000.ppm;1;2;20;30;14\n00002.ppm;0;0;63;47;40\n00000.ppm;30;5;40;15;1\n")
    assert is_gtsdb_layout(tmp_path)
    scenes, skipped = read_gtsdb(tmp_path)
    assert skipped == []
    assert [s.path.name for s in scenes] == ["00000.ppm", "00001.ppm", "00002.ppm", "00003.ppm"]
    assert scenes[0].boxes == (SignBox(1, 2, 20, 30, 14), SignBox(30, 5, 40, 15, 1))
    assert scenes[1].boxes == () and scenes[3].boxes == ()  # scenes without signs are kept
    assert scenes[2].boxes == (SignBox(0, 0, W - 1, H - 1, 40),)  # inclusive corners: the whole scene fits


@pytest.mark.parametrize("files, named", [("jpg", "ppm"), ("ppm", "jpg"), ("png", "ppm")])
def test_gt_names_resolve_by_stem_whatever_the_extension(tmp_path, files, named):
    make_scenes(tmp_path, 2, files)
    (tmp_path / "gt.txt").write_text(f"00001.{named};3;4;10;12;38\n")
    scenes, skipped = read_gtsdb(tmp_path)
    assert skipped == []
    assert [s.path.name for s in scenes] == [f"00000.{files}", f"00001.{files}"]
    assert scenes[1].boxes == (SignBox(3, 4, 10, 12, 38),)


def test_every_kind_of_bad_line_is_skipped_with_its_reason_and_the_rest_load(tmp_path):
    make_scenes(tmp_path, 2, "jpg")
    (tmp_path / "gt.txt").write_text("\n".join([
        "00000.jpg;1;2;20;30;14",  # good
        "00000.jpg;1;2;20;30",  # too few fields
        "00000.jpg;a;2;20;30;14",  # not a number
        "00000.jpg;1;2;20;30;43",  # unknown class
        "00000.jpg;1;2;20;30;-1",  # unknown class
        "00001.jpg;5;5;64;20;1",  # right edge past the last column
        "00001.jpg;-1;5;10;20;1",  # left of the scene
        "00001.jpg;10;5;9;20;1",  # empty
        "00007.jpg;1;2;20;30;14",  # no such scene
        "",  # blank lines are not errors
        "00001.jpg;5;6;7;8;2",  # good, after all the bad ones
    ]) + "\n")
    scenes, skipped = read_gtsdb(tmp_path)
    assert [len(s.boxes) for s in scenes] == [1, 1]
    assert scenes[1].boxes == (SignBox(5, 6, 7, 8, 2),)
    why = [w for _, w in skipped]
    assert len(skipped) == 8
    assert "line 2: malformed" in why[0] and "line 3: malformed" in why[1]
    assert "line 4: unknown class 43" in why[2] and "unknown class -1" in why[3]
    assert "line 6: box" in why[4] and "outside the 64x48 scene" in why[4] and "outside" in why[5]
    assert "line 8: empty box" in why[6]
    assert "line 9: no scene 00007.jpg" in why[7] and skipped[7][0] == "00007.jpg"


def test_a_folder_without_gt_or_scenes_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="no such folder"):
        read_gtsdb(tmp_path / "nope")
    make_scenes(tmp_path, 1)
    assert not is_gtsdb_layout(tmp_path)
    with pytest.raises(UserError, match=f"{tmp_path}: no gt.txt here; a GTSDB folder holds"):
        read_gtsdb(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "gt.txt").write_text("00000.jpg;1;2;3;4;5\n")
    assert not is_gtsdb_layout(empty)
    with pytest.raises(UserError, match=f"{empty}: no scene images"):
        read_gtsdb(empty)


def test_load_scene_gives_rgb_uint8_for_ppm_jpg_and_png(tmp_path):
    pixels = make_scenes(tmp_path, 1, "ppm")[0]
    a = load_scene(tmp_path / "00000.ppm")
    assert a.shape == (H, W, 3) and a.dtype == np.uint8 and np.array_equal(a, pixels)
    Image.fromarray(pixels).save(tmp_path / "00001.png")
    assert np.array_equal(load_scene(tmp_path / "00001.png"), pixels)
    Image.fromarray(pixels).convert("L").save(tmp_path / "grey.jpg")
    assert load_scene(tmp_path / "grey.jpg").shape == (H, W, 3)


def test_bad_scene_files_are_a_user_error_naming_the_file(tmp_path):
    make_scenes(tmp_path, 1, "jpg")
    data = (tmp_path / "00000.jpg").read_bytes()
    cases = {"truncated.jpg": data[: len(data) // 2], "text.jpg": b"this is not an image", "empty.ppm": b""}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(UserError, match=f"{tmp_path / name}: (unreadable|not an image)"):
            load_scene(tmp_path / name)
    with pytest.raises(UserError, match="no such scene file"):
        load_scene(tmp_path / "missing.jpg")


@pytest.mark.parametrize("pixels", [MAX_SCENE_PIXELS + 1, 200_000_000])  # ours, and past Pillow's own limit
def test_a_decompression_bomb_is_refused_naming_the_file(tmp_path, pixels):
    bomb = tmp_path / "00000.png"
    bomb_png(bomb, 10_000, pixels // 10_000 + 1)
    with pytest.raises(UserError, match=f"{bomb}: scene too large"):
        load_scene(bomb)
    make_scenes(tmp_path, 2, "ppm")  # 00000.ppm and 00001.ppm beside it; the .png bomb stands for 00002
    bomb.rename(tmp_path / "00002.png")
    (tmp_path / "gt.txt").write_text("00002.ppm;1;1;5;5;1\n00001.ppm;1;1;5;5;1\n")
    scenes, skipped = read_gtsdb(tmp_path)  # the bomb is listed, not decoded, and its signs skipped
    assert [s.path.name for s in scenes] == ["00000.ppm", "00001.ppm"] and len(scenes[1].boxes) == 1
    assert skipped[0][0] == "00002.png" and "decompression bomb" in skipped[0][1]
    assert skipped[1] == ("00002.ppm", "gt.txt line 1: its scene is unreadable")


def test_a_scene_that_is_not_an_image_is_listed_and_its_lines_skipped(tmp_path):
    make_scenes(tmp_path, 2, "jpg")
    (tmp_path / "00001.jpg").write_bytes(b"garbage")
    (tmp_path / "gt.txt").write_text("00001.jpg;1;1;5;5;1\n00000.jpg;1;1;5;5;1\n")
    scenes, skipped = read_gtsdb(tmp_path)
    assert [s.path.name for s in scenes] == ["00000.jpg"]
    assert skipped == [("00001.jpg", "unreadable scene: not an image"),
                       ("00001.jpg", "gt.txt line 1: its scene is unreadable")]


def test_boxes_are_checked_against_the_upright_scene(tmp_path):
    make_scenes(tmp_path, 1, "jpg")
    im = Image.open(tmp_path / "00000.jpg")
    exif = im.getexif()
    exif[0x0112] = 6  # stored sideways: shown rotated, W and H swap
    im.save(tmp_path / "00000.jpg", exif=exif)
    assert load_scene(tmp_path / "00000.jpg").shape == (W, H, 3)
    (tmp_path / "gt.txt").write_text(f"00000.jpg;0;0;{H - 1};{W - 1};1\n00000.jpg;0;0;{W - 1};{H - 1};1\n")
    scenes, skipped = read_gtsdb(tmp_path)
    assert len(scenes[0].boxes) == 1 and "outside the 48x64 scene" in skipped[0][1]


def scenes_named(n: int) -> list[Scene]:
    return [Scene(Path(f"{i:05d}.jpg"), ()) for i in range(n)]


def test_split_holds_out_whole_blocks_deterministically(tmp_path):
    scenes = scenes_named(100)[::-1]  # any order in, sorted by name out
    train, val = split_scenes(scenes, 0.2, seed=3, block=10)
    assert (train, val) == split_scenes(scenes, 0.2, seed=3, block=10)
    assert len(val) == 20 and len(train) == 80
    names = {s.path.name for s in train}
    assert names.isdisjoint(s.path.name for s in val) and len(names | {s.path.name for s in val}) == 100
    held = sorted(int(s.path.stem) for s in val)
    assert len({i // 10 for i in held}) == 2
    for i in held:  # every block is held out whole
        assert set(range(i // 10 * 10, i // 10 * 10 + 10)) <= set(held)
    splits = {tuple(s.path.name for s in split_scenes(scenes, 0.2, seed=k, block=10)[1]) for k in range(6)}
    assert len(splits) > 1  # the seed chooses the blocks


def test_split_keeps_both_sides_non_empty(tmp_path):
    for n, fraction in [(40, 0.01), (40, 0.99), (25, 0.1), (5, 0.5), (2, 0.1)]:
        train, val = split_scenes(scenes_named(n), fraction, seed=0)
        assert train and val and len(train) + len(val) == n, (n, fraction)
    assert split_scenes(scenes_named(1), 0.5, seed=0) == (scenes_named(1), [])
    assert split_scenes(scenes_named(30), 0.0, seed=0) == (scenes_named(30), [])
    with pytest.raises(UserError, match="--val-fraction 1.0: must be in"):
        split_scenes(scenes_named(30), 1.0, seed=0)
