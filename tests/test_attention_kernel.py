"""`model.attention_kernel`: which of SDPA's kernels the model runs, refused in one line where absent."""

from __future__ import annotations

import pytest
import torch

from headless.cli import main
from headless.config import load_config
from headless.errors import HeadlessError
from headless.models import build_model

SMALL = ["model.hidden_size=32", "model.num_layers=2", "model.num_heads=2", "model.intermediate_size=64",
         "model.max_position_embeddings=64", "data.seq_len=32", "model.dropout=0"]


def _model(kernel: str, *extra: str):
    config = load_config("tiny-gpt", overrides=SMALL + [f"model.attention_kernel={kernel}", *extra])
    torch.manual_seed(0)
    return build_model(config.model, config.objective, config.loss_kind, 100, 0, 2)


def test_config_parses_the_kernels_and_refuses_others_in_one_line():
    assert load_config("tiny-gpt").model.attention_kernel == "auto"
    assert load_config("tiny-gpt", overrides=["model.attention_kernel=cudnn"]).model.attention_kernel == "cudnn"
    with pytest.raises(HeadlessError, match="model.attention_kernel='fa3'; choose one of 'auto', 'flash'"):
        load_config("tiny-gpt", overrides=["model.attention_kernel=fa3"])
    # a kernel of SDPA means nothing to another attention backend
    with pytest.raises(HeadlessError, match="model.attn_implementation=eager does not use it"):
        load_config("tiny-gpt", overrides=["model.attention_kernel=flash", "model.attn_implementation=eager"])


@pytest.mark.parametrize("kernel", ["cudnn", "efficient"])
def test_a_kernel_absent_here_is_refused_with_one_line(kernel):
    model = _model(kernel)  # on the CPU, which has neither cuDNN's nor the memory-efficient kernel
    with pytest.raises(HeadlessError) as err:
        model.check_attention_kernel()
    message = str(err.value)
    assert "\n" not in message and f"model.attention_kernel={kernel} cannot run on cpu" in message
    assert "head dimension 16" in message and "model.attention_kernel=auto" in message
    with pytest.raises(HeadlessError, match="head dimension 16, attention dropout 0.1"):  # asked as trained
        _model(kernel, "model.dropout=0.1").check_attention_kernel()


def test_auto_and_the_kernels_the_cpu_has_give_the_same_loss_and_leave_the_random_state():
    ids = torch.randint(3, 100, (2, 16), generator=torch.Generator().manual_seed(0))
    losses = {}
    for kernel in ("auto", "flash", "math"):  # the CPU has a flash kernel of its own, and math
        model = _model(kernel)
        state = torch.get_rng_state()
        model.check_attention_kernel()  # no error, and no random number drawn
        assert torch.equal(state, torch.get_rng_state())
        losses[kernel] = model(ids, ids).loss.item()
    assert losses["flash"] == pytest.approx(losses["auto"], rel=1e-5)
    assert losses["math"] == pytest.approx(losses["auto"], rel=1e-5)


def test_the_forward_runs_under_the_chosen_kernel_eager_and_compiled():
    """Unchecked, a kernel the CPU lacks fails inside the forward: the restriction is in force,
    also once torch.compile has traced the model (`sdpa_kernel` is traced); the model is on the CPU."""
    ids = torch.randint(3, 100, (2, 16), generator=torch.Generator().manual_seed(0))
    model = _model("efficient")
    with pytest.raises(RuntimeError, match="No viable backend"):
        model(ids, ids)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="eager")  # dynamo tracing, no code generation: fast
    with pytest.raises(RuntimeError, match="No viable backend"):
        compiled(ids, ids)
    torch._dynamo.reset()
    math = _model("math")
    expected = math(ids, ids).loss
    torch.testing.assert_close(torch.compile(math, backend="eager")(ids, ids).loss, expected)
    torch._dynamo.reset()


