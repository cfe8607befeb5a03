"""Detection speed on real GTSDB scenes, end to end, per backend, against the machine's GEMM peak.

    signlab export RUN --int8
    .venv/bin/python bench/detection_speed.py RUN [--threads N] [--scenes 50] [--repeats 3] [--json OUT]

Each row runs SignDetector.detect on the first --scenes scenes of --data (default ../shared/datasets/GTSDB/
TrainIJCNN2013), already decoded (JPEG/PPM decoding is excluded): the finder's maps, their decoding into
proposals (peaks, NMS), the crops, one classifier forward per scene and the scoring, at --threshold (default
0.5, as `signlab detect`). Rows: torch fp32, torch bf16 (autocast; only where the CPU has bf16 arithmetic),
torch fp32 with `--tta` (the finder also on each scene's mirror image), onnxruntime fp32 (the files of
`signlab export RUN`), the same with `--tta` (finder-flip.onnx), and onnxruntime with the int8 classifier.

The same run measures the GEMM peak: the best GFLOP/s of a 2048x2048 fp32 matmul in torch with the same
thread count, before and after the rows. Each row's achieved GFLOP/s counts 2 FLOPs per MAC: the finder's MACs
at each scene's padded size plus the classifier's MACs per crop times the crops it named (signlab.models.
count_macs: convolutions and matrix products only). Rows take turns, --repeats times; figures are medians.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from records import gemm_peak  # noqa: E402 - bench/ is not a package
from runtimes import git_revision, machine  # noqa: E402

from signlab.errors import UserError  # noqa: E402
from signlab.runtime import cpu_has_bf16, default_threads  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "GTSDB" / "TrainIJCNN2013"
GEMM_N = 2048


class CountingFinder:
    """The detector's finder, counting the proposals it hands on (each one is a crop for the classifier)."""

    def __init__(self, inner) -> None:
        self.inner, self.proposals = inner, 0

    def propose(self, scene, threshold):
        boxes, scores, cats = self.inner.propose(scene, threshold)
        self.proposals += len(boxes)
        return boxes, scores, cats


TTA_ROW, ONNX_TTA_ROW = "torch fp32, --tta", "onnxruntime fp32, --tta"  # the finder also runs on the mirror
TTA_ROWS = (TTA_ROW, ONNX_TTA_ROW)  # image: twice its MACs


def detectors(run: Path, export: Path | None) -> tuple[dict, dict[str, str]]:
    """The rows' detectors, and why a row is missing."""
    from signlab.detection.detect import load_detector
    from signlab.detection.onnx_backend import CLASSIFIER_INT8, load_onnx_detector

    found, missing = {}, {}
    for name, bf16 in (("torch fp32", "off"), ("torch bf16", "on")):
        if bf16 == "on" and not cpu_has_bf16():
            missing[name] = "not available: this CPU has no bf16 arithmetic"
            continue
        det = load_detector(run, "cpu", backend="torch")
        det.finder.bf16 = bf16
        det.classifier.config = dataclasses.replace(det.classifier.config, bf16=bf16, tta=False)
        found[name] = det
    found[TTA_ROW] = load_detector(run, "cpu", backend="torch", tta=True)
    found[TTA_ROW].finder.bf16 = "off"
    where = export or run
    for name, file, tta in (("onnxruntime fp32", "classifier.onnx", False), (ONNX_TTA_ROW, "classifier.onnx", True),
                            ("onnxruntime, int8 classifier", CLASSIFIER_INT8, False)):
        try:
            found[name] = load_onnx_detector(where, "cpu", classifier_file=file, tta=tta)
        except UserError as e:
            missing[name] = str(e)
    return found, missing


