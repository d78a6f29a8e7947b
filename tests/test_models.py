"""HF models in headless / vanilla flavours: no head at all when headless, fair vanilla heads."""

import pytest
import torch

from headless.config import load_config
from headless.errors import HeadlessError
from headless.models import attach_lm_head, build_model, count_parameters, head_parts

ENCODERS = ["bert", "roberta", "xlm-roberta", "modernbert", "distilbert"]
DECODERS = ["gpt-neox", "llama", "gpt2"]
SMALL = ["model.hidden_size=32", "model.num_layers=2", "model.num_heads=2", "model.intermediate_size=64",
         "model.max_position_embeddings=64", "data.seq_len=32"]


def _config(arch, flavour):
    kind = "mlm" if arch in ENCODERS else "clm"
    return load_config("tiny", flavour=flavour, overrides=SMALL + [f"model.architecture={arch}", f"objective.kind={kind}"])


@pytest.mark.parametrize("arch", ENCODERS + DECODERS)
def test_headless_has_no_vocabulary_head_and_vanilla_head_matches_hf(arch):
    vocab = 100
    torch.manual_seed(0)
    headless = build_model(_config(arch, "headless").model, _config(arch, "headless").objective, "cwt", vocab, 0, 2)
    vanilla = build_model(_config(arch, "vanilla").model, _config(arch, "vanilla").objective, "ce", vocab, 0, 2)
    assert not headless.has_head and vanilla.has_head
    assert headless.hf.get_output_embeddings() is None if hasattr(headless.hf, "get_output_embeddings") else True
    rows = headless.input_embedding_weight().shape[0]
    assert rows >= vocab and rows % 64 == 0  # padded to a multiple of 64 for fast matmuls
    # the vanilla head applied to selected positions equals HF's own logits there
    vanilla.eval()
    ids = torch.randint(3, vocab, (2, 16))
    parts = head_parts(vanilla.hf)
    ours = parts.projection(parts.transform(vanilla.hidden_states(ids)))
    assert torch.allclose(ours, vanilla.hf(input_ids=ids).logits, atol=1e-5)
    # the headless model computes a loss with no head parameter involved
    labels = torch.full((2, 16), -100)
    labels[:, 3:9] = ids[:, 3:9]
    out = headless(ids, labels)
    out.loss.backward()
    assert out.num_targets == 12 and torch.isfinite(out.loss)
    assert headless.input_embedding_weight().grad is not None


def test_parameter_counts_separate_embeddings():
    config = _config("gpt-neox", "vanilla")
    model = build_model(config.model, config.objective, "ce", 100, 0, 2)
    counts = count_parameters(model)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["embedding"] == 128 * 32  # input embedding only; the untied head is compute


def test_attach_head_copies_embeddings_untied():
    config = _config("gpt-neox", "headless")
    model = build_model(config.model, config.objective, "cwt", 100, 0, 2)
    lm = attach_lm_head(model.backbone)
    emb, head = lm.get_input_embeddings().weight, lm.get_output_embeddings().weight
    assert torch.equal(emb, head) and emb.data_ptr() != head.data_ptr()
    ids = torch.randint(0, 100, (1, 8))
    assert torch.allclose(lm.gpt_neox(ids).last_hidden_state, model.hidden_states(ids))


def test_tokenizer_larger_than_model_is_rejected():
    config = load_config("tiny", overrides=SMALL + ["model.vocab_size=50"])
    with pytest.raises(HeadlessError, match="smaller than the tokenizer"):
        build_model(config.model, config.objective, "cwt", 100)


def test_nce_has_a_separate_target_matrix():
    config = _config("bert", "headless")
    model = build_model(config.model, config.objective, "nce", 100, 0, 2)
    assert model.target_embedding is not None
    assert model.target_embedding.weight.data_ptr() != model.input_embedding_weight().data_ptr()
