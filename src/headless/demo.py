"""`make demo` (`python -m headless.demo`): train the tiny headless encoder and its vanilla twin on the
embedded corpus, then show what they learned in a way a person can read.

Both twins see the same batches and masks.  Their training losses are not comparable (CWT scores
in-batch retrieval, CE the whole vocabulary), so the demo also measures one thing both can do: predict
masked tokens of held-out text over the whole vocabulary (the headless model scores its output
against every input embedding — no head needed).  Then masked-word examples, nearest neighbours in
the headless input embeddings, and one plot of both runs.

The budget is that of the former single-run demo (300 steps x 32 sequences): 300 steps x 16 each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Optional

import torch

DEMO_OVERRIDES = ["batch_size=16", "max_steps=300", "eval_every=100", "save_every=300", "keep_last=1"]
PROBE_WORDS = ["file", "list", "return", "string", "error", "value", "function", "module", "object", "number"]


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


def _load(run_dir: Path, flavour: str):
    """(HF model, input embedding [V, D]) of a run; the vanilla twin keeps its MLM head."""
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


def _masked_eval(models: dict, dataset, log_prior: torch.Tensor, num_sequences: int = 32, seed: int = 0):
    """Top-1 vocabulary accuracy on masked held-out tokens, the same masks for both twins, and the
    masked positions' top-3 predictions.

    The headless model's scores get log p(token) added: CWT's negatives are the batch's own targets,
    drawn as often as the token occurs, so o·e learns log p(token | context) - log p(token) (as a
    sampled softmax does); adding the prior turns it into a prediction over the vocabulary."""
    from headless.objectives import mlm_mask

    n = min(num_sequences, len(dataset))
    ids = torch.from_numpy(dataset.take(list(range(n))))
    generator = torch.Generator().manual_seed(seed)
    corrupted, labels = mlm_mask(ids, mask_token_id=dataset.mask_token_id, vocab_size=dataset.vocab_size,
                                 special_token_ids=dataset.special_token_ids, mask_prob=0.15, replace_prob=1.0,
                                 random_prob=0.0, generator=generator)
    where = labels != -100
    result = {"positions": int(where.sum()), "ids": ids, "corrupted": corrupted, "labels": labels}
    for flavour, model in models.items():
        scores = _scores(model, flavour, corrupted)[..., : dataset.vocab_size].clone()
        if flavour == "headless":
            scores += log_prior
        scores[..., list(dataset.special_token_ids)] = float("-inf")  # never "predict" [MASK] itself
        top = scores.topk(3, dim=-1).indices
        result[flavour] = {"accuracy": float((top[..., 0] == labels)[where].float().mean()),
                           "top3": float((top == labels[..., None]).any(-1)[where].float().mean()), "top": top}
    return result


def _examples(result: dict, tokenizer, count: int = 3, hits: int = 3) -> list[str]:
    """The first `count` masked whole words (one per sequence), then up to `hits` more that a twin has
    in its top 3, with some context and each twin's top-3 guesses."""
    lines = []
    ids, labels = result["ids"], result["labels"]
    seen_rows, found = set(), 0
    for row, col in (labels != -100).nonzero().tolist():
        word = tokenizer.convert_ids_to_tokens(int(labels[row, col]))
        if row in seen_rows or not word.isalpha() or len(word) < 3 or col < 6:
            continue
        hit = any(int(labels[row, col]) in result[f]["top"][row, col].tolist() for f in ("headless", "vanilla"))
        if len(lines) >= count and not hit:
            continue
        if len(lines) == count and found == 0:
            lines.append("  and some that a twin has in its top 3:")
        found += len(lines) >= count
        seen_rows.add(row)
        left = tokenizer.decode(ids[row, max(0, col - 8):col].tolist())
        right = tokenizer.decode(ids[row, col + 1:col + 4].tolist())
        guesses = {f: ", ".join(tokenizer.convert_ids_to_tokens(result[f]["top"][row, col].tolist()))
                   for f in ("headless", "vanilla")}
        lines.append(f"  ...{left} [{word}] {right}...\n"
                     f"      headless: {guesses['headless']:<32} vanilla: {guesses['vanilla']}")
        if found >= hits:
            break
    return lines


def _probe_words(tokenizer, labels: torch.Tensor, count: int = 8) -> list[str]:
    """PROBE_WORDS found in the vocabulary, else the most frequent whole words among `labels`."""
    from collections import Counter

    vocab = tokenizer.get_vocab()
    words = [w for w in PROBE_WORDS if w in vocab]
    if len(words) >= count // 2:
        return words[:count]
    frequent = Counter(tokenizer.convert_ids_to_tokens(labels[labels != -100].tolist()))
    return [w for w, _ in frequent.most_common() if w.isalpha() and len(w) >= 3][:count]


def _neighbours(model, tokenizer, words: list[str], log_prior: torch.Tensor, k: int = 5,
                candidates: int = 1000) -> list[str]:
    """Nearest tokens (cosine) of a few words in the headless input embeddings, among the `candidates`
    most frequent tokens (a short run has barely moved the embeddings of rare ones)."""
    weight = torch.nn.functional.normalize(model.input_embedding_weight().detach().float(), dim=-1)
    vocab = tokenizer.get_vocab()
    allowed = torch.full((weight.shape[0],), False)
    allowed[log_prior.topk(min(candidates, len(log_prior))).indices] = True
    lines = []
    for word in words:
        sims = weight @ weight[vocab[word]]
        sims[vocab[word]] = -2
        sims[~allowed] = -2
        best = sims[: len(tokenizer)].topk(k).indices.tolist()
        lines.append(f"  {word:>10} -> " + ", ".join(tokenizer.convert_ids_to_tokens(best)))
    return lines


