"""The fused Triton linear CE against a float64 autograd reference (CPU via TRITON_INTERPRET, and GPU)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from headless.losses.cwt_triton import linear_ce_triton, triton_available

HAS_TRITON = importlib.util.find_spec("triton") is not None


def reference(outputs, classes, bias, labels, scale):
    """loss_k = logsumexp_u(scale·o_k·c_u + b_u) − (scale·o_k·c_{y_k} + b_{y_k}), 0 when ignored."""
    scores = scale * outputs @ classes.T
    if bias is not None:
        scores = scores + bias.to(scores.dtype)
    return F.cross_entropy(scores, labels, reduction="none", ignore_index=-100)


def compare(K, U, D, *, dtype, device, bias=True, scale=0.7, seed=0):
    """Relative errors (loss, d_outputs, d_classes) vs float64, with a random upstream gradient."""
    gen = torch.Generator().manual_seed(seed)
    o = torch.randn(K, D, generator=gen) * 0.5
    c = torch.randn(U, D, generator=gen) * 0.5
    b = torch.randn(U, generator=gen).abs().log1p() if bias else None  # like log(count)
    y = torch.randint(0, U, (K,), generator=gen)
    y[torch.rand(K, generator=gen) < 0.2] = -100
    w = torch.randn(K, generator=gen)
    o1 = o.to(device, dtype).requires_grad_()
    c1 = c.to(device, dtype).requires_grad_()
    loss = linear_ce_triton(o1, c1, None if b is None else b.to(device), y.to(device), scale)
    (loss * w.to(device)).sum().backward()
    # the reference sees the same (rounded) inputs, in float64
    o2 = o1.detach().cpu().double().requires_grad_()
    c2 = c1.detach().cpu().double().requires_grad_()
    ref = reference(o2, c2, b, y, scale)
    (ref * w.double()).sum().backward()

    def rel(a, r):
        # relative, floored at 0.1 (these gradients have norms of 3 to 14): with one class (U = 1) the
        # exact gradient is 0 and the kernels return fp32 rounding noise (forward and backward dots differ)
        return ((a.detach().cpu().double() - r).norm() / r.norm().clamp_min(0.1)).item()

    ignored = y == -100
    return {
        "loss": rel(loss, ref),
        "d_outputs": rel(o1.grad, o2.grad),
        "d_classes": rel(c1.grad, c2.grad),
        "dtype_ok": loss.dtype == torch.float32 and o1.grad.dtype == dtype and c1.grad.dtype == dtype,
        "ignored_zero": bool((loss.detach().cpu()[ignored] == 0).all()
                             and (o1.grad.cpu()[ignored] == 0).all()),
    }


def test_triton_unavailable_on_cpu():
    assert not triton_available("cpu")
    if not torch.cuda.is_available():
        assert not triton_available()


def test_rejects_bad_shapes():
    o, c = torch.randn(4, 8), torch.randn(3, 8)
    with pytest.raises(ValueError):
        linear_ce_triton(o, torch.randn(3, 7), None, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError):
        linear_ce_triton(o, c, None, torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError):
        linear_ce_triton(o, c, torch.zeros(4), torch.zeros(4, dtype=torch.long))


_INTERPRETER_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    sys.path.insert(0, sys.argv[1])
    from test_cwt_triton import compare
    cases = [(37, 29, 40, True), (50, 70, 33, False), (5, 130, 20, True), (16, 1, 16, True)]
    out = [dict(shape=c[:3], **compare(*c[:3], dtype=torch.float32, device="cpu", bias=c[3], seed=i))
           for i, c in enumerate(cases)]
    print(json.dumps(out))
    """
)


@pytest.mark.skipif(not HAS_TRITON, reason="triton not installed (pip install triton) - the interpreter "
                    "test needs it; the GPU test covers the kernel on CUDA")
