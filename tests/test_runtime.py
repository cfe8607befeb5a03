import os

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
