"""End to end on CPU: prepare -> pretrain (headless/vanilla, MLM/CLM) -> export -> HF loads it.

Also: SIGKILL mid-run + resume reproduces the uninterrupted loss trajectory step for step, and every
bad input gives one clear line and a non-zero exit without touching what is already on disk.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from headless.cli import main
from headless.config import load_config
from headless.models import build_model
from headless.train.loop import pretrain

SMALL = ["model.hidden_size=32", "model.num_layers=2", "model.num_heads=2", "model.intermediate_size=64",
         "model.max_position_embeddings=64", "data.seq_len=64", "batch_size=4", "optim.warmup_steps=2",
         "log_every=1", "eval_every=4", "eval_batches=2", "progress=false", "tensorboard=false"]


def _write_corpus(shared_data: Path, path: Path, n: int) -> Path:
    import lzma

    with lzma.open(shared_data / "enwiki" / "train" / "enwiki-000.jsonl.xz", "rt", encoding="utf-8") as src:
        lines = [next(src) for _ in range(n)]
    path.write_text("".join(lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def datasets(shared_data, tmp_path_factory):
    from headless.data.prepare import prepare_dataset
    from headless.data.tokenizers import load_tokenizer

    root = tmp_path_factory.mktemp("data")
    corpus = _write_corpus(shared_data, root / "wiki.jsonl", 60)
    out = {}
    for name, spec in [("bert", shared_data / "tokenizers" / "bert-base-uncased" / "vocab.txt"),
                       ("neox", shared_data / "tokenizers" / "gpt-neox-20b" / "tokenizer.json")]:
        out[name] = root / name
        prepare_dataset([str(corpus)], out[name], load_tokenizer(str(spec)), seq_len=64, validation_fraction=0.1,
                        progress=False)
    return out


def _config(datasets, tmp_path, arch, flavour, *extra):
    kind = "bert" if arch == "bert" else "neox"
    overrides = SMALL + [f"model.architecture={arch}", f"data.path={datasets[kind]}", f"run_dir={tmp_path / 'run'}",
                         "max_steps=6", "save_every=3", *extra]
    if arch != "bert":
        overrides.append("objective.kind=clm")
    return load_config("tiny", flavour=flavour, overrides=overrides)


@pytest.mark.parametrize("arch", ["bert", "gpt-neox"])
@pytest.mark.parametrize("flavour", ["headless", "vanilla"])
def test_pretrain_export_and_load_with_transformers(datasets, tmp_path, arch, flavour):
    import transformers as tf

    from headless.export import export
    from headless.export import load_run_model

    config = _config(datasets, tmp_path, arch, flavour)
    summary = pretrain(config)
    run = tmp_path / "run"
    assert summary["steps"] == 6 and summary["final_val_loss"] is not None
    for name in ("config.yaml", "metrics.jsonl", "summary.md", "curves.png", "tokenizer"):
        assert (run / name).exists(), name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
    assert all(r["loss"] > 0 for r in train)

    out = export(run, tmp_path / "export")
    base = tf.AutoModel.from_pretrained(out).eval()
    model = load_run_model(run, None)[1].eval()
    ids = torch.randint(5, 1000, (2, 20))
    with torch.no_grad():
        expected = model.hidden_states(ids)
        got = base(input_ids=ids).last_hidden_state
    assert torch.allclose(got, expected, atol=1e-5)
    assert tf.AutoTokenizer.from_pretrained(out) is not None
    if flavour == "vanilla":
        auto = tf.AutoModelForMaskedLM if arch == "bert" else tf.AutoModelForCausalLM
        full = auto.from_pretrained(out).eval()
        with torch.no_grad():
            assert torch.allclose(full(input_ids=ids).logits, model.hf(input_ids=ids).logits, atol=1e-5)
    else:
        assert base.get_output_embeddings() is None if hasattr(base, "get_output_embeddings") else True


def test_headless_decoder_export_with_new_head(datasets, tmp_path):
    import transformers as tf

    from headless.export import export

    pretrain(_config(datasets, tmp_path, "gpt-neox", "headless"))
    out = export(tmp_path / "run", tmp_path / "lm", add_head=True)
    lm = tf.AutoModelForCausalLM.from_pretrained(out)
    emb, head = lm.get_input_embeddings().weight, lm.get_output_embeddings().weight
    assert torch.equal(emb, head) and emb.data_ptr() != head.data_ptr()
    assert json.loads((out / "headless.json").read_text())["add_head"] is True


def _losses(run: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["split"] == "train"}


def _cli(args, env_extra=None, **kwargs):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", **(env_extra or {}))
    return subprocess.Popen([sys.executable, "-m", "headless", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)


def test_sigkill_then_resume_matches_uninterrupted(fixture_datasets, tmp_path):
    datasets = fixture_datasets  # the generated fixtures: runs without ../shared
    common = ["pretrain", "--preset", "tiny", *SMALL, f"data.path={datasets['bert']}", "max_steps=24", "save_every=6",
              "model.dropout=0.1"]
    full = _cli([*common, "--run-dir", str(tmp_path / "full")])
    out, _ = full.communicate(timeout=300)
    assert full.returncode == 0, out

    killed_dir = tmp_path / "killed"
    proc = _cli([*common, "--run-dir", str(killed_dir)])
    deadline = time.time() + 300
    while time.time() < deadline:  # kill once it is past the step-12 checkpoint, mid-interval
        if (killed_dir / "metrics.jsonl").exists() and max(_losses(killed_dir) or {0: 0}) >= 15:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert max(_losses(killed_dir)) < 24

    resumed = _cli(["pretrain", "--run-dir", str(killed_dir), "--resume"])
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    expected, got = _losses(tmp_path / "full"), _losses(killed_dir)
    assert sorted(got) == list(range(1, 25))
    for step in range(1, 25):
        assert got[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-7), step


def _fails(args, capsys, message):
    status = main(args)
    err = capsys.readouterr().err.strip()
    assert status == 2, err
    assert message in err, err
    errors = [line for line in err.splitlines() if not line.startswith("headless: warning:")]
    assert len(errors) == 1, err  # one error line (a data warning, e.g. a small validation split, may precede it)


def test_bad_inputs_give_one_clear_line(datasets, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default run directories go under ./runs
    base = ["pretrain", "--preset", "tiny", *SMALL, "max_steps=2"]
    _fails([*base, f"data.path={tmp_path / 'missing'}"], capsys, "not a prepared dataset")
    _fails([*base, f"data.path={datasets['neox']}", "model.vocab_size=1024"], capsys, "smaller than the tokenizer")
    _fails([*base, f"data.path={datasets['bert']}", "model.max_position_embeddings=32"], capsys,
           "set model.max_position_embeddings=64")
    _fails([*base, f"data.path={datasets['bert']}", "data.seq_len=32"], capsys, "data.seq_len=32 but")
    _fails([*base, "optim.lr=-1"], capsys, "optim.lr must be > 0")
    assert not list((tmp_path / "runs").glob("*")), "refused runs left their directories behind"
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("precious")
    _fails([*base, f"data.path={datasets['bert']}", "--run-dir", str(busy)], capsys, "exists and is not empty")
    assert (busy / "keep.txt").read_text() == "precious"
    _fails(["pretrain", "--run-dir", str(tmp_path / "nothing"), "--resume"], capsys, "cannot resume")


def test_corrupt_checkpoint_falls_back_then_is_refused_when_none_verifies(fixture_datasets, tmp_path, capsys):
    """Defect 9: resume falls back, with a warning, to the newest checkpoint that verifies; with no
    valid checkpoint left it is refused with the name of the bad file."""
    datasets = fixture_datasets  # the generated fixtures: runs without ../shared
    pretrain(_config(datasets, tmp_path, "bert", "headless"))
    ckpts = sorted((tmp_path / "run" / "checkpoints").iterdir())
    assert [p.name for p in ckpts] == ["step-00000003", "step-00000006"]
    for ckpt in ckpts:
        weights = ckpt / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
    _fails(["pretrain", "--run-dir", str(tmp_path / "run"), "--resume", "max_steps=8"], capsys, "corrupt or truncated")
    config_before = (tmp_path / "run" / "config.yaml").read_text()
    assert "max_steps: 6" in config_before  # the refused resume did not rewrite it

    pretrain(_config(datasets, tmp_path / "b", "bert", "headless"))
    run = tmp_path / "b" / "run"
    newest = sorted((run / "checkpoints").iterdir())[-1]
    (newest / "rng.pt").write_bytes(b"garbage")
    assert main(["pretrain", "--run-dir", str(run), "--resume", "max_steps=8"]) == 0
    out = capsys.readouterr().out
    assert "step-00000006 is corrupt or truncated: rng.pt fails its checksum; falling back to step-00000003" in out
    assert sorted(_losses(run)) == list(range(1, 9))


def test_main_job_on_the_embedded_corpus(tmp_path, capsys):
    """The README's main job: no data argument -> the embedded corpus, a tokenizer trained on it,
    a run directory with TensorBoard logs, a plot and a summary (shortened to a few steps)."""
    status = main(["pretrain", "--run-dir", str(tmp_path / "run"), "max_steps=3", "log_every=1", "eval_every=3",
                   "eval_batches=1", "batch_size=4", "model.num_layers=1", "progress=false",
                   f"data.cache_dir={tmp_path / 'cache'}", "data.tokenizer_vocab_size=1024"])
    assert status == 0
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["flavour"] == "headless" and summary["loss"] == "cwt" and summary["steps"] == 3
    assert summary["final_val_loss"] is not None
    assert list((run / "tensorboard").iterdir()), "no TensorBoard event file"
    assert (run / "curves.png").stat().st_size > 1000
    manifest = json.loads(next((tmp_path / "cache" / "datasets").iterdir()).joinpath("manifest.json").read_text())
    assert manifest["splits"]["train"]["num_sequences"] > 100
    assert "done: 3 steps" in capsys.readouterr().out


def _poison(monkeypatch, bad_loss=(), bad_grad=()):
    """Make the trainer's step number `n` (1-based, fresh run) report a NaN loss (n in bad_loss;
    its gradients stay finite) or produce infinite gradients (n in bad_grad)."""
    from headless.train import step as loop

    real, calls = loop.forward_backward, []

    def poisoned(model, micro_batches, **kwargs):
        result = real(model, micro_batches, **kwargs)
        calls.append(None)
        if len(calls) in bad_loss:
            result.loss_sum = result.loss_sum * float("nan")
        if len(calls) in bad_grad:
            for param in model.parameters():
                if param.grad is not None:
                    param.grad.fill_(float("inf"))
        return result

    monkeypatch.setattr(loop, "forward_backward", poisoned)


def test_nonfinite_step_leaves_weights_and_adamw_state_unchanged(fixture_datasets, tmp_path, monkeypatch, capsys):
    datasets = fixture_datasets  # the generated fixtures: runs without ../shared
    from headless.train.checkpoint import list_checkpoints, load_checkpoint

    _poison(monkeypatch, bad_loss={2}, bad_grad={3})
    config = _config(datasets, tmp_path, "bert", "headless", "max_steps=4", "save_every=1", "keep_last=10",
                     "eval_every=100")
    summary = pretrain(config)
    assert summary["nan_skips"] == 2
    ckpts = [load_checkpoint(p) for p in list_checkpoints(tmp_path / "run")]
    assert [c["state"]["step"] for c in ckpts] == [1, 2, 3, 4]
    assert [c["state"]["counters"]["nan_skips"] for c in ckpts] == [0, 1, 2, 2]
    assert all(type(c["state"]["counters"]["nan_skips"]) is int for c in ckpts)

    def adam(c):
        return c["optimizer"]["optimizer"]["state"]

    names = sorted(adam(ckpts[0]))
    assert names and names == sorted(adam(ckpts[3]))
    for bad in (1, 2):  # steps 2 (NaN loss, finite gradients) and 3 (infinite gradients): nothing moved
        for key, weight in ckpts[0]["model"].items():
            assert torch.equal(ckpts[bad]["model"][key], weight), key
        for name in names:
            for key in ("step", "exp_avg", "exp_avg_sq"):
                assert torch.equal(adam(ckpts[bad])[name][key], adam(ckpts[0])[name][key]), (bad, name, key)
    for name in names:  # step 4 is finite: AdamW updates again, from where step 1 left it
        assert float(adam(ckpts[3])[name]["step"]) == 2.0
        assert not torch.equal(adam(ckpts[3])[name]["exp_avg"], adam(ckpts[0])[name]["exp_avg"]), name
    assert any(not torch.equal(ckpts[3]["model"][k], w) for k, w in ckpts[0]["model"].items())
    assert all(torch.isfinite(w).all() for w in ckpts[3]["model"].values())
    out = capsys.readouterr().out
    assert "step 2: 1 step(s) with a non-finite loss/gradient skipped in steps 2-2, the last at step 2 (1/5)" in out
    assert "step 3: 1 step(s) with a non-finite loss/gradient skipped in steps 3-3, the last at step 3 (2/5)" in out


def test_divergence_is_raised_at_the_next_log_step(fixture_datasets, tmp_path, monkeypatch, capsys):
    datasets = fixture_datasets  # the generated fixtures: runs without ../shared
    from headless.errors import HeadlessError

    _poison(monkeypatch, bad_loss={2, 3})
    config = _config(datasets, tmp_path, "bert", "headless", "max_nan_skips=1", "log_every=4", "save_every=100",
                     "eval_every=100")
    with pytest.raises(HeadlessError, match=r"training diverged: 2 non-finite steps \(last at step 3\)"):
        pretrain(config)
    out = capsys.readouterr().out
    assert "step 4: 2 step(s) with a non-finite loss/gradient skipped in steps 1-4, the last at step 3 (2/1)" in out
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert not [r for r in records if r["split"] == "train"]  # stopped before step 4 was logged


def test_a_micro_batch_beyond_the_bounded_room_stops_the_run_with_one_line(fixture_datasets, tmp_path, capsys,
                                                                           monkeypatch):
    """CWT "bounded" with room for 16 unique targets (the synthetic corpus has ~55 per micro-batch):
    nothing branches in the graph, the steps are skipped as NaN, and the next log step stops the
    run with one line naming the key, before the NaN guard's "diverged"."""
    from headless import loss_kinds

    monkeypatch.setattr(loss_kinds, "ROOM_MULTIPLE", 8)  # else the room is at least 128
    run_dir = tmp_path / "run"
    args = ["pretrain", "--preset", "tiny", *SMALL, f"data.path={fixture_datasets['neox']}", "--run-dir",
            str(run_dir), "model.architecture=gpt-neox", "objective.kind=clm", "objective.loss_implementation=bounded",
            "objective.unique_bound=16", "max_steps=4", "log_every=3", "save_every=100", "eval_every=100",
            "max_nan_skips=1"]
    _fails(args, capsys, "unique targets, more than objective.unique_bound=16 leaves room for (such steps were "
                         "skipped); set objective.unique_bound=")
    records = (run_dir / "metrics.jsonl").read_text().splitlines() if (run_dir / "metrics.jsonl").exists() else []
    assert not [r for r in records if json.loads(r)["split"] == "train"]  # stopped before step 3 was logged


