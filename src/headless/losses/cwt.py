r"""Contrastive Weight Tying (CWT) loss, Godey et al. (ICLR 2024), and the linear-CE core it shares.

The paper's loss over the K = |S| scored positions, with s_kj = o_k·e(y_j)/τ, is

    L = (1/K) Σ_k [ log Σ_j exp(s_kj) − s_kk ]  =  cross_entropy(O @ E[y]ᵀ / τ, arange(K))

("reference" below, K×K scores). Every position j whose token is u contributes the *same* logit
z_ku = o_k·e_u/τ, so with U unique tokens and their counts n_u (the **dedup derivation**):

    log Σ_j exp(s_kj) = log Σ_u n_u exp(z_ku) = logsumexp_u(z_ku + log n_u)
    s_kk = z_{k,y_k} = (z_{k,y_k} + log n_{y_k}) − log n_{y_k}
    ⇒ L = mean_k CE(z_k + log n, y_k) + mean_k log n_{y_k}

i.e. a linear cross-entropy over U classes with bias log(count) plus a constant: the same value and
(the log-counts being constants) the same gradients, for K·U instead of K·K work ("dedup"). The
"chunked" path computes the same log-sum-exp tile by tile (online log-sum-exp, recomputation in
backward), so no K×U tensor ever exists; "triton" runs the GPU kernel of `cwt_triton`. "bounded"
is "dedup" with a static number of classes (`_static_bounded`), so that it compiles into one graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from headless.errors import HeadlessError
from headless.loss_kinds import unique_room

REDUCTIONS = ("mean", "sum", "none")
CWT_IMPLEMENTATIONS = ("auto", "reference", "dedup", "bounded", "chunked", "triton", "liger", "cce", "torch")
GATHER_MODES = ("ids", "embeddings")
DEFAULT_CHUNK_SIZE = 1024  # rows of outputs per block of the chunked path
DEFAULT_CLASS_CHUNK = 8192  # classes per block of the chunked path (online log-sum-exp across them)


@dataclass
class LossOutput:
    """A loss and the cheap metrics computed on the way (see docs/reference/architecture.md)."""

    loss: Tensor  # scalar for reduction "mean"/"sum", target_ids.shape for "none"
    num_targets: Tensor  # long scalar: non-ignored positions on this rank
    accuracy: Tensor | None  # detached float scalar: top-1 (in-batch retrieval for CWT)
    num_unique: Tensor | None  # detached long scalar: unique target ids scored against
    # long scalar, "bounded" path only: the unique targets of a micro-batch that had more than the
    # path's static room (its loss is then NaN), else 0; read by the trainer on log steps
    unique_overflow: Tensor | None = None


# --------------------------------------------------------------------------- input checking


def check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise HeadlessError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")


def accumulation_dtype(*tensors: Tensor | None) -> torch.dtype:
    """float64 if any input is float64, else float32: the softmax never accumulates in 16 bits."""
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


def select_rows(fn: str, outputs: Tensor, target_ids: Tensor, weight: Tensor, ignore_index: int,
                weight_name: str, bias: Tensor | None = None, check_ids: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """Validate and return (rows of kept positions, outputs[K, D], targets[K]) from [..., D] / [...].

    check_ids=False skips the range check of the ids, which reads them on the host (a GPU
    synchronisation): for trainers whose data were checked against the vocabulary beforehand."""
    check_inputs(fn, outputs, target_ids, weight, weight_name, bias)
    flat_ids = target_ids.reshape(-1).long()
    rows = (flat_ids != ignore_index).nonzero().squeeze(1)
    ids = flat_ids[rows]
    if check_ids and ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= weight.shape[0]):
        raise HeadlessError(f"{fn}: target ids must lie in [0, {weight.shape[0]}) or equal "
                            f"ignore_index={ignore_index}, got values in [{int(ids.min())}, {int(ids.max())}]")
    return rows, outputs.reshape(-1, outputs.shape[-1])[rows], ids


def check_inputs(fn: str, outputs: Tensor, target_ids: Tensor, weight: Tensor, weight_name: str,
                 bias: Tensor | None = None) -> None:
    """Types, shapes and devices of a loss's inputs (no host sync)."""
    if not isinstance(outputs, Tensor) or not outputs.is_floating_point() or outputs.dim() < 1:
        raise HeadlessError(f"{fn}: outputs must be a floating-point tensor [..., D]")
    if not isinstance(weight, Tensor) or not weight.is_floating_point() or weight.dim() != 2:
        raise HeadlessError(f"{fn}: {weight_name} must be a floating-point matrix [V, D]")
    if not isinstance(target_ids, Tensor) or target_ids.is_floating_point() or target_ids.is_complex() \
            or target_ids.dtype == torch.bool:
        raise HeadlessError(f"{fn}: target_ids must be an integer tensor, got {getattr(target_ids, 'dtype', type(target_ids))}")
    if tuple(outputs.shape[:-1]) != tuple(target_ids.shape):
        raise HeadlessError(f"{fn}: outputs {tuple(outputs.shape)} and target_ids {tuple(target_ids.shape)} "
                            "must share their leading dimensions")
    if outputs.shape[-1] != weight.shape[1]:
        raise HeadlessError(f"{fn}: outputs have D={outputs.shape[-1]} but {weight_name} has D={weight.shape[1]}")
    tensors = {"outputs": outputs, "target_ids": target_ids, weight_name: weight}
    if bias is not None:
        if not bias.is_floating_point() or tuple(bias.shape) != (weight.shape[0],):
            raise HeadlessError(f"{fn}: the bias must be a floating-point vector [{weight.shape[0]}]")
        tensors["bias"] = bias
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        raise HeadlessError(f"{fn}: all tensors must be on one device, got "
                            + ", ".join(f"{k} on {v}" for k, v in devices.items()))


