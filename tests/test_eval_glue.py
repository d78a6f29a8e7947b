"""`headless glue`: end to end on real GLUE subsets with a tiny BERT, bad inputs, and learning."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

pytest.importorskip("scipy")  # headless.eval needs it; collect (skipped) without it
pytest.importorskip("sklearn")  # headless.eval needs it; collect (skipped) without it

from headless.cli import main
from headless.errors import HeadlessError
from headless.eval.classification import Example, encode
from headless.eval.glue import compare_glue, glue_markdown, load_glue_task, run_glue
from tiny_models import tiny_encoder

FAST = dict(epochs=1, batch_size=8, max_train_examples=24, max_eval_examples=16, device="cpu",
            progress=False)


@pytest.fixture(scope="module")
def glue_dir(shared_data):
    return shared_data / "glue"


def test_run_glue_on_real_subsets(tiny_bert_dir, glue_dir, tmp_path):
    tasks = ["sst2", "MRPC", "sts-b", "rte", "wnli"]
    results = run_glue(tiny_bert_dir, tasks=tasks, data_dir=glue_dir, output_dir=tmp_path, **FAST)
    saved = json.loads((tmp_path / "glue.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert list(saved["tasks"]) == ["sst2", "mrpc", "stsb", "rte", "wnli"]
    stsb = saved["tasks"]["stsb"]
    assert set(stsb["metrics"]["dev"]) == {"pearson", "spearman"}
    assert stsb["main"]["mean"] == pytest.approx(
        (stsb["metrics"]["dev"]["pearson"]["mean"] + stsb["metrics"]["dev"]["spearman"]["mean"]) / 2)
    assert set(saved["tasks"]["mrpc"]["metrics"]["dev"]) == {"f1", "accuracy"}
    from headless.eval.glue import GLUE_TASKS
    from headless.eval.metrics import classification_metrics

    for key, task in saved["tasks"].items():
        assert task["train_examples"] == 24 and task["eval_examples"] == {"dev": 16}
        assert 0.0 <= task["metrics"]["dev"].get("accuracy", {"mean": 0.5})["mean"] <= 1.0
        # each seed's dev predictions are kept, and they give the reported score (paired tests need them)
        (preds,) = task["predictions"]["dev"]
        assert len(preds) == len(task["labels"]["dev"]) == 16
        main = classification_metrics(GLUE_TASKS[key].metric, preds, task["labels"]["dev"])["main"]
        assert main == pytest.approx(task["main"]["values"][0], abs=1e-12)
    markdown = (tmp_path / "glue.md").read_text()
    for name in ("SST-2", "MRPC", "STS-B", "RTE", "WNLI", "**Average**", "pearson", "f1"):
        assert name in markdown


def test_cli_glue_paper_recipe_seeds_and_compare(tiny_bert_dir, glue_dir, tmp_path, capsys):
    common = ["--data-dir", str(glue_dir), "--tasks", "rte,wnli", "--max-train-examples", "16",
              "--max-eval-examples", "12", "--batch-size", "8", "--device", "cpu", "--quiet"]
    assert main(["glue", str(tiny_bert_dir), *common, "--recipe", "paper", "--epochs", "2",
                 "--seeds", "0,1", "--output", str(tmp_path / "a")]) == 0
    a = json.loads((tmp_path / "a" / "glue.json").read_text())
    assert a["recipe"]["name"] == "paper" and a["recipe"]["loss"] == "balanced_ce"
    assert a["recipe"]["lr"] == 1e-5 and a["recipe"]["select"] == "best" and a["seeds"] == [0, 1]
    assert len(a["tasks"]["rte"]["main"]["values"]) == 2
    assert all(epoch in (1, 2) for epoch in a["tasks"]["rte"]["epochs"])
    assert "| RTE |" in capsys.readouterr().out
    assert main(["glue", str(tiny_bert_dir), *common, "--tasks", "rte", "--output", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    assert main(["glue", "compare", str(tmp_path / "a" / "glue.json"), str(tmp_path / "b" / "glue.json"),
                 "--output", str(tmp_path / "cmp")]) == 0
    table = capsys.readouterr().out
    assert "| Task | A | B | B − A |" in table and "| WNLI |" in table and "Average (shared tasks)" in table
    assert (tmp_path / "cmp" / "glue-compare.md").read_text() == table
    # both files kept their dev predictions on the same 12 RTE examples: B − A is paired on them
    assert "Paired bootstrap of B − A" in table and "12 dev examples" in table
    paired = json.loads((tmp_path / "cmp" / "glue-compare.json").read_text())["paired_bootstrap"]
    assert paired["low"] <= paired["high"] and paired["seeds"] == [1, 2]
    old = json.loads((tmp_path / "b" / "glue.json").read_text())  # written before predictions were kept
    for task in old["tasks"].values():
        del task["predictions"]
    (tmp_path / "b" / "old.json").write_text(json.dumps(old))
    assert main(["glue", "compare", str(tmp_path / "a" / "glue.json"), str(tmp_path / "b" / "old.json")]) == 0
    assert "No paired bootstrap" in capsys.readouterr().out


def _write(folder: Path, name: str, text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")


@pytest.mark.parametrize("case, message", [
    ("missing", "missing SST-2 file"),
    ("columns", "lacks column(s) 'sentence'"),
    ("label", "label '2' is not one of 0, 1"),
    ("fields", "expected at least 2 tab-separated columns"),
    ("stsb", "outside the STS-B range"),
    ("task", "unknown GLUE task 'sst3'"),
])
def test_bad_glue_inputs_give_one_line(case, message, tiny_bert_dir, tmp_path, capsys):
    good = "sentence\tlabel\na fine film\t1\na dull film\t0\n"
    sst = tmp_path / "SST-2"
    _write(sst, "train.tsv", {"columns": "text\tlabel\nfine\t1\n", "label": good + "odd\t2\n",
                              "fields": good + "no label\n"}.get(case, good))
    if case != "missing":
        _write(sst, "dev.tsv", good)
    _write(tmp_path / "STS-B", "train.tsv", "sentence1\tsentence2\tscore\na\tb\t7.5\n")
    _write(tmp_path / "STS-B", "dev.tsv", "sentence1\tsentence2\tscore\na\tb\t1.0\n")
    task = {"task": "sst3", "stsb": "stsb"}.get(case, "sst2")
    status = main(["glue", str(tiny_bert_dir), "--data-dir", str(tmp_path), "--tasks", task, "--device", "cpu",
                   "--quiet", "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert status == 2 and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out" / "glue.json").exists()


def test_tokenizer_larger_than_model_is_refused(tmp_path, bert_vocab_file, glue_dir, capsys):
    small = tiny_encoder(tmp_path / "small", bert_vocab_file.parent, vocab_size=1000)
    status = main(["glue", str(small), "--data-dir", str(glue_dir), "--tasks", "wnli", "--device", "cpu",
                   "--max-train-examples", "8", "--quiet", "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 2 and "30522 tokens but the model embeds only 1000" in err


def test_not_a_model_dir_and_bad_compare_input(tmp_path, glue_dir):
    with pytest.raises(HeadlessError, match="no config.json"):
        run_glue(tmp_path, tasks=["wnli"], data_dir=glue_dir, progress=False)
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(HeadlessError, match="not a glue.json"):
        compare_glue(tmp_path / "x.json", tmp_path / "x.json")


def test_real_mrpc_header_and_subsets_are_fixed(glue_dir):
    train, devs = load_glue_task("mrpc", glue_dir, max_train_examples=50, max_eval_examples=20)
    again, _ = load_glue_task("mrpc", glue_dir, max_train_examples=50)
    assert train == again and len(devs["dev"]) == 20
    assert all(ex.text_b and ex.label in (0, 1) for ex in train)
    full, _ = load_glue_task("mrpc", glue_dir)
    assert len(full) == 4076 and full[0].text_a.startswith("Amrozi accused his brother")


def test_pairs_without_a_template_are_joined_with_eos(neox_tokenizer_file):
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=str(neox_tokenizer_file), eos_token="<|endoftext|>")
    enc = encode(tok, [Example("the cat sat", "on the mat", 1)], max_seq_len=128)
    a, b = (tok(t, add_special_tokens=False)["input_ids"] for t in ("the cat sat", "on the mat"))
    assert enc.input_ids == [a + [tok.eos_token_id] + b] and enc.token_type_ids is None
    words = tok("word " * 50, add_special_tokens=False)["input_ids"]
    short = tok("short one", add_special_tokens=False)["input_ids"]
    long = encode(tok, [Example("word " * 50, "short one", 0)], max_seq_len=10).input_ids[0]
    assert long == words[: 9 - len(short)] + [tok.eos_token_id] + short  # longest-first truncation


@pytest.mark.parametrize("recipe, epochs", [("standard", 6), ("paper", 3)])
def test_finetuning_learns_a_separable_task(recipe, epochs, tiny_bert_dir, tmp_path):
    rng = random.Random(0)
    filler = "the a film story plot actor scene music time day long short old new".split()

    def rows(n):
        out = ["sentence\tlabel"]
        for i in range(n):
            words = rng.sample(filler, 5) + [("excellent" if i % 3 else "terrible")]
            rng.shuffle(words)
            out.append(f"{' '.join(words)}\t{int(i % 3 != 0)}")  # imbalanced: 2/3 positive
        return "\n".join(out) + "\n"

    _write(tmp_path / "SST-2", "train.tsv", rows(192))
    _write(tmp_path / "SST-2", "dev.tsv", rows(60))
    results = run_glue(tiny_bert_dir, tasks=["sst2"], recipe=recipe, data_dir=tmp_path, epochs=epochs, lr=2e-3,
                       batch_size=16, device="cpu", progress=False)
    assert results["tasks"]["sst2"]["main"]["mean"] >= 0.9  # chance (majority class) is 0.67


def test_headerless_cola_and_two_mnli_dev_sets(tiny_bert_dir, tmp_path):
    """CoLA has no header (label in column 1, sentence in 3); MNLI has matched + mismatched dev sets."""
    cola = "".join(f"src\t{i % 2}\t*\tsentence number {i}\n" for i in range(12))
    for name in ("train.tsv", "dev.tsv"):
        _write(tmp_path / "CoLA", name, cola)
    head = "index\tgenre\tsentence1\tsentence2\tlabel1\tgold_label\n"
    classes = ("entailment", "neutral", "contradiction")
    nli = head + "".join(f"{i}\tg\tpremise {i}\thypothesis {i}\tx\t{classes[i % 3]}\n" for i in range(12))
    for name in ("train.tsv", "dev_matched.tsv", "dev_mismatched.tsv"):
        _write(tmp_path / "MNLI", name, nli)
    results = run_glue(tiny_bert_dir, data_dir=tmp_path, **FAST)  # tasks: every folder found
    assert list(results["tasks"]) == ["cola", "mnli"]
    assert set(results["tasks"]["cola"]["metrics"]["dev"]) == {"matthews", "accuracy"}
    mnli = results["tasks"]["mnli"]
    assert set(mnli["metrics"]) == {"matched", "mismatched"} and mnli["eval_examples"]["matched"] == 12
    assert mnli["main"]["mean"] == pytest.approx(
        (mnli["metrics"]["matched"]["accuracy"]["mean"] + mnli["metrics"]["mismatched"]["accuracy"]["mean"]) / 2)


def test_paper_setup_bert_with_the_pythia_tokenizer(neox_tokenizer_file, glue_dir, tmp_path):
    """The paper's English encoders: a BERT with the GPT-NeoX tokenizer (no CLS/SEP/PAD tokens)."""
    import torch
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=str(neox_tokenizer_file), eos_token="<|endoftext|>")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=50304, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    results = run_glue(tmp_path / "m", tasks=["rte"], data_dir=glue_dir, **FAST)
    assert results["tasks"]["rte"]["eval_examples"] == {"dev": 16}
    assert 0.0 <= results["average"]["mean"] <= 1.0


