"""Evaluation report of a detector: metrics.json, precision-recall curves, recall by sign size, and a gallery
of the scenes with the most errors, true and predicted boxes drawn on them.

The figures are drawn on a bare Agg canvas (no pyplot, as signlab.report_plots); the gallery with Pillow, at
the scenes' own pixels before shrinking, so a 16 px sign's box and name still show.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from signlab.classes import GTSRB_CLASS_NAMES
from signlab.detection.boxes import RANKED_CATEGORIES, Detection, SignBox
from signlab.detection.draw import draw_tag, label_font
from signlab.detection.metrics import SceneMatch, match_scenes, recall_by_width

SIZE_BINS = (16, 24, 32, 48, 64, 128)  # px of sign width: GTSDB's signs are 16 to 128 px wide
WORST_SCENES = 8
_DPI = 110
_TRUE, _RIGHT, _WRONG = (40, 200, 60), (40, 110, 255), (235, 40, 40)  # green, blue, red
_TILE_W = 680  # px of one gallery scene: half a GTSDB scene's width
_COLUMNS = 2
_LABEL_CHARS = 24


def write_detection_report(out_dir: Path | str, scenes: Sequence, detections: Sequence[Sequence[Detection]],
                           metrics: dict, worst: int = WORST_SCENES) -> list[Path]:
    """Write metrics.json, pr_curves.png, recall_by_size.png and worst_scenes.png into out_dir; their paths.

    metrics is evaluate_detections' dict for these scenes and detections; its score_threshold decides which
    detections count as made (recall, errors, the gallery's boxes); recall by size is drawn at its
    operating_point's threshold too. Scenes are read from scene.path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    matches = match_scenes(scenes, detections, metrics.get("score_threshold", 0.5))
    metrics_path = out / "metrics.json"
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    return [
        metrics_path,
        plot_pr_curves(metrics, out / "pr_curves.png"),
        plot_recall_by_size(scenes, size_series(scenes, detections, metrics), out / "recall_by_size.png"),
        draw_worst_scenes(scenes, matches, out / "worst_scenes.png", worst),
    ]


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)  # attaches an Agg canvas; pyplot is never involved
    fig.savefig(path, dpi=_DPI, facecolor="white")
    return path


def plot_pr_curves(metrics: dict, path: Path) -> Path:
    """One precision-recall curve per ranked category, its AP at IoU 0.5 in the legend."""
    fig = Figure(figsize=(6, 4.6), layout="constrained")
    ax = fig.add_subplot()
    for category in RANKED_CATEGORIES:
        curve = metrics["pr_curves"].get(category, {"precision": [], "recall": []})
        ap = metrics["ap50"].get(category)
        if ap is None:  # no sign of the category: an entry in the legend says so, rather than a silent gap
            ax.plot([], [], label=f"{category}: no signs")
            continue
        ax.plot(curve["recall"], curve["precision"], linewidth=2, drawstyle="steps-post",
                label=f"{category}: AP50 {ap:.3f}")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision (interpolated, COCO's 101 points)")
    ax.grid(color="0.9")
    ax.legend(loc="lower left")
    headline = metrics.get("map50_categories")
    title = "Precision-recall at IoU 0.5 per category"
    fig.suptitle(title + (f" (mAP {headline:.3f})" if headline is not None else ""), fontsize=11)
    return _save(fig, path)


def size_series(scenes: Sequence, detections: Sequence[Sequence[Detection]], metrics: dict,
                edges: Sequence[float] = SIZE_BINS) -> dict[str, list[dict]]:
    """The recall-by-size plot's bars: recall_by_width's bins at the default threshold and, where metrics has
    one, at the operating point; keyed by the legend's label."""
    threshold = metrics.get("score_threshold", 0.5)
    series = {f"score >= {threshold:g}": recall_by_width(scenes, match_scenes(scenes, detections, threshold), edges)}
    point = metrics.get("operating_point")
    if point is not None:
        # filtered here: the operating threshold may lie just above 1 (nothing kept), past match_scenes' range
        kept = [[d for d in found if d.score >= point["threshold"]] for found in detections]
        label = f"operating point: score >= {point['threshold']:.3f}, <= {point['fp_budget']:g} FP/scene"
        series[label] = recall_by_width(scenes, match_scenes(scenes, kept, 0.0), edges)
    return series


def plot_recall_by_size(scenes: Sequence, series: dict[str, list[dict]], path: Path) -> Path:
    """Recall (class must be right, IoU 0.5) of the signs in each width bin, one bar per threshold in series
    (size_series), each with its found/signs count."""
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.add_subplot()
    first = next(iter(series.values()))
    labels = [f"{b['min_px']}-{b['max_px']}" for b in first]
    width = 0.8 / len(series)
    for k, (name, bins) in enumerate(series.items()):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(bins))]
        bars = ax.bar(xs, [b["recall"] or 0.0 for b in bins], width, label=name)
        for bar, b in zip(bars, bins, strict=True):
            text = f"{b['found']}/{b['signs']}" if b["signs"] else "none"
            ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                        xytext=(0, 2), textcoords="offset points", fontsize=7)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylim(0, 1.2)
    ax.set_xlabel("sign width (px)")
    ax.set_ylabel("recall, found and named")
    ax.legend(loc="upper left", fontsize=8)
    outside = sum(len(scene.boxes) for scene in scenes) - sum(b["signs"] for b in first)
    note = f"; {outside} signs outside {first[0]['min_px']}-{first[-1]['max_px']} px not shown" if outside else ""
    fig.suptitle(f"Recall by sign size{note}", fontsize=10)
    return _save(fig, path)


