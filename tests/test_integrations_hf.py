"""Issue #13 item 8: CWT through `transformers.Trainer` (on accelerate) on CPU, and the label
conventions of the helper (HF's unshifted causal labels, MLM collator labels)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("accelerate", reason="the HF Trainer needs accelerate (pip install 'headless[hf]')")

from headless.integrations.hf import compute_cwt_loss, shift_clm_labels  # noqa: E402
from headless.losses import cwt_loss  # noqa: E402
from headless.objectives import clm_labels, document_ids_from_eos  # noqa: E402


def _dataset(tokenizer, corpus, seq_len=32, n=32):
    import json

    from datasets import Dataset

    ids = []
    for line in corpus.read_text().splitlines():
        ids += tokenizer(json.loads(line)["text"])["input_ids"]
        if len(ids) >= seq_len * n:
            break
    return Dataset.from_dict({"input_ids": [ids[i * seq_len:(i + 1) * seq_len] for i in range(n)]})


def _args(tmp_path, steps=4):
    from transformers import TrainingArguments

    return TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=steps, per_device_train_batch_size=4,
                             learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
                             disable_tqdm=True, dataloader_num_workers=0, seed=0)


def test_trainer_trains_a_headless_encoder(fixture_data, fixture_tokenizers, tmp_path):
    from transformers import AutoTokenizer, BertConfig, BertModel, DataCollatorForLanguageModeling

    from headless.integrations.hf import CWTTrainer

    tok = AutoTokenizer.from_pretrained(fixture_tokenizers["wordpiece"])
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=64, max_position_embeddings=64), add_pooling_layer=False)
    before = model.get_input_embeddings().weight.detach().clone()
    trainer = CWTTrainer(model=model, args=_args(tmp_path, steps=6), train_dataset=_dataset(tok, fixture_data["corpus"]),
                         eval_dataset=_dataset(tok, fixture_data["corpus"], n=8),
                         data_collator=DataCollatorForLanguageModeling(tok, mlm=True, mlm_probability=0.15))
    result = trainer.train()
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    assert result.global_step == 6 and len(losses) == 6 and all(torch.isfinite(torch.tensor(losses)))
    assert not torch.equal(before, model.get_input_embeddings().weight)  # CWT trains the embeddings
    assert torch.isfinite(torch.tensor(trainer.evaluate()["eval_loss"]))


def test_trainer_trains_a_headless_decoder_with_document_boundaries(fixture_data, fixture_tokenizers, tmp_path):
    from transformers import AutoTokenizer, DataCollatorForLanguageModeling, GPTNeoXConfig, GPTNeoXModel

    from headless.integrations.hf import CWTTrainer

    tok = AutoTokenizer.from_pretrained(fixture_tokenizers["bpe"])
    torch.manual_seed(0)
    model = GPTNeoXModel(GPTNeoXConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                                       num_attention_heads=4, intermediate_size=64, max_position_embeddings=64))
    trainer = CWTTrainer(model=model, args=_args(tmp_path), train_dataset=_dataset(tok, fixture_data["corpus"]),
                         data_collator=DataCollatorForLanguageModeling(tok, mlm=False),
                         eos_token_id=tok.eos_token_id)
    assert trainer.train().global_step == 4


def test_clm_labels_are_shifted_like_headless(fixture_tokenizers):
    from transformers import GPTNeoXConfig, GPTNeoXModel

    torch.manual_seed(0)
    model = GPTNeoXModel(GPTNeoXConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                       intermediate_size=64)).eval()
    ids = torch.randint(3, 64, (2, 12))
    ids[0, 5] = 0  # an EOS: the next token belongs to another document
    expected = clm_labels(ids, document_ids=document_ids_from_eos(ids, 0))
    assert torch.equal(shift_clm_labels(ids.clone(), ids, eos_token_id=0), expected)
    with torch.no_grad():
        ours = compute_cwt_loss(model, {"input_ids": ids, "labels": ids.clone()}, eos_token_id=0)
        reference = cwt_loss(model(input_ids=ids).last_hidden_state, expected, model.get_input_embeddings().weight)
    assert torch.allclose(ours.loss, reference.loss) and int(ours.num_targets) == int((expected != -100).sum())


def test_trainer_logs_cwt_accuracy_for_training_and_evaluation(fixture_data, fixture_tokenizers, tmp_path):
    """Issue #27 item 9: the Trainer's logs (so TensorBoard, W&B, MLflow) carry CWT's accuracy."""
    from transformers import AutoTokenizer, BertConfig, BertModel, DataCollatorForLanguageModeling

    from headless.integrations.hf import CWTTrainer

    tok = AutoTokenizer.from_pretrained(fixture_tokenizers["wordpiece"])
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=64, max_position_embeddings=64), add_pooling_layer=False)
    trainer = CWTTrainer(model=model, args=_args(tmp_path, steps=3), train_dataset=_dataset(tok, fixture_data["corpus"]),
                         eval_dataset=_dataset(tok, fixture_data["corpus"], n=8),
                         data_collator=DataCollatorForLanguageModeling(tok, mlm=True, mlm_probability=0.15))
    trainer.train()
    accuracies = [r["cwt_accuracy"] for r in trainer.state.log_history if "loss" in r]
    assert len(accuracies) == 3 and all(0 <= a <= 1 for a in accuracies)
    assert 0 <= trainer.evaluate()["eval_cwt_accuracy"] <= 1


