"""`headless reproduce` end to end at a toy budget on small real subsets, and `headless report`.

The mini data root copies the first lines of each ../shared/data file the studies read, laid out the
same way, so the studies run their real code paths (prepare, pretrain with a time budget, curve
checkpoints, export, HLM+FT, LAMBADA, zero-shot, held-out CE, GLUE, XNLI) in seconds on a CPU.
"""

from __future__ import annotations

import json
import lzma
import shutil
from pathlib import Path

import pytest

from headless.errors import HeadlessError

TINY_MODEL = ["model.hidden_size=32", "model.num_layers=2", "model.num_heads=2", "model.intermediate_size=64",
              "batch_size=4", "optim.warmup_steps=6", "budget.calibration_skip=2", "budget.calibration_steps=3",
              "log_every=2", "eval_batches=2", "tensorboard=false", "compile=false"]


def _head(src: Path, dst: Path, n: int, max_chars: int = 20_000) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.suffix == ".xz":
        with lzma.open(src, "rt", encoding="utf-8") as f:
            docs = [json.loads(line) for _, line in zip(range(n), f)]
        lines = [json.dumps(dict(d, text=d["text"][:max_chars])) + "\n" for d in docs]
        with lzma.open(dst, "wt", encoding="utf-8") as f:
            f.write("".join(lines))
    else:
        with open(src, encoding="utf-8") as f:
            lines = [line for _, line in zip(range(n), f)]
        dst.write_text("".join(lines), encoding="utf-8")


