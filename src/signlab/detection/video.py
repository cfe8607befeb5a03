"""Video: detect in every frame, follow each sign from frame to frame, write an annotated video and a CSV.

    VIDEO --PyAV decode--> frames --SignDetector.detect--> detections per frame
          --IouTracker--> one track id per sign --vote--> one label per track
          --> OUT/NAME.detections.csv (one row per detection and frame) and OUT/NAME.annotated.mp4

Tracking is simple on purpose: a detection joins the live track whose last box overlaps it most (greedy, by
IoU, at least `iou_threshold`), or starts a new track; a track unseen for more than `max_missed` frames ends.
A track's label is the score-weighted vote of its frames' classes, so a sign that the classifier calls Stop in
nine frames and something else in one is Stop in all ten, in the CSV and the video alike: the video is
therefore written in a second decoding pass, once every track's vote is in.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from signlab.classes import GTSRB_CLASS_NAMES
from signlab.detection.boxes import Detection, box_iou, category_of
from signlab.detection.draw import draw_boxes
from signlab.errors import UserError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm")
CSV_COLUMNS = ("frame", "time_s", "track_id", "x1", "y1", "x2", "y2", "class_id", "name", "score")
MAX_FRAME_PIXELS = 40_000_000  # as for still scenes: a larger frame is refused (decompression bomb)
ENCODERS = ("libx264", "mpeg4")  # H.264 where PyAV's FFmpeg has it, else MPEG-4 Part 2 (in every build)


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


# ---------------------------------------------------------------- tracking


@dataclass
class Track:
    track_id: int
    box: tuple[float, float, float, float]  # its latest box
    last_frame: int
    first_frame: int
    votes: dict[int, float] = field(default_factory=dict)  # class id -> summed detection scores
    frames: int = 0
    best_score: float = 0.0

    def add(self, frame: int, detection: Detection) -> None:
        self.box = (detection.x1, detection.y1, detection.x2, detection.y2)
        self.last_frame, self.frames = frame, self.frames + 1
        self.votes[detection.class_id] = self.votes.get(detection.class_id, 0.0) + detection.score
        self.best_score = max(self.best_score, detection.score)

    @property
    def class_id(self) -> int:
        """The score-weighted vote over its frames; ties go to the lower class id, so the answer is stable."""
        return max(sorted(self.votes), key=lambda c: self.votes[c])


class IouTracker:
    """Greedy IoU association between consecutive frames; track ids count from 1."""

    def __init__(self, iou_threshold: float = 0.3, max_missed: int = 5) -> None:
        self.iou_threshold, self.max_missed = iou_threshold, max_missed
        self.tracks: list[Track] = []

    def update(self, frame: int, detections: list[Detection]) -> list[int]:
        """The track id of each detection of this frame, in order."""
        live = [t for t in self.tracks if frame - t.last_frame - 1 <= self.max_missed]  # frames missed so far
        ids = [0] * len(detections)
        if live and detections:
            iou = box_iou(torch.tensor([d_box(d) for d in detections], dtype=torch.float64),
                          torch.tensor([t.box for t in live], dtype=torch.float64))  # (D, T)
            pairs = sorted(((float(iou[d, t]), d, t) for d in range(len(detections)) for t in range(len(live))
                            if iou[d, t] >= self.iou_threshold), reverse=True)
            taken: set[int] = set()
            for _, d, t in pairs:
                if ids[d] or t in taken:
                    continue
                ids[d] = live[t].track_id
                taken.add(t)
                live[t].add(frame, detections[d])
        for d, detection in enumerate(detections):
            if not ids[d]:
                track = Track(len(self.tracks) + 1, d_box(detection), frame, frame)
                track.add(frame, detection)
                self.tracks.append(track)
                ids[d] = track.track_id
        return ids

    def labels(self) -> dict[int, int]:
        """Track id -> its voted class id."""
        return {t.track_id: t.class_id for t in self.tracks}


def d_box(d: Detection) -> tuple[float, float, float, float]:
    return (d.x1, d.y1, d.x2, d.y2)


# ---------------------------------------------------------------- decoding and encoding (PyAV)


@dataclass
class FrameReader:
    """Decodes a video's frames as (number, time stamp in s, (H, W, 3) uint8 RGB). Packets that fail to decode
    are skipped and counted (`skipped`). Frames are numbered as decoded, so frame n of the CSV is frame n of
    the annotated video; the time stamp places it in the source."""

    path: Path
    skipped: int = 0
    ended_early: str | None = None  # why reading stopped before the end of the file, if it did

    def __iter__(self) -> Iterator[tuple[int, float, np.ndarray]]:
        import av

        self.skipped, self.ended_early = 0, None
        with open_video(self.path) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 25)
            number = 0
            packets = container.demux(stream)
            while True:
                try:
                    packet = next(packets)
                except StopIteration:
                    return
                except av.FFmpegError as e:  # the container itself is broken from here on
                    self.ended_early = str(e)
                    return
                try:
                    frames = packet.decode()
                except av.FFmpegError:
                    self.skipped += 1
                    continue
                for frame in frames:
                    time_s = float(frame.time) if frame.time is not None else number / fps
                    yield number, time_s, frame.to_ndarray(format="rgb24")
                    number += 1


def open_video(path: Path):
    """An opened PyAV container with a video stream of sane size, or a UserError naming the file."""
    import av

    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as e:
        raise UserError(f"{path}: not a video signlab can read ({e}); replace or remove it") from None
    if not container.streams.video:
        container.close()
        raise UserError(f"{path}: holds no video stream; give a video file or an image")
    stream = container.streams.video[0]
    if stream.width * stream.height > MAX_FRAME_PIXELS:
        container.close()
        raise UserError(f"{path}: frames too large ({stream.width}x{stream.height} is over {MAX_FRAME_PIXELS:,} "
                        "pixels, refused as a possible decompression bomb)")
    stream.thread_type = "AUTO"
    return container


def frame_rate(path: Path) -> Fraction:
    with open_video(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
    return Fraction(rate) if rate else Fraction(25)


class VideoWriter:
    """Writes RGB frames to an .mp4, H.264 where available (else MPEG-4), cropped to even sides (yuv420p)."""

    def __init__(self, path: Path, width: int, height: int, fps: Fraction) -> None:
        import av

        self.container = av.open(str(path), "w")
        codec = next(c for c in ENCODERS if c in av.codecs_available)
        self.stream = self.container.add_stream(codec, rate=fps)
        self.width, self.height = width - width % 2, height - height % 2
        self.stream.width, self.stream.height, self.stream.pix_fmt = self.width, self.height, "yuv420p"
        if codec == "mpeg4":
            self.stream.bit_rate = 4_000_000  # its default (200 kb/s) smears the boxes' labels

    def write(self, rgb: np.ndarray) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[: self.height, : self.width]), format="rgb24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()


# ---------------------------------------------------------------- the whole video


@dataclass
class Row:
    frame: int
    time_s: float
    track_id: int
    detection: Detection


def detect_video(detector, path: Path, out_stem: Path, threshold: float,
                 warn: Callable[[str], object] = print, iou_threshold: float = 0.3, max_missed: int = 5) -> dict:
    """Detect and track in every frame of `path`; write OUT_STEM.annotated.mp4 and OUT_STEM.detections.csv.

    Returns the object `signlab detect --json` prints for a video. Unreadable frames are skipped, counted and
    reported in one line through `warn`; a file that is no video at all is a UserError."""
    reader = FrameReader(path)
    tracker = IouTracker(iou_threshold, max_missed)
    rows: list[Row] = []
    width = height = frames = 0
    for index, time_s, rgb in reader:
        height, width = rgb.shape[:2]
        frames += 1
        detections = detector.detect(rgb, threshold)
        rows += [Row(index, time_s, tid, d) for tid, d in zip(tracker.update(index, detections), detections,
                                                              strict=True)]
    if reader.skipped:
        warn(f"{path}: {reader.skipped} unreadable frame{'s' if reader.skipped > 1 else ''} skipped")
    if reader.ended_early:
        warn(f"{path}: reading stopped early after {frames} frames ({reader.ended_early})")
    if frames == 0:
        raise UserError(f"{path}: no frame could be decoded; replace or remove it")
    labels = tracker.labels()
    csv_path, video_path = Path(f"{out_stem}.detections.csv"), Path(f"{out_stem}.annotated.mp4")
    write_csv(csv_path, rows, labels)
    write_annotated(path, video_path, rows, labels)
    return {"path": str(path), "width": width, "height": height, "frames": frames, "skipped_frames": reader.skipped,
            "video": str(video_path), "csv": str(csv_path),
            "tracks": [{"track_id": t.track_id, "class_id": t.class_id, "name": GTSRB_CLASS_NAMES[t.class_id],
                        "category": category_of(t.class_id), "first_frame": t.first_frame,
                        "last_frame": t.last_frame, "frames": t.frames, "score": round(t.best_score, 4)}
                       for t in tracker.tracks]}


def write_csv(path: Path, rows: list[Row], labels: dict[int, int]) -> None:
    try:
        with open(path, "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(CSV_COLUMNS)
            for r in rows:
                d, class_id = r.detection, labels[r.track_id]
                out.writerow([r.frame, f"{r.time_s:.3f}", r.track_id, *(round(v, 1) for v in d_box(d)), class_id,
                              GTSRB_CLASS_NAMES[class_id], f"{d.score:.4f}"])
    except OSError as e:
        raise UserError(f"{path}: cannot write it ({e.strerror or e}); choose another --out") from None


def write_annotated(source: Path, target: Path, rows: list[Row], labels: dict[int, int]) -> None:
    """Decode `source` again and write each frame with its tracks' boxes, ids and voted names."""
    import av

    by_frame: dict[int, list[Row]] = {}
    for r in rows:
        by_frame.setdefault(r.frame, []).append(r)
    writer = None
    try:
        for index, _, rgb in FrameReader(source):
            if writer is None:
                writer = VideoWriter(target, rgb.shape[1], rgb.shape[0], frame_rate(source))
            boxes = [(d_box(r.detection), f"#{r.track_id} {GTSRB_CLASS_NAMES[labels[r.track_id]]}",
                      category_of(labels[r.track_id])) for r in by_frame.get(index, [])]
            writer.write(draw_boxes(rgb, boxes) if boxes else rgb)
    except (OSError, av.FFmpegError) as e:
        raise UserError(f"{target}: cannot write it ({e.strerror or e}); choose another --out") from None
    finally:
        if writer is not None:
            writer.close()