def device_scalar(value: int, device: torch.device) -> Tensor:
    """A long scalar made on the device (a fill kernel): `torch.tensor(value, device=cuda)` copies
    from pageable memory, which waits for the queued GPU work like a synchronisation."""
    return torch.full((), value, dtype=torch.long, device=device)


def reduce_rows(losses: Tensor, rows: Tensor, target_ids: Tensor, reduction: str) -> Tensor:
    """Apply `reduction` to per-row losses; "none" scatters back to target_ids.shape (0 at ignored)."""
    if reduction == "none":
        full = losses.new_zeros(target_ids.numel()).index_copy(0, rows, losses)
        return full.reshape(target_ids.shape)
    total = losses.sum()
    return total / losses.numel() if reduction == "mean" else total


def empty_output(fn: str, allow_empty: bool, ignore_index: int, target_ids: Tensor, anchors: list[Tensor],
                 acc: torch.dtype, reduction: str) -> LossOutput:
    """Zero loss for a batch with no targets, still connected to the graph (so backward() works)."""
    if not allow_empty:
        raise HeadlessError(f"{fn}: every target is ignored (ignore_index={ignore_index}); "
                            "pass allow_empty=True to get a zero loss for such batches")
    zero = sum(t[:0].sum().to(acc) for t in anchors if t is not None and t.requires_grad)
    zero = zero if isinstance(zero, Tensor) else torch.zeros((), dtype=acc, device=target_ids.device)
    loss = zero + torch.zeros(target_ids.shape, dtype=acc, device=zero.device) if reduction == "none" else zero
    device = target_ids.device
    return LossOutput(loss, torch.zeros((), dtype=torch.long, device=device),
                      torch.zeros((), dtype=torch.float32, device=device),
                      torch.zeros((), dtype=torch.long, device=device))


# --------------------------------------------------------------------------- linear log-sum-exp core


def _triton_module():
    """`headless.losses.cwt_triton`, or None when it (or triton) cannot be imported."""
    try:
        from headless.losses import cwt_triton
    except Exception:  # ImportError, or triton failing to initialise without a GPU
        return None
    return cwt_triton


def triton_usable(tensor: Tensor) -> bool:
    """Whether the Triton kernel can run on `tensor`'s device."""
    if not tensor.is_cuda:
        return False
    module = _triton_module()
    return module is not None and bool(module.triton_available(tensor.device))


def _stats_update(z: Tensor, labels: Tensor, start: int, best: Tensor, target: Tensor) -> None:
    """Running row max of the scores and the score at `labels` (when it falls in this tile)."""
    torch.maximum(best, z.max(dim=1).values, out=best)
    local = labels - start
    inside = (local >= 0) & (local < z.shape[1])
    picked = z.gather(1, local.clamp(0, z.shape[1] - 1).unsqueeze(1)).squeeze(1)
    target.copy_(torch.where(inside, picked, target))


