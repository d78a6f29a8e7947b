"""A fresh clone with no ../shared: prepare -> pretrain (both flavours, encoder and decoder) -> export
-> every evaluation, through the CLI, on the synthetic fixtures of tests/fixtures.py (issue #13, item 9).

Also covers, on the same runs: presets fitted to the data (item 1: `tiny-gpt` on 256-token data),
parameter counts of the twins (item 7) and where `finetune-head` puts its run (item 6).
"""

from __future__ import annotations

import json

import pytest
import yaml

from headless.cli import main

TINY = ["--model.hidden_size", "32", "--model.num_layers", "2", "--model.num_heads", "2",
        "--model.intermediate_size", "64", "--batch-size", "4", "--max-steps", "4", "log_every=2", "eval_every=4",
        "eval_batches=1", "save_every=4", "tensorboard=false", "optim.warmup_steps=1", "--no-progress"]


def _run(args, capsys) -> str:
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert status == 0, err
    return out


@pytest.fixture(scope="module")
def clone(fixture_data, fixture_tokenizers, tmp_path_factory):
    """Prepared data, four pretraining runs and their exports, made once for the module."""
    root = tmp_path_factory.mktemp("clone")
    corpus = str(fixture_data["corpus"])
    out = {"root": root}
    for name, kind, seq_len in [("bert", "wordpiece", 32), ("gpt", "bpe", 256)]:
        out[f"{name}_data"] = root / f"{name}-data"
        assert main(["prepare", corpus, "--output", str(out[f"{name}_data"]), "--tokenizer",
                     str(fixture_tokenizers[kind]), "--seq-len", str(seq_len), "--validation-fraction", "0.1",
                     "--quiet"]) == 0
    for preset, data, flavour in [("tiny", "bert", "headless"), ("tiny-gpt", "gpt", "headless"),
                                  ("tiny-gpt", "gpt", "vanilla")]:
        run = root / f"{preset}-{flavour}"
        # the tiny-gpt preset has 128 positions: with 256-token data it grows to fit (item 1)
        assert main(["pretrain", "--preset", preset, "--data", str(out[f"{data}_data"]), "--run-dir", str(run),
                     "--flavor", flavour, *TINY]) == 0
        out[f"{preset}-{flavour}"] = run
    out["encoder"] = root / "export-encoder"
    assert main(["export", str(out["tiny-headless"]), str(out["encoder"])]) == 0
    out["decoder"] = root / "export-decoder"
    assert main(["export", str(out["tiny-gpt-headless"]), str(out["decoder"]), "--add-head"]) == 0
    return out


def test_prepare_pretrain_export_without_shared_data(clone):
    from transformers import AutoModel, AutoModelForCausalLM

    manifest = json.loads((clone["gpt_data"] / "manifest.json").read_text())
    assert manifest["seq_len"] == 256 and manifest["splits"]["train"]["num_sequences"] > 8
    for run in ("tiny-headless", "tiny-gpt-headless", "tiny-gpt-vanilla"):
        summary = json.loads((clone[run] / "summary.json").read_text())
        assert summary["steps"] == 4 and summary["final_val_loss"] is not None
        assert (clone[run] / "curves.png").is_file()
    AutoModel.from_pretrained(clone["encoder"])
    AutoModelForCausalLM.from_pretrained(clone["decoder"])


def test_tiny_gpt_preset_fits_256_token_data(clone, capsys):
    """Item 1: a preset's positions grow to the data; data.seq_len follows it; explicit values are law."""
    config = yaml.safe_load((clone["tiny-gpt-headless"] / "config.yaml").read_text())
    assert config["data"]["seq_len"] == 256 and config["model"]["max_position_embeddings"] == 256
    base = ["pretrain", "--preset", "tiny-gpt", "--data", str(clone["gpt_data"]), "--show-config"]
    assert main([*base, "data.seq_len=128"]) == 2
    err = capsys.readouterr().err.strip()
    assert "data.seq_len=128 but" in err and "256-token" in err and len(err.splitlines()) == 1
    assert main([*base, "--model.max_position_embeddings", "128"]) == 2
    err = capsys.readouterr().err.strip()
    assert "set model.max_position_embeddings=256" in err and len(err.splitlines()) == 1
    assert main([*base, "data.seq_len=256"]) == 0  # an explicit value that agrees is honoured
    assert "seq_len: 256" in capsys.readouterr().out