@pytest.fixture(scope="module")
def mini_root(shared_data, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mini-shared")
    for i in range(2):
        _head(shared_data / f"enwiki/train/enwiki-00{i}.jsonl.xz", root / f"enwiki/train/enwiki-00{i}.jsonl.xz", 8)
    _head(shared_data / "enwiki/validation/enwiki-029.jsonl.xz", root / "enwiki/validation/enwiki-029.jsonl.xz", 4)
    _head(shared_data / "books/gutenberg_en.jsonl.xz", root / "books/gutenberg_en.jsonl.xz", 1)
    for lang in ("de", "ja", "ko", "zh"):
        _head(shared_data / f"multilingual/{lang}.jsonl.xz", root / f"multilingual/{lang}.jsonl.xz", 6)
    _head(shared_data / "books/gutenberg_fr_es.jsonl.xz", root / "books/gutenberg_fr_es.jsonl.xz", 2)
    shutil.copytree(shared_data / "tokenizers", root / "tokenizers")
    _head(shared_data / "lambada/lambada_openai_dev.jsonl", root / "lambada/lambada_openai_dev.jsonl", 12)
    for task in ("boolq", "piqa"):
        _head(shared_data / f"zeroshot/{task}.jsonl", root / f"zeroshot/{task}.jsonl", 8)
    for task in ("RTE", "STS-B"):
        for split in ("train", "dev"):
            _head(shared_data / f"glue/{task}/{split}.tsv", root / f"glue/{task}/{split}.tsv", 33)
    for lang in ("en", "de", "fr", "ar"):
        _head(shared_data / f"xnli/dev-{lang}.tsv", root / f"xnli/dev-{lang}.tsv", 24)
    return root


def _study(name: str, root: Path, *extra: str):
    from headless.lab.reproduce import load_study

    common = [f"data_root={root}", "budget_s=1.5", "fractions=[0.5,1.0]", "progress=false", "device=cpu"]
    return load_study(name, overrides=common + list(extra))


def _pretrain(*items: str) -> str:
    return "pretrain=[" + ",".join(TINY_MODEL + list(items)) + "]"


def test_decoder_study_toy_budget_end_to_end(mini_root, tmp_path):
    from headless.lab.reproduce import run_study

    config = _study("decoder", mini_root, "budget_s=3", "preset=tiny-gpt", "seq_len=64", "finetune_tokens=1024",
                    "heldout_sequences=4", "zeroshot_tasks=[boolq,piqa]", _pretrain("grad_accum=1"))
    result = run_study(config, work_dir=tmp_path / "work", output_dir=tmp_path / "out")
    pieces = [json.loads(p.read_text()) for p in result["pieces"]]
    assert [p["flavour"] for p in pieces] == ["headless", "vanilla"]
    for piece in pieces:
        t = piece["pretrain"]
        assert t["steady_s_per_step"] > 0
        # equal GPU time: the step count follows the twin's own measured throughput
        assert t["steps"] == max(5, int(3 / t["steady_s_per_step"]))
        # curve checkpoints at the fractions, none before max_steps was known (after step 5)
        assert [p["step"] for p in piece["points"]] == sorted({max(5, round(0.5 * t["steps"])), t["steps"]})
        assert piece["data"]["fingerprint"] == pieces[0]["data"]["fingerprint"]
    head_final = pieces[0]["points"][-1]["variants"]
    assert set(head_final) == {"hlm_ft", "headless_raw"}
    assert head_final["hlm_ft"]["gpu_s"] > head_final["headless_raw"]["gpu_s"]  # fine-tuning time counted
    for name in ("lambada_acc", "lambada_token_ppl", "heldout_ce", "heldout_bpb", "boolq_acc", "zeroshot_avg"):
        assert name in head_final["hlm_ft"]["scores"]
    assert not any(k.startswith("heldout_bpb_") for k in head_final["hlm_ft"]["scores"])  # Pythia: English only
    assert "boolq_acc" not in pieces[0]["points"][0]["variants"]["hlm_ft"]["scores"]  # zero-shot: final only
    report = result["report"]
    assert set(report["headline"]) == {"lambada_acc", "heldout_ce", "heldout_bpb", "heldout_bpb_languages"}
    assert "delta" in report["headline"]["heldout_bpb"] and "delta" not in report["headline"]["heldout_bpb_languages"]
    assert report["headline"]["lambada_acc"]["crossing"]["status"]
    # LAMBADA's per-example correctness travels; HLM+FT and vanilla are paired on the same examples
    flags = head_final["hlm_ft"]["predictions"]["lambada"]
    assert flags["labels"] == [1] * 12 and set(flags["seeds"][0]) <= {0, 1}
    assert sum(flags["seeds"][0]) / 12 * 100 == pytest.approx(head_final["hlm_ft"]["scores"]["lambada_acc"][0])
    paired = report["headline"]["lambada_acc"]["paired_bootstrap"]
    assert paired["examples"] == 12 and paired["low"] <= paired["high"]
    ce = report["headline"]["heldout_ce"]  # lower is better, in nats: paired on the 4 held-out sequences
    assert ce["paired_bootstrap"]["examples"] == 4
    assert ce["paired_bootstrap"]["low"] <= ce["delta"] <= ce["paired_bootstrap"]["high"]
    per_seq = head_final["hlm_ft"]["predictions"]["heldout"]["seeds"][0]
    assert sum(per_seq) / 4 == pytest.approx(head_final["hlm_ft"]["scores"]["heldout_ce"][0])
    assert (tmp_path / "out" / "decoder-lambada_acc.png").stat().st_size > 1000
    assert "| LAMBADA accuracy (%) |" in (tmp_path / "out" / "decoder-report.md").read_text()


def test_a_decoder_study_with_its_own_large_bpe_scores_bits_per_byte_per_language(mini_root, tmp_path):
    """Issue #25: decoder_vocab_size trains a byte-level BPE on English + the languages; held-out bits
    per byte per language on XNLI's parallel sentences (a small vocabulary here; >= 128k on the GPU)."""
    from headless.lab.reproduce import run_study

    config = _study("decoder", mini_root, "budget_s=2", "preset=tiny-gpt", "seq_len=64", "finetune_tokens=512",
                    "heldout_sequences=2", "zeroshot_tasks=[]", "fractions=[1.0]", "decoder_vocab_size=700",
                    "languages=[de,fr]", _pretrain("grad_accum=1"))
    result = run_study(config, flavours=("vanilla",), work_dir=tmp_path / "work", output_dir=tmp_path / "out")
    piece = json.loads(result["pieces"][0].read_text())
    assert {"de.jsonl.xz", "gutenberg_fr_es.jsonl.xz", "gutenberg_en.jsonl.xz"} <= set(piece["data"]["inputs"])
    (tokenizer,) = (tmp_path / "work" / "decoder" / "tokenizers").iterdir()
    assert tokenizer.name.startswith("decoder-bpe-700-")
    scores = piece["points"][-1]["variants"]["vanilla"]["scores"]
    for lang in ("en", "de", "fr"):
        assert 0 < scores[f"heldout_bpb_{lang}"][0] < 20
    assert scores["heldout_bpb_languages"][0] == pytest.approx(
        sum(scores[f"heldout_bpb_{lang}"][0] for lang in ("en", "de", "fr")) / 3)


def test_encoder_study_toy_budget_end_to_end(mini_root, tmp_path):
    from headless.lab.reproduce import run_study

    config = _study("encoder", mini_root, "preset=tiny", "seq_len=64", "glue_tasks=[rte,stsb]", "glue_lrs=[1e-4,3e-4]",
                    "glue_epochs=1", "seeds=[0,1]", "fractions=[1.0]", "books=false",
                    "pretrain=[" + ",".join(TINY_MODEL) + "]")
    result = run_study(config, work_dir=tmp_path / "work", output_dir=tmp_path / "out")
    final = json.loads(result["pieces"][0].read_text())["points"][-1]["variants"]["headless"]["scores"]
    assert len(final["glue_avg"]) == 2 and len(final["rte"]) == 2  # two fine-tuning seeds
    assert final["rte_lr"][0] in (1e-4, 3e-4)
    assert result["report"]["headline"]["glue_avg"]["vanilla"]["n"] == 2
    for path in result["pieces"]:  # each twin's own pretraining curves travel in its piece
        t = json.loads(path.read_text())["pretrain"]
        train = t["curves"]["train"]
        assert train["step"][-1] == t["steps"] and len(train["loss"]) == len(train["accuracy"]) == len(train["step"])
        assert t["curves"]["val"]["step"][-1] == t["steps"]
    assert (tmp_path / "out" / "encoder-pretraining.png").stat().st_size > 1000
    assert "encoder-pretraining.png" in (tmp_path / "out" / "encoder-report.md").read_text()
    # the dev predictions of both kept seeds travel, and the headline pairs the twins on them
    preds = json.loads(result["pieces"][0].read_text())["points"][-1]["variants"]["headless"]["predictions"]
    assert set(preds) == {"rte/dev", "stsb/dev"} and preds["stsb/dev"]["metric"] == "correlation"
    assert len(preds["rte/dev"]["seeds"]) == 2 and len(preds["rte/dev"]["seeds"][0]) == len(preds["rte/dev"]["labels"])
    paired = result["report"]["headline"]["glue_avg"]["paired_bootstrap"]
    assert paired["low"] <= paired["high"] and paired["seeds"] == [2, 2]
    assert "paired bootstrap" in (tmp_path / "out" / "encoder-report.md").read_text()


def test_multilingual_study_trains_its_tokenizer_and_scores_xnli(mini_root, tmp_path, capsys):
    from headless.lab.reproduce import load_study, run_study

    config = _study("multilingual", mini_root, "seq_len=64", "tokenizer_vocab_size=600", "fractions=[1.0]",
                    "xnli_epochs=1", "seeds=[0]", _pretrain())
    result = run_study(config, flavours=("headless",), work_dir=tmp_path / "work", output_dir=tmp_path / "out")
    assert result["report"] is None  # one twin: a piece, no report
    assert "XNLI: " in capsys.readouterr().out  # where the evaluation's time went (fine_tuning_time)
    piece = json.loads(result["pieces"][0].read_text())
    scores = piece["points"][-1]["variants"]["headless"]["scores"]
    # de (Wikipedia) and fr (the books) are covered by the pretraining mix, ar is not: reported apart
    for key in ("xnli_transfer_avg", "xnli_target_avg", "xnli_transfer_covered", "xnli_transfer_other",
                "xnli_target_de"):
        assert key in scores
    preds = piece["points"][-1]["variants"]["headless"]["predictions"]
    assert {"transfer/en", "transfer/de", "transfer/fr", "transfer/ar", "target/de"} <= set(preds)
    assert preds["target/fr"]["labels"] == preds["transfer/fr"]["labels"] and len(preds["target/fr"]["seeds"]) == 1
    assert any("de.jsonl.xz" in name for name in piece["data"]["inputs"])
    assert "gutenberg_fr_es.jsonl.xz" in piece["data"]["inputs"]
    assert config.tokenizer_vocab_size == 600 and load_study("multilingual").tokenizer_vocab_size == 119547
    tokenizers = list((tmp_path / "work" / "multilingual" / "tokenizers").iterdir())
    assert len(tokenizers) == 1 and (tokenizers[0] / "tokenizer.json").is_file()


# ------------------------------------------------------------------------------------------------
# report: synthetic pieces (no training)


def _piece(flavour: str, seed: int = 0, *, study: str = "decoder", fingerprint: str = "abc", scores=None) -> dict:
    from headless.lab.reproduce.piece import PIECE_FORMAT

    variants = ("hlm_ft", "headless_raw") if flavour == "headless" else ("vanilla",)
    speed = 2.0 if flavour == "headless" else 1.0
    points = []
    for i, fraction in enumerate((0.25, 0.5, 1.0)):
        base = (scores or {}).get(flavour, [1.0, 2.0, 3.0])[i] + seed * 0.1
        points.append({"fraction": fraction, "step": int(100 * fraction), "tokens": int(1000 * fraction * speed),
                       "epochs": fraction, "pretrain_gpu_s": 100 * fraction, "wall_s": 100 * fraction,
                       "variants": {v: {"gpu_s": 100 * fraction + (5 if v == "hlm_ft" else 0),
                                        "scores": {"lambada_acc": [base], "heldout_ce": [5 - base]}}
                                    for v in variants}})
    return {"format": PIECE_FORMAT, "study": study, "flavour": flavour, "seed": seed, "compare": "time",
            "budget_s": 100.0, "steps_requested": None,
            "data": {"fingerprint": fingerprint, "train_tokens": 1000, "inputs": ["a.jsonl"]},
            "eval_fingerprint": "e", "pretrain": {"steps": 100, "tokens": int(1000 * speed), "tokens_per_s": 10 * speed,
                                                  "epochs": speed, "gpu_s": 100.0, "parameters": 1e6},
            "points": points, "environment": {"device": "NVIDIA H100 80GB HBM3"}}  # a GPU piece


def _write(tmp_path: Path, name: str, piece: dict) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(piece))
    return path


def _xnli_piece(flavour: str, right: list[float]) -> dict:
    """A multilingual piece whose translate-train-all run (one fine-tuning seed) gets the first
    `right[i]` of 100 examples right in language i of en, de (covered) and ar (not)."""
    piece = _piece(flavour, study="multilingual")
    y = [1] * 100
    preds = {f"all/{lang}": {"group": f"all/{lang}", "metric": "accuracy", "labels": y,
                             "seeds": [[1] * int(r) + [0] * (100 - int(r))]}
             for lang, r in zip(("en", "de", "ar"), right)}
    scores = {"xnli_all_covered": [sum(right[:2]) / 2], "xnli_all_avg": [sum(right) / 3]}
    for point in piece["points"]:
        point["variants"] = {flavour: {"gpu_s": point["pretrain_gpu_s"], "scores": scores}}
    piece["points"][-1]["variants"][flavour]["predictions"] = preds
    piece["study_config"] = {"languages": ["de"]}
    return piece


