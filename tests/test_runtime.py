import os
import subprocess
import sys

import pytest
import torch

from signlab.errors import UserError
from signlab.runtime import BF16_ENV, autocast, bf16_active, default_threads, hardware_bf16

CPU = torch.device("cpu")


@pytest.mark.parametrize("env, auto", [("on", True), ("off", False)])
def test_the_environment_stands_in_for_the_hardware(monkeypatch, env, auto):
    monkeypatch.setenv(BF16_ENV, env)
    assert hardware_bf16(CPU) is auto
    assert bf16_active(CPU, "auto") is auto
    assert bf16_active(CPU, "on") is True and bf16_active(CPU, "off") is False  # explicit modes win


def test_autocast_runs_bf16_only_when_active(monkeypatch):
    monkeypatch.setenv(BF16_ENV, "off")
    x = torch.randn(4, 8)
    layer = torch.nn.Linear(8, 2)
    with autocast(CPU, "auto"):
        assert layer(x).dtype == torch.float32
    with autocast(CPU, "on"):
        assert layer(x).dtype == torch.bfloat16


def test_bad_modes_are_user_errors(monkeypatch):
    with pytest.raises(UserError, match="--bf16 maybe"):
        bf16_active(CPU, "maybe")
    monkeypatch.setenv(BF16_ENV, "yes")
    with pytest.raises(UserError, match=f"{BF16_ENV}=yes"):
        hardware_bf16(CPU)


def test_threads_follow_the_launcher_then_the_allowed_cores(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what torchrun sets for each of several ranks
    assert default_threads() == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3, 4, 5}, raising=False)
    assert default_threads() == 6  # the cores this process may use, not os.cpu_count()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert default_threads() == 1  # shared between the ranks of this machine, at least one each
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert default_threads() == 3


# A training step's pattern: tensors of a few MB to tens of MB, all freed by the next step. Prints the page
# faults of the steps after the first.
STEPS = """
import resource, sys, torch
from signlab.runtime import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
def step():
    tensors = [torch.empty(mb << 20, dtype=torch.uint8).fill_(1) for mb in range(1, 25)]  # 300 MB in all
    del tensors
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
                    reason="tunes glibc's malloc")
def test_freed_memory_is_reused_without_asking_the_kernel_again():
    """keep_freed_memory: the memory of one step's tensors serves the next without new page faults; glibc's
    default gives most of it back and faults it in again each step."""
    faults = {}
    for mode in ("default", "keep"):
        out = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True, check=True)
        applied, faults[mode] = out.stdout.split()
        assert applied == ("True" if mode == "keep" else "None")
    pages = 5 * (300 << 20) // os.sysconf("SC_PAGE_SIZE")  # what 5 steps touch
    default, keep = int(faults["default"]), int(faults["keep"])
    assert default > pages // 8 and keep < pages // 10 and keep < default // 2, faults  # measured: 22-41 %, 2-6 %
