"""`headless bench` on CPU: every objective runs a real training step; twins agree on the loss."""

import json

import pytest
import torch

from headless.lab.bench import OBJECTIVES, bench, format_table
from headless.cli import main
from headless.errors import HeadlessError

SMALL = ["model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64",
         "model.max_position_embeddings=64"]


def test_bench_runs_every_objective_and_same_objectives_agree(tmp_path):
    """The cases are the loss table's (every loss x implementation): each runs a real training step
    here or says why not (a CUDA kernel, an optional package)."""
    from headless.loss_kinds import LOSSES

    cases = {(loss, impl.name) for loss, kind in LOSSES.items() for impl in kind.implementations}
    assert {(loss, impl) for _, loss, impl in OBJECTIVES.values()} == cases
    from headless.lab.bench import missing_package

    installed = [o for o in OBJECTIVES if not missing_package(o)]  # the absent ones are refused (test below)
    rows = bench("tiny-gpt", objectives=installed, vocab_sizes=[512], batch_sizes=[2], seq_len=32, steps=1,
                 warmup=1, overrides=SMALL, output=str(tmp_path), progress=False)
    by = {r["objective"]: r for r in rows}
    assert set(by) == set(installed)
    for name, (_, loss, impl) in ((n, OBJECTIVES[n]) for n in installed):
        entry = LOSSES[loss].implementation(impl)
        if entry.needs_cuda:
            assert "CUDA" in by.pop(name)["skipped"]  # no GPU here
        elif entry.external and "skipped" in by[name]:  # optional packages, CUDA only; torch >= 2.13
            reason = by.pop(name)["skipped"]
            assert "liger_kernel" in reason or "cut_cross_entropy" in reason or "2.13" in reason
    assert {"cwt-liger", "ce-cce", "nce-liger", "ce+cwt-cce"}.isdisjoint(by)  # CPU: never a row
    if not hasattr(torch.nn.functional, "linear_cross_entropy"):
        assert "cwt-torch" not in by and "ce-torch" not in by
    assert all(r["tokens_per_s"] > 0 and r["targets"] == 2 * 31 for r in by.values())
    # the same objective computed by different paths gives the same loss on the same model and data,
    # including HF's own forward(labels=) with logits at every position (ce-hf-full)
    pairs = [("cwt", "cwt-paper"), ("cwt", "cwt-chunked"), ("cwt", "cwt-dedup"), ("cwt", "cwt-bounded"),
             ("nce", "nce-bounded"), ("ce", "ce-hf"),
             ("ce", "ce-chunked"), ("ce", "ce-hf-full"), ("nce", "nce-reference"), ("nce", "nce-chunked"),
             ("ce+cwt", "ce+cwt-reference"), ("ce+cwt", "ce+cwt-chunked")]
    pairs += [(a, b) for a, b in [("cwt", "cwt-torch"), ("ce", "ce-torch")] if b in by]
    for a, b in pairs:
        assert by[a]["loss"] == pytest.approx(by[b]["loss"], rel=1e-4), (a, b)
    assert by["cwt"]["unique_targets"] <= 62
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["device"] == "cpu" and len(data["rows"]) == len(installed)
    assert (tmp_path / "bench.png").stat().st_size > 1000
    assert "| cwt | 512 | 2 |" in (tmp_path / "bench.md").read_text()
    assert "objective" in format_table(rows)


def test_bench_static_masking_has_a_constant_number_of_loss_positions():
    rows = bench("tiny", objectives=["backbone", "cwt", "ce"], vocab_sizes=[256], batch_sizes=[4], seq_len=32, steps=1,
                 warmup=1, overrides=["objective.masking=static"], progress=False)
    assert [r["targets"] for r in rows] == [4 * round(0.15 * 32)] * 3
    assert all(r["tokens_per_s"] > 0 and r["loss"] == r["loss"] for r in rows)  # finite, not NaN


def test_bench_cli_and_bad_objective(tmp_path, capsys):
    assert main(["bench", "--preset", "tiny", "--objectives", "cwt,ce", "--vocab-sizes", "256", "--batch-sizes", "2",
                 "--seq-len", "32", "--steps", "1", "--warmup", "0", *SMALL]) == 0
    assert "| ce | 256 | 2 |" in capsys.readouterr().out
    with pytest.raises(HeadlessError, match="unknown objective"):
        bench("tiny", objectives=["softmax"])


