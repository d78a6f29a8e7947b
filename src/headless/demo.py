"""`make demo` (`python -m headless.demo`): train the tiny headless encoder and its vanilla twin on the
embedded corpus, then show what they learned in a way a person can read.

Both twins see the same batches and masks.  Their training losses are not comparable (CWT scores
in-batch retrieval, CE the whole vocabulary), so the demo measures one thing both can do: fill in
masked words of held-out text, guessing over the whole vocabulary (the headless model scores its
output against every input embedding: no head needed), next to a baseline that always guesses the
most frequent tokens.  Then the twins' guesses on a few sentences and on held-out text, and one plot.

The defaults (DEMO_OVERRIDES) took 216 s on a busy 2-core machine, dataset and tokenizer build
included.  At this budget the twins barely leave the unigram plateau on the held-out prose (top-5
above the baseline, top-1 not yet): 300 steps of 16 and 1,200 steps of 16 at lr 2e-3 did no better.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Optional

import torch

DEMO_OVERRIDES = ["batch_size=8", "max_steps=1500", "eval_every=500", "save_every=1500", "keep_last=1", "log_every=50"]
TOP_K = 5
# Sentences in the corpus's style (Python's docstrings), written for the demo, so never trained
# on; [MASK] is the word to guess.  One whose answer is not a single token of the trained
# tokenizer is skipped.
SENTENCES = [
    ("Return True if the object is callable, [MASK] otherwise.", "false"),
    ("Return the [MASK] of items in the sequence.", "number"),
    ("If the file does not [MASK], an error is raised.", "exist"),
    ("This method is called when the [MASK] is closed.", "file"),
    ("The default value is [MASK].", "none"),
    ("Raise a ValueError if the [MASK] is negative.", "value"),
    ("Return a new list containing the [MASK] of the iterable.", "items"),
    ("The optional argument [MASK] defaults to None.", "timeout"),
]
CPU_SPEED_NOTE = ("Speed: these runs used the CPU, where the twins' step times say nothing about the paper's "
                  "claim. Headless's speed advantage is a GPU claim (no vocabulary head, fused kernels, large "
                  "vocabularies); its figures and commands are in docs/reference/performance.md.")


def _twins(root: Path, overrides: list[str], progress: bool) -> dict:
    from headless.config import load_config
    from headless.train.loop import pretrain

    out = {}
    for flavour in ("headless", "vanilla"):
        print(f"\n== {flavour} twin ==", flush=True)
        config = load_config("tiny", flavour=flavour, overrides=DEMO_OVERRIDES + list(overrides) + [
            f"run_dir={root / flavour}", f"progress={'true' if progress else 'false'}"])
        out[flavour] = {"summary": pretrain(config), "config": config}
    return out


def _load(run_dir: Path):
    """(HF model wrapper, tokenizer) of a run; the vanilla twin keeps its MLM head."""
    from headless.export import load_run_model

    _, model, tokenizer, _ = load_run_model(run_dir, None)
    model.eval()
    return model, tokenizer


def _scores(model, flavour: str, ids: torch.Tensor) -> torch.Tensor:
    """[B, L, V] vocabulary scores: the head's logits (vanilla) or outputs @ embeddings^T (headless)."""
    from headless.models import head_parts

    with torch.no_grad():
        hidden = model.hidden_states(ids)
        if flavour == "headless":
            return hidden @ model.input_embedding_weight().T
        parts = head_parts(model.hf)
        projection = parts.projection
        bias = getattr(projection, "bias", None)
        logits = parts.transform(hidden) @ projection.weight.T
        return logits + bias if bias is not None else logits


def unigram_log_prior(dataset) -> torch.Tensor:
    """log p(token) over the training split (add-one smoothed), [V]."""
    import numpy as np

    counts = np.zeros(dataset.vocab_size, dtype=np.int64)
    for start in range(0, len(dataset), 1024):
        rows = dataset.take(list(range(start, min(start + 1024, len(dataset)))))
        counts += np.bincount(rows.ravel(), minlength=dataset.vocab_size)[: dataset.vocab_size]
    counts = torch.from_numpy(counts).double() + 1
    return (counts / counts.sum()).log().float()