class _ChunkedLinearLSE(torch.autograd.Function):
    """lse_k = logsumexp_u(scale·o_k·c_u + b_u) over row × class tiles, recomputed in backward.

    Memory: O(K·D + U·D + row_block·class_block); the autograd graph keeps only the inputs and
    lse[K]. Also returns (non-differentiable) the row max and the score at `labels`, for accuracy.
    """

    @staticmethod
    def forward(ctx, outputs, classes, bias, labels, scale, row_block, class_block, bias_in_stats):
        acc = accumulation_dtype(outputs, classes)
        num_rows, num_classes = outputs.shape[0], classes.shape[0]
        lse = outputs.new_empty(num_rows, dtype=acc)
        best = outputs.new_full((num_rows,), -math.inf, dtype=acc)
        target = outputs.new_full((num_rows,), -math.inf, dtype=acc)
        for r0 in range(0, num_rows, row_block):
            o, lab = outputs[r0 : r0 + row_block].to(acc), labels[r0 : r0 + row_block]
            run_max = o.new_full((o.shape[0],), -math.inf)
            run_sum = o.new_zeros(o.shape[0])
            for c0 in range(0, num_classes, class_block):
                z = torch.mm(o, classes[c0 : c0 + class_block].to(acc).t()).mul_(scale)
                if not bias_in_stats:
                    _stats_update(z, lab, c0, best[r0 : r0 + row_block], target[r0 : r0 + row_block])
                if bias is not None:
                    z.add_(bias[c0 : c0 + class_block].to(acc))
                if bias_in_stats:
                    _stats_update(z, lab, c0, best[r0 : r0 + row_block], target[r0 : r0 + row_block])
                new_max = torch.maximum(run_max, z.max(dim=1).values)
                run_sum = run_sum * torch.exp(run_max - new_max) + z.sub_(new_max.unsqueeze(1)).exp_().sum(1)
                run_max = new_max
            lse[r0 : r0 + row_block] = run_max + run_sum.log()
        ctx.save_for_backward(outputs, classes, bias, lse)
        ctx.config = (scale, row_block, class_block, acc)
        ctx.mark_non_differentiable(best, target)
        return lse, best, target

    @staticmethod
    def backward(ctx, grad_lse, _grad_best, _grad_target):
        outputs, classes, bias, lse = ctx.saved_tensors
        scale, row_block, class_block, acc = ctx.config
        need_o, need_c, need_b = ctx.needs_input_grad[:3]
        grad_o = torch.zeros_like(outputs, dtype=acc) if need_o else None
        grad_c = torch.zeros_like(classes, dtype=acc) if need_c else None
        grad_b = torch.zeros_like(bias, dtype=acc) if need_b else None
        for r0 in range(0, outputs.shape[0], row_block):
            o = outputs[r0 : r0 + row_block].to(acc)
            shift, g = lse[r0 : r0 + row_block].unsqueeze(1), grad_lse[r0 : r0 + row_block].to(acc).unsqueeze(1)
            for c0 in range(0, classes.shape[0], class_block):
                c = classes[c0 : c0 + class_block].to(acc)
                z = torch.mm(o, c.t()).mul_(scale)
                if bias is not None:
                    z.add_(bias[c0 : c0 + class_block].to(acc))
                p = z.sub_(shift).exp_().mul_(g)  # d lse / d z = softmax, times the incoming gradient
                if need_o:
                    grad_o[r0 : r0 + row_block].addmm_(p, c, alpha=scale)
                if need_c:
                    grad_c[c0 : c0 + class_block].addmm_(p.t(), o, alpha=scale)
                if need_b:
                    grad_b[c0 : c0 + class_block] += p.sum(0)
        return (grad_o.to(outputs.dtype) if need_o else None, grad_c.to(classes.dtype) if need_c else None,
                grad_b.to(bias.dtype) if need_b else None, None, None, None, None, None)


def linear_logsumexp(outputs: Tensor, classes: Tensor, bias: Tensor | None, labels: Tensor, *,
                     scale: float = 1.0, implementation: str = "chunked", chunk_size: int | None = None,
                     class_chunk_size: int | None = None, bias_in_stats: bool = True
                     ) -> tuple[Tensor, Tensor, Tensor]:
    """(lse[K], row max[K], score at labels[K]) of the scores scale·O@Cᵀ (+ b), in float32/64.

    `implementation` is "dense" (materialise K×U) or "chunked". The last two outputs are detached
    statistics for top-1 accuracy; with `bias_in_stats=False` they ignore the bias. A label of -1
    marks a row whose target is not among the classes (its score stays -inf).
    """
    if implementation == "dense":
        acc = accumulation_dtype(outputs, classes)
        z = torch.mm(outputs.to(acc), classes.to(acc).t()) * scale
        stats = z.detach()
        if bias is not None:
            z = z + bias.to(acc)
            stats = z.detach() if bias_in_stats else stats
        picked = stats.gather(1, labels.clamp_min(0).unsqueeze(1)).squeeze(1)
        target = torch.where(labels >= 0, picked, torch.full_like(picked, -math.inf))
        return torch.logsumexp(z, dim=1), stats.max(dim=1).values, target
    rows, cols = chunk_size or DEFAULT_CHUNK_SIZE, class_chunk_size or DEFAULT_CLASS_CHUNK
    if rows < 1 or cols < 1:
        raise HeadlessError(f"chunk sizes must be positive, got chunk_size={rows}, class_chunk_size={cols}")
    return _ChunkedLinearLSE.apply(outputs, classes, bias, labels, float(scale), int(rows), int(cols), bias_in_stats)


def row_dot(outputs: Tensor, classes: Tensor, labels: Tensor, scale: float) -> Tensor:
    """scale·o_k·c_{labels_k} in the accumulation dtype (differentiable, O(K·D) memory)."""
    acc = accumulation_dtype(outputs, classes)
    return (outputs.to(acc) * classes[labels].to(acc)).sum(-1) * scale


