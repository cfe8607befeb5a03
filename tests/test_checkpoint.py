import pickle

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
    tensors, info, path = ckpt.load_weights(tmp_path)
    assert path.name == "best.safetensors" and info["config"]["model"] == "mlp"
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
