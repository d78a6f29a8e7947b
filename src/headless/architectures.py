"""The one table of model architectures that `headless` builds and trains.

Config validation (`model.architecture`), model building (the HF config, the vanilla head's split),
`finetune-head` and the HF Trainer integration read these entries; adding an architecture is one
entry (docs/contributing.md).  transformers and torch are imported only inside the functions: the
config reads this table and stays light.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional


def _same(hidden):
    return hidden


def _no_transform(model) -> Callable:
    """Decoders project the final hidden state directly."""
    return _same


@dataclass(frozen=True)
class ArchitectureSpec:
    name: str           # model.architecture
    model_type: str     # the HF config's model_type
    encoder: bool       # an MLM encoder; else a causal decoder trained with CLM
    # (ModelConfig, intermediate size, common HF kwargs: vocabulary, special ids, model.extra) -> HF config
    hf_config: Callable[[Any, int, dict], Any]
    # vanilla model (*ForMaskedLM / *ForCausalLM) -> the hidden transform its head applies before
    # the V x D projection (the fused losses take the projection alone)
    head_transform: Callable[[Any], Callable] = _no_transform
    base_model_kwargs: tuple = ()  # (key, value) pairs for the headless (base) model's constructor

    @property
    def causal(self) -> bool:
        return not self.encoder


def _bert(cfg, inter, common):
    import transformers as tf

    return tf.BertConfig(hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
                         num_attention_heads=cfg.num_heads, intermediate_size=inter,
                         max_position_embeddings=cfg.max_position_embeddings,
                         hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout, **common)


def _roberta_like(klass_name):
    def build(cfg, inter, common):
        import transformers as tf

        # RoBERTa offsets positions by padding_idx + 1, so it needs two extra position rows.
        if common.get("pad_token_id") is None:
            common["pad_token_id"] = 1
        return getattr(tf, klass_name)(
            hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
            intermediate_size=inter, max_position_embeddings=cfg.max_position_embeddings + common["pad_token_id"] + 1,
            hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout, **common)
    return build


def _modernbert(cfg, inter, common):
    import transformers as tf

    return tf.ModernBertConfig(hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
                               num_attention_heads=cfg.num_heads, intermediate_size=inter,
                               max_position_embeddings=cfg.max_position_embeddings,
                               attention_dropout=cfg.dropout, embedding_dropout=cfg.dropout,
                               mlp_dropout=cfg.dropout, bos_token_id=None, eos_token_id=None,
                               cls_token_id=None, sep_token_id=None, **common)


def _distilbert(cfg, inter, common):
    import transformers as tf

    return tf.DistilBertConfig(dim=cfg.hidden_size, n_layers=cfg.num_layers, n_heads=cfg.num_heads,
                               hidden_dim=inter, max_position_embeddings=cfg.max_position_embeddings,
                               dropout=cfg.dropout, attention_dropout=cfg.dropout, **common)


def _gpt_neox(cfg, inter, common):
    import transformers as tf

    return tf.GPTNeoXConfig(hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
                            num_attention_heads=cfg.num_heads, intermediate_size=inter,
                            max_position_embeddings=cfg.max_position_embeddings, rotary_pct=cfg.rotary_pct,
                            hidden_dropout=cfg.dropout, attention_dropout=cfg.dropout,
                            use_parallel_residual=True, tie_word_embeddings=cfg.tie_word_embeddings, **common)


def _llama(cfg, inter, common):
    import transformers as tf

    return tf.LlamaConfig(hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
                          num_attention_heads=cfg.num_heads, intermediate_size=inter,
                          max_position_embeddings=cfg.max_position_embeddings,
                          attention_dropout=cfg.dropout, tie_word_embeddings=cfg.tie_word_embeddings, **common)


def _gpt2(cfg, inter, common):
    import transformers as tf

    return tf.GPT2Config(n_embd=cfg.hidden_size, n_layer=cfg.num_layers, n_head=cfg.num_heads,
                         n_inner=inter, n_positions=cfg.max_position_embeddings, resid_pdrop=cfg.dropout,
                         embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
                         tie_word_embeddings=cfg.tie_word_embeddings, **common)


def _bert_head(model):
    return model.cls.predictions.transform


def _roberta_head(model):
    import torch.nn.functional as F

    lm = model.lm_head
    return lambda h: lm.layer_norm(F.gelu(lm.dense(h)))  # HF's RobertaLMHead minus its decoder


def _modernbert_head(model):
    return model.head


def _distilbert_head(model):
    return lambda h: model.vocab_layer_norm(model.activation(model.vocab_transform(h)))


ARCHITECTURES: dict[str, ArchitectureSpec] = {a.name: a for a in (
    # BertModel's pooler is never trained by MLM: leave it out (DDP would flag it unused)
    ArchitectureSpec("bert", "bert", encoder=True, hf_config=_bert, head_transform=_bert_head,
                     base_model_kwargs=(("add_pooling_layer", False),)),
    ArchitectureSpec("roberta", "roberta", encoder=True, hf_config=_roberta_like("RobertaConfig"),
                     head_transform=_roberta_head),
    ArchitectureSpec("xlm-roberta", "xlm-roberta", encoder=True, hf_config=_roberta_like("XLMRobertaConfig"),
                     head_transform=_roberta_head),
    ArchitectureSpec("modernbert", "modernbert", encoder=True, hf_config=_modernbert, head_transform=_modernbert_head),
    ArchitectureSpec("distilbert", "distilbert", encoder=True, hf_config=_distilbert, head_transform=_distilbert_head),
    ArchitectureSpec("gpt-neox", "gpt_neox", encoder=False, hf_config=_gpt_neox),
    ArchitectureSpec("llama", "llama", encoder=False, hf_config=_llama),
    ArchitectureSpec("gpt2", "gpt2", encoder=False, hf_config=_gpt2),
)}


def by_model_type(model_type: str) -> Optional[ArchitectureSpec]:
    """The entry of an HF config's model_type, or None for one this table does not build."""
    return next((a for a in ARCHITECTURES.values() if a.model_type == model_type), None)


def is_causal(config) -> bool:
    """Whether an HF model config is a causal LM (next-token prediction): the table's entries, then
    any model type that transformers maps to a causal LM and not to a masked LM (Mistral, Qwen2,
    Phi, ...; BERT and RoBERTa also have causal heads, but are encoders)."""
    if getattr(config, "is_decoder", False):
        return True
    model_type = getattr(config, "model_type", "")
    entry = by_model_type(model_type)
    if entry is not None:
        return entry.causal
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_MASKED_LM_MAPPING_NAMES)

    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
