"""`headless reproduce STUDY --size smoke` on generated data (no ../shared): end to end, every setting
checked before any data work, fractions kept or explained, seconds named for the device they ran on."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from headless.errors import HeadlessError


@pytest.fixture(scope="module")
def study_root(tmp_path_factory) -> Path:
    """tests/fixtures.py's files laid out like ../shared/data, with enwiki shards, books, German
    Wikipedia and the two tokenizers (generated, ~5 s)."""
    from fixtures import write_study_root

    return write_study_root(tmp_path_factory.mktemp("study-root"))


def test_smoke_sizes_layer_under_the_users_settings():
    from headless.lab.reproduce import load_study

    smoke = load_study("decoder", overrides=["size=smoke", "budget_s=3", "pretrain=[optim.lr=2e-3]"])
    assert smoke.size == "smoke" and smoke.preset == "tiny-gpt" and smoke.budget_s == 3
    assert smoke.subset_documents and smoke.enwiki_shards == 1
    assert smoke.pretrain[-1] == "optim.lr=2e-3" and "grad_accum=4" not in smoke.pretrain  # the protocol's: replaced
    full = load_study("decoder")
    assert full.size == "full" and full.preset == "pythia-160m" and full.subset_documents is None
    for study in ("encoder", "multilingual"):
        assert load_study(study, overrides=["size=smoke"]).preset == "tiny"


def test_smoke_study_runs_end_to_end_and_says_each_step(study_root, tmp_path, capsys):
    """The encoder study (the quickest: no HLM+FT) through the CLI, both twins and the report, on the
    generated root; on 2 busy CPU cores about a minute."""
    from headless.cli import main

    work, out = tmp_path / "work", tmp_path / "out"
    assert main(["reproduce", "encoder", "--size", "smoke", f"data_root={study_root}", "budget_s=2",
                 "progress=false", "--work-dir", str(work), "--output", str(out)]) == 0
    text = capsys.readouterr().out
    for said in ("headless reproduce encoder (size smoke)", "taking a subset of 2 files", "preparing 1 files + 1 validation",
                 "encoder: training twin headless", "encoder: training twin vanilla", "evaluating checkpoint 1 of",
                 "piece written:", f"writing the report to {out}", f"report written: {out / 'encoder-report.md'}"):
        assert said in text, said
    assert "GPU s" not in text and "CPU s" in text
    report = (out / "encoder-report.md").read_text()
    assert "| CPU s (headless / vanilla) |" in report and "GPU" not in report and "peak GiB" not in report
    for flavour in ("headless", "vanilla"):
        piece = json.loads((out / f"encoder-{flavour}-seed0.json").read_text())
        assert piece["study_config"]["size"] == "smoke"
        assert [e["requested"] for e in piece["fractions"]] == [0.5, 1.0]  # each fraction kept or explained
        for entry in piece["fractions"]:
            assert entry["kept"] and entry["step"] == round(entry["requested"] * piece["pretrain"]["steps"]) \
                or entry["reason"] in text
        assert {p["step"] for p in piece["points"]} == {e["step"] for e in piece["fractions"]}
        assert all("(subset)" in name for name in piece["data"]["inputs"])
        from headless.provenance import source_fingerprint  # which code made it, since the GPU copy has no git

        assert piece["environment"]["source"] == source_fingerprint()


@pytest.mark.parametrize("study", ["encoder", "multilingual", "decoder"])
def test_the_hf_head_vanilla_is_a_valid_setting_at_every_size(study):
    """`vanilla_pretrain=[objective.loss_implementation=hf]` (the paper's baseline, campaign_call.sh
    VANILLA_HF=1) is checked as the vanilla twin's, at a study's own sequence length too (smoke sizes
    set one: its fitting once read the preset as a headless twin and refused `hf` for CWT)."""
    from headless.lab.reproduce import load_study
    from headless.lab.reproduce.piece import train_config

    for size in ("smoke", "full"):
        config = load_study(study, overrides=[f"size={size}", "vanilla_pretrain=[objective.loss_implementation=hf]"])
        cfg = train_config(config, "vanilla", None, Path("run"))
        assert cfg.loss_kind == "ce" and cfg.objective.loss_implementation == "hf"


@pytest.mark.parametrize("bad, message", [
    (["pretrain=[optim.warmup_steps=2]"], "needs optim.warmup_steps >= budget.calibration_skip"),
    (["vanilla_pretrain=[model.num_heads=3]"], "the vanilla twin's pretraining settings"),  # before headless trains
    (["pretrain=[optim.lr=fast]"], "optim.lr"),
    (["seq_len=256", "pretrain=[model.max_position_embeddings=128]"], "exceeds model.max_position_embeddings"),
])
def test_a_bad_setting_fails_before_any_data_work(study_root, tmp_path, bad, message):
    from headless.lab.reproduce import load_study, run_study

    config = load_study("decoder", overrides=["size=smoke", f"data_root={study_root}", "progress=false", *bad])
    started = time.perf_counter()
    with pytest.raises(HeadlessError, match=message.replace("(", r"\(").replace("[", r"\[")):
        run_study(config, work_dir=tmp_path / "work", output_dir=tmp_path / "out")
    assert time.perf_counter() - started < 3  # no tokenising: well under a second on an idle core
    assert not (tmp_path / "work").exists() and not (tmp_path / "out").exists()


def test_missing_inputs_fail_before_any_data_work(study_root, tmp_path, capsys):
    import shutil

    from headless.cli import main

    root = tmp_path / "root"
    shutil.copytree(study_root, root, ignore=shutil.ignore_patterns("lambada"))
    assert main(["reproduce", "decoder", "--size", "smoke", f"data_root={root}", "--work-dir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert "evaluation data missing" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "w").exists()


def test_each_fraction_is_kept_or_its_drop_explained():
    from headless.lab.reproduce.piece import fraction_steps

    # a time budget fixed max_steps at step 30 of 30: nothing before it could be kept
    entries = fraction_steps([0.25, 0.5, 1.0], [30], 30, {"calibrated_at": 30})
    assert [e["step"] for e in entries] == [30, 30, 30] and [e["kept"] for e in entries] == [False, False, True]
    assert "fraction 0.25 (step 8) is not evaluated on its own: no checkpoint is kept before step 30" in entries[0]["reason"]
    assert entries[2]["reason"] is None
    # planned at step 12 of 100: 0.1 moves to step 12, its own checkpoint, and says so
    entries = fraction_steps([0.1, 0.5, 1.0], [12, 50, 100], 100, {"calibrated_at": 12})
    assert [e["step"] for e in entries] == [12, 50, 100] and all(e["kept"] for e in entries)
    assert "fraction 0.1 is evaluated at step 12 (0.12 of the run), not step 10" in entries[0]["reason"]
    assert entries[1]["reason"] is None and entries[2]["reason"] is None
    # two fractions that round to one step (equal tokens: no plan)
    entries = fraction_steps([0.5, 0.55, 1.0], [2, 4], 4, {})
    assert not entries[0]["kept"] and "both round to that step" in entries[0]["reason"]


def test_the_budget_floor_is_said_when_it_overrides_the_budget():
    from headless.config import load_config
    from headless.lab.reproduce import load_study
    from headless.lab.reproduce.piece import budget_note

    config = load_study("decoder", overrides=["size=smoke", "budget_s=10"])
    cfg = load_config("tiny-gpt", overrides=config.pretrain + ["budget.time_s=10", "max_steps=1000000"])
    floor = budget_note(config, cfg, {"steps": 6, "calibrated_at": 6}, spent=279.0)
    assert "spent before the time budget could plan" in floor and "calibration" in floor
    assert budget_note(config, cfg, {"steps": 100, "calibrated_at": 6}, spent=10.2) is None  # within tolerance
    assert "not the budget's 10 s" in budget_note(config, cfg, {"steps": 100, "calibrated_at": 6}, spent=14.0)


def _piece(flavour: str, device: str) -> dict:
    from headless.lab.reproduce.piece import PIECE_FORMAT

    variants = ("hlm_ft", "headless_raw") if flavour == "headless" else ("vanilla",)
    points = [{"fraction": f, "step": int(10 * f), "tokens": int(100 * f), "epochs": f, "pretrain_gpu_s": 10 * f,
               "wall_s": 10 * f, "variants": {v: {"gpu_s": 10 * f, "scores": {"lambada_acc": [f], "heldout_ce": [2 - f]}}
                                             for v in variants}} for f in (0.5, 1.0)]
    return {"format": PIECE_FORMAT, "study": "decoder", "flavour": flavour, "seed": 0, "compare": "time",
            "budget_s": 10.0, "data": {"fingerprint": "f", "train_tokens": 100, "inputs": ["a"]}, "eval_fingerprint": "e",
            "pretrain": {"steps": 10, "tokens": 100, "tokens_per_s": 10, "epochs": 1.0, "gpu_s": 10.0,
                         "parameters": 1e6, "measured_s_per_step": 1.0, "peak_mem_gib": 1.5},
            "points": points, "environment": {"device": device},
            "fractions": [{"requested": 0.25, "step": 5, "fraction": 0.5, "kept": False,
                           "reason": "fraction 0.25 (step 2) is not evaluated on its own: because"},
                          {"requested": 0.5, "step": 5, "fraction": 0.5, "kept": True, "reason": None},
                          {"requested": 1.0, "step": 10, "fraction": 1.0, "kept": True, "reason": None}]}


def test_seconds_are_gpu_seconds_only_when_every_device_was_a_gpu():
    from headless.lab.reproduce.piece import time_unit

    assert time_unit(["NVIDIA H100", "NVIDIA H200"]) == "GPU s"
    assert time_unit(["cpu", "cpu"]) == "CPU s"
    assert time_unit(["cpu", "NVIDIA H100"]) == time_unit(["mps"]) == time_unit([None]) == "s"


@pytest.mark.parametrize("devices, unit", [(("cpu", "cpu"), "CPU s"), (("NVIDIA H100", "NVIDIA H100"), "GPU s")])
def test_the_report_names_the_seconds_of_the_device_and_peak_memory_only_on_cuda(tmp_path, capsys, devices, unit):
    from headless.cli import main

    paths = []
    for flavour, device in zip(("headless", "vanilla"), devices):
        paths.append(tmp_path / f"{flavour}.json")
        paths[-1].write_text(json.dumps(_piece(flavour, device)))
    assert main(["report", *map(str, paths), "--output", str(tmp_path / "out"), "--bootstrap", "0"]) == 0
    printed = capsys.readouterr().out
    text = (tmp_path / "out" / "decoder-report.md").read_text()
    assert f"| {unit} (headless / vanilla) | at equal {unit} |" in text and f"at equal {unit}:" in printed
    assert ("GPU" in text) == (unit == "GPU s") and ("GPU" in printed) == (unit == "GPU s")
    assert ("peak GiB" in text) == ("NVIDIA H100" in devices)
    assert "- headless seed 0: fraction 0.25 (step 2) is not evaluated on its own: because" in text


def test_a_subset_follows_its_source_not_its_name(tmp_path):
    """Two data roots in one work directory: each gets its own subset of its own files."""
    from fixtures import _write_xz, documents
    from headless.lab.reproduce import load_study
    from headless.lab.reproduce.data import subset_files

    config = load_study("encoder", overrides=["subset_documents=3", "subset_chars=50"])
    one = _write_xz(tmp_path / "a" / "enwiki-000.jsonl.xz", documents(5, seed=1))
    two = _write_xz(tmp_path / "b" / "enwiki-000.jsonl.xz", documents(5, seed=2))
    first, second = subset_files(config, tmp_path / "work", [one]), subset_files(config, tmp_path / "work", [two])
    assert first != second
    rows = [json.loads(line)["text"] for line in first[0].read_text().splitlines()]
    assert len(rows) == 3 and all(len(r) <= 50 for r in rows) and rows[0] == documents(5, seed=1)[0][:50]
    assert subset_files(load_study("encoder"), tmp_path / "work", [one]) == [one]  # no subset: the files themselves


def test_prepare_only_trains_the_tokenizer_and_tokenizes_without_training(study_root, tmp_path, capsys):
    """`--prepare-only` on a CPU machine: the study's own tokenizer and packed data land in
    WORK_DIR/STUDY under names that hash their inputs, nothing is trained, and a second call (the
    GPU job) finds both and reuses them."""
    from headless.cli import main

    work = tmp_path / "work"
    args = ["reproduce", "multilingual", "--size", "smoke", f"data_root={study_root}", "--prepare-only",
            "--work-dir", str(work)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "training a 2,000-entry WordPiece tokenizer" in text and "prepared: " in text and "epochs" in text
    tokenizers = list((work / "multilingual" / "tokenizers").glob("multilingual-wordpiece-2000-*/tokenizer.json"))
    assert len(tokenizers) == 1
    assert list((work / "multilingual" / "data").glob("multilingual-*/manifest.json"))
    assert not (work / "multilingual" / "runs").exists()
    assert main(args) == 0
    again = capsys.readouterr().out
    assert "training a" not in again and "reusing the prepared data" in again