def test_a_validation_micro_batch_beyond_the_bounded_room_stops_the_run_with_one_line(fixture_datasets, tmp_path,
                                                                                      capsys, monkeypatch):
    """Validation scores micro-batches of the training shape through the same bounded room: one that
    overflows would log a NaN validation loss; it stops the run with one line naming the key."""
    from headless import loss_kinds

    monkeypatch.setattr(loss_kinds, "ROOM_MULTIPLE", 8)
    args = ["pretrain", "--preset", "tiny", *SMALL, f"data.path={fixture_datasets['neox']}", "--run-dir",
            str(tmp_path / "run"), "model.architecture=gpt-neox", "objective.kind=clm",
            "objective.loss_implementation=bounded", "objective.unique_bound=16", "max_steps=4", "log_every=100",
            "save_every=100", "eval_every=1", "max_nan_skips=100"]
    _fails(args, capsys, "unique targets, more than objective.unique_bound=16 leaves room for; set "
                         "objective.unique_bound=")
    assert not (tmp_path / "run" / "metrics.jsonl").exists() or '"val"' not in (tmp_path / "run" / "metrics.jsonl").read_text()


def test_unique_bound_auto_is_sized_from_the_training_data_before_the_run(fixture_datasets, tmp_path, capsys):
    """`objective.unique_bound: auto` counts the distinct token ids of sampled micro-batches of the
    training split (an upper bound on their unique targets), adds the margin, and trains with that
    room; the run's summary config carries the number, so a resume keeps it."""
    from headless.data.loader import PackedDataset
    from headless.loss_kinds import auto_room

    data = fixture_datasets["neox"]
    most = PackedDataset(data, "train").most_unique_ids(4, seed=0)
    assert 0 < most <= 4 * PackedDataset(data, "train").seq_len
    run_dir = tmp_path / "run"
    args = ["pretrain", "--preset", "tiny", *SMALL, f"data.path={data}", "--run-dir", str(run_dir),
            "model.architecture=gpt-neox", "objective.kind=clm", "objective.loss_implementation=bounded",
            "objective.unique_bound=auto", "batch_size=4", "max_steps=3", "log_every=1", "eval_every=100",
            "save_every=100", "progress=false", "tensorboard=false", "seed=0"]
    assert main(args) == 0
    room = auto_room(most)
    assert room % 1024 == 0 and room >= 1.25 * most
    assert f"objective.unique_bound: auto -> {room:,} (at most {most:,} distinct token ids" in capsys.readouterr().out
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "train"] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) for r in records if r["split"] == "train")


