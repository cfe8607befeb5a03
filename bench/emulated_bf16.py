"""Run a `signlab` command with bf16 autocast forced on, to measure bf16's accuracy on a CPU without bf16.

    python bench/emulated_bf16.py train --preset fast --data ../shared/datasets/GTSRB/Final_Training --out runs/bf16
    python bench/emulated_bf16.py evaluate runs/bf16

`signlab` turns bf16 autocast on only where the hardware has bf16 arithmetic (AVX-512 BF16/AMX, CUDA), so on
an AVX2 machine its accuracy cannot be seen. This script lifts that check: oneDNN then emulates bf16 (inputs
rounded to bf16, fp32 accumulation: a bf16 CPU's arithmetic up to summation order) at about a tenth of fp32's
speed. Its accuracies are the ones to compare; its timings are not.
"""

from __future__ import annotations

import sys

import signlab.predict
from signlab.cli import main


def always(device) -> bool:
    return True


if __name__ == "__main__":
    signlab.predict.bf16_supported = always  # bf16_active looks the name up at each call
    sys.exit(main(sys.argv[1:]))
