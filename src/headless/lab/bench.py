"""`headless bench`: full training steps of headless and vanilla twins, side by side, in one process.

Each case builds the preset's backbone at a given vocabulary size and micro-batch, feeds it random
token ids drawn from a Zipf law (so the number of unique in-batch targets is realistic: CWT's cost
depends on it), and times warm-up + timed steps (CUDA events on GPU, medians).  It reports tokens/s,
MFU, peak memory and the loss, as a table, JSON and PNG plots (the paper's Fig. 2 / Fig. 6b: latency
and memory against vocabulary size, or against the micro-batch when only that was swept).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:  # imported where used: `headless bench --help` must not import torch
    import torch

from headless.config import load_config
from headless.errors import HeadlessError

def _cases() -> dict:
    """name -> (flavour, loss, loss implementation): every implementation of every loss in the table
    (`headless.loss_kinds.LOSSES`); the default "auto" is named after the loss, "none" (no loss at
    all) is the backbone's floor."""
    from headless.loss_kinds import LOSSES

    cases = {}
    for kind in LOSSES.values():
        flavour = "vanilla" if kind.needs_head else "headless"
        for impl in kind.implementations:
            name = impl.case or (kind.name if impl.name == "auto" else f"{kind.name}-{impl.name}")
            cases[name] = (flavour, kind.name, impl.name)
    return cases


OBJECTIVES = _cases()


def missing_package(objective: str) -> Optional[str]:
    """The install hint when an objective's kernel package is absent (CCE, Liger, ...), else None."""
    from headless.loss_kinds import LOSSES
    from headless.losses.external import missing_package as missing

    _, loss, name = OBJECTIVES[objective]
    return missing(name) if LOSSES[loss].implementation(name).external else None


def skip_reason(objective: str, device: torch.device) -> Optional[str]:
    """Why an objective cannot run here (a kernel needing CUDA, an optional package), or None."""
    from headless.loss_kinds import LOSSES

    _, loss, name = OBJECTIVES[objective]
    impl = LOSSES[loss].implementation(name)
    if impl.needs_cuda and device.type != "cuda":
        return "the Triton kernel needs a CUDA device"
    if impl.external:
        from headless.losses.external import unavailable_reason

        return unavailable_reason(name, device)
    return None


def zipf_batch(batch: int, seq_len: int, vocab: int, generator: torch.Generator, exponent: float = 1.1) -> torch.Tensor:
    import torch

    ranks = torch.arange(1, vocab + 1, dtype=torch.float64)
    probs = ranks.pow(-exponent)
    ids = torch.multinomial(probs / probs.sum(), batch * seq_len, replacement=True, generator=generator)
    perm = torch.randperm(vocab, generator=generator)  # frequent ids spread over the table
    return perm[ids].view(batch, seq_len)


