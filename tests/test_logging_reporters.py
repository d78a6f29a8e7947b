"""Issue #27 item 9: the run's config and hparams in TensorBoard; W&B and MLflow through their own
libraries when asked for (`report_to`), refused with one line when their package is absent."""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest

from headless.config import TrainConfig, load_config
from headless.errors import HeadlessError
from headless.train.logging import RunLogger, flat_hparams


def _config() -> dict:
    return TrainConfig().to_dict()


def test_tensorboard_gets_the_config_as_text_and_hparams(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = RunLogger(tmp_path, 10, 0, tensorboard=True, progress=False, config=_config())
    logger.log("val", 5, {"loss": 2.5, "accuracy": 0.25})
    logger.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    assert "config/text_summary" in events.Tags()["tensors"]
    text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "optim:" in text and "lr: 0.0005" in text
    hparams = events.PluginTagToContent("hparams")
    assert "_hparams_/experiment" in hparams and "_hparams_/session_start_info" in hparams
    assert b"optim.lr" in hparams["_hparams_/session_start_info"]
    assert b"val/loss" in hparams["_hparams_/experiment"]  # linked to the run's validation curve


def test_flat_hparams_are_scalars():
    flat = flat_hparams(_config())
    assert flat["optim.lr"] == 5e-4 and flat["model.vocab_size"] == "none" and flat["report_to"] == "['tensorboard']"
    assert all(isinstance(v, (bool, int, float, str)) for v in flat.values())


class _Recorder(types.ModuleType):
    def __init__(self, name):
        super().__init__(name)
        self.calls = []

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)

        def call(*args, **kwargs):
            self.calls.append((attr, args, kwargs))
            return self if attr == "init" else None

        return call


def test_wandb_and_mlflow_get_config_and_metrics_through_their_libraries(tmp_path, monkeypatch):
    wandb, mlflow = _Recorder("wandb"), _Recorder("mlflow")
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    monkeypatch.setitem(sys.modules, "mlflow", mlflow)
    logger = RunLogger(tmp_path, 10, 0, tensorboard=True, progress=False, report_to=("wandb", "mlflow"),
                       config=_config())
    logger.log("train", 3, {"loss": 1.5, "accuracy": 0.5, "note": "x"})
    logger.close()
    names = [c[0] for c in wandb.calls]
    assert names == ["init", "log", "finish"]
    assert wandb.calls[0][2]["config"]["optim"]["lr"] == 5e-4
    assert wandb.calls[1][1] == ({"train/loss": 1.5, "train/accuracy": 0.5},) and wandb.calls[1][2] == {"step": 3}
    calls = {c[0]: c for c in mlflow.calls}
    assert calls["log_params"][1][0]["optim.lr"] == "0.0005" and calls["log_text"][1][1] == "config.yaml"
    assert calls["log_metrics"][1][0] == {"train/loss": 1.5, "train/accuracy": 0.5}
    assert "end_run" in calls
    assert not (tmp_path / "tensorboard").exists()  # report_to without tensorboard: none written


def test_report_to_defaults_to_tensorboard_and_refuses_what_is_absent(monkeypatch):
    assert load_config("tiny").report_to == ["tensorboard"]
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(HeadlessError, match=r"report_to includes wandb .*pip install wandb"):
        load_config("tiny", overrides=["report_to=[tensorboard,wandb]"])
    with pytest.raises(HeadlessError, match="unknown 'comet'"):
        load_config("tiny", overrides=["report_to=[comet]"])
