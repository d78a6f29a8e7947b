"""The one table of training losses: what each needs, what it scores, how it is computed.

Config validation, model building, the loss itself, the trainer's metrics and FLOPs estimate,
resume rules and the bench read these entries instead of repeating string sets such as
`("ce", "ce+cwt")`.  Adding a loss is one entry here plus the function it names (docs/contributing.md).

The functions are named as "module:function" and imported when a model is built: this table sits
in the base layer (the config reads it), below the losses and models that the functions use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from importlib import import_module
from typing import Callable, Optional

# The largest micro-batches that `auto` scores inside the compiled graph, each the largest measured
# to win there (docs/reference/performance.md).  CWT's K x K pairs grow as K²: K = 16,384 rows (Pythia-70M and
# -160M at 8 x 2048; at 64 x 2048 they would need 64 GiB).  The vanilla head's dense logits grow as
# K x V: Pythia-70M at 64 x 2048 with V = 50,304 (captured 1.20 M tokens/s against 0.97 M eager).
# Above CAPTURE_MAX_ROWS, CWT's "bounded" path (K x room scores, room = min(V, K) by default) is
# captured while room < K and its scores are no more than the head's bound: the same K x V
# scores as that measured head (whether it beats the eager Triton kernel there is to be measured).
CAPTURE_MAX_ROWS = 16_384
CAPTURE_MAX_LOGITS = 131_072 * 50_304


def _resolve(target: str) -> Callable:
    module, _, name = target.partition(":")
    return getattr(import_module(module), name)


@dataclass(frozen=True)
class Implementation:
    """One way to compute a loss kind (`objective.loss_implementation`)."""

    name: str
    description: str
    # plain tensor ops with static shapes and no host read: with static loss positions, backbone and
    # loss compile as ONE graph (and CUDA graphs capture the whole step)
    capturable: bool = False
    needs_cuda: bool = False  # a Triton kernel of ours
    external: bool = False  # an optional package's kernel (headless.losses.external says whether it loads)
    # "module:function" that replaces the model's forward (model, input_ids, labels, attention_mask)
    # -> LossOutput, for paths that do not score the backbone's hidden states (HF's own head, none)
    forward: Optional[str] = None
    case: Optional[str] = None  # its `headless bench` objective name (default: LOSS-IMPLEMENTATION)


@dataclass(frozen=True)
class LossKind:
    name: str
    needs_head: bool        # the model keeps the HF vocabulary head (vanilla flavour)
    scores: str             # "vocabulary": every output against all V rows; "in-batch": against the
                            # unique target ids of the micro-batch (its FLOPs and value depend on them)
    metrics: tuple          # extra per-step metrics it reports, beyond loss/accuracy
    description: str
    # "module:function" (model, outputs, targets) -> LossOutput summed over the scored positions;
    # outputs/targets are the gathered rows with static shapes, else hidden [B, L, D] and labels
    function: str
    implementations: tuple  # of Implementation; the first is "auto"
    # extra trainable V x D matrices the model creates for it (attribute names of nn.Embedding)
    extra_parameters: tuple = ()
    # under compile, `auto` becomes the implementation this names (one graph) for (scored rows per
    # micro-batch, vocabulary rows, objective.unique_bound), e.g. "reference"; None: `auto` stays eager
    captured_as: Optional[Callable[[int, int, Optional[int]], Optional[str]]] = field(default=None, compare=False)

    @property
    def in_batch(self) -> bool:
        """The negatives come from the micro-batch: changing batch_size changes the objective."""
        return self.scores == "in-batch" or "unique_targets" in self.metrics

    @property
    def implementation_names(self) -> tuple:
        return tuple(i.name for i in self.implementations)

    def implementation(self, name: str) -> Implementation:
        from headless.errors import HeadlessError

        for impl in self.implementations:
            if impl.name == name:
                return impl
        raise HeadlessError(f"objective.loss_implementation={name!r} is not an implementation of the {self.name} "
                            f"loss; choose one of {', '.join(self.implementation_names)}")

    def loss_function(self) -> Callable:
        return _resolve(self.function)

    def forward_function(self, implementation: str) -> Optional[Callable]:
        target = self.implementation(implementation).forward
        return _resolve(target) if target else None


ROOM_MULTIPLE = 128  # the static room is padded to whole GEMM tiles (padding classes cost no exactness)


def unique_room(rows: int, vocab: int, unique_bound: int | None = None) -> int:
    """The number of classes of the "bounded" path for `rows` scored rows: `unique_bound` (None:
    no bound) capped at min(vocab, rows), which no micro-batch can exceed, rounded up to 128.
    Here, with the table, because `auto` sizes its choice by it."""
    room = min(vocab, rows) if unique_bound is None else min(unique_bound, vocab, rows)
    return -(-max(room, 1) // ROOM_MULTIPLE) * ROOM_MULTIPLE


AUTO_ROOM_MARGIN = 1.25  # objective.unique_bound: auto = this x the most unique targets sampled


def auto_room(most_unique: int) -> int:
    """`objective.unique_bound: auto`: a margin over the most unique targets seen in sampled
    micro-batches, rounded up to 1,024 (their count varies little between micro-batches of one mix)."""
    return -(-math.ceil(most_unique * AUTO_ROOM_MARGIN) // 1024) * 1024


def _cwt_captured_as(rows: int, vocab: int, unique_bound: Optional[int] = None) -> Optional[str]:
    """K x K pairs up to CAPTURE_MAX_ROWS; above, the bounded de-duplication when the user set
    `objective.unique_bound` (room < K, K x room within the head's measured bound).  Measured on an
    H100 at Pythia-70M 64 x 2048 (V = 50,304, 17,173 unique targets): room 20,480 captured 1.52 M
    tokens/s against the eager Triton kernel's 1.35 M; the always-exact default room min(V, K) =
    50,304 scores as many logits as the vanilla head (1.14 M captured there), so without a bound
    the eager Triton kernel stays."""
    if rows <= CAPTURE_MAX_ROWS:
        return "reference"
    if unique_bound is None:
        return None
    room = unique_room(rows, vocab, unique_bound)
    return "bounded" if room < rows and rows * room <= CAPTURE_MAX_LOGITS else None


def _head_captured_as(rows: int, vocab: int, unique_bound: Optional[int] = None) -> Optional[str]:
    return "reference" if rows * vocab <= CAPTURE_MAX_LOGITS else None


# the contrastive paths of `headless.losses.cwt_loss` (its docstring and docs/reference/losses.md)
CONTRASTIVE = (
    Implementation("auto", "the fastest exact path for the device (cwt_loss)"),
    Implementation("reference", "the paper's K x K score matrix, no de-duplication", capturable=True),
    Implementation("dedup", "de-duplicated targets, dense K x U scores"),
    Implementation("bounded", "de-duplicated on the device into a static room of classes (objective.unique_bound), "
                   "dense K x room scores", capturable=True),
    Implementation("chunked", "de-duplicated, PyTorch online log-sum-exp"),
    Implementation("triton", "de-duplicated, our fused Triton kernel", needs_cuda=True),
    Implementation("liger", "de-duplicated, through Liger's fused linear cross-entropy", external=True),
    Implementation("cce", "de-duplicated, through Cut Cross-Entropy (exact)", external=True),
    Implementation("torch", "de-duplicated, through F.linear_cross_entropy (torch >= 2.13)", external=True),
)
# the vocabulary-head paths of `headless.losses.vanilla_ce_loss`
HEAD = (
    Implementation("auto", "the fastest exact path for the device (vanilla_ce_loss)"),
    Implementation("reference", "logits at the loss positions + F.cross_entropy", capturable=True),
    Implementation("chunked", "PyTorch online log-sum-exp, never K x V", capturable=True),
    Implementation("triton", "our fused linear cross-entropy kernel", needs_cuda=True),
    Implementation("liger", "Liger's fused linear cross-entropy", external=True),
    Implementation("cce", "Cut Cross-Entropy (exact)", external=True),
    Implementation("quack", "quack-kernels' chunked linear cross-entropy (CuTe DSL, bf16)", external=True),
    Implementation("torch", "F.linear_cross_entropy (torch >= 2.13)", external=True),
)
BACKBONE_ONLY = Implementation("none", "no loss: the mean of the hidden states, the backbone's cost alone "
                               "(the bench's floor)", forward="headless.models:backbone_only", case="backbone")
HF_OWN_HEAD = Implementation("hf", "the HF model's own forward(labels=): logits at every position, as users "
                             "run the baseline", forward="headless.models:hf_own_loss", case="ce-hf-full")


def _named(impls: tuple, **cases: str) -> tuple:
    """`impls` with the given bench names (names that results and scripts already use)."""
    return tuple(replace(i, case=cases[i.name]) if i.name in cases else i for i in impls)


LOSSES: dict[str, LossKind] = {k.name: k for k in (
    LossKind("cwt", needs_head=False, scores="in-batch", metrics=("unique_targets",),
             description="Contrastive Weight Tying: outputs against the input embeddings of the batch's targets",
             function="headless.models:cwt_of", implementations=(*_named(CONTRASTIVE, reference="cwt-paper"),
                                                                 BACKBONE_ONLY),
             captured_as=_cwt_captured_as),
    LossKind("ce", needs_head=True, scores="vocabulary", metrics=(),
             description="cross-entropy over the whole vocabulary through the LM head",
             function="headless.models:ce_of", implementations=(*_named(HEAD, reference="ce-hf"), HF_OWN_HEAD),
             captured_as=_head_captured_as),
    LossKind("ce+cwt", needs_head=True, scores="vocabulary", metrics=("unique_targets",),
             description="the sum of both (paper Tab. 6); FLOPs are dominated by the head; the implementation "
                         "is the head's (CWT takes auto)",
             function="headless.models:ce_plus_cwt_of",
             implementations=tuple(replace(i, capturable=False) for i in HEAD)),  # CWT's auto is not
    LossKind("nce", needs_head=False, scores="in-batch", metrics=("unique_targets",),
             description="contrastive against a separate, untied target embedding (paper Tab. 6)",
             function="headless.models:nce_of", implementations=CONTRASTIVE,
             extra_parameters=("target_embedding",)),
)}


def loss_kind(name: str) -> LossKind:
    from headless.errors import HeadlessError

    try:
        return LOSSES[name]
    except KeyError:
        raise HeadlessError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}") from None
