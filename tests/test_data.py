import csv
import os

import numpy as np
import pytest
from conftest import make_folders, make_gtsrb_test, make_gtsrb_train
from PIL import Image

from signlab import data
from signlab.data import channel_stats, decode_image, load_images, split_indices, to_rgb_array
from signlab.errors import UserError
from signlab.layouts import detect_layout


def test_training_layout_from_root_images_and_class_folder(gtsrb_train):
    for root in (gtsrb_train, gtsrb_train / "Images"):
        ds = load_images(root)
        assert ds.layout == "gtsrb-train"
        assert ds.images.shape == (36, 32, 32, 3) and ds.images.dtype == np.uint8
        assert sorted(set(ds.labels.tolist())) == [0, 1, 2]
        assert len(set(ds.tracks.tolist())) == 9  # 3 tracks per class, unique across classes
    one = load_images(gtsrb_train / "Images" / "00001")
    assert set(one.labels.tolist()) == {1} and len(one) == 12


def test_roi_crop_hits_the_sign(gtsrb_train):
    ds = load_images(gtsrb_train)
    red = ds.images[ds.labels == 0].reshape(-1, 3).mean(0)
    assert red[0] > 150 and red[1] < 90  # the crop is the red square, not the grey frame
    full = load_images(gtsrb_train, crop="full").images[ds.labels == 0].reshape(-1, 3).mean(0)
    assert full[0] < red[0]  # the full frame mixes in the grey border


def _one_sign_dataset(root, img: np.ndarray, csv_size: tuple[int, int], roi: tuple[int, int, int, int]):
    """GTSRB's training layout holding one image and its CSV row (Width, Height and ROI as given)."""
    folder = root / "Images" / "00000"
    folder.mkdir(parents=True)
    Image.fromarray(img).save(folder / "00000_00000.ppm")
    with open(folder / "GT-00000.csv", "w", newline="") as f:
        writer = csv.writer(f, delimiter=";")
        writer.writerow(["Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId"])
        writer.writerow(["00000_00000.ppm", *csv_size, *roi, 0])
    return root


def test_roi_x2_y2_are_the_last_column_and_row_of_the_sign(tmp_path):
    """Roi.X2/Roi.Y2 are inclusive: the sign ends with column X2 and row Y2 (docs/roi.md measures this on
    GTSRB's 39,209 rows). A box of exactly the output size crops to its own pixels, none more, none less."""
    w, h, roi = 20, 16, (4, 3, 11, 10)  # the sign: columns 4..11, rows 3..10 (8 x 8)
    x1, y1, x2, y2 = roi
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 2] = 255  # a blue frame: any frame pixel in the crop shows
    cols, rows = np.meshgrid(np.arange(x2 - x1 + 1), np.arange(y2 - y1 + 1))
    img[y1:y2 + 1, x1:x2 + 1, 0] = 10 + 30 * cols  # every sign pixel differs from its neighbours
    img[y1:y2 + 1, x1:x2 + 1, 1] = 10 + 30 * rows
    img[y1:y2 + 1, x1:x2 + 1, 2] = 0
    sign = img[y1:y2 + 1, x1:x2 + 1]
    ds = load_images(_one_sign_dataset(tmp_path / "plain", img, (w, h), roi), size=8, cache=False)
    np.testing.assert_array_equal(ds.images[0], sign)
    # A copy stored at twice the size (pixels doubled) with the CSV's original numbers: the box scales to
    # columns 8..23 and rows 6..21, so a 16 x 16 crop is the doubled sign exactly.
    doubled = img.repeat(2, axis=0).repeat(2, axis=1)
    ds = load_images(_one_sign_dataset(tmp_path / "doubled", doubled, (w, h), roi), size=16, cache=False)
    np.testing.assert_array_equal(ds.images[0], sign.repeat(2, axis=0).repeat(2, axis=1))


def test_resized_copy_scales_the_roi(tmp_path):
    original = load_images(make_gtsrb_train(tmp_path / "orig"))
    resized = load_images(make_gtsrb_train(tmp_path / "small", stored_size=32))
    diff = np.abs(original.images.astype(int) - resized.images.astype(int)).mean()
    assert diff < 12, diff  # same crops up to resampling blur
    unscaled = np.abs(original.images.astype(int) - load_images(tmp_path / "small", crop="full").images).mean()
    assert diff < unscaled


@pytest.mark.parametrize("csv_inside", [True, False])
def test_test_layout(tmp_path, csv_inside):
    root = make_gtsrb_test(tmp_path / "test", csv_inside=csv_inside)
    for path in (root, root / "Images"):
        ds = load_images(path)
        assert ds.layout == "gtsrb-test" and len(ds) == 12
        assert (ds.tracks == -1).all()
        assert ds.labels.tolist() == [i % 3 for i in range(12)]


