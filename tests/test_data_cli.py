"""`headless prepare` and `headless tokenizer train` through headless.cli.main: help, success, errors."""

from __future__ import annotations

import json

import pytest

from headless.cli import main


@pytest.mark.parametrize("argv", [["prepare", "--help"], ["tokenizer", "train", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--output" in out and ("--seq-len" in out or "--vocab-size" in out)


def _bad_inputs(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"fine\xff")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n[1, 2]\n')
    (tmp_path / "bad.csv").write_text("a,b\n")
    (tmp_path / "empty.jsonl").write_text('{"text": ""}\n')
    return {
        "missing.jsonl": "input not found",
        "nothing-*.jsonl": "no file matches",
        "bad.csv": "unknown file type",
        "bad.txt": "not valid UTF-8 (byte offset 4)",
        "bad.jsonl": "bad.jsonl:2: no field 'text'",
        "empty.jsonl": "empty corpus",
    }


def test_bad_inputs_exit_2_with_one_line(tmp_path, capsys, bert_vocab_file):
    for name, message in _bad_inputs(tmp_path).items():
        status = main(["prepare", str(tmp_path / name), "--output", str(tmp_path / "out"),
                       "--tokenizer", str(bert_vocab_file), "--seq-len", "8", "-q"])
        err = capsys.readouterr().err
        assert status == 2, name
        assert err.startswith("headless: error: ") and message in err and err.count("\n") == 1, err
    assert main(["prepare", "--output", str(tmp_path / "o"), "--tokenizer", str(tmp_path / "nope.json"),
                 "--seq-len", "8"]) == 2
    assert "tokenizer not found" in capsys.readouterr().err
    assert main(["tokenizer", "train", str(tmp_path / "bad.jsonl"), "--vocab-size", "100",
                 "--output", str(tmp_path / "t"), "-q"]) == 2
    assert not (tmp_path / "out").exists() and not (tmp_path / "t").exists()


def test_prepare_default_corpus_and_rerun(tmp_path, capsys, bert_vocab_file):
    def argv(seq_len: str, *extra: str) -> list[str]:
        return ["prepare", "--output", str(tmp_path / "ds"), "--tokenizer", str(bert_vocab_file),
                "--seq-len", seq_len, "--workers", "1", *extra]

    assert main(argv("64", "-q")) == 0
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert [(s["kind"], s["location"]) for s in manifest["sources"]] == [("default", "python-docs")]
    assert manifest["splits"]["train"]["num_sequences"] > 1000
    capsys.readouterr()
    assert main(argv("64")) == 0
    assert "already prepared" in capsys.readouterr().err
    assert main(argv("32", "-q")) == 2                      # other settings need --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main(argv("32", "--overwrite", "-q")) == 0
    assert json.loads((tmp_path / "ds" / "manifest.json").read_text())["seq_len"] == 32


def test_tokenizer_train_then_prepare(tmp_path, capsys):
    docs = tmp_path / "d.txt"
    docs.write_text("\n\n".join(f"Paragraph {i}: the quick brown fox jumps over the lazy dog." for i in range(200)))
    assert main(["tokenizer", "train", str(docs), "--kind", "wordpiece", "--vocab-size", "200",
                 "--output", str(tmp_path / "tok"), "-q"]) == 0
    assert "wordpiece tokenizer" in capsys.readouterr().out
    assert main(["prepare", str(docs), "--split-paragraphs", "--output", str(tmp_path / "ds"),
                 "--tokenizer", str(tmp_path / "tok"), "--seq-len", "16", "--validation-fraction", "0.1",
                 "-q"]) == 0
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    splits = manifest["splits"]
    assert splits["train"]["num_documents"] + splits["validation"]["num_documents"] == 200
    assert manifest["tokenizer"]["eos_token_id"] == manifest["tokenizer"]["special_token_ids"][3]  # [SEP]
