"""Input hygiene (issue #28, item 7): paths are the text the user wrote, numbers in YAML files read
as on the command line, and the bad inputs of the reliability probe each get one line and exit 2:
report pieces, another run's checkpoint, custom-code and pickle-payload models, absurd shapes, a
.xz that is not xz.  Each test failed on the code before the fix.  No ../shared data needed.
"""

from __future__ import annotations

import builtins
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import yaml

from headless.cli import main
from headless.config import config_from_file, load_config, save_config
from headless.errors import HeadlessError

TINY = ["model.hidden_size=32", "model.num_layers=2", "model.num_heads=2", "model.intermediate_size=64",
        "model.max_position_embeddings=32", "batch_size=4", "optim.warmup_steps=1", "log_every=1",
        "eval_every=100", "eval_batches=1", "progress=false", "tensorboard=false"]


def _fails(args, capsys, message):
    status = main(args)
    err = capsys.readouterr().err.strip()
    assert status == 2, err
    assert message in err, err
    assert len(err.splitlines()) == 1, err
    return err


# ------------------------------------------------------------------------------------------------
# paths are strings; numbers are numbers

ODD_NAMES = ["runs/hash #1", "010", "1e3", "null", "yes", "2024-01-01", "0x1F", "~", "[a]"]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_run_dir_and_data_are_the_text_written(name, capsys, tmp_path):
    status = main(["pretrain", "--data", f"data/ep {name}", "--run-dir", name, "--show-config"])
    shown = yaml.safe_load(capsys.readouterr().out)
    assert status == 0
    assert shown["run_dir"] == name and shown["data"]["path"] == f"data/ep {name}"
    config = load_config("tiny", overrides=[f"run_dir={name}", f"data.tokenizer={name}", f"data.cache_dir={name}",
                                            f"model.init_from={name}"])
    assert (config.run_dir, config.data.tokenizer, config.data.cache_dir, config.model.init_from) == (name,) * 4
    assert load_config("tiny", overrides=[f"data.inputs=data/ep {name}"]).data.inputs == [f"data/ep {name}"]
    save_config(config, tmp_path / "config.yaml")  # and the saved config.yaml reads back the same
    assert config_from_file(tmp_path / "config.yaml").run_dir == name