def test_an_unsized_auto_bound_is_no_bound():
    """A model built from a config that still says "auto" (evaluation, export) scores with no bound,
    exactly, and `auto_room` adds its margin in whole 1,024s."""
    from headless.loss_kinds import auto_room

    assert auto_room(1) == 1024 and auto_room(17_173) == 21_504 and auto_room(819) == 1024
    config = load_config("tiny", overrides=[*SMALL, "model.architecture=gpt-neox", "objective.kind=clm",
                                            "objective.loss_implementation=bounded", "objective.unique_bound=auto"])
    model = build_model(config.model, config.objective, "cwt", 64, pad_token_id=0, eos_token_id=0)
    ids = torch.randint(0, 64, (2, 16))
    assert model.unique_bound is None and torch.isfinite(model(ids, ids).loss)
    assert model.size_unique_bound(100) == 1024 and model.unique_bound == 1024


def test_the_bounded_room_may_change_on_resume_but_not_the_objective():
    """objective.unique_bound only sizes the classes of an exact path: the key the error above names
    is accepted by `--resume`; what changes the objective is not."""
    from headless.errors import HeadlessError
    from headless.train.rundir import check_resume_overrides

    check_resume_overrides({"objective": {"unique_bound": 50_304}})
    with pytest.raises(HeadlessError, match="objective.max_negatives"):
        check_resume_overrides({"objective": {"max_negatives": 8}})


