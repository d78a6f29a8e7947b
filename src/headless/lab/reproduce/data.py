"""The pretraining data of a study, prepared once per work directory, and its fingerprint.

All three studies read a folder laid out like ../shared/data (MANIFEST.md there): English Wikipedia
shards (+ a disjoint validation shard), Project Gutenberg books, Wikipedia in other languages, the
Pythia and BERT tokenizers.  The fingerprint hashes file *contents* (not paths or times), so two
pieces run on different machines from copies of the same files agree, and `headless report`
refuses to merge pieces whose data differ.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from headless.errors import HeadlessError
from headless.files import json_digest, sha256_file
from headless.lab.reproduce.config import StudyConfig


@dataclass
class StudyData:
    dataset: Path  # a prepared dataset (headless prepare layout)
    fingerprint: str  # of the pretraining inputs, tokenizer and packing
    train_tokens: int  # tokens in one epoch of the train split
    inputs: list[str]  # file names, for the report


BOOK_LANGUAGES = ("fr", "es")  # the multilingual mix takes these from books/gutenberg_fr_es.jsonl.xz


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise HeadlessError(f"{what} not found at {path} (data_root must be laid out like ../shared/data; "
                            "set data_root= or HEADLESS_SHARED_DATA)")
    return path


def file_hashes(paths: list[Path]) -> list[tuple[str, str]]:
    """(file name, content sha256) of each file: what a fingerprint is made of, read once."""
    return [(p.name, sha256_file(p)) for p in paths]


def fingerprint(entries: list[tuple[str, str]], **settings) -> str:
    """sha256 over (file name, content hash) pairs and the settings: location-independent."""
    return json_digest({"files": sorted(entries), "settings": settings}, 16)


def content_fingerprint(paths: list[Path], **settings) -> str:
    return fingerprint(file_hashes(paths), **settings)


def pretraining_files(config: StudyConfig) -> tuple[list[Path], list[Path]]:
    """(train files, validation files) of the study's mix."""
    root = config.root
    shards = sorted(_need(root / "enwiki" / "train", "English Wikipedia shards").glob("enwiki-*.jsonl*"))
    if not shards:
        raise HeadlessError(f"no enwiki-*.jsonl* shards in {root / 'enwiki' / 'train'}")
    limit = config.enwiki_shards
    if limit is None and config.study == "multilingual":
        limit = 2  # English stays one language among five, not most of the text
    shards = shards[:limit] if limit else shards
    train = list(shards)
    if config.study == "multilingual" or (config.study == "decoder" and config.decoder_vocab_size):
        train += [_need(root / "multilingual" / f"{lang}.jsonl.xz", f"Wikipedia in {lang!r}")
                  for lang in config.languages if lang not in BOOK_LANGUAGES]
        if set(config.languages) & set(BOOK_LANGUAGES):
            train.append(_need(root / "books" / "gutenberg_fr_es.jsonl.xz", "Project Gutenberg books in French and Spanish"))
    if config.study != "multilingual" and config.books:
        train.append(_need(root / "books" / "gutenberg_en.jsonl.xz", "Project Gutenberg books"))
    validation = sorted((root / "enwiki" / "validation").glob("enwiki-*.jsonl*")) if config.study != "multilingual" else []
    return train, validation


def subset_files(config: StudyConfig, work_dir: Path, paths: list[Path]) -> list[Path]:
    """The first `subset_documents` documents of each file, each cut to `subset_chars` characters,
    written once per source content to WORK_DIR/subsets/ as jsonl (a smoke study tokenises these, not 100 MB); with no
    subset set, the files themselves."""
    import json

    from headless.data.readers import iter_documents
    from headless.files import atomic_write

    if config.subset_documents is None and config.subset_chars is None:
        return paths
    out = work_dir / "subsets" / f"{config.subset_documents or 'all'}docs-{config.subset_chars or 'all'}chars"
    subset = []
    for path in paths:
        # named by the source's content: another data_root in the same work directory gets its own subset
        target = out / f"{path.name.split('.')[0]}-{sha256_file(path)[:16]}.jsonl"
        if not target.is_file():
            docs = []
            for doc in iter_documents([str(path)]):
                docs.append(doc[:config.subset_chars] if config.subset_chars else doc)
                if config.subset_documents and len(docs) >= config.subset_documents:
                    break
            out.mkdir(parents=True, exist_ok=True)
            atomic_write(target, "".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs))
        subset.append(target)
    return subset


def check_inputs(config: StudyConfig) -> None:
    """Every pretraining input and the study's tokenizer exist (a look, no reading): the first thing
    a piece does, before any subset, tokeniser or dataset is written."""
    pretraining_files(config)
    root = config.root
    if config.study == "decoder" and not config.decoder_vocab_size:  # else the study trains its own
        _need(root / "tokenizers" / "gpt-neox-20b" / "tokenizer.json", "the GPT-NeoX tokenizer")
    elif config.study == "encoder":
        _need(root / "tokenizers" / "bert-base-uncased" / "vocab.txt", "the BERT uncased vocabulary")


