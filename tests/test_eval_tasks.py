"""The evaluation task registry (headless.eval.tasks): every registered task runs on the synthetic
fixtures and tiny models (no ../shared), returns scores and predictions and renders itself; plus the
refusals around it: GLUE/XNLI on a decoder, an offline machine without evaluation data."""

from __future__ import annotations

import math
import socket

import pytest

from headless.cli import main
from headless.eval.tasks import TASKS, TaskResult, get_task
from tiny_models import tiny_decoder, tiny_encoder


@pytest.fixture(scope="module")
def models(fixture_data, fixture_tokenizers, tmp_path_factory) -> dict:
    """A tiny decoder (byte-level BPE, with an EOS token for lm-eval), a tiny encoder (WordPiece) and a
    prepared dataset in the decoder's tokenizer, for the held-out cross-entropy."""
    root = tmp_path_factory.mktemp("task-models")
    bpe = fixture_tokenizers["bpe"]
    decoder = tiny_decoder(root / "decoder", bpe / "tokenizer.json", eos_token=_eos(bpe))
    encoder = tiny_encoder(root / "encoder", fixture_tokenizers["wordpiece"])
    dataset = root / "dataset"
    assert main(["prepare", str(fixture_data["corpus"]), "--output", str(dataset), "--tokenizer", str(bpe),
                 "--seq-len", "32", "--validation-fraction", "0.1", "--quiet"]) == 0
    return {"decoder": decoder, "encoder": encoder, "dataset": dataset}


def _eos(tokenizer_dir) -> str:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    return tok.eos_token or tok.convert_ids_to_tokens(0)


def _harness(fx, models, tmp_path):
    pytest.importorskip("lm_eval.models.huggingface", reason="lm-eval is an optional extra (headless[eval])")
    from test_eval_harness import LAMBADA_YAML  # the local lm-eval LAMBADA task, one home

    (tmp_path / "local_lambada.yaml").write_text(LAMBADA_YAML.format(data=fx["lambada"]))
    return models["decoder"], dict(tasks="local_lambada", include_path=tmp_path, limit=4, device="cpu")


# How each registered task runs on the fixtures: (model directory, options).  A new task needs an
# entry here, or test_every_registered_task_has_a_fixture_run fails (docs/contributing.md).
FIXTURE_RUNS = {
    "lambada": lambda fx, m, tmp: (m["decoder"], dict(data=fx["lambada"], limit=6, device="cpu",
                                                      output_dir=tmp / "out")),
    "zeroshot": lambda fx, m, tmp: (m["decoder"], dict(tasks="boolq,piqa", data_dir=fx["zeroshot"], limit=4,
                                                       device="cpu")),
    "heldout": lambda fx, m, tmp: (m["decoder"], dict(data=m["dataset"], max_sequences=4, device="cpu")),
    "harness": _harness,
    "glue": lambda fx, m, tmp: (m["encoder"], dict(tasks=["sst2", "stsb"], data_dir=fx["glue"], epochs=1,
                                                   max_train_examples=8, max_eval_examples=6, device="cpu",
                                                   progress=False, output_dir=tmp / "out")),
    "xnli": lambda fx, m, tmp: (m["encoder"], dict(data_dir=fx["xnli"], languages=["en", "fr"], epochs=1,
                                                   device="cpu", progress=False, output_dir=tmp / "out")),
    "analysis": lambda fx, m, tmp: (m["encoder"], dict(text=str(fx["corpus"]), num_pairs=50, num_sequences=4,
                                                       max_length=32, device="cpu")),
}


def test_every_registered_task_has_a_fixture_run():
    from headless.cli.eval import COMMANDS

    assert set(FIXTURE_RUNS) == set(TASKS)
    assert all(task.model in ("decoder", "encoder", "any") and task.help for task in TASKS.values())
    assert set(COMMANDS) == {name for name, task in TASKS.items() if task.model == "decoder"}  # `headless eval`


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_registered_task_runs_on_the_fixtures(name, fixture_data, models, tmp_path):
    task = get_task(name)
    model_dir, options = FIXTURE_RUNS[name](fixture_data, models, tmp_path)
    result = task.run(model_dir, **options)
    assert isinstance(result, TaskResult) and result.task == name and result.scores
    for key, values in result.scores.items():
        assert isinstance(values, list) and values and all(math.isfinite(v) for v in values), (key, values)
    for entry in result.predictions.values():  # eval.bootstrap entries: one prediction per label per seed
        assert {"group", "metric", "labels", "seeds"} <= set(entry)
        assert all(len(seed) == len(entry["labels"]) for seed in entry["seeds"])
    rendered = task.render(result)
    assert isinstance(rendered, str) and rendered.strip()


def test_unknown_task_is_one_line():
    from headless.errors import HeadlessError

    with pytest.raises(HeadlessError, match="unknown evaluation task 'nope'; choose from lambada"):
        get_task("nope")


