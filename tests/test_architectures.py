"""The architecture table (headless.architectures): every entry builds both twins, trains a step and
exports a directory that transformers loads; adding an architecture is one entry."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from headless.architectures import ARCHITECTURES, ArchitectureSpec, by_model_type, is_causal
from headless.config import load_config

SMALL = ["model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64",
         "model.max_position_embeddings=64", "data.seq_len=32", "batch_size=2", "optim.warmup_steps=0",
         "max_steps=1", "log_every=1", "eval_every=1", "eval_batches=1", "save_every=1", "progress=false",
         "tensorboard=false"]


@pytest.fixture(scope="module")
def datasets(fixture_data, fixture_tokenizers, tmp_path_factory) -> dict:
    """The fixture corpus prepared with WordPiece (encoders) and byte-level BPE (decoders)."""
    from headless.data.prepare import prepare_dataset
    from headless.data.tokenizers import load_tokenizer

    root = tmp_path_factory.mktemp("architectures")
    out = {}
    for encoder, kind in ((True, "wordpiece"), (False, "bpe")):
        out[encoder] = root / kind
        prepare_dataset([str(fixture_data["corpus"])], out[encoder], load_tokenizer(str(fixture_tokenizers[kind])),
                        seq_len=32, validation_fraction=0.1, progress=False)
    return out


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_every_architecture_trains_both_twins_and_exports(arch, datasets, tmp_path):
    import transformers as tf

    from headless.export import export, load_run_model
    from headless.models import head_parts, model_shape
    from headless.train.loop import pretrain

    entry = ARCHITECTURES[arch]
    for flavour in ("headless", "vanilla"):
        run = tmp_path / f"{flavour}-run"
        config = load_config("tiny", flavour=flavour, overrides=SMALL + [
            f"model.architecture={arch}", f"data.path={datasets[entry.encoder]}", f"run_dir={run}"])
        assert config.objective_kind == ("mlm" if entry.encoder else "clm")
        assert pretrain(config)["steps"] == 1
        out = export(run, tmp_path / f"{flavour}-export")
        model = load_run_model(run, None)[1].eval()
        assert model.causal == entry.causal and model.config.model_type == entry.model_type
        assert model_shape(model) == (config.model.num_layers, config.model.hidden_size)  # the FLOPs estimate's
        assert by_model_type(model.config.model_type) is entry  # what finetune-head and the HF Trainer read
        ids = torch.randint(5, model.config.vocab_size, (2, 16))
        base = tf.AutoModel.from_pretrained(out).eval()
        with torch.no_grad():
            assert torch.allclose(base(input_ids=ids).last_hidden_state, model.hidden_states(ids), atol=1e-5)
        if flavour == "headless":
            assert not model.has_head
            continue
        assert model.has_head
        auto = tf.AutoModelForMaskedLM if entry.encoder else tf.AutoModelForCausalLM
        full = auto.from_pretrained(out).eval()
        parts = head_parts(model.hf)  # the table's head transform, then the V x D projection
        with torch.no_grad():
            ours = parts.projection(parts.transform(model.hidden_states(ids)))
            assert torch.allclose(ours, full(input_ids=ids).logits, atol=1e-5)


def test_causal_models_are_known_from_the_table_then_from_transformers():
    """The HF Trainer integration once knew only a fixed list of decoders: any model type that
    transformers maps to a causal LM (and not a masked LM) is causal now."""
    for entry in ARCHITECTURES.values():
        assert is_causal(SimpleNamespace(model_type=entry.model_type)) == entry.causal
    for model_type in ("mistral", "qwen2", "gemma", "phi", "opt", "falcon", "olmo"):
        assert is_causal(SimpleNamespace(model_type=model_type)), model_type
    for model_type in ("bert", "roberta", "electra", "deberta-v2"):
        assert not is_causal(SimpleNamespace(model_type=model_type)), model_type
    assert is_causal(SimpleNamespace(model_type="bert", is_decoder=True))


def _mistral(cfg, inter, common):
    import transformers as tf

    return tf.MistralConfig(hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
                            num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_heads,
                            intermediate_size=inter, max_position_embeddings=cfg.max_position_embeddings,
                            tie_word_embeddings=cfg.tie_word_embeddings, **common)


def test_an_architecture_is_one_entry(monkeypatch):
    """docs/contributing.md, "Add an architecture": one entry (here Mistral) and both twins build,
    train with CLM and split the vanilla head."""
    from headless.models import build_model, head_parts

    monkeypatch.setitem(ARCHITECTURES, "mistral", ArchitectureSpec("mistral", "mistral", encoder=False,
                                                                   hf_config=_mistral))
    base = load_config("tiny", overrides=SMALL + ["model.architecture=llama"])
    cfg = dataclasses.replace(base.model, architecture="mistral")  # as the config's Literal would list it
    assert not cfg.is_encoder
    torch.manual_seed(0)
    ids = torch.randint(3, 100, (2, 16))
    labels = torch.cat([ids[:, 1:], torch.full((2, 1), -100)], dim=1)
    for loss in ("cwt", "ce"):
        model = build_model(cfg, base.objective, loss, 100, 0, 2)
        assert type(model.backbone).__name__ == "MistralModel" and model.causal
        assert model.has_head == (loss == "ce")
        out = model(ids, labels)
        out.loss.backward()
        assert int(out.num_targets) == 2 * 15 and torch.isfinite(out.loss)
    parts = head_parts(model.hf)
    with torch.no_grad():
        assert torch.allclose(parts.projection(parts.transform(model.hidden_states(ids))),
                              model.hf(input_ids=ids).logits, atol=1e-5)
