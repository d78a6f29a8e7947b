"""Batched log-likelihood of continuations under a causal LM: the one scorer behind LAMBADA and
zero-shot multiple choice.

It follows lm-evaluation-harness (`HFLM.loglikelihood`) token for token, so that our numbers and
lm-eval's agree: trailing spaces of the context move to the continuation, the pair is encoded as
`context + continuation` and split at the length of the encoded context, inputs longer than the
model's window are truncated from the left, an empty context is replaced by the BOS/EOS token.
Rows are right-padded (a causal model never attends to later positions, so padding changes nothing)
and sorted by length so that a batch wastes little compute on padding.
"""

from __future__ import annotations

import inspect
import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch

from headless.errors import HeadlessError, load_error
from headless.models import model_dir_config  # noqa: F401  (its home: with the model loading)
from headless.runtime import parse_dtype, resolve_device


@dataclass(frozen=True)
class Score:
    """Log-likelihood of one continuation: `logprob` is the sum over its `num_tokens` tokens;
    `is_greedy` is True when every token is the argmax given everything before it."""

    logprob: float
    num_tokens: int
    is_greedy: bool



def load_tokenizer_dir(model_dir: str | os.PathLike):
    """The model's own tokenizer, refused when absent or not the model's (never scored through a
    stand-in): `headless.data.tokenizers.load_model_tokenizer`."""
    from headless.data.tokenizers import load_model_tokenizer

    return load_model_tokenizer(model_dir)


def check_vocab(tokenizer, model, model_dir) -> None:
    """A tokenizer that emits ids the embedding matrix lacks would index out of range (or silently
    read the wrong rows on GPU): refuse it up front, against the loaded embedding's rows."""
    from headless.data.tokenizers import check_tokenizer_fits

    check_tokenizer_fits(tokenizer, model.get_input_embeddings().num_embeddings, model_dir)


NO_HEAD = ("{model_dir} has no language-modelling head (a headless export?): export it with --add-head or "
           "fine-tune one with `headless finetune-head`")


def require_lm_head(model_dir, config) -> None:
    """Refuse, without loading the weights, a decoder saved without a vocabulary head: lm-eval (and
    AutoModelForCausalLM) would give it a random one and score noise.  A headless export says so in
    headless.json; any other directory by its config's `architectures` (a base model class)."""
    try:
        meta = json.loads((Path(model_dir) / "headless.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = {}
    archs = [a for a in getattr(config, "architectures", None) or [] if isinstance(a, str)]
    headless = isinstance(meta, dict) and (meta.get("vocabulary_head") == "none" or meta.get("auto_class") == "AutoModel")
    if headless or (archs and not any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)):
        raise HeadlessError(NO_HEAD.format(model_dir=model_dir))


def load_causal_lm(model_dir: str | os.PathLike, *, device: str | None = "auto", dtype=None):
    """(model, tokenizer, device) for a directory loadable with AutoModelForCausalLM.

    Refuses encoders (whose `...LMHeadModel` variant would load but is not a trained decoder) and
    headless decoders exported without a head (the head would be random)."""
    from transformers import AutoModelForCausalLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    config = model_dir_config(model_dir)
    if config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False):
        raise HeadlessError(
            f"{model_dir} is an encoder ({config.model_type}), not a causal language model: "
            "this evaluation needs a decoder"
        )
    if getattr(config, "is_encoder_decoder", False):
        raise HeadlessError(f"{model_dir} is an encoder-decoder ({config.model_type}): this evaluation needs a decoder")
    tokenizer = load_tokenizer_dir(model_dir)
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            Path(model_dir), dtype=parse_dtype(dtype), output_loading_info=True, trust_remote_code=False
        )
    except (ValueError, pickle.UnpicklingError) as err:
        raise HeadlessError(f"cannot load {model_dir} as a causal language model: {load_error(err)}") from None
    head = model.get_output_embeddings()
    head_names = {n for n, p in model.named_parameters() if head is not None and p is head.weight}
    if head is None or head_names & set(info.get("missing_keys", ())):
        raise HeadlessError(NO_HEAD.format(model_dir=model_dir))
    check_vocab(tokenizer, model, model_dir)
    dev = resolve_device(device, mps=True)
    return model.to(dev).eval(), tokenizer, dev