def test_a_non_finite_fine_tuning_loss_is_one_line(tiny_bert_dir, glue_dir, monkeypatch):
    """The NaN check stays on the device during an epoch (no host sync per step) and is read at
    the epoch's end: a diverged fine-tuning still ends with one clear error."""
    import torch

    import headless.eval.classification as classification

    real = classification.F.cross_entropy
    monkeypatch.setattr(classification.F, "cross_entropy", lambda *a, **k: real(*a, **k) * torch.tensor(float("nan")))
    with pytest.raises(HeadlessError, match="non-finite in epoch 1; lower --lr"):
        run_glue(tiny_bert_dir, tasks=["rte"], data_dir=glue_dir, **FAST)


def test_a_diverged_task_is_left_out_only_when_divergence_is_tolerated(tiny_bert_dir, glue_dir, monkeypatch):
    """A learning-rate sweep must not lose every task's runs to one diverged candidate: with
    `tolerate_divergence` the diverged task is dropped and named, the others are scored."""
    import headless.eval.classification as classification

    real = classification.finetune

    def finetune(**job):
        if job["desc"] == "RTE":
            raise classification.FinetuneDiverged("RTE: the loss became non-finite in epoch 1; lower --lr")
        return real(**job)

    monkeypatch.setattr(classification, "finetune", finetune)
    with pytest.raises(HeadlessError, match="RTE: the loss became non-finite"):
        run_glue(tiny_bert_dir, tasks=["rte", "stsb"], data_dir=glue_dir, **FAST)
    results = run_glue(tiny_bert_dir, tasks=["rte", "stsb"], data_dir=glue_dir, tolerate_divergence=True, **FAST)
    assert list(results["tasks"]) == ["stsb"] and "non-finite" in results["diverged"]["rte"]
    assert results["average"]["values"] == results["tasks"]["stsb"]["main"]["values"]
    assert "| RTE | diverged |" in glue_markdown(results)


