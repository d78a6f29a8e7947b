"""Representation analysis: anisotropy per layer and synonym similarity of input embeddings.

* Anisotropy: the mean cosine between contextual representations of random token pairs taken from
  *different* sequences of real text, for the embedding output and every layer (a value near 1
  means all representations point the same way; Ethayarajh, 2019).
* Synonyms (Godey et al., App. A, with a curated list instead of WordNet): the cosine between the
  input embeddings of synonym pairs, against random pairs of words from the same list as the
  baseline. A word is embedded as its leading-space form (how BPE vocabularies spell a word inside a
  sentence) unless the bare form has fewer tokens; a word of several tokens is the mean of its
  token embeddings (`multi_token="mean"`) or dropped (`"skip"`); a word containing the unknown
  token is always dropped.

Works on any directory AutoModel loads: decoders and encoders alike.
"""

from __future__ import annotations

import json
import lzma
import os
import pickle
import random
from importlib import resources
from pathlib import Path

import torch

from headless.errors import HeadlessError, load_error
from headless.eval.scoring import (
    check_vocab,
    load_tokenizer_dir,
    markdown_table,
    model_dir_config,
    write_outputs,
)
from headless.runtime import resolve_device

ENWIKI_VALIDATION = Path("enwiki") / "validation" / "enwiki-029.jsonl.xz"
EMBEDDED_TEXT = [
    "The river rises in the hills north of the town and flows south through farmland before it "
    "reaches the sea. In the nineteenth century mills were built along its banks, and the town grew "
    "around them as workers arrived from the surrounding villages.",
    "A library lends books, music and films to its members, and many libraries also offer reading "
    "rooms, computers and classes. Public libraries are usually paid for by local taxes and are free "
    "to use for everyone who lives in the area.",
    "Photosynthesis is the process by which plants, algae and some bacteria turn light into chemical "
    "energy. Carbon dioxide and water are converted into sugar and oxygen, which is released into the "
    "air as a by-product.",
    "The committee met on Tuesday to discuss the budget for the coming year. After a long debate, the "
    "members agreed to spend more on schools and roads and to delay the new sports hall until prices fall.",
    "She learned to play the piano as a child and later studied composition in Vienna. Her first "
    "symphony was performed in 1911 and was praised by critics for its bold harmonies and careful form.",
    "Volcanoes form where molten rock from deep inside the Earth reaches the surface. Some erupt "
    "violently and throw ash high into the sky, while others release slow rivers of lava for years.",
]


def default_texts(num_documents: int = 64) -> tuple[list[str], str]:
    """Paragraphs of $HEADLESS_SHARED_DATA/enwiki/validation if present, else the embedded text."""
    from headless.eval.datasets import shared_path

    path = shared_path(ENWIKI_VALIDATION)
    if path is None:
        return list(EMBEDDED_TEXT), "embedded text"
    texts = []
    with lzma.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            texts += [p for p in json.loads(line)["text"].split("\n") if len(p) > 200]
            if len(texts) >= num_documents:
                break
    return texts[:num_documents], str(path)


def read_texts(path: str | os.PathLike) -> list[str]:
    """Documents of a .txt (paragraphs) / .jsonl ("text") file, optionally compressed."""
    from headless.data.readers import iter_documents

    if not Path(path).exists():
        raise HeadlessError(f"text file not found: {path}")
    return list(iter_documents([str(path)], split_paragraphs=True))


def read_synonyms(path: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """Pairs of a `word<TAB>word` file (# comments allowed); the shipped list by default."""
    if path is None:
        text = resources.files("headless.eval").joinpath("synonyms.tsv").read_text(encoding="utf-8")
        name = "synonyms.tsv"
    else:
        if not Path(path).is_file():
            raise HeadlessError(f"synonym file not found: {path}")
        text, name = Path(path).read_text(encoding="utf-8"), str(path)
    pairs = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split("\t")]
        if len(fields) < 2 or not fields[0] or not fields[1]:
            raise HeadlessError(f"{name}:{lineno} must be two words separated by a tab")
        pairs.append((fields[0], fields[1]))
    if not pairs:
        raise HeadlessError(f"{name} has no synonym pairs")
    return pairs


