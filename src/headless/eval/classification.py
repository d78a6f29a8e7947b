"""Sequence(-pair) classification fine-tuning shared by GLUE and XNLI.

Reads only a standard Hugging Face directory (config + weights + tokenizer), so it evaluates our
exported encoders and anyone else's alike.  Our encoders are exported without any head, so the
classification head (and BERT's pooler) is freshly initialised: that is the point of fine-tuning.
The loop is plain PyTorch: AdamW, warm-up then constant or linear-decay LR, gradient clipping at 1,
dynamic padding per batch, evaluation after every epoch when the best epoch is reported.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import json
import logging
import math
import pickle
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from headless.errors import HeadlessError, load_error
from headless.eval.metrics import balanced_cross_entropy
from headless.files import atomic_write
from headless.param_groups import decay_groups  # the trainer's rule: no decay on biases and norms
from headless.runtime import to_device

log = logging.getLogger(__name__)
_ANNOUNCED: set[str] = set()


class FinetuneDiverged(HeadlessError):
    """A fine-tuning run whose loss became non-finite: an error for one run, a disqualified
    candidate for a learning-rate sweep (`finetune_all(..., tolerate_divergence=True)`)."""


@dataclass(frozen=True)
class Example:
    text_a: str
    text_b: str | None = None
    label: float = 0  # class index, or the target value for regression


@dataclass(frozen=True)
class Recipe:
    """A fine-tuning protocol; `select` = report the "best" or the "last" epoch's score."""

    lr: float
    epochs: int
    batch_size: int
    weight_decay: float
    schedule: str  # "constant" or "linear" (decay to 0), both after a linear warm-up
    loss: str = "ce"  # "ce" or "balanced_ce" (regression always uses MSE)
    select: str = "last"
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0

    def override(self, **values) -> Recipe:
        """A copy with the given values replaced; None leaves a field unchanged (CLI defaults)."""
        values = {k: v for k, v in values.items() if v is not None}
        for key in ("lr", "epochs", "batch_size"):
            if key in values and values[key] <= 0:
                raise HeadlessError(f"--{key.replace('_', '-')} must be positive, got {values[key]}")
        return dataclasses.replace(self, **values)


@dataclass
class Encoded:
    """Token ids of a split (unpadded) and their labels."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: list[float]

    def __len__(self) -> int:
        return len(self.labels)


@contextlib.contextmanager
def _quiet_transformers():
    """Silence HF's load report: 'newly initialized classifier' is expected here, we log it."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _check_model_dir(model_dir: str | Path) -> Path:
    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise HeadlessError(f"{path} is not a Hugging Face model directory (no config.json); "
                            "export a run with `headless export RUN_DIR OUT_DIR` first")
    return path


_DECODER_TYPES = {"gpt2", "gpt_neox", "gptj", "gpt_neo", "llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma",
                  "gemma2", "phi", "phi3", "opt", "bloom", "falcon", "olmo", "olmo2"}


def require_encoder(model_dir: str | Path, command: str) -> None:
    """Refuse a decoder export with one line: GLUE and XNLI fine-tune encoders (bidirectional, a
    pooled first token); a causal LM would run, slowly and meaninglessly compared with them."""
    path = _check_model_dir(model_dir)
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise HeadlessError(f"could not read {path / 'config.json'}: {err}") from err
    if not isinstance(config, dict):
        raise HeadlessError(f"{path / 'config.json'} is not a JSON object")
    archs = [a for a in config.get("architectures") or [] if isinstance(a, str)]
    causal = [a for a in archs if a.endswith(("ForCausalLM", "LMHeadModel"))]
    if causal or config.get("is_decoder") is True or config.get("model_type") in _DECODER_TYPES:
        kind = causal[0] if causal else (archs or [config.get("model_type")])[0]
        raise HeadlessError(f"{command} fine-tunes an encoder; {path} is a decoder ({kind}): evaluate it with "
                            "`headless eval lambada|zeroshot|harness`")