def test_matches_float64_reference_in_triton_interpreter():
    """Tiny blocks (16) in interpreter mode: ragged K, U, D tails, several class chunks,
    U=1, no bias."""
    env = dict(os.environ, TRITON_INTERPRET="1")  # must be set before triton is imported
    proc = subprocess.run([sys.executable, "-c", _INTERPRETER_SCRIPT, os.path.dirname(__file__)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for case in json.loads(proc.stdout.strip().splitlines()[-1]):
        assert case["dtype_ok"] and case["ignored_zero"], case
        for key in ("loss", "d_outputs", "d_classes"):
            assert case[key] < 1e-5, case  # fp32 arithmetic, exact dots in the interpreter


_STATIC_ROWS_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    from headless.losses import cwt, cwt_loss
    cwt.triton_usable = lambda tensor: True  # the interpreter runs the kernels on CPU tensors
    out = []
    for dtype in (torch.float32, torch.float64):
        g = torch.Generator().manual_seed(0)
        E = torch.randn(40, 24, generator=g, dtype=dtype).requires_grad_()
        o = torch.randn(3, 30, 24, generator=g, dtype=dtype).requires_grad_()
        ids = torch.randint(0, 40, (3, 30), generator=g)
        ids[:, ::4] = -100
        ids[1, :3] = 39  # the largest id, next to the "ignored" class
        res = []
        for kw in (dict(implementation="reference"),
                   dict(implementation="triton", static_rows=True)):
            E.grad = o.grad = None
            r = cwt_loss(o, ids, E, reduction="sum", temperature=0.5, **kw)
            r.loss.backward()
            res.append((r.loss.detach().double(), o.grad.double(), E.grad.double(), int(r.num_unique),
                        float(r.accuracy), int(r.num_targets)))
        (l0, o0, e0, u0, a0, n0), (l1, o1, e1, u1, a1, n1) = res
        out.append(dict(dtype=str(dtype), loss=float((l1 - l0).abs() / l0.abs()),
                        d_outputs=float((o1 - o0).norm() / o0.norm()), d_embedding=float((e1 - e0).norm() / e0.norm()),
                        same_counts=(u0, n0) == (u1, n1), accuracy=(a0, a1)))
    print(json.dumps(out))
    """
)


@pytest.mark.skipif(not HAS_TRITON, reason="triton not installed (pip install triton)")
def test_static_rows_cwt_matches_the_reference_in_triton_interpreter():
    """cwt_loss(static_rows=True) with the kernel (ignored rows as label -100, the excluded class):
    the reference value, gradients and metrics (float32 and float64 inputs; the kernel accumulates
    in fp32)."""
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", _STATIC_ROWS_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for case in json.loads(proc.stdout.strip().splitlines()[-1]):
        assert case["same_counts"] and case["accuracy"][0] == case["accuracy"][1], case
        for key in ("loss", "d_outputs", "d_embedding"):
            assert case[key] < 1e-5, case


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 3e-3), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("K,U,D", [(1000, 300, 768), (4093, 5003, 200), (300, 50304, 768), (2047, 1, 200)])
def test_matches_float64_reference_on_gpu(K, U, D, dtype, tol):
    """tf32 (fp32 inputs) and bf16 operands with fp32 accumulation, on ragged shapes."""
    assert triton_available()
    for seed in range(2):  # fresh inputs: the same function on any input
        errs = compare(K, U, D, dtype=dtype, device="cuda", bias=seed == 0, scale=1.0 / (1 + seed),
                       seed=seed)
        assert errs["dtype_ok"] and errs["ignored_zero"], errs
        assert errs["loss"] < tol / 4 and errs["d_outputs"] < tol and errs["d_classes"] < tol, errs


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gradient_reaches_embedding_through_index_and_is_deterministic():
    """CWT usage: classes = E[unique ids], b = log(count); equals the paper's K×K cross-entropy."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    E = torch.randn(1000, 200, device="cuda", generator=gen).requires_grad_()
    o = torch.randn(3000, 200, device="cuda", generator=gen).requires_grad_()
    tgt = torch.randint(0, 200, (3000,), device="cuda", generator=gen)
    uniq, inv, counts = torch.unique(tgt, return_inverse=True, return_counts=True)
    grads = []
    for _ in range(2):
        E.grad = o.grad = None
        linear_ce_triton(o, E[uniq], counts.float().log(), inv, 1.0).mean().backward()
        grads.append((o.grad.clone(), E.grad.clone()))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])
    o2, E2 = o.detach().double().requires_grad_(), E.detach().double().requires_grad_()
    F.cross_entropy(o2 @ E2[tgt].T, torch.arange(3000, device="cuda")).backward()  # paper's form
    for got, ref in ((grads[0][0], o2.grad), (grads[0][1], E2.grad)):  # fp32 inputs: tf32 dots
        assert (got.double() - ref).norm() / ref.norm() < 5e-3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cwt_static_rows_on_gpu_matches_the_reference():
    """cwt_loss(static_rows=True) with the kernel: ignored rows as label -100, the excluded class."""
    from headless.losses import cwt_loss

    gen = torch.Generator(device="cuda").manual_seed(0)
    E = (torch.randn(5000, 256, device="cuda", generator=gen) * 0.1).requires_grad_()
    o = (torch.randn(4, 1024, 256, device="cuda", generator=gen) * 0.1).requires_grad_()
    ids = torch.randint(0, 5000, (4, 1024), device="cuda", generator=gen)
    ids[:, -1] = -100
    ids[1, 100:300] = -100
    results = []
    for kw in (dict(implementation="reference"),
               dict(implementation="triton", static_rows=True)):
        E.grad = o.grad = None
        out = cwt_loss(o, ids, E, reduction="sum", **kw)
        out.loss.backward()
        results.append((out.loss.detach(), o.grad.clone(), E.grad.clone(), int(out.num_unique), out.accuracy))
    (l0, go0, ge0, u0, a0), (l1, go1, ge1, u1, a1) = results
    assert u0 == u1 and abs(float(a0) - float(a1)) < 1e-3
    torch.testing.assert_close(l1, l0, rtol=2e-3, atol=1e-2)
    torch.testing.assert_close(go1, go0, rtol=2e-2, atol=2e-3)
    torch.testing.assert_close(ge1, ge0, rtol=2e-2, atol=2e-3)