def test_an_empty_value_still_means_the_default(capsys):
    assert load_config("tiny", overrides=["run_dir=", "data.tokenizer="]).run_dir is None
    assert main(["pretrain", "--data.tokenizer", "", "--show-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["data"]["tokenizer"] is None


def test_config_file_strings_stay_strings_and_numbers_parse_as_on_the_command_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("run_dir: 010\nmax_steps: 1e3\ndevice: cpu\noptim:\n  lr: 1e-3\n  eps: 1E-8\n"
                    "  grad_clip: 5e-1\ndata:\n  path: 2024-01-01\n  tokenizer: yes\n  cache_dir:\n"
                    "model:\n  init_from: null\n  attn_implementation: eager\n")
    config = load_config("tiny", config_file=path)
    assert config.run_dir == "010" and config.data.path == "2024-01-01" and config.data.tokenizer == "yes"
    assert config.data.cache_dir is None and config.model.init_from is None
    assert config.optim.lr == 1e-3 and config.optim.eps == 1e-8 and config.optim.grad_clip == 0.5
    assert config.max_steps == 1000 and isinstance(config.max_steps, int)
    path.write_text("optim:\n  lr: one\n")
    with pytest.raises(HeadlessError, match="optim.lr must be a number"):
        load_config("tiny", config_file=path)


def test_study_paths_keep_their_text(tmp_path):
    from headless.lab.reproduce.config import load_study

    config = load_study("decoder", overrides=["data_root=data #1", "preset=010", "pretrain=run_dir=runs/x #1"])
    assert config.data_root == "data #1" and config.preset == "010" and config.pretrain[-1] == "run_dir=runs/x #1"
    path = tmp_path / "study.yaml"
    path.write_text("data_root: 2024-01-01\nbudget_s: 1e3\nfinetune_lr: 1e-4\n")
    config = load_study("decoder", config_file=path)
    assert config.data_root == "2024-01-01" and config.budget_s == 1000.0 and config.finetune_lr == 1e-4


def test_a_section_that_is_not_a_mapping_or_a_file_that_is_not_utf8_is_one_line(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "manifest.json").write_text(json.dumps({"seq_len": 64}))
    path = tmp_path / "c.yaml"
    for text in ("model: 5\n", "data: [1, 2]\n"):
        path.write_text(text)
        _fails(["pretrain", "--config", str(path), "--data", str(data), "--show-config"], capsys, "must be a mapping")
    _fails(["pretrain", "model=5", "--data", str(data), "--show-config"], capsys, "must be a mapping")
    path.write_text("[a]: 1\n")
    _fails(["pretrain", "--config", str(path), "--show-config"], capsys, "unhashable key")
    path.write_text("1: 2\n")
    _fails(["pretrain", "--config", str(path), "--show-config"], capsys, "unknown key 1")
    path.write_bytes(b"optim:\n  lr: \xff\xfe\n")
    _fails(["pretrain", "--config", str(path), "--show-config"], capsys, "not a UTF-8 text file")


# ------------------------------------------------------------------------------------------------
# model shapes and names


@pytest.mark.parametrize("override, message", [
    ("model.vocab_size=4000000000", "model too large"),
    ("model.hidden_size=1000000000", "model too large"),
    ("model.max_position_embeddings=100000000000", "model too large"),
    ("model.extra.hidden_act=nonexistent", "unknown name 'nonexistent'"),
    ("model.attn_implementation=foo", "unknown model.attn_implementation='foo'"),
])
def test_absurd_or_unknown_model_settings_are_refused_before_allocating(override, message):
    from headless.models import build_model

    config = load_config("tiny", overrides=["data.seq_len=16", override])
    with pytest.raises(HeadlessError, match=message):
        build_model(config.model, config.objective, config.loss_kind, 512)


# ------------------------------------------------------------------------------------------------
# report pieces


def _bad_pieces():
    from test_reproduce import _piece

    def edit(change):
        piece = _piece("vanilla", 1)
        change(piece)
        return piece

    def score(value):
        return lambda p: p["points"][-1]["variants"]["vanilla"]["scores"].__setitem__("lambada_acc", [value])

    return {
        "NaN score": (edit(score(float("nan"))), "not a list of finite numbers"),
        "inf score": (edit(score(float("inf"))), "not a list of finite numbers"),
        "string score": (edit(score("0.5")), "not a list of finite numbers"),
        "empty points": (edit(lambda p: p.__setitem__("points", [])), "no evaluated points"),
        "no points": (edit(lambda p: p.pop("points")), "no evaluated points"),
        "string seed": (edit(lambda p: p.__setitem__("seed", "abc")), "seed 'abc' is not an integer"),
        "path study": (edit(lambda p: p.__setitem__("study", "../..")), "study '../..' is not one of"),
        "unknown flavour": (edit(lambda p: p.__setitem__("flavour", "other")), "flavour 'other'"),
        "NaN gpu_s": (edit(lambda p: p["points"][0]["variants"]["vanilla"].__setitem__("gpu_s", float("nan"))),
                      "finite gpu_s"),
    }


@pytest.mark.parametrize("case", list(_bad_pieces()))
def test_report_refuses_bad_pieces_with_one_line(case, tmp_path, capsys):
    from test_reproduce import _piece

    piece, message = _bad_pieces()[case]
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_piece("headless", 0)))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(piece))  # NaN and inf as JSON writes them (NaN, Infinity)
    _fails(["report", str(good), str(bad), "--output", str(tmp_path / "out")], capsys, message)
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "decoder-report.md").exists()


# ------------------------------------------------------------------------------------------------
# runs, exports and models a command must not trust


@pytest.fixture(scope="module")
def runs(tmp_path_factory, fixture_data, fixture_tokenizers):
    """Two finished tiny runs (A, B) on a prepared synthetic dataset."""
    from headless.data.prepare import prepare_dataset
    from headless.train.loop import pretrain

    root = tmp_path_factory.mktemp("hygiene")
    data = root / "data"
    prepare_dataset([str(fixture_data["corpus"])], data, str(fixture_tokenizers["wordpiece"]), seq_len=32,
                    validation_fraction=0.1, progress=False)
    out = {"data": data}
    for name in ("A", "B"):
        config = load_config("tiny", overrides=[*TINY, f"data.path={data}", f"run_dir={root / name}",
                                                "max_steps=2", "save_every=2"])
        pretrain(config)
        out[name] = root / name
    return out


def _checkpoint(run: Path) -> Path:
    return sorted((run / "checkpoints").glob("step-*"))[-1]


def test_export_refuses_another_runs_checkpoint(runs, tmp_path, capsys):
    a, b = runs["A"], runs["B"]
    _fails(["export", str(a), str(tmp_path / "x"), "--checkpoint", str(_checkpoint(b))], capsys,
           "is not a checkpoint of")
    link = tmp_path / "link"
    link.symlink_to(_checkpoint(a))  # its own checkpoint through a symlink: accepted
    assert main(["export", str(a), str(tmp_path / "ok"), "--checkpoint", str(link)]) == 0
    assert not (tmp_path / "x").exists()