def load_tokenizer(model_dir: str | Path):
    """The tokenizer saved next to the model (never downloaded), checked against its vocabulary."""
    from headless.data.tokenizers import load_model_tokenizer

    from headless.models import model_dir_config

    path = _check_model_dir(model_dir)
    model_dir_config(path)  # a config transformers cannot read (or remote code): one line, before any data work
    with _quiet_transformers():
        return load_model_tokenizer(path)


def _check_fit(path: Path, tokenizer, rows: int | None) -> None:
    """Fail before any training when the tokenizer is not the model's (`check_tokenizer_fits`)."""
    from headless.data.tokenizers import check_tokenizer_fits

    check_tokenizer_fits(tokenizer, rows, path)


def pad_token_id(tokenizer) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id):
        if candidate is not None:
            return candidate
    return 0  # padded positions are masked out, so any id works for an encoder


def load_classifier(model_dir: str | Path, tokenizer, *, num_labels: int, device: torch.device):
    """AutoModelForSequenceClassification with a new head; checks the tokenizer fits the model."""
    from transformers import AutoModelForSequenceClassification

    path = _check_model_dir(model_dir)
    try:
        with _quiet_transformers():
            model, info = AutoModelForSequenceClassification.from_pretrained(
                path, num_labels=num_labels, local_files_only=True, output_loading_info=True,
                trust_remote_code=False)
    except (OSError, ValueError, KeyError, pickle.UnpicklingError) as err:
        raise HeadlessError(f"could not load {path} for sequence classification: {load_error(err)}") from None
    _check_fit(path, tokenizer, model.get_input_embeddings().num_embeddings)
    if model.config.pad_token_id is None:  # decoder heads find the last real token through it
        model.config.pad_token_id = pad_token_id(tokenizer)
    new = sorted(info.get("missing_keys", ()))
    if new and str(path) not in _ANNOUNCED:  # once per model, not once per seed and task
        _ANNOUNCED.add(str(path))
        log.info("new classification head for %s (%s): %s", path.name, type(model).__name__,
                 ", ".join(new[:6]) + (" ..." if len(new) > 6 else "")
                 + " freshly initialised, as expected for a model exported without a task head")
    return model.to(device)


def encode(tokenizer, examples: Sequence[Example], max_seq_len: int) -> Encoded:
    """Tokenise once per split.  Pairs use the tokenizer's pair template ([CLS] a [SEP] b [SEP]);
    a tokenizer with no template (e.g. GPT-NeoX/Pythia) gets `a <sep-or-eos> b`, and the model then
    pools the first token of `a` (the paper's code joined pairs with no separator at all)."""
    if max_seq_len < 8:
        raise HeadlessError(f"--max-seq-len must be at least 8, got {max_seq_len}")
    a = [ex.text_a for ex in examples]
    b = [ex.text_b or "" for ex in examples] if examples and examples[0].text_b is not None else None
    labels = [ex.label for ex in examples]
    if tokenizer.num_special_tokens_to_add(pair=b is not None) > 0:
        out = tokenizer(a, b, truncation=True, max_length=max_seq_len)
        types = out.get("token_type_ids") if "token_type_ids" in tokenizer.model_input_names else None
        return Encoded(out["input_ids"], types, labels)
    ids_a = tokenizer(a, add_special_tokens=False)["input_ids"]
    if b is None:
        return Encoded([ids[:max_seq_len] for ids in ids_a], None, labels)
    sep = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if sep is None:
        log.warning("the tokenizer has no pair template, SEP or EOS token: sentence pairs are joined "
                    "with no separator")
    sep_ids = [] if sep is None else [sep]
    ids_b = tokenizer(b, add_special_tokens=False)["input_ids"]
    joined = []
    for x, y in zip(ids_a, ids_b):
        x, y = list(x), list(y)
        while len(x) + len(y) + len(sep_ids) > max_seq_len:  # longest-first truncation
            (x if len(x) >= len(y) else y).pop()
        joined.append(x + sep_ids + y)
    return Encoded(joined, None, labels)


