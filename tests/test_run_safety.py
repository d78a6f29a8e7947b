"""A run directory nothing can damage, and resume semantics that say what they do (issue #12).

One test per defect of the issue, numbered as there; each failed on the code before the fix.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from headless.cli import main
from headless.train.loop import pretrain
from test_pretrain import SMALL, _cli, _config, _fails, _losses, _write_corpus, datasets  # noqa: F401


def _train(datasets, tmp_path, *extra, flavour="headless", name="run"):  # noqa: F811
    config = _config(datasets, tmp_path, "bert", flavour, "eval_every=100", *extra)
    import dataclasses

    config = dataclasses.replace(config, run_dir=str(tmp_path / name))
    pretrain(config)
    return tmp_path / name


def _snapshot(directory: Path) -> dict:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


# 1 ---------------------------------------------------------------------------------------------
def test_1_export_overwrite_refuses_what_it_did_not_create(datasets, tmp_path, capsys):  # noqa: F811
    run = _train(datasets, tmp_path / "runs", "max_steps=3")
    notes = tmp_path / "runs" / "notes.txt"
    notes.write_text("precious")
    before = _snapshot(tmp_path / "runs")
    _fails(["export", str(run), str(run), "--overwrite"], capsys, "refusing to overwrite")
    _fails(["export", str(run), str(tmp_path / "runs"), "--overwrite"], capsys, "refusing to overwrite")
    _fails(["export", str(run), str(datasets["bert"]), "--overwrite"], capsys, "refusing to overwrite")
    user = tmp_path / "mine"
    user.mkdir()
    (user / "keep.txt").write_text("x")
    _fails(["export", str(run), str(user), "--overwrite"], capsys, "headless did not create it")
    assert _snapshot(tmp_path / "runs") == before and (user / "keep.txt").read_text() == "x"
    assert (datasets["bert"] / "manifest.json").is_file()
    out = tmp_path / "export"
    assert main(["export", str(run), str(out)]) == 0
    assert main(["export", str(run), str(out), "--overwrite"]) == 0  # its own export: replaced
    assert (out / "model.safetensors").is_file() and (out / ".headless-export").is_file()
    capsys.readouterr()
    nested = out / "inner-run"
    nested.mkdir()
    (nested / ".headless-run").write_text("")
    _fails(["export", str(run), str(out), "--overwrite"], capsys, "contains")


# 2 ---------------------------------------------------------------------------------------------
def test_2_second_process_on_a_run_directory_is_refused_and_default_names_differ(datasets, tmp_path, capsys):  # noqa: F811
    from headless.config import load_config
    from headless.train.rundir import RunLock, default_run_dir

    run = tmp_path / "run"
    run.mkdir()
    holder = RunLock(run).acquire()  # as a first pretrain holds it
    try:
        _fails(["pretrain", "--preset", "tiny", *SMALL, f"data.path={datasets['bert']}", "max_steps=2",
                "--run-dir", str(run)], capsys, "is in use by pid")
        assert not (run / "config.yaml").exists() and not (run / "metrics.jsonl").exists()
    finally:
        holder.release()
    config = load_config("tiny")
    assert len({default_run_dir(config) for _ in range(20)}) == 20  # same second, same process


# 3 ---------------------------------------------------------------------------------------------
def test_3_grad_clip_zero_means_off_and_negative_is_refused(datasets, tmp_path, capsys):  # noqa: F811
    from headless.train.checkpoint import load_checkpoint

    _fails(["pretrain", "--preset", "tiny", "optim.grad_clip=-1"], capsys, "optim.grad_clip must be > 0, or 0 / null")
    runs = {}
    for clip in ("0", "null"):
        run = _train(datasets, tmp_path, "max_steps=2", "save_every=1", f"optim.grad_clip={clip}", name=f"clip-{clip}")
        runs[clip] = load_checkpoint(run / "checkpoints" / "step-00000002")
        moments = runs[clip]["optimizer"]["optimizer"]["state"]
        assert all(float(s["exp_avg"].abs().max()) > 0 for s in moments.values())  # gradients reached AdamW
    for key, weight in runs["0"]["model"].items():
        assert torch.equal(weight, runs["null"]["model"][key]), key  # 0 = null = no clipping


# 4 ---------------------------------------------------------------------------------------------
def test_4_changing_the_micro_batch_of_a_cwt_run_is_refused(datasets, tmp_path, capsys):  # noqa: F811
    run = _train(datasets, tmp_path, "max_steps=3", "save_every=3")
    _fails(["pretrain", "--run-dir", str(run), "--resume", "max_steps=4", "batch_size=2", "grad_accum=2"], capsys,
           "cwt negatives come from 4 sequences per micro-step and would come from 2")
    vanilla = _train(datasets, tmp_path, "max_steps=3", "save_every=3", flavour="vanilla", name="vanilla")
    # a vocabulary loss: the same global batch split differently is the same objective
    assert main(["pretrain", "--run-dir", str(vanilla), "--resume", "max_steps=4", "batch_size=2",
                 "grad_accum=2"]) == 0


# 5 ---------------------------------------------------------------------------------------------
def test_5_a_dataset_prepared_again_is_refused_on_resume(shared_data, tmp_path, capsys):
    from headless.data.prepare import prepare_dataset
    from headless.data.tokenizers import load_tokenizer

    tok = load_tokenizer(str(shared_data / "tokenizers" / "bert-base-uncased" / "vocab.txt"))
    data = tmp_path / "data"
    corpus = _write_corpus(shared_data, tmp_path / "a.jsonl", 40)
    prepare_dataset([str(corpus)], data, tok, seq_len=64, validation_fraction=0.1, progress=False)
    run = _train({"bert": data}, tmp_path, "max_steps=3", "save_every=3")
    lines = corpus.read_text().splitlines()
    corpus.write_text("\n".join(lines[::-1]) + "\n")  # other text order: other sequences
    prepare_dataset([str(corpus)], data, tok, seq_len=64, validation_fraction=0.1, progress=False, overwrite=True)
    _fails(["pretrain", "--run-dir", str(run), "--resume", "max_steps=4"], capsys, "is not the one the checkpoint")


# 6 ---------------------------------------------------------------------------------------------
def test_6_leftovers_of_killed_saves_and_prepares_are_removed_at_start(datasets, tmp_path, shared_data):  # noqa: F811
    from headless.data.prepare import prepare_dataset
    from headless.data.tokenizers import load_tokenizer

    run = _train(datasets, tmp_path, "max_steps=3", "save_every=3")
    old_style = run / "checkpoints" / ".tmp-step-00000006-4242"
    new_style = run / "checkpoints" / ".step-00000006.tmp-4242"
    for tmp in (old_style, new_style):
        tmp.mkdir()
        (tmp / "model.safetensors").write_bytes(b"\0" * 1000)
    (run / ".config.yaml.tmp-4242").write_text("half")
    assert main(["pretrain", "--run-dir", str(run), "--resume", "max_steps=4"]) == 0
    assert not old_style.exists() and not new_style.exists() and not (run / ".config.yaml.tmp-4242").exists()

    dead = tmp_path / ".prepared.tmp-999999999"  # a pid that cannot be running
    alive = tmp_path / ".prepared.tmp-1"         # init: a live writer is left alone
    for tmp in (dead, alive):
        tmp.mkdir()
        (tmp / "train-00000.bin").write_bytes(b"\0" * 100)
    tok = load_tokenizer(str(shared_data / "tokenizers" / "bert-base-uncased" / "vocab.txt"))
    corpus = _write_corpus(shared_data, tmp_path / "c.jsonl", 10)
    prepare_dataset([str(corpus)], tmp_path / "prepared", tok, seq_len=64, progress=False)
    assert not dead.exists() and alive.exists()


# 7 ---------------------------------------------------------------------------------------------
def test_7_a_run_that_failed_before_its_first_checkpoint_restarts(datasets, tmp_path, monkeypatch, capsys):  # noqa: F811
    from test_pretrain import _poison

    args = ["pretrain", "--preset", "tiny", *SMALL, f"data.path={datasets['bert']}", "max_steps=3", "save_every=100",
            "max_nan_skips=0", "--run-dir", str(tmp_path / "run")]
    _poison(monkeypatch, bad_loss={1})
    _fails(args, capsys, "training diverged")
    assert (tmp_path / "run" / "config.yaml").is_file() and not list((tmp_path / "run").glob("checkpoints/step-*"))
    monkeypatch.undo()
    assert main(args) == 0  # no "not empty", no manual deletion
    assert "starting it again" in capsys.readouterr().out
    assert sorted(_losses(tmp_path / "run")) == [1, 2, 3]

    _poison(monkeypatch, bad_loss={1})  # the same, continued with --resume: from step 0
    _fails([*args[:-2], "--run-dir", str(tmp_path / "again")], capsys, "training diverged")
    monkeypatch.undo()
    assert main(["pretrain", "--run-dir", str(tmp_path / "again"), "--resume"]) == 0
    assert "no checkpoint yet" in capsys.readouterr().out
    assert sorted(_losses(tmp_path / "again")) == [1, 2, 3]


# 8 ---------------------------------------------------------------------------------------------
def test_8_refused_and_no_op_commands_leave_config_yaml_alone(datasets, tmp_path, capsys):  # noqa: F811
    run = _train(datasets, tmp_path, "max_steps=4", "save_every=2")
    before = _snapshot(run)
    _fails(["pretrain", "--run-dir", str(run), "--resume", "max_steps=2"], capsys, "below the checkpoint's step 4")
    assert _snapshot(run) == before
    assert main(["pretrain", "--run-dir", str(run), "--resume"]) == 0  # finished: nothing to do
    assert "nothing to do" in capsys.readouterr().out
    assert _snapshot(run) == before
    _fails(["pretrain", "--run-dir", str(run), "--resume", "optim.lr=1"], capsys, "cannot resume")
    assert _snapshot(run) == before


# 9 ---------------------------------------------------------------------------------------------
def test_9_export_needs_only_the_weights(datasets, tmp_path):  # noqa: F811
    import transformers as tf

    from headless.export import export

    run = _train(datasets, tmp_path, "max_steps=2", "save_every=2")
    ckpt = run / "checkpoints" / "step-00000002"
    (ckpt / "optimizer.pt").unlink()
    (ckpt / "rng.pt").unlink()
    out = export(run, tmp_path / "export")
    assert tf.AutoModel.from_pretrained(out) is not None
    # resume falls back past bad checkpoints: see test_pretrain.test_corrupt_checkpoint_falls_back_...


# 10 --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("override, message", [
    ("optim.beta1=1.5", "optim.beta1 must be in [0, 1)"),
    ("optim.beta2=1", "optim.beta2 must be in [0, 1)"),
    ("device=tpu", "invalid config: device 'tpu'"),
    ("model.hidden_size=0", "model.hidden_size must be >= 1"),
    ("optim.lr=.inf", "optim.lr must be > 0 and finite"),
    ("objective.unique_bound=0", "objective.unique_bound must be >= 1"),
    ("objective.unique_bound=many", "objective.unique_bound"),
])
def test_10_bad_config_values_give_one_line(override, message, capsys):
    _fails(["pretrain", "--preset", "tiny", override], capsys, message)


def test_10_bad_files_give_one_line(datasets, tmp_path, capsys, shared_data):  # noqa: F811
    empty = tmp_path / "vocab.txt"
    empty.write_text("")
    corpus = _write_corpus(shared_data, tmp_path / "c.jsonl", 5)
    _fails(["prepare", str(corpus), "--output", str(tmp_path / "d"), "--tokenizer", str(empty), "--seq-len", "16"],
           capsys, "vocab.txt is empty")

    import shutil

    bad = tmp_path / "oov"
    shutil.copytree(datasets["bert"], bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    shard = bad / manifest["splits"]["train"]["shards"][0]["file"]
    ids = np.fromfile(shard, dtype="<u2")
    ids[17] = 60000  # beyond bert-base-uncased's 30522 ids
    ids.tofile(shard)
    base = ["pretrain", "--preset", "tiny", *SMALL, "max_steps=2"]
    _fails([*base, f"data.path={bad}", "--run-dir", str(tmp_path / "r1")], capsys, "hold token id 60000")
    assert not (tmp_path / "r1").exists()  # the refused start takes back the directory it made
    (tmp_path / "mine").mkdir()
    _fails([*base, f"data.path={bad}", "--run-dir", str(tmp_path / "mine")], capsys, "hold token id 60000")
    assert list((tmp_path / "mine").iterdir()) == []  # the user's directory stays, as it was

    a_file = tmp_path / "file"
    a_file.write_text("x")
    _fails([*base, f"data.path={datasets['bert']}", "--run-dir", str(a_file)], capsys, "is a file")
    _fails([*base, f"data.path={datasets['bert']}", "--run-dir", "/sys/headless-run"], capsys,
           "cannot create run directory")


def test_10_read_only_run_dir_and_full_disk_give_one_line(datasets, tmp_path, capsys, monkeypatch):  # noqa: F811
    import builtins
    import errno

    from headless.train import checkpoint

    base = ["pretrain", "--preset", "tiny", *SMALL, f"data.path={datasets['bert']}", "max_steps=4", "save_every=2"]
    readonly = tmp_path / "ro"
    readonly.mkdir()
    real_open = builtins.open

    def denied(file, *args, **kwargs):  # root ignores chmod: refuse writes into `readonly` instead
        if str(file).startswith(str(readonly)) and any(m in (args[0] if args else kwargs.get("mode", "r"))
                                                       for m in "wa+"):
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", denied)
    _fails([*base, "--run-dir", str(readonly)], capsys, "permission denied")
    monkeypatch.undo()

    real_save, calls = torch.save, []

    def full_disk(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) > 2:  # the second checkpoint
            raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 11072 vs 10964")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    _fails([*base, "--run-dir", str(tmp_path / "full")], capsys, "is the disk full?")
    monkeypatch.undo()
    names = [p.name for p in (tmp_path / "full" / "checkpoints").iterdir()]
    assert names == ["step-00000002"]  # the previous one intact, no temporary leftover
    assert main(["pretrain", "--run-dir", str(tmp_path / "full"), "--resume"]) == 0


# 11 --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_11_sigterm_and_sigint_save_a_checkpoint_and_exit_with_a_message(fixture_datasets, tmp_path, sig, code):
    datasets = fixture_datasets  # the generated fixtures: runs without ../shared
    run = tmp_path / "run"
    common = ["pretrain", "--preset", "tiny", *SMALL, f"data.path={datasets['bert']}", "save_every=1000",
              "eval_every=1000", "optim.schedule=constant"]  # the LR does not depend on max_steps
    proc = _cli([*common, "max_steps=400", "--run-dir", str(run)])
    deadline = time.time() + 300
    while time.time() < deadline and max((_losses(run) if (run / "metrics.jsonl").exists() else {}) or {0: 0}) < 3:
        time.sleep(0.05)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == code, out[-2000:]
    assert f"stopped by {sig.name}" in out and "checkpoint saved" in out, out[-2000:]
    saved = [p.name for p in (run / "checkpoints").iterdir()]
    assert len(saved) == 1 and 3 <= int(saved[0].split("-")[1]) < 400
    total = int(saved[0].split("-")[1]) + 2
    resumed = _cli(["pretrain", "--run-dir", str(run), "--resume", f"max_steps={total}"])
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out[-2000:]
    if sig == signal.SIGTERM:  # the checkpoint of a signal continues exactly, like a periodic one
        reference = _cli([*common, f"max_steps={total}", "--run-dir", str(tmp_path / "reference")])
        out, _ = reference.communicate(timeout=300)
        assert reference.returncode == 0, out[-2000:]
        expected, got = _losses(tmp_path / "reference"), _losses(run)
        assert sorted(got) == list(range(1, total + 1))
        for step in range(1, total + 1):
            assert got[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-7), step


# 12 --------------------------------------------------------------------------------------------
def test_12_extending_max_steps_keeps_the_schedule_when_asked(datasets, tmp_path):  # noqa: F811
    """The schedule is the checkpoint's; past its end a resume does what optim.extend says (the
    default, a new cosine tail: tests/test_schedule_resume.py)."""
    import yaml

    run = _train(datasets, tmp_path, "max_steps=6", "save_every=6", "optim.schedule=cosine", "optim.min_lr_ratio=0.1")
    assert yaml.safe_load((run / "config.yaml").read_text())["optim"]["schedule_steps"] is None  # not the user's
    assert main(["pretrain", "--run-dir", str(run), "--resume", "max_steps=10", "optim.extend=constant"]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    lr = {r["step"]: r["lr"] for r in records if r["split"] == "train"}
    peak = 1e-3  # the tiny preset's lr
    assert lr[6] == pytest.approx(0.1 * peak)
    assert all(lr[s] == pytest.approx(0.1 * peak) for s in (7, 8, 9, 10))  # the cosine's end, not a new one
    # an explicit new length is a stated change of the schedule
    assert main(["pretrain", "--run-dir", str(run), "--resume", "max_steps=12", "optim.schedule_steps=20"]) == 0


# issue #28 item 7: run directories and data integrity, on the synthetic fixtures (no ../shared) ------

TINY = ["model.hidden_size=32", "model.num_layers=2", "model.num_heads=2", "model.intermediate_size=64",
        "batch_size=4", "optim.warmup_steps=1", "log_every=1", "eval_every=100", "eval_batches=1",
        "progress=false", "tensorboard=false"]


@pytest.fixture(scope="module")
def fixture_dataset(fixture_tokenizers, tmp_path_factory):
    """A wordpiece dataset of ~250 kB shards: big enough that the middle of a shard is more than
    64 KiB from both ends (the old fingerprint's samples)."""
    from fixtures import write_corpus

    from headless.data.prepare import prepare_dataset
    from headless.data.tokenizers import load_tokenizer

    root = tmp_path_factory.mktemp("integrity")
    corpus = write_corpus(root / "big.jsonl", n=2000, seed=7)
    prepare_dataset(str(corpus), root / "data", load_tokenizer(str(fixture_tokenizers["wordpiece"])), seq_len=32,
                    validation_fraction=0.05, progress=False)
    return root / "data"


def _pretrain(data, run, *extra):
    return ["pretrain", "--preset", "tiny", *TINY, f"data.path={data}", "--run-dir", str(run), *extra]


def test_13_a_finished_run_is_never_started_again_and_a_refusal_deletes_nothing(fixture_dataset, tmp_path,
                                                                                  capsys):
    import shutil

    run = tmp_path / "run"
    assert main(_pretrain(fixture_dataset, run, "max_steps=2", "save_every=2")) == 0
    before = _snapshot(run)
    again = _pretrain(fixture_dataset, run, "max_steps=3", "--flavour", "vanilla")
    _fails(again, capsys, "continue it with --resume (--resume max_steps=N with N > 2")
    assert _snapshot(run) == before
    shutil.rmtree(run / "checkpoints")  # the probe's case: a finished run whose checkpoints were deleted
    before = _snapshot(run)
    _fails(again, capsys, "choose another --run-dir")
    _fails(["pretrain", "--run-dir", str(run), "--resume", "max_steps=4"], capsys, "none is left")
    assert _snapshot(run) == before  # config, metrics, summary and tokenizer as they were

    # a run that stopped before its first checkpoint may be cleared, but not with a user's file in it
    failed = tmp_path / "failed"
    failed.mkdir()
    (failed / ".headless-run").write_text("created by headless; do not remove\nstate: started\n")
    (failed / "config.yaml").write_text("half: a run\n")
    (failed / "metrics.jsonl").write_text("{}\n")
    (failed / "notes.txt").write_text("precious")
    before = _snapshot(failed)
    _fails(_pretrain(fixture_dataset, failed, "max_steps=2"), capsys, "holds files that are not the run's (notes.txt)")
    assert _snapshot(failed) == before
    (failed / "notes.txt").unlink()
    assert main(_pretrain(fixture_dataset, failed, "max_steps=2", "save_every=2")) == 0
    assert "starting it again" in capsys.readouterr().out


def test_14_an_in_place_edit_mid_shard_is_refused_on_resume(fixture_dataset, tmp_path, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(fixture_dataset, data)
    run = tmp_path / "run"
    assert main(_pretrain(data, run, "max_steps=2", "save_every=2")) == 0
    manifest = json.loads((data / "manifest.json").read_text())
    shard = data / manifest["splits"]["train"]["shards"][0]["file"]
    ids = np.fromfile(shard, dtype="<u2")
    assert ids.nbytes > 3 * 65536
    middle = len(ids) // 2
    ids[middle:middle + 1000] = ids[middle + 1000:middle + 2000]  # valid ids, same size, mid-shard
    ids.tofile(shard)
    before = _snapshot(run)
    _fails(["pretrain", "--run-dir", str(run), "--resume", "max_steps=3"], capsys, "has changed since it was prepared")
    assert _snapshot(run) == before


def test_14_datasets_and_checkpoints_from_before_whole_shard_hashes_still_resume(fixture_dataset, tmp_path, capsys):
    import shutil

    from headless.data.prepare import sampled_fingerprint

    data = tmp_path / "data"
    shutil.copytree(fixture_dataset, data)
    manifest = json.loads((data / "manifest.json").read_text())
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            del shard["sha256"]  # as the old prepare wrote it
    (data / "manifest.json").write_text(json.dumps(manifest))
    run = tmp_path / "run"
    assert main(_pretrain(data, run, "max_steps=2", "save_every=2")) == 0
    state_file = run / "checkpoints" / "step-00000002" / "state.json"
    state = json.loads(state_file.read_text())
    state["data_fingerprint"] = sampled_fingerprint(data)  # as the old code stored it
    state.pop("tokenizer_digest")
    state_file.write_text(json.dumps(state))
    assert main(["pretrain", "--run-dir", str(run), "--resume", "max_steps=3"]) == 0
    shard = data / manifest["splits"]["train"]["shards"][0]["file"]
    ids = np.fromfile(shard, dtype="<u2")
    middle = len(ids) // 2
    ids[middle:middle + 1000] = ids[middle + 1000:middle + 2000]
    ids.tofile(shard)
    capsys.readouterr()
    _fails(["pretrain", "--run-dir", str(run), "--resume", "max_steps=4"], capsys, "is not the one the checkpoint")


def test_15_a_damaged_tokenizer_copy_is_refused_on_resume_and_the_copy_is_atomic(fixture_dataset, tmp_path,
                                                                                monkeypatch, capsys):
    import errno
    import shutil

    run = tmp_path / "run"
    assert main(_pretrain(fixture_dataset, run, "max_steps=2", "save_every=2")) == 0
    config = run / "tokenizer" / "tokenizer_config.json"
    text = config.read_text()
    config.write_text("")  # what a full disk during the old, non-atomic copy left
    _fails(["pretrain", "--run-dir", str(run), "--resume", "max_steps=3"], capsys, "tokenizer is damaged")
    config.write_text(text)
    assert main(["pretrain", "--run-dir", str(run), "--resume", "max_steps=3"]) == 0

    real = shutil.copyfile  # what copytree's copy2 calls
    calls = []

    def full(src, dst, **kwargs):
        calls.append(src)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real(src, dst, **kwargs)

    monkeypatch.setattr(shutil, "copyfile", full)
    _fails(_pretrain(fixture_dataset, tmp_path / "full", "max_steps=2"), capsys, "the disk is full")
    assert not (tmp_path / "full" / "tokenizer").exists()  # no copy rather than half of one
    assert not [p for p in (tmp_path / "full").iterdir() if ".tmp-" in p.name]


def test_16_a_full_disk_during_an_export_is_one_line(fixture_dataset, tmp_path, monkeypatch, capsys):
    import transformers
    from safetensors import SafetensorError

    run = tmp_path / "run"
    assert main(_pretrain(fixture_dataset, run, "max_steps=2", "save_every=2")) == 0

    def full(self, *args, **kwargs):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                              'message: "No space left on device" })')

    monkeypatch.setattr(transformers.PreTrainedModel, "save_pretrained", full)
    _fails(["export", str(run), str(tmp_path / "out")], capsys, "the disk is full")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no export, no temporary directory


def test_json_files_keep_long_lists_on_one_line_and_read_back_the_same(tmp_path):
    """Pieces carry per-example predictions: one line per label made a 1 MB piece 6.9 MB."""
    from headless.files import atomic_write_json

    obj = {"points": [{"labels": list(range(1000)), "seeds": [[0, 1, 2], [2, 1, 0]], "name": "x/ä\n"}],
           "empty": {}, "none": [], 3: None, "nested": {"a": {"b": [1.5, "s", True, None]}}}
    path = tmp_path / "piece.json"
    atomic_write_json(path, obj)
    text = path.read_text()
    assert json.loads(text) == json.loads(json.dumps(obj))
    assert len(text.splitlines()) < 30 and '"labels": [0, 1, 2,' in text
    assert '\n  "empty": {},\n' in text  # still indented like json.dumps(indent=2)