def test_report_bootstraps_translate_train_all_over_the_covered_languages(tmp_path):
    from headless.lab.reproduce.report import write_report

    paths = [_write(tmp_path, "h.json", _xnli_piece("headless", [60, 60, 90])),
             _write(tmp_path, "v.json", _xnli_piece("vanilla", [50, 50, 50]))]
    headline = write_report(paths, tmp_path / "out", bootstrap=200)["headline"]
    covered, every = headline["xnli_all_covered"], headline["xnli_all_avg"]
    assert covered["paired_bootstrap"]["examples"] == 200 and every["paired_bootstrap"]["examples"] == 300
    assert 0 < covered["paired_bootstrap"]["low"] <= 10 <= covered["paired_bootstrap"]["high"] < 20
    assert every["paired_bootstrap"]["low"] > covered["paired_bootstrap"]["low"]  # ar's +40 counts only here


def test_report_is_order_independent_and_draws_curves(tmp_path):
    from headless.lab.reproduce.report import write_report

    paths = [_write(tmp_path, f"{f}{s}.json", _piece(f, s)) for f in ("headless", "vanilla") for s in (0, 1)]
    write_report(paths, tmp_path / "a")
    write_report(list(reversed(paths)), tmp_path / "b")
    assert (tmp_path / "a" / "decoder-report.md").read_text() == (tmp_path / "b" / "decoder-report.md").read_text()
    report = json.loads((tmp_path / "a" / "decoder-report.json").read_text())
    final = report["headline"]["lambada_acc"]
    assert final["headless"]["n"] == 2 and final["headless"]["mean"] == pytest.approx(3.05)
    assert final["headless"]["std"] == pytest.approx(0.0707, abs=1e-3)
    for metric in ("lambada_acc", "heldout_ce"):
        assert (tmp_path / "a" / f"decoder-{metric}.png").stat().st_size > 1000
    assert not (tmp_path / "a" / "decoder-pretraining.png").exists()  # pieces without curves: no plot
    assert "No paired bootstrap: the pieces carry no evaluation predictions" in \
        (tmp_path / "a" / "decoder-report.md").read_text()  # says why there is no interval


def test_pretraining_curves_thin_evenly_and_older_pieces_get_them_from_their_run(tmp_path):
    import subprocess
    import sys

    from headless.lab.reproduce.piece import pretraining_curves

    records = [{"split": "train", "step": s, "loss": 10 - s / 100, "accuracy": s / 1000} for s in range(1, 1001)]
    records += [{"split": "train", "step": 500, "loss": -1.0, "accuracy": 0.9}]  # a resumed run logs it again
    records += [{"split": "val", "step": s, "loss": 9.0, "accuracy": 0.5} for s in (250, 1000)]
    records += [{"split": "train", "step": 3, "tokens_per_s": 1.0}]  # not a loss record
    curves = pretraining_curves(records, max_points=50)
    train = curves["train"]
    assert len(train["step"]) == 50 and train["step"][0] == 1 and train["step"][-1] == 1000
    assert train["step"] == sorted(set(train["step"]))
    gaps = {b - a for a, b in zip(train["step"], train["step"][1:])}
    assert max(gaps) - min(gaps) <= 1  # evenly spread
    assert curves["val"] == {"step": [250, 1000], "loss": [9.0, 9.0], "accuracy": [0.5, 0.5]}
    assert pretraining_curves(records, max_points=2000)["train"]["loss"][499] == -1.0  # the last record of a step

    piece = _piece("headless", study="encoder")
    piece["train_config"] = {"log_every": 10}
    path = _write(tmp_path, "old.json", piece)
    metrics = tmp_path / "metrics.jsonl"
    script = Path(__file__).parent.parent / "scripts" / "add_pretraining_curves.py"
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records if r["step"] <= 80))
    bad = subprocess.run([sys.executable, str(script), str(path), str(metrics)], capture_output=True, text=True)
    assert bad.returncode != 0 and "not this piece's run" in bad.stderr
    assert "curves" not in json.loads(path.read_text())["pretrain"]  # refused: the piece is untouched
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records if r["step"] <= 100))
    subprocess.run([sys.executable, str(script), str(path), str(metrics)], check=True, capture_output=True)
    t = json.loads(path.read_text())["pretrain"]
    assert t["curves"]["train"]["step"][-1] == 100 and "add_pretraining_curves" in t["curves_source"]
    assert {k: v for k, v in t.items() if not k.startswith("curves")} == piece["pretrain"]


def test_report_refuses_mixed_studies_data_and_duplicates(tmp_path):
    from headless.lab.reproduce.report import write_report

    a = _write(tmp_path, "a.json", _piece("headless"))
    with pytest.raises(HeadlessError, match="different studies"):
        write_report([a, _write(tmp_path, "b.json", _piece("vanilla", study="encoder"))], tmp_path / "r")
    with pytest.raises(HeadlessError, match="different pretraining data"):
        write_report([a, _write(tmp_path, "c.json", _piece("vanilla", fingerprint="other"))], tmp_path / "r")
    with pytest.raises(HeadlessError, match="two pieces for headless seed 0"):
        write_report([a, _write(tmp_path, "d.json", _piece("headless"))], tmp_path / "r")
    (tmp_path / "e.json").write_text("{}")
    with pytest.raises(HeadlessError, match="not a `headless reproduce` piece"):
        write_report([tmp_path / "e.json"], tmp_path / "r")
    assert not (tmp_path / "r").exists()  # nothing half-written


def test_glue_averages_with_and_without_rte_seed_by_seed(tmp_path):
    """`glue_avg_no_rte` is the paper's Tab. 1 average; an encoder piece written before it existed
    gets it when the report loads the piece."""
    from headless.lab.reproduce.evaluate import with_glue_averages
    from headless.lab.reproduce.report import load_piece

    scores = {"cola": [10.0, 20.0], "sst2": [80.0, 90.0], "rte": [50.0, 60.0], "rte_lr": [1e-4]}
    with_glue_averages(scores, ["cola", "sst2", "rte"])
    assert scores["glue_avg"] == [pytest.approx(140 / 3), pytest.approx(170 / 3)]
    assert scores["glue_avg_no_rte"] == [45.0, 55.0]
    assert "glue_avg_no_rte" not in with_glue_averages({"sst2": [1.0], "rte": [2.0]}, ["sst2", "rte"])  # one task

    piece = _piece("vanilla", study="encoder")
    for point in piece["points"]:
        point["variants"]["vanilla"]["scores"] = {"cola": [10.0], "sst2": [80.0], "rte": [50.0],
                                                  "glue_avg": [140 / 3], "sst2_lr": [1e-4]}
    loaded = load_piece(_write(tmp_path, "old.json", piece))
    assert loaded["points"][0]["variants"]["vanilla"]["scores"]["glue_avg_no_rte"] == [45.0]


