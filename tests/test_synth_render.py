"""The sign renderer and the synthetic dataset writer: ROIs, sizes, determinism, the layout, each effect.

A stand-in draws the signs (a coloured disc with the class id), so these tests do not depend on the real
pictograms and stay fast."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from signlab.cli import main
from signlab.data import load_images
from signlab.errors import UserError
from signlab.synth import dataset as synth_dataset
from signlab.synth.dataset import track_lengths, write_dataset
from signlab.synth.render import EFFECTS, RenderParams, fade_sign, render_variant, track_sides

PLAIN = RenderParams().only()  # the sign on a background, nothing else


def stand_in(class_id: int, size: int = 256) -> Image.Image:
    """A disc touching the square's edges, its colour and number telling the class."""
    im = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    d.ellipse((0, 0, size - 1, size - 1), fill=(200 - 4 * class_id, 30 + 5 * class_id, 40, 255))
    d.ellipse((size // 8, size // 8, size - 1 - size // 8, size - 1 - size // 8), fill=(235, 235, 230, 255))
    d.text((size / 2, size / 2), str(class_id), fill=(20, 20, 20, 255), anchor="mm", font_size=size // 3)
    return im


def read_rows(root: Path) -> list[tuple[Path, list[int]]]:
    rows = []
    for csv_path in sorted((root / "Images").glob("*/GT-*.csv")):
        with open(csv_path, newline="") as fh:
            for r in list(csv.reader(fh, delimiter=";"))[1:]:
                rows.append((csv_path.parent / r[0], [int(v) for v in r[1:]]))
    return rows


def test_roi_frames_the_sign_with_gtsrb_margins():
    black = np.zeros((300, 300, 3), np.uint8)  # every non-black pixel is the sign's
    params = RenderParams(scene_p=1.0).only("perspective", "rotation")
    for i in range(40):
        img, (x1, y1, x2, y2) = render_variant(stand_in(3), np.random.default_rng(i), params, black)
        ys, xs = np.nonzero(img.max(-1))
        assert x1 <= xs.min() <= x1 + 1 and y1 <= ys.min() <= y1 + 1  # inside, and tight: the box's edge
        assert x2 - 1 <= xs.max() <= x2 and y2 - 1 <= ys.max() <= y2  # rows may hold under 1/255 of the sign
        h, w = img.shape[:2]
        assert x1 >= 5 and y1 >= 5 and w - 1 - x2 >= 4 and h - 1 - y2 >= 4
        assert x1 <= max(6, round(0.1 * (x2 - x1 + 1)) + 1)  # GTSRB: 10 % of the sign, at least 5 px


def test_written_rois_and_sizes_span_the_range(tmp_path):
    write_dataset(tmp_path / "a", 40, classes=[0, 1], params=PLAIN, size_range=(20, 60), draw=stand_in)
    write_dataset(tmp_path / "b", 10, classes=[2], params=PLAIN, size_range=(120, 180), draw=stand_in)
    sides = {"a": [], "b": []}
    for part in sides:
        for path, (w, h, x1, y1, x2, y2, _) in read_rows(tmp_path / part):
            assert Image.open(path).size == (w, h) and 5 <= x1 < x2 < w and 5 <= y1 < y2 < h
            sides[part].append(x2 - x1 + 1)  # upright discs: the ROI's width is the side (+1 px of edge)
    assert 20 <= min(sides["a"]) <= 22 and 56 <= max(sides["a"]) <= 61
    assert 120 <= min(sides["b"]) and max(sides["b"]) <= 181


def test_track_sides_grow_and_follow_gtsrb():
    g = np.random.default_rng(0)
    tracks = [track_sides(g, 10, RenderParams()) for _ in range(300)]
    assert all(t == sorted(t) and 15 <= t[0] and t[-1] <= 250 for t in tracks)
    everything = np.concatenate(tracks)
    assert 28 <= np.median(everything) <= 42 and np.percentile(everything, 90) < 100  # GTSRB: 34 and 69 px
    assert all(15 <= track_sides(g, 1, RenderParams())[0] <= 250 for _ in range(200))


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    def files(folder: Path) -> dict[str, bytes]:
        return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

    kwargs = {"per_class": 12, "classes": [0, 5], "draw": stand_in}
    a = files(write_dataset(tmp_path / "a", seed=7, **kwargs))
    assert a == files(write_dataset(tmp_path / "b", seed=7, workers=2, **kwargs))  # processes change nothing
    c = files(write_dataset(tmp_path / "c", seed=8, **kwargs))
    assert a.keys() == c.keys() and sum(a[k] != c[k] for k in a) >= len(a) - 2  # CSVs may repeat nothing else


def test_load_images_and_info_read_the_written_set(tmp_path, capsys):
    write_dataset(tmp_path, 14, classes=[2, 9, 40], draw=stand_in)
    assert track_lengths(14) == [4, 4, 3, 3]
    ds = load_images(tmp_path)
    assert ds.layout == "gtsrb-train" and len(ds) == 42
    assert ds.counts()[[2, 9, 40]].tolist() == [14, 14, 14] and ds.counts().sum() == 42
    assert len(set(ds.tracks.tolist())) == 12 and ds.images.shape[1:] == (32, 32, 3)
    assert main(["info", str(tmp_path)]) == 0
    assert "12 tracks" in capsys.readouterr().out


def test_cli_synth_writes_and_says_what_next(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(synth_dataset, "_default_draw", stand_in)
    assert main(["synth", str(tmp_path / "s"), "--per-class", "3", "--classes", "4,1", "--workers", "1"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == f"next: signlab train --data {tmp_path / 's'}"
    assert sorted(p.name for p in (tmp_path / "s" / "Images").iterdir()) == ["00001", "00004"]
    for bad in (["--per-class", "0"], ["--classes", "0,43", "--per-class", "2"], ["--seed", "-1", "--per-class", "1"],
                [], ["--per-class", "2", "--backgrounds", str(tmp_path / "none")]):
        assert main(["synth", str(tmp_path / "t"), *bad]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert main(["synth", str(tmp_path / "s"), "--per-class", "1", "--workers", "1"]) == 2  # not empty


@pytest.mark.parametrize("effect", EFFECTS)
def test_each_effect_changes_the_image_only_when_on(effect):
    sign = stand_in(7)
    for seed in range(3):
        plain, roi = render_variant(sign, np.random.default_rng(seed), PLAIN)
        on, _ = render_variant(sign, np.random.default_rng(seed), PLAIN.forced(effect))
        off, _ = render_variant(sign, np.random.default_rng(seed), PLAIN.forced(effect).without(effect))
        assert not np.array_equal(plain, on), f"{effect} forced on changed nothing (seed {seed})"
        assert np.array_equal(plain, off)
        every = RenderParams().forced(*EFFECTS)
        a, roi_a = render_variant(sign, np.random.default_rng(seed), every)
        b, roi_b = render_variant(sign, np.random.default_rng(seed), every.without(effect))
        assert not np.array_equal(a, b), f"{effect} turned off among the others changed nothing (seed {seed})"
        if effect not in ("perspective", "rotation"):  # each effect draws from its own stream: geometry stays
            assert roi_a == roi_b


def test_groups_and_unknown_names():
    assert RenderParams().without("blur").motion_blur_p == 0 and RenderParams().without("blur").defocus_blur_p == 0
    assert RenderParams().only("noise").noise_p == RenderParams().noise_p and RenderParams().only("noise").fade_p == 0
    with pytest.raises(ValueError, match="unknown effect 'blurr'"):
        RenderParams().without("blurr")


def test_fading_turns_red_pink_or_orange():
    red = Image.new("RGBA", (32, 32), (190, 25, 30, 255))
    faded = np.asarray(fade_sign(red, np.random.default_rng(0), 1.0))[..., :3].reshape(-1, 3).mean(0)
    assert faded[1] / faded[0] > 0.45 and faded[0] - faded[1] > 30  # was 0.13: lighter, yet not grey


def test_backgrounds_from_a_user_folder(tmp_path):
    scenes = tmp_path / "scenes"
    (scenes / "sub").mkdir(parents=True)
    g = np.random.default_rng(0)
    for i, folder in enumerate((scenes, scenes, scenes / "sub")):
        magenta = np.stack([g.integers(200, 256, (90, 160)), g.integers(0, 30, (90, 160)),
                            g.integers(200, 256, (90, 160))], -1).astype(np.uint8)
        Image.fromarray(magenta).save(folder / f"scene{i}.png")
    for scene_p, expect in ((1.0, True), (0.0, False)):
        out = write_dataset(tmp_path / f"out{scene_p}", 4, classes=[0], params=RenderParams(scene_p=scene_p).only(),
                            backgrounds=scenes, draw=stand_in)
        corners = np.concatenate([np.asarray(Image.open(p))[[0, 0, -1, -1], [0, -1, 0, -1]] for p, _ in read_rows(out)])
        corners = corners.astype(int)  # all four: the frame never reaches past the rendered canvas
        is_magenta = (corners[:, 0] > 150) & (corners[:, 1] < 80) & (corners[:, 2] > 150)
        assert is_magenta.all() == expect and (is_magenta.any() == expect)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images found"):
        write_dataset(tmp_path / "x", 1, backgrounds=tmp_path / "empty", draw=stand_in)


def test_synth_imports_without_torch():
    code = "import sys, signlab.synth.render, signlab.synth.dataset; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
