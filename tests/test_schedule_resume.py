"""A loop that knows only training, a schedule that says how a run is extended, and a time budget
whose plan belongs to its checkpoint (issues #24 item 1, #27 item 7, #28 items 2 and 7).

On the synthetic fixtures (tests/fixtures.py): no ../shared needed.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from headless.cli import main

SRC = Path(__file__).resolve().parents[1] / "src" / "headless"
TINY = ["model.hidden_size=32", "model.num_layers=2", "model.num_heads=2", "model.intermediate_size=64",
        "batch_size=4", "optim.warmup_steps=2", "log_every=1", "eval_every=1000", "eval_batches=1",
        "progress=false", "tensorboard=false"]


@pytest.fixture(scope="module")
def data(fixture_data, fixture_tokenizers, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("schedule") / "data"
    assert main(["prepare", str(fixture_data["corpus"]), "--output", str(out), "--tokenizer",
                 str(fixture_tokenizers["wordpiece"]), "--seq-len", "32", "--validation-fraction", "0.1",
                 "--quiet"]) == 0
    return out


def _train(data: Path, run: Path, *extra: str) -> None:
    assert main(["pretrain", "--preset", "tiny", "--data", str(data), "--run-dir", str(run), *TINY, *extra]) == 0


def _lr(run: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["lr"] for r in records if r["split"] == "train"}


def test_the_loop_reads_on_one_screen_and_knows_no_time_budget():
    source = (SRC / "train" / "loop.py").read_text()
    assert len(source.splitlines()) <= 80
    imported = {node.module for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom)}
    assert "headless.train.budget" not in imported and "TimeBudget" not in source
    assert not any(m and m.startswith("headless.lab.reproduce") for m in imported)


def test_resume_past_the_schedule_trains_on_a_stated_cosine_tail(data, tmp_path, capsys):
    """The README's extension (`--resume max_steps=N` on a finished run) trained at LR 0 in silence."""
    run = tmp_path / "run"
    _train(data, run, "max_steps=6", "save_every=6")  # linear to 0 at step 6
    assert yaml.safe_load((run / "config.yaml").read_text())["optim"]["schedule_steps"] is None  # not set by the user
    capsys.readouterr()
    assert main(["pretrain", "--run-dir", str(run), "--resume", "max_steps=10"]) == 0
    out = capsys.readouterr().out
    told = [line for line in out.splitlines() if "goes past the end of the LR schedule" in line]
    assert len(told) == 1 and "a new cosine tail" in told[0] and "optim.extend=cosine" in told[0], out
    lr = _lr(run)
    assert lr[6] == pytest.approx(0.0, abs=1e-12)
    assert lr[7] > lr[8] > lr[9] > 0 and lr[10] == pytest.approx(0.0, abs=1e-12)
    # a second resume inside the tail continues it: the tail is part of the checkpoint
    assert main(["pretrain", "--run-dir", str(run), "--resume"]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_resume_past_the_schedule_refuses_with_one_line_or_keeps_a_stated_final_lr(data, tmp_path, capsys):
    run = tmp_path / "run"
    _train(data, run, "max_steps=6", "save_every=6", "optim.schedule=cosine", "optim.min_lr_ratio=0.1")
    before = (run / "config.yaml").read_bytes()
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    capsys.readouterr()
    assert main(["pretrain", "--run-dir", str(run), "--resume", "max_steps=10", "optim.extend=refuse"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "goes past the end of the LR schedule (step 6)" in err[0] \
        and "optim.extend=cosine" in err[0], err
    assert (run / "config.yaml").read_bytes() == before
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == checkpoints
    assert main(["pretrain", "--run-dir", str(run), "--resume", "max_steps=10", "optim.extend=constant"]) == 0
    assert "keep its final LR 0.0001 (optim.extend=constant)" in capsys.readouterr().out
    lr = _lr(run)
    assert all(lr[s] == pytest.approx(1e-4) for s in (6, 7, 8, 9, 10))  # the cosine's floor, as stated
    # an explicit new length is a stated change of the schedule
    assert main(["pretrain", "--run-dir", str(run), "--resume", "max_steps=12", "optim.schedule_steps=20"]) == 0
    lr = _lr(run)
    import math

    factor = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (12 - 2) / (20 - 2)))
    assert lr[12] == pytest.approx(1e-3 * factor)
    # a constant final LR of 0 would be training in silence: refused
    zero = tmp_path / "zero"
    _train(data, zero, "max_steps=4", "save_every=4")
    capsys.readouterr()
    assert main(["pretrain", "--run-dir", str(zero), "--resume", "max_steps=6", "optim.extend=constant"]) == 2
    assert "would train at its final LR, 0" in capsys.readouterr().err


def test_a_saved_config_reused_with_more_steps_follows_max_steps(data, tmp_path, capsys):
    """`--config run/config.yaml max_steps=10` on a 6-step run trained steps 7-10 at LR 0."""
    run = tmp_path / "run"
    _train(data, run, "max_steps=6", "save_every=6")
    again = tmp_path / "again"
    assert main(["pretrain", "--config", str(run / "config.yaml"), "max_steps=10", "--run-dir", str(again)]) == 0
    lr = _lr(again)
    assert lr[6] > lr[8] > lr[9] > 0 and lr[10] == pytest.approx(0.0, abs=1e-12)
    # a length the user set is kept (and saved as set)
    fixed = tmp_path / "fixed"
    _train(data, fixed, "max_steps=4", "save_every=4", "optim.schedule_steps=8")
    assert yaml.safe_load((fixed / "config.yaml").read_text())["optim"]["schedule_steps"] == 8
    assert _lr(fixed)[4] == pytest.approx(1e-3 * (1 - (4 - 2) / (8 - 2)))


def test_a_config_yaml_saved_before_the_budget_section_still_loads(tmp_path):
    from headless.config import TrainConfig, config_from_file

    old = TrainConfig().to_dict()
    budget = old.pop("budget")
    old.update(max_steps=60, time_budget_s=None, checkpoint_fractions=[0.5, 1.0],
               **{k: v for k, v in budget.items() if k.startswith("calibration_")})
    old["optim"]["schedule_steps"] = 60  # the trainer filled it in
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    config = config_from_file(tmp_path / "config.yaml")
    assert config.budget.checkpoint_fractions == [0.5, 1.0] and config.optim.schedule_steps is None
    old["optim"]["schedule_steps"] = 90  # set by the user: kept
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    assert config_from_file(tmp_path / "config.yaml").optim.schedule_steps == 90


def _cli(args):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(SRC.parent), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, "-m", "headless", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _kill_when(proc, seen) -> str:
    """SIGKILL `proc` as soon as `seen(line or None)` says so; returns its output."""
    lines, deadline = [], time.time() + 300
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        if seen(line):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    return "".join(lines) + proc.stdout.read()


BUDGET = ["max_steps=100000", "budget.time_s=4", "budget.calibration_skip=2", "budget.calibration_steps=3",
          "optim.warmup_steps=5", "budget.checkpoint_fractions=[0.5,1.0]", "save_every=100000", "keep_last=1"]


def _finished(run: Path, out: str) -> tuple[int, dict]:
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == summary["checkpoint_steps"][-1], out[-2000:]
    lr = _lr(run)
    assert lr[summary["steps"]] == pytest.approx(0.0, abs=1e-12), out[-2000:]  # the schedule ended with the run
    return summary["steps"], summary


def test_a_time_budget_plan_survives_a_kill(data, tmp_path):
    """SIGKILL after the calibration, before the first checkpoint: the resume plans again from
    scratch (config.yaml was never rewritten); SIGKILL after a checkpoint: the resume continues that
    checkpoint's plan.  The killed attempt's schedule length once survived and ended at LR 7.7e-4."""
    from headless.train.checkpoint import list_checkpoints

    common = ["pretrain", "--preset", "tiny", "--data", str(data), *TINY, *BUDGET]
    run = tmp_path / "early"
    out = _kill_when(_cli([*common, "--run-dir", str(run)]), lambda line: "the time budget of" in line)
    assert "the time budget of" in out and not list_checkpoints(run), out[-2000:]
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["max_steps"] == 100000 and saved["optim"]["schedule_steps"] is None, saved
    resumed = _cli(["pretrain", "--run-dir", str(run), "--resume"])
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out[-2000:]
    assert "no checkpoint yet" in out and "the time budget of" in out, out[-2000:]  # planned again
    _finished(run, out)

    run = tmp_path / "late"
    out = _kill_when(_cli([*common, "--run-dir", str(run)]), lambda line: list_checkpoints(run))
    state = json.loads((list_checkpoints(run)[-1] / "state.json").read_text())
    planned = state["budget"]["resolved_max_steps"]
    resumed = _cli(["pretrain", "--run-dir", str(run), "--resume"])
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out[-2000:]
    assert "the time budget of" not in out and "planned again" not in out, out[-2000:]  # the saved plan goes on
    steps, _ = _finished(run, out)
    assert steps == planned
