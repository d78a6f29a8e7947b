"""`headless eval lambada|zeroshot|harness` and `headless analyze`: decoder evaluation of exported
Hugging Face directories (ours or anyone's)."""

from __future__ import annotations

import argparse

from headless.cli.options import add_progress_flag


def _common(p: argparse.ArgumentParser, batch_size: int = 16, progress: bool = True) -> None:
    p.add_argument("model_dir", help="a Hugging Face model directory (AutoModelForCausalLM + AutoTokenizer)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N examples (per task)")
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps (default: the best available)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--output", default=None, metavar="DIR", help="write the tables (md + json) here")
    if progress:
        add_progress_flag(p)


def register(subparsers) -> None:
    ev = subparsers.add_parser("eval", help="evaluate an exported model (LAMBADA, zero-shot, lm-eval)",
                               description="Evaluate a Hugging Face model directory.")
    sub = ev.add_subparsers(dest="eval_command", metavar="TASK", required=True)

    p = sub.add_parser("lambada", help="LAMBADA last-word accuracy and perplexity",
                       description="Greedy last-word accuracy and target perplexity on LAMBADA (OpenAI).")
    _common(p)
    p.add_argument("--data", default=None, help="jsonl with {context, continuation} or {text} lines "
                   "(default: $HEADLESS_SHARED_DATA/lambada/lambada_openai_dev.jsonl, else the "
                   "EleutherAI/lambada_openai hub dataset)")
    p.set_defaults(func=_lambada)

    p = sub.add_parser("zeroshot", help="zero-shot multiple choice (BoolQ, PIQA, ARC-Easy, PubMedQA)",
                       description="Score each choice by its log-likelihood; report acc and acc_norm.")
    _common(p)
    p.add_argument("--tasks", default="boolq,piqa,arc_easy,pubmedqa",
                   help="comma-separated task names or .jsonl paths")
    p.add_argument("--data-dir", default=None, help="folder of the task files (default: "
                   "$HEADLESS_SHARED_DATA/zeroshot, else the hub datasets of lm-eval's tasks)")
    p.add_argument("--answer-prefix", default="\nAnswer:",
                   help="appended to each {query} before the choices (default: '\\nAnswer:')")
    p.set_defaults(func=_zeroshot)

    p = sub.add_parser("harness", help="run lm-evaluation-harness tasks (needs `pip install 'lm_eval[hf]'`)",
                       description="Wrap lm_eval.simple_evaluate with the `hf` model on MODEL_DIR.")
    _common(p, batch_size=8, progress=False)  # lm-eval draws its own bars
    p.add_argument("--tasks", required=True, help="comma-separated lm-eval task names")
    p.add_argument("--num-fewshot", type=int, default=None)
    p.add_argument("--include-path", default=None, help="a folder of extra task YAMLs (local tasks)")
    p.set_defaults(func=_harness)

    p = subparsers.add_parser("analyze", help="anisotropy per layer and synonym similarity of embeddings",
                              description="Compare models side by side: mean cosine of random token "
                              "pairs per layer, and cosine of synonym vs random word embeddings.")
    p.add_argument("model_dirs", nargs="+", metavar="MODEL_DIR")
    p.add_argument("--text", default=None, help=".txt/.jsonl(.xz/.gz) text (default: enwiki validation "
                   "under $HEADLESS_SHARED_DATA, else an embedded text)")
    p.add_argument("--synonyms", default=None, help="a word<TAB>word file (default: the shipped list)")
    p.add_argument("--pairs", type=int, default=1000, help="random token pairs for anisotropy")
    p.add_argument("--sequences", type=int, default=64, help="text sequences to encode")
    p.add_argument("--max-length", type=int, default=128, help="tokens per sequence")
    p.add_argument("--multi-token", choices=["mean", "skip"], default="mean",
                   help="words of several tokens: average their embeddings, or skip them")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--output", default=None, metavar="DIR", help="write analysis.{md,json,png} here")
    p.set_defaults(func=_analyze)


def _lambada(args) -> int:
    from headless.eval.lambada import evaluate_lambada
    from headless.eval.scoring import markdown_table

    r = evaluate_lambada(args.model_dir, args.data, limit=args.limit, batch_size=args.batch_size,
                         device=args.device, dtype=args.dtype, output_dir=args.output, progress=not args.quiet)
    print(markdown_table(["examples", "accuracy", "word ppl", "token ppl"],
                         [[r["num_examples"], r["accuracy"], r["word_perplexity"], r["token_perplexity"]]]), end="")
    return 0


def _zeroshot(args) -> int:
    from headless.eval.scoring import markdown_table
    from headless.eval.zeroshot import evaluate_zeroshot

    r = evaluate_zeroshot(args.model_dir, args.tasks, data_dir=args.data_dir, limit=args.limit,
                          batch_size=args.batch_size, device=args.device, dtype=args.dtype,
                          answer_prefix=args.answer_prefix, output_dir=args.output, progress=not args.quiet)
    print(markdown_table(["task", "examples", "acc", "acc_norm"],
                         [[t, v["num_examples"], v["acc"], v["acc_norm"]] for t, v in r["tasks"].items()]), end="")
    return 0


def _harness(args) -> int:
    from headless.eval.harness import run_harness

    out = run_harness(args.model_dir, args.tasks, limit=args.limit, batch_size=args.batch_size,
                      device=args.device, dtype=args.dtype, num_fewshot=args.num_fewshot,
                      include_path=args.include_path, output_dir=args.output)
    for task, metrics in out.get("results", {}).items():
        shown = {k.split(",")[0]: round(v, 4) for k, v in metrics.items()
                 if isinstance(v, float) and "stderr" not in k}
        print(task, shown)
    return 0


def _analyze(args) -> int:
    from headless.eval.analysis import analysis_markdown, analyze_models

    r = analyze_models(args.model_dirs, text=args.text, synonyms=args.synonyms, num_pairs=args.pairs,
                       num_sequences=args.sequences, max_length=args.max_length, multi_token=args.multi_token,
                       seed=args.seed, device=args.device, output_dir=args.output)
    print(analysis_markdown(r), end="")
    return 0