def test_folder_layout(tmp_path):
    ds = load_images(make_folders(tmp_path / "pets"))
    assert ds.layout == "folders" and ds.class_names == ["cat", "dog"] and len(ds) == 12
    assert ds.counts().tolist() == [6, 6] and (ds.tracks == -1).all()
    dog = ds.images[ds.labels == 1].reshape(-1, 3).mean(0)  # sign_image's class 1 is green
    assert dog[1] > 150 and dog[0] < 90


def test_split_keeps_tracks_whole_and_is_seeded(tmp_path):
    ds = load_images(make_gtsrb_train(tmp_path / "g", tracks=10, frames=2))
    train, val = split_indices(ds, 0.2, seed=3)
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == len(ds)
    assert not set(ds.tracks[train].tolist()) & set(ds.tracks[val].tolist())
    assert sorted(set(ds.labels[val].tolist())) == [0, 1, 2]  # stratified: 2 tracks of each class
    assert len(val) == 3 * 2 * 2
    again = split_indices(ds, 0.2, seed=3)[1]
    other = split_indices(ds, 0.2, seed=4)[1]
    assert (again == val).all() and not np.array_equal(other, val)


def test_split_without_tracks_is_stratified(tmp_path):
    ds = load_images(make_folders(tmp_path / "pets", per_class=10))
    train, val = split_indices(ds, 0.2, seed=0)
    assert np.bincount(ds.labels[val]).tolist() == [2, 2]


def test_second_load_reads_the_cache(gtsrb_train):
    first = load_images(gtsrb_train)
    before = data.DECODE_COUNTER["images"]
    ds = load_images(gtsrb_train)
    assert data.DECODE_COUNTER["images"] == before and len(ds) == 36
    assert np.array_equal(ds.images, first.images) and np.array_equal(ds.labels, first.labels)
    assert np.array_equal(ds.tracks, first.tracks) and ds.paths == first.paths
    changed = gtsrb_train / "Images" / "00000" / "00000_00000.ppm"  # a changed file invalidates the cache
    st = os.stat(changed)
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    load_images(gtsrb_train)
    assert data.DECODE_COUNTER["images"] == before + 36


def test_channel_stats_match_numpy():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(50, 8, 8, 3), dtype=np.uint8)
    mean, std = channel_stats(images)
    ref = images.reshape(-1, 3) / 255.0
    np.testing.assert_allclose(mean, ref.mean(0), rtol=1e-5)
    np.testing.assert_allclose(std, ref.std(0), rtol=1e-4)
    # Known answer: half the pixels black, half white in R; G all 51 (0.2); B all white.
    halves = np.zeros((2, 4, 4, 3), np.uint8)
    halves[1, ..., 0] = 255
    halves[..., 1], halves[..., 2] = 51, 255
    mean, std = channel_stats(halves)
    np.testing.assert_allclose(mean, [0.5, 0.2, 1.0], atol=1e-6)
    np.testing.assert_allclose(std, [0.5, 0.0, 0.0], atol=1e-5)


# (mode, grey value the 128-grey image decodes to); P and 1 dither 128 into two levels that average to it.
MODES = [("RGBA", 128), ("L", 128), ("P", None), ("I;16", 155), ("LA", 128), ("CMYK", 128), ("1", None)]


@pytest.mark.parametrize(("mode", "grey"), MODES)
def test_any_mode_becomes_rgb(tmp_path, mode, grey):
    rgb = Image.fromarray(np.full((20, 24, 3), 128, np.uint8))
    # 16 bit: 40000 of 65535 is 155.6 of 255
    im = Image.fromarray(np.full((20, 24), 40000, np.uint16)) if mode == "I;16" else rgb.convert(mode)
    path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    im.save(path)
    arr, reason = decode_image(path, 32)
    assert reason == "" and arr.shape == (32, 32, 3) and arr.dtype == np.uint8
    direct = to_rgb_array(im)
    assert direct.shape == (20, 24, 3) and (direct == direct[..., :1]).all()  # grey stays grey
    if grey is None:
        assert len(np.unique(direct)) == 2 and abs(direct.mean() - 128) < 3
    else:
        assert (direct == grey).all() and (arr == grey).all()


def test_transparent_pixels_become_white():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200  # red ...
    rgba[:2, ..., 3] = 255  # ... opaque in the top half, transparent below
    out = to_rgb_array(Image.fromarray(rgba, "RGBA"))
    assert (out[:2] == [200, 0, 0]).all() and (out[2:] == 255).all()


def test_missing_folder_and_empty_dataset(tmp_path):
    with pytest.raises(UserError, match="no such folder"):
        detect_layout(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images found"):
        load_images(tmp_path / "empty")


def test_csv_with_missing_columns(gtsrb_train):
    csv_path = gtsrb_train / "Images" / "00000" / "GT-00000.csv"
    lines = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join(";".join(line.split(";")[:1] + line.split(";")[7:]) for line in lines) + "\n")
    with pytest.raises(UserError, match=r"GT-00000.csv: missing column\(s\) Width, Height"):
        load_images(gtsrb_train)
