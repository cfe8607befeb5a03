import pickle
import random

import numpy as np
import pytest
import torch

from signlab import checkpoint as ckpt
from signlab.errors import UserError


def save(run, step, value):
    return ckpt.save_checkpoint(run, step, {"model.w": torch.full((3,), float(value))},
                                {"rng.torch": torch.get_rng_state()}, {"epoch": step})


def test_roundtrip_and_newest_first(tmp_path):
    save(tmp_path, 5, 1.0)
    save(tmp_path, 10, 2.0)
    (weights, state, meta), skipped = ckpt.load_latest(tmp_path)
    assert skipped == [] and meta["epoch"] == 10 and weights["model.w"].tolist() == [2.0] * 3
    assert torch.equal(state["rng.torch"], torch.get_rng_state())


def test_corrupt_and_incomplete_checkpoints_are_skipped(tmp_path):
    save(tmp_path, 1, 1.0)
    newest = save(tmp_path, 2, 2.0)
    data = bytearray((newest / "weights.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (newest / "weights.safetensors").write_bytes(bytes(data))
    (tmp_path / "checkpoints" / "ckpt-000000003").mkdir()  # a folder without meta.json
    (weights, _, meta), skipped = ckpt.load_latest(tmp_path)
    assert meta["epoch"] == 1
    assert [s[0] for s in skipped] == ["ckpt-000000003", "ckpt-000000002"]
    assert "checksum mismatch" in skipped[1][1] and "incomplete" in skipped[0][1]


def test_prune_keeps_newest_and_protected(tmp_path):
    for step in range(1, 6):
        save(tmp_path, step, step)
    ckpt.prune_checkpoints(tmp_path, keep=2, protect={"ckpt-000000001"})
    names = [p.name for p in ckpt.list_checkpoints(tmp_path)]
    assert names == ["ckpt-000000005", "ckpt-000000004", "ckpt-000000001"]


def test_weights_file_roundtrip_and_refusals(tmp_path):
    ckpt.save_weights(tmp_path / "best.safetensors", {"model.w": torch.ones(2)}, {"config": {"model": "mlp"}})
    ckpt.save_weights(tmp_path / "last.safetensors", {"model.w": torch.zeros(2)}, {"config": {"model": "lenet"}})
    tensors, info, path = ckpt.load_weights(tmp_path)  # a run folder: best before last
    assert path.name == "best.safetensors" and info["config"]["model"] == "mlp"
    assert list(tensors) == ["model.w"] and tensors["model.w"].tolist() == [1.0, 1.0]
    tensors, info, _ = ckpt.load_weights(tmp_path / "last.safetensors")
    assert info["config"]["model"] == "lenet" and tensors["model.w"].tolist() == [0.0, 0.0]
    (tmp_path / "model.pt").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(UserError, match="pickle"):
        ckpt.load_weights(tmp_path / "model.pt")
    (tmp_path / "fake.safetensors").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(UserError, match="not a valid safetensors"):
        ckpt.load_weights(tmp_path / "fake.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no best.safetensors or last.safetensors"):
        ckpt.load_weights(tmp_path / "empty")


def test_unwritable_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "run"
    blocker.write_text("a file where the run folder should be")
    with pytest.raises(UserError, match="cannot write checkpoint"):
        save(blocker, 1, 1.0)


def test_resave_of_the_same_step_killed_between_renames_is_recovered(tmp_path):
    save(tmp_path, 7, 1.0)
    folder = tmp_path / "checkpoints"
    (folder / "ckpt-000000007").rename(folder / ".old-ckpt-000000007")  # the state after the first rename
    (weights, _, meta), skipped = ckpt.load_latest(tmp_path)
    assert meta["epoch"] == 7 and weights["model.w"].tolist() == [1.0] * 3 and skipped == []
    save(tmp_path, 7, 2.0)  # a normal re-save replaces the whole folder
    assert ckpt.load_latest(tmp_path)[0][0]["model.w"].tolist() == [2.0] * 3
    assert not list(folder.glob(".old-*"))


def _model_and_optimizer(kind: str):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    if kind == "adamw":
        return model, torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.1)
    return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)


def _steps(model, optimizer, n: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x, y = torch.randn(8, 4, generator=g), torch.randint(0, 2, (8,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("kind", ["adamw", "sgd"])
def test_optimizer_state_through_a_checkpoint_resumes_bit_for_bit(tmp_path, kind):
    """3 steps, checkpoint, 2 more steps in a fresh model and optimizer == 5 uninterrupted steps, exactly:
    momentum buffers, Adam moments and step counts all come back (fp32, no autocast)."""
    model, opt = _model_and_optimizer(kind)
    _steps(model, opt, 3, seed=1)
    tensors, meta = ckpt.optimizer_state(opt)
    ckpt.save_checkpoint(tmp_path, 3, model.state_dict(), tensors, {"optimizer": meta})
    _steps(model, opt, 2, seed=2)

    resumed, resumed_opt = _model_and_optimizer(kind)
    (weights, state, meta), _ = ckpt.load_latest(tmp_path)
    resumed.load_state_dict(weights)
    ckpt.load_optimizer_state(resumed_opt, state, meta["optimizer"])  # meta came back through JSON
    _steps(resumed, resumed_opt, 2, seed=2)
    for a, b in zip(model.parameters(), resumed.parameters(), strict=True):
        assert a.dtype == torch.float32 and torch.equal(a, b)
    fresh, fresh_opt = _model_and_optimizer(kind)  # without the optimizer state the path differs
    fresh.load_state_dict(weights)
    _steps(fresh, fresh_opt, 2, seed=2)
    assert not all(torch.equal(a, b) for a, b in zip(model.parameters(), fresh.parameters(), strict=True))


def test_rng_states_through_a_checkpoint_replay_the_same_draws(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.random(), np.random.rand(5), torch.rand(5)  # somewhere in the streams, not at a seed
    ckpt.save_checkpoint(tmp_path, 1, {"w": torch.zeros(1)}, {"rng.torch": torch.get_rng_state()},
                         {"rng": ckpt.rng_states()})
    expected = (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist())
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    (_, state, meta), _ = ckpt.load_latest(tmp_path)
    ckpt.restore_rng_states(meta, state)
    assert (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()) == expected