def test_report_pairs_the_twins_on_their_predictions_and_pools_pretraining_seeds(tmp_path, capsys):
    from headless.cli import main

    rng = __import__("numpy").random.default_rng(0)
    labels = rng.integers(0, 2, 200).tolist()
    paths = []
    for flavour, hit in (("headless", 0.8), ("vanilla", 0.6)):
        for seed in (0, 1):
            piece = _piece(flavour, seed, study="encoder")
            for point in piece["points"]:
                preds = [[y if rng.random() < hit else 1 - y for y in labels] for _ in range(2)]
                acc = [100 * sum(p == y for p, y in zip(ps, labels)) / 200 for ps in preds]
                point["variants"] = {flavour: {"gpu_s": point["pretrain_gpu_s"], "scores": {
                    "rte": acc, "sst2": acc, "glue_avg": acc, "glue_avg_no_rte": acc}, "predictions": {
                    task: {"group": task, "metric": "accuracy", "labels": labels, "seeds": preds}
                    for task in ("rte", "sst2")}}}
            paths.append(_write(tmp_path, f"{flavour}{seed}.json", piece))
    assert main(["report", *map(str, paths), "--output", str(tmp_path / "out"), "--bootstrap", "300"]) == 0
    printed = capsys.readouterr().out
    assert "paired bootstrap 95 % [+" in printed
    report = json.loads((tmp_path / "out" / "encoder-report.json").read_text())
    paired = report["headline"]["glue_avg"]["paired_bootstrap"]
    assert 10 < paired["low"] < paired["high"] < 30 and paired["ahead"] == 1
    assert paired["seeds"] == [4, 4]  # 2 pretraining x 2 fine-tuning seeds
    assert paired["replicates"] == 300 and paired["examples"] == 400
    assert "paired_bootstrap" not in report["headline"]["glue_avg_no_rte"]  # one task left: not an average
    assert "The interval excludes 0." in (tmp_path / "out" / "encoder-report.md").read_text()
    from headless.lab.reproduce.report import within_noise

    entry = dict(report["headline"]["glue_avg"], delta_se=100.0)  # the seeds alone would call it noise
    assert not within_noise(entry)  # the paired interval, examples and seeds, decides
    assert within_noise(dict(entry, paired_bootstrap=dict(paired, low=-1.0)))
    assert main(["report", *map(str, paths), "--output", str(tmp_path / "none"), "--bootstrap", "0"]) == 0
    report = json.loads((tmp_path / "none" / "encoder-report.json").read_text())
    assert "paired_bootstrap" not in report["headline"]["glue_avg"]
    assert "No paired bootstrap" not in (tmp_path / "none" / "encoder-report.md").read_text()  # none was asked
    assert main(["report", *map(str, paths), "--output", str(tmp_path / "bad"), "--bootstrap", "-1"]) != 0


def test_crossing_interpolates_in_gpu_time():
    from headless.lab.reproduce.report import crossing

    def curve(points):
        return [{"gpu_s": t, "scores": {"m": {"mean": s}}} for t, s in points]

    vanilla = curve([(50, 1.0), (100, 2.0)])
    assert crossing(curve([(50, 1.0), (100, 3.0)]), vanilla, "m", True) == pytest.approx(
        {"status": "reached", "fraction": 0.75, "gpu_s": 75.0, "vanilla_final": 2.0})
    assert crossing(curve([(25, 2.5), (100, 3.0)]), vanilla, "m", True)["status"] == "at or before the first checkpoint"
    assert crossing(curve([(50, 0.5), (100, 1.5)]), vanilla, "m", True)["status"] == "not reached"
    assert crossing(curve([(50, 3.0), (100, 1.0)]), vanilla, "m", False)["fraction"] == pytest.approx(0.75)


def test_a_first_checkpoint_after_vanillas_end_is_not_read_as_a_bound():
    """A CPU rehearsal's HLM+FT made headless's first point come at 1,992 % of vanilla's time: "≤ 1992 %"
    read as a result; the text says what is and is not known."""
    from headless.lab.reproduce.report import crossing, crossing_text

    def curve(points):
        return [{"gpu_s": t, "scores": {"m": {"mean": s}}} for t, s in points]

    vanilla = curve([(5, 1.0), (10, 2.0)])
    early = crossing(curve([(5, 2.5), (10, 3.0)]), vanilla, "m", True)
    assert crossing_text(early) == "≤ 50% of vanilla's GPU time (already at the first checkpoint)"
    late = crossing(curve([(90, 2.5), (179, 3.0)]), vanilla, "m", True)
    assert crossing_text(late, unit="CPU s") == (
        "by its first checkpoint, at 900% of vanilla's CPU time; whether before vanilla's end is not measured")


def test_cli_refuses_bad_study_settings(capsys):
    from headless.cli import main

    assert main(["reproduce", "decoder", "fractions=[0.5]", "--show-config"]) == 2
    assert "fractions must include 1.0" in capsys.readouterr().err
    assert main(["reproduce", "encoder", "budget_z=3", "--show-config"]) == 2
    assert "did you mean budget_s" in capsys.readouterr().err


def test_headline_interpolates_headless_at_vanillas_gpu_time(tmp_path):
    """HLM+FT's fine-tuning puts headless's last point after vanilla's: the headline also reads the
    headless curve at vanilla's final GPU time (interpolated, never extrapolated)."""
    from headless.lab.reproduce.report import build_report, equal_time_text, load_piece, score_at

    paths = [_write(tmp_path, f"{f}.json", _piece(f)) for f in ("headless", "vanilla")]
    entry = build_report([load_piece(p) for p in paths])["headline"]["lambada_acc"]
    # headless (hlm_ft) points at 30, 55, 105 GPU s with scores 1, 2, 3; vanilla ends at 100 s
    assert entry["headless_at_vanilla_gpu_s"] == pytest.approx(2 + 45 / 50)
    assert "vanilla_at_headless_gpu_s" not in entry
    assert equal_time_text(entry) == f"headless {2 + 45 / 50:.2f} at 100 s ({2 + 45 / 50 - 3:+.2f})"
    assert score_at([{"gpu_s": 10, "scores": {"m": {"mean": 1}}}], "m", 10) is None


def test_headline_reads_vanilla_at_headless_gpu_time_when_vanilla_ran_longer(tmp_path):
    """A plan that gave vanilla more steps (H200: 205 s against headless's 187 s): the equal-time
    reading is then vanilla's curve at headless's last GPU second, and the report says so."""
    from headless.lab.reproduce.report import build_report, equal_time_text, load_piece, report_markdown

    pieces = [_piece(f, scores={"headless": [1.0, 2.0, 2.5], "vanilla": [1.0, 2.0, 4.0]})
              for f in ("headless", "vanilla")]
    for point in pieces[1]["points"]:  # vanilla's checkpoints 10 % later in GPU time
        point["variants"]["vanilla"]["gpu_s"] *= 1.1
    pieces[1]["pretrain"]["gpu_s"] = 110.0
    paths = [_write(tmp_path, f"{p['flavour']}.json", p) for p in pieces]
    report = build_report([load_piece(p) for p in paths])
    entry = report["headline"]["heldout_ce"]  # lower is better; hlm_ft ends at 105 s, vanilla at 110 s
    at = 3.0 + (1.0 - 3.0) * (105 - 55) / (110 - 55)  # vanilla's heldout_ce 3 → 1 between 55 and 110 s
    assert entry["vanilla_at_headless_gpu_s"] == pytest.approx(at)
    assert entry["delta_at_headless_gpu_s"] == pytest.approx(2.5 - at)
    assert "headless_at_vanilla_gpu_s" not in entry
    text = report_markdown(report)
    assert f"vanilla {at:.2f} at 105 s ({2.5 - at:+.2f})" == equal_time_text(entry) and equal_time_text(entry) in text
    assert "reads the longer twin's curve at the other's last GPU second" in text


def test_piece_never_deletes_a_scratch_folder_it_did_not_make(tmp_path):
    """A piece clears WORK/STUDY/eval-step-N left by an interrupted piece, but only if a piece made
    it (its marker): a user's folder of that name is refused with one line and left alone."""
    from headless.files import mark
    from headless.lab.reproduce.config import StudyConfig
    from headless.lab.reproduce.piece import _evaluate_point

    foreign = tmp_path / "eval-step-7"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(HeadlessError, match="was not made by `headless reproduce`"):
        _evaluate_point(StudyConfig(), "vanilla", tmp_path / "run", tmp_path, tmp_path, 7, True, 1.0)
    assert (foreign / "notes.txt").read_text() == "mine"
    mark(foreign, "scratch")  # a piece's own leftover: cleared, then the missing checkpoint is reported
    with pytest.raises(HeadlessError, match="curve checkpoint"):
        _evaluate_point(StudyConfig(), "vanilla", tmp_path / "run", tmp_path, tmp_path, 7, True, 1.0)
    assert not foreign.exists()


