"""The machine a model runs on: device, bf16 autocast, CPU threads and the memory allocator. One home, so that
training, inference and the benchmarks agree on what runs where.

bf16 is a three-way setting: `auto` (on where the hardware has bf16 arithmetic: CUDA with bf16, or a CPU with
AVX-512 BF16 or AMX), `on` (forced; on a CPU without bf16 arithmetic oneDNN emulates it, slowly) and `off`.
The environment variable SIGNLAB_BF16=on|off overrides what `auto` detects, so the test suite can run as a
bf16 machine would on one without bf16, and the other way round.
"""

from __future__ import annotations

import ctypes
import os
from contextlib import nullcontext
from functools import cache, lru_cache

import torch

from signlab.errors import UserError

DEVICES = ("auto", "cpu", "cuda")
BF16_MODES = ("auto", "on", "off")
BF16_ENV = "SIGNLAB_BF16"


def pick_device(name: str) -> torch.device:
    """`--device auto|cpu|cuda` as a torch device; cuda without a CUDA device is the user's error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available; use --device cpu or auto")
    if name not in DEVICES:
        raise UserError(f"--device {name}: unknown device; use auto, cpu or cuda")
    return torch.device(name)


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic that PyTorch's kernels use: the AVX-512 code path (public
    `torch.backends.cpu.get_cpu_capability`) and the avx512_bf16 or amx_bf16 flag of the processor."""
    if torch.backends.cpu.get_cpu_capability() not in ("AVX512", "AMX"):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:  # not Linux: no bf16 path we know of on the CPU
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def hardware_bf16(device: torch.device) -> bool:
    """What `--bf16 auto` means on `device`; SIGNLAB_BF16=on|off stands in for the hardware's answer."""
    forced = os.environ.get(BF16_ENV, "").strip().lower()
    if forced in ("on", "off"):
        return forced == "on"
    if forced not in ("", "auto"):
        raise UserError(f"{BF16_ENV}={forced}: use on, off or auto")
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_has_bf16()


def bf16_active(device: torch.device, mode: str) -> bool:
    """Whether autocast runs bf16 for a model configured with `--bf16 mode` on `device`."""
    if mode not in BF16_MODES:
        raise UserError(f"--bf16 {mode}: use one of {', '.join(BF16_MODES)}")
    return mode == "on" or (mode == "auto" and hardware_bf16(device))


def autocast(device: torch.device, mode: str):
    """bf16 autocast where `bf16_active`, else a no-op: the model then runs in fp32."""
    if bf16_active(device, mode):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def default_threads() -> int:
    """CPU threads for one process: the launcher's OMP_NUM_THREADS when set (torchrun sets 1 per rank), else
    the cores this process may run on (os.sched_getaffinity: a container or taskset may allow fewer than the
    machine has), shared between the processes of this machine (LOCAL_WORLD_SIZE under torchrun)."""
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) > 0:
        return int(omp)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, cores // max(1, local_world))


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 << 20  # bytes: glibc's largest; smaller blocks come from the heap, not from fresh mappings
TRIM_THRESHOLD = 1 << 30  # bytes of freed heap kept for reuse rather than given back to the kernel


@cache
def keep_freed_memory() -> bool:
    """Have glibc's malloc keep the memory torch frees, so that the next step's tensors reuse it. By default
    glibc maps blocks of a few MB afresh and unmaps them when freed; every training step then asks the kernel
    for new zeroed pages for its activations. On the AVX2 VM the finder's step went from 252 to 190-216 ms
    with this, its page faults from about 8,000 a step to none; a whole detect_fast run had spent up to 15 %
    of its CPU time in the kernel. True where it applied (Linux with glibc); elsewhere nothing changes."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
            libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl without mallopt)
        return False


def threads_text() -> str:
    """'1 thread', '2 threads': how many CPU threads torch uses, for the run's first lines."""
    n = torch.get_num_threads()
    return f"{n} thread{'' if n == 1 else 's'}"
