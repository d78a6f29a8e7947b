"""At most two epochs (issue #26): each study's defaults keep both twins to <= 2 passes over their
text at the default budget, and `headless reproduce` refuses settings that would exceed it."""

from __future__ import annotations

import pytest

from headless.cli import main
from headless.errors import HeadlessError
from headless.lab.reproduce.config import (SHARED_TOKENS, STUDIES, THROUGHPUT, check_epochs, documented_tokens,
                                           estimate_epochs, load_study)

from test_reproduce import _study, mini_root  # noqa: F401  (the mini data root fixture, shared)

@pytest.mark.parametrize("study", ["decoder", "encoder"])
def test_each_studys_defaults_give_at_most_two_epochs_at_its_default_budget(study):
    config = load_study(study)
    assert config.max_epochs == 2 and config.preset in THROUGHPUT
    tokens = documented_tokens(config)
    for flavour in ("headless", "vanilla"):
        estimate, _ = estimate_epochs(config, flavour, tokens)
        assert estimate is not None and estimate.epochs <= 2.0, (study, flavour, estimate)
    # and with HF's head at every position, the paper's vanilla baseline
    hf = load_study(study, overrides=["vanilla_pretrain=[objective.loss_implementation=hf]"])
    estimate, _ = estimate_epochs(hf, "vanilla", tokens)
    assert estimate is None or estimate.epochs <= 2.0
    assert len(check_epochs(config, train_tokens=tokens)) == 2  # no refusal


def test_the_multilingual_study_has_no_limit_and_says_how_often_it_repeats_its_text():
    """Its ~19 M tokens cannot hold a budget that leaves the MLM plateau within two epochs: it runs
    without the limit (max_epochs: null) and its estimate is printed, not refused."""
    config = load_study("multilingual", overrides=["data_root=/nonexistent"])
    assert config.max_epochs is None and config.budget_s >= 120 and STUDIES[-1] == "multilingual"
    lines = check_epochs(config)
    assert len(lines) == 2 and all("epochs of its 19.1 M documented tokens" in line for line in lines)
    assert "= 6.87 epochs" in lines[0]  # 120 s x 1,093,940 tokens/s / 19,115,235


def test_the_documented_counts_match_what_prepare_packed_for_the_published_pairs():
    """SHARED_TOKENS summed over the old 7-shard mix equals the prepared count the committed pieces
    carry (decoder 42,588,160 = whole rows of 2,048; encoder 40,180,352 = rows of 128), within one row."""
    seven = load_study("decoder", overrides=["enwiki_shards=7", "data_root=/nonexistent"])
    assert 0 <= documented_tokens(seven) - 42_588_160 < 2048
    seven = load_study("encoder", overrides=["enwiki_shards=7", "data_root=/nonexistent"])
    assert 0 <= documented_tokens(seven) - 40_180_352 < 128
    every = load_study("decoder", overrides=["data_root=/nonexistent"])
    assert documented_tokens(every) == sum(SHARED_TOKENS["decoder"].values()) > 85e6  # the ~90 M of the issue
    assert documented_tokens(load_study("decoder", overrides=["books=false", "data_root=/nonexistent"])) < 70e6
    # the multilingual study's own tokenizer: its counts hold for the vocabulary they were made with
    assert documented_tokens(load_study("multilingual", overrides=["data_root=/nonexistent"])) == 19_115_235
    for study, other in [("multilingual", "tokenizer_vocab_size=50000"), ("decoder", "decoder_vocab_size=131072"),
                         ("encoder", "subset_documents=64")]:
        assert documented_tokens(load_study(study, overrides=[other, "data_root=/nonexistent"])) is None, other


def test_settings_that_exceed_two_epochs_are_refused_with_one_line():
    # the case: the old 7-shard mix at today's budget would be repeated 3.6 times
    config = load_study("decoder", overrides=["enwiki_shards=7", "data_root=/nonexistent"])
    with pytest.raises(HeadlessError) as err:
        check_epochs(config)
    text = str(err.value)
    assert "\n" not in text and "decoder/headless" in text and "3.6" in text and "> max_epochs=2" in text
    # a longer budget on all the text, measured by the prepared count too
    config = load_study("encoder", overrides=["budget_s=400"])
    with pytest.raises(HeadlessError, match="encoder/headless: about 266.0 M tokens"):
        check_epochs(config, train_tokens=100_000_000)
    # on purpose: a higher limit, or none
    assert check_epochs(load_study("encoder", overrides=["budget_s=400", "max_epochs=3"]), train_tokens=100_000_000)
    assert check_epochs(load_study("encoder", overrides=["budget_s=4000", "max_epochs=null"]), train_tokens=10)
    with pytest.raises(HeadlessError, match="max_epochs must be > 0"):
        load_study("encoder", overrides=["max_epochs=0"])


def test_equal_tokens_counts_steps_and_hlm_ft_adds_its_fine_tuning_tokens():
    config = load_study("decoder", overrides=["compare=tokens", "steps=1000"])
    headless, _ = estimate_epochs(config, "headless", 100_000_000)
    vanilla, _ = estimate_epochs(config, "vanilla", 100_000_000)
    assert vanilla.tokens == 1000 * 8 * 4 * 2048  # steps x micro-batch x grad_accum x seq_len
    assert headless.tokens == vanilla.tokens + config.finetune_tokens


def test_a_shape_without_a_measured_rate_is_not_estimated_and_not_refused():
    config = load_study("decoder", overrides=["preset=tiny-gpt", "budget_s=100000"])
    assert all("not estimated" in line for line in check_epochs(config, train_tokens=1000))
    config = load_study("decoder", overrides=["pretrain=[model.num_layers=2]", "budget_s=100000"])
    assert all("another model shape" in line for line in check_epochs(config, train_tokens=1000))


def test_reproduce_refuses_before_preparing_anything(mini_root, tmp_path, capsys):
    work = tmp_path / "work"
    status = main(["reproduce", "decoder", "budget_s=3000", f"data_root={mini_root}", "--work-dir", str(work)])
    assert status == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "max_epochs=2" in err and "budget_s=3000" in err and "documented" in err
    assert not work.exists()


def test_a_piece_checks_the_prepared_count_before_pretraining(mini_root, tmp_path, capsys):
    """The documented count of the mini data's file names passes; the prepared count (a few
    thousand tokens) does not, and the piece stops before any pretraining run exists."""
    from headless.lab.reproduce import run_study

    config = _study("decoder", mini_root, "preset=pythia-160m", "seq_len=64", "zeroshot_tasks=[]")
    with pytest.raises(HeadlessError, match="epochs of its .* prepared tokens > max_epochs=2"):
        run_study(config, flavours=("headless",), work_dir=tmp_path / "work", output_dir=tmp_path / "out")
    assert "documented tokens" in capsys.readouterr().out
    assert (tmp_path / "work" / "decoder" / "data").is_dir() and not (tmp_path / "work" / "decoder" / "runs").exists()