def _case(preset: str, objective: str, vocab: int, batch: int, seq_len: Optional[int], steps: int, warmup: int,
          device: torch.device, compile: bool, overrides: list[str], profile_dir: Optional[Path] = None,
          sync_debug: bool = False) -> dict:
    import torch

    from headless.models import build_model, count_parameters
    from headless.train.logging import flops_per_token, peak_flops
    from headless.loss_kinds import LOSSES
    from headless.runtime import compute_dtype
    from headless.train.optim import Schedule, build_optimizer
    from headless.train.step import DataInfo, make_inputs, train_step as trainer_step

    flavour, loss, impl = OBJECTIVES[objective]
    extra = [f"model.vocab_size={vocab}", f"batch_size={batch}", f"objective.loss_implementation={impl}"]
    if seq_len:
        extra += [f"data.seq_len={seq_len}"]
    config = load_config(preset, overrides=extra + overrides, flavour=flavour)
    seq = config.data.seq_len
    torch.manual_seed(0)
    model = build_model(config.model, config.objective, loss, vocab, pad_token_id=0, eos_token_id=0).to(device)
    model.check_attention_kernel(device, compute_dtype(config.precision, device))  # model.attention_kernel absent: one line
    model.with_accuracy = device.type != "cuda"  # as in training: accuracy only on logged steps
    if compile:  # each case (and --max-batch probe) compiles afresh: no recompile limit reached after a
        torch.compiler.reset()  # few cases, no CUDA-graph pool of an earlier case (or OOM) kept alive
    info = DataInfo(vocab_size=vocab, eos_token_id=None, mask_token_id=1, special_token_ids=[0, 1])
    gen = torch.Generator().manual_seed(0)
    ids = [zipf_batch(batch, seq, vocab, gen) for i in range(4)]
    if config.objective.unique_bound == "auto":  # as the trainer sizes it, from these micro-batches
        model.size_unique_bound(max(int(b.unique().numel()) for b in ids))
    batches = [make_inputs(b, config, info, step=i, first_row=0) for i, b in enumerate(ids)]
    graphs = model.compile_model(config.compile_mode, batch, seq) if compile else False
    optimizer = build_optimizer(model, config, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, Schedule.of(config.optim, config.optim.schedule_steps or config.max_steps))
    if device.type == "cuda":  # as the trainer's loader delivers them
        batches = [(ids.pin_memory(), labels.pin_memory()) for ids, labels in batches]
    dtype = compute_dtype(config.precision, device)
    cuda = device.type == "cuda"
    trainable = [p for p in model.parameters() if p.requires_grad]

    def train_step(i: int):  # the trainer's own step: clipping, non-finite guard and schedule included
        return trainer_step(model, optimizer, [batches[i % len(batches)]], device=device, autocast_dtype=dtype,
                            grad_clip=config.optim.grad_clip, scheduler=scheduler, trainable=trainable,
                            graphs=graphs).result

    # CUDA: an event at every step boundary and ONE synchronisation at the end, so the host can queue
    # the next step while the GPU works (as in training); a step's time is boundary to boundary, gaps
    # where the GPU waited for the host included.  CPU: wall time per step.
    times, marks, result = [], [], None
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(warmup + steps):
        if i == warmup and cuda:
            torch.cuda.synchronize(device)  # warm-up (compilation, autotuning) stays out of the timings
        if cuda and i >= warmup:
            marks.append(torch.cuda.Event(enable_timing=True))
            marks[-1].record()
        t0 = time.perf_counter()
        result = train_step(i)
        if not cuda and i >= warmup:
            times.append(time.perf_counter() - t0)
    if cuda:
        marks.append(torch.cuda.Event(enable_timing=True))
        marks[-1].record()
        torch.cuda.synchronize(device)
        times = [a.elapsed_time(b) / 1000 for a, b in zip(marks, marks[1:])]
    step_s = statistics.median(times)
    tokens = batch * seq
    params = count_parameters(model)
    targets = result.num_targets
    scored = float(result.unique) if LOSSES[loss].scores == "in-batch" else vocab
    fpt = flops_per_token(params["non_embedding"], config.model.num_layers, config.model.hidden_size, seq,
                          targets / tokens, scored)
    peak = peak_flops(device)
    row = {"preset": preset, "objective": objective, "vocab_size": vocab, "batch_size": batch, "seq_len": seq,
           "tokens_per_s": tokens / step_s, "step_ms": step_s * 1000, "ms_per_1k_tokens": step_s * 1e6 / tokens,
           "loss": float(result.loss_sum) / max(targets, 1), "targets": targets,
           "unique_targets": float(result.unique) or None, "parameters": params["total"],
           "mfu": fpt * tokens / step_s / peak if peak else None,
           "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None,
           "compile": config.compile_mode if compile else False,
           "compiled_region": model.compiled_region}  # "model": backbone and loss as one graph
    if sync_debug and cuda:
        row.update(_count_syncs(train_step, warmup + steps))
    if profile_dir is not None:
        row.update(_profile(train_step, warmup + steps, cuda, device,
                            profile_dir / f"profile-{preset}-{objective}-V{vocab}-B{batch}.txt"))
    train_step = model = optimizer = scheduler = None  # free the GPU memory before the next case
    if cuda:
        torch.cuda.empty_cache()
    return row


