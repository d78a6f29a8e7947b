"""Read a prepared dataset (memory-mapped shards) and serve shuffled, resumable, rank-sliced batches.

`BatchIterator` is deliberately not a torch DataLoader: a batch is a handful of memmap reads, and
owning the order lets a run resume exactly where it stopped (by position, without replaying the
consumed batches) and lets every rank read a disjoint slice of the same global batch.
"""

from __future__ import annotations

import functools
import os
import queue
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from headless.data.prepare import read_manifest
from headless.errors import HeadlessError


class PackedDataset:
    """One split of a prepared dataset: `len(ds)` sequences, `ds[i]` -> np.int64[seq_len]."""

    def __init__(self, path: str | os.PathLike, split: str = "train"):
        self.path = Path(path).expanduser()
        manifest = read_manifest(self.path) if self.path.is_dir() else None
        if manifest is None:
            raise HeadlessError(f"{self.path} is not a prepared dataset (no manifest.json); run `headless prepare`")
        if split not in manifest["splits"]:
            raise HeadlessError(f"{self.path} has no split {split!r} (splits: {', '.join(manifest['splits'])})")
        self.manifest = manifest
        self.split = split
        self.seq_len = int(manifest["seq_len"])
        dtype = np.dtype("<u2" if manifest["dtype"] == "uint16" else "<u4")
        self._shards: list[np.memmap] = []
        self._handles: list[Any] = []   # open shards: `_check` fstats them (a rename cannot fool it)
        self._sizes: list[int] = []
        for shard in manifest["splits"][split]["shards"]:
            file = self.path / shard["file"]
            expected = shard["num_sequences"] * self.seq_len * dtype.itemsize
            if not file.is_file() or file.stat().st_size != expected:
                raise HeadlessError(f"{file} is missing or truncated; prepare the dataset again")
            handle = open(file, "rb")
            self._handles.append(handle)
            self._sizes.append(expected)
            self._shards.append(np.memmap(handle, dtype=dtype, mode="r",
                                          shape=(shard["num_sequences"], self.seq_len)))
        self._offsets = np.cumsum([0] + [len(s) for s in self._shards])
        info = manifest["tokenizer"]
        self.vocab_size: int = int(info["vocab_size"])
        self.eos_token_id: int = int(info["eos_token_id"])
        self.mask_token_id: int | None = info.get("mask_token_id")
        self.pad_token_id: int | None = info.get("pad_token_id")
        self.special_token_ids: list[int] = list(info.get("special_token_ids", []))

    def most_unique_ids(self, batch_size: int, samples: int = 32, seed: int = 0) -> int:
        """The most distinct token ids in `samples` micro-batches of `batch_size` random sequences:
        an upper bound on the unique targets a batch of this split gives CWT (sizes
        `objective.unique_bound: auto`)."""
        rng = np.random.default_rng(seed)
        most = 0
        for _ in range(samples):
            rows = rng.choice(len(self), size=min(batch_size, len(self)), replace=False)
            most = max(most, len(np.unique(np.concatenate([self[int(i)] for i in rows]))))
        return most

    def __del__(self) -> None:
        for handle in getattr(self, "_handles", ()):
            handle.close()  # the maps keep their own descriptors

    def _check(self, shard: int) -> None:
        """One fstat (~1 us) before reading a shard: a shard truncated after it was mapped (a disk
        quota, a user's `truncate`) would otherwise fault the process with SIGBUS on the read.
        (A truncation between this check and the read itself still faults: no cheap check closes
        that window.)"""
        size = os.fstat(self._handles[shard].fileno()).st_size
        if size < self._sizes[shard]:
            raise HeadlessError(f"{self._handles[shard].name} was truncated while in use ({size} of "
                                f"{self._sizes[shard]} bytes); restore it or prepare the dataset again")

    @functools.cached_property
    def tokenizer(self) -> Any:
        """The tokenizer saved with the data (loaded on first use)."""
        from headless.data.tokenizers import load_tokenizer

        return load_tokenizer(self.path / "tokenizer")

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def max_token_id(self, chunk_rows: int = 1 << 16) -> int:
        """The largest id in the split (-1 when empty): one streaming read of the shards, so that
        an id the model has no embedding row for is refused at start, not as an IndexError mid-run."""
        best = -1
        for index, shard in enumerate(self._shards):
            for start in range(0, len(shard), chunk_rows):
                self._check(index)
                best = max(best, int(shard[start:start + chunk_rows].max()))
        return best

    def __getitem__(self, index: int) -> np.ndarray:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} sequences")
        shard = int(np.searchsorted(self._offsets, index, side="right")) - 1
        self._check(shard)
        return np.asarray(self._shards[shard][index - self._offsets[shard]], dtype=np.int64)

    def take(self, indices: np.ndarray) -> np.ndarray:
        """Rows `indices` as one int64 array [len(indices), seq_len] (reads grouped by shard)."""
        indices = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(indices), self.seq_len), dtype=np.int64)
        shards = np.searchsorted(self._offsets, indices, side="right") - 1
        for shard in np.unique(shards):
            self._check(int(shard))
            rows = shards == shard
            out[rows] = self._shards[shard][indices[rows] - self._offsets[shard]]
        return out


