"""`headless eval TASK`: every evaluation of exported Hugging Face directories (ours or anyone's)
under one command: lambada, zeroshot, heldout, harness (decoders), glue, xnli (encoders, from
cli/classify.py) and analyze (any).  `headless glue|xnli|analyze` stay as hidden aliases."""

from __future__ import annotations

import argparse

from headless.cli.options import PRECISIONS, add_alias, add_precision, add_progress_flag, results_dir

OUTPUT_HELP = "write the tables (md + json) here (default: $HEADLESS_EVAL_RESULTS or ./eval-results, /MODEL_NAME)"


def _common(p: argparse.ArgumentParser, batch_size: int = 16, progress: bool = True) -> None:
    p.add_argument("model_dir", help="a Hugging Face model directory (AutoModelForCausalLM + AutoTokenizer)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N examples (per task)")
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps (default: the best available)")
    add_precision(p, help="weights and activations in this precision; ")
    p.add_argument("--output", default=None, metavar="DIR", help=OUTPUT_HELP)
    if progress:
        add_progress_flag(p)


def _lambada_arguments(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--data", default=None, help="jsonl with {context, continuation} or {text} lines "
                   "(default: $HEADLESS_SHARED_DATA/lambada/lambada_openai_dev.jsonl, else the "
                   "EleutherAI/lambada_openai hub dataset)")


def _zeroshot_arguments(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--tasks", default="boolq,piqa,arc_easy,pubmedqa",
                   help="comma-separated task names or .jsonl paths")
    p.add_argument("--data", default=None, metavar="DIR", help="folder of the task files (default: "
                   "$HEADLESS_SHARED_DATA/zeroshot, else the hub datasets of lm-eval's tasks)")
    add_alias(p, "--data-dir", to="--data", dest="data")
    p.add_argument("--answer-prefix", default="\nAnswer:",
                   help="appended to each {query} before the choices (default: '\\nAnswer:')")


def _heldout_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", help="a Hugging Face model directory (AutoModelForCausalLM)")
    p.add_argument("--data", required=True, help="a prepared dataset (`headless prepare`) in the model's tokenizer")
    p.add_argument("--limit", type=int, default=256, help="score the first N validation sequences (default 256)")
    add_alias(p, "--max-sequences", to="--limit", dest="limit", type=int)
    p.add_argument("--skip", type=int, default=0, metavar="N",
                   help="score the sequences after the first N instead (e.g. to choose a setting on sequences "
                        "a study does not report; default 0)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps (default: the best available)")
    p.add_argument("--output", default=None, metavar="DIR", help=OUTPUT_HELP)


def _harness_arguments(p: argparse.ArgumentParser) -> None:
    _common(p, batch_size=8, progress=False)  # lm-eval draws its own bars
    p.add_argument("--tasks", required=True, help="comma-separated lm-eval task names")
    p.add_argument("--num-fewshot", type=int, default=None)
    p.add_argument("--include-path", default=None, help="a folder of extra task YAMLs (local tasks)")


def _run_options(args) -> dict:
    return dict(limit=args.limit, batch_size=args.batch_size, device=args.device, dtype=PRECISIONS[args.precision],
                output_dir=results_dir(args.output, args.model_dir), progress=not args.quiet)


# per task of the registry (headless.eval.tasks) that `headless eval` offers: its description, its
# arguments, and how they become the task's options
COMMANDS = {
    "lambada": ("Greedy last-word accuracy and target perplexity on LAMBADA (OpenAI).", _lambada_arguments,
                lambda a: dict(_run_options(a), data=a.data)),
    "zeroshot": ("Score each choice by its log-likelihood; report acc and acc_norm.", _zeroshot_arguments,
                 lambda a: dict(_run_options(a), tasks=a.tasks, data_dir=a.data, answer_prefix=a.answer_prefix)),
    "heldout": ("Next-token cross-entropy over the whole vocabulary on the first validation sequences of a "
                "prepared dataset.", _heldout_arguments,
                lambda a: dict(data=a.data, max_sequences=a.limit, skip=a.skip, batch_size=a.batch_size,
                               device=a.device)),
    "harness": ("Wrap lm_eval.simple_evaluate with the `hf` model on MODEL_DIR.", _harness_arguments,
                lambda a: dict(tasks=a.tasks, limit=a.limit, batch_size=a.batch_size, device=a.device, dtype=PRECISIONS[a.precision],
                               num_fewshot=a.num_fewshot, include_path=a.include_path,
                               output_dir=results_dir(a.output, a.model_dir))),
}


