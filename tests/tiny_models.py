"""Tiny Hugging Face model directories for the evaluation tests (a few hundred kB, built in ms)."""

from __future__ import annotations

from pathlib import Path

import torch


def tiny_decoder(path: Path, tokenizer_file: Path, *, seed: int = 0, cls=None, vocab_size: int | None = None,
                 eos_token: str | None = None) -> Path:
    """A 2-layer GPT-NeoX causal LM (or `cls`) with the Pythia tokenizer, saved to `path`."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

    kwargs = {"eos_token": eos_token} if eos_token else {}
    tok = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file), **kwargs)
    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                        vocab_size=vocab_size or len(tok), max_position_embeddings=2048)
    (cls or GPTNeoXForCausalLM)(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def tiny_encoder(path: Path, vocab_dir: Path, *, seed: int = 0, vocab_size: int | None = None) -> Path:
    """A 2-layer BERT saved as a *base* model (no head), like `headless export` writes encoders."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    # transformers 5 ignores `vocab_file=`; from_pretrained on the folder reads vocab.txt
    tokenizer = BertTokenizerFast.from_pretrained(vocab_dir, do_lower_case=True)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab_size or len(tokenizer), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