def test_piece_run_again_reuses_its_pretraining_and_finished_evaluations(mini_root, tmp_path, monkeypatch, capsys):
    """A piece stopped by a job's time limit during evaluation, run again, evaluates only what it
    had not finished; here every point had finished, so nothing is evaluated twice."""
    from headless.lab.reproduce import piece as piece_module
    from headless.lab.reproduce import run_piece

    config = _study("encoder", mini_root, "preset=tiny", "seq_len=64", "glue_tasks=[rte]", "glue_lrs=[1e-4]",
                    "glue_epochs=1", "seeds=[0]", "books=false", "pretrain=[" + ",".join(TINY_MODEL) + "]")
    first = run_piece(config, "headless", work_dir=tmp_path / "work", output=tmp_path / "a.json")
    assert len(first["points"]) == 2

    def no_second_evaluation(*args, **kwargs):
        raise AssertionError("a finished point was evaluated again")

    monkeypatch.setattr(piece_module, "_evaluate_point", no_second_evaluation)
    capsys.readouterr()
    again = run_piece(config, "headless", work_dir=tmp_path / "work", output=tmp_path / "b.json")
    out = capsys.readouterr().out
    assert "reusing the finished pretraining run" in out and out.count("reusing the evaluation of step") == 2
    assert again["points"] == first["points"]
    # a different evaluation setting is not served from that cache
    other = _study("encoder", mini_root, "preset=tiny", "seq_len=64", "glue_tasks=[rte]", "glue_lrs=[3e-4]",
                   "glue_epochs=1", "seeds=[0]", "books=false", "pretrain=[" + ",".join(TINY_MODEL) + "]")
    with pytest.raises(AssertionError, match="evaluated again"):
        run_piece(other, "headless", work_dir=tmp_path / "work", output=tmp_path / "c.json")


def test_one_twin_settings_reach_that_twin_only_and_the_report_names_them(tmp_path):
    """`vanilla_pretrain=[objective.loss_implementation=hf]` is the paper's baseline (HF's head at
    every position); it must not touch the headless twin, and the report must say it was used."""
    from headless.lab.reproduce import load_study
    from headless.lab.reproduce.piece import train_config
    from headless.lab.reproduce.report import report_markdown, build_report, load_piece

    config = load_study("encoder", overrides=["vanilla_pretrain=[objective.loss_implementation=hf]",
                                              "headless_pretrain=[objective.temperature=0.5]"])
    assert config.pretrain[:2] == ["batch_size=256", "optim.lr=5e-4"]  # the study's defaults are kept
    vanilla = train_config(config, "vanilla", tmp_path / "data", tmp_path / "run")
    headless = train_config(config, "headless", tmp_path / "data", tmp_path / "run")
    assert vanilla.objective.loss_implementation == "hf" and vanilla.objective.temperature == 1.0
    assert headless.objective.loss_implementation == "auto" and headless.objective.temperature == 0.5

    pieces = [_piece("headless"), _piece("vanilla")]
    pieces[1]["study_config"] = {"vanilla_pretrain": ["objective.loss_implementation=hf"]}
    loaded = [load_piece(_write(tmp_path, f"{i}.json", p)) for i, p in enumerate(pieces)]
    assert "vanilla seed 0: `objective.loss_implementation=hf`" in report_markdown(build_report(loaded))


def test_report_and_its_summary_row_name_the_vocabulary(tmp_path):
    """Two decoder campaigns at different vocabularies must not read as one setting in the results
    tables: the model's size, else (a model sized from its tokenizer) the tokenizer's."""
    from headless.lab.reproduce.report import build_report, load_piece, report_markdown, summary_row

    pieces = [_piece("headless"), _piece("vanilla")]
    for p in pieces:
        p["train_config"] = {"model": {"vocab_size": 128256}, "data": {"tokenizer_vocab_size": None}}
    report = build_report([load_piece(_write(tmp_path, f"a{i}.json", p)) for i, p in enumerate(pieces)])
    report["_campaign"] = "c"
    assert report["vocab_size"] == 128256 and "vocabulary 128,256, fingerprint" in report_markdown(report)
    assert summary_row(report).startswith("| decoder (V = 128,256) | c |")
    for p in pieces:
        p["train_config"] = {"model": {"vocab_size": None}, "data": {"tokenizer_vocab_size": 119547}}
        p["study_config"] = {"vanilla_pretrain": ["objective.loss_implementation=hf"]}
    report = build_report([load_piece(_write(tmp_path, f"b{i}.json", p)) for i, p in enumerate(pieces)])
    report["_campaign"] = "c"
    assert summary_row(report).startswith("| decoder (V = 119,547; vanilla: `objective.loss_implementation=hf`) |")
    del report["vocab_size"]  # a report written before the field: its label as it was
    assert summary_row(report).startswith("| decoder (vanilla: `objective.loss_implementation=hf`) |")


def test_report_says_when_the_twins_measured_times_differ(tmp_path):
    from headless.lab.reproduce.report import build_report, load_piece, report_markdown

    pieces = [_piece("headless"), _piece("vanilla")]
    same = report_markdown(build_report([load_piece(_write(tmp_path, f"a{i}.json", p)) for i, p in enumerate(pieces)]))
    assert "was not equal" not in same
    pieces[1]["pretrain"]["gpu_s"] = 51.0  # vanilla's calibration was fooled: half the budget
    text = report_markdown(build_report([load_piece(_write(tmp_path, f"b{i}.json", p)) for i, p in enumerate(pieces)]))
    assert "was not equal**: 100 s of steps for headless against 51 s for vanilla" in text
    for vanilla_s, flagged in ((93.0, True), (97.0, False)):  # more than the trainer's 5 % tolerance apart
        pieces[1]["pretrain"]["gpu_s"] = vanilla_s
        text = report_markdown(build_report([load_piece(_write(tmp_path, f"c{vanilla_s}-{i}.json", p))
                                             for i, p in enumerate(pieces)]))
        assert ("was not equal" in text) == flagged, vanilla_s


def test_report_gives_the_difference_with_its_standard_error_and_marks_noise(tmp_path):
    """Three fine-tuning seeds per twin: the headline's difference carries the standard error of a
    difference of means, and a difference under two of them says it is within noise."""
    from headless.lab.reproduce.report import build_report, load_piece, report_markdown

    def headline(headless_final, vanilla_final, name):
        pieces = [_piece("headless"), _piece("vanilla")]
        for piece, values in zip(pieces, (headless_final, vanilla_final)):
            for variant in piece["points"][-1]["variants"].values():
                variant["scores"]["lambada_acc"] = list(values)
        report = build_report([load_piece(_write(tmp_path, f"{name}{i}.json", p)) for i, p in enumerate(pieces)])
        return report["headline"]["lambada_acc"], report_markdown(report)

    entry, text = headline([4.0, 5.0, 6.0], [4.5, 5.5, 6.5], "close")  # std 1 each: se = sqrt(2/3)
    assert entry["delta"] == pytest.approx(-0.5) and entry["delta_se"] == pytest.approx((2 / 3) ** 0.5)
    assert "-0.50 ± 0.82 (within noise)" in text and "lower bound" in text
    assert "not reached" in text  # headless's final 5.0 stays under vanilla's 5.5
    entry, text = headline([5.5, 6.5, 7.5], [4.5, 5.5, 6.5], "noisy-win")  # +1.0 ± 0.82: a crossing, in noise
    assert entry["crossing"]["status"] == "reached"
    assert "of vanilla's GPU time; the final scores are within noise |" in text
    entry, text = headline([9.0, 10.0, 11.0], [4.5, 5.5, 6.5], "far")
    assert "+4.50 ± 0.82 |" in text  # not marked
    entry, text = headline([5.0], [4.0], "one")  # one seed: no error to give
    assert entry["delta_se"] is None and "| +1.00 |" in text and "lower bound" not in text


