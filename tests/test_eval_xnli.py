"""`headless xnli`: both modes end to end on real XNLI subsets, the line split, layouts, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("scipy")  # headless.eval needs it; collect (skipped) without it
pytest.importorskip("sklearn")  # headless.eval needs it; collect (skipped) without it

from headless.cli import main
from headless.errors import HeadlessError
from headless.eval.xnli import load_xnli, run_xnli

FAST = dict(epochs=1, batch_size=8, max_train_examples=16, max_eval_examples=12, device="cpu", progress=False)


@pytest.fixture(scope="module")
def xnli_dir(shared_data):
    return shared_data / "xnli"


def test_run_xnli_both_modes(tiny_bert_dir, xnli_dir, tmp_path):
    results = run_xnli(tiny_bert_dir, data_dir=xnli_dir, mode="both", languages=["en", "de", "fr"],
                       output_dir=tmp_path, **FAST)
    saved = json.loads((tmp_path / "xnli.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert saved["layout"] == "dev-split" and saved["recipe"]["batch_size"] == 8
    assert saved["train_examples"] == 16 and saved["eval_examples"] == 12
    for mode in ("transfer", "target"):
        langs = saved["modes"][mode]["languages"]
        assert list(langs) == ["en", "de", "fr"]
        mean = sum(v["mean"] for v in langs.values()) / 3
        assert saved["modes"][mode]["average"]["mean"] == pytest.approx(mean)
        assert all(0.0 <= v["mean"] <= 1.0 for v in langs.values())
        for lang, seeds in saved["modes"][mode]["predictions"].items():  # kept for paired tests
            (preds,) = seeds
            hits = sum(p == y for p, y in zip(preds, saved["labels"][lang]))
            assert len(preds) == 12 and hits / 12 == pytest.approx(langs[lang]["values"][0])
    markdown = (tmp_path / "xnli.md").read_text()
    assert "| de |" in markdown and "**Average**" in markdown and "transfer (fine-tuned on en)" in markdown
    # where the time went: 1 transfer + 3 target runs, 16 examples in batches of 8 for 1 epoch each
    timing = saved["fine_tuning"]
    assert timing["runs"] == 4 and timing["workers"] == 1 and timing["steps"] == 4 * 2
    assert 0 < timing["train_s"] <= timing["run_s"] <= timing["wall_s"] and timing["longest_s"] <= timing["run_s"]
    from headless.eval.classification import describe_fine_tuning

    line = describe_fine_tuning(timing)
    assert line.startswith("4 fine-tuning runs in 1 process(es):") and "8 steps" in line


def test_cli_xnli_transfer_trains_on_english_without_reporting_it(tiny_bert_dir, xnli_dir, tmp_path, capsys):
    status = main(["xnli", str(tiny_bert_dir), "--data-dir", str(xnli_dir), "--languages", "de,fr",
                   "--epochs", "1", "--batch-size", "8", "--max-train-examples", "16",
                   "--max-eval-examples", "12", "--seeds", "0,1", "--device", "cpu", "--quiet",
                   "--output", str(tmp_path)])
    assert status == 0
    saved = json.loads((tmp_path / "xnli.json").read_text())
    assert list(saved["modes"]) == ["transfer"] and list(saved["modes"]["transfer"]["languages"]) == ["de", "fr"]
    assert saved["recipe"]["lr"] == 2e-5 and saved["recipe"]["schedule"] == "constant"
    assert len(saved["modes"]["transfer"]["average"]["values"]) == 2
    assert "| fr |" in capsys.readouterr().out


def test_line_split_is_parallel_across_languages(xnli_dir):
    layout, data = load_xnli(xnli_dir, ["en", "de"])
    (en_train, en_eval), (de_train, de_eval) = data["en"], data["de"]
    assert layout == "dev-split" and len(en_train) == len(en_eval) == 1245
    assert [e.label for e in en_train] == [e.label for e in de_train]  # same items, same labels
    assert [e.label for e in en_eval] == [e.label for e in de_eval]
    assert en_train[0].text_a.startswith("And he said, Mama, I'm home.")
    _, small = load_xnli(xnli_dir, ["en", "de"], max_train_examples=20, max_eval_examples=10)
    assert [e.label for e in small["en"][0]] == [e.label for e in small["de"][0]]
    assert len(small["de"][0]) == 20 and len(small["de"][1]) == 10


def _release(path: Path, rows: list[tuple[str, str]]) -> None:
    header = "language\tgold_label\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t" \
             "sentence2_parse\tsentence1\tsentence2\tpromptID\tpairID"
    lines = [header] + [f"{lang}\t{label}\t-\t-\t-\t-\tA premise.\tA hypothesis.\t1\t1" for lang, label in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_xnli_release_layout(tmp_path):
    _release(tmp_path / "xnli.dev.tsv", [("en", "neutral"), ("fr", "entailment"), ("en", "contradiction")])
    _release(tmp_path / "xnli.test.tsv", [("en", "entailment"), ("fr", "neutral")])
    layout, data = load_xnli(tmp_path)
    assert layout == "xnli-1.0" and list(data) == ["en", "fr"]
    assert [e.label for e in data["en"][0]] == [1, 2] and [e.label for e in data["fr"][1]] == [1]


def test_train_files_fine_tune_and_the_whole_dev_set_evaluates(tmp_path):
    """train-<lang>.tsv beside dev-<lang>.tsv (the paper's protocol: MNLI-sized fine-tuning data):
    fine-tune on the train file, evaluate on all of dev; train files need not be parallel, and a
    language without one can still be evaluated by transfer."""
    dev = ["p\th\tentailment", "p\th\tneutral", "p\th\tcontradiction", "p\th\tneutral"]
    for lang in ("en", "de", "fr"):
        (tmp_path / f"dev-{lang}.tsv").write_text("\n".join(dev) + "\n")
    (tmp_path / "train-en.tsv").write_text("\n".join(["a\tb\tentailment"] * 7) + "\n")
    (tmp_path / "train-de.tsv").write_text("\n".join(["a\tb\tneutral"] * 3) + "\n")
    layout, data = load_xnli(tmp_path)
    assert layout == "train+dev"
    assert [len(data[lang][0]) for lang in ("en", "de", "fr")] == [7, 3, 0]
    assert all(len(data[lang][1]) == 4 for lang in data)  # the whole dev set evaluates
    assert {e.label for e in data["de"][0]} == {1}
    _, small = load_xnli(tmp_path, max_train_examples=5)
    assert [len(small[lang][0]) for lang in ("en", "de")] == [5, 3]


def test_target_mode_needs_a_train_file_per_language(tiny_bert_dir, tmp_path):
    dev = ["p\th\tentailment", "p\th\tneutral", "p\th\tcontradiction"]
    for lang in ("en", "fr"):
        (tmp_path / f"dev-{lang}.tsv").write_text("\n".join(dev) + "\n")
    (tmp_path / "train-fr.tsv").write_text("\n".join(dev) + "\n")
    with pytest.raises(HeadlessError, match="no train-<lang>.tsv in .* for en"):
        run_xnli(tiny_bert_dir, data_dir=tmp_path, mode="target", epochs=1, device="cpu", progress=False)
    with pytest.raises(HeadlessError, match=r"fine-tunes on 'en', which has no fine-tuning data .*\(train-en.tsv\)"):
        run_xnli(tiny_bert_dir, data_dir=tmp_path, mode="transfer", epochs=1, device="cpu", progress=False)
    (tmp_path / "train-en.tsv").write_text("\n".join(dev * 2) + "\n")
    result = run_xnli(tiny_bert_dir, data_dir=tmp_path, mode="both", epochs=1, device="cpu", progress=False,
                      output_dir=tmp_path / "out")
    assert result["layout"] == "train+dev" and result["train_examples"] == 6 and result["eval_examples"] == 3
    assert set(result["modes"]["transfer"]["languages"]) == set(result["modes"]["target"]["languages"]) == {"en", "fr"}


@pytest.mark.parametrize("case, message", [
    ("label", "label 'maybe' is not one of entailment, neutral, contradiction"),
    ("columns", "expected 3 tab-separated columns"),
    ("language", "missing XNLI file .*dev-xx.tsv for language 'xx'"),
    ("parallel", "not parallel"),
    ("empty", "no XNLI data"),
])
def test_bad_xnli_inputs(case, message, tmp_path):
    rows = ["p\th\tentailment", "p\th\tneutral", "p\th\tcontradiction", "p\th\tneutral"]
    if case != "empty":
        (tmp_path / "dev-en.tsv").write_text("\n".join(rows) + "\n")
        bad = {"label": rows[:3] + ["p\th\tmaybe"], "columns": rows[:3] + ["p\tentailment"],
               "parallel": rows[:2]}.get(case, rows)
        (tmp_path / "dev-de.tsv").write_text("\n".join(bad) + "\n")
    with pytest.raises(HeadlessError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_xnli(tmp_path, ["en", "de", "xx"] if case == "language" else None)


def test_cli_bad_mode_inputs_exit_2(tiny_bert_dir, tmp_path, capsys):
    (tmp_path / "dev-fr.tsv").write_text("p\th\tentailment\np\th\tneutral\n")
    status = main(["xnli", str(tiny_bert_dir), "--data-dir", str(tmp_path), "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert status == 2 and "fine-tunes on 'en'" in err and len(err.splitlines()) == 1


def test_xnli_workers_keep_every_score_in_its_place(tiny_bert_dir, xnli_dir):
    common = dict(data_dir=xnli_dir, mode="both", languages=["en", "de"], seeds=[0, 1], **FAST)
    one = run_xnli(tiny_bert_dir, **common)
    two = run_xnli(tiny_bert_dir, workers=2, **common)
    for mode in ("transfer", "target"):
        for lang in ("en", "de"):
            assert two["modes"][mode]["languages"][lang]["values"] == pytest.approx(
                one["modes"][mode]["languages"][lang]["values"], abs=1e-6)


def test_hub_train_fine_tunes_on_the_hubs_train_split_of_the_languages_it_needs(tiny_bert_dir, tmp_path,
                                                                                monkeypatch, capsys):
    """--hub-train: the paper's protocol from the hub (MultiNLI and its translations), fetched
    only for the languages the modes fine-tune on, into a cache of its own."""
    from headless.eval import datasets as evdata

    calls = []

    def hub(name, config, split):
        calls.append((config, split))
        size = 9 if split == "train" else 4
        return [{"premise": f"{config} premise {i}", "hypothesis": "a\thypothesis", "label": i % 3} for i in range(size)]

    monkeypatch.setattr(evdata, "_load_hub", hub)
    monkeypatch.setenv("HEADLESS_CACHE", str(tmp_path / "cache"))
    result = run_xnli(tiny_bert_dir, mode="transfer", languages=["fr"], epochs=1, device="cpu", progress=False,
                      hub_train=True, output_dir=tmp_path / "out")
    assert sorted(calls) == [("en", "train"), ("en", "validation"), ("fr", "validation")]
    assert result["layout"] == "train+dev" and result["train_examples"] == 9 and result["eval_examples"] == 4
    assert (tmp_path / "cache" / "eval-data" / "xnli-train" / "train-en.tsv").is_file()
    assert not (tmp_path / "cache" / "eval-data" / "xnli").exists()  # the dev-split cache stays as it was

    assert main(["xnli", str(tiny_bert_dir), "--hub-train", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "leave out --data-dir" in err

    def offline(*args, **kwargs):
        raise ConnectionError("no network\nsecond line")

    monkeypatch.setattr(evdata, "_load_hub", offline)
    monkeypatch.setenv("HEADLESS_CACHE", str(tmp_path / "empty-cache"))
    assert main(["xnli", str(tiny_bert_dir), "--hub-train", "--mode", "target", "--languages", "de"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "could not load the hub dataset facebook/xnli (ConnectionError" in err


def test_xnli_names_the_runs_that_ran_again_in_float32(tiny_bert_dir, xnli_dir, monkeypatch):
    """A bf16 run that diverges runs again in float32 (finetune_all); XNLI's results say which."""
    import headless.eval.classification as classification

    real = classification.finetune

    def finetune(**job):
        if job["bf16"] and job["desc"] == "XNLI de":  # stands in for a divergence (bf16 needs CUDA)
            raise classification.FinetuneDiverged("XNLI de: the loss became non-finite in epoch 1")
        return real(**dict(job, bf16=False))

    monkeypatch.setattr(classification, "finetune", finetune)
    results = run_xnli(tiny_bert_dir, data_dir=xnli_dir, mode="both", languages=["en", "de"], bf16=True, **FAST)
    assert results["fp32_retries"] == [["target", 0, "de"]]
    assert set(results["modes"]["target"]["languages"]) == {"en", "de"}


def test_one_seed_shows_its_accuracy_without_a_zero_spread():
    from headless.eval.classification import summarize
    from headless.eval.xnli import xnli_markdown

    mode = {"languages": {"en": summarize([0.5]), "de": summarize([0.4])}, "average": summarize([0.45])}
    results = {"model": "m", "modes": {"transfer": mode}, "seeds": [3], "train_language": "en",
               "recipe": {"lr": 1e-5, "epochs": 2, "batch_size": 32}, "train_examples": 10, "eval_examples": 10,
               "layout": "fixture"}
    text = xnli_markdown(results)
    assert "±" not in text and "| en | 50.00 |" in text and "one seed (3), no spread" in text, text


def test_translate_train_all_fine_tunes_once_on_every_language_and_evaluates_each(fixture_data, fixture_tokenizers,
                                                                                 tmp_path):
    """Issue #25: mode all pools every language's fine-tuning items (parallel halves), one run per seed,
    scored in every language; on the generated fixtures (no ../shared)."""
    from tiny_models import tiny_encoder

    model = tiny_encoder(tmp_path / "encoder", fixture_tokenizers["wordpiece"])
    langs = ["en", "fr"]
    _, data = load_xnli(fixture_data["xnli"], langs)
    results = run_xnli(model, data_dir=fixture_data["xnli"], mode="transfer,all", languages=langs, seeds=[0, 1],
                       epochs=1, batch_size=8, device="cpu", progress=False, output_dir=tmp_path / "out")
    assert list(results["modes"]) == ["transfer", "all"]
    assert results["all_train_examples"] == sum(len(data[lang][0]) for lang in langs)
    block = results["modes"]["all"]
    assert list(block["languages"]) == langs and len(block["average"]["values"]) == 2
    for lang in langs:
        assert len(block["predictions"][lang]) == 2  # one fine-tuning per seed, scored in each language
        assert len(block["predictions"][lang][0]) == len(data[lang][1])
    assert "translate-train-all" in (tmp_path / "out" / "xnli.md").read_text()
    with pytest.raises(HeadlessError, match="unknown XNLI mode 'transfer,every'"):
        run_xnli(model, data_dir=fixture_data["xnli"], mode="transfer,every", device="cpu", progress=False)