def _batch(data: Encoded, idx: Sequence[int], pad_id: int, regression: bool, device) -> dict:
    width = max(len(data.input_ids[i]) for i in idx)  # dynamic padding: pad to this batch only
    ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(idx), width), dtype=torch.long)
    types = torch.zeros((len(idx), width), dtype=torch.long) if data.token_type_ids else None
    for row, i in enumerate(idx):
        seq = data.input_ids[i]
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
        if types is not None:
            types[row, : len(seq)] = torch.tensor(data.token_type_ids[i])
    batch = {"input_ids": ids, "attention_mask": mask}
    if types is not None:
        batch["token_type_ids"] = types
    labels = torch.tensor([data.labels[i] for i in idx],
                          dtype=torch.float if regression else torch.long)
    # pinned, non-blocking copies: a pageable copy would wait for the GPU on every batch
    return {k: to_device(v, device) for k, v in batch.items()}, to_device(labels, device)


def _optimizer(model, recipe: Recipe) -> torch.optim.Optimizer:
    groups = decay_groups(model, recipe.weight_decay)
    return torch.optim.AdamW(groups, lr=recipe.lr)


def _schedule(optimizer, recipe: Recipe, total_steps: int):
    from transformers import (
        get_constant_schedule_with_warmup,
        get_linear_schedule_with_warmup,
    )

    warmup = math.ceil(recipe.warmup_ratio * total_steps)
    if recipe.schedule == "linear":
        return get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
    if recipe.schedule == "constant":
        return get_constant_schedule_with_warmup(optimizer, warmup)
    raise HeadlessError(f"unknown LR schedule {recipe.schedule!r} (constant or linear)")


@torch.no_grad()
def predict(model, data: Encoded, *, batch_size: int, pad_id: int, regression: bool,
            device, bf16: bool = False) -> list[float]:
    """Predicted classes (or values), in the order of `data`; batches sorted by length for speed."""
    model.eval()
    order = sorted(range(len(data)), key=lambda i: len(data.input_ids[i]))
    preds: list[float] = [0] * len(data)
    forward = _forward_for(model)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        inputs, _ = _batch(data, idx, pad_id, regression, device)
        with _autocast(device, bf16):
            logits = forward(inputs).float()
        values = logits[:, 0] if regression else logits.argmax(-1)
        for i, v in zip(idx, values.tolist()):
            preds[i] = v
    return preds


def _forward_for(model) -> Callable[[dict], torch.Tensor]:
    accepts_types = "token_type_ids" in inspect.signature(model.forward).parameters
    def forward(inputs: dict) -> torch.Tensor:
        if not accepts_types:
            inputs = {k: v for k, v in inputs.items() if k != "token_type_ids"}
        return model(**inputs).logits
    return forward