def _guesses(models: dict, corrupted: torch.Tensor, log_prior: torch.Tensor, special_ids, vocab_size: int) -> dict:
    """Top-K guesses [B, L, K] of the unigram baseline and of each twin at every position.

    The headless model's scores get log p(token) added: CWT's negatives are the batch's own targets,
    drawn as often as the token occurs, so o·e learns log p(token | context) - log p(token) (as a
    sampled softmax does); adding the prior turns it into a prediction over the vocabulary."""
    out = {}
    for name, model in {"unigram": None, **models}.items():
        if model is None:  # whatever the context: the most frequent tokens
            scores = log_prior.expand(*corrupted.shape, -1).clone()
        else:
            scores = _scores(model, name, corrupted)[..., :vocab_size].clone()
            if name == "headless":
                scores += log_prior
        scores[..., list(special_ids)] = float("-inf")  # never "predict" [MASK] or [SEP] itself
        out[name] = scores.topk(TOP_K, dim=-1).indices
    return out


def masked_eval(models: dict, dataset, log_prior: torch.Tensor, num_sequences: int = 64, seed: int = 0) -> dict:
    """Top-1 and top-K accuracy over the whole vocabulary on masked held-out tokens (15 % of
    `num_sequences` validation sequences spread evenly over the split, every chosen one replaced by
    [MASK]), the same masks for the baseline and both twins.  Evenly, not the first ones: the
    validation split is in document order, and its first sequences are one module's prose."""
    from headless.objectives import mlm_mask

    n = min(num_sequences, len(dataset))
    ids = torch.from_numpy(dataset.take(sorted({round(i * (len(dataset) - 1) / max(n - 1, 1)) for i in range(n)})))
    corrupted, labels = mlm_mask(ids, mask_token_id=dataset.mask_token_id, vocab_size=dataset.vocab_size,
                                 special_token_ids=dataset.special_token_ids, mask_prob=0.15, replace_prob=1.0,
                                 random_prob=0.0, generator=torch.Generator().manual_seed(seed))
    where = labels != -100
    top = _guesses(models, corrupted, log_prior, dataset.special_token_ids, dataset.vocab_size)
    result = {"positions": int(where.sum()), "sequences": n, "ids": ids, "labels": labels, "top": top}
    for name, guesses in top.items():
        result[name] = {"top1": float((guesses[..., 0] == labels)[where].float().mean()),
                        f"top{TOP_K}": float((guesses == labels[..., None]).any(-1)[where].float().mean())}
    return result


def _mark(tokenizer, guesses: list[int], answer: int) -> str:
    words = tokenizer.convert_ids_to_tokens(guesses[:3])
    return ("+ " if guesses[0] == answer else "  ") + ", ".join(words)


def _sentence_lines(models: dict, tokenizer, log_prior: torch.Tensor, special_ids, vocab_size: int) -> list[str]:
    """Each twin's top-3 for the [MASK] of SENTENCES whose answer is one token ('+': first guess right)."""
    vocab = tokenizer.get_vocab()
    rows, shown = [], []
    for text, answer in SENTENCES:
        if answer not in vocab:
            continue
        ids = tokenizer(text.replace("[MASK]", tokenizer.mask_token))["input_ids"]
        if ids.count(tokenizer.mask_token_id) != 1:
            continue
        rows.append(ids)
        shown.append((text, vocab[answer], ids.index(tokenizer.mask_token_id)))
    if not rows:
        return []
    width = max(len(r) for r in rows)
    batch = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows])
    top = _guesses(models, batch, log_prior, special_ids, vocab_size)
    lines = []
    for i, (text, answer, col) in enumerate(shown):
        lines.append(f"  {text}   (answer: {tokenizer.convert_ids_to_tokens(answer)})\n"
                     f"      headless: {_mark(tokenizer, top['headless'][i, col].tolist(), answer):<34}"
                     f"vanilla: {_mark(tokenizer, top['vanilla'][i, col].tolist(), answer)}")
    return lines