def _label(class_id: int, score: float | None = None) -> str:
    name = GTSRB_CLASS_NAMES[class_id]
    name = name if len(name) <= _LABEL_CHARS else name[: _LABEL_CHARS - 1].rstrip() + "…"
    return f"{class_id} {name}" + (f" {score:.2f}" if score is not None else "")


def _read_scene(path: Path) -> Image.Image | None:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def draw_scene(scene, match: SceneMatch) -> Image.Image:
    """The scene with its signs (green) and kept detections (blue right, red wrong), named, at full size;
    a grey stand-in naming the file where it cannot be read."""
    image = _read_scene(Path(scene.path))
    if image is None:
        image = Image.new("RGB", (1360, 800), (90, 90, 90))
        ImageDraw.Draw(image).text((20, 20), f"cannot read {scene.path}", fill=(255, 255, 255), font=label_font(28))
    draw = ImageDraw.Draw(image)
    width = max(2, round(image.width / 450))  # about 1.5 px once the tile is shrunk to half a GTSDB scene
    font = label_font(max(12, round(image.width / 60)))
    sign: SignBox
    for sign in scene.boxes:
        draw.rectangle((sign.x1, sign.y1, sign.x2, sign.y2), outline=_TRUE, width=width)
        draw_tag(draw, image.size, sign.x1, sign.y1 - 2, sign.y2 + 2, _label(sign.class_id), _TRUE, font)
    for d, right in zip(match.detections, match.right, strict=True):
        colour = _RIGHT if right else _WRONG
        draw.rectangle((d.x1, d.y1, d.x2, d.y2), outline=colour, width=width)
        draw_tag(draw, image.size, d.x1, d.y1 - 2, d.y2 + 2, _label(d.class_id, d.score), colour, font,
                 below=True)
    return image


def _caption(scene, match: SceneMatch, width: int) -> Image.Image:
    strip = Image.new("RGB", (width, 30), (255, 255, 255))
    text = (f"{Path(scene.path).name}: {match.misses} of {len(match.found)} signs missed, "
            f"{match.wrong} of {len(match.detections)} detections wrong")
    ImageDraw.Draw(strip).text((6, 6), text, fill=(0, 0, 0), font=label_font(16))
    return strip


def worst_scenes(matches: Sequence[SceneMatch], worst: int = WORST_SCENES) -> list[int]:
    """Indices of up to `worst` scenes with errors, most errors first, ties in scene order."""
    order = sorted(range(len(matches)), key=lambda i: -matches[i].errors)  # sorted is stable
    return [i for i in order[:worst] if matches[i].errors > 0]


def draw_worst_scenes(scenes: Sequence, matches: Sequence[SceneMatch], path: Path,
                      worst: int = WORST_SCENES) -> Path:
    """Gallery of the `worst` scenes with the most errors (misses + wrong detections), most first; a one-line
    image saying so when no scene has an error."""
    chosen = worst_scenes(matches, worst)
    if not chosen:
        image = Image.new("RGB", (_TILE_W, 60), (255, 255, 255))
        ImageDraw.Draw(image).text((10, 20), "no scene has an error: every sign found, no wrong detection",
                                   fill=(0, 0, 0), font=label_font(16))
        image.save(path)
        return path
    tiles = []
    for i in chosen:
        drawn = draw_scene(scenes[i], matches[i])
        height = max(1, round(drawn.height * _TILE_W / drawn.width))
        drawn = drawn.resize((_TILE_W, height), Image.Resampling.LANCZOS)
        tile = Image.new("RGB", (_TILE_W, height + 30), (255, 255, 255))
        tile.paste(_caption(scenes[i], matches[i], _TILE_W), (0, 0))
        tile.paste(drawn, (0, 30))
        tiles.append(tile)
    cols = min(_COLUMNS, len(tiles))
    rows = math.ceil(len(tiles) / cols)
    row_h = max(t.height for t in tiles)
    header = 36
    sheet = Image.new("RGB", (cols * (_TILE_W + 8) + 8, header + rows * (row_h + 8)), (255, 255, 255))
    ImageDraw.Draw(sheet).text(
        (8, 8), f"The {len(tiles)} scenes with the most errors. Green: signs; blue: right detections; red: wrong",
        fill=(0, 0, 0), font=label_font(18))
    for slot, tile in enumerate(tiles):
        r, c = divmod(slot, cols)
        sheet.paste(tile, (8 + c * (_TILE_W + 8), header + r * (row_h + 8)))
    sheet.save(path)
    return path
