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