def test_eval_heldout_cli(models, capsys):
    assert main(["eval", "heldout", str(models["decoder"]), "--data", str(models["dataset"]),
                 "--max-sequences", "2", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "| sequences | tokens | bytes | cross-entropy (nats/token) | perplexity | bits per byte |" in out
    assert "| 2 |" in out


def test_heldout_bits_per_byte_are_the_summed_loss_over_the_scored_texts_bytes(models):
    """Bits per byte (issue #25): tokenizers of different sizes compare on the text itself."""
    import math

    import numpy as np

    from headless.data.loader import PackedDataset
    from headless.eval.heldout import heldout_cross_entropy

    r = heldout_cross_entropy(models["decoder"], models["dataset"], max_sequences=3, device="cpu")
    data = PackedDataset(models["dataset"], "validation")
    text_bytes = sum(len(data.tokenizer.decode(np.asarray(data[i][1:]).tolist()).encode("utf-8")) for i in range(3))
    assert r["bytes"] == text_bytes > r["tokens"]  # a byte-level BPE token holds at least one byte
    assert r["bits_per_byte"] == pytest.approx(r["cross_entropy"] * r["tokens"] / math.log(2) / text_bytes)


def test_heldout_scores_each_sequence_as_the_whole_batch_would(models):
    """The losses are taken one sequence at a time (a batch's logits at 128k did not fit 24 GB
    twice over): the same per-token numbers as the whole batch's cross-entropy at once."""
    import numpy as np
    import torch

    from headless.data.loader import PackedDataset
    from headless.eval.heldout import heldout_cross_entropy
    from headless.eval.scoring import load_causal_lm

    r = heldout_cross_entropy(models["decoder"], models["dataset"], max_sequences=3, batch_size=3, device="cpu")
    data = PackedDataset(models["dataset"], "validation")
    batch = torch.from_numpy(np.stack([data[i] for i in range(3)]).astype(np.int64))
    model, _, _ = load_causal_lm(models["decoder"], device="cpu")
    with torch.no_grad():
        logits = model(input_ids=batch).logits
    whole = torch.nn.functional.cross_entropy(logits[:, :-1].float().flatten(0, 1), batch[:, 1:].flatten(),
                                              reduction="none").view(3, -1)
    assert r["per_sequence"] == pytest.approx(whole.mean(dim=1).tolist(), rel=1e-6)
    assert r["cross_entropy"] == pytest.approx(float(whole.mean()), rel=1e-6)


def test_heldout_skip_scores_the_sequences_after_the_first_n(models, capsys):
    """`--skip` (scripts/hlmft_lr_probe.sh): a setting chosen on sequences a study does not report."""
    from headless.errors import HeadlessError
    from headless.eval.heldout import heldout_cross_entropy

    every = heldout_cross_entropy(models["decoder"], models["dataset"], max_sequences=4, device="cpu")
    later = heldout_cross_entropy(models["decoder"], models["dataset"], max_sequences=2, skip=2, batch_size=1,
                                  device="cpu")
    assert later["sequences"] == 2 and later["skipped"] == 2
    assert later["per_sequence"] == pytest.approx(every["per_sequence"][2:4], rel=1e-5)
    capsys.readouterr()
    assert main(["eval", "heldout", str(models["decoder"]), "--data", str(models["dataset"]), "--skip", "100000",
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "after the first 100000" in err[0]
    with pytest.raises(HeadlessError, match="skip must be >= 0"):
        heldout_cross_entropy(models["decoder"], models["dataset"], skip=-1, device="cpu")


@pytest.mark.parametrize("command,head", [("glue", True), ("xnli", True), ("glue", False)])
def test_glue_and_xnli_refuse_a_decoder_export(command, head, models, fixture_data, fixture_tokenizers, tmp_path,
                                               capsys):
    """Issue #28 item 6: their help says "encoder"; a decoder export, with its LM head or without one
    (`headless export` of a headless decoder), gets one line before any data work."""
    from transformers import GPTNeoXModel

    model = models["decoder"] if head else tiny_decoder(tmp_path / "base", fixture_tokenizers["bpe"] / "tokenizer.json",
                                                         cls=GPTNeoXModel)
    capsys.readouterr()
    assert main([command, str(model), "--data-dir", str(fixture_data[command]),
                 "--output", str(tmp_path / "out"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    kind = "GPTNeoXForCausalLM" if head else "GPTNeoXModel"
    assert f"headless {command} fine-tunes an encoder" in err and f"is a decoder ({kind})" in err, err
    assert not (tmp_path / "out").exists()


def test_offline_evaluation_fails_at_once_naming_the_three_ways_to_data(models, monkeypatch, tmp_path, capsys):
    """Issue #28 item 5: with no data given, no $HEADLESS_SHARED_DATA and no network, the hub is read
    from the local cache only (no retries) and the error names --data, the variable and the hub."""
    datasets = pytest.importorskip("datasets")

    def unreachable(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    seen = []

    def load_dataset(name, *args, **kwargs):  # stands in for the hub client: retries unless offline
        seen.append(datasets.config.HF_HUB_OFFLINE)
        raise ConnectionError(f"Couldn't reach {name!r} on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HEADLESS_SHARED_DATA", raising=False)
    monkeypatch.setenv("HEADLESS_CACHE", str(tmp_path / "cache"))
    assert main(["eval", "lambada", str(models["decoder"]), "--device", "cpu"]) == 2
    assert seen == [True]  # the cache only: an offline machine does not wait for the hub's retries
    assert datasets.config.HF_HUB_OFFLINE is False  # and the setting is given back
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert all(way in err for way in ("--data PATH", "HEADLESS_SHARED_DATA", "EleutherAI/lambada_openai")), err

    from headless.eval.datasets import hub_reachable

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not hub_reachable()
