"""PackedDataset and BatchIterator: resume by position, disjoint rank slices, epoch rollover."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from headless.data.loader import BatchIterator, PackedDataset
from headless.data.prepare import prepare_dataset
from headless.data.tokenizers import load_tokenizer
from headless.errors import HeadlessError

NUM_SEQUENCES = 40


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory, bert_vocab_file):
    """40 distinct 8-token rows (BERT ids: 7 word pieces + [SEP]), in 3 shards."""
    tmp = tmp_path_factory.mktemp("loader")
    tok = load_tokenizer(bert_vocab_file)
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    words = [w for w, i in vocab if i >= 2000 and w.isascii() and w.isalpha()][: 7 * NUM_SEQUENCES]
    docs = [" ".join(words[i:i + 7]) for i in range(0, 7 * NUM_SEQUENCES, 7)]
    (tmp / "d.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    prepare_dataset(tmp / "d.jsonl", tmp / "ds", tok, seq_len=8, validation_fraction=0, shard_tokens=8 * 15,
                    progress=False)
    return tmp / "ds"


@pytest.fixture(scope="module")
def dataset(dataset_dir):
    ds = PackedDataset(dataset_dir)
    assert len(ds) == NUM_SEQUENCES
    return ds


def _row_ids(ds: PackedDataset) -> dict[bytes, int]:
    index = {ds[i].tobytes(): i for i in range(len(ds))}
    assert len(index) == len(ds)                          # rows are distinct: batches identify indices
    return index


def _indices(batch: torch.Tensor, index: dict[bytes, int]) -> list[int]:
    return [index[row.numpy().tobytes()] for row in batch]


def test_dataset_reads_rows_and_metadata(dataset, dataset_dir):
    assert dataset.seq_len == 8 and len(dataset.manifest["splits"]["train"]["shards"]) == 3
    row = dataset[17]
    assert row.dtype == np.int64 and row.shape == (8,) and row[-1] == dataset.eos_token_id == 102
    assert np.array_equal(dataset[-1], dataset[NUM_SEQUENCES - 1])
    assert np.array_equal(dataset.take(np.array([17, 3, 39])), np.stack([dataset[17], dataset[3], dataset[39]]))
    with pytest.raises(IndexError):
        dataset[NUM_SEQUENCES]
    assert (dataset.vocab_size, dataset.mask_token_id) == (30522, 103)
    assert set(dataset.special_token_ids) == {0, 100, 101, 102, 103}
    assert dataset.tokenizer.decode(row[:-1].tolist()).count(" ") == 6


def test_resume_by_position_equals_uninterrupted_stream(dataset):
    reference = BatchIterator(dataset, 4, seed=7)
    stream = [next(reference) for _ in range(25)]          # 10 batches per epoch: crosses 2 epochs
    for prefetch in (0, 3):
        first = BatchIterator(dataset, 4, seed=7, prefetch=prefetch)
        head = [next(first) for _ in range(13)]
        state = first.state_dict()
        first.close()
        assert state == {"epoch": 1, "position": 12, "seed": 7}
        resumed = BatchIterator(dataset, 4, seed=7)
        resumed.load_state_dict(json.loads(json.dumps(state)))  # survives a checkpoint round trip
        tail = [next(resumed) for _ in range(12)]
        assert all(torch.equal(a, b) for a, b in zip(head + tail, stream))
    with pytest.raises(HeadlessError, match="seed"):
        BatchIterator(dataset, 4, seed=8).load_state_dict(state)


def test_rank_slices_are_disjoint_and_cover_the_global_batch(dataset):
    index = _row_ids(dataset)
    world, batch = 3, 4                                    # global batch 12: 3 steps per epoch
    ranks = [BatchIterator(dataset, batch, seed=1, rank=r, world_size=world) for r in range(world)]
    single = BatchIterator(dataset, batch * world, seed=1)
    assert ranks[0].steps_per_epoch == 3
    seen: list[int] = []
    for _ in range(3):
        slices = [_indices(next(it), index) for it in ranks]
        assert len(set().union(*map(set, slices))) == world * batch            # disjoint
        assert sum(slices, []) == _indices(next(single), index)                # and covering, in order
        seen += sum(slices, [])
    assert len(set(seen)) == 36                            # an epoch never repeats a sequence


def test_epoch_rollover_reshuffles_deterministically(dataset):
    index = _row_ids(dataset)
    it = BatchIterator(dataset, 8, seed=3)
    epochs = []
    for epoch in range(3):
        order = []
        for _ in range(5):
            order += _indices(next(it), index)
            assert it.epoch == epoch
        epochs.append(order)
        assert sorted(order) == list(range(NUM_SEQUENCES))
    assert epochs[0] != epochs[1] != epochs[2]
    again = BatchIterator(dataset, 8, seed=3)
    assert sum((_indices(next(again), index) for _ in range(5)), []) == epochs[0]
    plain = BatchIterator(dataset, 8, seed=3, shuffle=False)
    assert _indices(next(plain), index) == list(range(8))


def test_errors(dataset, dataset_dir, tmp_path):
    with pytest.raises(HeadlessError, match="not a prepared dataset"):
        PackedDataset(tmp_path)
    with pytest.raises(HeadlessError, match="no split 'test'"):
        PackedDataset(dataset_dir, "test")
    with pytest.raises(HeadlessError, match="fewer than one global batch of 48"):
        BatchIterator(dataset, 12, seed=0, world_size=4)
    with pytest.raises(HeadlessError, match="rank 2"):
        BatchIterator(dataset, 1, seed=0, rank=2, world_size=2)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(HeadlessError, match="not a valid manifest"):
        PackedDataset(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in dataset_dir.iterdir():
        if item.is_file():
            (broken / item.name).write_bytes(item.read_bytes())
    (broken / "train-00001.bin").write_bytes(b"\x00\x01")
    with pytest.raises(HeadlessError, match="train-00001.bin is missing or truncated"):
        PackedDataset(broken)


def test_validation_batches_mix_the_stored_order_and_stay_fixed(dataset):
    """Validation draws its batches in a fixed shuffled order: sequences stored source by source
    (a multilingual mix) must not make each validation batch one source (CWT's in-batch loss
    depends on the batch's mix)."""
    from types import SimpleNamespace

    from headless.config import load_config
    from headless.train.evaluation import validation_batches
    from headless.train.step import DataInfo

    config = load_config("tiny", overrides=["batch_size=8", "eval_batches=5", "seed=3"])
    info = DataInfo(vocab_size=dataset.vocab_size, eos_token_id=dataset.eos_token_id,
                    mask_token_id=dataset.mask_token_id, special_token_ids=dataset.special_token_ids)
    env = SimpleNamespace(rank=0, world_size=1)
    index = _row_ids(dataset)
    first = validation_batches(dataset, config, info, env)
    order = [i for ids, labels in first for i in _indices(torch.where(labels == -100, ids, labels), index)]
    assert sorted(order) == list(range(NUM_SEQUENCES))  # 5 x 8: every sequence once
    assert order != sorted(order) and order[:8] != list(range(8))
    again = validation_batches(dataset, config, info, env)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))


def test_a_shard_truncated_while_in_use_is_one_line_not_sigbus(fixture_data, fixture_tokenizers, tmp_path):
    """Issue #28 item 7: the shards are memory-mapped, so a read past a truncated end was SIGBUS
    (exit 135).  Run in a child process so that the old behaviour fails the test, not pytest."""
    import os
    import subprocess
    import sys

    tok = load_tokenizer(str(fixture_tokenizers["bpe"]))
    prepare_dataset(fixture_data["corpus"], tmp_path / "ds", tok, seq_len=16, validation_fraction=0,
                    shard_tokens=16 * 4096, progress=False)
    script = f"""
import os, sys
from headless.data.loader import BatchIterator, PackedDataset
from headless.errors import HeadlessError
ds = PackedDataset({str(tmp_path / 'ds')!r})
batches = BatchIterator(ds, 8, seed=0)
next(batches)
shard = ds.path / ds.manifest["splits"]["train"]["shards"][0]["file"]
os.truncate(shard, 4096)
try:
    for _ in range(10 ** 4):
        next(batches)
except HeadlessError as err:
    print(err)
    sys.exit(3)
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 3, (done.returncode, done.stderr[-2000:])
    assert "was truncated while in use" in done.stdout
