"""CWT loss: every path equals the paper's formula (value and gradients), is stable, and is cheap."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from headless.losses.memory_probe import LargestTensor

import headless
from headless.errors import HeadlessError
from headless.losses import LossOutput, cwt_loss, linear_logsumexp

PATHS = ["reference", "dedup", "chunked"]
TORCH_LCE = ["torch"] if hasattr(F, "linear_cross_entropy") else []  # torch >= 2.13's fused linear CE


def _batch(K=300, V=50, D=16, seed=0, ignore_every=7, dtype=torch.float64, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    weight = (torch.randn(V, D, generator=g, dtype=dtype) * scale).requires_grad_()
    outputs = (torch.randn(K, D, generator=g, dtype=dtype) * scale).requires_grad_()
    ids = torch.randint(0, V, (K,), generator=g)
    if ignore_every:
        ids[::ignore_every] = -100
    return outputs, ids, weight


def _loss_and_grads(outputs, ids, weight, **kw):
    out = cwt_loss(outputs, ids, weight, **kw)
    loss = out.loss.sum() if out.loss.dim() else out.loss
    g_out, g_w = torch.autograd.grad(loss, [outputs, weight])
    return out, g_out, g_w


def _assert_same(a, b, tol=1e-9):
    (oa, ga, wa), (ob, gb, wb) = a, b
    torch.testing.assert_close(oa.loss, ob.loss, rtol=0, atol=tol)
    torch.testing.assert_close(ga, gb, rtol=0, atol=tol)
    torch.testing.assert_close(wa, wb, rtol=0, atol=tol)


@pytest.mark.parametrize("path", ["dedup", "bounded", "chunked", *TORCH_LCE])
@pytest.mark.parametrize("temperature", [1.0, 0.05])
def test_paths_equal_reference_float64(path, temperature):
    outputs, ids, weight = _batch()  # 300 positions over 50 tokens: many duplicates
    ref = _loss_and_grads(outputs, ids, weight, implementation="reference", temperature=temperature)
    got = _loss_and_grads(outputs, ids, weight, implementation=path, temperature=temperature, chunk_size=37)
    _assert_same(got, ref)
    assert got[0].accuracy == ref[0].accuracy and got[0].num_unique == ref[0].num_unique


def _property_cases(test):
    """Hypothesis cases; without hypothesis (a dev extra) the test is skipped, the module still
    collects (the GPU machine runs `pytest -m gpu` without the dev extras)."""
    try:
        from hypothesis import given, settings, strategies as st
    except ImportError:
        return pytest.mark.skip(reason="hypothesis not installed (pip install -e '.[dev]')")(test)
    return settings(max_examples=30, deadline=None)(given(
        K=st.integers(1, 60), V=st.integers(1, 30), D=st.integers(1, 8), seed=st.integers(0, 10**6),
        temperature=st.floats(0.05, 5.0), ignore_p=st.floats(0.0, 0.6), chunk=st.integers(1, 16),
        reduction=st.sampled_from(["mean", "sum", "none"]), path=st.sampled_from(["dedup", "chunked"]))(test))


@_property_cases
def test_paths_equal_reference_property(K, V, D, seed, temperature, ignore_p, chunk, reduction, path):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(V, D, generator=g, dtype=torch.float64, requires_grad=True)
    outputs = torch.randn(2, K, D, generator=g, dtype=torch.float64, requires_grad=True)  # [B, L, D] input
    ids = torch.randint(0, V, (2, K), generator=g)
    ids[torch.rand(2, K, generator=g) < ignore_p] = -100
    ids[0, 0] = int(ids[0, 0].clamp_min(0))  # at least one target
    kw = dict(temperature=temperature, reduction=reduction)
    ref = _loss_and_grads(outputs, ids, weight, implementation="reference", **kw)
    got = _loss_and_grads(outputs, ids, weight, implementation=path, chunk_size=chunk, **kw)
    _assert_same(got, ref)
    assert ref[0].loss.shape == (() if reduction != "none" else ids.shape)


def _paper_literal(outputs, ids, weight):
    """Fig. 9 / §3.2 written out: −1/|S| Σ_i log[exp(o_i·e(x_i)) / Σ_k exp(o_i·e(x_k))]."""
    S = [i for i in range(len(ids)) if ids[i] != -100]
    total = 0.0
    for i in S:
        num = math.exp(sum(o * e for o, e in zip(outputs[i], weight[ids[i]])))
        den = sum(math.exp(sum(o * e for o, e in zip(outputs[i], weight[ids[k]]))) for k in S)
        total += math.log(num / den)
    return -total / len(S)


def test_reference_is_the_papers_formula():
    outputs, ids, weight = _batch(K=12, V=5, D=4, ignore_every=5)
    literal = _paper_literal(outputs.tolist(), ids.tolist(), weight.tolist())
    for path in PATHS:
        assert cwt_loss(outputs, ids, weight, implementation=path).loss.item() == pytest.approx(literal, abs=1e-12)


def _official_code(outputs, targets, temperature=1.0):
    """headless-lm utils.py::cwt_loss transcribed: exp, diag / (rowsum + 1e-9), log."""
    sim = torch.exp(outputs @ targets.t() / temperature)
    return -torch.log(sim.diag() / (sim.sum(-1) + 1e-9)).mean()


def test_large_logits_are_finite_where_the_official_code_overflows():
    outputs, ids, weight = _batch(K=64, V=20, D=8, ignore_every=0, dtype=torch.float32)
    with torch.no_grad():  # scores of magnitude ~1e4
        outputs.mul_(100 / outputs.norm(dim=1, keepdim=True))
        weight.mul_(100 / weight.norm(dim=1, keepdim=True))
    assert not torch.isfinite(_official_code(outputs, weight[ids])).item()
    for path in PATHS:
        out, g_out, g_w = _loss_and_grads(outputs, ids, weight, implementation=path)
        assert torch.isfinite(out.loss) and torch.isfinite(g_out).all() and torch.isfinite(g_w).all()
    ref = _loss_and_grads(outputs.double(), ids, weight.double(), implementation="reference")
    assert out.loss.item() == pytest.approx(ref[0].loss.item(), rel=1e-3, abs=0.5)


def test_metrics_and_accuracy_definition():
    weight = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    outputs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.5, 0.0]], dtype=torch.float64)
    ids = torch.tensor([0, 1, 1, 2])
    # row 0: token 0 ties with token 2 (same embedding): a tie counts as correct; row 1: correct;
    # row 2: token 0 (1.0) beats its positive token 1 (0.1): wrong; row 3: ties with token 0: correct.
    for path in PATHS:
        out = cwt_loss(outputs, ids, weight, implementation=path)
        assert out.accuracy.item() == pytest.approx(0.75)
        assert out.num_targets.item() == 4 and out.num_unique.item() == 3
        assert out.num_targets.dtype == torch.long and not out.accuracy.requires_grad


def test_reductions_and_ignored_positions():
    outputs, ids, weight = _batch(K=40, V=10, D=4)
    ids = ids.reshape(4, 10)
    outputs = outputs.detach().reshape(4, 10, 4)
    none = cwt_loss(outputs, ids, weight, reduction="none").loss
    assert none.shape == (4, 10) and (none[ids == -100] == 0).all() and (none[ids != -100] > 0).all()
    total = cwt_loss(outputs, ids, weight, reduction="sum").loss
    mean = cwt_loss(outputs, ids, weight).loss
    torch.testing.assert_close(total, none.sum())
    torch.testing.assert_close(mean, total / (ids != -100).sum())
    # ignored positions are not negatives either: dropping them gives the same loss
    kept = ids != -100
    torch.testing.assert_close(cwt_loss(outputs[kept], ids[kept], weight).loss, mean)


def test_max_negatives():
    outputs, ids, weight = _batch()
    full = _loss_and_grads(outputs, ids, weight, implementation="reference")
    for path in PATHS:  # a cap >= U changes nothing
        _assert_same(_loss_and_grads(outputs, ids, weight, implementation=path, max_negatives=50), full)
    capped = {path: _loss_and_grads(outputs, ids, weight, implementation=path, max_negatives=5,
                                    generator=torch.Generator().manual_seed(3)) for path in PATHS}
    for path in ["dedup", "chunked"]:  # same sample from the same generator: identical
        _assert_same(capped[path], capped["reference"])
    out = capped["reference"][0]
    assert out.num_unique.item() == 5 and out.loss.item() < full[0].loss.item()
    # positives are kept: with a cap of 1 every row still scores its own positive (finite, >= 0)
    one = cwt_loss(outputs, ids, weight, max_negatives=1, reduction="none", generator=torch.Generator().manual_seed(0))
    kept = ids != -100
    assert torch.isfinite(one.loss).all() and (one.loss[kept] >= 0).all() and one.num_unique.item() == 1
    # a literal check: candidates of row k = the sampled token ∪ y_k, with their multiplicities
    sampled = torch.randperm(int(torch.unique(ids[kept]).numel()), generator=torch.Generator().manual_seed(0))[:1]
    token = torch.unique(ids[kept])[sampled].item()
    o, y = outputs[kept], ids[kept]
    scores = o @ weight[y].t()
    allowed = (y.unsqueeze(0) == token) | (y.unsqueeze(0) == y.unsqueeze(1))
    expected = F.cross_entropy(scores.masked_fill(~allowed, -math.inf), torch.arange(len(y)), reduction="none")
    torch.testing.assert_close(one.loss[kept], expected)


def test_mixed_precision_accumulates_in_float32():
    outputs, ids, weight = _batch(dtype=torch.float32)
    ref = cwt_loss(outputs.double(), ids, weight.double(), implementation="reference").loss
    for path in PATHS:
        o16 = outputs.detach().bfloat16().requires_grad_()
        w16 = weight.detach().bfloat16().requires_grad_()
        out = cwt_loss(o16, ids, w16, implementation=path)
        out.loss.backward()
        assert out.loss.dtype == torch.float32 and o16.grad.dtype == torch.bfloat16
        assert torch.isfinite(o16.grad.float()).all() and torch.isfinite(w16.grad.float()).all()
        assert out.loss.item() == pytest.approx(ref.item(), rel=2e-2)
    # bf16 hidden states with an fp32 weight (autocast) are accepted too
    assert torch.isfinite(cwt_loss(outputs.bfloat16(), ids, weight).loss)


def test_clear_errors():
    outputs, ids, weight = _batch(K=8, V=5, D=4, ignore_every=0)
    bad = [
        dict(outputs=outputs[:, :3]),  # D mismatch
        dict(target_ids=ids[:5]),  # shape mismatch
        dict(target_ids=ids.float()),  # dtype
        dict(outputs=outputs.long()),
        dict(embedding_weight=weight[0]),
        dict(target_ids=ids + 10),  # out of range
        dict(temperature=0.0),
        dict(reduction="avg"),
        dict(implementation="fast"),
        dict(max_negatives=0),
        dict(gather="all"),
        dict(implementation="triton"),  # no CUDA here
        dict(target_ids=torch.full_like(ids, -100)),  # empty
    ]
    for override in bad:
        kw = dict(outputs=outputs, target_ids=ids, embedding_weight=weight) | override
        with pytest.raises(HeadlessError):
            cwt_loss(kw.pop("outputs"), kw.pop("target_ids"), kw.pop("embedding_weight"), **kw)
    with pytest.raises(HeadlessError, match="one device"):  # meta stands in for a GPU
        cwt_loss(outputs, ids, weight.to("meta"))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_allow_empty_gives_a_connected_zero(reduction):
    outputs, ids, weight = _batch(K=8, V=5, D=4, ignore_every=0)
    out = cwt_loss(outputs, torch.full_like(ids, -100), weight, allow_empty=True, reduction=reduction)
    assert out.num_targets.item() == 0 and (out.loss == 0).all() and out.loss.requires_grad
    out.loss.sum().backward()
    assert (outputs.grad == 0).all() and (weight.grad == 0).all()


def _largest(K, V, D, path, block):
    outputs, ids, weight = _batch(K=K, V=V, D=D, ignore_every=0, dtype=torch.float32)
    ids = torch.arange(K) % V  # every token present: U = V
    with LargestTensor() as mode:
        cwt_loss(outputs, ids, weight, implementation=path, chunk_size=block).loss.backward()
    return mode.largest_numel


def test_chunked_memory_does_not_grow_with_K_times_U():
    V, D, block = 1000, 8, 64
    small, large = _largest(2048, V, D, "chunked", block), _largest(4096, V, D, "chunked", block)
    assert small == large <= block * V  # K·U doubled, the largest tensor did not move
    assert _largest(2048, V, D, "dedup", block) >= 2048 * V  # the probe does see K×U tensors


def test_linear_logsumexp_tiles_over_classes():
    """Online log-sum-exp across class blocks (what vanilla CE relies on) equals the dense one."""
    g = torch.Generator().manual_seed(0)
    o = torch.randn(50, 6, generator=g, dtype=torch.float64, requires_grad=True)
    c = torch.randn(70, 6, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(70, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 70, (50,), generator=g)
    for in_stats in (True, False):
        dense = linear_logsumexp(o, c, b, labels, scale=0.3, implementation="dense", bias_in_stats=in_stats)
        tiled = linear_logsumexp(o, c, b, labels, scale=0.3, chunk_size=7, class_chunk_size=9,
                                 bias_in_stats=in_stats)
        for x, y in zip(dense, tiled):
            torch.testing.assert_close(x, y, rtol=0, atol=1e-12)
        w = torch.randn(50, generator=g, dtype=torch.float64)
        gd = torch.autograd.grad((dense[0] * w).sum(), [o, c, b])
        gt = torch.autograd.grad((tiled[0] * w).sum(), [o, c, b])
        for x, y in zip(gd, gt):
            torch.testing.assert_close(x, y, rtol=0, atol=1e-12)


def test_public_api():
    assert headless.cwt_loss is cwt_loss and headless.LossOutput is LossOutput
    outputs, ids, weight = _batch(K=20, V=10, D=4)
    torch.testing.assert_close(cwt_loss(outputs, ids, weight).loss,
                               cwt_loss(outputs, ids, weight, implementation="reference").loss)


def test_bench_script_runs(capsys):
    spec = importlib.util.spec_from_file_location("bench_losses", Path(__file__).parents[1] / "scripts" / "bench_losses.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.main(["--sizes", "32", "--dim", "4", "--vocab", "50", "--repeats", "1"])
    printed = capsys.readouterr().out
    assert len(rows) == 6 and all(r["seconds"] > 0 and r["largest_mib"] > 0 for r in rows)
    assert "cwt/chunked" in printed and "vanilla/torch" in printed


@pytest.mark.parametrize("path", ["auto", "chunked", "dedup", "bounded", "reference"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("temperature", [1.0, 0.05])
def test_static_rows_equals_the_selected_rows(path, reduction, temperature):
    """static_rows (no host sync for the selection) gives the same value, gradients and metrics."""
    outputs, ids, weight = _batch(K=300, V=50, ignore_every=5)
    ids = ids.view(3, 100)
    ref = _loss_and_grads(outputs.view(3, 100, -1), ids, weight, implementation="reference",
                          temperature=temperature, reduction=reduction)
    got = _loss_and_grads(outputs.view(3, 100, -1), ids, weight, implementation=path, temperature=temperature,
                          reduction=reduction, static_rows=True, chunk_size=37)
    _assert_same(got, ref)
    assert got[0].accuracy == ref[0].accuracy and int(got[0].num_unique) == int(ref[0].num_unique)
    assert int(got[0].num_targets) == int(ref[0].num_targets) == 240


@pytest.mark.parametrize("path", ["auto", "reference", "bounded"])
def test_static_rows_with_every_target_ignored_and_with_the_last_token_id(path):
    outputs, ids, weight = _batch(K=40, V=10, ignore_every=0)
    ids[:] = 9  # the largest id sorts next to the "ignored" class, which must not merge with it
    ids[::3] = -100
    ref = _loss_and_grads(outputs, ids, weight, implementation="reference", reduction="sum")
    got = _loss_and_grads(outputs, ids, weight, static_rows=True, reduction="sum", implementation=path)
    _assert_same(got, ref)
    assert int(got[0].num_unique) == 1
    none = torch.full_like(ids, -100)
    with pytest.raises(HeadlessError, match="ignored"):
        cwt_loss(outputs, none, weight, static_rows=True, implementation=path)
    out = cwt_loss(outputs, none, weight, static_rows=True, allow_empty=True, reduction="sum",
                   implementation=path)
    out.loss.backward()
    assert float(out.loss.detach()) == 0 and int(out.num_targets) == 0 and int(out.num_unique) == 0
    assert torch.equal(outputs.grad, torch.zeros_like(outputs)) and torch.isfinite(weight.grad).all()


def test_static_rows_falls_back_where_it_does_not_apply():
    outputs, ids, weight = _batch(K=60, V=20)
    for kw in [dict(reduction="none"), dict(max_negatives=5)]:
        gen = dict(generator=torch.Generator().manual_seed(0)) if "max_negatives" in kw else {}
        a = cwt_loss(outputs, ids, weight, static_rows=True, **kw, **gen).loss
        gen = dict(generator=torch.Generator().manual_seed(0)) if "max_negatives" in kw else {}
        b = cwt_loss(outputs, ids, weight, **kw, **gen).loss
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def _with_unique(count, K=400, V=1000, ignore_every=6, seed=0):
    """A batch whose kept targets hold exactly `count` unique ids (many duplicates, some ignored)."""
    outputs, ids, weight = _batch(K=K, V=V, ignore_every=0, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    pool = torch.randperm(V, generator=g)[:count]
    ids = pool[torch.arange(K) % count][torch.randperm(K, generator=g)]
    ids[(torch.arange(K) % ignore_every == 0) & (torch.arange(K) >= 2 * count)] = -100
    assert ids[ids != -100].unique().numel() == count
    return outputs, ids.view(4, K // 4), weight


def test_bounded_room():
    """The room: the bound capped at min(V, K) (which no micro-batch can exceed), rounded up to 128."""
    from headless.losses.cwt import unique_room

    assert unique_room(131_072, 50_304) == 50_304 and unique_room(16_384, 256_000) == 16_384
    assert unique_room(131_072, 50_304, 30_000) == 30_080 and unique_room(100, 1000, 10**6) == 128
    assert unique_room(300, 50) == 128


@pytest.mark.parametrize("count", [127, 128])
def test_bounded_is_exact_up_to_a_full_room(count):
    """With the unique targets filling the room to its last class: the reference's value, gradients,
    accuracy and unique count, and no overflow."""
    outputs, ids, weight = _with_unique(count)
    ref = _loss_and_grads(outputs, ids.reshape(-1), weight, implementation="reference", reduction="sum",
                          temperature=0.1)
    got = _loss_and_grads(outputs, ids.reshape(-1), weight, implementation="bounded", reduction="sum",
                          static_rows=True, unique_bound=128, temperature=0.1)
    _assert_same(got, ref)
    assert got[0].accuracy == ref[0].accuracy and int(got[0].num_unique) == count
    assert int(got[0].unique_overflow) == 0


def test_bounded_overflow_poisons_the_loss_and_reports_the_count():
    """One unique target more than the room: no branch in a graph, so the loss is NaN (a trainer
    skips the step), the gradients stay finite, and `unique_overflow` carries the count."""
    outputs, ids, weight = _with_unique(129)
    out, g_out, g_w = _loss_and_grads(outputs, ids.reshape(-1), weight, implementation="bounded",
                                      reduction="sum", static_rows=True, unique_bound=100)
    assert math.isnan(float(out.loss.detach())) and int(out.unique_overflow) == int(out.num_unique) == 129
    assert torch.isfinite(g_out).all() and torch.isfinite(g_w).all()


def test_bounded_compiles_as_one_graph():
    """fullgraph=True: no torch.unique, no data-dependent size, no host read (any of them would
    break the graph); the compiled value and gradients are the reference's. aot_eager traces
    forward and backward as Inductor would, without its minutes of code generation on a CPU."""
    outputs, ids, weight = _with_unique(90)

    def run(o, t, w):
        out = cwt_loss(o, t, w, implementation="bounded", reduction="sum", static_rows=True, check_ids=False,
                       allow_empty=True, unique_bound=128)
        return out.loss, out.accuracy, out.num_unique, out.unique_overflow

    compiled = torch.compile(run, backend="aot_eager", fullgraph=True)
    loss, accuracy, unique, overflow = compiled(outputs.view(4, 100, -1), ids, weight)
    g_out, g_w = torch.autograd.grad(loss, [outputs, weight])
    ref = _loss_and_grads(outputs, ids.reshape(-1), weight, implementation="reference", reduction="sum")
    _assert_same(((LossOutput(loss, None, None, None)), g_out, g_w), ref)
    assert float(accuracy) == float(ref[0].accuracy) and int(unique) == 90 and int(overflow) == 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bounded_on_gpu_bf16_matches_float64_and_never_syncs_when_compiled():
    """bf16 under autocast, compiled whole with Inductor: within bf16's tolerance of the float64
    reference (the K x K pairs), about as close as the K x K path itself at bf16, and no host sync
    (CUDA's sync debug mode "error" raises on any)."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    K, V, D = 4 * 2048, 5000, 256
    E = (torch.randn(V, D, device="cuda", generator=gen) * 0.1).requires_grad_()
    o = (torch.randn(4, 2048, D, device="cuda", generator=gen) * 0.1).requires_grad_()
    ids = torch.randint(0, V // 2, (4, 2048), device="cuda", generator=gen)
    ids[:, -1] = -100
    ids[1, 100:300] = -100

    def run(o, t, w, impl):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = cwt_loss(o, t, w, implementation=impl, reduction="sum", static_rows=True, check_ids=False,
                           allow_empty=True)
        return out.loss, out.num_unique, out.unique_overflow

    ref = cwt_loss(o.double().reshape(K, D), ids.reshape(K), E.double(), implementation="reference", reduction="sum")
    g_ref = torch.autograd.grad(ref.loss, [o, E])
    errors = {}
    for impl in ("reference", "bounded"):
        compiled = torch.compile(run, fullgraph=True)
        for _ in range(2):  # the first call compiles (and autotunes)
            loss, unique, overflow = compiled(o, ids, E, impl)
            grads = torch.autograd.grad(loss, [o, E])
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")  # any host read raises
        try:
            loss, unique, overflow = compiled(o, ids, E, impl)
            grads = torch.autograd.grad(loss, [o, E])
        finally:
            torch.cuda.set_sync_debug_mode("default")
        errors[impl] = [abs(float(loss) - float(ref.loss)) / abs(float(ref.loss))] + \
            [float((g.double() - r).norm() / r.norm()) for g, r in zip(grads, g_ref)]
        assert int(unique) == int(ref.num_unique)
    assert int(overflow) == 0
    assert max(errors["bounded"]) < 2e-2, errors
    # bf16's own error, as the K x K path makes it (a wrong count or class would be off by O(1))
    assert all(b <= 3 * r + 1e-4 for b, r in zip(errors["bounded"], errors["reference"])), errors


def _with_vectors(outputs, ids, weight, **kw):
    """cwt_loss with the targets' rows looked up beforehand (`target_vectors`): gradients through
    that lookup, as a model that looks up inputs and targets in one call gets them."""
    vectors = F.embedding(ids.clamp_min(0), weight)  # ignored positions: row 0, never used
    out = cwt_loss(outputs, ids, weight, target_vectors=vectors, **kw)
    loss = out.loss.sum() if out.loss.dim() else out.loss
    g_out, g_w = torch.autograd.grad(loss, [outputs, weight])
    return out, g_out, g_w


@pytest.mark.parametrize("static_rows", [False, True])
@pytest.mark.parametrize("path", ["reference", "dedup", "bounded", "chunked", "auto"])
@pytest.mark.parametrize("temperature", [1.0, 0.05])
def test_target_vectors_give_the_weight_paths_value_and_gradients(path, static_rows, temperature):
    """target_vectors=E[ids]: every path takes its class vectors from the given rows, with the value,
    gradients (outputs, and the weight through the lookup) and metrics of indexing the weight."""
    outputs, ids, weight = _batch(K=300, V=50, ignore_every=5)
    outputs, ids = outputs.view(3, 100, -1), ids.view(3, 100)
    kw = dict(implementation=path, temperature=temperature, reduction="sum", static_rows=static_rows, chunk_size=37)
    want = _loss_and_grads(outputs, ids, weight, **kw)
    got = _with_vectors(outputs, ids, weight, **kw)
    _assert_same(got, want, tol=1e-12)
    assert got[0].accuracy == want[0].accuracy and int(got[0].num_unique) == int(want[0].num_unique)
    assert int(got[0].num_targets) == int(want[0].num_targets) == 240


@pytest.mark.parametrize("kw", [dict(reduction="none"), dict(reduction="mean", max_negatives=7),
                                dict(reduction="sum", implementation="bounded", static_rows=True, unique_bound=128),
                                dict(reduction="sum", implementation="reference", static_rows=True)])
def test_target_vectors_on_the_other_branches(kw):
    """Unselected rows (reduction none), sampled negatives, a full bounded room with ignored targets
    next to the last id: the same as indexing the weight."""
    outputs, ids, weight = _with_unique(127)
    ids = ids.reshape(-1)
    ids[ids == ids.max()] = weight.shape[0] - 1  # the last id sorts next to the ignored ones

    def gen():
        return {"generator": torch.Generator().manual_seed(0)} if "max_negatives" in kw else {}

    want = _loss_and_grads(outputs, ids, weight, **kw, **gen())
    got = _with_vectors(outputs, ids, weight, **kw, **gen())
    _assert_same(got, want, tol=1e-12)


def test_target_vectors_compile_as_one_graph_and_are_checked():
    outputs, ids, weight = _with_unique(90)

    def run(o, t, w):
        out = cwt_loss(o, t, w, implementation="bounded", reduction="sum", static_rows=True, check_ids=False,
                       allow_empty=True, unique_bound=128, target_vectors=F.embedding(t.clamp_min(0), w))
        return out.loss

    loss = torch.compile(run, backend="aot_eager", fullgraph=True)(outputs.view(4, 100, -1), ids, weight)
    got = (LossOutput(loss, None, None, None), *torch.autograd.grad(loss, [outputs, weight]))
    _assert_same(got, _loss_and_grads(outputs, ids.reshape(-1), weight, implementation="reference", reduction="sum"))
    flat = ids.reshape(-1)
    with pytest.raises(HeadlessError, match=r"target_vectors must be .* shape \(400, 16\)"):
        cwt_loss(outputs, flat, weight, target_vectors=weight[:3])
    with pytest.raises(HeadlessError, match="target_vectors cannot be used with a group"):
        cwt_loss(outputs, flat, weight, target_vectors=weight[flat.clamp_min(0)], group=object())
