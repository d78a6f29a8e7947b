"""scripts/merge_pieces.py: device calls' archives into a campaign folder, never replacing a file."""
from __future__ import annotations

import io
import json
import sys
import tarfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import merge_pieces  # noqa: E402


def _archive(path: Path, files: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"study/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _piece(flavour: str, seed: int) -> str:
    return json.dumps({"study": "study", "flavour": flavour, "seed": seed,
                       "train_config": {"run_dir": f"runs/reproduce/study/runs/{flavour}-seed{seed}-abc"}})


def test_two_calls_of_one_twin_merge_into_its_files(tmp_path, capsys):
    first = _archive(tmp_path / "1.tgz", {"study-headless.log": "call one\nstep 9: the training data ran out; epoch 1\n",
                                          "headless-seed2-abc-metrics.jsonl": "partial\n"})
    second = _archive(tmp_path / "2.tgz", {"study-headless.log": "call two\n", "study-headless-seed2.json": _piece("headless", 2),
                                           "headless-seed2-abc-metrics.jsonl": "whole\n",
                                           "headless-seed2-abc-summary.md": "summary\n",
                                           "vanilla-seed0-zzz-metrics.jsonl": "another run's\n"})
    campaign = tmp_path / "campaign"
    campaign.mkdir()
    assert merge_pieces.main([str(campaign), str(first), str(second)]) == 0
    assert sorted(p.name for p in campaign.iterdir()) == [
        "study-headless-seed2-pretrain-metrics.jsonl", "study-headless-seed2-pretrain-summary.md",
        "study-headless-seed2.json", "study-headless-seed2.log"]
    assert (campaign / "study-headless-seed2-pretrain-metrics.jsonl").read_text() == "whole\n"  # the last call's
    log = (campaign / "study-headless-seed2.log").read_text()
    assert log == (f"# device call 1 ({first}: study-headless.log)\ncall one\n"
                   f"# device call 2 ({second}: study-headless.log)\ncall two\n")
    # the same archives again: the same files, nothing to do; another piece of that name: refused, nothing written
    assert merge_pieces.main([str(campaign), str(first), str(second)]) == 0
    other = _archive(tmp_path / "3.tgz", {"study-headless-seed2.json": _piece("headless", 2) + " ",
                                          "study-headless.log": "call three\n"})
    before = {p.name: p.read_bytes() for p in campaign.iterdir()}
    capsys.readouterr()
    assert merge_pieces.main([str(campaign), str(other)]) == 2
    assert "already holds other study-headless-seed2.json, study-headless-seed2.log" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in campaign.iterdir()} == before


def test_both_twins_of_a_seed_share_one_log(tmp_path):
    both = _archive(tmp_path / "both.tgz", {"study-both.log": "both twins\n", "study-headless-seed1.json": _piece("headless", 1),
                                            "study-vanilla-seed1.json": _piece("vanilla", 1)})
    campaign = tmp_path / "campaign"
    campaign.mkdir()
    assert merge_pieces.main([str(campaign), str(both)]) == 0
    assert sorted(p.name for p in campaign.iterdir()) == [
        "study-headless-seed1.json", "study-seed1.log", "study-vanilla-seed1.json"]


def test_an_archive_without_a_piece_says_so(tmp_path):
    empty = _archive(tmp_path / "empty.tgz", {"study-both.log": "stopped at WALL\n"})
    (tmp_path / "campaign").mkdir()
    with pytest.raises(SystemExit, match="no piece"):
        merge_pieces.main([str(tmp_path / "campaign"), str(empty)])
