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


MASKING_MODES = ("bernoulli", "exact", "static")

# --------------------------------------------------------------------------- counter-based randomness
# Masking draws come from a hash of (key, global row, position, stream), not from a generator's
# state: the same row masks the same whatever the batch it sits in, on any device, with no
# generator per row, in a handful of vectorised int64 ops.  splitmix64 (Steele, Lea & Flood 2014).

_M64 = (1 << 64) - 1


def _signed(x: int) -> int:
    """A 64-bit word as the int64 torch stores."""
    x &= _M64
    return x - (1 << 64) if x >> 63 else x


_GOLDEN = _signed(0x9E3779B97F4A7C15)  # splitmix64's increment (odd: positions never collide)
_C1, _C2 = _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)
_STREAM_CHOOSE, _STREAM_ACTION, _STREAM_RANDOM_ID = 1, 2, 3
_UNIT_BITS = 53  # uniforms are the top 53 bits of a hash, compared against integer thresholds


def mix64(x: int) -> int:
    """splitmix64's finaliser on a Python int (a bijection of 64-bit words), as an int64 value."""
    x &= _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return _signed(x ^ (x >> 31))


def _shr(x: Tensor, bits: int) -> Tensor:
    """Logical right shift of int64 words (torch's `>>` is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _mix(x: Tensor) -> Tensor:
    """`mix64` on an int64 tensor (multiplication wraps modulo 2^64 on CPU and CUDA alike)."""
    x = (x ^ _shr(x, 30)) * _C1
    x = (x ^ _shr(x, 27)) * _C2
    return x ^ _shr(x, 31)


def _hash_bits(key: int, rows: Tensor, length: int, stream: int) -> Tensor:
    """[B, L] non-negative 63-bit hashes of (key, rows[b], position, stream): splitmix64 sequences,
    one per (row, stream)."""
    row_key = _mix(rows.long() * _GOLDEN + mix64(key ^ (stream * 0x632BE59BD9B4E019)))
    pos = torch.arange(1, length + 1, dtype=torch.long, device=rows.device) * _GOLDEN
    return _shr(_mix(row_key[:, None] + pos[None, :]), 1)


def _unit(bits: Tensor) -> Tensor:
    """The top 53 bits of 63-bit hashes: u · 2^53 for a uniform u in [0, 1)."""
    return _shr(bits, 63 - _UNIT_BITS)


def _threshold(p: float) -> int:
    """u < p  <=>  _unit(bits) < _threshold(p) (exact for p a multiple of 2^-53)."""
    return int(round(min(max(p, 0.0), 1.0) * 2**_UNIT_BITS))


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


def static_mask_count(length: int, mask_prob: float) -> int:
    """Positions masked per row by `masking="static"`: round(mask_prob · length), at least 1.
    The model's static gather takes exactly this many positions per row."""
    return max(1, round(mask_prob * length)) if mask_prob > 0 else 0


