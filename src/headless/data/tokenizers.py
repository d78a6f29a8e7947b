"""Load or train a fast tokenizer and make sure it has the special tokens pretraining needs.

Packing needs an end-of-document id (EOS; BERT vocabularies use [SEP]), MLM needs a mask token
(GPT-NeoX has none: `<|mask|>` is added, growing the vocabulary by one -- Pythia's model vocabulary
of 50304 rows has room) and batching needs a pad token.  Everything is local: a hub name is tried
only when it is not a path, and fails with a one-line error when offline.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from headless.errors import HeadlessError, load_error

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

MASK_TOKEN = "<|mask|>"
EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|padding|>"
TOKENIZER_KINDS = ("bpe", "wordpiece", "unigram")


def _looks_like_path(spec: str) -> bool:
    """Hub names are `name` or `org/name`; anything else that does not exist is a missing path."""
    return spec.startswith((".", "/", "~")) or spec.count("/") > 1 or spec.endswith((".json", ".txt"))


def load_tokenizer(spec: Any, *, lowercase: bool = True) -> PreTrainedTokenizerFast:
    """A fast tokenizer from a `tokenizer.json`, a WordPiece `vocab.txt`, a HF directory or a hub
    name (an already-loaded tokenizer is passed through).  Special tokens are ensured in place."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if not isinstance(spec, (str, os.PathLike)):
        if not getattr(spec, "is_fast", False):
            raise HeadlessError(f"expected a fast tokenizer or a path, got {type(spec).__name__}")
        return ensure_special_tokens(spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / "tokenizer_config.json").is_file() or (path / "config.json").is_file():
            try:
                tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
            except Exception as err:  # noqa: BLE001 - transformers raises many types here
                raise HeadlessError(f"could not load the tokenizer in {path}: {load_error(err)}") from None
        elif (path / "tokenizer.json").is_file():
            tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json"))
        elif (path / "vocab.txt").is_file():
            tokenizer = _wordpiece(path / "vocab.txt", lowercase)
        else:
            raise HeadlessError(f"{path} holds no tokenizer (tokenizer.json, vocab.txt or tokenizer_config.json)")
    elif path.is_file():
        if path.suffix == ".json":
            try:
                tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(path))
            except Exception as err:  # noqa: BLE001
                raise HeadlessError(f"{path} is not a valid tokenizer.json: {err}") from None
        elif path.suffix == ".txt":
            tokenizer = _wordpiece(path, lowercase)
        else:
            raise HeadlessError(f"unknown tokenizer file {path}: expected tokenizer.json or a WordPiece vocab.txt")
    elif _looks_like_path(str(spec)):
        raise HeadlessError(f"tokenizer not found: {spec}")
    else:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            raise HeadlessError(f"tokenizer {spec!r} is not a local path and HF_HUB_OFFLINE is set; pass a "
                                "local tokenizer.json, vocab.txt or tokenizer directory")
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(spec), trust_remote_code=False)
        except Exception:  # noqa: BLE001
            raise HeadlessError(
                f"could not load tokenizer {spec!r} from the Hugging Face Hub (offline, or no such "
                "repository?); pass a local tokenizer.json, vocab.txt or tokenizer directory") from None
    if not getattr(tokenizer, "is_fast", False):
        raise HeadlessError(f"tokenizer {spec} is not a fast (Rust) tokenizer; convert it to tokenizer.json")
    return ensure_special_tokens(tokenizer)


# what save_pretrained writes for some tokenizer; a folder with none of them has no tokenizer, and
# transformers 5 would build a 5-entry all-[UNK] one from config.json alone
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "tokenizer.model",
                   "spiece.model", "sentencepiece.bpe.model")
# keys transformers 5 writes into tokenizer_config.json about how it was *loaded*, not what it is
LOAD_TIME_KEYS = ("local_files_only", "is_local", "name_or_path", "cache_dir", "revision", "token",
                  "trust_remote_code", "force_download", "subfolder", "_commit_hash")


