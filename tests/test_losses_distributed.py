"""Negatives gathered over 2 gloo processes == one process on the concatenated batch.

Loss: the ranks' "sum" losses add up to the single-process one. Gradients: each rank's output
gradient is its slice of the single-process one, and the embedding gradients summed over ranks
(what DDP's all-reduce does) equal the single-process one — for both gather modes and with
unequal numbers of targets per rank.
"""

from __future__ import annotations

import socket
import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from headless.losses import cwt_loss

SPLIT = 70  # rank 0 gets rows [0, 70), rank 1 the other 130 (and a different number ignored)
CASES = [(gather, impl) for gather in ("ids", "embeddings") for impl in ("reference", "dedup", "chunked")]


def _data():
    g = torch.Generator().manual_seed(0)
    outputs = torch.randn(200, 8, generator=g, dtype=torch.float64)
    weight = torch.randn(40, 8, generator=g, dtype=torch.float64)
    ids = torch.randint(0, 40, (200,), generator=g)
    ids[torch.rand(200, generator=g) < 0.3] = -100
    return outputs, ids, weight


def _run(outputs, ids, weight, **kw):
    o, w = outputs.clone().requires_grad_(), weight.clone().requires_grad_()
    out = cwt_loss(o, ids, w, temperature=0.5, **kw)
    out.loss.backward()
    return {"loss": out.loss.detach(), "g_out": o.grad, "g_w": w.grad, "n": out.num_targets,
            "unique": out.num_unique}


def _worker(rank: int, port: int, results: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=60))
    outputs, ids, weight = _data()
    rows = slice(0, SPLIT) if rank == 0 else slice(SPLIT, None)
    got = {case: _run(outputs[rows], ids[rows], weight, group=dist.group.WORLD, gather=case[0],
                      implementation=case[1], reduction="sum") for case in CASES}
    got["mean"] = _run(outputs[rows], ids[rows], weight, group=dist.group.WORLD)
    # a rank with no target at all still takes part (and its backward in the embeddings mode)
    local_ids = ids[rows] if rank == 0 else torch.full_like(ids[rows], -100)
    got["empty"] = _run(outputs[rows], local_ids, weight, group=dist.group.WORLD, gather="embeddings",
                        reduction="sum", allow_empty=True)
    torch.save(got, f"{results}/rank{rank}.pt")
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gathered_negatives_match_one_process(tmp_path):
    context = mp.start_processes(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=False,
                                 start_method="spawn")
    deadline = time.monotonic() + 180
    while not context.join(timeout=2):  # raises if a worker failed
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("distributed workers did not finish within 180 s (hang in a collective?)")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    outputs, ids, weight = _data()
    for case in CASES:
        ref = _run(outputs, ids, weight, implementation="reference", reduction="sum")
        r0, r1 = ranks[0][case], ranks[1][case]
        assert r0["n"] + r1["n"] == ref["n"] and r0["n"] != r1["n"]
        torch.testing.assert_close(r0["loss"] + r1["loss"], ref["loss"], rtol=0, atol=1e-9)
        torch.testing.assert_close(torch.cat([r0["g_out"], r1["g_out"]]), ref["g_out"], rtol=0, atol=1e-9)
        torch.testing.assert_close(r0["g_w"] + r1["g_w"], ref["g_w"], rtol=0, atol=1e-9)
        if case[0] == "ids":  # negatives are the global unique targets
            assert r0["unique"] == r1["unique"] == ref["unique"]
    for rank in ranks:  # "mean" with a group is over the LOCAL rows
        torch.testing.assert_close(rank["mean"]["loss"], rank[("ids", "chunked")]["loss"] / rank["mean"]["n"])
    first = _run(outputs[:SPLIT], ids[:SPLIT], weight, implementation="reference", reduction="sum")
    empty = ranks[1]["empty"]
    assert empty["n"] == 0 and empty["loss"] == 0 and (empty["g_out"] == 0).all()
    torch.testing.assert_close(ranks[0]["empty"]["loss"], first["loss"], rtol=0, atol=1e-9)
    torch.testing.assert_close(ranks[0]["empty"]["g_w"] + empty["g_w"], first["g_w"], rtol=0, atol=1e-9)
