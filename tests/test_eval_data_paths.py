"""Issue #13 item 2: evaluation data comes from the command line, from $HEADLESS_SHARED_DATA (an
absolute folder laid out like ../shared/data), or from the hub; never from the current directory,
and the error names all three."""

from __future__ import annotations

import pytest

from headless.errors import HeadlessError
from headless.eval import datasets as evdata
from headless.eval.lambada import default_data_path, read_lambada
from headless.eval.zeroshot import read_task, task_path


@pytest.fixture
def offline(monkeypatch):
    def no_hub(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(evdata, "_load_hub", no_hub)
    monkeypatch.setenv("HEADLESS_CACHE", "/nonexistent-headless-cache")


def test_env_var_points_at_a_shared_layout(fixture_data, monkeypatch, tmp_path, offline):
    monkeypatch.setenv("HEADLESS_SHARED_DATA", str(fixture_data["root"]))
    monkeypatch.chdir(tmp_path)  # the current directory plays no part
    assert default_data_path() == fixture_data["lambada"]
    assert task_path("piqa") == fixture_data["zeroshot"] / "piqa.jsonl"


@pytest.mark.parametrize("what", ["lambada", "zeroshot", "xnli"])
def test_missing_data_names_the_flag_the_variable_and_the_hub(what, monkeypatch, tmp_path, offline):
    from headless.eval.xnli import load_xnli

    monkeypatch.delenv("HEADLESS_SHARED_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    call = {"lambada": default_data_path, "zeroshot": lambda: task_path("boolq"), "xnli": lambda: load_xnli(None)}
    with pytest.raises(HeadlessError) as err:
        call[what]()
    message = str(err.value)
    assert "HEADLESS_SHARED_DATA" in message and "hub dataset" in message, message
    assert ("--data " if what == "lambada" else "--data-dir") in message, message


def test_relative_env_var_is_refused(monkeypatch):
    monkeypatch.setenv("HEADLESS_SHARED_DATA", "../shared/data")
    with pytest.raises(HeadlessError, match="must be an absolute path"):
        evdata.shared_data_root()


def test_cli_error_is_one_line(monkeypatch, tmp_path, offline, capsys):
    from headless.cli import main

    monkeypatch.delenv("HEADLESS_SHARED_DATA", raising=False)
    (tmp_path / "model").mkdir()
    assert main(["eval", "lambada", str(tmp_path / "model")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "HEADLESS_SHARED_DATA" in err and "EleutherAI/lambada_openai" in err


def test_hub_rows_are_converted_to_the_readers_layouts(monkeypatch, tmp_path):
    rows = {
        "EleutherAI/lambada_openai": [{"text": "the cat sat on the mat"}],
        "baber/piqa": [{"goal": "open a jar", "sol1": "twist the lid", "sol2": "eat the lid", "label": 0}],
        "allenai/ai2_arc": [{"question": "What is hot?", "choices": {"text": ["ice", "fire"], "label": ["A", "B"]},
                             "answerKey": "B"}],
        "super_glue": [{"passage": "Cats purr.", "question": "do cats purr", "label": 1}],
        "qiaojin/PubMedQA": [{"context": {"contexts": ["A study."]}, "question": "Does it work?",
                              "final_decision": "maybe"}],
    }
    monkeypatch.setattr(evdata, "_load_hub", lambda name, config, split: rows[name])
    monkeypatch.setenv("HEADLESS_CACHE", str(tmp_path))
    monkeypatch.delenv("HEADLESS_SHARED_DATA", raising=False)
    assert read_lambada(default_data_path()) == [("the cat sat on the", "mat")]
    piqa = read_task(task_path("piqa"))[0]
    assert piqa.context == "Question: open a jar\nAnswer:" and piqa.choices == ["twist the lid", "eat the lid"]
    assert read_task(task_path("arc_easy"))[0].gold == 1
    assert read_task(task_path("boolq"))[0].context == "Passage: Cats purr.\nQuestion: do cats purr?\nAnswer:"
    assert read_task(task_path("pubmedqa"))[0].gold == 2