def tokenizer_source(config: StudyConfig, work_dir: Path, train: list[Path], train_hashes: list[tuple[str, str]]
                     ) -> Path:
    """The Pythia tokenizer (decoder), BERT's uncased vocabulary (encoder), or a cased WordPiece
    tokenizer the study trains on its own multilingual mix (trained once per work directory)."""
    from headless.data.tokenizers import train_tokenizer

    root = config.root
    # HF tokenizers' trainers are not reproducible (two trainings on the same files, even on one
    # thread, give different vocabularies), and the data fingerprint hashes the tokenizer: pieces
    # merge only when their work directories hold the same trained folder
    unrepeatable = ("; its training is not reproducible, so pieces of this study made elsewhere merge only if "
                    "their work directories hold this same folder (carry it: docs/guide/reproduction.md)")
    if config.study == "decoder" and config.decoder_vocab_size:  # a large byte-level BPE
        key = fingerprint(train_hashes, vocab=config.decoder_vocab_size, kind="bpe")
        out = work_dir / "tokenizers" / f"decoder-bpe-{config.decoder_vocab_size}-{key}"
        if not (out / "tokenizer.json").is_file():
            print(f"training a {config.decoder_vocab_size:,}-entry byte-level BPE tokenizer on the {len(train)} files "
                  f"of the mix into {out}{unrepeatable}", flush=True)
            train_tokenizer([str(p) for p in train], kind="bpe", vocab_size=config.decoder_vocab_size,
                            output_dir=out, progress=config.progress)
        return out
    if config.study == "decoder":
        return _need(root / "tokenizers" / "gpt-neox-20b" / "tokenizer.json", "the GPT-NeoX tokenizer")
    if config.study == "encoder":
        return _need(root / "tokenizers" / "bert-base-uncased" / "vocab.txt", "the BERT uncased vocabulary")
    key = fingerprint(train_hashes, vocab=config.tokenizer_vocab_size)
    out = work_dir / "tokenizers" / f"multilingual-wordpiece-{config.tokenizer_vocab_size}-{key}"
    if not (out / "tokenizer.json").is_file():
        print(f"training a {config.tokenizer_vocab_size:,}-entry WordPiece tokenizer on the {len(train)} files of "
              f"the mix into {out}{unrepeatable}", flush=True)
        train_tokenizer([str(p) for p in train], kind="wordpiece", vocab_size=config.tokenizer_vocab_size,
                        output_dir=out, lowercase=False, progress=config.progress)
    return out


def prepare_study_data(config: StudyConfig, work_dir: str | Path, seq_len: int) -> StudyData:
    """Tokenize and pack the study's mix into WORK_DIR/data/ (reused when already there)."""
    from headless.data.prepare import intact_manifest, prepare_dataset
    from headless.data.tokenizers import load_tokenizer, tokenizer_hash

    work_dir = Path(work_dir)
    train, validation = pretraining_files(config)
    names = [p.name for p in train] + [f"validation: {p.name}" for p in validation]
    subset = config.subset_documents is not None or config.subset_chars is not None
    if subset:
        print(f"taking a subset of {len(train) + len(validation)} files (the first {config.subset_documents or 'all'} "
              f"documents of each, cut to {config.subset_chars or 'any'} characters)", flush=True)
        train, validation = subset_files(config, work_dir, train), subset_files(config, work_dir, validation)
        names = [f"{n} (subset)" for n in names]
    train_hashes = file_hashes(train)
    tokenizer = load_tokenizer(str(tokenizer_source(config, work_dir, train, train_hashes)))
    key = fingerprint(train_hashes + file_hashes(validation), tokenizer=tokenizer_hash(tokenizer), seq_len=seq_len,
                      validation=[p.name for p in validation])
    out = work_dir / "data" / f"{config.study}-{key}"
    cores = os.cpu_count() or 1
    # the folder's name hashes the inputs' contents: a dataset prepared there from the same files
    # at another path (or copied, with new mtimes) is the same dataset, so a piece resumes with it
    manifest = intact_manifest(out)
    if manifest is not None:
        print(f"reusing the prepared data {out}", flush=True)
    else:
        size = sum(p.stat().st_size for p in train + validation) / 1e6
        print(f"preparing {len(train)} files{f' + {len(validation)} validation' if validation else ''} "
              f"({size:,.1f} MB on disk) with seq_len={seq_len} into {out}", flush=True)
        manifest = prepare_dataset([str(p) for p in train], out, tokenizer, seq_len=seq_len,
                                   num_workers=min(8, cores - 1) if cores > 4 else None,
                                   validation_inputs=[str(p) for p in validation] or None,
                                   # a subset's 1 % would be a sequence or two: too few to measure
                                   validation_fraction=0.0 if validation else (0.05 if subset else 0.01),
                                   progress=config.progress)
    train_tokens = int(manifest["splits"]["train"]["num_tokens"])
    return StudyData(dataset=out, fingerprint=key, train_tokens=train_tokens, inputs=names)
