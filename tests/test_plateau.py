"""The MLM-plateau flag (issue #25): a run made to stall is flagged, a learning run is not."""

from __future__ import annotations

import pytest

from headless.train.plateau import PlateauWatch, plateau_exit, plateau_text

STEPS = list(range(100, 10_001, 100))


def _curve(level: float, exit_step: int | None, top: float = 0.35) -> list[float]:
    """Accuracy rising to `level` in the warm-up, flat, then (from exit_step) rising to `top`."""
    out = []
    for s in STEPS:
        a = min(level, level * s / 300)
        if exit_step is not None and s > exit_step:
            a = min(top, level + (s - exit_step) * 1e-4)
        out.append(a + (0.002 if s % 200 else -0.002))  # a little noise
    return out


def test_a_stalled_run_is_flagged():
    info = plateau_exit(STEPS, _curve(0.12, None), warmup=300, patience=4000)
    assert info["left_at"] is None and info["flagged"]
    assert info["level"] == pytest.approx(0.12, abs=0.003)
    assert "never left the plateau" in plateau_text(info)


def test_a_late_exit_is_found_where_the_rise_passes_the_margin():
    info = plateau_exit(STEPS, _curve(0.12, 6000), warmup=300, patience=4000)
    assert not info["flagged"]
    # 25 % above 0.12 is 0.15, reached 300 steps after the rise starts; the 3-point median adds a step
    assert 6300 <= info["left_at"] <= 6500
    assert "left the plateau" in plateau_text(info, seconds_per_step=0.02)


def test_a_run_that_learns_from_the_start_is_not_flagged():
    steady = [min(0.6, 0.05 + s * 6e-5) for s in STEPS]
    info = plateau_exit(STEPS, steady, warmup=300, patience=4000)
    assert info["left_at"] is not None and not info["flagged"]


def test_a_short_run_is_not_judged():
    info = plateau_exit(STEPS[:20], _curve(0.12, None)[:20], warmup=300, patience=4000)
    assert not info["flagged"] and info["left_at"] is None
    assert plateau_exit(STEPS, _curve(0.12, None), warmup=300, patience=0)["level"] is None


def test_the_watch_warns_once_and_only_for_a_stall():
    stalled = PlateauWatch(warmup=300, patience=4000)
    messages = [stalled.update(s, a) for s, a in zip(STEPS, _curve(0.12, None))]
    warnings = [m for m in messages if m]
    assert len(warnings) == 1 and "has not left its plateau" in warnings[0] and "step 4300" in warnings[0]
    # the watch runs in both twins: the words fit a vanilla run too (they said "a headless twin" to both)
    assert "headless" not in warnings[0] and "gets a line saying when" in warnings[0]
    learning = PlateauWatch(warmup=300, patience=4000)
    assert not any(learning.update(s, a) for s, a in zip(STEPS, _curve(0.12, 2000)))
    # flagged, then leaves: a second line says so, once
    late = PlateauWatch(warmup=300, patience=4000)
    said = [m for m in (late.update(s, a) for s, a in zip(STEPS, _curve(0.12, 5200))) if m]
    assert len(said) == 2 and "has not left" in said[0], said
    assert "has left its plateau" in said[1] and "after the warning" in said[1], said


def test_the_trainer_warns_when_a_run_stalls(fixture_data, fixture_tokenizers, tmp_path, capsys):
    """lr 1e-9: the accuracy cannot move, so the trainer says so; a learning run of the same data does not."""
    from headless.config import load_config
    from headless.data.prepare import prepare_dataset
    from headless.data.tokenizers import load_tokenizer
    from headless.train.loop import pretrain

    data = tmp_path / "data"
    prepare_dataset([str(fixture_data["corpus"])], data, load_tokenizer(str(fixture_tokenizers["wordpiece"])),
                    seq_len=32, validation_fraction=0.05, progress=False)
    small = ["model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64",
             f"data.path={data}", "batch_size=256", "optim.warmup_steps=5", "log_every=1", "eval_every=1000",
             "save_every=1000", "progress=false", "tensorboard=false", "max_steps=60", "plateau_patience=40"]
    logs = {}
    for name, lr in (("stalled", "1e-9"), ("learning", "3e-3")):
        config = load_config("tiny", overrides=small + [f"optim.lr={lr}", f"run_dir={tmp_path / name}"])
        capsys.readouterr()
        pretrain(config)
        logs[name] = capsys.readouterr().out
    assert "has not left its plateau" in logs["stalled"]
    assert "has not left its plateau" not in logs["learning"]


def test_a_clm_run_is_never_flagged(fixture_datasets, tmp_path, capsys):
    """The MLM plateau is an MLM run's: a decoder at lr 1e-9 does not move either, and is not warned
    about a plateau it does not have (its accuracy climbs slowly from the first steps)."""
    from headless.config import load_config
    from headless.train.loop import pretrain

    config = load_config("tiny-gpt", overrides=[
        "model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64",
        f"data.path={fixture_datasets['neox']}", "batch_size=16", "optim.warmup_steps=5", "optim.lr=1e-9",
        "log_every=1", "eval_every=1000", "save_every=1000", "progress=false", "tensorboard=false",
        "max_steps=60", "plateau_patience=40", f"run_dir={tmp_path / 'clm'}"])
    capsys.readouterr()
    pretrain(config)
    assert "has not left its plateau" not in capsys.readouterr().out
