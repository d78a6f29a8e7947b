"""Which attention kernel (and which other cheap lever) makes the backbone's training step fastest?
Issue #29 item 3; run by scripts/bench_attention.sh on one GPU.

Two parts, in one process, cheapest first, each row written as soon as it is measured:
1. SDPA alone, forward + backward, bf16, causal, at the presets' attention shapes (B, H, T, 64):
   each SDPA kernel (`model.attention_kernel`) and FlexAttention.
2. Full training steps through `headless bench` (`--compile`, compile_mode=reduce-overhead) of the
   backbone alone and of CWT, at Pythia-160M and Pythia-70M 8 x 2048: `auto` (today's default)
   against the kernel part 1 found fastest and cuDNN's, then the other kernels, FlexAttention (through HF's
   `attn_implementation=flex_attention`), GELU's tanh approximation and compile_mode=max-autotune,
   while the time budget lasts.

    python scripts/bench_attention.py OUTDIR [--budget-s 150] [--presets pythia-160m,pythia-70m] [KEY=VALUE ...]

Writes OUTDIR/attention.json and OUTDIR/attention.md. A case not reached within the budget is listed
as such; a kernel absent here is listed with torch's reason.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

KERNELS = ("flash", "cudnn", "efficient")  # math: the reference, far slower at T = 2048


def environment() -> dict:
    import torch
    import transformers

    info = {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        pass
    return info


def time_ms(fn, reps: int = 20) -> float:
    import torch

    for _ in range(3):
        fn()
    if not torch.cuda.is_available():
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - start) * 1000 / reps
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


def sdpa_rows(shapes: list[tuple[str, tuple[int, int, int, int]]]) -> list[dict]:
    """Forward + backward of causal attention per kernel; TFLOP/s with causal FLOPs (half the scores)
    and backward = 2.5 x forward (FlashAttention's convention, as scripts/sdpa_backends.py)."""
    import torch
    import torch.nn.functional as F

    from headless.attention import check_kernel, kernel_context
    from headless.errors import HeadlessError

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    rows = []
    for i, (name, (b, h, t, d)) in enumerate(shapes):
        q, k, v = (torch.randn(b, h, t, d, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
        flops = 4 * b * h * t * t * d / 2 * 3.5
        for kernel in ("auto", *KERNELS, *(("flex",) if i == 0 else ())):  # flex compiles: the first shape only
            row = {"part": "sdpa", "shape": name, "bhtd": [b, h, t, d], "kernel": kernel}
            try:
                if kernel == "flex":
                    step = _flex_step(q, k, v, device)
                else:
                    check_kernel(kernel, device, dtype, d, True)

                    def step(kernel=kernel):
                        with kernel_context(kernel):
                            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
                        out.backward(torch.ones_like(out))
                ms = time_ms(step)
                row.update(ms_fwd_bwd=ms, tflops=flops / ms / 1e9)
                if kernel == "auto":
                    row["runs"] = _sdpa_op(step)
            except HeadlessError as err:
                row["unavailable"] = str(err)
            except Exception as err:  # noqa: BLE001 -- FlexAttention's compilation: the row says why
                row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
            rows.append(row)
            print(json.dumps(row), flush=True)
        del q, k, v
    return rows


def _sdpa_op(step) -> str:
    """Which aten SDPA op (so which kernel) one call of `step` dispatched to: what `auto` picks here."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    ops = sorted({e.key for e in prof.key_averages() if e.key.startswith("aten::_scaled_dot_product")
                  and "backward" not in e.key})
    return ", ".join(ops) or "?"


def _flex_step(q, k, v, device):
    import torch
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    if device.type != "cuda":
        raise RuntimeError("FlexAttention is timed on CUDA only")
    b, h, t, _ = q.shape
    mask = create_block_mask(lambda b_, h_, qi, ki: qi >= ki, None, None, t, t, device=device)
    flex = torch.compile(flex_attention)

    def step():
        out = flex(q, k, v, block_mask=mask)
        out.backward(torch.ones_like(out))
    return step


def step_cases(presets: list[str], best: str, available: list[str]) -> list[dict]:
    """The full-step cases, most telling first: at the first preset, the backbone with `auto` (today's
    default), the fastest SDPA kernel and cuDNN's, then GELU-tanh on the fastest, then CWT the same
    way; then the second preset; then the remaining kernels, FlexAttention and, last,
    compile_mode=max-autotune (Inductor's GEMM autotuning: minutes of compilation)."""
    def case(preset, objective, label, *overrides):
        return dict(preset=preset, objective=objective, label=label, overrides=list(overrides))

    kernels = [k for k in dict.fromkeys(("auto", best, "cudnn")) if k == "auto" or k in available]
    cases = []
    for i, preset in enumerate(presets):
        for objective in ("backbone", "cwt"):
            cases += [case(preset, objective, k, f"model.attention_kernel={k}") for k in kernels]
            if i == 0 and objective == "backbone":
                cases.append(case(preset, objective, f"{best} + gelu tanh", f"model.attention_kernel={best}",
                                  "model.extra.hidden_act=gelu_pytorch_tanh"))
    cases += [case(presets[0], "backbone", k, f"model.attention_kernel={k}") for k in KERNELS if k not in kernels]
    cases.append(case(presets[0], "backbone", "flex_attention", "model.attn_implementation=flex_attention"))
    # last: Inductor's GEMM autotuning takes minutes to compile
    cases.append(case(presets[0], "backbone", f"{best} + max-autotune", f"model.attention_kernel={best}",
                      "compile_mode=max-autotune"))
    return cases


def step_row(case: dict, args) -> dict:
    import torch

    from headless.errors import HeadlessError
    from headless.lab.bench import bench

    torch._dynamo.reset()  # one graph per case: no graph (or guard) of an earlier kernel is reused
    row = {"part": "step", "preset": case["preset"], "objective": case["objective"], "variant": case["label"],
           "overrides": case["overrides"]}
    start = time.perf_counter()
    try:
        [result] = bench(case["preset"], objectives=[case["objective"]], batch_sizes=[args.batch_size],
                         vocab_sizes=[args.vocab_size] if args.vocab_size else None,
                         seq_len=args.seq_len, steps=args.steps, warmup=args.warmup, compile=args.compile,
                         overrides=[f"compile_mode={args.compile_mode}", *args.overrides, *case["overrides"]],
                         progress=False)
        keep = ("tokens_per_s", "mfu", "step_ms", "peak_mem_gib", "vocab_size", "batch_size", "seq_len",
                "compile", "compiled_region", "loss", "oom", "error", "skipped")
        row.update({k: result[k] for k in keep if k in result})
    except HeadlessError as err:  # a kernel absent here: torch's reason, one line
        row["unavailable"] = str(err)
    row["wall_s"] = time.perf_counter() - start
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return row


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [f"# Attention kernels and backbone levers ({env.get('gpu', 'cpu')})", "",
             f"torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}, transformers {env['transformers']}, "
             f"triton {env.get('triton', '–')}; `{report['command']}`; {report['wall_s']:.0f} s.", "",
             "## SDPA alone (forward + backward, bf16, causal)", "",
             "| shape (B, H, T, D) | kernel | ms | TFLOP/s (causal) |", "|---|---|---|---|"]
    for r in report["sdpa"]:
        shape = f"{r['shape']} {tuple(r['bhtd'])}"
        if "ms_fwd_bwd" in r:
            kernel = r["kernel"] + (f" (runs {r['runs']})" if r.get("runs") else "")
            lines.append(f"| {shape} | {kernel} | {r['ms_fwd_bwd']:.3f} | {r['tflops']:.0f} |")
        else:
            lines.append(f"| {shape} | {r['kernel']} | {r.get('unavailable') or r.get('error')} | |")
    lines += ["", f"Fastest SDPA kernel: **{report['best_kernel']}**.", "",
              "## Training steps (`headless bench`, "
              f"{'compiled, ' + report['compile_mode'] if report['compiled'] else 'eager'})", "",
              "| preset | objective | variant | tokens/s | MFU | step ms | peak GiB |", "|---|---|---|---|---|---|---|"]
    for r in report["steps"]:
        head = f"| {r['preset']} | {r['objective']} | {r['variant']} |"
        if r.get("tokens_per_s"):
            mfu = f"{r['mfu']:.1%}" if r.get("mfu") else "–"
            mem = f"{r['peak_mem_gib']:.1f}" if r.get("peak_mem_gib") else "–"
            lines.append(f"{head} {r['tokens_per_s']:,.0f} | {mfu} | {r['step_ms']:.2f} | {mem} |")
        else:
            why = r.get("unavailable") or r.get("error") or ("out of memory" if r.get("oom") else r.get("skipped"))
            lines.append(f"{head} {why} | | | |")
    for r in report["not_run"]:
        lines.append(f"| {r['preset']} | {r['objective']} | {r['label']} | not run: past the time budget | | | |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("output")
    parser.add_argument("--budget-s", type=float, default=150.0,
                        help="no new full-step case starts after this many seconds (the SDPA part included)")
    parser.add_argument("--presets", default="pythia-160m,pythia-70m")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=None)
    parser.add_argument("--vocab-size", type=int, default=None, help="default: the preset's")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--compile-mode", default="reduce-overhead")
    parser.add_argument("--sdpa-shapes", default=None,
                        help="name:B,H,T,D;... (default: the presets' attention at the batch and sequence)")
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE for every full-step case")
    args = parser.parse_intermixed_args()
    start = time.perf_counter()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    presets = args.presets.split(",")
    if args.sdpa_shapes:
        shapes = [(n, tuple(int(x) for x in s.split(","))) for n, s in (p.split(":") for p in args.sdpa_shapes.split(";"))]
    else:
        from headless.config import load_config

        shapes = []
        for preset in presets:
            model = load_config(preset).model
            seq = args.seq_len or load_config(preset).data.seq_len
            shapes.append((preset, (args.batch_size, model.num_heads, seq, model.hidden_size // model.num_heads)))
    report = {"command": "scripts/bench_attention.py " + " ".join(__import__("sys").argv[1:]),
              "environment": environment(), "compiled": args.compile, "compile_mode": args.compile_mode,
              "sdpa": [], "steps": [], "not_run": []}

    def write():
        report["wall_s"] = time.perf_counter() - start
        (out / "attention.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        (out / "attention.md").write_text(markdown(report), encoding="utf-8")

    report["sdpa"] = sdpa_rows(shapes)
    timed = [r for r in report["sdpa"] if "ms_fwd_bwd" in r and r["kernel"] in KERNELS and r["shape"] == shapes[0][0]]
    report["best_kernel"] = min(timed, key=lambda r: r["ms_fwd_bwd"])["kernel"] if timed else "flash"
    write()
    for case in step_cases(presets, report["best_kernel"], [r["kernel"] for r in timed]):
        if time.perf_counter() - start > args.budget_s:
            report["not_run"].append({k: case[k] for k in ("preset", "objective", "label", "overrides")})
            continue
        row = step_row(case, args)
        report["steps"].append(row)
        print(json.dumps(row), flush=True)
        write()
    write()
    print(markdown(report), flush=True)


if __name__ == "__main__":
    main()