def test_twins_report_the_same_non_embedding_parameters(clone):
    """Item 7: the vanilla twin's untied head is not counted as non-embedding."""
    headless = json.loads((clone["tiny-gpt-headless"] / "summary.json").read_text())
    vanilla = json.loads((clone["tiny-gpt-vanilla"] / "summary.json").read_text())
    assert vanilla["non_embedding_parameters"] == headless["non_embedding_parameters"]
    assert vanilla["parameters"] > headless["parameters"]


def test_decoder_evaluations(clone, fixture_data, tmp_path, capsys):
    out = _run(["eval", "lambada", clone["decoder"], "--data", fixture_data["lambada"], "--limit", "4",
                "--no-progress", "--output", tmp_path / "lambada"], capsys)
    assert "accuracy" in out and (tmp_path / "lambada" / "lambada.json").is_file()
    out = _run(["eval", "zeroshot", clone["decoder"], "--data-dir", fixture_data["zeroshot"], "--limit", "4",
                "--quiet", "--output", tmp_path / "zs"], capsys)
    result = json.loads((tmp_path / "zs" / "zeroshot.json").read_text())
    assert set(result["tasks"]) == {"boolq", "piqa", "arc_easy", "pubmedqa"}
    out = _run(["analyze", clone["decoder"], clone["encoder"], "--text", fixture_data["corpus"], "--pairs", "50",
                "--sequences", "8", "--max-length", "32", "--output", tmp_path / "analysis"], capsys)
    assert (tmp_path / "analysis" / "analysis.json").is_file()


def test_encoder_evaluations(clone, fixture_data, tmp_path, capsys):
    common = ["--epochs", "1", "--batch-size", "8", "--quiet", "--device", "cpu"]
    _run(["glue", clone["encoder"], "--data-dir", fixture_data["glue"], *common, "--output", tmp_path / "glue"], capsys)
    glue = json.loads((tmp_path / "glue" / "glue.json").read_text())
    assert len(glue["tasks"]) == 9, list(glue["tasks"])
    _run(["xnli", clone["encoder"], "--data-dir", fixture_data["xnli"], *common, "--output", tmp_path / "xnli"],
         capsys)
    assert (tmp_path / "xnli" / "xnli.json").is_file()


def test_finetune_head_runs_under_runs_and_evaluates_sparingly(clone, tmp_path, monkeypatch, capsys):
    """Item 6: the run (optimizer state) is not left next to the export; no evaluation every few steps."""
    monkeypatch.chdir(tmp_path)
    output = tmp_path / "exports" / "hlm-ft"
    _run(["finetune-head", clone["tiny-gpt-headless"], output, "--data", clone["gpt_data"], "--tokens", 2 * 256 * 20,
          "--batch-size", "2", "--no-progress", "tensorboard=false"], capsys)
    assert sorted(p.name for p in (tmp_path / "exports").iterdir()) == ["hlm-ft"]
    run = tmp_path / "runs" / "hlm-ft-finetune-head"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["max_steps"] == 20 and config["eval_every"] == 20
    evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in evals if r["split"] == "val"] == [20]



def test_the_trainer_behaviour_tests_run_without_shared_data():
    """SIGKILL-resume exactness, corrupt-checkpoint fallback, the non-finite step and the
    SIGTERM/SIGINT save are the trainer tests that matter most: they train on the generated
    fixtures (`fixture_datasets`), so a fresh clone runs them instead of skipping them (issue #24)."""
    import inspect

    import test_pretrain
    import test_run_safety

    shared = {"shared_data", "datasets", "neox_tokenizer_file", "bert_vocab_file", "tiny_bert_dir"}
    for test in (test_pretrain.test_sigkill_then_resume_matches_uninterrupted,
                 test_pretrain.test_corrupt_checkpoint_falls_back_then_is_refused_when_none_verifies,
                 test_pretrain.test_nonfinite_step_leaves_weights_and_adamw_state_unchanged,
                 test_run_safety.test_11_sigterm_and_sigint_save_a_checkpoint_and_exit_with_a_message):
        fixtures = set(inspect.signature(test).parameters)
        assert "fixture_datasets" in fixtures and not fixtures & shared, test.__name__