def macs(run: Path, scenes: list[np.ndarray]) -> tuple[int, int]:
    """The finder's MACs over all scenes (at their padded sizes) and the classifier's MACs per crop."""
    from signlab.detection.detect import load_detector
    from signlab.models import count_macs

    det = load_detector(run, "cpu", backend="torch")
    sizes: dict[tuple[int, int], int] = {}
    total = 0
    pad = det.finder.model.pad_to  # SceneGraph pads each scene to its coarsest stride
    for s in scenes:
        padded = (-(-s.shape[0] // pad) * pad, -(-s.shape[1] // pad) * pad)
        if padded not in sizes:
            sizes[padded] = count_macs(det.finder.model, padded)
        total += sizes[padded]
    return total, count_macs(det.classifier.model, det.preprocessing.image_size)


def measure(found: dict, scenes: list[np.ndarray], threshold: float, repeats: int) -> dict[str, dict]:
    """Per row: median seconds for all scenes, the finder's median seconds alone, crops named per pass."""
    times = {name: [] for name in found}
    finder_times = {name: [] for name in found}
    crops = {}
    for det in found.values():  # warm-up: first calls allocate and pick kernels
        det.detect(scenes[0], threshold)
    for _ in range(repeats):
        for name, det in found.items():
            inner = det.finder
            det.finder = CountingFinder(inner)
            start = time.perf_counter()
            for scene in scenes:
                det.detect(scene, threshold)
            times[name].append(time.perf_counter() - start)
            crops[name] = det.finder.proposals
            det.finder = inner
            start = time.perf_counter()
            for scene in scenes:
                inner.maps(scene)
            finder_times[name].append(time.perf_counter() - start)
    return {name: {"seconds": statistics.median(times[name]), "finder_seconds": statistics.median(finder_times[name]),
                   "crops": crops[name]} for name in found}


def rows_of(measured: dict, n: int, finder_macs: int, crop_macs: int, peak: float) -> list[dict]:
    rows = []
    for name, m in measured.items():
        flops = 2 * (finder_macs * (2 if name in TTA_ROWS else 1) + crop_macs * m["crops"])
        gflops = flops / m["seconds"] / 1e9
        rows.append({"backend": name, "scenes_per_second": n / m["seconds"], "ms_per_scene": 1e3 * m["seconds"] / n,
                     "finder_ms_per_scene": 1e3 * m["finder_seconds"] / n, "crops_per_scene": m["crops"] / n,
                     "gflop_per_scene": flops / n / 1e9, "gflops": gflops, "percent_of_gemm_peak": 100 * gflops / peak})
    return rows


def table(rows: list[dict], missing: dict[str, str]) -> str:
    lines = ["| backend | scenes/s | ms/scene | finder ms/scene | crops/scene | GFLOP/s | % of GEMM peak |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['backend']} | {r['scenes_per_second']:.2f} | {r['ms_per_scene']:.1f} | "
                     f"{r['finder_ms_per_scene']:.1f} | {r['crops_per_scene']:.2f} | {r['gflops']:.1f} | "
                     f"{r['percent_of_gemm_peak']:.1f} % |")
    lines += [f"| {name} | {why} | | | | | |" for name, why in missing.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", metavar="RUN", help="a detection run (signlab export RUN --int8 done)")
    parser.add_argument("--export", metavar="DIR", help="the folder signlab export wrote (default RUN/export)")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help=f"GTSDB scenes (default {DEFAULT_DATA})")
    parser.add_argument("--scenes", type=int, default=50, help="the first N scenes, sorted by name (default 50)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for every backend (default: all usable)")
    parser.add_argument("--threshold", type=float, default=0.5, help="lowest score kept (default 0.5)")
    parser.add_argument("--repeats", type=int, default=3, help="turns of every backend (default 3)")
    parser.add_argument("--json", metavar="OUT", help="default bench/results/detection_speed-Nthread.json")
    args = parser.parse_args(argv)
    from signlab.detection.scenes import load_scene
    from signlab.layouts import image_files

    try:
        threads = args.threads or default_threads()
        os.environ["OMP_NUM_THREADS"] = str(threads)  # onnxruntime sessions take their thread count from it
        torch.set_num_threads(threads)
        run = Path(args.run)
        if not Path(args.data).is_dir():
            raise UserError(f"--data {args.data}: no such folder; pass the GTSDB scenes' folder")
        scenes = [load_scene(p) for p in list(image_files(Path(args.data)))[:args.scenes]]
        if not scenes:
            raise UserError(f"--data {args.data}: no scenes there")
        found, missing = detectors(run, Path(args.export) if args.export else None)
        finder_macs, crop_macs = macs(run, scenes)
        peak_before = gemm_peak(torch.float32, GEMM_N, repeats=5)
        measured = measure(found, scenes, args.threshold, args.repeats)
        peak = max(peak_before, gemm_peak(torch.float32, GEMM_N, repeats=5))
    except UserError as e:
        print(f"detection_speed: error: {e}", file=sys.stderr)
        return 2
    rows = rows_of(measured, len(scenes), finder_macs, crop_macs, peak)
    sizes = sorted({f"{s.shape[1]}x{s.shape[0]}" for s in scenes})
    print(f"command: python bench/detection_speed.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    print(f"git {git_revision()}; {machine()}; {threads} thread{'s' if threads > 1 else ''} each")
    print(f"{len(scenes)} scenes of {args.data} ({', '.join(sizes)}), decoded beforehand; threshold "
          f"{args.threshold}; median of {args.repeats} turns; finder {finder_macs / len(scenes) / 1e9:.3f} GMAC/scene, "
          f"classifier {crop_macs / 1e6:.2f} MMAC/crop; GEMM peak {peak:.1f} GFLOP/s ({GEMM_N}^3 fp32 matmul, "
          f"torch, best of before {peak_before:.1f} and after)\n")
    print(table(rows, missing))
    out = Path(args.json) if args.json else ROOT / "bench" / "results" / f"detection_speed-{threads}thread.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "missing": missing, "scenes": len(scenes), "sizes": sizes,
                               "data": args.data, "threshold": args.threshold, "repeats": args.repeats,
                               "threads": threads, "gemm_peak_gflops": peak, "gemm_peak_before": peak_before,
                               "finder_macs_per_scene": finder_macs / len(scenes),
                               "classifier_macs_per_crop": crop_macs,
                               "run": str(run), "machine": machine(), "git": git_revision(),
                               "command": " ".join(["bench/detection_speed.py", *(sys.argv[1:] if argv is None
                                                                                    else argv)])}, indent=1))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
