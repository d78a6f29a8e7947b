"""The trainer under torchrun (CPU, gloo): 2 ranks x B == 1 rank x 2B with global negatives (DDP
and FSDP2); a killed rank stops the job; resume continues the trajectory on 1 and on 2 processes;
a compiled CLM run is one graph under DDP too and trains like the eager one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from headless.train.distributed import free_port
from test_pretrain import SMALL, _losses, datasets  # noqa: F401  (module-scoped prepared data)

pytestmark = pytest.mark.slow


def _launch(nproc: int, args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    if nproc == 1:
        cmd = [sys.executable, "-m", "headless", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "-m", "headless", *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _run(nproc: int, args: list[str]) -> str:
    proc = _launch(nproc, args)
    out, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, out[-3000:]
    return out


def _weights(run: Path) -> dict:
    latest = sorted((run / "checkpoints").iterdir())[-1]
    return load_file(str(latest / "model.safetensors"))


def _assert_same_run(a: Path, b: Path) -> None:
    la, lb = _losses(a), _losses(b)
    assert sorted(la) == sorted(lb)
    for step in la:
        assert lb[step] == pytest.approx(la[step], rel=1e-5, abs=1e-6), step
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert (wa[name] - wb[name]).abs().max() < 1e-4, name


@pytest.mark.parametrize("arch, strategy", [("bert", "ddp"), ("gpt-neox", "fsdp2")])
def test_two_ranks_equal_one_rank_with_global_negatives(datasets, tmp_path, arch, strategy):  # noqa: F811
    data = datasets["bert" if arch == "bert" else "neox"]
    common = ["pretrain", "--preset", "tiny", *SMALL, f"model.architecture={arch}", f"data.path={data}",
              "max_steps=5", "save_every=5", "objective.negatives=global", f"distributed={strategy}"]
    if arch != "bert":
        common.append("objective.kind=clm")
    _run(2, [*common, "batch_size=2", "--run-dir", str(tmp_path / "two")])
    _run(1, [*common, "batch_size=4", "--run-dir", str(tmp_path / "one")])
    _assert_same_run(tmp_path / "one", tmp_path / "two")


def test_killed_rank_stops_the_job_and_resume_continues_on_1_and_2_processes(datasets, tmp_path):  # noqa: F811
    common = ["pretrain", "--preset", "tiny", *SMALL, f"data.path={datasets['bert']}", "max_steps=12",
              "save_every=4", "objective.negatives=global", "distributed=ddp", "batch_size=2"]
    _run(2, [*common, "--run-dir", str(tmp_path / "full")])

    killed = tmp_path / "killed"
    proc = _launch(2, [*common, "--run-dir", str(killed)])
    deadline = time.time() + 300
    while time.time() < deadline and max((_losses(killed) if (killed / "metrics.jsonl").exists() else {}) or {0: 0}) < 6:
        time.sleep(0.05)
    workers = subprocess.run(["pgrep", "-f", "-P", str(proc.pid), "headless"], capture_output=True, text=True).stdout.split()
    assert workers, "no worker processes found"
    os.kill(int(workers[-1]), signal.SIGKILL)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "failed" in out.lower() or "error" in out.lower(), out[-2000:]
    assert max(_losses(killed)) < 12

    for nproc, batch in ((1, 4), (2, 2)):
        copy = tmp_path / f"resume-{nproc}"
        subprocess.run(["cp", "-r", str(killed), str(copy)], check=True)
        _run(nproc, ["pretrain", "--run-dir", str(copy), "--resume", f"batch_size={batch}"])
        _assert_same_run(tmp_path / "full", copy)

    with pytest.raises(AssertionError, match="global batch would change"):
        _run(1, ["pretrain", "--run-dir", str(tmp_path / "resume-1"), "--resume", "batch_size=2", "max_steps=14"])


def test_time_budget_gives_every_rank_the_same_max_steps(datasets, tmp_path):  # noqa: F811
    """The real collective under gloo (the agreement itself is unit-tested in test_pretrain.py:
    DDP keeps ranks in lockstep, so here their windows rarely differ)."""
    import json

    run = tmp_path / "budget"
    out = _run(2, ["pretrain", "--preset", "tiny", *SMALL, f"data.path={datasets['bert']}", "batch_size=2",
                   "max_steps=100000", "budget.time_s=6", "budget.calibration_skip=2", "budget.calibration_steps=3",
                   "optim.warmup_steps=11", "save_every=100000", "eval_every=100000", "--run-dir", str(run)])
    summary = json.loads((run / "summary.json").read_text())
    assert 5 <= summary["steps"] < 100000, out[-2000:]
    assert summary["measured_s_per_step"] > 0
    # planned twice (the re-plan's measurement is the slowest rank's too), and both ranks stopped there
    assert summary["replanned_at"] and f"max_steps planned again: {summary['steps']} " in out, out[-2000:]


def test_ddp_compiles_clm_backbone_and_loss_as_one_graph_and_trains_like_eager(datasets, tmp_path):  # noqa: F811
    """Under DDP (no CUDA graphs) a compiled CLM run still takes backbone and loss as one graph
    (`captures_by_default`: auto -> the K×K reference), and its losses and weights follow the eager
    two-rank run (auto -> the chunked de-duplicated loss on the CPU: the same loss)."""
    common = ["pretrain", "--preset", "tiny", *SMALL, "model.architecture=gpt-neox", "objective.kind=clm",
              f"data.path={datasets['neox']}", "max_steps=3", "save_every=3", "eval_every=100",
              "distributed=ddp", "batch_size=2"]
    _run(2, [*common, "compile=false", "--run-dir", str(tmp_path / "eager")])
    out = _run(2, [*common, "compile=true", "--run-dir", str(tmp_path / "compiled")])
    assert "compile: backbone and loss as one graph (loss reference), mode=default" in out, out[-2000:]
    eager, compiled = _losses(tmp_path / "eager"), _losses(tmp_path / "compiled")
    assert sorted(compiled) == sorted(eager) == [1, 2, 3]
    for step, loss in eager.items():
        assert compiled[step] == pytest.approx(loss, rel=2e-4), step
    we, wc = _weights(tmp_path / "eager"), _weights(tmp_path / "compiled")
    assert we.keys() == wc.keys()
    for name in we:
        assert (we[name] - wc[name]).abs().max() < 1e-3, name