# --------------------------------------------------------------------------- candidates (negatives)


@dataclass
class _Candidates:
    keys: Tensor  # [G] identity of every candidate position (token id, or rank·V + id)
    vectors: Tensor | None  # [G, D] gathered target embeddings ("embeddings" mode), else None
    offset: int  # position of this rank's first row among the G candidates


def _candidates(ids: Tensor, weight: Tensor, group, gather: str) -> _Candidates:
    """The target positions whose embeddings serve as negatives: local, or gathered from `group`."""
    if group is None:
        return _Candidates(ids, None, 0)
    from headless.losses import distributed as hd

    rank, _ = hd.world_info(group)
    counts = hd.gather_counts(ids.numel(), ids.device, group)
    offset = sum(counts[:rank])
    if gather == "ids":  # the weight is replicated: look the gathered ids up locally (exact, cheap)
        return _Candidates(hd.all_gather_variable(ids, counts, group), None, offset)
    owner = torch.repeat_interleave(torch.arange(len(counts), device=ids.device),
                                    torch.tensor(counts, device=ids.device))
    keys = hd.all_gather_variable(ids, counts, group) + owner * weight.shape[0]
    return _Candidates(keys, hd.all_gather_variable_with_grad(weight[ids], counts, group), offset)


def _vectors(weight: Tensor, cands: _Candidates, positions: Tensor) -> Tensor:
    """Embeddings of the candidates at `positions` (local lookup, or the gathered rows)."""
    if cands.vectors is None:
        return weight[cands.keys[positions]]
    return cands.vectors[positions]


# --------------------------------------------------------------------------- the loss