def test_trainer_saves_the_tokenizer_with_the_model(fixture_data, fixture_tokenizers, tmp_path):
    """Issue #27 item 2: the documented recipe (`trainer.save_model`) writes the tokenizer, in the form every
    supported transformers loads, with model_max_length from the model; without a tokenizer it refuses."""
    import json

    from transformers import AutoTokenizer, BertConfig, BertModel, DataCollatorForLanguageModeling

    from headless.errors import HeadlessError
    from headless.eval.classification import load_tokenizer
    from headless.integrations.hf import CWTTrainer

    tok = AutoTokenizer.from_pretrained(fixture_tokenizers["wordpiece"])
    model = BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=64, max_position_embeddings=64), add_pooling_layer=False)
    ds = _dataset(tok, fixture_data["corpus"], n=8)
    with pytest.raises(HeadlessError, match="needs the tokenizer"):
        CWTTrainer(model=model, args=_args(tmp_path, steps=1), train_dataset=ds, data_collator=lambda rows: rows)
    trainer = CWTTrainer(model=model, args=_args(tmp_path, steps=1), train_dataset=ds,
                         data_collator=DataCollatorForLanguageModeling(tok, mlm=True))
    trainer.train()
    trainer.save_model(str(tmp_path / "export"))
    saved = json.loads((tmp_path / "export" / "tokenizer_config.json").read_text())
    assert saved["tokenizer_class"] == "PreTrainedTokenizerFast" and saved["model_max_length"] == 64
    assert "is_local" not in saved and "local_files_only" not in saved
    assert load_tokenizer(tmp_path / "export")("a b")["input_ids"] == tok("a b")["input_ids"]


