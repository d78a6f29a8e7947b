"""Checkpoints: atomic writes, keep-last-N, corruption detection, weights_only loading."""

import json

import pytest
import torch
from torch import nn

from headless.errors import HeadlessError
from headless.train.checkpoint import (Checkpointer, ModelState, RngState, latest_checkpoint, list_checkpoints,
                                       load_checkpoint, load_model_weights, rng_state, save_checkpoint, set_rng_state)


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.emb.weight  # tied, as in BERT's MLM head


def _save(tmp_path, step, model, keep_last=2):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.emb.weight.sum().backward()
    opt.step()
    return save_checkpoint(tmp_path, step, {"model": model, "optimizer": {"optimizer": opt.state_dict()},
                                            "rng": rng_state()}, {"loader": {"position": step}}, keep_last=keep_last)


def test_round_trip_with_tied_weights_and_weights_only(tmp_path):
    model = Tied()
    path = _save(tmp_path, 5, model)
    ckpt = load_checkpoint(path)  # optimizer.pt / rng.pt are loaded with weights_only=True inside
    fresh = Tied()
    load_model_weights(fresh, ckpt["model"])
    assert torch.equal(fresh.emb.weight, model.emb.weight)
    assert fresh.head.weight is fresh.emb.weight
    assert ckpt["state"]["step"] == 5 and ckpt["state"]["loader"] == {"position": 5}
    assert "exp_avg" in ckpt["optimizer"]["optimizer"]["state"][0]


def test_keep_last_and_no_temporary_leftovers(tmp_path):
    model = Tied()
    for step in (1, 2, 3, 4):
        _save(tmp_path, step, model, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000003", "step-00000004"]
    assert latest_checkpoint(tmp_path).name == "step-00000004"
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".tmp")]


def test_rng_state_restores_the_stream(tmp_path):
    torch.manual_seed(3)
    path = _save(tmp_path, 1, Tied())
    expected = torch.rand(5)
    set_rng_state(load_checkpoint(path)["rng"])
    assert torch.equal(torch.rand(5), expected)


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "state"])
def test_damaged_checkpoint_is_a_clear_error(tmp_path, damage):
    path = _save(tmp_path, 7, Tied())
    weights = path / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:50])
    elif damage == "flip":
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "delete":
        weights.unlink()
    else:
        (path / "state.json").write_text("{not json")
    with pytest.raises(HeadlessError, match="checkpoint .* (corrupt|incomplete)"):
        load_checkpoint(path)


def test_mismatched_weights_are_rejected(tmp_path):
    path = _save(tmp_path, 1, Tied())
    other = nn.Linear(3, 3)
    with pytest.raises(HeadlessError, match="does not match the model"):
        load_model_weights(other, load_checkpoint(path)["model"])
    assert json.loads((path / "state.json").read_text())["files"]["model.safetensors"]


def test_a_full_disk_in_safetensors_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """Issue #28 item 7: safetensors reports ENOSPC as a SafetensorError (`os error 28`), not an OSError."""
    import safetensors.torch
    from safetensors import SafetensorError

    model = Tied()
    _save(tmp_path, 1, model)

    def full(*args, **kwargs):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                              'message: "No space left on device" })')

    monkeypatch.setattr(safetensors.torch, "save_model", full)
    with pytest.raises(HeadlessError, match="the disk is full"):
        _save(tmp_path, 2, model)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-00000001"]
    load_checkpoint(tmp_path / "checkpoints" / "step-00000001")


def test_shutil_errors_of_a_full_disk_are_named():
    import errno
    import shutil

    from headless.files import describe_os_error

    assert describe_os_error(shutil.Error([("a", "b", "[Errno 28] No space left on device: 'b'")])) == \
        "the disk is full"
    assert describe_os_error(OSError(errno.ENOSPC, "No space left on device")) == "the disk is full"


class _Position:
    """A part kept in state.json under its name (like the data loader)."""

    def __init__(self, position=0):
        self.position = position

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        self.position = state["position"]


class _Loop(_Position):
    """The part whose fields sit at state.json's top (step, counters)."""

    def state_dict(self):
        return {"counters": {"tokens": self.position}}

    def load_state_dict(self, state):
        self.position = state["counters"]["tokens"]


class _Optimizer:
    def __init__(self, model):
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def state_dict(self):
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state):
        self.optimizer.load_state_dict(state["optimizer"])


def _register(checkpointer, model, names=("model", "optimizer", "loader", "train", "rng")):
    made = {"model": lambda: ModelState(model), "optimizer": lambda: _Optimizer(model), "loader": _Position,
            "train": _Loop, "rng": RngState}
    parts = {name: made[name]() for name in names}
    for name, part in parts.items():
        checkpointer.register(name, part)
    return parts


def test_the_checkpointer_saves_and_restores_the_parts_registered_once(tmp_path):
    """One registry of stateful parts for save and load (issue #24): every registered part comes
    back, in registration order (the weights first, before the later parts exist), from the files
    and state.json fields that `PART_FILES` names; a part is registered once."""
    torch.manual_seed(0)
    model = Tied()
    saver = Checkpointer(tmp_path, is_main=True, keep_last=2)
    parts = _register(saver, model)
    model.emb.weight.sum().backward()
    parts["optimizer"].optimizer.step()
    parts["loader"].position, parts["train"].position = 7, 1234
    saver.save(3)
    expected = torch.rand(3)
    state = json.loads((tmp_path / "checkpoints" / "step-00000003" / "state.json").read_text())
    assert state["loader"] == {"position": 7} and state["counters"] == {"tokens": 1234} and state["step"] == 3
    with pytest.raises(ValueError, match="registered already"):
        saver.register("loader", _Position())

    fresh = Tied()
    loader = Checkpointer(tmp_path, is_main=True, keep_last=2)
    _register(loader, fresh, ["model"])
    ckpt = loader.read()
    loader.restore(ckpt)  # the weights, before the other parts exist (the trainer: before wrapping)
    assert torch.equal(fresh.emb.weight, model.emb.weight)
    fresh.emb.weight.data.zero_()  # a second restore leaves a restored part alone
    back = _register(loader, fresh, ["optimizer", "loader", "train", "rng"])
    loader.restore(ckpt)
    assert not fresh.emb.weight.any()
    assert back["loader"].position == 7 and back["train"].position == 1234
    assert torch.equal(torch.rand(3), expected)
    adam = back["optimizer"].optimizer.state_dict()["state"][0]
    assert float(adam["step"]) == 1.0 and torch.equal(adam["exp_avg"],
                                                        parts["optimizer"].optimizer.state_dict()["state"][0]["exp_avg"])
