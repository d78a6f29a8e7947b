"""Issue #13 item 7: the vanilla twin's untied V x D head is vocabulary, not non-embedding compute."""

import pytest

from headless.config import load_config
from headless.models import build_model, count_parameters

SMALL = ["model.hidden_size=32", "model.num_layers=2", "model.num_heads=2", "model.intermediate_size=64",
         "model.max_position_embeddings=64", "data.seq_len=32"]


def _counts(preset, flavour, *extra):
    config = load_config(preset, flavour=flavour, overrides=SMALL + list(extra))
    model = build_model(config.model, config.objective, config.loss_kind, 100, 0, 2)
    return count_parameters(model), model


@pytest.mark.parametrize("tied", [False, True])
def test_decoder_twins_have_the_same_non_embedding_count(tied):
    headless, _ = _counts("tiny-gpt", "headless", f"model.tie_word_embeddings={str(tied).lower()}")
    vanilla, model = _counts("tiny-gpt", "vanilla", f"model.tie_word_embeddings={str(tied).lower()}")
    assert vanilla["non_embedding"] == headless["non_embedding"]
    head = model.hf.get_output_embeddings().weight.numel()
    assert vanilla["embedding"] == headless["embedding"] + (0 if tied else head)
    assert vanilla["total"] == vanilla["embedding"] + vanilla["non_embedding"]


def test_encoder_head_projection_counts_as_embedding():
    headless, _ = _counts("tiny", "headless")
    vanilla, model = _counts("tiny", "vanilla", "model.tie_word_embeddings=false")
    transform = sum(p.numel() for p in model.hf.cls.predictions.transform.parameters())
    bias = model.hf.get_output_embeddings().bias.numel()
    assert vanilla["non_embedding"] == headless["non_embedding"] + transform + bias


@pytest.mark.parametrize("flavour", ["headless", "vanilla"])
def test_the_llama_1b_preset_is_llama_3_2_1b(flavour):
    """Issue #29: the 1B-class shape at V = 128,256 (built on the meta device: no memory)."""
    import torch

    config = load_config("llama-1b", flavour=flavour)
    with torch.device("meta"):
        model = build_model(config.model, config.objective, config.loss_kind, 128256)
    counts = count_parameters(model)
    assert counts["total"] == 1_235_814_400  # Llama-3.2-1B's, the head tied to the embedding
    assert counts["embedding"] == 128256 * 2048
    assert model.hf.config.num_key_value_heads == 8
