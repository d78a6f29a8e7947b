"""Shared fixtures: the real data in ../shared/data (skipped cleanly when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path:
    env = os.environ.get("HEADLESS_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data; tests that need it are skipped with a message when it is missing."""
    path = _shared_data_dir()
    if not (path / "MANIFEST.md").is_file():
        pytest.skip(f"shared data not found at {path} (set HEADLESS_SHARED_DATA to point at it)")
    return path


@pytest.fixture(scope="session")
def neox_tokenizer_file(shared_data: Path) -> Path:
    return shared_data / "tokenizers" / "gpt-neox-20b" / "tokenizer.json"


@pytest.fixture(scope="session")
def bert_vocab_file(shared_data: Path) -> Path:
    return shared_data / "tokenizers" / "bert-base-uncased" / "vocab.txt"


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, bert_vocab_file: Path) -> Path:
    """A 2-layer BERT base model (no head) with the bert-base-uncased tokenizer, built once."""
    from tiny_models import tiny_encoder

    return tiny_encoder(tmp_path_factory.mktemp("tiny-bert"), bert_vocab_file.parent)


@pytest.fixture(autouse=True, scope="session")
def _eval_results_elsewhere(tmp_path_factory):
    """Evaluations write their tables to ./eval-results by default: never into the checkout."""
    import os

    os.environ["HEADLESS_EVAL_RESULTS"] = str(tmp_path_factory.mktemp("eval-results"))
    yield


@pytest.fixture(autouse=True, scope="module")
def _fresh_dynamo_per_module():
    """Dynamo caches compiled frames per code object (LanguageModel.forward) for the whole process,
    up to its recompile limit (8): one training run compiles one model, but a test file compiling
    many tiny models must not use up the limit of the files after it (fullgraph=True then fails)."""
    yield
    import sys

    if "torch._dynamo" in sys.modules:
        sys.modules["torch._dynamo"].reset()


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """The tests' models are tiny: one intra-op thread is faster than two (and ~10x faster on a busy
    2-core box, where two threads per process fight the other processes for cores)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------
# synthetic fixtures (tests/fixtures.py): no ../shared needed


@pytest.fixture(scope="session")
def fixture_data(tmp_path_factory) -> dict:
    """Synthetic corpus + LAMBADA / zero-shot / GLUE / XNLI files, laid out like ../shared/data."""
    from fixtures import write_all

    return write_all(tmp_path_factory.mktemp("fixture-data"))


@pytest.fixture(scope="session")
def fixture_tokenizers(fixture_data, tmp_path_factory) -> dict:
    """A byte-level BPE and a WordPiece tokenizer (512 tokens) trained on the synthetic corpus (~1 s)."""
    from headless.data.tokenizers import train_tokenizer

    root = tmp_path_factory.mktemp("fixture-tokenizers")
    out = {}
    for kind in ("bpe", "wordpiece"):
        train_tokenizer([str(fixture_data["corpus"])], kind=kind, vocab_size=512, output_dir=root / kind,
                        progress=False)
        out[kind] = root / kind
    return out


@pytest.fixture(scope="session")
def fixture_datasets(fixture_data, fixture_tokenizers, tmp_path_factory) -> dict:
    """The synthetic corpus prepared for the trainer tests, 64-token sequences, like `datasets` of
    test_pretrain.py: {"bert": WordPiece (encoders), "neox": byte-level BPE (decoders)}."""
    from headless.data.prepare import prepare_dataset
    from headless.data.tokenizers import load_tokenizer

    root = tmp_path_factory.mktemp("fixture-datasets")
    out = {}
    for name, kind in (("bert", "wordpiece"), ("neox", "bpe")):
        out[name] = root / name
        prepare_dataset([str(fixture_data["corpus"])], out[name], load_tokenizer(str(fixture_tokenizers[kind])),
                        seq_len=64, validation_fraction=0.1, progress=False)
    return out