def _autocast(device, bf16: bool):
    return torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def finetune(
    model_dir: str | Path,
    tokenizer,
    train: Encoded,
    evals: Mapping[str, Encoded],
    *,
    num_labels: int,
    metric: Callable[[list, list], dict[str, float]],
    recipe: Recipe,
    seed: int,
    device: torch.device,
    bf16: bool = False,
    progress: bool = True,
    desc: str = "",
) -> dict:
    """Fine-tune one fresh copy of the model with one seed.

    `num_labels=1` means regression (MSE).  `metric(preds, labels)` returns a dict with a "main"
    entry; with `recipe.select == "best"` the epoch with the highest mean "main" over `evals` is
    reported (the paper's protocol), otherwise the last epoch.  Returns
    {"scores": {eval_name: metrics}, "epoch": chosen epoch (1-based), "history": [per-epoch scores],
    "predictions": {eval_name: predictions of the chosen epoch}} (for paired tests across models).
    """
    if not len(train):
        raise HeadlessError(f"{desc or 'fine-tuning'}: the training set is empty")
    if bf16 and device.type != "cuda":
        raise HeadlessError("--bf16 needs a CUDA device (leave it off on CPU)")
    regression = num_labels == 1
    _check_labels(train, num_labels, desc)
    for data in evals.values():
        _check_labels(data, num_labels, desc)

    from transformers import set_seed

    started = time.perf_counter()
    set_seed(seed)  # the new head's initialisation and dropout depend on the seed
    model = load_classifier(model_dir, tokenizer, num_labels=num_labels, device=device)
    load_s, train_s, steps = time.perf_counter() - started, 0.0, 0
    pad_id = pad_token_id(tokenizer)
    forward = _forward_for(model)
    steps_per_epoch = math.ceil(len(train) / recipe.batch_size)
    optimizer = _optimizer(model, recipe)
    scheduler = _schedule(optimizer, recipe, steps_per_epoch * recipe.epochs)
    generator = torch.Generator().manual_seed(seed)

    history: list[dict] = []
    predictions: list[dict] = []  # per evaluated epoch, like history
    for epoch in range(1, recipe.epochs + 1):
        epoch_start = time.perf_counter()
        model.train()
        order = torch.randperm(len(train), generator=generator).tolist()
        bar = tqdm(range(0, len(train), recipe.batch_size), desc=f"{desc} seed {seed} epoch {epoch}",
                   disable=None if progress else True, leave=False, unit="batch")
        nonfinite = torch.zeros((), dtype=torch.bool, device=device)  # read once per epoch: no sync per step
        for i, start in enumerate(bar):
            inputs, labels = _batch(train, order[start : start + recipe.batch_size], pad_id,
                                    regression, device)
            with _autocast(device, bf16):
                logits = forward(inputs).float()
            if regression:
                loss = F.mse_loss(logits[:, 0], labels)
            elif recipe.loss == "balanced_ce":
                loss = balanced_cross_entropy(logits, labels)
            else:
                loss = F.cross_entropy(logits, labels)
            nonfinite |= ~torch.isfinite(loss.detach())
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if not bar.disable and i % 50 == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        if bool(nonfinite):  # a sync: the epoch's time below is the GPU's too
            raise FinetuneDiverged(f"{desc}: the loss became non-finite in epoch {epoch}; "
                                   "lower --lr (or drop --bf16)")
        train_s += time.perf_counter() - epoch_start
        steps += steps_per_epoch
        if recipe.select == "best" or epoch == recipe.epochs:
            predictions.append({name: predict(model, data, batch_size=2 * recipe.batch_size, pad_id=pad_id,
                                              regression=regression, device=device, bf16=bf16)
                                for name, data in evals.items()})
            history.append({name: metric(predictions[-1][name], data.labels) for name, data in evals.items()})
            log.info("%s seed %d epoch %d: %s", desc, seed, epoch, _fmt(history[-1]))
    chosen = len(history) - 1
    if recipe.select == "best":
        chosen = max(range(len(history)), key=lambda i: statistics.fmean(m["main"] for m in history[i].values()))
    epoch = chosen + 1 if recipe.select == "best" else recipe.epochs
    preds = {name: [float(v) if regression else int(v) for v in values]  # unrounded: ranks decide Spearman
             for name, values in predictions[chosen].items()}
    return {"scores": history[chosen], "epoch": epoch, "history": history, "predictions": preds,
            "timing": {"desc": desc, "seed": seed, "seconds": time.perf_counter() - started, "load_s": load_s,
                       "train_s": train_s, "steps": steps}}


def _finetune_job(job: dict, tolerate_divergence: bool = False) -> dict:
    """One run; a run that diverged under bf16 autocast runs once more in float32 (what the error
    advises), its result marked `retried_fp32`."""
    try:
        return finetune(**job)
    except FinetuneDiverged as err:
        failure = err
    if job.get("bf16"):
        log.warning("%s: running it again in float32", failure)
        try:
            return dict(finetune(**dict(job, bf16=False)), retried_fp32=str(failure))
        except FinetuneDiverged as err:
            failure = err
    if not tolerate_divergence:
        raise failure
    return {"diverged": str(failure)}


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)  # N processes x all cores each would oversubscribe the CPU