def test_time_budget_sets_max_steps_from_measured_throughput_and_keeps_curve_checkpoints(datasets, tmp_path):
    """`time_budget_s` resolves max_steps from the steady-state seconds per step measured after
    the untimed first steps, and again at a fifth of the run; curve checkpoints at
    `checkpoint_fractions` survive keep_last."""
    from headless.train.checkpoint import list_checkpoints

    config = _config(datasets, tmp_path, "bert", "headless", "max_steps=100000", "budget.time_s=3",
                     "budget.calibration_skip=2", "budget.calibration_steps=3", "optim.warmup_steps=5",
                     "budget.checkpoint_fractions=[0.5,1.0]", "keep_last=1", "save_every=100000", "eval_every=100000")
    summary = pretrain(config)
    per_step = summary["steady_s_per_step"]
    assert per_step > 0
    steps = summary["steps"]
    assert steps == max(5, int(3 / per_step))  # the budget, not the 100000 cap
    assert summary["checkpoint_steps"] == sorted({round(0.5 * steps), steps})
    saved = [int(p.name.split("-")[1]) for p in list_checkpoints(tmp_path / "run")]
    assert saved == summary["checkpoint_steps"]
    saved_config = load_config(tmp_path / "run" / "config.yaml")  # the user's config: the plan is the checkpoint's
    assert (saved_config.max_steps, saved_config.optim.schedule_steps) == (100000, None)
    assert json.loads((list_checkpoints(tmp_path / "run")[-1] / "state.json").read_text())["budget"][
        "resolved_max_steps"] == steps
    # planned again at a fifth of the first plan, from the steps since the calibration (a loaded
    # machine's slow steps can leave no room between the calibration and that fifth: no re-plan then)
    if steps >= 5 * (summary["calibrated_at"] + 1):
        assert summary["calibrated_at"] < summary["replanned_at"] < summary["checkpoint_steps"][0]
    assert summary["calibrated_s_per_step"] > 0