def test_report_says_when_the_twins_pretrained_on_different_gpus(tmp_path):
    from headless.lab.reproduce.report import build_report, load_piece, report_markdown

    def text(uuids, name):
        pieces = [_piece("headless"), _piece("vanilla")]
        for piece, uuid in zip(pieces, uuids):
            piece["environment"]["device_uuid"] = uuid
        return report_markdown(build_report([load_piece(_write(tmp_path, f"{name}{i}.json", p))
                                             for i, p in enumerate(pieces)]))

    assert "different GPUs" in text(["GPU-a", "GPU-b"], "two")
    assert "different GPUs" not in text(["GPU-a", "GPU-a"], "one")
    assert "different GPUs" not in text([None, "GPU-b"], "unknown")  # older pieces did not record it


def test_report_says_when_the_twins_hold_different_pretraining_seeds(tmp_path):
    """Headless seeds 0 and 1 against vanilla seed 0 (a vanilla still to run): the report says which
    seeds each twin holds, and no longer calls it one pretraining seed per twin."""
    from headless.lab.reproduce.report import build_report, load_piece, report_markdown, settle_text

    def text(pieces, name):
        return report_markdown(build_report([load_piece(_write(tmp_path, f"{name}{i}.json", p))
                                             for i, p in enumerate(pieces)], bootstrap=0))

    uneven = text([_piece("headless", 0), _piece("headless", 1), _piece("vanilla", 0)], "uneven")
    assert ("**The twins hold different pretraining seeds**: headless seeds 0, 1; vanilla seed 0. " in uneven
            and "uses those both have (seed 0)" in uneven)
    assert "different pretraining seeds" not in text([_piece("headless", 0), _piece("vanilla", 0)], "even")
    assert "uses none: no seed has both twins." in text([_piece("headless", 1), _piece("vanilla", 0)], "apart")
    entry = {"label": "LAMBADA", "settle": {"pretraining_seeds": 1, "excludes_0": True}}
    assert "one pretraining seed per twin, so" in settle_text(entry)
    assert "one pretraining seed both twins have, so" in settle_text(entry, seeds_matched=False)


def _gpu_report(tmp_path: Path, name: str, devices: dict[tuple[str, int], tuple[str, str]]):
    """A report over pieces (flavour, seed) -> (GPU model, device UUID), its report.md and summary row."""
    from headless.lab.reproduce.report import load_report, summary_row, write_report

    paths = []
    for (flavour, seed), (model, uuid) in devices.items():
        piece = _piece(flavour, seed)
        piece["environment"] = {"device": model, "device_uuid": uuid}
        paths.append(_write(tmp_path, f"{name}-{flavour}{seed}.json", piece))
    out = tmp_path / name
    write_report(paths, out, bootstrap=0)
    report = load_report(out / "decoder-report.json")
    return report, (out / "decoder-report.md").read_text(), summary_row(report)


def test_report_is_quiet_when_each_seeds_twins_share_a_gpu_model_across_machines(tmp_path):
    """The unit run is both twins of one seed on one machine; seeds may land on different models.
    That is fair: one neutral sentence, no warning, and no "different GPUs" for machines that differ
    only across seeds."""
    h100, h200 = "NVIDIA H100 80GB HBM3", "NVIDIA H200"
    report, text, row = _gpu_report(tmp_path, "fair", {("headless", 0): (h200, "GPU-a"), ("vanilla", 0): (h200, "GPU-a"),
                                                       ("headless", 1): (h100, "GPU-b"), ("vanilla", 1): (h100, "GPU-b")})
    assert report["unpaired_gpu_seeds"] == []
    assert report["gpu_pairs"][1] == {"seed": 1, "headless": h100, "vanilla": h100, "uuids": ["GPU-b", "GPU-b"]}
    assert f"seed 0 on {h200}; seed 1 on {h100}. The spread over pretraining seeds includes the machine" in text
    assert "not equal work" not in text and "different GPUs" not in text
    assert row.endswith("| current |")


def test_report_warns_when_one_seeds_twins_ran_on_different_gpu_models(tmp_path):
    """Seed 1's headless on an H200 and its vanilla on an H100: equal GPU time is then not equal work.
    A warning naming the seed, `unpaired_gpu_seeds` in the JSON and the summary's status; the merge
    itself still succeeds (committed campaigns must still merge)."""
    h100, h200 = "NVIDIA H100 80GB HBM3", "NVIDIA H200"
    report, text, row = _gpu_report(tmp_path, "mixed", {("headless", 0): (h100, "GPU-a"), ("vanilla", 0): (h100, "GPU-a"),
                                                        ("headless", 1): (h200, "GPU-b"), ("vanilla", 1): (h100, "GPU-c")})
    assert report["unpaired_gpu_seeds"] == [1]
    assert (f"**Equal GPU time is not equal work across GPU models**: seed 1 headless on {h200}, vanilla on {h100}."
            in text)
    assert "seed 0 headless" not in text and "includes the machine" not in text
    assert row.endswith("| current; seed 1: twins on different GPU models |")


@pytest.mark.slow
@pytest.mark.parametrize("study", ["encoder", "decoder"])
def test_a_piece_under_torchrun_pretrains_on_every_rank_and_evaluates_on_rank_0(study, mini_root, tmp_path):
    """`torchrun --nproc_per_node 2 -m headless reproduce STUDY --flavour headless ...` (gloo): one
    piece, its tokens and GPU seconds counting both processes; rank 0's HLM+FT (the trainer, alone)
    must not try to join the finished job; `both` flavours are refused."""
    import os
    import subprocess
    import sys

    from headless.train.distributed import free_port

    def launch(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), "-m", "headless", "reproduce", study,
               f"data_root={mini_root}", "budget_s=1.5", "fractions=[1.0]", "progress=false", "device=cpu",
               "seq_len=64", "books=false", "pretrain=[" + ",".join(TINY_MODEL) + "]",
               "--work-dir", str(tmp_path / "work"), "--output", str(tmp_path / "out"), *args, *own]
        return subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                              timeout=600)

    own = (["preset=tiny", "glue_tasks=[rte]", "glue_lrs=[1e-4]", "glue_epochs=1", "seeds=[0]"] if study == "encoder"
           else ["preset=tiny-gpt", "finetune_tokens=1024", "heldout_sequences=4", "zeroshot_tasks=[]",
                 "lambada_limit=8"])
    done = launch("--flavour", "headless")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert done.stdout.count("piece written:") == 1  # rank 0 only
    piece = json.loads((tmp_path / "out" / f"{study}-headless-seed0.json").read_text())
    pretrain = piece["pretrain"]
    train = piece["train_config"]
    assert pretrain["world_size"] == 2 and pretrain["tokens_per_step"] == 2 * train["batch_size"] * train["grad_accum"] * 64
    assert pretrain["gpu_s"] == pytest.approx(2 * pretrain["steps"] * pretrain["measured_s_per_step"])
    final = piece["points"][-1]["variants"]
    assert final["headless"]["scores"]["rte"] if study == "encoder" else final["hlm_ft"]["scores"]["lambada_acc"]

    refused = launch("--flavour", "both")
    assert refused.returncode != 0 and "under torchrun a launch runs one piece" in refused.stdout + refused.stderr