def _heldout_lines(result: dict, tokenizer, count: int = 8) -> list[str]:
    """The first `count` masked whole words of the held-out text (one per sequence, in order, not
    chosen by outcome), with some context and each twin's top-3 ('+': first guess right)."""
    lines, rows = [], set()
    ids, labels = result["ids"], result["labels"]
    for row, col in (labels != -100).nonzero().tolist():
        word = tokenizer.convert_ids_to_tokens(int(labels[row, col]))
        after = tokenizer.convert_ids_to_tokens(int(ids[row, col + 1])) if col + 1 < ids.shape[1] else ""
        if row in rows or not word.isalpha() or len(word) < 3 or after.startswith("##") or col < 6:
            continue
        rows.add(row)
        left = tokenizer.decode(ids[row, max(0, col - 10):col].tolist())
        right = tokenizer.decode(ids[row, col + 1:col + 5].tolist())
        answer = int(labels[row, col])
        lines.append(f"  ...{left} [{word}] {right}...\n"
                     f"      headless: {_mark(tokenizer, result['top']['headless'][row, col].tolist(), answer):<34}"
                     f"vanilla: {_mark(tokenizer, result['top']['vanilla'][row, col].tolist(), answer)}")
        if len(lines) >= count:
            break
    return lines


def _plot(root: Path, result: dict) -> Optional[Path]:
    """Top-1 and top-K accuracy of the baseline and both twins on the same held-out masks."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ("unigram", "headless", "vanilla")
    labels = ("unigram baseline", "headless (CWT)", "vanilla (CE)")
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, metric in enumerate(("top1", f"top{TOP_K}")):
        values = [100 * result[n][metric] for n in names]
        bars = ax.bar([j + 0.4 * i for j in range(len(names))], values, width=0.38,
                      label=f"top-{metric[3:]}")
        ax.bar_label(bars, fmt="%.1f")
    ax.set_xticks([j + 0.2 for j in range(len(names))], labels)
    ax.set_ylabel("% of masked held-out tokens")
    ax.set_title(f"masked-word accuracy over the whole vocabulary ({result['positions']} positions)")
    ax.legend()
    fig.tight_layout()
    path = root / "comparison.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run_demo(root: str | Path | None = None, overrides: tuple[str, ...] = (), progress: bool = True) -> str:
    """Train both twins under `root` (default runs/demo-<time>) and return the report (also saved as
    root/demo.md)."""

    root = Path(root) if root else Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    started = time.monotonic()
    _twins(root, list(overrides), progress)
    return report(root, started)


def report(root: str | Path, started: Optional[float] = None) -> str:
    """The demo's report on two finished twins under `root` (root/headless, root/vanilla)."""
    from headless.config import config_from_file
    from headless.data.loader import PackedDataset
    from headless.train.build import cache_dir, resolve_dataset

    root = Path(root)
    models, tokenizer = {}, None
    for flavour in ("headless", "vanilla"):
        models[flavour], tokenizer = _load(root / flavour)
    config = config_from_file(root / "headless" / "config.yaml")
    data = resolve_dataset(config)
    prior = unigram_log_prior(PackedDataset(data, "train"))
    validation = PackedDataset(data, "validation")
    masked = masked_eval(models, validation, prior)
    sentences = _sentence_lines(models, tokenizer, prior, validation.special_token_ids, validation.vocab_size)

    h, v = (json.loads((root / f / "summary.json").read_text()) for f in ("headless", "vanilla"))
    pct = lambda name, metric: f"{masked[name][metric]:.1%}"  # noqa: E731
    plot = _plot(root, masked)
    lines = [
        f"# headless demo: a tiny BERT-style encoder trained headless (CWT) and its vanilla twin (CE),",
        f"# {h['steps']} steps each on the same batches and masks",
        "",
        f"Masked words of held-out text ({masked['positions']} positions in {masked['sequences']} validation "
        f"sequences never trained on), guessed over the whole vocabulary of {validation.vocab_size} tokens:",
        "",
        "| | unigram baseline (always the most frequent tokens) | headless | vanilla |",
        "|---|---|---|---|",
        f"| top-1 | {pct('unigram', 'top1')} | {pct('headless', 'top1')} | {pct('vanilla', 'top1')} |",
        f"| top-{TOP_K} | {pct('unigram', f'top{TOP_K}')} | {pct('headless', f'top{TOP_K}')} | "
        f"{pct('vanilla', f'top{TOP_K}')} |",
        f"| parameters | | {h['parameters'] / 1e6:.2f}M | {v['parameters'] / 1e6:.2f}M |",
        f"| training time | | {h['wall_time_s']:.0f} s | {v['wall_time_s']:.0f} s |",
        "",
        "Headless guesses with its outputs scored against every input embedding plus log p(token) (CWT",
        "learns a score relative to the token's frequency); vanilla with its MLM head.",
        "",
        "Sentences written for the demo, each twin's top-3 guesses ('+': the first guess is right):",
        *sentences,
        "",
        "Held-out text, the first masked whole word of each sequence in order (not chosen by outcome):",
        *_heldout_lines(masked, tokenizer),
        "",
    ]
    if not torch.cuda.is_available():
        lines += [CPU_SPEED_NOTE, ""]
    if started is not None:
        lines += [f"Demo time: {time.monotonic() - started:.0f} s (dataset and tokenizer build, both twins, this report).", ""]
    lines += [
        f"Plot: {plot}" if plot else "Plot: (matplotlib not available)",
        f"Files: {root}/demo.md (this report), demo.json (its numbers), comparison.png; "
        f"{root}/headless and {root}/vanilla (config.yaml, metrics.jsonl, summary.md, summary.json, curves.png, "
        f"tensorboard/, tokenizer/, checkpoints/); the dataset and tokenizer cache: {cache_dir(config)}.",
        f"Export with `headless export {root / 'headless'} OUT_DIR`.",
        "",
    ]
    text = "\n".join(lines)
    (root / "demo.md").write_text(text, encoding="utf-8")
    (root / "demo.json").write_text(json.dumps({
        "steps": h["steps"],
        "masked_positions": masked["positions"],
        "top1": {n: masked[n]["top1"] for n in ("unigram", "headless", "vanilla")},
        f"top{TOP_K}": {n: masked[n][f"top{TOP_K}"] for n in ("unigram", "headless", "vanilla")},
        "wall_time_s": {"headless": h["wall_time_s"], "vanilla": v["wall_time_s"]},
        "plot": str(plot) if plot else None}, indent=2), encoding="utf-8")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m headless.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. max_steps=100")
    parser.add_argument("--run-dir", default=None, help="default runs/demo-<time>")
    parser.add_argument("--no-progress", "--quiet", "-q", dest="quiet", action="store_true")
    args = parser.parse_args(argv)
    from headless.errors import HeadlessError

    threads = torch.get_num_threads()
    if "OMP_NUM_THREADS" not in os.environ:
        # A 0.9M-parameter model gains little from a second thread, and on a busy 2-core machine two
        # threads that spin-wait for each other ran ~10x slower than one (1.2 s against 0.1 s a step).
        torch.set_num_threads(1)
    try:
        print("\n" + run_demo(args.run_dir, tuple(args.overrides), progress=not args.quiet))
    except HeadlessError as err:
        print(f"headless: error: {err}")
        return 2
    finally:
        torch.set_num_threads(threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