def test_time_budget_needs_warmup_over_the_calibration():
    from headless.errors import HeadlessError

    with pytest.raises(HeadlessError, match="warmup_steps >= budget.calibration_skip"):
        load_config("tiny", overrides=["budget.time_s=10", "optim.warmup_steps=5"])


def _drive(budget, monkeypatch, per_window: dict, last_step: int, skip: int = 2, window: int = 4):
    """Feed `budget` a fake clock: per_window[end] seconds per step for the window ending at `end`."""
    clock = {"t": 0.0}
    times = {skip: 0.0}
    for end in sorted(per_window):
        times[end] = times[end - window] + window * per_window[end]
    monkeypatch.setattr(budget, "_now", lambda sync=True: clock["t"])
    resolved = {}
    for step in range(1, last_step + 1):
        clock["t"] = times.get(step, clock["t"])
        if (plan := budget.on_step_end(step)) is not None:
            resolved[step] = plan.max_steps
    return clock, resolved


def test_time_budget_calibrates_at_the_end_of_warmup_not_at_the_first_agreeing_windows(monkeypatch):
    """The H200 case: the first few hundred MLM steps are steadily slow, so early windows agree
    with each other (30 ms) and are still twice the steady step (15 ms).  Fixing max_steps there
    gave vanilla bert-small half its budget; the calibration must wait for warm-up's end."""
    import torch

    from headless.train.budget import TimeBudget

    config = load_config("tiny", overrides=["budget.time_s=100", "budget.calibration_skip=2", "budget.calibration_steps=4",
                                            "optim.warmup_steps=40", "max_steps=100000"])
    per_window = {end: (0.3 if end <= 18 else 0.15) for end in range(6, 39, 4)}  # windows end at 6, 10, ..., 38
    per_window[30] = 0.151
    budget = TimeBudget(config, torch.device("cpu"))
    clock, resolved = _drive(budget, monkeypatch, per_window, 38)
    assert resolved == {38: int(100 / 0.15)}  # the last window within warm-up; median of .151, .15, .15
    assert budget.counters["calibrated_at"] == 38
    assert budget.counters["steady_s_per_step"] == pytest.approx(0.15)
    assert budget.counters["calibration_spread"] == pytest.approx(0.151 / 0.15 - 1)
    # the tail: 10 more steps at 0.15 s, with a 5-second save in the middle that is not counted
    clock["t"] += 0.75
    budget.pause()
    clock["t"] += 5.0
    budget.resume()
    clock["t"] += 0.75
    assert budget.finish(48) is None  # as calibrated: nothing to say
    assert budget.counters["measured_s_per_step"] == pytest.approx(0.15)


