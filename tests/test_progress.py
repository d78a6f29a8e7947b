"""Issue #13 item 5: the training bar moves every step (not only on log steps); prepare's bar counts
input bytes against their total."""

from __future__ import annotations

import pytest

from headless.config import load_config
from headless.train.loop import pretrain

SMALL = ["model.hidden_size=32", "model.num_layers=2", "model.num_heads=2", "model.intermediate_size=64",
         "batch_size=2", "optim.warmup_steps=1", "eval_batches=1", "tensorboard=false"]


class _Recorder:
    """Stands in for tqdm: records the position the bar shows after every call."""

    instances: list = []

    def __init__(self, *args, total=None, initial=0, **kwargs):
        self.total, self.n, self.seen, self.postfix = total, initial, [], None
        self.kwargs = kwargs
        _Recorder.instances.append(self)

    def update(self, n=1):
        self.n += n
        self.seen.append(self.n)

    def refresh(self):
        self.seen.append(self.n)

    def set_postfix(self, postfix=None, refresh=True, **kwargs):
        self.postfix = dict(postfix or {}, **kwargs)

    def write(self, message):
        pass

    def close(self):
        pass


@pytest.fixture
def recorder(monkeypatch):
    import tqdm.auto

    _Recorder.instances = []
    monkeypatch.setattr(tqdm.auto, "tqdm", _Recorder)
    return _Recorder


def test_train_bar_advances_every_step(fixture_data, fixture_tokenizers, tmp_path, recorder):
    from headless.data.prepare import prepare_dataset

    data = tmp_path / "data"
    prepare_dataset([str(fixture_data["corpus"])], data, str(fixture_tokenizers["wordpiece"]), seq_len=32,
                    progress=False)
    config = load_config("tiny", overrides=SMALL + [f"data.path={data}", f"run_dir={tmp_path / 'run'}",
                                                    "max_steps=6", "log_every=100", "eval_every=100",
                                                    "save_every=100"])
    pretrain(config)
    bar = next(b for b in recorder.instances if b.kwargs.get("desc") == "train")
    assert bar.total == 6
    assert sorted(set(bar.seen)) == [1, 2, 3, 4, 5, 6]  # log_every=100: the old bar jumped 0 -> 6
    assert "loss" in bar.postfix and "tok/s" in bar.postfix


def test_prepare_bar_counts_bytes_against_the_total(fixture_data, fixture_tokenizers, tmp_path, recorder):
    from headless.data.prepare import prepare_dataset

    corpus = fixture_data["corpus"]
    prepare_dataset([str(corpus)], tmp_path / "data", str(fixture_tokenizers["bpe"]), seq_len=32, progress=True)
    bar = next(b for b in recorder.instances if b.kwargs.get("desc") == "tokenizing")
    assert bar.total == corpus.stat().st_size and bar.kwargs["unit"] == "B"
    assert bar.n == bar.total
    assert int(bar.postfix["tokens"].replace(",", "")) > 0 and "tok/s" in bar.postfix


def test_prepare_counts_compressed_bytes(fixture_data, fixture_tokenizers, tmp_path, recorder):
    import lzma

    from headless.data.prepare import prepare_dataset

    packed = tmp_path / "corpus.jsonl.xz"
    packed.write_bytes(lzma.compress(fixture_data["corpus"].read_bytes()))
    prepare_dataset([str(packed)], tmp_path / "data", str(fixture_tokenizers["bpe"]), seq_len=32, progress=True)
    bar = next(b for b in recorder.instances if b.kwargs.get("desc") == "tokenizing")
    assert bar.total == packed.stat().st_size and bar.n == bar.total
