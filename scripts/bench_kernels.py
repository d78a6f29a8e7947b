"""Kernel-level benchmark of the CWT / vanilla-CE loss paths on one CUDA GPU (see docs/reference/kernels.md).

For each shape: forward+backward latency (median of CUDA-event timings after warm-up) and peak memory
(max_memory_allocated above the inputs) of: our Triton kernel (both backward modes), the chunked PyTorch path of
headless.losses, materialised logits + F.cross_entropy (the paper's K×K way for CWT, HF's for
vanilla), and torch.nn.functional.linear_cross_entropy when the installed torch has it.
With --check, first compares the Triton kernel against float64 at bench-like shapes.

    python scripts/bench_kernels.py --out bench.json [--tokens ids.npy] [--check] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from headless.losses.cwt_triton import linear_ce_triton

try:  # the PyTorch paths, written by another module: benchmark them when present
    from headless.losses import cwt_loss, vanilla_ce_loss
except ImportError:  # pragma: no cover
    cwt_loss = vanilla_ce_loss = None

SEQ = 2047  # CLM positions per 2048-token sequence


def token_sample(n: int, vocab: int, tokens: np.ndarray | None, seed: int = 0) -> torch.Tensor:
    """n target ids: a contiguous slice of real tokens if given, else a Zipf(1.0)-like draw."""
    if tokens is not None:
        if len(tokens) < n:
            tokens = np.tile(tokens, math.ceil(n / len(tokens)))
        return torch.from_numpy(tokens[:n].astype(np.int64) % vocab)
    p = 1.0 / (np.arange(vocab) + 2.7)
    return torch.from_numpy(np.random.default_rng(seed).choice(vocab, size=n, p=p / p.sum()))


def measure(fn, params, repeats: int) -> dict:
    """Median fwd+bwd ms over `repeats` (after 2 warm-ups) and peak memory above the live tensors."""
    try:
        for _ in range(2):
            for p in params:
                p.grad = None
            fn()
        torch.cuda.synchronize()
        for p in params:
            p.grad = None
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        times = []
        for _ in range(repeats):
            for p in params:
                p.grad = None
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        return {"ms": float(np.median(times)), "ms_spread": float(np.max(times) - np.min(times)),
                "peak_mib": peak}
    except torch.cuda.OutOfMemoryError:
        return {"ms": None, "peak_mib": None, "error": "OOM"}
    except Exception as exc:  # noqa: BLE001 - a failing path is a result, not a crash
        return {"ms": None, "peak_mib": None, "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    finally:
        for p in params:
            p.grad = None
        torch.cuda.empty_cache()


def torch_lce(o, w, y, bias=None):
    opts = getattr(torch.nn, "LinearCrossEntropyOptions", None)
    kw = {"options": opts()} if opts is not None else {}
    return F.linear_cross_entropy(o, w, y, linear_bias=bias, **kw)


def cwt_methods(o, E, tgt):
    K = tgt.numel()

    def triton_kernel():
        uniq, inv, cnt = torch.unique(tgt, return_inverse=True, return_counts=True)
        linear_ce_triton(o, E[uniq], cnt.float().log(), inv, 1.0).mean().backward()

    def materialised():  # the paper's Fig. 9: K×K scores against every target, repeats included
        F.cross_entropy((o @ E[tgt].T).float(), torch.arange(K, device=o.device)).backward()

    m = {"triton": triton_kernel, "materialised": materialised}
    if cwt_loss is not None:
        m["headless.chunked"] = lambda: cwt_loss(o, tgt, E, implementation="chunked",
                                                 with_accuracy=False).loss.backward()
        m["headless.cwt_loss[triton]"] = lambda: cwt_loss(o, tgt, E, implementation="triton",
                                                          with_accuracy=False).loss.backward()
    if hasattr(F, "linear_cross_entropy"):
        def tlce():
            uniq, inv, cnt = torch.unique(tgt, return_inverse=True, return_counts=True)
            torch_lce(o, E[uniq], inv, cnt.float().log().to(o.dtype)).backward()
        m["torch.linear_cross_entropy"] = tlce
    return m


def vanilla_methods(o, W, tgt):
    m = {"triton": lambda: linear_ce_triton(o, W, None, tgt, 1.0).mean().backward(),
         "materialised": lambda: F.cross_entropy((o @ W.T).float(), tgt).backward()}
    if vanilla_ce_loss is not None:
        m["headless.chunked"] = lambda: vanilla_ce_loss(o, tgt, W, implementation="chunked",
                                                        with_accuracy=False).loss.backward()
    if hasattr(F, "linear_cross_entropy"):
        m["torch.linear_cross_entropy"] = lambda: torch_lce(o, W, tgt).backward()
    return m


def triton_forward(kind, o, W, tgt):
    with torch.no_grad():
        if kind == "vanilla":
            return linear_ce_triton(o, W, None, tgt, 1.0)
        uniq, inv, cnt = torch.unique(tgt, return_inverse=True, return_counts=True)
        return linear_ce_triton(o, W[uniq], cnt.float().log(), inv, 1.0)


def check(tokens) -> list[dict]:
    """Triton vs float64 (value and both gradients), bf16 and fp32 inputs, fresh random data."""
    rows = []
    for i, (K, V, D, kind, dtype) in enumerate([(16376, 50304, 768, "cwt", torch.bfloat16),
                                                (16376, 50304, 512, "cwt", torch.float32),
                                                (4093, 50304, 768, "vanilla", torch.bfloat16),
                                                (2047, 256000, 200, "vanilla", torch.float32)]):
        g = torch.Generator(device="cuda").manual_seed(100 + i)
        tgt = token_sample(K, V, tokens, seed=i).cuda()
        tgt[torch.rand(K, device="cuda", generator=g) < 0.1] = -100
        o = (torch.randn(K, D, device="cuda", generator=g) / D ** 0.25).to(dtype)
        W = (torch.randn(V, D, device="cuda", generator=g) / D ** 0.25).to(dtype)
        w = torch.randn(K, device="cuda", generator=g)
        res = {}
        for prec in ("kernel", "float64"):
            oo = (o if prec == "kernel" else o.double()).clone().requires_grad_()
            WW = (W if prec == "kernel" else W.double()).clone().requires_grad_()
            keep = tgt >= 0
            if kind == "cwt":
                uniq, inv, cnt = torch.unique(tgt[keep], return_inverse=True, return_counts=True)
                labels = torch.full_like(tgt, -100)
                labels[keep] = inv
                classes, bias = WW[uniq], cnt.double().log()
            else:
                labels, classes, bias = tgt, WW, None
            if prec == "kernel":
                loss = linear_ce_triton(oo, classes, bias, labels, 0.5)
            else:
                s = 0.5 * oo @ classes.T + (0 if bias is None else bias)
                loss = F.cross_entropy(s, labels, reduction="none", ignore_index=-100)
            (loss * w).sum().backward()
            res[prec] = (loss.detach().double(), oo.grad.double(), WW.grad.double())
        errs = [((a - b).norm() / b.norm()).item() for a, b in zip(res["kernel"], res["float64"])]
        rows.append({"K": K, "V": V, "D": D, "kind": kind, "dtype": str(dtype).split(".")[-1],
                     "rel_loss": errs[0], "rel_d_outputs": errs[1], "rel_d_classes": errs[2],
                     "finite": all(bool(torch.isfinite(t).all()) for t in res["kernel"])})
        print("check", json.dumps(rows[-1]), flush=True)
        del res, o, W
        torch.cuda.empty_cache()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="JSON file to write (rewritten after every shape)")
    ap.add_argument("--tokens", help=".npy of real token ids (uint16/int); default: Zipf-like sample")
    ap.add_argument("--vocab", type=int, default=50304, help="embedding rows for CWT shapes")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--check", action="store_true", help="compare against float64 first")
    ap.add_argument("--quick", action="store_true", help="one CWT and one vanilla shape")
    ap.add_argument("--budget-s", type=float, default=1e9, help="skip the remaining shapes after this")
    args = ap.parse_args()
    t0 = time.time()
    tokens = np.load(args.tokens) if args.tokens else None
    props = torch.cuda.get_device_properties(0)
    result = {"device": props.name, "torch": torch.__version__, "tokens": args.tokens or "zipf",
              "repeats": args.repeats, "check": check(tokens) if args.check else None, "rows": []}
    cwt_shapes = [(b * SEQ, D) for b in (8, 32, 64) for D in (512, 768)]
    van_shapes = [(8 * SEQ, V, D) for V in (50304, 256000) for D in (512, 768)]
    if args.quick:
        cwt_shapes, van_shapes = cwt_shapes[1:2], van_shapes[1:2]
    jobs = [("cwt", K, args.vocab, D) for K, D in cwt_shapes] + [("vanilla", K, V, D) for K, V, D in van_shapes]
    for kind, K, V, D in jobs:
        if time.time() - t0 > args.budget_s:
            print(f"budget spent: skipping {kind} K={K} V={V} D={D}", flush=True)
            continue
        g = torch.Generator(device="cuda").manual_seed(K + D)
        tgt = token_sample(K, min(V, args.vocab), tokens).cuda()
        o = (torch.randn(K, D, device="cuda", generator=g) / D ** 0.25).bfloat16().requires_grad_()
        W = (torch.randn(V, D, device="cuda", generator=g) / D ** 0.25).bfloat16().requires_grad_()
        U = int(torch.unique(tgt).numel()) if kind == "cwt" else V
        methods = (cwt_methods if kind == "cwt" else vanilla_methods)(o, W, tgt)
        row = {"kind": kind, "K": K, "V": V, "D": D, "U": U, "methods": {}}
        for name, fn in methods.items():
            row["methods"][name] = r = measure(fn, [o, W], args.repeats)
            if name.startswith("triton") and r["ms"]:  # effective: the 3 K×U×D products of fwd+bwd
                r["tflops"] = 3 * 2 * K * U * D / r["ms"] / 1e9
            if name == "triton" and r["ms"]:  # the kernel's forward alone: how the time splits
                r["fwd_ms"] = measure(lambda o=o, W=W: triton_forward(kind, o, W, tgt), [], args.repeats)["ms"]
            print(f"{kind:8s} K={K:6d} U={U:6d} D={D:4d} {name:28s} {r}", flush=True)
        result["rows"].append(row)
        del o, W, methods
        torch.cuda.empty_cache()
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    from headless.losses import cwt_triton as kt
    kernels = ("_fwd_kernel", "_grad_chunk_kernel", "_bwd_do_kernel", "_bwd_dc_kernel")
    result["autotuned"] = {n: {str(k): str(v) for k, v in getattr(kt, n).cache.items()} for n in kernels}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    names = sorted({n for r in result["rows"] for n in r["methods"]})
    print("\n| kind | K | U | D | " + " | ".join(f"{n} ms / MiB" for n in names) + " |")
    for r in result["rows"]:
        cells = []
        for n in names:
            m = r["methods"].get(n, {})
            cells.append(m.get("error", "-") if not m.get("ms") else f"{m['ms']:.2f} / {m['peak_mib']:.0f}")
        print(f"| {r['kind']} | {r['K']} | {r['U']} | {r['D']} | " + " | ".join(cells) + " |")
    print(f"total {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
