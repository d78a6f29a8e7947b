"""scripts/hlmft_lr_probe.sh on a tiny headless decoder laid out as `headless reproduce decoder`
leaves it: every rate fine-tuned and scored on held-out sequences the study does not report and on
LAMBADA, the raw head scored with RAW=1, one summary table and one archive, rewritten after each
variant so that a probe stopped by the device's time limit keeps what it finished."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_probe_fine_tunes_each_rate_and_scores_lambada(fixture_datasets, tmp_path):
    from fixtures import write_lambada

    from headless.config import load_config
    from headless.train.loop import pretrain

    work = tmp_path / "work"
    dataset = work / "decoder" / "data" / "decoder-abc"
    dataset.parent.mkdir(parents=True)
    dataset.symlink_to(fixture_datasets["neox"], target_is_directory=True)
    run = work / "decoder" / "runs" / "headless-seed0-abc"
    pretrain(load_config("tiny-gpt", flavour="headless", overrides=[
        "model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64",
        f"data.path={dataset}", "batch_size=4", "max_steps=3", "progress=false", "tensorboard=false",
        f"run_dir={run}"]))
    write_lambada(tmp_path / "root" / "lambada" / "lambada_openai_dev.jsonl")
    env = dict(os.environ, WORK=str(work), DATA_ROOT=str(tmp_path / "root"), OUT=str(tmp_path / "out"),
               LRS="1e-5", TOKENS="512", PROBE="1", RAW="1", HELDOUT_SKIP="2", HELDOUT_N="2", DEVICE="cpu", TMPDIR=str(tmp_path),
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    done = subprocess.run(["bash", str(ROOT / "scripts" / "hlmft_lr_probe.sh"), "0"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = (tmp_path / "out" / "hlmft-lr-probe-summary.md").read_text().splitlines()
    assert [row.split("|")[1].strip() for row in summary[2:]] == ["raw", "lr-1e-5", "probe-1e-3"]
    assert "2 sequences after the first 2 (decides)" in summary[0]  # chosen on text no study reports
    assert all(float(row.split("|")[2]) > 0 and 0 <= float(row.split("|")[3]) <= 100 for row in summary[2:])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["hlmft-lr-probe-summary.md", "hlmft-lr-probe.tgz"]
    with tarfile.open(tmp_path / "out" / "hlmft-lr-probe.tgz") as packed:  # two files: the device returns 8
        names = packed.getnames()
    assert "hlmft-lr-probe/probe-1e-3-finetune-summary.md" in names and "hlmft-lr-probe/summary.md" in names
    assert any(n.startswith("hlmft-lr-probe/lr-1e-5/") and n.endswith("heldout.json") for n in names)
    assert not list(tmp_path.glob("hlmft-probe-*"))  # its scratch removed
    # no run of that seed: one line, exit 2
    done = subprocess.run(["bash", str(ROOT / "scripts" / "hlmft_lr_probe.sh"), "7"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "no headless run of seed 7" in done.stdout
