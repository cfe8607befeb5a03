"""Video in and out (signlab.detection.video): a short video the test writes with PyAV, a sign moving across it,
found by a stand-in finder and named by a tiny classifier; and the tracker on hand-made detections."""

import csv
import json

import numpy as np
import pytest
from conftest import RedFinder, draw_sign_scene, make_detection_run

from signlab.classes import GTSRB_CLASS_NAMES
from signlab.cli import main
from signlab.detection import detect as detect_module
from signlab.detection.boxes import Detection
from signlab.detection.video import CSV_COLUMNS, FrameReader, IouTracker, VideoWriter

av = pytest.importorskip("av")

FRAMES, WIDTH, HEIGHT, FPS = 24, 160, 96, 12


def write_video(path, frames=FRAMES):
    """A sign of radius 12 moving 3 px a frame to the right (a tracked sign overlaps itself frame to frame)."""
    from fractions import Fraction

    writer = VideoWriter(path, WIDTH, HEIGHT, Fraction(FPS))
    for i in range(frames):
        writer.write(draw_sign_scene(WIDTH, HEIGHT, (30 + 3 * i, 48), 12, seed=i))
    writer.close()
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("video") / "drive.mp4")


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setattr(detect_module, "load_run_finder", lambda run, device, flip=False: RedFinder())
    return make_detection_run(tmp_path / "run")


def test_video_gives_a_csv_row_per_detection_and_frame_with_one_track(run, video, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["detect", str(run), str(video), "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)[0]
    assert (result["frames"], result["skipped_frames"], result["width"], result["height"]) == (FRAMES, 0, WIDTH, HEIGHT)
    with open(out / "drive.detections.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [int(r["frame"]) for r in rows] == list(range(FRAMES))  # the sign is found in every frame
    assert [float(r["time_s"]) for r in rows] == pytest.approx([i / FPS for i in range(FRAMES)], abs=1e-3)
    assert {r["track_id"] for r in rows} == {"1"}  # one sign, one identity
    assert len({(r["class_id"], r["name"]) for r in rows}) == 1  # and one label
    assert rows[0]["name"] == GTSRB_CLASS_NAMES[int(rows[0]["class_id"])]
    x1 = [float(r["x1"]) for r in rows]
    assert x1 == sorted(x1) and x1[-1] - x1[0] > 50  # it moved right across the frames
    assert [t["track_id"] for t in result["tracks"]] == [1] and result["tracks"][0]["frames"] == FRAMES
    decoded = list(FrameReader(out / "drive.annotated.mp4"))  # the annotated video decodes, frame for frame
    assert len(decoded) == FRAMES and decoded[0][2].shape == (HEIGHT, WIDTH, 3)
    original = list(FrameReader(video))
    assert np.abs(decoded[5][2].astype(int) - original[5][2]).mean() > 0.5  # with boxes drawn on it


def test_a_track_votes_its_label_and_ends_after_a_gap():
    tracker = IouTracker(iou_threshold=0.3, max_missed=2)

    def sign(x, class_id, score):
        return Detection(x, 10, x + 20, 30, class_id, score)

    ids = []
    for frame in range(6):  # the classifier says 14 mostly, 13 once, with more confidence then
        flicker = frame == 2
        ids.append(tracker.update(frame, [sign(2 * frame, 13 if flicker else 14, 0.95 if flicker else 0.7),
                                          sign(200, 1, 0.8)]))
    assert ids == [[1, 2]] * 6
    assert tracker.labels() == {1: 14, 2: 1}  # 5 x 0.7 outweighs 0.95
    assert tracker.update(9, [sign(10, 14, 0.9)]) == [3]  # 3 frames unseen > max_missed: a new sign
    assert tracker.update(11, [sign(11, 14, 0.9)]) == [3]  # 1 frame unseen: the same one
    assert tracker.update(12, [sign(100, 14, 0.9)]) == [4]  # no overlap: another sign


def test_bad_videos_are_named_and_the_rest_goes_on(run, video, tmp_path, capsys):
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is no video at all")
    scene = tmp_path / "scene.png"
    from PIL import Image

    Image.fromarray(draw_sign_scene(WIDTH, HEIGHT, (50, 40), 12)).save(scene)
    code = main(["detect", str(run), str(tmp_path / "broken.mp4"), str(scene), str(video), "--json"])
    out = capsys.readouterr()
    assert code == 2 and [r["path"] for r in json.loads(out.out)] == [str(scene)]
    errors = out.err.strip().splitlines()
    assert len(errors) == 2 and "broken.mp4" in errors[0] and "needs --out" in errors[1]


def test_unreadable_frames_are_skipped_and_counted(run, tmp_path, capsys):
    damaged = write_video(tmp_path / "damaged.mp4")
    with av.open(str(damaged)) as container:
        packets = [(p.pos, p.size) for p in container.demux(container.streams.video[0]) if p.size]
    data = bytearray(damaged.read_bytes())
    pos, size = packets[8]
    data[pos:pos + size] = bytes(size)  # one frame's data zeroed in the middle of the file
    damaged.write_bytes(bytes(data))
    code = main(["detect", str(run), str(damaged), "--out", str(tmp_path / "out"), "--json"])
    out = capsys.readouterr()
    result = json.loads(out.out)[0]
    assert code == 0 and (result["frames"], result["skipped_frames"]) == (FRAMES - 1, 1)
    assert out.err.strip().splitlines() == [f"signlab detect: {damaged}: 1 unreadable frame skipped"]
    with open(tmp_path / "out" / "damaged.detections.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["frame"]) for r in rows] == list(range(FRAMES - 1))  # numbered as the annotated video's
    times = [round(float(r["time_s"]) * FPS) for r in rows]
    assert len(set(range(FRAMES)) - set(times)) == 1  # while the time stamps show which one is missing
    assert {r["track_id"] for r in rows} == {"1"}
    assert len(list(FrameReader(tmp_path / "out" / "damaged.annotated.mp4"))) == FRAMES - 1
