"""`signlab detect`: scenes, folders and videos in; one result per scene (JSON or a line each), annotated copies."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from signlab.errors import UserError


def run_detect(args: argparse.Namespace) -> int:
    """One result per scene in the order given; unreadable scenes are one stderr line each, then exit 2."""
    from signlab.detection.detect import detect_scene_file, expand_inputs, load_detector, output_stem
    from signlab.detection.evaluate import resolve_threshold
    from signlab.detection.video import detect_video, is_video

    out = Path(args.out) if args.out else None
    if out is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"--out {out}: cannot create this folder ({e.strerror or e})") from None
    detector = load_detector(args.target, args.device, backend=args.backend, verify=args.verify, tta=args.tta)
    threshold = resolve_threshold(Path(args.target), args.threshold)
    files, problems = expand_inputs(args.paths)
    for line in problems:
        print(f"signlab detect: error: {line}", file=sys.stderr)
    results, failed, used = [], bool(problems), set()
    for path in files:
        try:
            if is_video(path):
                if out is None:
                    raise UserError(f"{path}: a video needs --out DIR for its annotated copy and CSV")
                result = detect_video(detector, path, output_stem(out, path, used), threshold,
                                      warn=lambda line: print(f"signlab detect: {line}", file=sys.stderr))
            else:
                stem = output_stem(out, path, used) if out is not None else None
                result = detect_scene_file(detector, path, threshold, stem)
        except UserError as e:
            print(f"signlab detect: error: {e}", file=sys.stderr)
            failed = True
            continue
        results.append(result)
        if not args.json:
            print(describe_detections(result))
    if args.json:
        print(json.dumps(results))
    return 2 if failed else 0


def describe_detections(result: dict) -> str:
    """One line for a person: the signs found, best first (a video: its tracks and the files written)."""
    if "tracks" in result:
        names = ", ".join(f"#{t['track_id']} {t['name']}" for t in result["tracks"]) or "no signs"
        n = len(result["tracks"])
        return (f"{result['path']}: {result['frames']} frames, {n} track{'' if n == 1 else 's'} ({names}); "
                f"wrote {result['video']} and {result['csv']}")
    found = result["detections"]
    if not found:
        return f"{result['path']}: no signs"
    signs = "; ".join(f"{d['name']} {d['score']:.2f} at ({', '.join(f'{v:g}' for v in d['box'])})" for d in found)
    return f"{result['path']}: {len(found)} sign{'s' if len(found) > 1 else ''}: {signs}"