def cwt_loss(outputs: Tensor, target_ids: Tensor, embedding_weight: Tensor, *, temperature: float = 1.0,
             ignore_index: int = -100, reduction: str = "mean", implementation: str = "auto",
             chunk_size: int | None = None, max_negatives: int | None = None,
             generator: torch.Generator | None = None, group=None, gather: str = "ids",
             allow_empty: bool = False, with_accuracy: bool = True, check_ids: bool = True,
             static_rows: bool = False, unique_bound: int | None = None,
             target_vectors: Tensor | None = None) -> LossOutput:
    """Contrastive Weight Tying loss: each output must retrieve its target's input embedding.

    outputs [..., D] are the model's last hidden states, target_ids [...] the tokens to retrieve
    (`ignore_index` positions are skipped, as scorers *and* as negatives), embedding_weight [V, D]
    the (tied) input embeddings. Negatives are the targets of the other positions, duplicates
    included, exactly as in the paper (Fig. 9). Paths (all the same value and gradients):
    "reference" (K×K cross-entropy), "dedup" (K×U, log-count bias), "bounded" (dedup with a static
    number of classes, with `static_rows`; else it is "dedup"), "chunked" (online
    log-sum-exp, never K×U), "triton" (our GPU kernel), and other libraries' fused linear-CE
    kernels on the same de-duplicated classes: "liger", "cce" (exact mode), "torch" (torch >= 2.13);
    "auto" = triton on CUDA when available, else chunked. Softmax statistics accumulate in float32 (float64 for float64 inputs).

    `max_negatives=N` CHANGES THE OBJECTIVE: a random subset of N unique target ids (drawn with
    `generator`, a CPU torch.Generator) serves as negatives; each row keeps its own positive
    (with all its duplicates).
    `group` (torch.distributed): negatives are the targets of every rank. gather="ids" sends only
    the ids and looks them up in the local, replicated weight (DDP/FSDP's gradient sum completes
    the weight gradient); gather="embeddings" all-gathers the target embeddings with autograd, for
    weights that differ per rank (every rank must then run backward). With a group, "mean" is over
    the LOCAL rows: trainers wanting a global mean use reduction="sum" and divide themselves.

    accuracy: fraction of rows whose positive scores at least as high as every candidate (ties
    count as correct), on the raw scores o·e/τ among the unique candidate tokens (free, except on
    the fused paths where it costs a no-grad pass: with_accuracy=False skips it). check_ids=False
    skips the host-side range check of target_ids (one GPU synchronisation fewer).

    static_rows=True (same value and gradients; reduction "sum"/"mean", no group, no max_negatives;
    paths auto/triton/chunked/dedup/bounded/reference, the others select as usual): score EVERY position
    given and zero the ignored ones instead of selecting the kept rows, whose count the host would
    have to read (a GPU synchronisation). The ignored targets become one extra class whose bias
    (-1e30) removes it from every softmax. For rows gathered with static shapes, a few of them
    ignored (static MLM masking, CLM: `LanguageModel`). The de-duplicating paths still
    synchronise in `torch.unique`; "reference" then scores the K×K pairs without de-duplicating,
    so every shape is static and no step reads anything on the host (K² floats of memory).
    "bounded" de-duplicates on the device into a STATIC room of classes (`unique_room`: the
    `unique_bound` rounded up to 128, at most min(V, K), which always suffices and is the default),
    K × room scores, no host read either. A micro-batch with more unique targets than the room gets
    a NaN loss (a trainer skips such a step) and reports them in `unique_overflow`. For
    Bernoulli MLM static rows would score the 85% unmasked rows for nothing.

    target_vectors [..., D] (optional): the embeddings of target_ids, already looked up (rows at
    ignored positions: any finite values, never used); every path then takes the class vectors
    from these rows and embedding_weight only gives V and the checks. Same value and gradients
    (through the lookup) as indexing embedding_weight: what lets a model look up its inputs and
    its targets in ONE embedding call, so that autograd builds one dense V×D weight gradient
    instead of two plus their sum (`LanguageModel`). Not with `group`.
    """
    fn = "cwt_loss"
    check_choice("reduction", reduction, REDUCTIONS)
    check_choice("implementation", implementation, CWT_IMPLEMENTATIONS)
    check_choice("gather", gather, GATHER_MODES)
    if not temperature > 0:
        raise HeadlessError(f"{fn}: temperature must be > 0, got {temperature}")
    if max_negatives is not None and max_negatives < 1:
        raise HeadlessError(f"{fn}: max_negatives must be >= 1 (or None), got {max_negatives}")
    if unique_bound is not None and unique_bound < 1:
        raise HeadlessError(f"{fn}: unique_bound must be >= 1 (or None), got {unique_bound}")
    if target_vectors is not None:
        _check_target_vectors(fn, outputs, target_ids, embedding_weight, target_vectors, group)
    if static_rows and group is None and max_negatives is None and reduction != "none" \
            and implementation in ("auto", "triton", "chunked", "dedup", "bounded", "reference"):
        check_inputs(fn, outputs, target_ids, embedding_weight, "embedding_weight")
        if check_ids:
            select_rows(fn, outputs, target_ids, embedding_weight, ignore_index, "embedding_weight")
        return _cwt_static_rows(outputs, target_ids, embedding_weight, 1.0 / temperature, ignore_index,
                                reduction, implementation, chunk_size, allow_empty, with_accuracy, unique_bound,
                                target_vectors)
    if implementation == "bounded":  # the rows are selected: torch.unique sizes the classes exactly
        implementation = "dedup"
    rows, o, ids = select_rows(fn, outputs, target_ids, embedding_weight, ignore_index, "embedding_weight",
                               check_ids=check_ids)
    acc, scale = accumulation_dtype(outputs, embedding_weight, target_vectors), 1.0 / temperature
    if target_vectors is None:
        cands = _candidates(ids, embedding_weight, group, gather)  # collective: every rank calls it
    else:  # the looked-up rows of the kept positions, as the "embeddings" gather holds them
        cands = _Candidates(ids, target_vectors.reshape(-1, target_vectors.shape[-1])[rows], 0)
    if ids.numel() == 0 or cands.keys.numel() == 0:
        return empty_output(fn, allow_empty, ignore_index, target_ids, [o, embedding_weight, cands.vectors],
                            acc, reduction)
    implementation = _resolve_implementation(implementation, outputs)

    uniq, inverse, counts = torch.unique(cands.keys, return_inverse=True, return_counts=True)
    labels = inverse[cands.offset : cands.offset + ids.numel()]
    keep = None  # bool[U]: the sampled negatives when capped
    if max_negatives is not None and max_negatives < uniq.numel():
        chosen = torch.randperm(uniq.numel(), generator=generator, device="cpu")[:max_negatives]
        keep = torch.zeros(uniq.numel(), dtype=torch.bool, device=ids.device)
        keep[chosen.to(ids.device)] = True

    if implementation == "reference":
        losses, correct = _reference_rows(o, embedding_weight, cands, inverse, keep, scale, acc)
    else:
        first = torch.full_like(uniq, cands.keys.numel()).scatter_reduce_(
            0, inverse, torch.arange(cands.keys.numel(), device=ids.device), "amin")
        classes, bias = _vectors(embedding_weight, cands, first), counts.to(acc).log()
        losses, correct = _unique_rows(o, classes, bias, labels, keep, scale, implementation, chunk_size,
                                       with_accuracy, rows_needed=reduction == "none")
    num_unique = uniq.numel() if keep is None else int(max_negatives)
    accuracy = correct.float().mean() if correct is not None else None
    return LossOutput(reduce_rows(losses, rows, target_ids, reduction), device_scalar(ids.numel(), ids.device),
                      accuracy, device_scalar(num_unique, ids.device))