def test_bench_and_pretrain_refuse_an_absent_kernel_with_one_line(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("cuDNN attention may exist on this machine")
    assert main(["bench", "--preset", "tiny-gpt", "--objectives", "backbone", "--vocab-sizes", "256", "--steps", "1",
                 "--warmup", "0", "--seq-len", "32", "--no-progress", *SMALL[:-2], "model.attention_kernel=cudnn"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.attention_kernel=cudnn cannot run on cpu" in err[0]
    run_dir = tmp_path / "run"
    assert main(["pretrain", "--preset", "tiny-gpt", "--run-dir", str(run_dir), "--no-progress", "max_steps=1",
                 *SMALL, "model.attention_kernel=cudnn"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.attention_kernel=cudnn cannot run on cpu" in err[0]
    assert not run_dir.exists()  # refused before the run directory was made


@pytest.mark.gpu
def test_each_kernel_available_on_the_gpu_gives_math_s_forward_within_bf16_tolerance():
    """Pythia's head dimension (64), bf16 autocast: each kernel's hidden states are as far from an
    fp32 math-kernel reference as bf16 math itself is (twice that, plus a floor), or the kernel is
    refused in one line."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    shape = ["model.hidden_size=256", "model.num_heads=4", "model.num_layers=2", "model.intermediate_size=512",
             "model.max_position_embeddings=512", "data.seq_len=512"]
    ids = torch.randint(3, 100, (2, 512), generator=torch.Generator().manual_seed(0)).cuda()

    def hidden(kernel, dtype):
        model = _model(kernel, *shape).cuda().eval()
        model.check_attention_kernel(dtype=dtype or torch.float32)
        with torch.no_grad(), torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            return model.hidden_states(ids).float()

    reference = hidden("math", None)
    bf16_error = (hidden("math", torch.bfloat16) - reference).abs().max().item()
    ran = []
    for kernel in ("auto", "flash", "cudnn", "efficient"):
        try:
            out = hidden(kernel, torch.bfloat16)
        except HeadlessError as err:
            assert "\n" not in str(err) and f"model.attention_kernel={kernel} cannot run" in str(err)
            continue
        ran.append(kernel)
        assert (out - reference).abs().max().item() <= 2 * bf16_error + 1e-2, kernel
    assert "auto" in ran and "flash" in ran


def test_the_gpu_script_runs_on_the_cpu_and_reports_every_case(tmp_path, monkeypatch):
    """scripts/bench_attention.py at a tiny shape, eager: SDPA rows per kernel, full-step rows with
    tokens/s or torch's reason, and the cases past the time budget listed, in JSON and Markdown."""
    import json
    import runpy
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "bench_attention.py"
    shape = ["model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64",
             "model.max_position_embeddings=64"]
    common = ["--presets", "tiny-gpt", "--no-compile", "--steps", "1", "--warmup", "0", "--seq-len", "32",
              "--vocab-size", "256", "--sdpa-shapes", "small:2,2,64,16", *shape]
    monkeypatch.setattr(sys, "argv", [str(script), str(tmp_path / "all"), *common])
    runpy.run_path(str(script), run_name="__main__")
    report = json.loads((tmp_path / "all" / "attention.json").read_text())
    assert [r["kernel"] for r in report["sdpa"]] == ["auto", "flash", "cudnn", "efficient", "flex"]
    steps = {(r["objective"], r["variant"]): r for r in report["steps"]}
    assert steps[("backbone", "auto")]["tokens_per_s"] > 0 and steps[("cwt", "flash")]["tokens_per_s"] > 0
    if not torch.cuda.is_available():
        assert "cannot run on cpu" in steps[("backbone", "cudnn")]["unavailable"]
    assert "| tiny-gpt | backbone | auto |" in (tmp_path / "all" / "attention.md").read_text()
    monkeypatch.setattr(sys, "argv", [str(script), str(tmp_path / "none"), "--budget-s", "0", *common])
    runpy.run_path(str(script), run_name="__main__")
    report = json.loads((tmp_path / "none" / "attention.json").read_text())
    assert report["steps"] == [] and len(report["not_run"]) >= 4
    assert "not run: past the time budget" in (tmp_path / "none" / "attention.md").read_text()


def test_a_resume_may_change_the_kernel():
    """The kernel computes the same attention (to bf16 rounding, like another GPU): a run moved to a
    machine without cuDNN's attention resumes with model.attention_kernel=auto."""
    from headless.config import parse_overrides
    from headless.train.rundir import accept_resume, check_resume_overrides

    check_resume_overrides(parse_overrides(["model.attention_kernel=auto"]))
    old = load_config("tiny-gpt", overrides=["model.attention_kernel=cudnn"])
    new = load_config("tiny-gpt", overrides=["model.attention_kernel=auto"])
    assert accept_resume(new, old, {"step": 1}, 1, "data").model.attention_kernel == "auto"
