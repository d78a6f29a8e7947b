"""Held-out cross-entropy of a causal LM on the validation split of a prepared dataset.

Next-token cross-entropy over the whole vocabulary, the quantity vanilla pretraining minimises, so a
vanilla decoder and a headless one given a head (raw or HLM+FT) compare on the same footing.  The
first `max_sequences` packed sequences are scored, in order: the same tokens for every model.

Bits per byte divide the summed loss (in bits) by the UTF-8 bytes of the scored text (each
sequence's targets decoded with the dataset's tokenizer): unlike nats per token it compares models
whose tokenizers differ (a 50k and a 128k vocabulary).

`skip` scores the sequences after the first `skip` instead: a choice made on them (a fine-tuning
rate, scripts/hlmft_lr_probe.sh) is not made on the sequences a study reports.
"""

from __future__ import annotations

import math
import os

import torch

from headless.errors import HeadlessError


@torch.no_grad()
def heldout_cross_entropy(model_dir: str | os.PathLike, dataset: str | os.PathLike, *, split: str = "validation",
                          max_sequences: int = 256, batch_size: int = 8, device: str | None = "auto",
                          skip: int = 0) -> dict:
    """{"cross_entropy" (nats per token), "perplexity", "bits_per_byte", "bytes", "tokens", "sequences", "per_sequence"
    (each sequence's mean cross-entropy, in order: every sequence has the same number of tokens, so
    their mean is the cross-entropy; for paired tests)}."""
    import numpy as np

    from headless.data.loader import PackedDataset
    from headless.eval.scoring import load_causal_lm

    data = PackedDataset(dataset, split)
    if skip < 0:
        raise HeadlessError(f"skip must be >= 0, got {skip}")
    count = min(len(data) - skip, max_sequences)
    if count <= 0:
        raise HeadlessError(f"{dataset} has no {split} sequences to score"
                            + (f" after the first {skip} ({len(data)} in all)" if skip else ""))
    model, _, dev = load_causal_lm(model_dir, device=device)
    rows = model.get_output_embeddings().weight.shape[0]
    total, tokens, nbytes, per_sequence = 0.0, 0, 0, []
    for start in range(skip, skip + count, batch_size):
        picked = range(start, min(skip + count, start + batch_size))
        batch = torch.from_numpy(np.stack([data[i] for i in picked]).astype(np.int64))
        if int(batch.max()) >= rows:
            raise HeadlessError(f"{dataset} holds token ids beyond the model's {rows} output rows: another tokenizer?")
        batch = batch.to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            logits = model(input_ids=batch).logits
        # one sequence at a time: the float copy and log-softmax of a whole batch's logits are 2 x B x L x V
        # floats (25 GB at 8 x 2,048 x 128k, which stopped the 128k study on a 24 GB machine); per-token
        # losses are the same numbers either way
        losses = torch.stack([torch.nn.functional.cross_entropy(row[:-1].float(), ids[1:], reduction="none")
                              for row, ids in zip(logits, batch)])  # [B, L-1]
        del logits
        total += float(losses.sum())
        tokens += batch[:, 1:].numel()
        nbytes += sum(len(data.tokenizer.decode(row[1:].tolist()).encode("utf-8")) for row in batch.cpu())
        per_sequence += losses.mean(dim=1).tolist()
    ce = total / tokens
    return {"cross_entropy": ce, "perplexity": math.exp(ce), "bits_per_byte": total / math.log(2) / max(nbytes, 1),
            "bytes": nbytes, "tokens": tokens, "sequences": count, "skipped": skip,
            "per_sequence": per_sequence}