def _check_target_vectors(fn: str, outputs: Tensor, target_ids: Tensor, weight: Tensor, vectors, group) -> None:
    """`target_vectors` must be the [..., D] rows of target_ids, on the outputs' device, local only."""
    if group is not None:
        raise HeadlessError(f"{fn}: target_vectors cannot be used with a group (the negatives of other "
                            "ranks are looked up or gathered by the loss itself)")
    if isinstance(target_ids, Tensor) and isinstance(weight, Tensor) and weight.dim() == 2:
        shape = (*target_ids.shape, weight.shape[1])
        if not isinstance(vectors, Tensor) or not vectors.is_floating_point() or tuple(vectors.shape) != shape:
            raise HeadlessError(f"{fn}: target_vectors must be a floating-point tensor of shape {shape} "
                                f"(target_ids.shape + (D,)), got {tuple(getattr(vectors, 'shape', ()))}")
        if isinstance(outputs, Tensor) and vectors.device != outputs.device:
            raise HeadlessError(f"{fn}: target_vectors on {vectors.device} but outputs on {outputs.device}")


def _resolve_implementation(implementation: str, outputs: Tensor) -> str:
    """"auto" -> the Triton kernel on CUDA when available, else chunked; "triton" must be usable."""
    if implementation == "auto":
        return "triton" if triton_usable(outputs) else "chunked"
    if implementation == "triton" and not triton_usable(outputs):
        raise HeadlessError("cwt_loss: implementation='triton' needs a CUDA tensor and an importable triton kernel")
    return implementation


_EXCLUDED = -1e30  # bias of the class standing for ignored targets: exp() makes it exactly 0


def _cwt_static_rows(outputs, target_ids, weight, scale, ignore_index, reduction, implementation, chunk_size,
                     allow_empty, with_accuracy, unique_bound=None, vectors=None) -> LossOutput:
    """`cwt_loss(static_rows=True)`: the loss over every position, ignored ones zeroed; "reference"
    scores the K×K pairs (`_static_pairs`), "bounded" a static room of unique targets
    (`_static_bounded`), the other paths the unique targets (`_static_unique`). `vectors`: the
    targets' rows already looked up (`target_vectors`), indexed by position instead of the weight
    by id (`_Rows`)."""
    o = outputs.reshape(-1, outputs.shape[-1])
    ids = target_ids.reshape(-1).long()
    valid = ids != ignore_index
    acc = accumulation_dtype(outputs, weight, vectors)
    rows = _Rows(weight, ids, None if vectors is None else vectors.reshape(-1, vectors.shape[-1]))
    count = valid.sum()
    if not allow_empty and not o.is_cuda and int(count) == 0:  # on CPU the check costs nothing
        raise HeadlessError(f"cwt_loss: every target is ignored (ignore_index={ignore_index}); "
                            "pass allow_empty=True to get a zero loss for such batches")
    overflow = None
    if implementation == "reference":
        losses, hits, num_unique = _static_pairs(o, ids, valid, rows, scale, acc, with_accuracy)
    elif implementation == "bounded":
        room = unique_room(ids.numel(), weight.shape[0], unique_bound)
        losses, hits, num_unique = _static_bounded(o, ids, valid, rows, scale, acc, room, with_accuracy)
        overflow = num_unique > room
    else:
        losses, hits, num_unique = _static_unique(o, ids, valid, rows, scale, acc, implementation, chunk_size,
                                                  with_accuracy)
    accuracy = None if hits is None else (hits & valid).sum().float() / count.clamp_min(1)
    total = losses.sum()
    loss = total if reduction == "sum" else total / count.clamp_min(1).to(total.dtype)
    if overflow is None:
        return LossOutput(loss, count, accuracy, num_unique)
    # more unique targets than classes: no branch in a graph, so the loss is poisoned (the step is
    # skipped as non-finite) and the count goes to the trainer, which stops at its next log step
    loss = torch.where(overflow, torch.full_like(loss, math.nan), loss)
    return LossOutput(loss, count, accuracy, num_unique, torch.where(overflow, num_unique, 0))


@dataclass
class _Rows:
    """Where the static paths take a class's vector: weight[id], or the looked-up row of one of
    its positions (`target_vectors`; every position of a class holds the same row)."""

    weight: Tensor
    ids: Tensor  # [N] the targets, flattened
    vectors: Tensor | None  # [N, D] their rows, or None

    @property
    def vocab(self) -> int:
        return self.weight.shape[0]

    def at(self, positions: Tensor) -> Tensor:
        """The vectors of the targets at `positions` (valid ones; others: any finite row)."""
        if self.vectors is None:  # an ignored target's id (ignore_index) is clamped into range
            return self.weight[self.ids[positions].clamp(0, self.vocab - 1)]
        return self.vectors[positions]


