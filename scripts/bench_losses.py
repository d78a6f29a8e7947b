"""Time and memory of every loss path on CPU (forward + backward), for docs/reference/losses.md.

    python scripts/bench_losses.py                      # K in {4096, 16384}, D=512, V=50k
    python scripts/bench_losses.py --sizes 512 --vocab 5000 --repeats 1   # quick look

Targets are drawn from a Zipf–Mandelbrot law (p(r) ∝ (r + 2.7)^-1), close to BPE token
frequencies, so the number U of unique targets is realistic. Reported per path:
  seconds     median wall time of forward + backward over --repeats timed runs (after one untimed run)
  peak_mib    peak resident memory (Linux VmHWM, reset through /proc/self/clear_refs) above the
              resident memory just before the call: what the loss adds on top of its inputs
  largest_mib the largest single tensor any op produced (TorchDispatchMode): K×U vs a tile
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

import torch
from headless.losses.memory_probe import LargestTensor

from headless.losses import cwt_loss, vanilla_ce_loss

CWT_PATHS = ("reference", "dedup", "chunked")
VANILLA_PATHS = ("reference", "chunked", "torch")


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))


def peak_rss_mib(fn) -> float:
    """Peak RSS growth while running fn (MiB); NaN where /proc/self/clear_refs is unavailable."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        base = _status_kib("VmRSS")
    except OSError:
        fn()
        return float("nan")
    fn()
    return (_status_kib("VmHWM") - base) / 1024


def zipf_ids(num: int, vocab: int, generator: torch.Generator) -> torch.Tensor:
    ranks = torch.arange(vocab, dtype=torch.float64)
    probs = (ranks + 2.7).pow(-1.0)
    return torch.multinomial(probs / probs.sum(), num, replacement=True, generator=generator)


def _step(kind: str, path: str, outputs, ids, weight):
    outputs.grad = weight.grad = None
    if kind == "cwt":
        loss = cwt_loss(outputs, ids, weight, implementation=path).loss
    else:
        loss = vanilla_ce_loss(outputs, ids, weight, implementation=path).loss
    loss.backward()


def bench(kind: str, path: str, outputs, ids, weight, repeats: int) -> dict:
    probe = LargestTensor()

    def first():
        with probe:
            _step(kind, path, outputs, ids, weight)

    peak = peak_rss_mib(first)  # also the warm-up run
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _step(kind, path, outputs, ids, weight)
        times.append(time.perf_counter() - start)
    outputs.grad = weight.grad = None
    return {"loss": kind, "path": path, "seconds": statistics.median(times), "peak_mib": peak,
            "largest_mib": probe.largest_bytes / 2**20}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384], help="K, scored positions")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="+", help="run only these paths, e.g. cwt/chunked vanilla/reference")
    args = parser.parse_args(argv)
    g = torch.Generator().manual_seed(args.seed)
    weight = (torch.randn(args.vocab, args.dim, generator=g) * 0.02).requires_grad_()
    rows = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, D={args.dim}, V={args.vocab}")
    print("| loss | path | K | U | fwd+bwd s | peak RSS +MiB | largest tensor MiB |")
    print("|---|---|---|---|---|---|---|")
    for K in args.sizes:
        ids = zipf_ids(K, args.vocab, g)
        outputs = torch.randn(K, args.dim, generator=g).requires_grad_()
        unique = int(torch.unique(ids).numel())
        for kind, paths in (("cwt", CWT_PATHS), ("vanilla", VANILLA_PATHS)):
            for path in paths:
                if args.only and f"{kind}/{path}" not in args.only:
                    continue
                row = {"K": K, "U": unique} | bench(kind, path, outputs, ids, weight, args.repeats)
                rows.append(row)
                print(f"| {kind} | {kind}/{path} | {K} | {unique} | {row['seconds']:.3f} | "
                      f"{row['peak_mib']:.0f} | {row['largest_mib']:.1f} |", flush=True)
    return rows


if __name__ == "__main__":
    main()
