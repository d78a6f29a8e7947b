"""Tokens per file of a study's pretraining text, as `headless prepare` packs them (each document's
tokens and the EOS after it), with the study's own tokenizer.

    python scripts/corpus_tokens.py STUDY DATA_ROOT [KEY=VALUE ...] [--work-dir DIR]

Prints one JSON object {file name: tokens}.  This is how the documented counts of the shared data
(`headless.lab.reproduce.config.SHARED_TOKENS`, used by the epoch check before a study's data is
prepared) were made; the multilingual study trains its tokenizer first (into --work-dir).
"""

from __future__ import annotations

import argparse
import json
import sys


def count_tokens(path: str, tokenizer) -> int:
    from headless.data.prepare import _make_tokenizer
    from headless.data.readers import iter_documents, resolve_inputs

    tok = _make_tokenizer(tokenizer.backend_tokenizer.to_str())
    total, batch = 0, []
    for doc in iter_documents(sources=resolve_inputs([path]), text_field="text", split_paragraphs=False):
        batch.append(doc)
        if len(batch) == 256:
            total += sum(len(e.ids) + 1 for e in tok.encode_batch(batch, add_special_tokens=False))
            batch = []
    return total + sum(len(e.ids) + 1 for e in tok.encode_batch(batch, add_special_tokens=False))


def main() -> None:
    from pathlib import Path

    from headless.data.tokenizers import load_tokenizer
    from headless.lab.reproduce.config import load_study
    from headless.lab.reproduce.data import file_hashes, pretraining_files, tokenizer_source

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study")
    parser.add_argument("data_root")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--work-dir", default="runs/corpus-tokens")
    args = parser.parse_args()
    config = load_study(args.study, overrides=[f"data_root={args.data_root}", "progress=false", *args.overrides])
    train, _ = pretraining_files(config)
    tokenizer = load_tokenizer(str(tokenizer_source(config, Path(args.work_dir), train, file_hashes(train))))
    counts = {}
    for path in train:
        counts[path.name] = count_tokens(str(path), tokenizer)
        print(f"{path.name}: {counts[path.name]:,}", file=sys.stderr, flush=True)
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
