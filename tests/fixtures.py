"""Small synthetic data sets in every layout headless reads, written by the tests themselves, so that a
fresh clone with no ../shared exercises prepare, pretrain, export and every evaluation.

The text is generated from a small grammar (deterministic, a few hundred kB in all): enough for a
tokenizer to learn words and for a tiny model to learn something; nothing here is a benchmark.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

NOUNS = ["cat", "dog", "bird", "river", "city", "teacher", "child", "farmer", "ship", "garden", "window",
         "doctor", "forest", "train", "student", "market", "mountain", "letter", "king", "queen"]
ADJECTIVES = ["small", "old", "bright", "quiet", "green", "heavy", "happy", "cold", "young", "tall"]
VERBS = ["sees", "finds", "likes", "follows", "paints", "watches", "helps", "carries", "visits", "builds"]
PLACES = ["near the lake", "in the morning", "after the rain", "by the road", "at night", "in the valley"]
LANGUAGES = ("en", "fr")
FR = {"the": "le", "a": "un", "sees": "voit", "likes": "aime", "is": "est", "not": "pas"}


def sentence(rng: random.Random) -> str:
    a, b = rng.sample(NOUNS, 2)
    return (f"The {rng.choice(ADJECTIVES)} {a} {rng.choice(VERBS)} the {rng.choice(ADJECTIVES)} {b} "
            f"{rng.choice(PLACES)}.")


def documents(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(sentence(rng) for _ in range(rng.randint(6, 14))) for _ in range(n)]


def write_corpus(path: Path, n: int = 400, seed: int = 0) -> Path:
    """A jsonl corpus of `n` documents ({"text": ...} lines, ~100 kB for n=400)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in documents(n, seed)), encoding="utf-8")
    return path


def write_lambada(path: Path, n: int = 12) -> Path:
    """{"context", "continuation"} lines: the last word of a passage."""
    rng = random.Random(1)
    rows = []
    for _ in range(n):
        text = " ".join(sentence(rng) for _ in range(3)).rstrip(".")
        context, word = text.rsplit(" ", 1)
        rows.append({"context": context, "continuation": word})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_zeroshot(folder: Path, n: int = 8) -> Path:
    """boolq / piqa / arc_easy / pubmed_qa_labeled jsonl files in the layouts of ../shared/data/zeroshot.
    PIQA queries end with a newline, as the real ones do (docs/guide/evaluation-decoders.md)."""
    rng = random.Random(2)
    folder.mkdir(parents=True, exist_ok=True)
    tasks = {"boolq": [], "piqa": [], "arc_easy": [], "pubmed_qa_labeled": []}
    for i in range(n):
        passage = sentence(rng)
        tasks["boolq"].append({"query": f"Passage: {passage}\nQuestion: is the {rng.choice(NOUNS)} "
                                        f"{rng.choice(ADJECTIVES)}?", "choices": ["no", "yes"], "gold": i % 2})
        tasks["piqa"].append({"query": f"Question: How do I help the {rng.choice(NOUNS)}?\n",
                              "choices": [sentence(rng), sentence(rng)], "gold": i % 2})
        tasks["arc_easy"].append({"query": f"Question: What does the {rng.choice(NOUNS)} see?",
                                  "choices": rng.sample(NOUNS, 4), "gold": i % 4})
        tasks["pubmed_qa_labeled"].append({
            "context": f"Context: {passage}\nQuestion: Is it {rng.choice(ADJECTIVES)}?\nA. yes\nB. no\nC. maybe\nAnswer: ",
            "continuation": ["yes", "no", "maybe"][i % 3]})
    for name, rows in tasks.items():
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return folder


def _pair(rng: random.Random) -> tuple[str, str, int]:
    """(sentence, sentence, 1 if the second says the same thing)."""
    first = sentence(rng)
    same = rng.random() < 0.5
    return first, first if same else sentence(rng), int(same)


