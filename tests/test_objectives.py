"""MLM corruption statistics and invariants, CLM label alignment, document boundaries."""

from __future__ import annotations

import pytest
import torch

from headless.errors import HeadlessError
from headless.objectives import (
    IGNORE_INDEX,
    clm_labels,
    document_ids_from_eos,
    mlm_mask,
    select_loss_positions,
)

VOCAB = 1000
PAD, EOS, CLS, MASK = 0, 1, 2, 3
SPECIAL = [PAD, EOS, CLS, MASK]


def _batch(rows: int = 100, length: int = 1000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ordinary tokens with EOS/CLS sprinkled in and right padding of random length."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (rows, length), generator=g)
    ids[:, 0] = CLS
    ids[torch.rand(rows, length, generator=g) < 0.02] = EOS
    lengths = torch.randint(length // 2, length + 1, (rows,), generator=g)
    attention = torch.arange(length)[None, :] < lengths[:, None]
    ids[~attention] = PAD
    return ids, attention.long()


def _mask(ids, attention, **kw):
    return mlm_mask(ids, mask_token_id=MASK, vocab_size=VOCAB, special_token_ids=SPECIAL,
                    attention_mask=attention, generator=torch.Generator().manual_seed(1), **kw)


def test_mlm_statistics_on_1e5_tokens():
    ids, attention = _batch()
    corrupted, labels = _mask(ids, attention)
    eligible = (attention.bool() & (ids > MASK))
    chosen = labels != IGNORE_INDEX
    n = int(eligible.sum())
    assert n > 50_000
    assert chosen.sum() / n == pytest.approx(0.15, abs=0.005)
    masked = chosen & (corrupted == MASK)
    changed = chosen & (corrupted != MASK) & (corrupted != ids)
    kept = chosen & (corrupted == ids)
    k = int(chosen.sum())
    assert masked.sum() / k == pytest.approx(0.8, abs=0.015)
    # a random draw equals the original token 1/996 of the time: counted as "kept"
    assert changed.sum() / k == pytest.approx(0.1, abs=0.01)
    assert kept.sum() / k == pytest.approx(0.1, abs=0.01)
    # random replacements are spread over ordinary ids, never special ones
    random_ids = corrupted[changed]
    assert random_ids.min() > MASK
    hist = torch.bincount(random_ids // 100, minlength=10).float()
    assert hist.min() > 0.6 * hist.mean()
    # nothing outside the chosen positions changes
    assert torch.equal(corrupted[~chosen], ids[~chosen])


def test_mlm_labels_are_original_and_specials_never_chosen():
    ids, attention = _batch(rows=20, length=200)
    corrupted, labels = _mask(ids, attention, mask_prob=0.5)
    chosen = labels != IGNORE_INDEX
    assert torch.equal(labels[chosen], ids[chosen])
    assert not chosen[ids <= MASK].any()          # PAD, EOS, CLS, MASK
    assert not chosen[attention == 0].any()
    assert (corrupted[ids <= MASK] == ids[ids <= MASK]).all()


def test_mlm_padding_excluded_even_without_pad_in_specials():
    ids = torch.randint(4, VOCAB, (4, 50))
    attention = torch.ones_like(ids)
    attention[:, 25:] = 0
    _, labels = mlm_mask(ids, mask_token_id=MASK, vocab_size=VOCAB, special_token_ids=[],
                         mask_prob=0.9, attention_mask=attention)
    assert (labels[:, 25:] == IGNORE_INDEX).all()
    assert (labels[:, :25] != IGNORE_INDEX).any()


def test_mlm_exact_counts_per_row():
    ids, attention = _batch(rows=30, length=300)
    _, labels = _mask(ids, attention, exact=True)
    eligible = (attention.bool() & (ids > MASK)).sum(dim=1)
    chosen = (labels != IGNORE_INDEX).sum(dim=1)
    assert torch.equal(chosen, torch.round(eligible.double() * 0.15).long())


def test_mlm_deterministic_with_generator():
    ids, attention = _batch(rows=8, length=64)
    a = _mask(ids, attention)
    b = _mask(ids, attention)
    c = mlm_mask(ids, mask_token_id=MASK, vocab_size=VOCAB, special_token_ids=SPECIAL,
                 attention_mask=attention, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_mlm_never_empty_when_something_is_eligible():
    ids = torch.tensor([[CLS, 10, 11, EOS]])
    for seed in range(20):
        _, labels = mlm_mask(ids, mask_token_id=MASK, vocab_size=VOCAB, special_token_ids=SPECIAL,
                             exact=bool(seed % 2), generator=torch.Generator().manual_seed(seed))
        assert (labels != IGNORE_INDEX).sum() == 1
        assert labels[0, 0] == IGNORE_INDEX and labels[0, 3] == IGNORE_INDEX
    only_special = torch.tensor([[CLS, EOS, PAD]])
    _, labels = mlm_mask(only_special, mask_token_id=MASK, vocab_size=VOCAB, special_token_ids=SPECIAL)
    assert (labels == IGNORE_INDEX).all()


def test_mlm_rejects_bad_probabilities():
    ids = torch.randint(4, VOCAB, (2, 8))
    with pytest.raises(HeadlessError, match="mask_prob"):
        mlm_mask(ids, mask_token_id=MASK, vocab_size=VOCAB, special_token_ids=SPECIAL, mask_prob=1.5)
    with pytest.raises(HeadlessError, match="replace_prob"):
        mlm_mask(ids, mask_token_id=MASK, vocab_size=VOCAB, special_token_ids=SPECIAL,
                 replace_prob=0.8, random_prob=0.3)


def test_clm_shift_and_last_position():
    ids = torch.tensor([[5, 6, 7, 8]])
    assert clm_labels(ids).tolist() == [[6, 7, 8, IGNORE_INDEX]]


def test_clm_padding():
    ids = torch.tensor([[5, 6, 7, PAD, PAD]])
    attention = torch.tensor([[1, 1, 1, 0, 0]])
    assert clm_labels(ids, attention_mask=attention).tolist() == [[6, 7, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]]


def test_document_ids_and_clm_boundaries():
    ids = torch.tensor([[5, 6, EOS, 7, 8, EOS, 9], [EOS, 5, 6, 7, 8, 9, 10]])
    docs = document_ids_from_eos(ids, EOS)
    assert docs.tolist() == [[0, 0, 0, 1, 1, 1, 2], [0, 1, 1, 1, 1, 1, 1]]
    labels = clm_labels(ids, document_ids=docs)
    # the token before EOS predicts EOS; EOS itself predicts nothing across the boundary
    assert labels.tolist() == [[6, EOS, IGNORE_INDEX, 8, EOS, IGNORE_INDEX, IGNORE_INDEX],
                               [IGNORE_INDEX, 6, 7, 8, 9, 10, IGNORE_INDEX]]


def test_select_loss_positions():
    hidden = torch.arange(2 * 3 * 4, dtype=torch.float).view(2, 3, 4)
    labels = torch.tensor([[IGNORE_INDEX, 7, IGNORE_INDEX], [8, IGNORE_INDEX, 9]])
    out, targets = select_loss_positions(hidden, labels)
    assert targets.tolist() == [7, 8, 9]
    assert torch.equal(out, torch.stack([hidden[0, 1], hidden[1, 0], hidden[1, 2]]))