def _median_tps(run_dir: Path) -> Optional[float]:
    from headless.train.logging import read_metrics

    values = [r["tokens_per_s"] for r in read_metrics(run_dir) if r.get("split") == "train" and "tokens_per_s" in r]
    return statistics.median(values) if values else None


def _plot(root: Path) -> Optional[Path]:
    """Training loss and tokens/s of both twins on one figure (the losses' scales differ: see labels)."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from headless.train.logging import read_metrics

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for flavour, label in (("headless", "headless (CWT, in-batch)"), ("vanilla", "vanilla (CE, vocabulary)")):
        train = [r for r in read_metrics(root / flavour) if r["split"] == "train"]
        axes[0].plot([r["step"] for r in train], [r["loss"] for r in train], label=label)
        axes[1].plot([r["step"] for r in train], [r.get("tokens_per_s", float("nan")) for r in train], label=flavour)
    axes[0].set_title("training loss")
    axes[1].set_title("tokens / s")
    for ax in axes:
        ax.set_xlabel("step")
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
    _twins(root, list(overrides), progress)
    return report(root)


def report(root: str | Path) -> str:
    """The demo's report on two finished twins under `root` (root/headless, root/vanilla)."""
    from headless.config import config_from_file
    from headless.data.loader import PackedDataset
    from headless.train.build import resolve_dataset

    root = Path(root)
    models, tokenizer = {}, None
    for flavour in ("headless", "vanilla"):
        models[flavour], tokenizer = _load(root / flavour, flavour)
    data = resolve_dataset(config_from_file(root / "headless" / "config.yaml"))
    prior = unigram_log_prior(PackedDataset(data, "train"))
    masked = _masked_eval(models, PackedDataset(data, "validation"), prior)

    h, v = (json.loads((root / f / "summary.json").read_text()) for f in ("headless", "vanilla"))
    fmt = lambda x, spec=".3f": "-" if x is None else format(x, spec)  # noqa: E731
    rows = [
        ("parameters", f"{h['parameters'] / 1e6:.2f}M", f"{v['parameters'] / 1e6:.2f}M"),
        ("training loss (last)", f"{fmt(h['final_train_loss'])} (CWT, in-batch)",
         f"{fmt(v['final_train_loss'])} (CE, vocabulary)"),
        (f"masked-token top-1 over the vocabulary ({masked['positions']} held-out positions)",
         f"{masked['headless']['accuracy']:.1%}", f"{masked['vanilla']['accuracy']:.1%}"),
        ("masked-token top-3", f"{masked['headless']['top3']:.1%}", f"{masked['vanilla']['top3']:.1%}"),
        ("tokens / s (median)", fmt(_median_tps(root / "headless"), ",.0f"), fmt(_median_tps(root / "vanilla"), ",.0f")),
        ("wall time", f"{h['wall_time_s']:.0f} s", f"{v['wall_time_s']:.0f} s"),
    ]
    plot = _plot(root)
    lines = [f"# headless demo: the tiny encoder and its vanilla twin, {h['steps']} steps each, same data and masks",
             "", "| | headless | vanilla |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    lines += ["", "Headless: outputs scored against every input embedding, plus log p(token) (CWT learns a",
              "score relative to the token's frequency); vanilla: its MLM head.", "",
              "Masked words in held-out text, each twin's top-3 guesses:", *_examples(masked, tokenizer), "",
              "Nearest tokens of a few words in the headless model's input embeddings (cosine, among the",
              "1000 most frequent tokens):",
              *_neighbours(models["headless"], tokenizer, _probe_words(tokenizer, masked["labels"]), prior), "",
              f"Plot: {plot}" if plot else "Plot: (matplotlib not available)",
              f"Runs: {root / 'headless'} and {root / 'vanilla'} (summary.md, curves.png, metrics.jsonl); "
              f"export with `headless export {root / 'headless'} OUT_DIR`.", ""]
    report = "\n".join(lines)
    (root / "demo.md").write_text(report, encoding="utf-8")
    (root / "demo.json").write_text(json.dumps({
        "headless": {k: h[k] for k in ("final_train_loss", "final_val_loss", "tokens_per_s_last", "wall_time_s")},
        "vanilla": {k: v[k] for k in ("final_train_loss", "final_val_loss", "tokens_per_s_last", "wall_time_s")},
        "masked_top1": {f: masked[f]["accuracy"] for f in ("headless", "vanilla")},
        "masked_positions": masked["positions"], "plot": str(plot) if plot else None}, indent=2), encoding="utf-8")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m headless.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. max_steps=100")
    parser.add_argument("--run-dir", default=None, help="default runs/demo-<time>")
    parser.add_argument("--no-progress", "--quiet", "-q", dest="quiet", action="store_true")
    args = parser.parse_args(argv)
    from headless.errors import HeadlessError

    try:
        print("\n" + run_demo(args.run_dir, tuple(args.overrides), progress=not args.quiet))
    except HeadlessError as err:
        print(f"headless: error: {err}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
