"""Training objectives as pure tensor functions: a batch of token ids in, (inputs, labels) out.

The same functions serve the headless (CWT) and vanilla (cross-entropy) twins, so any difference
between the two comes from the loss alone.  This fixes two defects of the official code: it
randomised tokens *before* drawing the mask (so random replacement hit unmasked tokens too) and
took the vanilla labels from the randomised tensor.  Here labels are always the original tokens.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import Tensor

from headless.errors import HeadlessError

IGNORE_INDEX = -100


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Uniform [0, 1) drawn on the generator's device (a CPU generator can feed a CUDA batch)."""
    gen_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gen_device).to(device)


def _randint(high: int, shape: tuple[int, ...], generator: torch.Generator | None,
             device: torch.device) -> Tensor:
    gen_device = generator.device if generator is not None else device
    return torch.randint(high, shape, generator=generator, device=gen_device).to(device)


@functools.lru_cache(maxsize=16)
def _ordinary_ids(vocab_size: int, special: tuple[int, ...], device: torch.device) -> Tensor:
    """The ids a random replacement may take (cached: built once per vocabulary and device)."""
    allowed = torch.ones(vocab_size, dtype=torch.bool)
    allowed[[i for i in special if 0 <= i < vocab_size]] = False
    if not allowed.any():
        raise HeadlessError("no non-special token to draw random replacements from")
    return allowed.nonzero().flatten().to(device)


def _check_prob(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise HeadlessError(f"{name} must be between 0 and 1, got {value}")


def mlm_mask(
    input_ids: Tensor,
    *,
    mask_token_id: int,
    vocab_size: int,
    special_token_ids: Sequence[int],
    mask_prob: float = 0.15,
    replace_prob: float = 0.8,
    random_prob: float = 0.1,
    exact: bool = False,
    attention_mask: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """BERT corruption: choose `mask_prob` of the eligible positions, then 80/10/10 within them.

    Eligible = not a special token (EOS/SEP/CLS/PAD/MASK...) and not padding (`attention_mask` 0).
    Of the chosen positions, `replace_prob` become `mask_token_id`, `random_prob` become a uniformly
    random *non-special* id below `vocab_size`, the rest keep their token.  `labels` hold the
    original token at every chosen position and `IGNORE_INDEX` elsewhere.

    `exact=False` draws each position independently (Bernoulli); `exact=True` chooses exactly
    `round(mask_prob * n)` positions in each row with n eligible ones (like the official code).
    If the draw chose nothing in the whole batch although some position is eligible, one eligible
    position is chosen at random, so a loss is never empty by accident (this only matters for tiny
    batches; it biases nothing measurable at real sizes).  Deterministic given `generator`.
    """
    for name, value in (("mask_prob", mask_prob), ("replace_prob", replace_prob),
                        ("random_prob", random_prob)):
        _check_prob(name, value)
    if replace_prob + random_prob > 1.0 + 1e-9:
        raise HeadlessError(f"replace_prob + random_prob must be <= 1, got {replace_prob + random_prob}")
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
    device = input_ids.device
    shape = tuple(input_ids.shape)

    special_list = sorted(set(int(i) for i in special_token_ids) | {int(mask_token_id)})
    special = torch.tensor(special_list, dtype=input_ids.dtype, device=device)
    eligible = ~torch.isin(input_ids, special)
    if attention_mask is not None:
        eligible &= attention_mask.to(device=device).bool()

    scores = _rand(shape, generator, device)
    if exact:
        counts = torch.round(eligible.sum(dim=1).double() * mask_prob).long()
        # Eligible positions get scores in [0, 1), the rest 2: the k lowest ranks are k eligible ones.
        ranks = torch.where(eligible, scores, torch.full_like(scores, 2.0)).argsort(dim=1).argsort(dim=1)
        chosen = (ranks < counts[:, None]) & eligible
    else:
        chosen = (scores < mask_prob) & eligible
    if mask_prob > 0:
        # fallback without a host sync: one random eligible position, used only if nothing was chosen
        flat = torch.where(eligible.flatten(), _rand((eligible.numel(),), generator, device), -1.0)
        fallback = torch.zeros(eligible.numel(), dtype=torch.bool, device=device)
        fallback[flat.argmax()] = True
        fallback = fallback.view(shape) & eligible
        chosen = torch.where(chosen.any(), chosen, fallback)

    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))

    action = _rand(shape, generator, device)
    to_mask = chosen & (action < replace_prob)
    to_random = chosen & (action >= replace_prob) & (action < replace_prob + random_prob)

    candidates = _ordinary_ids(vocab_size, tuple(special_list), device)
    random_ids = candidates[_randint(candidates.numel(), shape, generator, device)].to(input_ids.dtype)

    corrupted = torch.where(to_mask, torch.full_like(input_ids, mask_token_id), input_ids)
    corrupted = torch.where(to_random, random_ids, corrupted)
    return corrupted, labels


def clm_labels(
    input_ids: Tensor,
    *,
    document_ids: Tensor | None = None,
    attention_mask: Tensor | None = None,
) -> Tensor:
    """Next-token labels aligned with the inputs: `labels[:, t] = input_ids[:, t + 1]`.

    `IGNORE_INDEX` at the last position, wherever the input or the target is padding, and, when
    `document_ids` is given, where position t and t + 1 belong to different documents (a model
    should not be asked to predict the first token of an unrelated document).
    """
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    labels[:, :-1] = input_ids[:, 1:]
    ignore = torch.zeros_like(input_ids, dtype=torch.bool)
    if attention_mask is not None:
        keep = attention_mask.bool()
        ignore |= ~keep
        ignore[:, :-1] |= ~keep[:, 1:]
    if document_ids is not None:
        ignore[:, :-1] |= document_ids[:, :-1] != document_ids[:, 1:]
    return labels.masked_fill(ignore, IGNORE_INDEX)


def document_ids_from_eos(input_ids: Tensor, eos_token_id: int) -> Tensor:
    """Index of the document of each position in a packed row.

    An EOS belongs to the document it closes; the token after it starts the next document.
    """
    is_eos = (input_ids == eos_token_id).long()
    return is_eos.cumsum(dim=1) - is_eos


def select_loss_positions(hidden: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Flatten to the positions that carry a loss: `(hidden[K, D], targets[K])`."""
    # one nonzero (a host sync on GPU) and index_select, whose backward is a plain index_add:
    # boolean-mask indexing would sync twice here and once more in backward
    rows = (labels.reshape(-1) != IGNORE_INDEX).nonzero().squeeze(1)
    return hidden.reshape(-1, hidden.shape[-1]).index_select(0, rows), labels.reshape(-1).index_select(0, rows)
