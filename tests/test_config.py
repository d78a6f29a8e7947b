"""Typed configs: presets, YAML, overrides, validation messages."""

import pytest
import yaml

from headless.config import TrainConfig, config_from_file, list_presets, load_config, parse_overrides, save_config
from headless.errors import HeadlessError


@pytest.mark.parametrize("preset", list_presets())
@pytest.mark.parametrize("flavour", ["headless", "vanilla"])
def test_every_preset_loads_in_both_flavours(preset, flavour):
    config = load_config(preset, flavour=flavour)
    assert config.flavour == flavour
    assert config.loss_kind == ("cwt" if flavour == "headless" else "ce")
    assert config.needs_head == (flavour == "vanilla")
    assert config.objective_kind == ("mlm" if config.model.is_encoder else "clm")


def test_paper_shapes_of_presets():
    p70 = load_config("pythia-70m")
    assert (p70.model.num_layers, p70.model.hidden_size, p70.model.num_heads, p70.model.vocab_size) == (6, 512, 8, 50304)
    assert p70.model.rotary_pct == 0.25 and not p70.model.tie_word_embeddings
    assert p70.optim.lr == 1e-3 and p70.optim.beta2 == 0.95 and p70.optim.warmup_steps == 1430
    small = load_config("bert-small")
    assert (small.model.num_layers, small.model.hidden_size, small.model.num_heads) == (4, 512, 8)


def test_overrides_are_typed_and_nested():
    config = load_config("tiny", overrides=["optim.lr=3e-4", "model.num_layers=3", "objective.negatives=global",
                                             "data.inputs=[a.txt, b.txt]", "compile=true"])
    assert config.optim.lr == 3e-4 and isinstance(config.optim.lr, float)
    assert config.model.num_layers == 3
    assert config.objective.negatives == "global"
    assert config.data.inputs == ["a.txt", "b.txt"]
    assert config.compile is True
    assert parse_overrides(["a.b.c=1"]) == {"a": {"b": {"c": 1}}}


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=1", "unknown key optim.lrr (did you mean optim.lr?)"),
    ("batch_size=0", "batch_size must be >= 1"),
    ("batch_size=abc", "batch_size must be an integer"),
    ("objective.loss=softmax", "objective.loss='softmax'; choose one of"),
    ("objective.mask_prob=1.5", "mask_prob must be in (0, 1)"),
    ("model.num_heads=3", "multiple of model.num_heads"),
    ("data.seq_len=4096", "exceeds model.max_position_embeddings"),
    ("objective.kind=clm", "CLM needs a decoder"),
    ("compile=maybe", "compile must be true, false or auto"),
])
def test_bad_values_give_one_clear_line(override, message):
    with pytest.raises(HeadlessError) as err:
        load_config("tiny", overrides=[override])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_override_syntax_and_unknown_preset():
    with pytest.raises(HeadlessError, match="expected key=value"):
        load_config("tiny", overrides=["optim.lr"])
    with pytest.raises(HeadlessError, match="unknown preset 'nope'"):
        load_config("nope")


def test_yaml_round_trip(tmp_path):
    config = load_config("pythia-70m", flavour="vanilla", overrides=["objective.temperature=0.5"])
    save_config(config, tmp_path / "config.yaml")
    back = config_from_file(tmp_path / "config.yaml")
    assert back == config
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["flavour"] == "vanilla"


def test_a_removed_setting_in_an_old_run_config(tmp_path):
    """Run directories from before the sync-free CWT path was removed hold
    objective.cwt_sync_free: false (resume and export must still read them); true fails clearly."""
    data = load_config("tiny").to_dict()
    data["objective"]["cwt_sync_free"] = False
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(data))
    assert config_from_file(tmp_path / "config.yaml") == load_config("tiny")
    data["objective"]["cwt_sync_free"] = True
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(HeadlessError) as err:
        config_from_file(tmp_path / "config.yaml")
    assert "cwt_sync_free was removed" in str(err.value) and "\n" not in str(err.value)


def test_config_file_on_top_of_preset(tmp_path):
    (tmp_path / "mine.yaml").write_text("optim:\n  lr: 0.002\nmodel:\n  num_layers: 1\n")
    config = load_config("tiny", tmp_path / "mine.yaml")
    assert config.optim.lr == 0.002 and config.model.num_layers == 1
    assert config.model.hidden_size == 128  # from the preset
    (tmp_path / "bad.yaml").write_text("- a list\n")
    with pytest.raises(HeadlessError, match="mapping"):
        load_config("tiny", tmp_path / "bad.yaml")


def test_defaults_validate():
    assert TrainConfig().validate().objective_kind == "mlm"
