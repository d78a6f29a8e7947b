"""The one table of training losses: what each needs, what it scores, what it reports.

(The table only: the implementations are in `headless.losses`, called by `models.LanguageModel`.)

Config validation, model building, the trainer's metrics and FLOPs estimate, resume rules and the
bench read these entries instead of repeating string sets such as `("ce", "ce+cwt")`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LossKind:
    name: str
    needs_head: bool        # the model keeps the HF vocabulary head (vanilla flavour)
    scores: str             # "vocabulary": every output against all V rows; "in-batch": against the
                            # unique target ids of the micro-batch (its FLOPs and value depend on them)
    metrics: tuple          # extra per-step metrics it reports, beyond loss/accuracy
    description: str

    @property
    def in_batch(self) -> bool:
        """The negatives come from the micro-batch: changing batch_size changes the objective."""
        return self.scores == "in-batch" or "unique_targets" in self.metrics


LOSSES: dict[str, LossKind] = {k.name: k for k in (
    LossKind("cwt", needs_head=False, scores="in-batch", metrics=("unique_targets",),
             description="Contrastive Weight Tying: outputs against the input embeddings of the batch's targets"),
    LossKind("ce", needs_head=True, scores="vocabulary", metrics=(),
             description="cross-entropy over the whole vocabulary through the LM head"),
    LossKind("ce+cwt", needs_head=True, scores="vocabulary", metrics=("unique_targets",),
             description="the sum of both (paper Tab. 6); FLOPs are dominated by the head"),
    LossKind("nce", needs_head=False, scores="in-batch", metrics=("unique_targets",),
             description="contrastive against a separate, untied target embedding (paper Tab. 6)"),
)}


def loss_kind(name: str) -> LossKind:
    from headless.errors import HeadlessError

    try:
        return LOSSES[name]
    except KeyError:
        raise HeadlessError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}") from None