def load_encoder(model_dir, device):
    """(base model, tokenizer) via AutoModel: hidden states only, any architecture."""
    import transformers
    from transformers import AutoModel

    model_dir_config(model_dir)
    tokenizer = load_tokenizer_dir(model_dir)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # a causal LM's head is "unexpected" here, and that is fine
    try:
        model = AutoModel.from_pretrained(Path(model_dir), dtype=torch.float32, trust_remote_code=False)
    except (ValueError, OSError, pickle.UnpicklingError) as err:
        raise HeadlessError(f"cannot load {model_dir} with AutoModel: {load_error(err)}") from None
    finally:
        transformers.logging.set_verbosity(verbosity)
    check_vocab(tokenizer, model, model_dir)
    return model.to(device).eval(), tokenizer


@torch.no_grad()
def anisotropy(model, tokenizer, texts: list[str], *, num_pairs: int = 1000, max_length: int = 128,
               seed: int = 0) -> list[float]:
    """Mean cosine of random token pairs from different sequences, per layer (0 = embeddings)."""
    device = next(model.parameters()).device
    states = []  # per sequence: [layers + 1, tokens, D] at non-special positions
    for text in texts:
        enc = tokenizer(text, truncation=True, max_length=max_length, return_special_tokens_mask=True,
                        return_tensors="pt")
        keep = enc.pop("special_tokens_mask")[0] == 0
        if keep.sum() < 2:
            continue
        enc = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        hidden = model(**enc, output_hidden_states=True).hidden_states
        states.append(torch.stack([h[0] for h in hidden])[:, keep.to(device)].float().cpu())
    if len(states) < 2:
        raise HeadlessError("anisotropy needs at least two non-empty text sequences: give a longer --text")
    rng = random.Random(seed)
    a_vecs, b_vecs = [], []
    for _ in range(num_pairs):
        i, j = rng.sample(range(len(states)), 2)
        a_vecs.append(states[i][:, rng.randrange(states[i].shape[1])])
        b_vecs.append(states[j][:, rng.randrange(states[j].shape[1])])
    cos = torch.nn.functional.cosine_similarity(torch.stack(a_vecs), torch.stack(b_vecs), dim=-1)
    return cos.mean(0).tolist()


def word_vector(embeddings: torch.Tensor, tokenizer, word: str, multi_token: str = "mean"):
    """Input embedding of a word (see the module docstring), or None when skipped."""
    candidates = [tokenizer(f" {word}", add_special_tokens=False)["input_ids"],
                  tokenizer(word, add_special_tokens=False)["input_ids"]]
    ids = min(candidates, key=len)  # ties keep the leading-space form
    if not ids or tokenizer.unk_token_id in ids or (len(ids) > 1 and multi_token == "skip"):
        return None
    return embeddings[ids].float().mean(0)


def synonym_similarity(model, tokenizer, pairs: list[tuple[str, str]], *, multi_token: str = "mean",
                       num_random: int = 2000, seed: int = 0) -> dict:
    """Cosines of synonym pairs and of random pairs of words drawn from the same list."""
    if multi_token not in ("mean", "skip"):
        raise HeadlessError(f"multi_token must be 'mean' or 'skip', got {multi_token!r}")
    emb = model.get_input_embeddings().weight.detach().cpu()
    vecs = {w: word_vector(emb, tokenizer, w, multi_token) for pair in pairs for w in pair}
    words = sorted(w for w, v in vecs.items() if v is not None)
    used = [(a, b) for a, b in pairs if vecs[a] is not None and vecs[b] is not None and a != b]
    if not used or len(words) < 3:
        raise HeadlessError("no synonym pair left after tokenisation: use multi_token='mean' or a longer list")

    def cos(a, b):
        return float(torch.nn.functional.cosine_similarity(vecs[a], vecs[b], dim=0))

    synonyms = {frozenset(p) for p in pairs}
    rng = random.Random(seed)
    random_pairs = []
    for _ in range(100 * num_random):
        if len(random_pairs) == num_random:
            break
        a, b = rng.sample(words, 2)
        if frozenset((a, b)) not in synonyms:
            random_pairs.append((a, b))
    if not random_pairs:
        raise HeadlessError("every pair of words in the synonym list is a synonym pair: no random baseline")
    multi = sum(len(tokenizer(f" {w}", add_special_tokens=False)["input_ids"]) > 1 for w in words)
    return {"synonym": [cos(a, b) for a, b in used], "random": [cos(a, b) for a, b in random_pairs],
            "num_pairs": len(used), "num_words": len(words), "num_multi_token_words": multi}