def _count_syncs(train_step, step: int) -> dict:
    """Run one more step with CUDA's sync debug mode: how many operations made the host wait for
    the GPU, and where (the innermost frame of this package outside bench.py, else the innermost
    frame that is not the warnings machinery), with the last frames of the first such stack, so a
    sync inside torch (a compiled graph, the optimizer) can be traced.  Only CUDA's own sync warning
    counts: setting the mode warns once per process that it is a "prototype" that may not detect
    all "synchronizing operations", and counting that warning made the first row of every process
    show one sync that the same step under mode "error" does not raise (H200, 2026-12-01)."""
    import torch

    import traceback
    import warnings
    from collections import Counter

    package = str(Path(__file__).resolve().parent)
    places: Counter = Counter()
    stacks: dict[str, list[str]] = {}
    previous = warnings.showwarning

    def record(message, category, filename, lineno, file=None, line=None):
        if "called a synchronizing CUDA operation" not in str(message):
            return previous(message, category, filename, lineno, file, line)
        stack = [f for f in traceback.extract_stack()[:-1] if not f.filename.endswith("warnings.py")]
        ours = [f for f in stack if f.filename.startswith(package) and not f.filename.endswith("bench.py")]
        frame = (ours or stack)[-1]
        place = f"{Path(frame.filename).name}:{frame.lineno} ({frame.line})"
        places[place] += 1
        stacks.setdefault(place, [f"{Path(f.filename).name}:{f.lineno} {f.name}: {f.line}" for f in stack[-8:]])

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            train_step(step)
            torch.cuda.synchronize()
        finally:
            torch.cuda.set_sync_debug_mode("default")
            warnings.showwarning = previous
    return {"host_syncs_per_step": sum(places.values()), "host_sync_places": dict(places.most_common()),
            "host_sync_stacks": stacks}


