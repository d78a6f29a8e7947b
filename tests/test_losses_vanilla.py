"""Vanilla CE and the Tab. 6 ablations: every path equals F.cross_entropy on the logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import headless
from headless.errors import HeadlessError
from headless.losses import ce_plus_cwt_loss, cwt_loss, nce_untied_loss, vanilla_ce_loss
from headless.losses import vanilla

PATHS = ["reference", "chunked"] + (["torch"] if hasattr(F, "linear_cross_entropy") else [])


def _batch(K=120, V=70, D=12, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    outputs = torch.randn(3, K // 3, D, generator=g, dtype=dtype, requires_grad=True)
    weight = torch.randn(V, D, generator=g, dtype=dtype, requires_grad=True)
    bias = torch.randn(V, generator=g, dtype=dtype, requires_grad=True)
    ids = torch.randint(0, V, (3, K // 3), generator=g)
    ids[:, ::5] = -100
    return outputs, ids, weight, bias


def _grads(out, *tensors):
    loss = out.loss.sum() if out.loss.dim() else out.loss
    return torch.autograd.grad(loss, [t for t in tensors if t is not None])


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_paths_equal_cross_entropy_float64(path, with_bias, reduction):
    outputs, ids, weight, bias = _batch()
    bias = bias if with_bias else None
    logits = outputs @ weight.t() + (bias if with_bias else 0)
    expected = F.cross_entropy(logits.reshape(-1, 70), ids.reshape(-1), reduction=reduction)
    if reduction == "none":
        expected = expected.reshape(ids.shape)
    got = vanilla_ce_loss(outputs, ids, weight, bias, implementation=path, reduction=reduction, chunk_size=7)
    torch.testing.assert_close(got.loss, expected, rtol=0, atol=1e-9)
    for a, b in zip(_grads(got, outputs, weight, bias),
                    torch.autograd.grad(expected.sum(), [t for t in (outputs, weight, bias) if t is not None])):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)
    kept = ids != -100
    top1 = (logits.argmax(-1) == ids)[kept].double().mean()
    assert got.accuracy.item() == pytest.approx(top1.item()) and got.num_targets.item() == kept.sum()


def test_chunked_tiles_over_the_vocabulary(monkeypatch):
    """Vocabulary larger than one class block: the online log-sum-exp across blocks is exercised."""
    import headless.losses.cwt as cwt_module

    monkeypatch.setattr(cwt_module, "DEFAULT_CLASS_CHUNK", 16)
    outputs, ids, weight, bias = _batch()
    ref = vanilla_ce_loss(outputs, ids, weight, bias, implementation="reference")
    got = vanilla_ce_loss(outputs, ids, weight, bias, implementation="chunked", chunk_size=11)
    torch.testing.assert_close(got.loss, ref.loss, rtol=0, atol=1e-9)
    for a, b in zip(_grads(got, outputs, weight, bias), _grads(ref, outputs, weight, bias)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


def test_auto_picks_dense_logits_only_when_small(monkeypatch):
    outputs, ids, weight, bias = _batch(dtype=torch.float32)
    assert vanilla._auto(outputs, 100, 70) == "reference"
    assert vanilla._auto(outputs, 16384, 50_000) == "chunked"  # 3.3 GB of float32 logits
    torch.testing.assert_close(vanilla_ce_loss(outputs, ids, weight, bias).loss,
                               vanilla_ce_loss(outputs, ids, weight, bias, implementation="chunked").loss)


def test_bf16_inputs_accumulate_in_float32():
    outputs, ids, weight, bias = _batch(dtype=torch.float32)
    ref = vanilla_ce_loss(outputs.double(), ids, weight.double(), bias.double()).loss
    for path in PATHS:
        o16 = outputs.detach().bfloat16().requires_grad_()
        out = vanilla_ce_loss(o16, ids, weight.detach().bfloat16(), bias.detach().bfloat16(), implementation=path)
        out.loss.backward()
        assert out.loss.dtype == torch.float32 and o16.grad.dtype == torch.bfloat16
        assert out.loss.item() == pytest.approx(ref.item(), rel=2e-2)


def test_errors_and_empty_batches():
    outputs, ids, weight, bias = _batch()
    with pytest.raises(HeadlessError, match="bias"):
        vanilla_ce_loss(outputs, ids, weight, bias[:5])
    with pytest.raises(HeadlessError, match="implementation"):
        vanilla_ce_loss(outputs, ids, weight, implementation="softmax")
    with pytest.raises(HeadlessError, match="triton"):
        vanilla_ce_loss(outputs, ids, weight, implementation="triton")
    with pytest.raises(HeadlessError, match="ignored"):
        vanilla_ce_loss(outputs, torch.full_like(ids, -100), weight)
    empty = vanilla_ce_loss(outputs, torch.full_like(ids, -100), weight, bias, allow_empty=True)
    empty.loss.backward()
    assert empty.loss.item() == 0 and (outputs.grad == 0).all() and (bias.grad == 0).all()


def test_ce_plus_cwt_is_the_sum():
    outputs, ids, weight, bias = _batch()
    head = weight.detach().clone().requires_grad_()
    both = ce_plus_cwt_loss(outputs, ids, head, outputs, ids, weight, head_bias=bias, temperature=0.5)
    ce = vanilla_ce_loss(outputs, ids, head, bias)
    cwt = cwt_loss(outputs, ids, weight, temperature=0.5)
    torch.testing.assert_close(both.loss, ce.loss + cwt.loss)
    assert both.accuracy == ce.accuracy and both.num_unique == cwt.num_unique
    g_head, g_emb = torch.autograd.grad(both.loss, [head, weight])
    torch.testing.assert_close(g_head, torch.autograd.grad(ce.loss, head)[0])
    torch.testing.assert_close(g_emb, torch.autograd.grad(cwt.loss, weight)[0])


def test_nce_untied_uses_its_own_target_matrix():
    outputs, ids, weight, _ = _batch()
    targets = torch.randn_like(weight, requires_grad=True)
    nce = nce_untied_loss(outputs, ids, targets, implementation="dedup")
    torch.testing.assert_close(nce.loss, cwt_loss(outputs, ids, targets, implementation="reference").loss)
    assert not torch.allclose(nce.loss, cwt_loss(outputs, ids, weight).loss)
    (g,) = torch.autograd.grad(nce.loss, [targets])
    assert g.abs().sum() > 0


def test_public_api():
    assert headless.vanilla_ce_loss is vanilla_ce_loss


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_static_rows_equals_the_selected_rows(path, reduction):
    """static_rows (score every row, zero the ignored ones: no selection) is the same loss, gradients
    and accuracy as selecting the kept rows."""
    outputs, ids, weight, bias = _batch()
    ref = vanilla_ce_loss(outputs, ids, weight, bias, implementation="reference", reduction=reduction)
    got = vanilla_ce_loss(outputs, ids, weight, bias, implementation=path, reduction=reduction,
                          static_rows=True, chunk_size=7)
    torch.testing.assert_close(got.loss, ref.loss, rtol=0, atol=1e-9)
    for a, b in zip(_grads(got, outputs, weight, bias), _grads(ref, outputs, weight, bias)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)
    assert int(got.num_targets) == int(ref.num_targets) == 96
    assert float(got.accuracy) == pytest.approx(float(ref.accuracy))
    none = torch.full_like(ids, -100)
    with pytest.raises(HeadlessError, match="ignored"):
        vanilla_ce_loss(outputs, none, weight, bias, static_rows=True)
    empty = vanilla_ce_loss(outputs, none, weight, bias, static_rows=True, allow_empty=True, reduction="sum")
    assert float(empty.loss) == 0 and int(empty.num_targets) == 0
    assert all(float(g.abs().sum()) == 0 for g in _grads(empty, outputs, weight, bias))