def max_length(model, tokenizer) -> int:
    for name in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
        value = getattr(model.config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(tokenizer, "model_max_length", None)
    return value if isinstance(value, int) and 0 < value < 1_000_000 else 2048


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of (context, continuation) exactly as lm-eval's HFLM splits them."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    if not context:
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        if prefix is None:
            raise HeadlessError("an example has an empty context and the tokenizer has no BOS/EOS token to stand in")
        return [prefix], tokenizer(continuation)["input_ids"]
    whole = tokenizer(context + continuation)["input_ids"]
    ctx = tokenizer(context)["input_ids"]
    return ctx, whole[len(ctx):]


@torch.no_grad()
def score_tokens(
    model,
    pairs: list[tuple[list[int], list[int]]],
    *,
    batch_size: int = 16,
    window: int | None = None,
    device: torch.device | None = None,
    progress: bool = False,
) -> list[Score]:
    """Score (context_ids, continuation_ids) pairs in batches; results in the order given."""
    if batch_size < 1:
        raise HeadlessError(f"batch size must be at least 1, got {batch_size}")
    device = device or next(model.parameters()).device
    window = window or max_length(model, None)
    rows = []
    for ctx, cont in pairs:
        if not cont:
            raise HeadlessError("a continuation encodes to zero tokens: nothing to score")
        if len(cont) > window:  # its first tokens would have no position left to be predicted from
            raise HeadlessError(f"a continuation of {len(cont)} tokens is longer than the model's window of "
                                f"{window}: it cannot be scored (lm-eval refuses it too)")
        tokens = (list(ctx) + list(cont))[-(window + 1):]
        rows.append((tokens[:-1], list(cont)))
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
    keep_arg = "logits_to_keep" in inspect.signature(model.forward).parameters
    results: list[Score | None] = [None] * len(rows)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="scoring", unit="batch")
    for batch in batches:
        width = len(rows[batch[0]][0])
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for r, i in enumerate(batch):
            inp = rows[i][0]
            ids[r, :len(inp)] = torch.tensor(inp)
            mask[r, :len(inp)] = 1
        # Only the positions that predict a continuation token need the (vocabulary-wide) head.
        keep = max(width - len(rows[i][0]) + len(rows[i][1]) for i in batch)
        kwargs = {"logits_to_keep": keep} if keep_arg else {}
        kwargs["use_cache"] = False
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs).logits
        logits = logits[:, -keep:]
        for r, i in enumerate(batch):
            n, cont = len(rows[i][0]), rows[i][1]
            start = keep - (width - n) - len(cont)
            logprobs = logits[r, start:start + len(cont)].float().log_softmax(-1)
            target = torch.tensor(cont, device=logprobs.device)
            picked = logprobs.gather(-1, target[:, None])[:, 0]
            results[i] = Score(
                logprob=float(picked.double().sum()),
                num_tokens=len(cont),
                is_greedy=bool((logprobs.argmax(-1) == target).all()),
            )
    return results  # type: ignore[return-value]


def score_continuations(model, tokenizer, requests: list[tuple[str, str]], **kwargs) -> list[Score]:
    """Score (context, continuation) strings; see `score_tokens` for the keyword arguments."""
    pairs = [encode_pair(tokenizer, c, x) for c, x in requests]
    kwargs.setdefault("window", max_length(model, tokenizer))
    return score_tokens(model, pairs, **kwargs)


def read_jsonl(path: str | os.PathLike, limit: int | None = None) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise HeadlessError(f"data file not found: {path}")
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise HeadlessError(f"{path}:{lineno} is not valid JSON") from None
            if not isinstance(row, dict):
                raise HeadlessError(f"{path}:{lineno} is not a JSON object")
            rows.append(row)
            if limit is not None and len(rows) >= limit:
                break
    if not rows:
        raise HeadlessError(f"{path} has no examples")
    return rows


def write_outputs(output_dir: str | os.PathLike, stem: str, data: dict, markdown: str) -> None:
    """Write STEM.json and STEM.md atomically (never a half-written file)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    from headless.files import atomic_write

    for suffix, text in ((".json", json.dumps(data, indent=2) + "\n"), (".md", markdown)):
        atomic_write(out / f"{stem}{suffix}", text)
    from headless.model_card import refresh_if_export

    refresh_if_export(out)  # EXPORT/eval-results: the export's model card shows them


def markdown_table(header: list[str], rows: list[list]) -> str:
    def fmt(v):
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