def analyze_models(
    model_dirs: list,
    *,
    text: str | os.PathLike | None = None,
    synonyms: str | os.PathLike | None = None,
    num_pairs: int = 1000,
    num_sequences: int = 64,
    max_length: int = 128,
    multi_token: str = "mean",
    seed: int = 0,
    device: str | None = "auto",
    output_dir: str | os.PathLike | None = None,
) -> dict:
    """Analyse several models side by side; writes analysis.{json,md,png} to `output_dir`."""
    if not model_dirs:
        raise HeadlessError("give at least one model directory")
    texts, source = (read_texts(text), str(text)) if text else default_texts(num_sequences)
    texts = texts[:num_sequences]
    pairs = read_synonyms(synonyms)
    dev = resolve_device(device, mps=True)
    models = []
    for model_dir in model_dirs:
        model, tokenizer = load_encoder(model_dir, dev)
        sim = synonym_similarity(model, tokenizer, pairs, multi_token=multi_token, seed=seed)
        layers = anisotropy(model, tokenizer, texts, num_pairs=num_pairs, max_length=max_length, seed=seed)
        models.append({
            "model": str(model_dir), "anisotropy": layers,
            "synonym_cosine": sum(sim["synonym"]) / len(sim["synonym"]),
            "random_cosine": sum(sim["random"]) / len(sim["random"]),
            **{k: sim[k] for k in ("num_pairs", "num_words", "num_multi_token_words")},
            "synonym_cosines": sim["synonym"], "random_cosines": sim["random"],
        })
        del model
    result = {"text": source, "num_sequences": len(texts), "token_pairs": num_pairs,
              "multi_token": multi_token, "models": models}
    if output_dir is not None:
        write_outputs(output_dir, "analysis", result, analysis_markdown(result))
        plot_analysis(result, Path(output_dir) / "analysis.png")
    return result


def analysis_markdown(result: dict) -> str:
    models = result["models"]
    summary = markdown_table(
        ["model", "synonym cos", "random cos", "gap", "pairs", "anisotropy (last layer)"],
        [[m["model"], m["synonym_cosine"], m["random_cosine"], m["synonym_cosine"] - m["random_cosine"],
          m["num_pairs"], m["anisotropy"][-1]] for m in models],
    )
    depth = max(len(m["anisotropy"]) for m in models)
    layers = markdown_table(
        ["layer"] + [m["model"] for m in models],
        [["emb" if i == 0 else i] + [m["anisotropy"][i] if i < len(m["anisotropy"]) else "" for m in models]
         for i in range(depth)],
    )
    return f"## Synonym similarity of input embeddings\n\n{summary}\n## Anisotropy per layer\n\n{layers}"


def plot_analysis(result: dict, path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for m in result["models"]:
        name = Path(m["model"]).name or m["model"]
        line = left.plot(range(len(m["anisotropy"])), m["anisotropy"], marker="o", label=name)[0]
        right.hist(m["synonym_cosines"], bins=30, density=True, histtype="step", color=line.get_color(),
                   label=f"{name} synonyms")
        right.hist(m["random_cosines"], bins=30, density=True, histtype="step", linestyle="--",
                   color=line.get_color(), label=f"{name} random")
    left.set(xlabel="layer (0 = embeddings)", ylabel="mean cosine of random token pairs", title="Anisotropy")
    right.set(xlabel="cosine of input embeddings", ylabel="density", title="Synonyms vs random word pairs")
    left.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    fig.tight_layout()
    from headless.files import atomic_write

    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