def _profile(train_step, first: int, cuda: bool, device: torch.device, path: Path, steps: int = 2) -> dict:
    """torch.profiler over a few more steps: the top kernels by self time, and how busy the GPU was
    (device time / wall time: below 1 means the GPU waited on the host)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for i in range(steps):
            train_step(first + i)
        if cuda:
            torch.cuda.synchronize(device)
        wall_us = (time.perf_counter() - t0) * 1e6
    events = prof.key_averages()
    sort = "self_device_time_total" if cuda else "self_cpu_time_total"
    path.parent.mkdir(parents=True, exist_ok=True)
    tables = [f"top {sort}", events.table(sort_by=sort, row_limit=40, max_name_column_width=90)]
    if cuda:  # where the host spends its time: launches, synchronisations, Python
        tables += ["top self_cpu_time_total", events.table(sort_by="self_cpu_time_total", row_limit=25,
                                                           max_name_column_width=90)]
    path.write_text("\n".join(tables))
    out = {"profile": str(path)}
    if cuda:
        from torch.autograd import DeviceType

        busy = sum(e.self_device_time_total for e in events if e.device_type == DeviceType.CUDA)
        out["gpu_busy"] = busy / wall_us
    return out


def _is_oom(err: BaseException) -> bool:
    """An out-of-memory error, also when torch.compile wraps it (a backend compiler failure)."""
    import torch

    for _ in range(20):  # the chain of causes, bounded
        if err is None:
            return False
        text = str(err).lower()
        if isinstance(err, torch.OutOfMemoryError) or "out of memory" in text or "alloc_failed" in text:
            return True
        err = err.__cause__ or err.__context__
    return False


def _release(device) -> None:
    """Free what a finished or failed case held (call it outside the `except` block: the traceback
    keeps the failed case's tensors alive until the handler exits)."""
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.compiler.reset()  # CUDA-graph pools of the compiled case
        torch.cuda.empty_cache()


def _probe(*args) -> Optional[float]:
    """Peak GiB of one warm-up and one timed step at this shape, or None when it runs out of memory."""
    try:
        row = _case(*args)
    except Exception as err:
        if not _is_oom(err):
            raise
        row = None
    _release(args[6])
    return None if row is None else float(row["peak_mem_gib"] or 0.0)


def _device_gib(device) -> float:
    import torch

    return torch.cuda.get_device_properties(device).total_memory / 2**30


def largest_batch(preset, objective, vocab, seq_len, device, compile, overrides, start: int, limit: int = 1024,
                  time_limit: Optional[float] = None) -> dict:
    """The largest micro-batch that trains (GPU): doubling from `start`; once two batches fit, a jump
    to the batch that their peak memory predicts (peak memory is affine in the batch); then
    bisection until the bracket is within 1/16.  Each probe builds the model and runs two steps,
    compiling it when `compile` (a compile per probe: tens of seconds at Pythia-160M).  With
    `time_limit` no probe starts after that many seconds: `complete` is then False and the answer
    a lower bound.  Returns the answer with the first batch that ran out of memory and the cost."""
    t0 = time.perf_counter()
    total = _device_gib(device)
    peaks: dict = {}  # batch -> peak GiB, None when out of memory
    good, bad, batch, complete = 0, None, start, True
    while True:
        if time_limit is not None and peaks and time.perf_counter() - t0 > time_limit:
            complete = False
            break
        peaks[batch] = _probe(preset, objective, vocab, batch, seq_len, 1, 1, device, compile, overrides)
        if peaks[batch] is None:
            bad = batch
        else:
            good = batch
        fit = sorted((b, p) for b, p in peaks.items() if p is not None)
        predicted = None
        if len(fit) >= 2 and fit[-1][1] > fit[-2][1]:
            (b1, p1), (b2, p2) = fit[-2:]
            predicted = int(b2 + (0.95 * total - p2) * (b2 - b1) / (p2 - p1))
        if bad is None:
            nxt = 2 * good
            if predicted is not None:
                nxt = predicted if predicted > good else good + max(1, good // 8)
            nxt = min(nxt, limit)
        else:
            if bad - good <= max(1, good // 16):
                break
            nxt = (good + bad) // 2
            if predicted is not None and good < predicted < bad and predicted not in peaks:
                nxt = predicted
        if nxt <= good or nxt in peaks:
            break
        batch = nxt
    return {"largest_batch": good, "first_oom": bad, "complete": complete, "probes": len(peaks),
            "probe_seconds": round(time.perf_counter() - t0, 1), "probe": "compiled" if compile else "eager",
            "probe_peaks_gib": {str(b): p for b, p in sorted(peaks.items())}}


def preset_vocab_size(preset: str) -> int:
    """The vocabulary a preset trains with (its model.vocab_size, else its tokenizer's size): the
    bench's default V, so that a bare `--preset bert-small` is timed at BERT's 30,522 rows."""
    from headless.config import load_config

    config = load_config(preset)
    return int(config.model.vocab_size or config.data.tokenizer_vocab_size)


def bench(preset: str = "tiny", *, objectives: list[str] = ("cwt", "ce"), vocab_sizes: Optional[list[int]] = None,
          batch_sizes: list[int] = (8,), seq_len: Optional[int] = None, steps: int = 10, warmup: int = 3,
          device: str = "auto", compile: bool = False, max_batch: bool = False, max_batch_eager: bool = False,
          max_batch_seconds: Optional[float] = None, overrides: list[str] = (),
          output: Optional[str] = None, progress: bool = True, profile: bool = False,
          sync_debug: bool = False) -> list[dict]:
    """Run every (objective, vocabulary size, micro-batch) case; write bench.json/.md/.png to `output`
    (and, with `profile`, a torch.profiler table per case).  bench.json and bench.md are rewritten
    after every case, so a run stopped at a time limit keeps what it measured.  `max_batch`: also
    the largest micro-batch of each objective at each V (`largest_batch`; probes compile when
    `compile` unless `max_batch_eager`, each search bounded by `max_batch_seconds`)."""
    import torch

    unknown = [o for o in objectives if o not in OBJECTIVES]
    if unknown:
        raise HeadlessError(f"unknown objective(s) {', '.join(unknown)}; choose from {', '.join(OBJECTIVES)}")
    missing = [f"{o}: {why}" for o in objectives if (why := missing_package(o))]
    if missing:  # a package to install is the user's to fix, not a row to skip in a sweep
        raise HeadlessError(f"cannot bench {'; '.join(missing)}")
    if max_batch_seconds is not None and max_batch_seconds <= 0:
        raise HeadlessError(f"--max-batch-seconds must be positive, got {max_batch_seconds:g}")
    from headless.runtime import resolve_device

    dev = resolve_device(device)
    device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    vocab_sizes = list(vocab_sizes) if vocab_sizes else [preset_vocab_size(preset)]
    rows = []
    cases = [(o, v, b) for v in vocab_sizes for b in batch_sizes for o in objectives]
    from tqdm.auto import tqdm

    for objective, vocab, batch in tqdm(cases, desc="bench", disable=not progress):
        reason = skip_reason(objective, dev)
        if reason:
            rows.append({"preset": preset, "objective": objective, "vocab_size": vocab, "batch_size": batch,
                         "skipped": reason})
            continue
        try:
            row = _case(preset, objective, vocab, batch, seq_len, steps, warmup, dev, compile, list(overrides),
                        Path(output or ".") if profile else None, sync_debug)
        except HeadlessError:
            raise
        except Exception as err:  # a third-party kernel failing must not lose the other cases
            row = {"preset": preset, "objective": objective, "vocab_size": vocab, "batch_size": batch}
            if _is_oom(err):
                row["oom"] = True
            else:
                row["error"] = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}"
        if "tokens_per_s" not in row:
            _release(dev)
        rows.append(row)
        if output:
            write_report(rows, Path(output), device=device_name, plot=False)
    if max_batch and dev.type == "cuda":
        for objective in objectives:
            if skip_reason(objective, dev):
                continue
            for vocab in vocab_sizes:
                try:
                    found = largest_batch(preset, objective, vocab, seq_len, dev, compile and not max_batch_eager,
                                          list(overrides), start=min(batch_sizes), time_limit=max_batch_seconds)
                except HeadlessError:
                    raise
                except Exception as err:  # as for the timed cases: the other searches go on
                    found = {"largest_batch": None,
                             "error": f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}"}
                    _release(dev)
                rows.append({"preset": preset, "objective": objective, "vocab_size": vocab, **found})
                if output:
                    write_report(rows, Path(output), device=device_name, plot=False)
    if output:
        write_report(rows, Path(output), device=device_name)
    return rows


def _kind(objective: str) -> Optional[str]:
    """"floor" (the backbone alone), "headless" (a CWT path), "vanilla" (a cross-entropy path through
    the vocabulary head: ours, HF's own, or a peer's kernel), else None (CE + CWT, NCE, unknown)."""
    entry = OBJECTIVES.get(objective)
    if entry is None:
        return None
    _, loss, impl = entry
    if impl == "none":
        return "floor"
    return {"cwt": "headless", "ce": "vanilla"}.get(loss)


def summarize(rows: list[dict]) -> dict:
    """The comparisons every table states: per (preset, V, micro-batch) the backbone alone, the
    fastest headless row and the fastest of ALL vanilla rows measured (our head, HF's own head,
    Cut Cross-Entropy, Liger, quack, ...), named; per (preset, V) the largest micro-batch of each
    objective, and which headless / vanilla path fits the most."""
    speed, memory = [], []
    groups: dict = {}
    for r in rows:
        if "tokens_per_s" in r:
            groups.setdefault((r["preset"], r["vocab_size"], r["batch_size"]), []).append(r)
    for (preset, vocab, batch), group in groups.items():
        best = {}
        for kind in ("floor", "headless", "vanilla"):
            found = [r for r in group if _kind(r["objective"]) == kind]
            if found:
                top = max(found, key=lambda r: r["tokens_per_s"])
                best[kind] = {"objective": top["objective"], "tokens_per_s": top["tokens_per_s"],
                              "peak_mem_gib": top.get("peak_mem_gib"), "of": [r["objective"] for r in found]}
        if "headless" not in best and "vanilla" not in best:
            continue
        h, v, f = best.get("headless"), best.get("vanilla"), best.get("floor")
        speed.append({"preset": preset, "vocab_size": vocab, "batch_size": batch, "backbone": f,
                      "best_headless": h, "best_vanilla": v,
                      "ratio": h["tokens_per_s"] / v["tokens_per_s"] if h and v else None,
                      "ceiling": f["tokens_per_s"] / v["tokens_per_s"] if f and v else None})
    fits: dict = {}
    for r in rows:
        if r.get("largest_batch") is not None and _kind(r["objective"]) in ("headless", "vanilla"):
            fits.setdefault((r["preset"], r["vocab_size"]), []).append(r)
    for (preset, vocab), group in fits.items():
        entry = {"preset": preset, "vocab_size": vocab,
                 "fits": {r["objective"]: r["largest_batch"] for r in group},
                 "complete": all(r.get("complete", True) for r in group)}
        for kind in ("headless", "vanilla"):
            found = [r for r in group if _kind(r["objective"]) == kind]
            top = max(found, key=lambda r: r["largest_batch"], default=None)
            entry[f"largest_{kind}"] = None if top is None else \
                {"objective": top["objective"], "largest_batch": top["largest_batch"]}
        h, v = entry["largest_headless"], entry["largest_vanilla"]
        entry["ratio"] = h["largest_batch"] / v["largest_batch"] if h and v and v["largest_batch"] else None
        memory.append(entry)
    return {"speed": speed, "memory": memory}


def format_summary(summary: dict) -> str:
    """The best-headless / best-vanilla tables of `summarize` (empty when there is nothing to compare)."""
    lines = []

    def named(best, key="tokens_per_s"):
        return "–" if best is None else f"{best[key]:,.0f} ({best['objective']})"

    if summary["speed"]:
        lines += ["| preset | V | batch | backbone alone | best headless | best vanilla (of those measured) | "
                  "headless / vanilla | ceiling (backbone / vanilla) |", "|" + "---|" * 8]
        for e in summary["speed"]:
            v = e["best_vanilla"]
            of = f" of {', '.join(v['of'])}" if v else ""
            ratio = f"{e['ratio']:.2f}×" if e["ratio"] else "–"
            ceiling = f"{e['ceiling']:.2f}×" if e["ceiling"] else "–"
            lines.append(f"| {e['preset']} | {e['vocab_size']} | {e['batch_size']} | {named(e['backbone'])} | "
                         f"{named(e['best_headless'])} | {named(v)}{of} | {ratio} | {ceiling} |")
    if summary["memory"]:
        lines += [""] * bool(lines) + ["| preset | V | largest micro-batch, headless | largest, vanilla | headless / vanilla | "
                  "every objective |", "|" + "---|" * 6]
        for e in summary["memory"]:
            ratio = f"{e['ratio']:.2f}×" if e["ratio"] else "–"
            every = ", ".join(f"{o} {b}" for o, b in e["fits"].items())
            bound = "" if e["complete"] else " (a search hit its time limit: lower bounds)"
            lines.append(f"| {e['preset']} | {e['vocab_size']} | {named(e['largest_headless'], 'largest_batch')} | "
                         f"{named(e['largest_vanilla'], 'largest_batch')} | {ratio} | {every}{bound} |")
    return "\n".join(lines)


def format_table(rows: list[dict]) -> str:
    head = "| objective | V | batch | tokens/s | ms / 1k tok | MFU | peak GiB | unique targets | loss |"
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        if "largest_batch" in r:
            continue
        if r.get("skipped"):
            lines.append(f"| {r['objective']} | {r['vocab_size']} | {r['batch_size']} | skipped: {r['skipped']} | | | | | |")
            continue
        if r.get("error"):
            lines.append(f"| {r['objective']} | {r['vocab_size']} | {r['batch_size']} | error: {r['error']} | | | | | |")
            continue
        if r.get("oom"):
            lines.append(f"| {r['objective']} | {r['vocab_size']} | {r['batch_size']} | OOM | | | | | |")
            continue
        mfu = f"{r['mfu']:.1%}" if r.get("mfu") else "–"
        mem = f"{r['peak_mem_gib']:.2f}" if r.get("peak_mem_gib") is not None else "–"
        uniq = f"{r['unique_targets']:.0f}" if r.get("unique_targets") else "–"
        whole = ", backbone + loss as one graph" if r.get("compiled_region") == "model" else ""
        name = r["objective"] + (f" (compiled: {r['compile']}{whole})" if r.get("compile") else "")
        if r.get("host_syncs_per_step") is not None:
            name += f" [{r['host_syncs_per_step']} host syncs/step]"
        if r.get("gpu_busy") is not None:
            name += f" [GPU busy {r['gpu_busy']:.0%}]"
        lines.append(f"| {name} | {r['vocab_size']} | {r['batch_size']} | {r['tokens_per_s']:,.0f} | "
                     f"{r['ms_per_1k_tokens']:.2f} | {mfu} | {mem} | {uniq} | {r['loss']:.3f} |")
    largest = [r for r in rows if "largest_batch" in r]
    if largest:
        lines += ["", "| objective | V | largest micro-batch | first OOM | probes | seconds |", "|---|---|---|---|---|---|"]
        for r in largest:
            if r["largest_batch"] is None:
                lines.append(f"| {r['objective']} | {r['vocab_size']} | error: {r.get('error')} | | | |")
                continue
            note = "" if r.get("complete", True) else " (time limit: lower bound)"
            probe = f" ({r['probe']})" if r.get("probe") else ""
            lines.append(f"| {r['objective']} | {r['vocab_size']} | {r['largest_batch']}{note} | "
                         f"{r.get('first_oom') or '–'} | {r.get('probes', '–')}{probe} | {r.get('probe_seconds', '–')} |")
    summary = format_summary(summarize(rows))
    return "\n".join(lines) + (f"\n\n{summary}" if summary else "")


def swept_axis(rows: list[dict]) -> tuple[str, str]:
    """(x, series) of bench.png: the x-axis follows what was swept (the vocabulary, as in the paper's
    Fig. 2, when several sizes were timed; else the micro-batch), one line per value of the other."""
    if len({r["vocab_size"] for r in rows}) <= 1 and len({r["batch_size"] for r in rows}) > 1:
        return "batch_size", "vocab_size"
    return "vocab_size", "batch_size"


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")  # never a half-written report
    tmp.write_text(text)
    tmp.replace(path)


def write_report(rows: list[dict], out: Path, device: str, plot: bool = True) -> None:
    """bench.json (the rows and `summarize`'s comparisons), bench.md, and with `plot` bench.png."""
    out.mkdir(parents=True, exist_ok=True)
    _write(out / "bench.json", json.dumps({"device": device, "rows": rows, "summary": summarize(rows)}, indent=2))
    _write(out / "bench.md", f"Device: {device}\n\n{format_table(rows)}\n")
    timed = [r for r in rows if "tokens_per_s" in r]
    if not plot or not timed:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, other = swept_axis(timed)
    names = {"vocab_size": ("vocabulary size", "vocabulary", "V"), "batch_size": ("micro-batch size", "micro-batch", "batch")}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for objective in dict.fromkeys(r["objective"] for r in timed):
        for value in dict.fromkeys(r[other] for r in timed):
            sel = sorted((r for r in timed if r["objective"] == objective and r[other] == value), key=lambda r: r[x])
            if not sel:
                continue
            label = f"{objective} ({names[other][2]} {value})"
            axes[0].plot([r[x] for r in sel], [r["ms_per_1k_tokens"] for r in sel], "o-", label=label)
            if sel[0].get("peak_mem_gib") is not None:
                axes[1].plot([r[x] for r in sel], [r["peak_mem_gib"] for r in sel], "o-", label=label)
    axes[0].set(xlabel=names[x][0], ylabel="ms per 1k tokens (train step)", title=f"latency vs {names[x][1]}")
    axes[1].set(xlabel=names[x][0], ylabel="peak GiB", title=f"memory vs {names[x][1]}")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(f"headless bench on {device}")
    fig.tight_layout()
    fig.savefig(out / "bench.png", dpi=100)
    plt.close(fig)