def _static_bounded(o, ids, valid, rows, scale, acc, room, with_accuracy):
    """(per-row losses, top-1 hits or None, unique count) of the dedup derivation with a STATIC
    number of classes `room`, in plain tensor ops whose shapes the batch size fixes (no
    `torch.unique`, no host read: torch.compile(fullgraph=True) and CUDA graphs take it whole).

    Sort the targets, flag each first occurrence, cumsum: every row gets the index of its unique
    target; the ids and counts are scattered into `room` classes (+1 spare slot collecting the
    ignored rows and those beyond the room). Empty classes get bias -1e30 (exp() makes them exactly
    0), the others log(count): lse_k = logsumexp(s_k + log n) over K × room scores, loss_k =
    lse_k − s_{k,y_k}, the same value and gradients as the K×K pairs. A row whose unique target
    lies beyond the room (more than `room` unique targets) is zeroed; the caller poisons the loss.
    Each class's vector is that of a representative POSITION, its first in sorted order."""
    vocab = rows.vocab
    keys = torch.where(valid, ids, vocab)  # ignored targets sort last
    sorted_keys, order = torch.sort(keys)
    first = torch.cat([torch.ones_like(sorted_keys[:1], dtype=torch.bool), sorted_keys[1:] != sorted_keys[:-1]])
    num_unique = (first & (sorted_keys < vocab)).sum()
    sorted_slot = torch.cumsum(first.long(), 0) - 1
    slot = torch.empty_like(sorted_keys).scatter_(0, order, sorted_slot)
    kept = valid & (slot < room)
    index = torch.where(kept, slot, room)  # room: the spare slot
    # one write per class: the position of its first occurrence in sorted order (empty classes: 0)
    lead = first & (sorted_keys < vocab) & (sorted_slot < room)
    class_positions = torch.zeros(room + 1, dtype=torch.long, device=ids.device).scatter_(
        0, torch.where(lead, sorted_slot, room), order)[:room]
    counts = torch.zeros(room + 1, dtype=torch.long, device=ids.device).scatter_add_(0, index, kept.long())
    counts = counts[:room]
    bias = torch.where(counts > 0, counts.to(acc).log(), torch.full((), _EXCLUDED, dtype=acc, device=ids.device))
    raw = torch.mm(o.to(acc), rows.at(class_positions).to(acc).t()) * scale  # [K, room]
    labels = index.clamp(max=room - 1).unsqueeze(1)
    positive = raw.gather(1, labels).squeeze(1)  # s_{k,y_k}, from the same GEMM as the negatives
    lse = torch.logsumexp(raw + bias, dim=1)
    losses = torch.where(kept, lse - positive, torch.zeros_like(lse))
    hits = None
    if with_accuracy:  # on the raw scores o·e/τ, among the real classes only (ties count as correct)
        with torch.no_grad():
            best = raw.detach().masked_fill(counts == 0, -math.inf).max(dim=1).values
            hits = positive.detach() >= best
    return losses, hits, num_unique


def _static_unique(o, ids, valid, rows, scale, acc, implementation, chunk_size, with_accuracy):
    """(per-row losses, top-1 hits or None, unique count) against the unique targets, ignored
    ones as one extra class with bias -1e30 (`torch.unique` synchronises)."""
    vocab = rows.vocab
    implementation = _resolve_implementation(implementation, o)
    # ignored targets become the id `vocab`, which sorts last: one extra class, bias -1e30
    keys = torch.where(valid, ids, vocab)
    uniq, inverse, counts = torch.unique(keys, return_inverse=True, return_counts=True)
    real = uniq < vocab
    if rows.vectors is None:
        classes = rows.weight[uniq.clamp(max=vocab - 1)]
    else:  # each class's first position (the ignored class: any row, its bias removes it)
        first = torch.full_like(uniq, ids.numel()).scatter_reduce_(
            0, inverse, torch.arange(ids.numel(), device=ids.device), "amin")
        classes = rows.vectors[first]
    bias = torch.where(real, counts.to(acc).log(), torch.full_like(counts, _EXCLUDED, dtype=acc))
    labels = torch.where(valid, inverse, torch.full_like(inverse, -100))
    safe = inverse.clamp(max=uniq.numel() - 1)
    if implementation == "triton":  # a negative label: loss 0 and no gradient for that row
        ce = _triton_module().linear_ce_triton(o, classes, bias.float(), labels, float(scale))
        losses = torch.where(valid, ce + bias[safe].to(ce.dtype), torch.zeros_like(ce))
    else:
        mode = "dense" if implementation == "dedup" else "chunked"
        lse, _, _ = linear_logsumexp(o, classes, bias, labels.clamp_min(0), scale=scale, implementation=mode,
                                     chunk_size=chunk_size)
        losses = torch.where(valid, lse - row_dot(o, classes, safe, scale), torch.zeros_like(lse))
    hits = None
    if with_accuracy:  # on the raw scores o·e/τ, among the real classes only
        with torch.no_grad():
            mask = torch.where(real, torch.zeros_like(bias), bias)
            _, best, target = linear_logsumexp(o, classes, mask, labels.clamp_min(0), scale=scale,
                                               chunk_size=chunk_size)
            hits = target >= best
    return losses, hits, real.sum()