def test_time_budget_says_when_the_run_was_slower_than_calibrated(monkeypatch):
    import torch

    from headless.train.budget import TimeBudget

    config = load_config("tiny", overrides=["budget.time_s=100", "budget.calibration_skip=2", "budget.calibration_steps=4",
                                            "optim.warmup_steps=14", "max_steps=100000"])
    budget = TimeBudget(config, torch.device("cpu"))
    clock, resolved = _drive(budget, monkeypatch, {6: 0.1, 10: 0.1, 14: 0.1}, 14)
    assert resolved == {14: 1000}
    clock["t"] += 10 * 0.2  # the rest of the run took twice as long per step
    warning = budget.finish(24)
    assert budget.counters["measured_s_per_step"] == pytest.approx(0.2)
    assert warning and "0.2 ms" not in warning and "200.0 ms each, not the planned 100.0 ms" in warning
    assert "about 5 s of steps, not the budget's 100 s" in warning


def test_time_budget_stops_calibrating_when_the_budget_would_be_spent_in_warmup(monkeypatch):
    import torch

    from headless.train.budget import TimeBudget

    config = load_config("tiny", overrides=["budget.time_s=3", "budget.calibration_skip=2", "budget.calibration_steps=4",
                                            "optim.warmup_steps=40", "max_steps=100000"])
    budget = TimeBudget(config, torch.device("cpu"))
    _, resolved = _drive(budget, monkeypatch, {6: 0.3, 10: 0.3}, 10)
    assert resolved == {6: 10}  # 10 steps x 0.3 s would reach the 3 s budget before the next window ends