def test_export_after_editing_the_shape_is_one_line(runs, tmp_path, capsys):
    run = tmp_path / "edited"
    shutil.copytree(runs["A"], run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["model"]["hidden_size"] = 64
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    _fails(["export", str(run), str(tmp_path / "out")], capsys, "does not fit")
    assert not (tmp_path / "out").exists()


@pytest.fixture
def evil_model(tmp_path, fixture_tokenizers, monkeypatch):
    """An HF directory whose config needs its own code (auto_map, unknown model_type); the code
    leaves a marker when it runs.  `input` answers "y", as `yes | headless ...` does on a TTY."""
    root = tmp_path / "evil"
    root.mkdir()
    marker = tmp_path / "CODE-RAN"
    code = (f"open({str(marker)!r}, 'w').write('ran')\nfrom transformers import PretrainedConfig, PreTrainedModel\n"
            "class EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n"
            "class EvilModel(PreTrainedModel):\n    config_class = EvilConfig\n")
    for name in ("configuration_evil.py", "modeling_evil.py"):
        (root / name).write_text(code)
    auto = {k: "modeling_evil.EvilModel" for k in ("AutoModel", "AutoModelForCausalLM", "AutoModelForMaskedLM",
                                                   "AutoModelForSequenceClassification")}
    (root / "config.json").write_text(json.dumps({"model_type": "evil", "architectures": ["EvilModel"],
                                                  "auto_map": {"AutoConfig": "configuration_evil.EvilConfig",
                                                               **auto}}))
    for f in fixture_tokenizers["wordpiece"].iterdir():
        shutil.copy(f, root / f.name)
    monkeypatch.setattr(builtins, "input", lambda *args: "y")
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "hf-modules"))
    return root, marker


def test_no_command_runs_a_models_own_code(evil_model, runs, fixture_data, tmp_path, capsys):
    model, marker = evil_model
    run = tmp_path / "run-from-evil"  # a run whose config starts from the custom-code model
    shutil.copytree(runs["A"], run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["model"]["init_from"] = str(model)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    for args in (["analyze", str(model), "--text", str(fixture_data["corpus"]), "--sequences", "2"],
                 ["eval", "lambada", str(model), "--data", str(fixture_data["lambada"])],
                 ["glue", str(model), "--data-dir", str(fixture_data["glue"]), "--tasks", "rte"],
                 ["finetune-head", str(model), str(tmp_path / "ft"), "--data", str(runs["data"]),
                  "--run-dir", str(tmp_path / "ft-run")],
                 ["export", str(run), str(tmp_path / "export")]):
        err = _fails(args, capsys, "")
        assert "never runs a model's code" in err or "trust_remote_code" in err, (args, err)
        assert not marker.exists(), args


def test_a_pickle_payload_is_never_unpickled(fixture_tokenizers, fixture_data, tmp_path, capsys):
    from tiny_models import tiny_decoder

    model = tiny_decoder(tmp_path / "pickled", fixture_tokenizers["bpe"] / "tokenizer.json")
    (model / "model.safetensors").unlink()
    capsys.readouterr()
    marker = tmp_path / "PICKLE-RAN"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (model / "pytorch_model.bin").write_bytes(pickle.dumps({"gpt_neox.embed_in.weight": Payload()}))
    for args in (["analyze", str(model), "--text", str(fixture_data["corpus"]), "--sequences", "2"],
                 ["eval", "lambada", str(model), "--data", str(fixture_data["lambada"])]):
        _fails(args, capsys, "never unpickles code")
        assert not marker.exists()


# ------------------------------------------------------------------------------------------------
# small ones


def test_a_compressed_input_that_is_not_is_one_line(fixture_tokenizers, tmp_path, capsys):
    for name in ("bad.jsonl.xz", "bad.txt.xz", "bad.jsonl.zst"):
        (tmp_path / name).write_text("not compressed at all\n")
        _fails(["prepare", str(tmp_path / name), "-o", str(tmp_path / f"out-{name}"), "--seq-len", "16",
                "--tokenizer", str(fixture_tokenizers["wordpiece"]), "-q"], capsys, "not valid")


def test_finetune_tokens_and_prepare_workers_must_be_positive(fixture_tokenizers, fixture_data, tmp_path, capsys):
    for tokens in ("0", "-5", "nan", "inf"):
        _fails(["finetune-head", str(tmp_path / "m"), str(tmp_path / "o"), "--data", str(tmp_path / "d"),
                "--tokens", tokens], capsys, "--tokens must be")
    for workers in ("0", "-1"):
        _fails(["prepare", str(fixture_data["corpus"]), "-o", str(tmp_path / "out"), "--seq-len", "16",
                "--tokenizer", str(fixture_tokenizers["wordpiece"]), "--workers", workers], capsys, "--workers")
        assert not (tmp_path / "out").exists()


def test_an_absurd_grad_accum_is_one_line_before_anything_is_allocated(capsys):
    """A step's micro-batches are held on the host together: grad_accum=1e9 filled 24 GiB before."""
    from headless.cli import main

    assert main(["pretrain", "--preset", "tiny", "grad_accum=1000000000", "--run-dir", "/nonexistent/x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tokens per step do not fit" in err[0]
