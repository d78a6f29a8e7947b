"""Issue #27 item 8: one flag per concept on every command, a --help that does not import torch,
HF Trainer spellings answered with ours."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import pytest

from headless.cli import build_parser, main


def _commands(parser, prefix=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from _commands(sub, (*prefix, name))


def _visible(sub) -> set[str]:
    return {s for a in sub._actions if a.help != argparse.SUPPRESS for s in a.option_strings}


def test_old_spellings_are_hidden_aliases_of_one_flag_per_concept():
    seen = {}
    for name, sub in _commands(build_parser()):
        shown = _visible(sub)
        for old in ("--data-dir", "--dtype", "--bf16", "--max-train-examples", "--max-eval-examples",
                    "--max-documents", "--max-sequences", "--text", "--sequences"):
            assert old not in shown, (name, old)
        if "--data-dir" in sub._option_string_actions:
            seen.setdefault("data", []).append(name)
            assert sub._option_string_actions["--data-dir"].dest == sub._option_string_actions["--data"].dest
        if "--dtype" in sub._option_string_actions or "--bf16" in sub._option_string_actions:
            seen.setdefault("precision", []).append(name)
            assert "--precision" in shown, name
    assert {("eval", "glue"), ("eval", "xnli"), ("eval", "zeroshot")} <= set(seen["data"])
    assert {("eval", "lambada"), ("eval", "glue")} <= set(seen["precision"])


@pytest.mark.parametrize("argv, dest, value", [
    (["eval", "glue", "m", "--data-dir", "d"], "data", "d"),
    (["eval", "glue", "m", "--data", "d"], "data", "d"),
    (["glue", "m", "--max-train-examples", "5", "--max-eval-examples", "7"], "train_limit", 5),
    (["glue", "m", "--max-eval-examples", "7"], "limit", 7),
    (["xnli", "m", "--bf16"], "precision", "bf16"),
    (["eval", "xnli", "m", "--precision", "bf16"], "precision", "bf16"),
    (["eval", "lambada", "m", "--dtype", "bfloat16"], "precision", "bf16"),
    (["eval", "zeroshot", "m", "--data-dir", "z"], "data", "z"),
    (["eval", "heldout", "m", "--data", "x", "--max-sequences", "3"], "limit", 3),
    (["prepare", "a", "-o", "b", "-t", "c", "--seq-len", "4", "--max-documents", "9"], "limit", 9),
    (["analyze", "m", "--text", "t.txt", "--sequences", "4"], "limit", 4),
    (["eval", "analyze", "m", "--text", "t.txt"], "data", "t.txt"),
])
def test_one_flag_per_concept_old_spellings_still_work(argv, dest, value):
    args = build_parser().parse_args(argv)
    assert str(getattr(args, dest)) == str(value)


def test_evaluations_are_grouped_under_eval():
    commands = {name for name, _ in _commands(build_parser())}
    assert {("eval", t) for t in ("lambada", "zeroshot", "heldout", "harness", "glue", "xnli", "analyze")} <= commands
    top = build_parser().format_help()
    for hidden in ("glue", "xnli", "analyze"):  # old top-level spellings: accepted, not listed
        assert f"\n    {hidden} " not in top


def test_reproduce_takes_no_progress_like_every_command(capsys):
    assert main(["reproduce", "decoder", "--no-progress", "--show-config"]) == 0
    assert "progress: false" in capsys.readouterr().out


def test_precision_a_command_does_not_support_is_one_line(tmp_path, capsys):
    assert main(["eval", "glue", str(tmp_path), "--precision", "fp16"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "fp32, bf16" in err


@pytest.mark.parametrize("argv, ours", [
    (["pretrain", "--learning_rate", "1e-3"], "--optim.lr"),
    (["pretrain", "--output_dir", "x"], "--run-dir"),
    (["pretrain", "--per_device_train_batch_size", "4"], "--batch-size"),
    (["pretrain", "--num_train_epochs", "3"], "--max-steps"),
    (["pretrain", "--gradient_accumulation_steps", "2"], "--grad-accum"),
    (["pretrain", "--bf16"], "--precision"),
    (["pretrain", "--logging_steps", "5"], "--log-every"),
    (["eval", "glue", "m", "--learning_rate", "1e-5"], "--lr"),
    (["eval", "glue", "m", "--num_train_epochs", "3"], "--epochs"),
    (["eval", "glue", "m", "--output_dir", "o"], "--output"),
    (["eval", "glue", "m", "--max_train_samples", "5"], "--train-limit"),
    (["finetune-head", "a", "b", "--data", "d", "--max_steps", "9"], "--tokens"),
    (["bench", "--max_steps", "9"], "--steps"),
    (["eval", "lambada", "m", "--per_device_eval_batch_size", "4"], "--batch-size"),
])
def test_hf_trainer_spellings_point_at_ours(argv, ours, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"did you mean {ours}?" in err, err


def test_help_builds_the_parser_without_torch_and_fast():
    code = ("import sys, time; t = time.perf_counter(); from headless.cli import build_parser; "
            "build_parser().format_help(); print(time.perf_counter() - t); "
            "print(sorted(m for m in ('torch', 'transformers', 'numpy', 'datasets', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[1] == "[]", out  # no heavy import to build the parser
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "headless", "--help"], capture_output=True, check=True)
    assert time.perf_counter() - start < 3.0  # < 1 s on an idle machine; slack for a loaded CI box


def test_every_evaluation_writes_its_tables_to_one_default_place(monkeypatch, tmp_path):
    """Issue #27 item 8: --output, else $HEADLESS_EVAL_RESULTS (default ./eval-results) / the model's
    name, for every evaluation (GLUE and XNLI wrote there, LAMBADA only with --output)."""
    from pathlib import Path

    from headless.cli.options import results_dir

    model = tmp_path / "models" / "p70-hlm-ft"
    assert results_dir(tmp_path / "out", model) == tmp_path / "out"
    monkeypatch.setenv("HEADLESS_EVAL_RESULTS", str(tmp_path / "results"))
    assert results_dir(None, model) == tmp_path / "results" / "p70-hlm-ft"
    monkeypatch.delenv("HEADLESS_EVAL_RESULTS")
    assert results_dir(None, model) == Path("eval-results") / "p70-hlm-ft"
    import headless.cli.classify as classify
    import headless.cli.eval as cli_eval

    source = Path(cli_eval.__file__).read_text() + Path(classify.__file__).read_text()
    assert "output_dir=args.output" not in source and "output_dir=a.output" not in source