def test_the_same_files_at_another_path_reuse_the_prepared_data(mini_root, tmp_path):
    """The data folder is keyed by the files' contents: copied elsewhere (new paths, new mtimes),
    the study reuses what it prepared instead of refusing a folder "prepared with different settings"."""
    from headless.data.prepare import MANIFEST
    from headless.lab.reproduce.data import prepare_study_data

    first = prepare_study_data(_study("encoder", mini_root, "books=false"), tmp_path / "work", 64)
    stamp = (first.dataset / MANIFEST).stat().st_mtime_ns
    moved = tmp_path / "moved"
    shutil.copytree(mini_root, moved)
    again = prepare_study_data(_study("encoder", moved, "books=false"), tmp_path / "work", 64)
    assert again.dataset == first.dataset and again.fingerprint == first.fingerprint
    assert (first.dataset / MANIFEST).stat().st_mtime_ns == stamp  # not prepared a second time
    assert again.train_tokens == first.train_tokens


def test_the_glue_sweep_never_chooses_a_rate_that_diverged(tmp_path, monkeypatch):
    """A rate whose fine-tuning diverged on a task is disqualified for that task only (the piece
    names it under `TASK_diverged_lrs`); a task that diverged at every rate is one clear error."""
    from headless.lab.reproduce import evaluate, load_study

    calls = []

    def run_glue(model_dir, *, tasks, lr, seeds, tolerate_divergence=False, **_):
        calls.append((lr, tuple(tasks), tuple(seeds), tolerate_divergence))
        bad = {t for t in tasks if t in diverging and lr in diverging[t]}
        result = {"tasks": {t: {"main": {"values": [0.5 + lr * 1000] * len(seeds)},
                                "fp32_retries": list(seeds) if (t, lr) == ("stsb", 1e-4) else []}
                            for t in tasks if t not in bad},
                  "diverged": {t: f"{t}: the loss became non-finite in epoch 3" for t in bad}}
        return result

    import headless.eval.glue as glue

    monkeypatch.setattr(glue, "run_glue", run_glue)
    monkeypatch.setattr(glue, "glue_predictions", lambda result, keys: {})
    config = load_study("encoder", overrides=[f"data_root={tmp_path}", "glue_tasks=[mrpc,stsb]",
                                              "glue_lrs=[1e-4,3e-5]", "device=cpu"])
    diverging = {"mrpc": {1e-4}}  # the higher rate scores better wherever it converges
    scores, _ = evaluate.glue_scores(tmp_path, config, [0, 1, 2])
    assert scores["mrpc_lr"] == [3e-5] and scores["stsb_lr"] == [1e-4]
    assert scores["mrpc_diverged_lrs"] == [1e-4] and "stsb_diverged_lrs" not in scores
    assert scores["stsb_fp32_retries"] == [3.0] and "mrpc_fp32_retries" not in scores  # kept runs only
    assert len(scores["mrpc"]) == len(scores["glue_avg"]) == 3
    assert all(tolerate for _, _, seeds, tolerate in calls if seeds == (0,))  # the sweep tolerates
    assert not any(tolerate for _, _, seeds, tolerate in calls if seeds == (1, 2))  # kept seeds do not
    diverging = {"mrpc": {1e-4, 3e-5}}
    with pytest.raises(HeadlessError, match="mrpc: fine-tuning diverged at every rate of glue_lrs"):
        evaluate.glue_scores(tmp_path, config, [0])


def test_the_report_shows_diverged_rates_as_settings_not_scores():
    from headless.lab.reproduce.report import _fmt, _row_stats

    assert _fmt(_row_stats("mrpc_diverged_lrs", [1e-4, 1e-4])) == "1e-04"
    assert _fmt(_row_stats("mrpc_lr", [3e-5])) == "3e-05"
    assert _row_stats("mrpc", [70.0, 72.0])["mean"] == 71.0
    assert _fmt(_row_stats("stsb_fp32_retries", [1.0, 2.0])) == "3"


def test_report_says_which_twin_never_left_the_plateau(tmp_path):
    """A piece's training curve, flat for headless and rising for vanilla: the report says it in words
    (pieces written before pieces kept the reading get it from their curve)."""
    from headless.lab.reproduce.report import write_report

    steps = list(range(100, 8001, 100))
    flat = [0.12 + (0.003 if s % 200 else -0.003) for s in steps]
    rising = [0.13 if s < 5000 else min(0.3, 0.13 + (s - 5000) * 2e-4) for s in steps]
    paths = []
    for flavour, acc in (("headless", flat), ("vanilla", rising)):
        piece = _piece(flavour, study="encoder")
        piece["pretrain"]["curves"] = {"train": {"step": steps, "loss": [1.0] * len(steps), "accuracy": acc}}
        piece["pretrain"]["measured_s_per_step"] = 0.02
        piece["train_config"] = {"optim": {"warmup_steps": 300}, "plateau_patience": 4000}
        paths.append(_write(tmp_path, f"{flavour}.json", piece))
    write_report(paths, tmp_path / "out")
    text = (tmp_path / "out" / "encoder-report.md").read_text()
    assert "- headless seed 0: **never left the plateau**: training accuracy 0.120" in text
    assert "- vanilla seed 0: left the plateau (training accuracy 0.130) at step 5,300 (106 GPU s)" in text


def test_report_reads_no_mlm_plateau_into_a_decoder(tmp_path):
    """A CLM twin's accuracy climbs slowly from its first steps: no plateau line, even from a piece
    that kept a reading (the 2026-12-05 decoder campaign's said both twins 'never left the plateau')."""
    from headless.lab.reproduce.report import write_report

    paths = []
    for flavour in ("headless", "vanilla"):
        piece = _piece(flavour)
        piece["pretrain"]["plateau"] = {"level": 0.2, "left_at": None, "flagged": False, "last_step": 2213,
                                        "last_accuracy": 0.23}
        paths.append(_write(tmp_path, f"{flavour}.json", piece))
    write_report(paths, tmp_path / "out")
    text = (tmp_path / "out" / "decoder-report.md").read_text()
    assert "plateau" not in text


def test_report_draws_a_forest_plot_of_the_differences(tmp_path, monkeypatch):
    """Issue #27 item 10: headless − vanilla per headline metric with its interval, one panel per unit."""
    import headless.eval.plots as plots
    from headless.lab.reproduce.report import write_report

    drawn, real = {}, plots.forest_panels
    monkeypatch.setattr(plots, "forest_panels", lambda panels, path: drawn.setdefault(path.name, panels)
                        and real(panels, path))
    paths = [_write(tmp_path, f"{f}{s}.json", _piece(f, s)) for f in ("headless", "vanilla") for s in (0, 1)]
    write_report(paths, tmp_path / "r")
    assert (tmp_path / "r" / "decoder-differences.png").read_bytes()[:4] == b"\x89PNG"
    report = json.loads((tmp_path / "r" / "decoder-report.json").read_text())
    panels = drawn["decoder-differences.png"]
    assert [p[0] for p in panels] == [e["label"] for e in report["headline"].values() if "delta" in e]
    entry = report["headline"]["lambada_acc"]
    label, delta, low, high = panels[0][2][0]
    assert label == "final" and delta == pytest.approx(entry["delta"])
    assert (low, high) == pytest.approx((delta - 1.96 * entry["delta_se"], delta + 1.96 * entry["delta_se"]))
    assert "lower is better" in panels[1][1]  # held-out cross-entropy


