"""CPU-sane defaults (issue #28): the GPU presets run eagerly off CUDA, CUDA graphs only on CUDA,
and a vanilla step that is mostly its vocabulary head says so on the CPU."""

from __future__ import annotations

import pytest
import torch

from headless.config import load_config
from headless.runtime import compile_plan
from headless.train.loop import pretrain

TINY = ["model.hidden_size=32", "model.num_layers=2", "model.num_heads=2", "model.intermediate_size=64",
        "batch_size=2", "max_steps=1", "optim.warmup_steps=0", "eval_every=1", "eval_batches=1", "log_every=1",
        "save_every=1", "progress=false", "tensorboard=false"]
CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)


@pytest.mark.parametrize("preset", ["pythia-70m", "pythia-160m", "bert-base"])
def test_gpu_presets_compile_on_cuda_only(preset):
    config = load_config(preset)
    assert config.compile == "auto"
    assert compile_plan(config.compile, config.compile_mode, CUDA) == ("reduce-overhead", None)
    mode, note = compile_plan(config.compile, config.compile_mode, CPU)
    assert mode is None and "compile: auto compiles on CUDA only; running eagerly on cpu" in note


def test_an_explicit_compile_compiles_anywhere_but_cuda_graphs_only_on_one_cuda_process():
    assert compile_plan(False, "reduce-overhead", CUDA) == (None, None)
    assert compile_plan(True, "default", CPU) == ("default", None)
    mode, note = compile_plan(True, "reduce-overhead", CPU)
    assert mode == "default" and "CUDA graphs need a CUDA device" in note
    assert compile_plan(True, "max-autotune", CPU)[0] == "max-autotune-no-cudagraphs"
    mode, note = compile_plan("auto", "reduce-overhead", CUDA, world_size=2)
    assert mode == "default" and "several processes" in note


def test_the_pythia_preset_trains_eagerly_on_the_cpu_with_one_note(fixture_datasets, tmp_path, capsys):
    """The README's `--preset pythia-70m` command on a CPU: no Inductor compilation (minutes per
    first step and first evaluation before), one line that says why."""
    config = load_config("pythia-70m", overrides=[*TINY, f"data.path={fixture_datasets['neox']}", "device=cpu",
                                                  f"run_dir={tmp_path / 'run'}"])
    pretrain(config)
    out = capsys.readouterr().out
    assert out.count("compile: auto compiles on CUDA only; running eagerly on cpu") == 1, out
    assert "mode=reduce-overhead" not in out and "compile: the backbone" not in out, out


def test_a_vocabulary_head_that_dominates_the_cpu_step_is_reported_once(fixture_datasets, tmp_path, capsys):
    """tiny-gpt with a 50k vocabulary: the vanilla head is ~all of the step (18-21 s against 2.9 s
    for headless on 2 cores); the headless twin and a small vocabulary say nothing."""
    base = [*TINY, f"data.path={fixture_datasets['neox']}", "device=cpu"]
    pretrain(load_config("tiny-gpt", flavour="vanilla",
                         overrides=[*base, "model.vocab_size=50304", f"run_dir={tmp_path / 'big'}"]))
    out = capsys.readouterr().out
    assert out.count("warning: the vocabulary head (50,304 x 32) is") == 1, out
    assert "of this step's estimated FLOPs" in out and "M for the backbone" in out, out
    pretrain(load_config("tiny-gpt", flavour="headless",
                         overrides=[*base, "model.vocab_size=50304", f"run_dir={tmp_path / 'headless'}"]))
    pretrain(load_config("tiny-gpt", flavour="vanilla", overrides=[*base, f"run_dir={tmp_path / 'small'}"]))
    assert "vocabulary head" not in capsys.readouterr().out


def test_the_flops_estimate_reads_the_built_models_shape_not_the_configs(fixture_datasets, tmp_path):
    """A model loaded with `model.init_from` (HLM+FT, continued pretraining) keeps the config's default
    shape in `model.*`: the head warning said "128,256 x 256" for a 64-wide model, and the MFU of such
    runs used the defaults' layers and width."""
    import torch

    from headless.models import build_model, model_shape
    from headless.train.build import head_share

    built = load_config("tiny-gpt", overrides=["model.hidden_size=64", "model.num_layers=3", "model.num_heads=2"])
    with torch.device("meta"):
        model = build_model(built.model, built.objective, "ce", 1000)
    assert model_shape(model) == (3, 64)
    defaults = load_config("tiny-gpt")  # what an init_from run's config says: another width and depth
    assert (defaults.model.num_layers, defaults.model.hidden_size) != (3, 64)
    share, head, backbone = head_share(defaults, model, seq_len=32)
    assert head == 6 * 64 * model.hf.get_output_embeddings().weight.shape[0]
    assert share == head_share(built, model, seq_len=32)[0]