def mlm_mask(
    input_ids: Tensor,
    *,
    mask_token_id: int,
    vocab_size: int,
    special_token_ids: Sequence[int],
    mask_prob: float = 0.15,
    replace_prob: float = 0.8,
    random_prob: float = 0.1,
    masking: str = "bernoulli",
    attention_mask: Tensor | None = None,
    key: int | None = None,
    first_row: int = 0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """BERT corruption: choose positions among the eligible ones, then 80/10/10 within them.

    Eligible = not a special token (EOS/SEP/CLS/PAD/MASK...) and not padding (`attention_mask` 0).
    Of the chosen positions, `replace_prob` become `mask_token_id`, `random_prob` become a uniformly
    random *non-special* id below `vocab_size`, the rest keep their token.  `labels` hold the
    original token at every chosen position and `IGNORE_INDEX` elsewhere.

    `masking`: "bernoulli" draws each eligible position independently with `mask_prob` (BERT);
    "exact" chooses exactly round(mask_prob · n) of the n eligible positions of each row (the
    official code); "static" chooses exactly `static_mask_count(L, mask_prob)` = round(mask_prob · L)
    per row of length L (fewer only in a row with fewer eligible positions), so a batch always has
    the same number of loss positions and the model can gather them with static shapes.  Every row
    with an eligible position gets at least one chosen position (a loss is never empty by
    accident; this only matters for tiny rows).

    Randomness: a counter-based hash of (`key`, global row = `first_row` + row index, position), so
    a row masks the same in any batch, split, process or device.  Without `key`, one is drawn from
    `generator` (deterministic given it).
    """
    for name, value in (("mask_prob", mask_prob), ("replace_prob", replace_prob),
                        ("random_prob", random_prob)):
        _check_prob(name, value)
    if replace_prob + random_prob > 1.0 + 1e-9:
        raise HeadlessError(f"replace_prob + random_prob must be <= 1, got {replace_prob + random_prob}")
    if masking not in MASKING_MODES:
        raise HeadlessError(f"masking must be one of {', '.join(MASKING_MODES)}, got {masking!r}")
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
    device = input_ids.device
    batch, length = input_ids.shape
    if key is None:
        key = int(torch.randint(-2**63, 2**63 - 1, (), generator=generator, dtype=torch.long))
    rows = torch.arange(first_row, first_row + batch, dtype=torch.long, device=device)

    special_list = sorted(set(int(i) for i in special_token_ids) | {int(mask_token_id)})
    special = torch.tensor(special_list, dtype=input_ids.dtype, device=device)
    eligible = ~torch.isin(input_ids, special)
    if attention_mask is not None:
        eligible &= attention_mask.to(device=device).bool()

    score = _hash_bits(key, rows, length, _STREAM_CHOOSE)
    if mask_prob == 0:
        chosen = torch.zeros_like(eligible)
    elif masking == "bernoulli":
        chosen = eligible & (_unit(score) < _threshold(mask_prob))
    else:
        # eligible positions rank by score, the others last: the k lowest are eligible (if k <= n)
        ranked = torch.where(eligible, score, torch.full_like(score, 2**63 - 1))
        if masking == "static":  # one k for every row: the k lowest scores
            k = min(static_mask_count(length, mask_prob), length)
            lowest = ranked.topk(k, dim=1, largest=False).indices
            chosen = torch.zeros_like(eligible).scatter_(1, lowest, True) & eligible
        else:
            counts = torch.round(eligible.sum(dim=1).double() * mask_prob).long().clamp_min(1)
            ranks = ranked.argsort(dim=1, stable=True).argsort(dim=1, stable=True)
            chosen = eligible & (ranks < counts[:, None])
    if masking == "bernoulli" and mask_prob > 0:
        # a row whose draw chose nothing takes its lowest-scoring eligible position (no host sync)
        lowest = torch.where(eligible, score, torch.full_like(score, 2**63 - 1)).argmin(dim=1, keepdim=True)
        empty = ~chosen.any(dim=1, keepdim=True)
        chosen |= torch.zeros_like(chosen).scatter_(1, lowest, empty) & eligible

    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))

    action = _unit(_hash_bits(key, rows, length, _STREAM_ACTION))
    replace_at, random_at = _threshold(replace_prob), _threshold(replace_prob + random_prob)
    to_mask = chosen & (action < replace_at)
    to_random = chosen & (action >= replace_at) & (action < random_at)

    candidates = _ordinary_ids(vocab_size, tuple(special_list), device)
    pick = _hash_bits(key, rows, length, _STREAM_RANDOM_ID) % candidates.numel()
    random_ids = candidates[pick].to(input_ids.dtype)

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


def gather_static_positions(hidden: Tensor, labels: Tensor, per_row: int) -> tuple[Tensor, Tensor]:
    """`select_loss_positions` with static shapes, for labels with at most `per_row` loss positions
    per row (static masking): `(hidden[B·per_row, D], targets[B·per_row])`, each row's positions
    in order, then IGNORE_INDEX slots where a row has fewer.  No nonzero, so no host sync; a row
    with more than `per_row` positions would lose the extra ones."""
    flat, targets = static_positions(labels, per_row)
    return hidden.reshape(-1, hidden.shape[-1]).index_select(0, flat), targets


def static_positions(labels: Tensor, per_row: int) -> tuple[Tensor, Tensor]:
    """The selection of `gather_static_positions` from the labels alone: (flat indices of the
    gathered positions in [B·L], targets[B·per_row]), known before the forward."""
    batch, length = labels.shape
    chosen = labels != IGNORE_INDEX
    rank = chosen.long().cumsum(dim=1) - 1  # the i-th loss position of a row goes to slot i
    slot = torch.where(chosen & (rank < per_row), rank, per_row)  # the rest: a spare slot, dropped
    positions = torch.arange(length, device=labels.device).expand(batch, length)
    index = positions.new_zeros(batch, per_row + 1).scatter_(1, slot, positions)[:, :per_row]
    filled = torch.arange(per_row, device=labels.device)[None, :] < chosen.sum(dim=1, keepdim=True)
    flat = (index + torch.arange(batch, device=labels.device)[:, None] * length).reshape(-1)
    targets = torch.where(filled.reshape(-1), labels.reshape(-1).index_select(0, flat),
                          torch.full_like(flat, IGNORE_INDEX, dtype=labels.dtype))
    return flat, targets
