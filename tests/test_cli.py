"""Every subcommand answers --help; the top level lists them all."""

import pytest

from headless.cli import build_parser, main

COMMANDS = [["prepare"], ["tokenizer", "train"], ["pretrain"], ["finetune-head"], ["export"], ["eval", "lambada"],
            ["eval", "zeroshot"], ["eval", "harness"], ["eval", "analyze"], ["eval", "glue"], ["eval", "xnli"],
            ["analyze"], ["glue"], ["xnli"], ["bench"]]  # the last three: hidden aliases of `eval TASK`


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: headless " + command[0] in capsys.readouterr().out


def test_top_level_lists_commands(capsys):
    help_text = build_parser().format_help()
    for command in {c[0] for c in COMMANDS} - {"analyze", "glue", "xnli"}:
        assert command in help_text
    assert main([]) == 2


def test_show_config_prints_the_resolved_config(capsys):
    assert main(["pretrain", "--preset", "pythia-70m", "--flavour", "vanilla", "--show-config", "optim.lr=2e-4"]) == 0
    out = capsys.readouterr().out
    assert "flavour: vanilla" in out and "lr: 0.0002" in out and "architecture: gpt-neox" in out