def write_glue(folder: Path, n_train: int = 24, n_dev: int = 12) -> Path:
    """All nine GLUE tasks in the original TSV layout (headers, CoLA without one, MNLI's two devs)."""
    rng = random.Random(3)

    def rows(kind: str, n: int) -> list[list[str]]:
        out = []
        for i in range(n):
            a, b, same = _pair(rng)
            if kind == "single":
                out.append([a, str(same)])
            elif kind == "cola":
                out.append(["src", str(same), "" if same else "*", a])
            elif kind == "mrpc":
                out.append([str(same), str(i), str(i + 1), a, b])
            elif kind == "stsb":
                out.append([str(i), a, b, f"{5.0 * same:.1f}"])
            elif kind == "nli2":
                out.append([str(i), a, b, "entailment" if same else "not_entailment"])
            elif kind == "nli3":
                out.append([str(i), a, b, ["entailment", "neutral", "contradiction"][i % 3]])
            else:  # binary pair
                out.append([str(i), a, b, str(same)])
        return out

    layout = {  # folder: (header or None, row kind, dev files)
        "SST-2": (["sentence", "label"], "single", ["dev.tsv"]),
        "CoLA": (None, "cola", ["dev.tsv"]),
        "MRPC": (["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"], "mrpc", ["dev.tsv"]),
        "STS-B": (["index", "sentence1", "sentence2", "score"], "stsb", ["dev.tsv"]),
        "QQP": (["id", "question1", "question2", "is_duplicate"], "pair", ["dev.tsv"]),
        "MNLI": (["index", "sentence1", "sentence2", "gold_label"], "nli3", ["dev_matched.tsv", "dev_mismatched.tsv"]),
        "QNLI": (["index", "question", "sentence", "label"], "nli2", ["dev.tsv"]),
        "RTE": (["index", "sentence1", "sentence2", "label"], "nli2", ["dev.tsv"]),
        "WNLI": (["index", "sentence1", "sentence2", "label"], "pair", ["dev.tsv"]),
    }
    for name, (header, kind, devs) in layout.items():
        task = folder / name
        task.mkdir(parents=True, exist_ok=True)
        for file, n in [("train.tsv", n_train)] + [(d, n_dev) for d in devs]:
            lines = ([header] if header else []) + rows(kind, n)
            (task / file).write_text("".join("\t".join(line) + "\n" for line in lines), encoding="utf-8")
    return folder


def write_xnli(folder: Path, n: int = 24) -> Path:
    """dev-en.tsv and dev-fr.tsv: premise, hypothesis, label; parallel line by line."""
    rng = random.Random(4)
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(n):
        a, b, _ = _pair(rng)
        items.append((a, b, ["entailment", "neutral", "contradiction"][i % 3]))
    for lang in LANGUAGES:
        tr = (lambda t: t) if lang == "en" else (lambda t: " ".join(FR.get(w.lower(), w) for w in t.split()))
        (folder / f"dev-{lang}.tsv").write_text("".join(f"{tr(a)}\t{tr(b)}\t{label}\n" for a, b, label in items),
                                                encoding="utf-8")
    return folder


def write_all(root: Path) -> dict[str, Path]:
    """Everything, laid out like ../shared/data (usable as HEADLESS_SHARED_DATA)."""
    root.mkdir(parents=True, exist_ok=True)
    return {
        "root": root,
        "corpus": write_corpus(root / "corpus" / "train.jsonl"),
        "lambada": write_lambada(root / "lambada" / "lambada_openai_dev.jsonl"),
        "zeroshot": write_zeroshot(root / "zeroshot"),
        "glue": write_glue(root / "glue"),
        "xnli": write_xnli(root / "xnli"),
    }


def _write_xz(path: Path, docs: list[str]) -> Path:
    import lzma

    path.parent.mkdir(parents=True, exist_ok=True)
    with lzma.open(path, "wt", encoding="utf-8") as f:
        f.write("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return path


def write_study_root(root: Path) -> Path:
    """`write_all` plus what `headless reproduce` reads, in the same layout as ../shared/data:
    enwiki train/validation shards, English and French books, German Wikipedia, and the two
    tokenizers (a 512-entry byte-level BPE as `gpt-neox-20b/tokenizer.json`, a 512-entry WordPiece as
    `bert-base-uncased/vocab.txt`), all generated (~2 s)."""
    from headless.data.tokenizers import load_tokenizer, train_tokenizer

    write_all(root)
    for i in range(2):
        _write_xz(root / "enwiki" / "train" / f"enwiki-00{i}.jsonl.xz", documents(200, seed=10 + i))
    _write_xz(root / "enwiki" / "validation" / "enwiki-029.jsonl.xz", documents(40, seed=20))
    _write_xz(root / "books" / "gutenberg_en.jsonl.xz", documents(20, seed=21))
    french = [" ".join(FR.get(w.lower(), w) for w in d.split()) for d in documents(60, seed=22)]
    _write_xz(root / "books" / "gutenberg_fr_es.jsonl.xz", french)
    _write_xz(root / "multilingual" / "de.jsonl.xz", [d.replace("The ", "Der ") for d in documents(60, seed=23)])
    scratch = root / ".tokenizer-training"
    for kind in ("bpe", "wordpiece"):
        train_tokenizer([str(root / "corpus" / "train.jsonl")], kind=kind, vocab_size=512, output_dir=scratch / kind,
                        progress=False)
    neox = root / "tokenizers" / "gpt-neox-20b"
    neox.mkdir(parents=True, exist_ok=True)
    (neox / "tokenizer.json").write_bytes((scratch / "bpe" / "tokenizer.json").read_bytes())
    vocab = load_tokenizer(str(scratch / "wordpiece")).get_vocab()
    bert = root / "tokenizers" / "bert-base-uncased"
    bert.mkdir(parents=True, exist_ok=True)
    (bert / "vocab.txt").write_text("".join(t + "\n" for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])),
                                    encoding="utf-8")
    import shutil

    shutil.rmtree(scratch)  # made just above
    return root