def test_a_run_that_diverges_in_bf16_runs_again_in_float32_and_says_so(tiny_bert_dir, glue_dir, monkeypatch):
    """What the error advises, done once automatically: the seed's run is repeated without bf16
    and the task names the seeds that needed it; a run that diverges in float32 too stays an error."""
    import headless.eval.classification as classification

    real = classification.finetune
    seen = []

    def finetune(**job):
        seen.append(job["bf16"])
        if job["bf16"]:  # (bf16 itself needs CUDA: this stands in for its divergence)
            raise classification.FinetuneDiverged(f"{job['desc']}: the loss became non-finite in epoch 1")
        return real(**job)

    monkeypatch.setattr(classification, "finetune", finetune)
    results = run_glue(tiny_bert_dir, tasks=["rte"], data_dir=glue_dir, bf16=True, seeds=[0, 1], **FAST)
    assert seen == [True, False, True, False] and results["tasks"]["rte"]["fp32_retries"] == [0, 1]
    assert len(results["tasks"]["rte"]["main"]["values"]) == 2

    def always(**job):
        raise classification.FinetuneDiverged(f"{job['desc']}: the loss became non-finite in epoch 2")

    monkeypatch.setattr(classification, "finetune", always)
    with pytest.raises(HeadlessError, match="non-finite in epoch 2"):
        run_glue(tiny_bert_dir, tasks=["rte"], data_dir=glue_dir, bf16=True, **FAST)
    assert "rte" in run_glue(tiny_bert_dir, tasks=["rte"], data_dir=glue_dir, bf16=True, tolerate_divergence=True,
                             **FAST)["diverged"]