def test_bench_profile_writes_kernel_tables(tmp_path):
    rows = bench("tiny", objectives=["cwt", "ce-hf-full"], vocab_sizes=[256], batch_sizes=[2], seq_len=32, steps=1,
                 warmup=0, overrides=SMALL, output=str(tmp_path), progress=False, profile=True)
    for row in rows:
        text = open(row["profile"]).read()
        assert "self_cpu_time_total" in text and "aten::" in text  # a real profiler table of this case
    assert rows[0]["loss"] > 0 and rows[1]["loss"] > 0  # MLM: HF's own loss on the masked positions


def test_bench_times_the_presets_own_vocabulary_by_default():
    """A bare `--preset bert-small` once timed V=8,192 instead of BERT's 30,522 (H200 session of
    issue #14): the default V is the preset's."""
    from headless.lab.bench import preset_vocab_size

    assert preset_vocab_size("bert-small") == 30522
    assert preset_vocab_size("pythia-160m") == 50304
    rows = bench("tiny", objectives=["cwt"], batch_sizes=[2], seq_len=16, steps=1, warmup=0, device="cpu",
                 progress=False)
    assert rows[0]["vocab_size"] == preset_vocab_size("tiny") == 4096


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("preset", ["tiny", "tiny-gpt"])
def test_sync_free_twins_run_a_captured_step_without_host_syncs_on_gpu(preset):
    """Static shapes plus the K×K CWT or the bounded de-duplication (headless) or the dense head
    (vanilla): backbone and loss are one CUDA graph, and the trainer's whole step (clipping,
    non-finite guard, AdamW) makes the host wait for the GPU zero times."""
    rows = bench(preset, objectives=["cwt-paper", "cwt-bounded", "ce-hf"], batch_sizes=[8], seq_len=64, steps=3,
                 warmup=3, compile=True, overrides=["objective.masking=static", "compile_mode=reduce-overhead"],
                 sync_debug=True, progress=False)
    for row in rows:
        assert row["compiled_region"] == "model", row
        assert row["host_syncs_per_step"] == 0, row["host_sync_stacks"]
    by = {r["objective"]: r for r in rows}  # the same loss, K x K or de-duplicated
    assert by["cwt-bounded"]["loss"] == pytest.approx(by["cwt-paper"]["loss"], rel=1e-2)


def _timed(objective, vocab, batch):
    return {"preset": "tiny", "objective": objective, "vocab_size": vocab, "batch_size": batch, "seq_len": 64,
            "tokens_per_s": 1000.0 * batch, "ms_per_1k_tokens": 1.0 / batch, "peak_mem_gib": None, "loss": 5.0}