def test_settle_says_how_many_pretraining_seeds_would_exclude_0():
    """Issue #26: a missed target comes with the budget its interval says would settle it."""
    from scipy.stats import t

    from headless.lab.reproduce.report import settle

    diffs = [1.0, 0.2, 1.4]
    s = settle({"delta": 0.8667}, diffs)
    mean, sd = sum(diffs) / 3, (sum((d - sum(diffs) / 3) ** 2 for d in diffs) / 2) ** 0.5
    assert s["pretraining_seeds"] == 3 and abs(s["seed_mean"] - mean) < 1e-12 and abs(s["seed_sd"] - sd) < 1e-12
    half = t.ppf(0.975, 2) * sd / 3 ** 0.5
    assert s["seed_interval"][0] < 0 < s["seed_interval"][1] and abs(s["seed_interval"][1] - mean - half) < 1e-9
    n = s["seeds_needed"]  # the first n whose t-interval at this mean and spread excludes 0
    assert t.ppf(0.975, n - 1) * sd / n ** 0.5 < mean <= t.ppf(0.975, n - 2) * sd / (n - 1) ** 0.5
    assert n == 5
    # one seed: the bootstrap's interval gives a lower bound, (half-width / |difference|)^2
    # one seed: the bootstrap's reach from the difference towards 0 gives a lower bound: the smallest
    # k with reach / sqrt(k) < |difference|; here reach 1.0 = 2 x 0.5, so k > 4
    one = settle({"delta": 0.5, "paired_bootstrap": {"low": -0.5, "high": 1.5}}, [0.5])
    assert one == {"pretraining_seeds": 1, "excludes_0": False, "seeds_needed_at_least": 5}
    # an interval that reaches past 0 on 0's side needs at least 2, however it leans
    assert settle({"delta": 1.0, "paired_bootstrap": {"low": -0.1, "high": 1.5}}, [1.0])["seeds_needed_at_least"] == 2
    assert settle({"delta": -1.0, "paired_bootstrap": {"low": -3.0, "high": 0.5}}, [-1.0])["seeds_needed_at_least"] == 3
    settled = settle({"delta": 1.6, "paired_bootstrap": {"low": 0.8, "high": 2.5}}, [1.6])
    assert settled["excludes_0"] and "seeds_needed_at_least" not in settled
    assert settle({"delta": 1.6}, [1.6])["excludes_0"] is None  # no bootstrap: not known
    # a mean far inside its spread: the count stops at the cap and says so
    capped = settle({"delta": 0.01}, [1.0, -0.98, 0.01])
    assert capped["seeds_needed"] == "more than 10,000"


def test_report_says_what_would_settle_the_difference(tmp_path):
    from headless.lab.reproduce.report import write_report

    paths = []
    for seed, lead in enumerate([1.0, 0.2, 1.4]):
        for flavour in ("headless", "vanilla"):
            piece = _piece(flavour, seed)
            if flavour == "headless":
                piece["points"][-1]["variants"]["hlm_ft"]["scores"]["lambada_acc"] = [3.0 + seed * 0.1 + lead]
            paths.append(_write(tmp_path, f"{flavour}{seed}.json", piece))
    report = write_report(paths, tmp_path / "out")
    assert report["headline"]["lambada_acc"]["settle"]["seeds_needed"] == 5
    text = (tmp_path / "out" / "decoder-report.md").read_text()
    assert "**LAMBADA accuracy (%), over pretraining seeds**: 3 seeds, difference +0.87" in text
    assert "about **5** seeds per twin would exclude 0" in text


def test_a_pieces_mfu_is_the_steady_windows_not_the_last():
    """A resumed run's last logged window compiles again (the HF-head vanilla of
    2026-12-06-multilingual-hf-head: 5.0 % there, 11.2 % in every full window)."""
    from headless.lab.reproduce.piece import steady_mfu

    records = [{"step": 100, "mfu": 0.027}, *({"step": s, "mfu": 0.112} for s in range(200, 4700, 100)),
               {"step": 4661, "mfu": 0.0505}, {"step": 4661, "loss": 6.4}]  # a validation record: no MFU
    assert steady_mfu(records, {"mfu_last": 0.0505}) == 0.112
    assert steady_mfu([{"step": 1, "loss": 2.0}], {"mfu_last": 0.3}) == 0.3  # nothing logged: the summary's
    assert steady_mfu([], {}) is None


def test_a_large_decoder_vocabulary_gets_embedding_rows_for_it(shared_data):
    """Issue #25's 128k pair: the pythia-160m preset's 50,304 rows cannot hold a 128,256-entry BPE.
    The study sizes the model to its tokenizer (rounded to the preset's multiple); a pretrain=
    override still wins, and one too small fails before any data work, not on the GPU."""
    from headless.lab.reproduce import load_study
    from headless.lab.reproduce.piece import check_settings, train_config

    root = f"data_root={shared_data}"
    assert check_settings(load_study("decoder", overrides=[root]))["vanilla"].model.vocab_size == 50304
    for vocab, rows in [(128256, 128256), (100000, 100032)]:
        configs = check_settings(load_study("decoder", overrides=[root, f"decoder_vocab_size={vocab}"]))
        assert {f: c.model.vocab_size for f, c in configs.items()} == {"headless": rows, "vanilla": rows}
    config = load_study("decoder", overrides=["decoder_vocab_size=128256", "pretrain=[model.vocab_size=131072]"])
    assert train_config(config, "headless", None, Path("run")).model.vocab_size == 131072
    small = load_study("decoder", overrides=[root, "decoder_vocab_size=128256", "pretrain=[model.vocab_size=50304]"])
    with pytest.raises(HeadlessError, match="model.vocab_size=50304 is smaller than decoder_vocab_size=128256"):
        check_settings(small)


@pytest.mark.parametrize("study, extra, tokens", [
    ("decoder", [], 50277),                                    # the Pythia tokenizer
    ("decoder", ["decoder_vocab_size=128256"], 128256),        # issue #25's large BPE
    ("encoder", [], 30522),                                    # BERT uncased
    ("multilingual", [], 119547),                              # the paper's WordPiece
    ("multilingual", ["tokenizer_vocab_size=250002",
                      "vanilla_pretrain=[objective.loss_implementation=hf]"], 250002),
])
def test_every_study_twin_builds_at_full_size_for_its_tokenizer(shared_data, study, extra, tokens):
    """Each twin's model at the study's real shape, on the meta device (no memory, ~1 s): the first
    128k call met an embedding smaller than its tokenizer only on the GPU, after staging and tokenising."""
    import torch

    from headless.lab.reproduce import load_study
    from headless.lab.reproduce.piece import check_settings
    from headless.models import build_model

    configs = check_settings(load_study(study, overrides=[f"data_root={shared_data}", *extra]))
    for flavour, cfg in configs.items():
        with torch.device("meta"):
            model = build_model(cfg.model, cfg.objective, cfg.loss_kind, tokens)
        rows = model.hf.get_input_embeddings().weight.shape[0]
        assert tokens <= rows < tokens + cfg.model.pad_vocab_multiple, (flavour, rows)
        assert model.has_head == (flavour == "vanilla")


def test_the_report_names_the_code_of_each_piece(tmp_path):
    """Pieces record the library's source fingerprint (the GPU copy has no git); the report groups
    them, and says which pieces predate the record."""
    from headless.lab.reproduce.report import build_report, load_piece, report_markdown

    pieces = [_piece("headless"), _piece("vanilla"), _piece("headless", seed=1), _piece("vanilla", seed=1)]
    for piece, source in zip(pieces, ["aaaa", None, "bbbb", "bbbb"]):
        if source:
            piece["environment"]["source"] = source
    loaded = [load_piece(_write(tmp_path, f"{i}.json", p)) for i, p in enumerate(pieces)]
    text = report_markdown(build_report(loaded, bootstrap=0))
    assert ("Library code, by source fingerprint (`headless --version`; `scripts/source_commit.py` names its "
            "commits): `aaaa`: headless seed 0; `bbbb`: headless seed 1, vanilla seed 1; not recorded: vanilla seed 0."
            ) in text
    for piece in pieces:
        piece["environment"].pop("source", None)
    loaded = [load_piece(_write(tmp_path, f"old{i}.json", p)) for i, p in enumerate(pieces)]
    assert "source fingerprint" not in report_markdown(build_report(loaded, bootstrap=0))