def test_workers_give_the_same_scores_as_one_process(tiny_bert_dir, glue_dir):
    """`workers=2` fine-tunes (task, seed) runs in two spawned processes: each run seeds itself
    and loads a fresh model, so every score equals the one-process run's, in the same order."""
    common = dict(tasks=["rte", "stsb"], seeds=[0, 1], data_dir=glue_dir, **FAST)
    one = run_glue(tiny_bert_dir, **common)
    two = run_glue(tiny_bert_dir, workers=2, **common)
    for task in ("rte", "stsb"):
        assert two["tasks"][task]["main"]["values"] == pytest.approx(one["tasks"][task]["main"]["values"], abs=1e-6)
    assert two["average"] == pytest.approx(one["average"])
    with pytest.raises(HeadlessError, match="workers must be >= 1"):
        run_glue(tiny_bert_dir, workers=0, **common)


def test_shared_workers_spawn_one_pool_for_several_calls(tiny_bert_dir, glue_dir):
    """Inside `shared_workers` (a study point's evaluation) every call with the same `workers` runs
    on the same processes, started once; the scores are those of separate pools; the block's end
    shuts the pool down."""
    from headless.eval import classification

    common = dict(tasks=["rte", "stsb"], seeds=[0], data_dir=glue_dir, **FAST)
    alone = run_glue(tiny_bert_dir, workers=2, **common)
    with classification.shared_workers():
        first = run_glue(tiny_bert_dir, workers=2, **common)
        (pool,) = classification._SHARED[-1].values()
        pids = set(pool._processes)
        second = run_glue(tiny_bert_dir, workers=2, lr=5e-4, **common)
        assert list(classification._SHARED[-1].values()) == [pool] and set(pool._processes) == pids
    assert not classification._SHARED and pool._shutdown_thread
    assert first["average"] == pytest.approx(alone["average"])
    assert second["average"] != pytest.approx(first["average"])  # another rate: the jobs really ran


def test_one_seed_shows_its_score_without_a_zero_spread():
    """One seed printed "± 0.00", a spread that was never measured (issue #28)."""
    from headless.eval.classification import fmt_score, summarize

    recipe = {"name": "paper", "lr": 1e-5, "epochs": 3, "batch_size": 32, "select": "best"}

    def results(seeds):
        scores = summarize([0.61 + 0.01 * s for s in seeds])
        return {"benchmark": "glue", "model": "m", "recipe": recipe, "seeds": seeds, "average": scores,
                "tasks": {"rte": {"name": "RTE", "main": scores, "metrics": {"validation": {"accuracy": scores}}}}}

    assert fmt_score(summarize([0.6123])) == "61.23"
    one = glue_markdown(results([0]))
    assert "±" not in one and "| RTE | 61.00 |" in one and "one seed (0), no spread" in one, one
    two = glue_markdown(results([0, 1]))
    assert "| RTE | 61.50 ± 0.71 |" in two and "mean ± std over seeds [0, 1]" in two, two
