"""Data pipeline: read documents, tokenise, pack into fixed-length shards, and batch them.

Imported lazily so that `headless prepare` never pays for torch and a worker process spawned to
tokenise imports only what it needs.
"""

from __future__ import annotations

from headless._lazy import lazy_exports

_EXPORTS = {
    "prepare_dataset": "headless.data.prepare",
    "read_manifest": "headless.data.prepare",
    "load_tokenizer": "headless.data.tokenizers",
    "train_tokenizer": "headless.data.tokenizers",
    "special_token_ids": "headless.data.tokenizers",
    "tokenizer_hash": "headless.data.tokenizers",
    "iter_documents": "headless.data.readers",
    "resolve_inputs": "headless.data.readers",
    "PackedDataset": "headless.data.loader",
    "BatchIterator": "headless.data.loader",
    "DEFAULT_CORPUS": "headless.data.default_corpus",
    "default_corpus_documents": "headless.data.default_corpus",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports("headless.data", _EXPORTS, globals())
