"""HLM+FT: a headless decoder gets a head equal to its input embeddings and fine-tuning lowers the
cross-entropy on held-out text."""

from __future__ import annotations

import pytest
import torch

from headless.config import load_config
from headless.errors import HeadlessError
from headless.train.loop import pretrain

from test_pretrain import SMALL, _write_corpus


@pytest.fixture(scope="module")
def neox_data(shared_data, tmp_path_factory):
    from headless.data.prepare import prepare_dataset
    from headless.data.tokenizers import load_tokenizer

    root = tmp_path_factory.mktemp("ft")
    corpus = _write_corpus(shared_data, root / "wiki.jsonl", 60)
    tok = load_tokenizer(str(shared_data / "tokenizers" / "gpt-neox-20b" / "tokenizer.json"))
    prepare_dataset([str(corpus)], root / "data", tok, seq_len=64, validation_fraction=0.1, progress=False)
    return root / "data"


def _heldout_ce(model_dir, data) -> float:
    import transformers as tf

    from headless.data.loader import PackedDataset

    lm = tf.AutoModelForCausalLM.from_pretrained(model_dir).eval()
    val = PackedDataset(data, "validation")
    ids = torch.from_numpy(val.take(list(range(min(len(val), 8)))))
    with torch.no_grad():
        return float(lm(input_ids=ids, labels=ids).loss)


def test_finetune_head_starts_from_embeddings_and_lowers_heldout_loss(neox_data, tmp_path, monkeypatch):
    import transformers as tf

    monkeypatch.chdir(tmp_path)  # the fine-tuning run goes to ./runs/

    from headless.export import export
    from headless.finetune import finetune_head

    config = load_config("tiny", flavour="headless", overrides=SMALL + [
        "model.architecture=gpt-neox", "objective.kind=clm", f"data.path={neox_data}", f"run_dir={tmp_path / 'hlm'}",
        "max_steps=4", "save_every=4"])
    pretrain(config)
    start = export(tmp_path / "hlm", tmp_path / "start", add_head=True)
    lm = tf.AutoModelForCausalLM.from_pretrained(start)
    assert torch.equal(lm.get_output_embeddings().weight, lm.get_input_embeddings().weight)

    before = _heldout_ce(start, neox_data)
    finetune_head(tmp_path / "hlm", tmp_path / "ft", data=str(neox_data), tokens=40 * 4 * 64, batch_size=4, lr=3e-3,
                  warmup_steps=2, progress=False)
    after = _heldout_ce(tmp_path / "ft", neox_data)
    assert after < before - 0.5, (before, after)
    ft = tf.AutoModelForCausalLM.from_pretrained(tmp_path / "ft")
    assert not torch.equal(ft.get_output_embeddings().weight, ft.get_input_embeddings().weight)  # untied, moved


def test_probe_trains_only_the_head(neox_data, tmp_path):
    import transformers as tf

    from headless.finetune import finetune_head

    config = load_config("tiny", flavour="headless", overrides=SMALL + [
        "model.architecture=gpt-neox", "objective.kind=clm", f"data.path={neox_data}", f"run_dir={tmp_path / 'hlm'}",
        "max_steps=2", "save_every=2"])
    pretrain(config)
    from headless.export import export

    start = tf.AutoModelForCausalLM.from_pretrained(export(tmp_path / "hlm", tmp_path / "start", add_head=True))
    finetune_head(tmp_path / "hlm", tmp_path / "probe", data=str(neox_data), tokens=4 * 4 * 64, batch_size=4,
                  probe=True, progress=False, run_dir=str(tmp_path / "probe-run"))
    probe = tf.AutoModelForCausalLM.from_pretrained(tmp_path / "probe")
    assert torch.equal(probe.get_input_embeddings().weight, start.get_input_embeddings().weight)
    assert torch.equal(probe.gpt_neox.layers[0].mlp.dense_h_to_4h.weight, start.gpt_neox.layers[0].mlp.dense_h_to_4h.weight)
    assert not torch.equal(probe.get_output_embeddings().weight, start.get_output_embeddings().weight)

    # head first, then the whole model: a probed model is fine-tuned from its probed head, as is
    from headless.finetune import _headless_with_head

    assert _headless_with_head(tmp_path / "probe", tmp_path / "unused") == tmp_path / "probe"
    finetune_head(tmp_path / "probe", tmp_path / "lpft", data=str(neox_data), tokens=4 * 4 * 64, batch_size=4,
                  progress=False, run_dir=str(tmp_path / "lpft-run"))
    lpft = tf.AutoModelForCausalLM.from_pretrained(tmp_path / "lpft")
    assert not torch.equal(lpft.gpt_neox.layers[0].mlp.dense_h_to_4h.weight,
                           probe.gpt_neox.layers[0].mlp.dense_h_to_4h.weight)


def test_finetune_rejects_encoders_and_other_tokenizers(neox_data, tmp_path, shared_data):
    from headless.finetune import finetune_head

    with pytest.raises(HeadlessError, match="neither a run directory nor a Hugging Face model"):
        finetune_head(tmp_path / "nothing", tmp_path / "out", data=str(neox_data))


def test_finetune_head_refuses_a_model_without_its_tokenizer(fixture_datasets, fixture_tokenizers, tmp_path):
    """Issue #27 item 2: a headless decoder directory without a tokenizer is refused in one line before
    any training (transformers 5 would build a stand-in from config.json)."""
    from tiny_models import tiny_decoder
    from transformers import GPTNeoXModel

    from headless.finetune import finetune_head

    bare = tiny_decoder(tmp_path / "base", fixture_tokenizers["bpe"] / "tokenizer.json", cls=GPTNeoXModel)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (bare / name).unlink()
    with pytest.raises(HeadlessError, match="has no tokenizer"):
        finetune_head(bare, tmp_path / "out", data=str(fixture_datasets["neox"]), run_dir=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists() and not (tmp_path / "out").exists()


def test_finetune_head_from_an_hf_base_model_saves_a_portable_tokenizer(fixture_datasets, fixture_tokenizers,
                                                                          tmp_path):
    import json

    from tiny_models import tiny_decoder
    from transformers import GPTNeoXModel

    from headless.finetune import _headless_with_head

    base = tiny_decoder(tmp_path / "base", fixture_tokenizers["bpe"] / "tokenizer.json", cls=GPTNeoXModel)
    init = _headless_with_head(base, tmp_path / "init")
    saved = json.loads((init / "tokenizer_config.json").read_text())
    assert saved["tokenizer_class"] == "PreTrainedTokenizerFast" and saved["model_max_length"] == 2048
    assert "local_files_only" not in saved