def _static_pairs(o, ids, valid, rows, scale, acc, with_accuracy):
    """(per-row losses, top-1 hits or None, unique count) of the paper's K×K cross-entropy over
    every given position, ignored targets excluded as columns (bias -1e30) and zeroed as rows.
    No `torch.unique` and no selection: nothing here depends on the data's values for a shape."""
    vocab = rows.vocab
    targets = rows.weight[torch.where(valid, ids, 0)] if rows.vectors is None else rows.vectors
    scores = torch.mm(o.to(acc), targets.to(acc).t()) * scale
    scores = scores + torch.where(valid, 0.0, _EXCLUDED).to(acc).unsqueeze(0)
    positives = torch.arange(ids.numel(), device=ids.device)
    losses = torch.where(valid, F.cross_entropy(scores, positives, reduction="none"), 0.0)
    hits = None
    if with_accuracy:  # ties count as correct; an excluded column is never the maximum of a kept row
        with torch.no_grad():
            detached = scores.detach()
            hits = detached.diagonal() >= detached.max(dim=1).values
    keys = torch.where(valid, ids, vocab).sort().values  # unique targets, counted on the device
    starts = torch.cat([keys.new_ones(1, dtype=torch.bool), keys[1:] != keys[:-1]])
    return losses, hits, (starts & (keys < vocab)).sum()


def _reference_rows(o, weight, cands, inverse, keep, scale, acc):
    """The paper's formula, log-softmax form: cross_entropy(O @ E[targets]ᵀ/τ, positives)."""
    num_rows = o.shape[0]
    targets = _vectors(weight, cands, torch.arange(cands.keys.numel(), device=o.device))
    scores = torch.mm(o.to(acc), targets.to(acc).t()) * scale
    positives = torch.arange(cands.offset, cands.offset + num_rows, device=o.device)
    if keep is not None:  # a column stays if its token was sampled or is the row's own token
        own = inverse[positives]
        scores = scores.masked_fill(~(keep[inverse].unsqueeze(0) | (inverse.unsqueeze(0) == own.unsqueeze(1))),
                                    -math.inf)
    losses = F.cross_entropy(scores, positives, reduction="none")
    detached = scores.detach()
    correct = detached.gather(1, positives.unsqueeze(1)).squeeze(1) >= detached.max(dim=1).values
    return losses, correct


def _unique_rows(o, classes, bias, labels, keep, scale, implementation, chunk_size, with_accuracy,
                 rows_needed=True):
    """Per-row CWT loss against the U unique candidates: lse(z + log n) − z_positive.

    rows_needed=False: only the sum of the rows will be used (see external.linear_ce)."""
    positive = row_dot(o, classes, labels, scale)
    positive_logit = positive + bias[labels]  # with its log-count: the positive and its duplicates
    sub_labels = labels
    if keep is not None:  # score against the sampled classes, the positive added back below
        index = labels.new_full((keep.numel(),), -1)
        index[keep] = torch.arange(int(keep.sum()), device=keep.device)
        classes, bias, sub_labels = classes[keep], bias[keep], index[labels]
    if implementation in ("triton", "liger", "cce", "torch"):
        safe = sub_labels.clamp_min(0)
        if implementation == "triton":
            ce = _triton_module().linear_ce_triton(o, classes, bias.float(), safe, float(scale))
        else:
            from headless.losses.external import linear_ce

            ce = linear_ce(o, classes, bias, safe, float(scale), implementation,
                           rows=rows_needed or keep is not None)
        if keep is None:
            losses = ce + bias[labels].to(ce.dtype)
        else:  # lse = CE + the logit at any valid label
            lse = ce + row_dot(o, classes, safe, scale).to(ce.dtype) + bias[safe].to(ce.dtype)
            lse = torch.where(sub_labels >= 0, lse, torch.logaddexp(lse, positive_logit.to(lse.dtype)))
            losses = lse - positive.to(lse.dtype)
        if not with_accuracy:
            return losses, None
        with torch.no_grad():
            _, best, target = linear_logsumexp(o, classes, bias, sub_labels, scale=scale, bias_in_stats=False)
    else:
        mode = "dense" if implementation == "dedup" else "chunked"
        lse, best, target = linear_logsumexp(o, classes, bias, sub_labels, scale=scale, implementation=mode,
                                             chunk_size=chunk_size, bias_in_stats=False)
        if keep is not None:
            lse = torch.where(sub_labels >= 0, lse, torch.logaddexp(lse, positive_logit))
        losses = lse - positive
    if keep is not None:  # rows whose positive was not sampled: compare with the positive itself
        target = torch.where(sub_labels >= 0, target, positive.detach())
    return losses, target >= best
