"""Issue #27 items 2, 4, 5, 6 on the generated fixtures: an export carries a tokenizer every supported
transformers loads as the model sees it, says when it has no vocabulary head (and evaluations that
need one refuse it), loads clean in AutoModel, and its README.md is a Hub-ready model card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from headless.config import load_config
from headless.errors import HeadlessError
from headless.train.loop import pretrain

SMALL = ["model.hidden_size=32", "model.num_layers=2", "model.num_heads=2", "model.intermediate_size=64",
         "model.max_position_embeddings=64", "data.seq_len=64", "batch_size=4", "optim.warmup_steps=2",
         "log_every=2", "eval_every=4", "eval_batches=1", "progress=false", "tensorboard=false", "max_steps=4",
         "save_every=4"]


@pytest.fixture(scope="module")
def runs(fixture_datasets, tmp_path_factory) -> dict:
    """Three tiny runs (headless and vanilla BERT, headless GPT-NeoX) and their exports."""
    from headless.export import export

    root = tmp_path_factory.mktemp("export-runs")
    out = {"root": root}
    for name, arch, flavour in [("bert-headless", "bert", "headless"), ("bert-vanilla", "bert", "vanilla"),
                                ("neox-headless", "gpt-neox", "headless")]:
        data = fixture_datasets["bert" if arch == "bert" else "neox"]
        overrides = SMALL + [f"model.architecture={arch}", f"data.path={data}", f"run_dir={root / name}"]
        if arch != "bert":
            overrides.append("objective.kind=clm")
        pretrain(load_config("tiny", flavour=flavour, overrides=overrides))
        out[name] = root / name
        out[f"{name}-export"] = export(root / name, root / f"export-{name}")
    return out


def _without_tokenizer(export_dir: Path, target: Path) -> Path:
    target.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(export_dir / name, target / name)
    return target


# -- item 2: a tokenizer travels with the model ----------------------------------------------------


@pytest.mark.parametrize("name", ["bert-headless", "neox-headless"])
def test_export_tokenizer_loads_the_same_everywhere(runs, name):
    from transformers import AutoTokenizer

    from headless.data.tokenizers import load_saved_tokenizer

    out = runs[f"{name}-export"]
    saved = json.loads((out / "tokenizer_config.json").read_text())
    assert saved["tokenizer_class"] == "PreTrainedTokenizerFast"  # TokenizersBackend does not exist on 4.57
    assert "local_files_only" not in saved and "is_local" not in saved
    assert saved["model_max_length"] == 64  # the model's positions, not 1e30
    bert = name.startswith("bert")
    assert ("token_type_ids" in saved["model_input_names"]) == bert
    tok, run_tok = AutoTokenizer.from_pretrained(out), load_saved_tokenizer(runs[name] / "tokenizer")
    text = "the history of the city began in the north"
    assert tok(text)["input_ids"] == run_tok(text)["input_ids"]
    assert tok.mask_token == run_tok.mask_token and tok.pad_token_id == run_tok.pad_token_id


def test_fill_mask_pipeline_truncates_a_long_input(runs):
    from transformers import pipeline

    fill = pipeline("fill-mask", model=str(runs["bert-vanilla-export"]), device="cpu")
    long = f"{fill.tokenizer.mask_token} " + "the city of the north " * 60  # > 64 positions
    assert len(fill(long, tokenizer_kwargs={"truncation": True}, top_k=2)) == 2


def test_evaluations_refuse_a_model_without_its_tokenizer(runs, tmp_path, fixture_data, capsys):
    from headless.cli import main
    from headless.eval.classification import load_tokenizer
    from headless.eval.scoring import load_tokenizer_dir

    bare = _without_tokenizer(runs["bert-headless-export"], tmp_path / "bare")
    for load in (load_tokenizer, load_tokenizer_dir):
        with pytest.raises(HeadlessError, match="has no tokenizer"):
            load(bare)
    assert main(["glue", str(bare), "--data-dir", str(fixture_data["glue"]), "--tasks", "rte",
                 "--output", str(tmp_path / "res"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no tokenizer" in err[0]
    assert not (tmp_path / "res").exists()  # never scored


def test_a_tokenizer_that_is_not_the_models_is_refused(runs, fixture_tokenizers, tmp_path):
    from headless.eval.scoring import load_tokenizer_dir
    from transformers import AutoTokenizer

    bert = runs["bert-headless-export"]
    small = _without_tokenizer(bert, tmp_path / "small")  # a 5-token stand-in for 256 embedding rows
    config = json.loads((bert / "config.json").read_text())
    config["vocab_size"] = 4096
    (small / "config.json").write_text(json.dumps(config))
    AutoTokenizer.from_pretrained(bert).save_pretrained(small)
    with pytest.raises(HeadlessError, match="is not the tokenizer the model was trained with"):
        load_tokenizer_dir(small)
    special = tmp_path / "special"  # a special id the tokenizer does not have
    shutil.copytree(bert, special)
    config = json.loads((special / "config.json").read_text())
    config["pad_token_id"] = config["vocab_size"] - 1
    (special / "config.json").write_text(json.dumps(config))
    n = len(AutoTokenizer.from_pretrained(bert))
    if config["pad_token_id"] >= n:
        with pytest.raises(HeadlessError, match="pad_token_id"):
            load_tokenizer_dir(special)


# -- item 4: no silent random head ---------------------------------------------------------------


def test_eval_harness_refuses_a_headless_export(runs, capsys):
    pytest.importorskip("lm_eval.models.huggingface", reason="lm-eval is an optional extra (headless[eval])")
    from headless.cli import main
    from headless.eval.harness import run_harness

    with pytest.raises(HeadlessError, match="no language-modelling head"):
        run_harness(runs["neox-headless-export"], "lambada_openai", device="cpu")
    assert main(["eval", "harness", str(runs["neox-headless-export"]), "--tasks", "lambada_openai"]) == 2
    assert "--add-head" in capsys.readouterr().err


def test_model_card_says_there_is_no_head_and_how_to_get_one(runs):
    decoder = (runs["neox-headless-export"] / "README.md").read_text()
    assert "no vocabulary head" in decoder and "--add-head" in decoder and "finetune-head" in decoder
    encoder = (runs["bert-headless-export"] / "README.md").read_text()
    assert "no vocabulary head" in encoder and "fill_mask" in encoder
    assert "no vocabulary head" not in (runs["bert-vanilla-export"] / "README.md").read_text()


def test_fill_mask_scores_with_the_input_embeddings(runs):
    from headless.embedding_head import embedding_logits, fill_mask, load_encoder
    from headless.export import load_run_model

    model, tokenizer = load_encoder(runs["bert-headless-export"])
    run_model = load_run_model(runs["bert-headless"], None)[1].eval()
    enc = tokenizer(f"the {tokenizer.mask_token} of the city", return_tensors="pt")
    with torch.no_grad():
        expected = run_model.hidden_states(enc["input_ids"]) @ run_model.input_embedding_weight().T
    assert torch.allclose(embedding_logits(model, **enc), expected, atol=1e-5)
    top = fill_mask(None, f"the {tokenizer.mask_token} of the city", model=model, tokenizer=tokenizer, top_k=3)
    assert len(top) == 1 and len(top[0]) == 3
    assert all(tok not in tokenizer.all_special_tokens for tok, _ in top[0])


# -- item 5: encoder exports load clean ----------------------------------------------------------


def test_headless_encoder_loads_clean_and_unchanged(runs):
    from transformers import AutoModel

    from transformers import AutoModelForSequenceClassification

    from headless.export import load_run_model

    out = runs["bert-headless-export"]
    model, info = AutoModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    ids = torch.randint(5, 200, (2, 12))
    with torch.no_grad():
        expected = load_run_model(runs["bert-headless"], None)[1].eval().hidden_states(ids)
        assert torch.allclose(model.eval()(input_ids=ids).last_hidden_state, expected, atol=1e-5)
    assert json.loads((out / "headless.json").read_text())["untrained_modules"] == ["pooler"]
    _, info = AutoModelForSequenceClassification.from_pretrained(out, num_labels=2, output_loading_info=True)
    assert all(key.startswith("classifier.") for key in info["missing_keys"])  # only the task head is new


def test_sentence_transformers_loads_the_encoder(runs):
    """In a fresh process: transformers prints its load report (MISSING ...) to the stderr it saw first."""
    import subprocess
    import sys

    pytest.importorskip("sentence_transformers", reason="sentence-transformers is not installed")
    code = ("import sentence_transformers as st; m = st.SentenceTransformer(%r, device='cpu'); "
            "print(m.encode(['a sentence']).shape)" % str(runs["bert-headless-export"]))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "(1, 32)" in done.stdout, done.stderr
    assert "MISSING" not in done.stderr and "newly initialized" not in done.stderr, done.stderr


# -- item 6: Hub-ready model cards ---------------------------------------------------------------


def test_model_card_is_hub_ready(runs, fixture_datasets):
    import yaml

    out = runs["bert-headless-export"]
    card = (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["license"] == "other" and front["library_name"] == "transformers"
    assert front["pipeline_tag"] == "feature-extraction"
    assert "train.jsonl" in card and "tokens in" in card  # the data, from the dataset manifest
    assert "mask_prob=0.15" in card and "temperature=1.0" in card and "lr `" in card
    assert "validation CWT loss" in card
    assert "from_pretrained" in card and "2309.08351" in card and "@inproceedings" in card
    vanilla = yaml.safe_load((runs["bert-vanilla-export"] / "README.md").read_text().split("---")[1])
    assert vanilla["pipeline_tag"] == "fill-mask"
    root = str(runs["root"])
    for path in out.rglob("*"):  # nothing that would upload a local path
        if path.is_file() and path.suffix in ("", ".json", ".md"):
            assert root not in path.read_text(errors="replace"), path
            assert str(fixture_datasets["bert"]) not in path.read_text(errors="replace"), path


def test_license_and_measured_results_reach_the_card(runs, tmp_path):
    from headless.eval.scoring import write_outputs
    from headless.export import export

    with pytest.raises(HeadlessError, match="license"):
        export(runs["neox-headless"], tmp_path / "bad", license="two words")
    out = export(runs["neox-headless"], tmp_path / "lm", add_head=True, license="apache-2.0")
    card = (out / "README.md").read_text()
    assert "license: apache-2.0" in card and "pipeline_tag: text-generation" in card
    assert "AutoModelForCausalLM" in card and "new" in card
    write_outputs(out / "eval-results", "lambada", {"accuracy": 0.5},
                  f"| model | examples | accuracy |\n|---|---|---|\n| {out.resolve()} | 6 | 0.5 |\n")
    card = (out / "README.md").read_text()
    assert "### lambada" in card and "| lm | 6 | 0.5 |" in card and str(tmp_path) not in card