class BatchIterator:
    """Infinite iterator of LongTensor[batch_size, seq_len] for one rank.

    Each epoch is a permutation drawn from (seed, epoch).  A global batch is `batch_size *
    world_size` consecutive sequences of it; rank r takes the r-th slice, so ranks never overlap.
    An epoch ends when fewer than a global batch remain (those are skipped; the next epoch's
    permutation differs) and the iterator moves on: `.epoch` says which one it is in.
    `state_dict()["position"]` counts sequences of the epoch consumed by all ranks together.
    """

    def __init__(self, dataset: PackedDataset, batch_size: int, *, seed: int, shuffle: bool = True,
                 rank: int = 0, world_size: int = 1, pin_memory: bool = False, prefetch: int = 0):
        if batch_size < 1:
            raise HeadlessError(f"batch_size must be positive, got {batch_size}")
        if not 0 <= rank < world_size:
            raise HeadlessError(f"rank {rank} is not in [0, world_size={world_size})")
        self.dataset, self.batch_size, self.seed, self.shuffle = dataset, batch_size, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.global_batch = batch_size * world_size
        if len(dataset) < self.global_batch:
            raise HeadlessError(f"{dataset.path} ({dataset.split}) has {len(dataset)} sequences, fewer than one "
                                f"global batch of {self.global_batch}; prepare more data or lower the batch size")
        self.pin_memory = pin_memory and torch.cuda.is_available()   # pinning needs a CUDA runtime
        self.prefetch = prefetch
        self._epoch, self._position = 0, 0       # the cursor (ahead of the consumer when prefetching)
        self._consumed = {"epoch": 0, "position": 0}
        self._order: np.ndarray | None = None
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def _permutation(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.dataset))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.dataset))

    def _next_batch(self) -> tuple[torch.Tensor, dict[str, int]]:
        """Advance the cursor by one global batch; return this rank's slice and the state after it."""
        if self._position + self.global_batch > len(self.dataset):
            self._epoch, self._position, self._order = self._epoch + 1, 0, None
        if self._order is None:
            self._order = self._permutation(self._epoch)
        start = self._position + self.rank * self.batch_size
        batch = torch.from_numpy(self.dataset.take(self._order[start:start + self.batch_size]))
        if self.pin_memory:
            batch = batch.pin_memory()
        self._position += self.global_batch
        return batch, {"epoch": self._epoch, "position": self._position}

    def _producer(self) -> None:
        assert self._queue is not None
        try:
            while not self._stop.is_set():
                item = self._next_batch()
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as err:  # noqa: BLE001 - surfaced in the consumer
            self._queue.put(err)

    def __iter__(self) -> BatchIterator:
        return self

    def __next__(self) -> torch.Tensor:
        if self.prefetch <= 0:
            batch, self._consumed = self._next_batch()
            return batch
        if self._thread is None:
            self._queue = queue.Queue(maxsize=self.prefetch)
            self._stop.clear()
            self._thread = threading.Thread(target=self._producer, daemon=True, name="headless-prefetch")
            self._thread.start()
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        batch, self._consumed = item
        return batch

    @property
    def epoch(self) -> int:
        """Epoch of the last batch handed out (0 before the first)."""
        return self._consumed["epoch"]

    @property
    def steps_per_epoch(self) -> int:
        return len(self.dataset) // self.global_batch

    def state_dict(self) -> dict[str, int]:
        """Where the batches handed out so far end (prefetched-but-unseen batches do not count)."""
        return {**self._consumed, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume right after the last consumed batch; the seed must match the saved one."""
        if int(state.get("seed", self.seed)) != self.seed:
            raise HeadlessError(f"data state was saved with seed {state['seed']}, this run uses {self.seed}")
        self.close()
        self._epoch, self._position, self._order = int(state["epoch"]), int(state["position"]), None
        self._consumed = {"epoch": self._epoch, "position": self._position}

    def close(self) -> None:
        """Stop the prefetch thread (if any); iteration can restart from the consumed state."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self._epoch, self._position, self._order = self._consumed["epoch"], self._consumed["position"], None