def load_saved_tokenizer(directory: str | os.PathLike) -> PreTrainedTokenizerFast:
    """The tokenizer saved (save_pretrained) next to a model, a run or a dataset: loaded as it is,
    never downloaded and never given extra special tokens (unlike `load_tokenizer`)."""
    from transformers import AutoTokenizer

    path = Path(directory)
    if path.is_dir() and not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise HeadlessError(f"{path} has no tokenizer (no tokenizer.json or tokenizer_config.json): a model "
                            "travels with the tokenizer it was trained with; save it there (save_pretrained)")
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise HeadlessError(f"no usable tokenizer in {path} (save it with save_pretrained next to the model): "
                            f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None


def load_model_tokenizer(model_dir: str | os.PathLike) -> PreTrainedTokenizerFast:
    """The tokenizer saved with the model in `model_dir`, refused with one line when there is none or
    it does not match the model (`check_tokenizer_fits`): never scored through the wrong one."""
    path = Path(model_dir)
    tokenizer = load_saved_tokenizer(path)
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = None  # no readable config.json: the model loader says so in its own words
    if isinstance(config, dict):
        config = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
        check_tokenizer_fits(tokenizer, config.get("vocab_size"), path,
                             {k: config.get(k) for k in ("pad_token_id", "bos_token_id", "eos_token_id")})
    return tokenizer


def check_tokenizer_fits(tokenizer, rows, where, special_ids: dict | None = None) -> None:
    """Refuse a tokenizer that is not the model's: more tokens than embedding rows (ids would index
    past the matrix), far fewer (a stand-in such as the 5-entry tokenizer transformers 5 builds for a
    folder without one; real models pad their rows by a few percent at most), or special-token ids
    the model names that the tokenizer does not have."""
    if not isinstance(rows, int) or rows <= 0:
        return
    n = len(tokenizer)
    if n > rows:
        raise HeadlessError(f"the tokenizer in {where} has {n} tokens but the model embeds only {rows}: "
                            "they do not belong together")
    if n < rows // 2 and rows - n >= 128:  # (tiny test vocabularies padded to a multiple of 64 pass)
        raise HeadlessError(f"the tokenizer in {where} has {n} tokens for the model's {rows} embedding rows: it "
                            "is not the tokenizer the model was trained with")
    for name, value in (special_ids or {}).items():
        ids = value if isinstance(value, list) else [value]
        bad = [i for i in ids if isinstance(i, int) and not 0 <= i < n]
        if bad:
            raise HeadlessError(f"the model in {where} has {name} {bad[0]} but its tokenizer has only {n} tokens: "
                                "they do not belong together")


def save_model_tokenizer(tokenizer, directory: str | os.PathLike, hf_config) -> None:
    """`tokenizer.save_pretrained(directory)` in a form every supported transformers loads as the
    model sees it: class `PreTrainedTokenizerFast` (it reads tokenizer.json verbatim on 4.x and 5.x;
    transformers 5's own `TokenizersBackend` does not exist on 4.57), `model_max_length` from the
    model's positions (else 1e30, and a long input overflows them), the model's input names
    (token_type_ids only where it embeds them) and no keys about how it was loaded."""
    from headless.files import atomic_write

    directory = Path(directory)
    tokenizer.save_pretrained(str(directory))
    path = directory / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    for key in LOAD_TIME_KEYS:
        config.pop(key, None)
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config.pop("auto_map", None)  # never remote code
    positions = model_positions(hf_config)
    if positions:
        config["model_max_length"] = positions
    types = (getattr(hf_config, "type_vocab_size", 0) or 0) > 1
    config["model_input_names"] = ["input_ids", "token_type_ids", "attention_mask"] if types else \
        ["input_ids", "attention_mask"]
    atomic_write(path, json.dumps(config, indent=2, ensure_ascii=False) + "\n")


def model_positions(hf_config) -> int | None:
    """How many tokens the model takes (RoBERTa-like models reserve padding_idx + 1 position rows)."""
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(hf_config, name, None)
        if isinstance(value, int) and value > 0:
            if getattr(hf_config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
                pad = getattr(hf_config, "pad_token_id", None)
                value -= (1 if pad is None else pad) + 1  # positions start at padding_idx + 1
            return value
    return None


def _wordpiece(vocab_file: Path, lowercase: bool):
    """A BERT tokenizer from a WordPiece vocab.txt, refused up front when it could not encode text
    (the Rust tokenizer fails only at the first encode, with a traceback)."""
    from transformers import BertTokenizerFast

    words = [line.rstrip("\n") for line in vocab_file.read_text(encoding="utf-8", errors="replace").splitlines()]
    words = [w for w in words if w.strip()]
    if not words:
        raise HeadlessError(f"{vocab_file} is empty: a WordPiece vocab.txt lists one token per line")
    if "[UNK]" not in words:
        raise HeadlessError(f"{vocab_file} has no [UNK] token: WordPiece cannot encode unknown words without it")
    return BertTokenizerFast(vocab=str(vocab_file), do_lower_case=lowercase)


def ensure_special_tokens(tokenizer: PreTrainedTokenizerFast) -> PreTrainedTokenizerFast:
    """Give the tokenizer an EOS, a mask and a pad token, reusing existing ones where they exist."""
    vocab = tokenizer.get_vocab()
    if tokenizer.eos_token is None:
        if tokenizer.sep_token is not None:
            tokenizer.eos_token = tokenizer.sep_token
        elif EOS_TOKEN in vocab:
            tokenizer.eos_token = EOS_TOKEN
        else:
            tokenizer.add_special_tokens({"eos_token": EOS_TOKEN})
    if tokenizer.mask_token is None:
        tokenizer.add_special_tokens({"mask_token": MASK_TOKEN})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = PAD_TOKEN if PAD_TOKEN in vocab else tokenizer.eos_token
    # tokens added to the vocabulary as special (e.g. <|endoftext|>) must count as special for MLM
    return tokenizer


def special_token_ids(tokenizer: PreTrainedTokenizerFast) -> list[int]:
    """Ids MLM must never choose or draw: the named special tokens and every added special token."""
    ids = set(tokenizer.all_special_ids)
    ids.update(i for i, tok in tokenizer.added_tokens_decoder.items() if tok.special)
    return sorted(i for i in ids if i is not None)


def tokenizer_hash(tokenizer: PreTrainedTokenizerFast) -> str:
    """sha256 of the canonical tokenizer JSON plus the special-token roles (eos/mask/pad...)."""
    payload = {
        "tokenizer": json.loads(tokenizer.backend_tokenizer.to_str()),
        "special": {name: getattr(tokenizer, name, None)
                    for name in ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token",
                                 "cls_token", "mask_token")},
    }
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def tokenizer_info(tokenizer: PreTrainedTokenizerFast) -> dict[str, Any]:
    """The tokenizer entry of a dataset manifest."""
    return {
        "sha256": tokenizer_hash(tokenizer),
        "vocab_size": len(tokenizer),
        "eos_token_id": tokenizer.eos_token_id,
        "mask_token_id": tokenizer.mask_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "special_token_ids": special_token_ids(tokenizer),
        "name_or_path": str(getattr(tokenizer, "name_or_path", "") or ""),
    }


def train_tokenizer(
    inputs: Any = None,
    *,
    kind: str = "bpe",
    vocab_size: int = 8192,
    output_dir: str | os.PathLike,
    text_field: str = "text",
    lowercase: bool | None = None,
    min_frequency: int = 2,
    max_documents: int | None = None,
    progress: bool = True,
) -> PreTrainedTokenizerFast:
    """Train a tokenizer with the `tokenizers` library and save a HF directory (AutoTokenizer-ready).

    `bpe`: byte-level BPE like GPT-NeoX (lossless, never an unknown token). `wordpiece`: BERT-style
    (lowercased unless `lowercase=False`, [CLS] ... [SEP] template). `unigram`: SentencePiece-style
    Metaspace (slowest to train: ~30 s on the default corpus).  bpe/unigram keep case unless
    `lowercase=True`.
    `inputs` are reader specs (None = the embedded default corpus).
    """
    from itertools import islice

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from headless.data.readers import iter_documents

    if kind not in TOKENIZER_KINDS:
        raise HeadlessError(f"unknown tokenizer kind {kind!r}; choose one of {', '.join(TOKENIZER_KINDS)}")
    if vocab_size < 64:
        raise HeadlessError(f"vocab_size must be at least 64, got {vocab_size}")
    output = Path(output_dir)
    if output.exists() and any(output.iterdir()) and not (output / "tokenizer.json").is_file():
        raise HeadlessError(f"{output} exists and is not a tokenizer directory; choose an empty output")
    docs = iter_documents(inputs, text_field=text_field)
    if max_documents is not None:
        docs = islice(docs, max_documents)

    roles: dict[str, str]
    if kind == "bpe":
        roles = {"eos_token": EOS_TOKEN, "pad_token": PAD_TOKEN, "mask_token": MASK_TOKEN}
        tok = Tokenizer(models.BPE())
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                      special_tokens=list(roles.values()), show_progress=progress,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    elif kind == "wordpiece":
        roles = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                 "mask_token": "[MASK]", "eos_token": "[SEP]"}
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True if lowercase is None else lowercase)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                            special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
                                            show_progress=progress)
    else:
        roles = {"eos_token": EOS_TOKEN, "pad_token": PAD_TOKEN, "mask_token": MASK_TOKEN,
                 "unk_token": "<unk>"}
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=list(dict.fromkeys(roles.values())),
                                          unk_token="<unk>", show_progress=progress)
    if kind != "wordpiece" and lowercase:
        tok.normalizer = normalizers.Sequence([tok.normalizer, normalizers.Lowercase()])

    tok.train_from_iterator(docs, trainer=trainer)
    if kind == "wordpiece":
        cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, **roles)
    import re

    from headless.files import mark, publish_dir, remove_stale_tmp, tmp_sibling

    remove_stale_tmp(output.resolve().parent, re.escape(output.resolve().name))  # a killed training's
    tmp = tmp_sibling(output.resolve())
    tokenizer.save_pretrained(str(tmp))
    mark(tmp, "tokenizer")
    publish_dir(tmp, output)
    return load_tokenizer(output)