# open `shared_workers` blocks, innermost last: each maps a worker count to the pool made for it
_SHARED: list[dict] = []


@contextlib.contextmanager
def shared_workers():
    """Within the block, `finetune_all` calls with the same `workers` share one pool of processes.

    A spawned worker imports torch and transformers and opens a CUDA context before its first job
    (seconds), and one study point makes several calls (GLUE: one per learning rate, then the other
    seeds at the chosen ones).  The pools are made on first use and shut down when the block ends;
    an error cancels the jobs not yet started."""
    pools: dict = {}
    _SHARED.append(pools)
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        raise
    finally:
        _SHARED.remove(pools)
        for pool in pools.values():
            pool.shutdown(wait=True, cancel_futures=failed)


def _work(job: dict) -> int:
    """A job's size for scheduling: training examples x epochs, plus the examples it evaluates."""
    return len(job["train"]) * job["recipe"].epochs + sum(len(data) for data in job["evals"].values())


def finetune_all(jobs: Sequence[dict], *, workers: int = 1, tolerate_divergence: bool = False) -> list[dict]:
    """`finetune(**job)` for every job, the results in job order.  A bf16 run whose loss became
    non-finite runs again in float32; if that diverges too, it ends every job, or with
    `tolerate_divergence` returns {"diverged": message}.

    With workers > 1 the jobs run in that many processes (spawned: each has its own CUDA context),
    the largest first (XNLI's translate-train-all runs are 15 times a language's: started last, they
    would run alone at the end), inside a `shared_workers` block on its pool.  A small model's
    fine-tuning step is bound by the host's Python and kernel launches, not by the GPU, so several
    processes can share one GPU.  Every job seeds itself and loads a fresh copy of the model, so the
    results depend neither on `workers` nor on the order (tested on CPU).  A job's metric must be
    picklable then (a functools.partial, not a lambda)."""
    jobs = list(jobs)
    if workers < 1:
        raise HeadlessError(f"workers must be >= 1, got {workers}")
    run = functools.partial(_finetune_job, tolerate_divergence=tolerate_divergence)
    if workers == 1 or len(jobs) <= 1:
        return [run(job) for job in jobs]
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    jobs = [dict(job, progress=False) for job in jobs]  # one bar per process would interleave
    shared = _SHARED[-1] if _SHARED else None
    pool = shared.get(workers) if shared is not None else None
    if pool is None:
        count = workers if shared is not None else min(workers, len(jobs))
        threads = max(1, (os.cpu_count() or 1) // count)
        pool = ProcessPoolExecutor(count, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_worker_init, initargs=(threads,))
        if shared is not None:
            shared[workers] = pool
    largest_first = sorted(range(len(jobs)), key=lambda i: -_work(jobs[i]))
    futures = {i: pool.submit(run, jobs[i]) for i in largest_first}
    try:
        return [futures[i].result() for i in range(len(jobs))]
    except BaseException:
        for future in futures.values():
            future.cancel()
        raise
    finally:
        if shared is None:
            pool.shutdown(wait=True)


def fine_tuning_time(runs: Sequence[dict], wall_s: float, workers: int) -> dict:
    """Where a `finetune_all` call's time went, from its runs' own timings: wall seconds, the runs'
    seconds added up (loading the model, training steps), the mean training step and the longest
    run. Evaluation is dominated by fine-tuning, so this says what a faster evaluation must cut."""
    timed = [r["timing"] for r in runs if "timing" in r]
    steps = sum(t["steps"] for t in timed)
    train_s = sum(t["train_s"] for t in timed)
    longest = max(timed, key=lambda t: t["seconds"], default=None)
    return {"runs": len(runs), "workers": workers, "wall_s": wall_s,
            "run_s": sum(t["seconds"] for t in timed), "load_s": sum(t["load_s"] for t in timed),
            "train_s": train_s, "steps": steps, "ms_per_step": 1000 * train_s / steps if steps else None,
            "longest_s": longest["seconds"] if longest else None,
            "longest": f"{longest['desc']} seed {longest['seed']}" if longest else None}


def describe_fine_tuning(timing: Mapping) -> str:
    """One line of `fine_tuning_time`, for a study's log."""
    line = (f"{timing['runs']} fine-tuning runs in {timing['workers']} process(es): {timing['wall_s']:.0f} s wall, "
            f"{timing['run_s']:.0f} s of runs ({timing['load_s']:.0f} s loading the model, "
            f"{timing['train_s']:.0f} s training")
    if timing.get("ms_per_step"):
        line += f": {timing['steps']:,} steps, {timing['ms_per_step']:.1f} ms each in its process"
    line += ")"
    if timing.get("longest"):
        line += f"; the longest {timing['longest_s']:.0f} s ({timing['longest']})"
    return line


def _check_labels(data: Encoded, num_labels: int, desc: str) -> None:
    if num_labels == 1:
        return
    bad = [y for y in data.labels if not (float(y).is_integer() and 0 <= y < num_labels)]
    if bad:
        raise HeadlessError(f"{desc}: label {bad[0]!r} is out of range for {num_labels} classes")


def _fmt(scores: Mapping[str, Mapping[str, float]]) -> str:
    return "; ".join(f"{name} " + " ".join(f"{k}={100 * v:.2f}" for k, v in m.items() if k != "main")
                     for name, m in scores.items())


def summarize(values: Sequence[float]) -> dict:
    """mean ± sample standard deviation over seeds (std 0 for a single seed)."""
    values = [float(v) for v in values]
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "values": values}


