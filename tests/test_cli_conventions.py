"""Issue #13 item 4: one command-line convention for every subcommand."""

from __future__ import annotations

import pytest
import yaml

from headless.cli import build_parser, main
from headless.cli.options import config_fields
from headless.config import BudgetConfig, TrainConfig


def _show(args, capsys) -> dict:
    assert main(["pretrain", "--show-config", *args]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_litgpt_style_options_and_overrides_mix(capsys):
    config = _show(["--optim.lr", "1e-3", "--max_steps", "7", "--flavor", "vanilla", "model.num_layers=3",
                    "--batch-size=5", "--preset", "tiny", "optim.warmup_steps=4", "--data.seq-len", "64"], capsys)
    assert config["optim"]["lr"] == 1e-3 and config["max_steps"] == 7 and config["flavour"] == "vanilla"
    assert config["model"]["num_layers"] == 3 and config["batch_size"] == 5
    assert config["optim"]["warmup_steps"] == 4 and config["data"]["seq_len"] == 64  # after an option
    assert _show(["--max-steps", "9", "--lr", "2e-4"], capsys)["max_steps"] == 9


def test_bool_options_take_a_value_or_none(capsys):
    assert _show(["--compile"], capsys)["compile"] is True
    config = _show(["--tensorboard", "false", "--compile", "max_steps=3"], capsys)
    assert config["tensorboard"] is False and config["compile"] is True and config["max_steps"] == 3


def test_config_without_preset_uses_the_documented_default(tmp_path, capsys):
    path = tmp_path / "mine.yaml"
    path.write_text("max_steps: 11\n")
    config = _show(["--config", str(path)], capsys)
    assert config["preset"] == "tiny" and config["max_steps"] == 11 and config["model"]["hidden_size"] == 128


@pytest.mark.parametrize("argv, suggestion", [
    (["pretrain", "--optim.lrr", "1e-3"], "--optim.lr"),
    (["pretrain", "--max-step", "3"], "--max-steps"),
    (["pretrain", "--flavr", "vanilla"], "--flavor"),
    (["finetune-head", "a", "b", "--data", "d", "--batchsize", "2"], "--batch-size"),
    (["prepare", "x", "-o", "y", "-t", "z", "--seq-len", "4", "--max-docs", "3"], "--limit"),
    (["eval", "lambada", "m", "--limt", "3"], "--limit"),
    (["glue", "m", "--data_dir", "d"], "--data"),
])
def test_unknown_options_get_one_line_and_a_suggestion(argv, suggestion, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"did you mean {suggestion}?" in err, err


def test_other_parse_errors_are_one_line_too(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "lambada"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model_dir" in err


def test_help_lists_every_config_field_with_its_doc():
    parser = build_parser()
    pretrain = parser._subparsers._group_actions[0].choices["pretrain"]
    text = pretrain.format_help()
    skipped = {"flavour", "run_dir", "preset", "progress"}  # own options: --flavour, --run-dir, ...
    for key, _, _, doc, _ in config_fields(TrainConfig):
        if key not in skipped:
            assert f"--{key}" in text, key
            assert doc, f"{key} has no doc comment in headless/config.py"


def test_a_comment_wrapped_over_lines_reads_as_one_sentence():
    from headless.cli.options import field_docs
    from headless.lab.reproduce.config import StudyConfig

    doc = field_docs(StudyConfig)["xnli_max_train_examples"]
    assert "train-<lang>.tsv files in xnli/ (MNLI-sized" in doc and "; in xnli/" not in doc
    assert field_docs(BudgetConfig)["calibration_skip"] == "time budget: untimed first steps (compilation)"


@pytest.mark.parametrize("command", [["prepare", "x", "-o", "y", "-t", "z", "--seq-len", "4"], ["pretrain"],
                                     ["finetune-head", "a", "b", "--data", "d"], ["eval", "lambada", "m"],
                                     ["eval", "zeroshot", "m"], ["glue", "m"], ["xnli", "m"], ["bench"],
                                     ["tokenizer", "train", "--vocab-size", "64", "-o", "x"]])
def test_the_same_progress_flag_everywhere(command):
    parser = build_parser()
    for flag in ("--no-progress", "--quiet", "-q"):
        args, extras = parser.parse_known_args(command + [flag])
        assert not extras and args.quiet is True, (command, flag)


def _subparsers(parser):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                yield from _subparsers(sub)


def test_flavour_and_flavor_are_both_accepted_wherever_one_is(capsys):
    """`reproduce --flavor` was refused while `pretrain --flavor` worked (issue #28)."""
    seen = []
    for name, sub in _subparsers(build_parser()):
        options = set(sub._option_string_actions)
        if options & {"--flavour", "--flavor"}:
            seen.append(name)
            assert {"--flavour", "--flavor"} <= options, name
            assert sub._option_string_actions["--flavour"] is sub._option_string_actions["--flavor"], name
    assert {"pretrain", "reproduce"} <= set(seen)
    args = build_parser().parse_args(["reproduce", "decoder", "--flavor", "vanilla"])
    assert args.flavour == "vanilla"
