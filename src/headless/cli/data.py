"""`headless prepare` and `headless tokenizer train`: thin wrappers over headless.data."""

from __future__ import annotations

import argparse

from headless.cli.options import add_alias, add_progress_flag

INPUT_HELP = ("text sources: .txt/.jsonl/.parquet files (optionally .gz/.xz/.zst), directories, globs, "
              "a datasets.save_to_disk directory, hf:NAME[:CONFIG][@SPLIT], or python-docs "
              "(default: the embedded python-docs corpus)")


def register(subparsers: argparse._SubParsersAction) -> None:
    prepare = subparsers.add_parser(
        "prepare", help="tokenise and pack a corpus into fixed-length shards",
        description="Tokenise documents, append EOS after each, pack them into SEQ_LEN-token sequences "
                    "and write shards + manifest.json + tokenizer/ to OUTPUT. Re-running with the same "
                    "settings does nothing.")
    prepare.add_argument("inputs", nargs="*", metavar="INPUT", help=INPUT_HELP)
    prepare.add_argument("--output", "-o", required=True, metavar="DIR", help="dataset directory to write")
    prepare.add_argument("--tokenizer", "-t", required=True, metavar="SPEC",
                         help="tokenizer.json, WordPiece vocab.txt, tokenizer directory or hub name")
    prepare.add_argument("--seq-len", "--seq_len", type=int, required=True, metavar="N", help="tokens per sequence")
    prepare.add_argument("--validation-fraction", type=float, default=0.01, metavar="F",
                         help="fraction of documents held out for validation (default: 0.01)")
    prepare.add_argument("--validation-input", action="append", metavar="INPUT",
                         help="take validation documents from here instead (repeatable)")
    prepare.add_argument("--text-field", default="text", metavar="F",
                         help="JSON field / parquet or dataset column holding the text (default: text)")
    prepare.add_argument("--split-paragraphs", action="store_true",
                         help="in .txt files, blank lines separate documents (default: one per file)")
    prepare.add_argument("--workers", type=int, default=None, metavar="N",
                         help="tokenizer processes (default: 1 process; the Rust tokenizer already "
                              "uses every core)")
    prepare.add_argument("--limit", type=int, default=None, metavar="N", help="read at most N documents")
    add_alias(prepare, "--max-documents", to="--limit", dest="limit", type=int)
    prepare.add_argument("--seed", type=int, default=0, help="seed of the validation split (default: 0)")
    prepare.add_argument("--overwrite", action="store_true", help="replace a dataset prepared with other settings")
    add_progress_flag(prepare, "no progress bar")
    prepare.set_defaults(func=_prepare)

    tokenizer = subparsers.add_parser("tokenizer", help="tokenizer utilities",
                                      description="Tokenizer utilities.")
    tok_sub = tokenizer.add_subparsers(dest="tokenizer_command", metavar="COMMAND", required=True)
    train = tok_sub.add_parser(
        "train", help="train a BPE / WordPiece / Unigram tokenizer",
        description="Train a tokenizer with the Hugging Face tokenizers library and save a directory "
                    "that AutoTokenizer and --tokenizer accept.")
    train.add_argument("inputs", nargs="*", metavar="INPUT", help=INPUT_HELP)
    train.add_argument("--kind", choices=("bpe", "wordpiece", "unigram"), default="bpe",
                       help="bpe: byte-level like GPT-NeoX; wordpiece: BERT-style; unigram (default: bpe)")
    train.add_argument("--vocab-size", type=int, required=True, metavar="N")
    train.add_argument("--output", "-o", required=True, metavar="DIR")
    train.add_argument("--text-field", default="text", metavar="F")
    train.add_argument("--min-frequency", type=int, default=2, metavar="N")
    train.add_argument("--limit", type=int, default=None, metavar="N", help="read at most N documents")
    add_alias(train, "--max-documents", to="--limit", dest="limit", type=int)
    add_progress_flag(train, "no progress bar")
    train.set_defaults(func=_train_tokenizer)


def _prepare(args: argparse.Namespace) -> int:
    from headless.data.prepare import prepare_dataset

    prepare_dataset(args.inputs or None, args.output, args.tokenizer, seq_len=args.seq_len,
                    validation_fraction=args.validation_fraction, validation_inputs=args.validation_input,
                    text_field=args.text_field, num_workers=args.workers, seed=args.seed,
                    overwrite=args.overwrite, max_documents=args.limit,
                    split_paragraphs=args.split_paragraphs, progress=not args.quiet)
    return 0


def _train_tokenizer(args: argparse.Namespace) -> int:
    from headless.data.tokenizers import train_tokenizer

    tok = train_tokenizer(args.inputs or None, kind=args.kind, vocab_size=args.vocab_size,
                          output_dir=args.output, text_field=args.text_field,
                          min_frequency=args.min_frequency, max_documents=args.limit,
                          progress=not args.quiet)
    print(f"headless: saved a {args.kind} tokenizer of {len(tok)} tokens to {args.output}")
    return 0