def test_time_budget_takes_the_last_window_when_warmup_ends_first(monkeypatch):
    import torch

    from headless.train.budget import TimeBudget

    config = load_config("tiny", overrides=["budget.time_s=100", "budget.calibration_skip=2", "budget.calibration_steps=4",
                                            "optim.warmup_steps=12"])
    clock = {"t": 0.0}
    budget = TimeBudget(config, torch.device("cpu"))
    monkeypatch.setattr(budget, "_now", lambda sync=True: clock["t"])
    results = []
    for step in range(1, 13):
        clock["t"] = {2: 0.0, 6: 4.0, 10: 6.0}.get(step, clock["t"])  # 1.0 then 0.5 s per step: never settled
        results.append(budget.on_step_end(step))
    assert [r.max_steps for r in results if r] == [200]  # at step 10 (the next window ends past warm-up), from the latest window
    assert budget.counters["calibrated_at"] == 10


def test_time_budget_plans_again_from_the_steps_timed_since_the_calibration(monkeypatch):
    """The H200 case: windows at warm-up's end said 19.5 ms, the run then spent 18.0 ms per step
    (vanilla bert-small; 24.4 against 18.6 for vanilla multilingual).  At a fifth of the first
    plan, max_steps is planned again from every step since the calibration; the schedule's length
    and the curve's checkpoints follow, and the run then spends its budget."""
    import torch

    from headless.train.budget import TimeBudget

    config = load_config("tiny", overrides=["budget.time_s=100", "budget.calibration_skip=2", "budget.calibration_steps=4",
                                            "optim.warmup_steps=14", "max_steps=100000",
                                            "budget.checkpoint_fractions=[0.5,1.0]"])
    budget = TimeBudget(config, torch.device("cpu"))
    clock, plans = _drive(budget, monkeypatch, {6: 0.2, 10: 0.2, 14: 0.2}, 14)
    assert plans == {14: 500}
    assert budget.counters["replan_at"] == 100  # a fifth of 500
    assert budget.keep_steps(500) == {250, 500}
    plan = None
    for step in range(15, 101):  # the steps really take 0.125 s
        clock["t"] += 0.125
        plan = budget.on_step_end(step) or plan
    assert plan.max_steps == 800 and budget.counters["replanned_at"] == 100
    assert "0.125" not in plan.message and "125.0 ms per step over the 86 steps since the calibration" in plan.message
    assert "max_steps planned again: 800 (was 500)" in plan.message
    assert (plan.max_steps, plan.schedule_steps) == (800, 800)  # the schedule's length follows the plan
    assert budget.keep_steps(800) == {400, 800}
    assert budget.counters["calibrated_s_per_step"] == pytest.approx(0.2)  # the first plan stays on record
    assert budget.counters["steady_s_per_step"] == pytest.approx(0.125)
    clock["t"] += 700 * 0.125
    assert budget.finish(800) is None  # as planned: 800 x 0.125 s = the budget
    assert budget.counters["measured_s_per_step"] == pytest.approx(0.125)


def test_time_budget_plans_again_before_the_first_curve_checkpoint_and_keeps_a_set_schedule(monkeypatch):
    import torch

    from headless.train.budget import TimeBudget

    config = load_config("tiny", overrides=["budget.time_s=100", "budget.calibration_skip=2", "budget.calibration_steps=4",
                                            "optim.warmup_steps=14", "max_steps=100000", "optim.schedule_steps=3000",
                                            "budget.checkpoint_fractions=[0.1,1.0]"])
    budget = TimeBudget(config, torch.device("cpu"))
    clock = {"t": 0.0}
    monkeypatch.setattr(budget, "_now", lambda sync=True: clock["t"])
    plans = []
    for step in range(1, 15):
        clock["t"] = {2: 0.0, 6: 0.4, 10: 0.8, 14: 1.2}.get(step, clock["t"])
        plans.append(budget.on_step_end(step))
    plan = [p for p in plans if p][0]
    assert budget.counters["replan_at"] == 80  # 0.8 x the 10 % checkpoint of 1000 steps, before it
    assert (plan.max_steps, plan.schedule_steps) == (1000, None)  # the config's own length stays