def _hf_case(kind):
    """A float64 HF base model without dropout, and a batch with pad tokens (id 0) among the inputs
    and among the scored targets: where the one lookup's gradients could differ from the two."""
    from transformers import BertConfig, BertModel, GPTNeoXConfig, GPTNeoXModel, RobertaConfig, RobertaModel

    torch.manual_seed(0)
    small = dict(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                 pad_token_id=0)
    if kind == "gpt_neox":
        model = GPTNeoXModel(GPTNeoXConfig(**small, hidden_dropout=0.0, attention_dropout=0.0))
    elif kind == "bert":
        model = BertModel(BertConfig(**small, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
                          add_pooling_layer=False)
    else:
        model = RobertaModel(RobertaConfig(**small, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                           max_position_embeddings=40), add_pooling_layer=False)
    model = model.double()
    ids = torch.randint(4, 100, (3, 16))
    ids[2, 10:] = 0
    mask = (ids != 0).long()
    if kind == "gpt_neox":
        labels = ids.masked_fill(mask == 0, -100)
        labels[1, 7] = ids[1, 7] = 0  # a pad token as an input and as the target of position 6
    else:
        labels = torch.full_like(ids, -100)
        labels[:, ::3] = ids[:, ::3]
        labels[0, 3] = 0  # a scored target that is the pad token
    return model, {"input_ids": ids, "labels": labels, "attention_mask": mask}


def _grads(model, batch, **kw):
    model.zero_grad()
    out = compute_cwt_loss(model, batch, **kw)
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind", ["gpt_neox", "bert", "roberta"])
@pytest.mark.parametrize("count", [False, True])
def test_one_lookup_gives_the_two_lookups_loss_and_every_gradient(kind, count):
    """compute_cwt_loss feeds `inputs_embeds` from one embedding call (RoBERTa, whose position ids
    count pad input ids, keeps two): in float64 the same loss, accuracy and every gradient, with the
    Trainer's `num_items_in_batch` or without."""
    from headless.one_lookup import takes_one_lookup

    model, batch = _hf_case(kind)
    assert takes_one_lookup(model) == (kind != "roberta")
    kw = {"num_items_in_batch": torch.tensor(17)} if count else {}
    one, g_one = _grads(model, batch, **kw)
    two, g_two = _grads(model, batch, one_lookup=False, **kw)
    torch.testing.assert_close(one.loss, two.loss, rtol=0, atol=1e-12)
    assert int(one.num_targets) == int(two.num_targets) and float(one.accuracy) == float(two.accuracy)
    assert g_one.keys() == g_two.keys() and g_one
    for name in g_one:
        torch.testing.assert_close(g_one[name], g_two[name], rtol=0, atol=1e-12, msg=name)


@pytest.mark.parametrize("kind", ["gpt_neox", "bert"])
def test_one_lookup_builds_one_vocabulary_sized_gradient_through_the_hf_helper(kind):
    """The backward zeroes one V×D gradient and adds none; with the two lookups, two and one add."""
    from collections import Counter

    model, batch = _hf_case(kind)

    def vocab_ops(**kw):
        loss = compute_cwt_loss(model, batch, **kw).loss
        model.zero_grad()
        with torch.profiler.profile(record_shapes=True) as prof:
            loss.backward()
        return Counter(e.name for e in prof.events() if e.name in ("aten::zero_", "aten::add_", "aten::add")
                       and e.input_shapes and list(e.input_shapes[0]) == [100, 32])

    assert vocab_ops() == {"aten::zero_": 1}
    two = vocab_ops(one_lookup=False)
    assert two["aten::zero_"] == 2 and two["aten::add_"] + two["aten::add"] == 1


def test_fsdp_wrapped_models_keep_two_lookups():
    from headless.integrations.hf import _fsdp_wrapped

    class FullyShardedDataParallel(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

    inner = torch.nn.Linear(2, 2)
    assert _fsdp_wrapped(FullyShardedDataParallel(inner))
    assert not _fsdp_wrapped(inner)


def _ddp_grads(one_lookup):
    """Rank r's half of a batch through a DDP-wrapped GPT-NeoX: the all-reduced gradients."""
    from torch.nn.parallel import DistributedDataParallel

    from headless.train import distributed as hd

    env = hd.init_distributed("cpu", timeout_s=60)
    model, batch = _hf_case("gpt_neox")
    ddp = DistributedDataParallel(model)
    half = {k: v[env.rank::env.world_size] for k, v in batch.items()}
    compute_cwt_loss(ddp, half, one_lookup=one_lookup).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None} if env.is_main else None


def _ddp_job():
    return {"one": _ddp_grads(True), "two": _ddp_grads(False)}


def test_one_lookup_under_ddp_gives_the_two_lookups_gradients():
    """Under DDP the embedding is read outside the wrapped forward (the one lookup feeds
    `inputs_embeds`); its gradient still reaches DDP's all-reduce: the same averaged gradients as
    the two lookups, on two gloo processes."""
    from headless.train import distributed as hd

    result = hd.spawn(_ddp_job, 2, timeout_s=120)[0]
    assert result["one"].keys() == result["two"].keys() and result["one"]
    for name in result["one"]:
        torch.testing.assert_close(result["one"][name], result["two"][name], rtol=0, atol=1e-12, msg=name)


def test_one_lookup_stands_aside_where_it_would_change_the_result():
    """A frozen embedding, hooks on it (HF's enable_input_require_grads, NEFTune), per-position
    losses: the two lookups; a label outside the vocabulary: one line, not a device assert."""
    from headless.errors import HeadlessError
    from headless.one_lookup import takes_one_lookup

    model, batch = _hf_case("gpt_neox")
    emb = model.get_input_embeddings()
    assert takes_one_lookup(model)
    emb.weight.requires_grad_(False)
    assert not takes_one_lookup(model)
    emb.weight.requires_grad_(True)
    handle = emb.register_forward_hook(lambda module, args, out: out)
    assert not takes_one_lookup(model)
    handle.remove()
    model.enable_input_require_grads()  # what gradient checkpointing with a frozen embedding needs
    assert not takes_one_lookup(model)
    model, batch = _hf_case("gpt_neox")
    rows = compute_cwt_loss(model, batch, reduction="none").loss
    assert rows.shape == batch["labels"].shape  # per position, as the two lookups give it
    bad = dict(batch, labels=batch["labels"].clone())
    bad["labels"][0, 3] = 100  # V = 100
    with pytest.raises(HeadlessError, match=r"label ids must lie in \[0, 100\)"):
        compute_cwt_loss(model, bad)