def parse_seeds(seeds: Sequence[int] | str | int) -> list[int]:
    """Seeds from `"0,1,2"`, an int or a list of ints (distinct)."""
    if isinstance(seeds, int):
        return [seeds]
    if isinstance(seeds, str):
        try:
            parts = [int(s) for s in seeds.replace(" ", "").split(",") if s]
        except ValueError as err:
            raise HeadlessError(f"--seeds takes comma-separated integers, got {seeds!r}") from err
        seeds = parts
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise HeadlessError(f"--seeds needs distinct integers, got {seeds}")
    return seeds


def fmt_score(summary: Mapping | None) -> str:
    """`85.20 ± 0.31` (percent points), `85.20` from one seed (no spread to show), `–` when missing."""
    if not summary:
        return "–"
    if len(summary.get("values", ())) == 1:
        return f"{100 * summary['mean']:.2f}"
    return f"{100 * summary['mean']:.2f} ± {100 * summary['std']:.2f}"


def over_seeds(*seed_lists: Sequence[int]) -> str:
    """What a table's cells are: "mean ± std over seeds [0, 1]", or "one seed (0), no spread"."""
    if all(len(seeds) == 1 for seeds in seed_lists):
        return "one seed (" + ", ".join(str(seeds[0]) for seeds in seed_lists) + "), no spread"
    return "mean ± std over seeds " + " and ".join(str(list(seeds)) for seeds in seed_lists)


def write_results(results: dict, markdown: str, output_dir: str | Path | None, stem: str) -> None:
    """`<output_dir>/<stem>.json` and `.md`; nothing when output_dir is None."""
    import json

    if output_dir is None:
        return
    out = Path(output_dir)
    atomic_write(out / f"{stem}.json", json.dumps(results, indent=2) + "\n")
    atomic_write(out / f"{stem}.md", markdown)
    from headless.model_card import refresh_if_export

    refresh_if_export(out)  # EXPORT/eval-results: the export's model card shows them
    log.info("wrote %s and %s", out / f"{stem}.json", out / f"{stem}.md")
