"""Train the verifier (signlab.detection.verify) for finished detection runs, as `--verify` does at the end of
training, so that one finder can be scored with and without it (bench/detection_failures.py --no-verifier).

    python bench/add_verifier.py RUN [RUN ...] [--weights last.safetensors] [--threads 1]

--weights: the finder whose proposals are mined (default: the one `signlab detect` loads, best.safetensors);
bench/detection_failures.py scores the last weights, so mine with those for a paired comparison.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from signlab.detection.verify import add_verifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--weights", default=None, help="a weights file of each run (default: best, else last)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for run in args.runs:
        add_verifier(run, args.weights, device="cpu")


if __name__ == "__main__":
    main()