@pytest.mark.parametrize("vocabs, batches, x, xs", [
    ([512], [2, 4, 8], "micro-batch size", [2, 4, 8]),       # a batch sweep spreads along x
    ([256, 512], [4], "vocabulary size", [256, 512]),        # the paper's Fig. 2
    ([256, 512], [2, 4], "vocabulary size", [256, 512]),     # both: one line per batch
])
def test_bench_plot_x_axis_follows_what_was_swept(vocabs, batches, x, xs, tmp_path, monkeypatch):
    """Issue #27 item 10: a batch sweep used to pile into one column at the vocabulary size."""
    import matplotlib.axes

    from headless.lab.bench import write_report

    drawn, labels, real, real_set = [], [], matplotlib.axes.Axes.plot, matplotlib.axes.Axes.set

    def spy(self, xv, *args, **kwargs):
        drawn.append((list(xv), kwargs.get("label")))
        return real(self, xv, *args, **kwargs)

    def spy_set(self, **kwargs):
        labels.append(kwargs.get("xlabel"))
        return real_set(self, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", spy)
    monkeypatch.setattr(matplotlib.axes.Axes, "set", spy_set)
    rows = [_timed(o, v, b) for o in ("cwt", "ce") for v in vocabs for b in batches]
    write_report(rows, tmp_path, device="cpu")
    assert drawn and all(points == xs for points, _ in drawn) and x in labels
    assert len(drawn) == 2 * (len(vocabs) * len(batches) // len(xs))  # one line per objective and other value
    import matplotlib.image

    assert matplotlib.image.imread(tmp_path / "bench.png").shape[1] > 100


def test_bench_refuses_an_objective_whose_package_is_absent_with_one_line(capsys):
    """Issue #29: a kernel package to install is refused up front (exit 2, one line), before any case runs."""
    from headless.lab.bench import OBJECTIVES, missing_package
    from headless.cli import main

    absent = [o for o in OBJECTIVES if missing_package(o)]
    if not absent:
        pytest.skip("every optional kernel package is installed here")
    for objective in absent:
        assert main(["bench", "--preset", "tiny", "--objectives", f"cwt,{objective}", "--steps", "1",
                     "--no-progress"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and objective in err[0] and "pip install" in err[0]


def test_bench_refuses_quack_when_absent_with_one_line(capsys):
    """Issue #29: quack-kernels (and its CuTe DSL wheels) may be absent where the bench runs: `ce-quack`
    is refused up front with the package to install, in one line."""
    import importlib.util

    if importlib.util.find_spec("quack") is not None:
        pytest.skip("quack-kernels is installed here")
    assert main(["bench", "--preset", "tiny", "--objectives", "ce,ce-quack", "--steps", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ce-quack" in err[0] and "pip install quack-kernels" in err[0]


def _speed(objective, vocab, tps, batch=8, mem=None):
    return {"preset": "pythia-160m", "objective": objective, "vocab_size": vocab, "batch_size": batch,
            "seq_len": 2048, "tokens_per_s": float(tps), "ms_per_1k_tokens": 1e6 / tps, "peak_mem_gib": mem,
            "loss": 10.0, "mfu": None}


def test_best_vanilla_is_the_fastest_of_every_vanilla_row_measured(tmp_path):
    """Issue #29: "best vanilla" is the best of ALL vanilla rows (our head, HF's own, CCE, Liger,
    quack), named; CE + CWT and NCE are neither twin; failed rows do not count; the memory table
    names the vanilla path that fits the largest micro-batch."""
    from headless.lab.bench import summarize, write_report

    rows = [_speed("backbone", 50304, 528_000), _speed("cwt", 50304, 505_000, mem=7.4),
            _speed("cwt-paper", 50304, 501_000), _speed("ce", 50304, 434_000, mem=8.5),
            _speed("ce-hf-full", 50304, 300_000), _speed("ce-cce", 50304, 297_000),
            {"preset": "pythia-160m", "objective": "ce-liger", "vocab_size": 50304, "batch_size": 8,
             "error": "RuntimeError: boom"},
            _speed("ce+cwt", 50304, 900_000), _speed("nce", 50304, 900_000),
            _speed("backbone", 256000, 492_000), _speed("cwt", 256000, 469_000), _speed("ce", 256000, 225_000),
            _speed("ce-cce", 256000, 240_000), _speed("ce-quack", 256000, 250_000),
            {"preset": "pythia-160m", "objective": "cwt", "vocab_size": 256000, "largest_batch": 96},
            {"preset": "pythia-160m", "objective": "ce", "vocab_size": 256000, "largest_batch": 64},
            {"preset": "pythia-160m", "objective": "ce-hf-full", "vocab_size": 256000, "largest_batch": 24,
             "complete": False}]
    summary = summarize(rows)
    by_v = {e["vocab_size"]: e for e in summary["speed"]}
    assert by_v[50304]["best_vanilla"]["objective"] == "ce" and by_v[50304]["best_headless"]["objective"] == "cwt"
    assert by_v[50304]["best_vanilla"]["of"] == ["ce", "ce-hf-full", "ce-cce"]  # measured ones only
    assert by_v[50304]["ratio"] == pytest.approx(505 / 434) and by_v[50304]["ceiling"] == pytest.approx(528 / 434)
    assert by_v[256000]["best_vanilla"]["objective"] == "ce-quack"  # a peer beat our head here
    assert by_v[256000]["ratio"] == pytest.approx(469 / 250)
    (memory,) = summary["memory"]
    assert memory["largest_headless"] == {"objective": "cwt", "largest_batch": 96}
    assert memory["largest_vanilla"] == {"objective": "ce", "largest_batch": 64}
    assert memory["ratio"] == pytest.approx(1.5) and memory["complete"] is False
    write_report(rows, tmp_path, device="cpu")
    text = (tmp_path / "bench.md").read_text()
    assert "250,000 (ce-quack) of ce, ce-cce, ce-quack" in text and "1.88×" in text
    assert "| pythia-160m | 256000 | 96 (cwt) | 64 (ce) | 1.50× |" in text
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["summary"]["speed"][1]["best_vanilla"]["objective"] == "ce-quack"


def test_largest_batch_extrapolates_peak_memory_and_stops_at_its_time_limit(monkeypatch):
    """--max-batch: peak memory is affine in the micro-batch, so two fitting probes predict the
    answer (few probes: each may be a compile); a time limit stops the search with a lower bound."""
    import headless.lab.bench as lab

    probed = []

    def probe(preset, objective, vocab, batch, *rest):
        probed.append(batch)
        peak = 3.0 + 0.5 * batch
        return peak if peak <= 80.0 else None  # fits up to batch 154

    monkeypatch.setattr(lab, "_probe", probe)
    monkeypatch.setattr(lab, "_device_gib", lambda device: 80.0)
    found = lab.largest_batch("tiny", "ce", 256, 32, torch.device("cpu"), True, [], start=8)
    assert 154 - 154 // 16 <= found["largest_batch"] <= 154 and found["first_oom"] > 154
    assert found["complete"] and found["probe"] == "compiled" and found["probes"] == len(probed) <= 6
    clock = iter(range(0, 10_000, 100))
    monkeypatch.setattr(lab.time, "perf_counter", lambda: float(next(clock)))
    probed.clear()
    bounded = lab.largest_batch("tiny", "ce", 256, 32, torch.device("cpu"), False, [], start=8, time_limit=150)
    assert not bounded["complete"] and bounded["probe"] == "eager" and len(probed) == 2
    assert bounded["largest_batch"] == probed[-1]


def test_bench_cli_passes_the_max_batch_options_and_refuses_a_bad_limit(monkeypatch, capsys):
    import headless.lab.bench as lab

    seen = {}
    monkeypatch.setattr(lab, "bench", lambda *a, **kw: seen.update(kw) or [])
    assert main(["bench", "--preset", "tiny", "--max-batch", "--max-batch-eager", "--max-batch-seconds", "90",
                 "--compile"]) == 0
    assert seen["max_batch"] and seen["max_batch_eager"] and seen["max_batch_seconds"] == 90.0 and seen["compile"]
    monkeypatch.undo()
    assert main(["bench", "--preset", "tiny", "--max-batch", "--max-batch-seconds", "0", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--max-batch-seconds must be positive" in err[0]


def test_bench_keeps_finished_rows_when_stopped_and_names_a_wrapped_oom(tmp_path, monkeypatch):
    """A bench stopped at a time limit (bench_peers.sh sends SIGINT) keeps the cases it finished in
    bench.json/.md; an out-of-memory error wrapped by torch.compile is an OOM row, not an error."""
    import headless.lab.bench as lab

    real, calls = lab._case, []

    def case(preset, objective, *args):
        calls.append(objective)
        if objective == "ce":
            try:
                raise torch.OutOfMemoryError("CUDA out of memory")
            except torch.OutOfMemoryError as oom:
                raise RuntimeError("backend compiler failed") from oom
        if objective == "cwt-paper":
            raise KeyboardInterrupt
        return real(preset, objective, *args)

    monkeypatch.setattr(lab, "_case", case)
    with pytest.raises(KeyboardInterrupt):
        bench("tiny", objectives=["cwt", "ce", "cwt-paper"], vocab_sizes=[256], batch_sizes=[2], seq_len=16, steps=1,
              warmup=0, overrides=SMALL, output=str(tmp_path), progress=False)
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert [r["objective"] for r in rows] == ["cwt", "ce"] and rows[1].get("oom") and "error" not in rows[1]
    assert "| cwt | 256 | 2 |" in (tmp_path / "bench.md").read_text()
    assert not list(tmp_path.glob("*.tmp"))
