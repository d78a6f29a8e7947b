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
    _, labels = _mask(ids, attention, masking="exact")
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
    ids = torch.tensor([[CLS, 10, 11, EOS], [CLS, 12, EOS, PAD]])
    for seed in range(20):
        for masking in ("bernoulli", "exact", "static"):
            _, labels = mlm_mask(ids, mask_token_id=MASK, vocab_size=VOCAB, special_token_ids=SPECIAL,
                                 masking=masking, generator=torch.Generator().manual_seed(seed))
            per_row = (labels != IGNORE_INDEX).sum(dim=1)
            assert (per_row >= 1).all()  # every row with an eligible position, not just the batch
            if masking != "bernoulli":  # round(0.15 * 2) = 0 and round(0.15 * 4) = 1: raised to 1
                assert per_row.tolist() == [1, 1]
            assert (labels[ids <= MASK] == IGNORE_INDEX).all()
    only_special = torch.tensor([[CLS, EOS, PAD]])
    for masking in ("bernoulli", "exact", "static"):
        _, labels = mlm_mask(only_special, mask_token_id=MASK, vocab_size=VOCAB, special_token_ids=SPECIAL,
                             masking=masking)
        assert (labels == IGNORE_INDEX).all()


def test_mlm_static_statistics_on_1e5_tokens():
    """Exactly round(p·L) positions per row (a constant K per batch), never a special token, and
    BERT's 80/10/10 within them."""
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(4, VOCAB, (400, 256), generator=g)  # 102,400 tokens
    ids[:, 0] = CLS
    ids[torch.rand(ids.shape, generator=g) < 0.03] = EOS
    ids[-1, 20:] = PAD  # one row with fewer eligible positions than the count: all of them chosen
    corrupted, labels = mlm_mask(ids, mask_token_id=MASK, vocab_size=VOCAB, special_token_ids=SPECIAL,
                                 masking="static", key=7)
    chosen = labels != IGNORE_INDEX
    per_row = chosen.sum(dim=1)
    assert (per_row[:-1] == round(0.15 * 256)).all()
    assert per_row[-1] == int((ids[-1] > MASK).sum()) < round(0.15 * 256)
    assert not chosen[ids <= MASK].any()
    assert torch.equal(labels[chosen], ids[chosen])
    k = int(chosen.sum())
    assert k > 15_000
    assert (chosen & (corrupted == MASK)).sum() / k == pytest.approx(0.8, abs=0.015)
    changed = chosen & (corrupted != MASK) & (corrupted != ids)
    assert changed.sum() / k == pytest.approx(0.1, abs=0.01)
    assert (chosen & (corrupted == ids)).sum() / k == pytest.approx(0.1, abs=0.01)
    assert corrupted[changed].min() > MASK
    assert torch.equal(corrupted[~chosen], ids[~chosen])
    # positions are spread evenly over the row (no bias towards its start or end)
    spread = chosen[:-1, 1:].float().mean(dim=0).view(5, 51).mean(dim=1)
    assert spread.min() > 0.85 * spread.max()


@pytest.mark.parametrize("masking", ["bernoulli", "exact", "static"])
def test_mlm_masks_do_not_depend_on_how_the_batch_is_split(masking):
    """A row's masks depend on (key, its global row), not on the other rows of its batch: the same
    global batch over other ranks or micro-batches masks the same tokens."""
    ids, attention = _batch(rows=12, length=64)
    kw = dict(mask_token_id=MASK, vocab_size=VOCAB, special_token_ids=SPECIAL, masking=masking, key=123)
    whole = mlm_mask(ids, **kw)
    parts = [mlm_mask(ids[i : i + 4], first_row=i, **kw) for i in (0, 4, 8)]
    assert torch.equal(whole[0], torch.cat([p[0] for p in parts]))
    assert torch.equal(whole[1], torch.cat([p[1] for p in parts]))
    other_key = mlm_mask(ids, **{**kw, "key": 124})
    assert not torch.equal(whole[1], other_key[1])
    shifted = mlm_mask(ids[4:8], first_row=0, **kw)  # another row of the run: other masks
    assert not torch.equal(shifted[1], parts[1][1])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_mlm_masks_on_the_gpu_equal_the_cpu():
    ids, _ = _batch(rows=16, length=128)
    for masking in ("bernoulli", "static"):
        kw = dict(mask_token_id=MASK, vocab_size=VOCAB, special_token_ids=SPECIAL, masking=masking, key=9)
        cpu, gpu = mlm_mask(ids, **kw), mlm_mask(ids.cuda(), **kw)
        assert torch.equal(cpu[0], gpu[0].cpu()) and torch.equal(cpu[1], gpu[1].cpu())


def test_mlm_rejects_bad_probabilities():
    ids = torch.randint(4, VOCAB, (2, 8))
    with pytest.raises(HeadlessError, match="mask_prob"):
        mlm_mask(ids, mask_token_id=MASK, vocab_size=VOCAB, special_token_ids=SPECIAL, mask_prob=1.5)
    with pytest.raises(HeadlessError, match="replace_prob"):
        mlm_mask(ids, mask_token_id=MASK, vocab_size=VOCAB, special_token_ids=SPECIAL,
                 replace_prob=0.8, random_prob=0.3)
    with pytest.raises(HeadlessError, match="masking"):
        mlm_mask(ids, mask_token_id=MASK, vocab_size=VOCAB, special_token_ids=SPECIAL, masking="fixed")


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


def test_make_inputs_masks_by_step_and_global_row():
    """The trainer's keying: the same global batch split into micro-batches masks the same tokens;
    another step or the validation split masks others; the same step again masks the same."""
    from headless.config import load_config
    from headless.train.step import DataInfo, make_inputs

    config = load_config("tiny", overrides=["objective.masking=static"])
    info = DataInfo(vocab_size=VOCAB, eos_token_id=EOS, mask_token_id=MASK, special_token_ids=SPECIAL)
    ids, _ = _batch(rows=8, length=64)
    whole = make_inputs(ids, config, info, step=5, first_row=0)
    halves = [make_inputs(ids[i : i + 4], config, info, step=5, first_row=i) for i in (0, 4)]
    assert torch.equal(whole[1], torch.cat([h[1] for h in halves]))
    assert torch.equal(whole[0], torch.cat([h[0] for h in halves]))
    assert torch.equal(whole[1], make_inputs(ids, config, info, step=5, first_row=0)[1])  # a resumed run
    assert not torch.equal(whole[1], make_inputs(ids, config, info, step=6, first_row=0)[1])
    assert not torch.equal(whole[1], make_inputs(ids, config, info, step=5, first_row=0, split=1)[1])