def test_time_budget_skips_the_replan_when_the_run_is_short_or_resumed_just_before_it(monkeypatch):
    import torch

    from headless.train.budget import TimeBudget

    short = load_config("tiny", overrides=["budget.time_s=3", "budget.calibration_skip=2", "budget.calibration_steps=4",
                                           "optim.warmup_steps=14", "max_steps=100000"])
    budget = TimeBudget(short, torch.device("cpu"))
    _drive(budget, monkeypatch, {6: 0.1, 10: 0.1, 14: 0.1}, 14)
    assert "replan_at" not in budget.counters  # a fifth of 30 steps comes before 5 windows have passed

    config = load_config("tiny", overrides=["budget.time_s=100", "budget.calibration_skip=2", "budget.calibration_steps=4",
                                            "optim.warmup_steps=14", "max_steps=1000"])
    counters = {"resolved_max_steps": 1000, "steady_s_per_step": 0.1, "replan_at": 200}
    resumed = TimeBudget(config, torch.device("cpu"), step=195)  # the tail starts at 197
    resumed.load_state_dict(counters)
    counters = resumed.counters
    clock = {"t": 0.0}
    monkeypatch.setattr(resumed, "_now", lambda sync=True: clock["t"])
    plans = [resumed.on_step_end(step) for step in range(196, 260)]
    assert plans == [None] * len(plans) and "replan_at" not in counters and "replanned_at" not in counters

    counters = {"resolved_max_steps": 1000, "steady_s_per_step": 0.1, "replan_at": 200, "calibrated_at": 14}
    uncapped = load_config("tiny", overrides=["budget.time_s=100", "budget.calibration_skip=2", "budget.calibration_steps=4",
                                              "optim.warmup_steps=14", "max_steps=100000"])
    resumed = TimeBudget(uncapped, torch.device("cpu"), step=100)  # timed from step 102
    resumed.load_state_dict(counters)
    monkeypatch.setattr(resumed, "_now", lambda sync=True: clock["t"])
    plans = {}
    for step in range(101, 201):
        clock["t"] += 0.05
        if (plan := resumed.on_step_end(step)) is not None:
            plans[step] = plan
    assert list(plans) == [200] and plans[200].max_steps == 2000  # 100 s / 0.05 s
    assert "over the 98 steps since the resume" in plans[200].message


def test_time_budget_takes_the_slowest_ranks_window():
    """Ranks time their own windows; each must fix the same max_steps, or the one that went on
    would wait forever on a collective.  So a window is the slowest rank's."""
    import torch

    from headless.train.budget import TimeBudget

    config = load_config("tiny", overrides=["budget.time_s=10", "budget.calibration_skip=2", "budget.calibration_steps=4",
                                            "optim.warmup_steps=6", "max_steps=100000"])
    other_rank = 0.25  # this rank measures 0.1 s per step, the other 0.25

    def all_reduce(tensor, op):
        assert op == "max"
        return torch.maximum(tensor, torch.tensor(other_rank, dtype=tensor.dtype))

    budget = TimeBudget(config, torch.device("cpu"), world_size=2, all_reduce=all_reduce)
    clock = iter([0.0, 0.4])
    budget._now = lambda sync=True: next(clock)
    assert budget.on_step_end(2) is None
    assert budget.on_step_end(6).max_steps == 40  # 10 s / 0.25 s, not 10 / 0.1


def test_a_sync_free_run_compiles_backbone_and_loss_as_one_graph_and_trains_like_eager(datasets, tmp_path, capsys):
    """Inductor, on the CPU: CLM with the K×K CWT is compiled whole (`compile_model`), and its
    training losses follow the eager run's step by step."""
    losses = {}
    for compiled in (False, True):
        extra = ["objective.loss_implementation=reference", f"compile={str(compiled).lower()}",
                 "log_every=1", "eval_every=100"]
        config = _config(datasets, tmp_path / str(compiled), "gpt-neox", "headless", *extra)
        pretrain(config)
        losses[compiled] = _losses(tmp_path / str(compiled) / "run")
    assert "compile: backbone and loss as one graph" in capsys.readouterr().out
    assert sorted(losses[True]) == list(range(1, 7))
    for step, loss in losses[False].items():
        assert losses[True][step] == pytest.approx(loss, rel=2e-4), step