def register(subparsers) -> None:
    from headless.cli.classify import add_glue, add_xnli
    from headless.eval.tasks import TASKS

    ev = subparsers.add_parser("eval", help="evaluate an exported model: lambada, zeroshot, heldout, harness, "
                               "glue, xnli, analyze", description="Evaluate a Hugging Face model directory.")
    sub = ev.add_subparsers(dest="eval_command", metavar="TASK", required=True)
    for task in TASKS.values():
        if task.model != "decoder":
            continue  # encoders: `headless eval glue|xnli` (cli/classify.py); any: `headless eval analyze`
        if task.name not in COMMANDS:
            raise KeyError(f"decoder task {task.name!r} of headless.eval.tasks has no entry in cli/eval.py COMMANDS")
        description, arguments, options = COMMANDS[task.name]
        p = sub.add_parser(task.name, help=task.help, description=description)
        arguments(p)
        p.set_defaults(func=_run_task, task=task.name, task_options=options)
    add_glue(sub, prog="headless eval glue")
    add_xnli(sub, prog="headless eval xnli")
    add_analyze(sub)
    add_analyze(subparsers, hidden=True)  # `headless analyze`, as before


def add_analyze(subparsers, hidden: bool = False) -> None:
    shown = {} if hidden else {"help": "anisotropy per layer and synonym similarity of embeddings"}
    p = subparsers.add_parser("analyze", **shown,
                              description="Compare models side by side: mean cosine of random token "
                              "pairs per layer, and cosine of synonym vs random word embeddings.")
    p.add_argument("model_dirs", nargs="+", metavar="MODEL_DIR")
    p.add_argument("--data", default=None, metavar="FILE", help=".txt/.jsonl(.xz/.gz) text (default: enwiki "
                   "validation under $HEADLESS_SHARED_DATA, else an embedded text)")
    add_alias(p, "--text", to="--data", dest="data")
    p.add_argument("--synonyms", default=None, help="a word<TAB>word file (default: the shipped list)")
    p.add_argument("--pairs", type=int, default=1000, help="random token pairs for anisotropy")
    p.add_argument("--limit", type=int, default=64, help="text sequences to encode (default 64)")
    add_alias(p, "--sequences", to="--limit", dest="limit", type=int)
    p.add_argument("--max-length", type=int, default=128, help="tokens per sequence")
    p.add_argument("--multi-token", choices=["mean", "skip"], default="mean",
                   help="words of several tokens: average their embeddings, or skip them")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--output", default=None, metavar="DIR", help="write analysis.{md,json,png} here (default: "
                   "$HEADLESS_EVAL_RESULTS or ./eval-results, /the first model's name)")
    p.set_defaults(func=_analyze)


def _run_task(args) -> int:
    from headless.eval.tasks import get_task

    task = get_task(args.task)
    result = task.run(args.model_dir, **args.task_options(args))
    text = task.render(result)
    print(text, end="")
    if args.task == "heldout":  # the other tasks write their own tables where they are told
        import json

        from headless.files import atomic_write

        out = results_dir(args.output, args.model_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "heldout.md", text)
        atomic_write(out / "heldout.json", json.dumps({k: v for k, v in result.details.items()}, indent=1))
    return 0


def _analyze(args) -> int:
    from headless.eval.analysis import analysis_markdown, analyze_models

    r = analyze_models(args.model_dirs, text=args.data, synonyms=args.synonyms, num_pairs=args.pairs,
                       num_sequences=args.limit, max_length=args.max_length, multi_token=args.multi_token,
                       seed=args.seed, device=args.device, output_dir=results_dir(args.output, args.model_dirs[0]))
    print(analysis_markdown(r), end="")
    return 0
