"""headless_sdpa: HF's SDPA attention without the [B, 1, T, T] mask that torch.compile would force."""

from __future__ import annotations

import copy

import pytest
import torch
import transformers as tf
from transformers import masking_utils

from headless.attention import _mask, register


def _pair(kind: str):
    if kind == "gpt-neox":
        cfg = tf.GPTNeoXConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                               vocab_size=50, max_position_embeddings=32)
    else:
        cfg = tf.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                            vocab_size=50, max_position_embeddings=32)
    torch.manual_seed(0)
    ours = tf.AutoModel.from_config(copy.deepcopy(cfg), attn_implementation=register()).eval()
    eager = tf.AutoModel.from_config(copy.deepcopy(cfg), attn_implementation="eager").eval()  # own config
    assert ours.config._attn_implementation == "headless_sdpa"
    eager.load_state_dict(ours.state_dict())
    return ours, eager


def test_no_mask_only_when_there_is_nothing_to_mask():
    causal, both = masking_utils.causal_mask_function, masking_utils.bidirectional_mask_function
    plain = dict(batch_size=2, q_length=8, kv_length=8, q_offset=0, kv_offset=0, attention_mask=None)
    assert _mask(**plain, mask_function=causal) is None and _mask(**plain, mask_function=both) is None
    padded = torch.ones(2, 8, dtype=torch.bool)
    padded[1, 5:] = False
    mask = _mask(**{**plain, "attention_mask": padded}, mask_function=causal, allow_is_causal_skip=True)
    assert mask is not None and not bool(mask[1, 0, 7, 6])  # HF's own mask: the padding stays masked
    calls = []
    real = masking_utils.sdpa_mask
    masking_utils.sdpa_mask = lambda *a, **k: calls.append(k) or real(*a, **k)
    try:  # anything else is HF's decision: a cache offset, a sliding window
        _mask(**{**plain, "q_length": 1, "q_offset": 7}, mask_function=causal)
        _mask(**plain, mask_function=masking_utils.sliding_window_causal_mask_function(4))
    finally:
        masking_utils.sdpa_mask = real
    assert len(calls) == 2


@pytest.mark.parametrize("kind", ["gpt-neox", "bert"])
def test_same_outputs_as_eager_attention_with_and_without_padding(kind):
    ours, eager = _pair(kind)
    ids = torch.randint(0, 50, (2, 16))
    padded = torch.ones(2, 16, dtype=torch.long)
    padded[1, 11:] = 0
    with torch.no_grad():
        for mask in (None, padded):
            keep = (padded if mask is not None else torch.ones_like(padded)).bool()
            a = ours(input_ids=ids, attention_mask=mask).last_hidden_state[keep]
            b = eager(input_ids=ids, attention_mask=mask).last_hidden_state[keep]
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_compiled_model_builds_no_mask(monkeypatch):
    """Under torch.compile, HF's sdpa_mask (which would materialise [B, 1, T, T]) is never called."""
    ours, eager = _pair("gpt-neox")
    ids = torch.randint(0, 50, (2, 16))
    with torch.no_grad():
        expected = eager(input_ids=ids).last_hidden_state  # (eager attention builds its mask with sdpa_mask)
    calls = []
    real = masking_utils.sdpa_mask
    monkeypatch.setattr(masking_utils, "sdpa_mask", lambda *a, **k: calls.append(k) or real(*a, **k))
    torch._dynamo.reset()
    compiled = torch.compile(ours, backend="eager")  # dynamo tracing, no code generation: fast
    with torch.no_grad():
        torch.testing.assert_close(compiled(input_ids=ids).last_hidden_state, expected, rtol=1e-5, atol=1e-5)
    assert calls == []
