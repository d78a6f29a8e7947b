"""What one reproduction study is: the twins' preset, the data, the budget, the evaluations.

A study is described by one `StudyConfig` (typed, YAML-loadable, `key=value`-overridable, saved in
every result).  The defaults of each study live in `STUDY_DEFAULTS`, so `headless reproduce decoder`
alone runs the documented protocol; a test or a cluster run overrides budget and data.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from headless.errors import HeadlessError

STUDIES = ("decoder", "encoder", "multilingual")
FLAVOURS = ("headless", "vanilla")


@dataclass
class StudyConfig:
    """One study; each piece of it trains one flavour at one pretraining seed."""

    study: Literal["decoder", "encoder", "multilingual"] = "decoder"
    # full: the documented protocol (STUDY_DEFAULTS); smoke: SMOKE_DEFAULTS on top, a tiny model on a
    # small subset of the data, end to end in a few minutes on 2 CPU cores (it checks, it measures nothing)
    size: Literal["full", "smoke"] = "full"
    preset: str = "pythia-70m"
    # equal GPU time (the paper's comparison): each twin trains `budget_s` seconds of steady-state
    # step time, its step count set by its own measured throughput; equal tokens: both twins take
    # `steps` steps.
    compare: Literal["time", "tokens"] = "time"
    budget_s: float = 240.0
    steps: Optional[int] = None
    fractions: list = field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0])  # checkpoints evaluated
    seed: int = 0  # pretraining seed (masks, data order, initialisation)
    pretrain: list = field(default_factory=list)  # key=value overrides of the twins' TrainConfig
    # key=value overrides of one twin only, after `pretrain`: e.g. the paper's vanilla baseline,
    # HF's head at every position: vanilla_pretrain=[objective.loss_implementation=hf]
    headless_pretrain: list = field(default_factory=list)
    vanilla_pretrain: list = field(default_factory=list)
    # data: a folder laid out like ../shared/data (MANIFEST.md); None: $HEADLESS_SHARED_DATA
    data_root: Optional[str] = None
    enwiki_shards: Optional[int] = None  # None: every train shard found
    # a subset: the first `subset_documents` documents of each input file (validation too), each cut to
    # `subset_chars` characters, copied into the work directory before tokenising (None: whole files)
    subset_documents: Optional[int] = None
    subset_chars: Optional[int] = None
    books: bool = True  # Project Gutenberg English books in the pretraining mix (decoder, encoder)
    # multilingual, with English: Wikipedia in de/ja/ko/zh (multilingual/<lang>.jsonl.xz), French and
    # Spanish from the Gutenberg books (books/gutenberg_fr_es.jsonl.xz holds both)
    languages: list = field(default_factory=lambda: ["de", "ja", "ko", "zh", "fr", "es"])
    # multilingual: the cased WordPiece vocabulary the study trains on its own mix; the default is the
    # paper's (distilbert-base-multilingual-cased, 119,547 entries); XLM-R's is 250002
    tokenizer_vocab_size: int = 119547
    seq_len: Optional[int] = None  # None: the preset's
    # decoder: None: the Pythia tokenizer and English text; N: a byte-level BPE of N entries that the
    # study trains on English plus `languages` (the large-vocabulary pair: N >= 128k)
    decoder_vocab_size: Optional[int] = None
    # decoder: held-out bits per byte per language, on the sentences of XNLI's dev-<lang>.tsv (parallel
    # text: comparable across languages and tokenizers); None: none with the Pythia tokenizer, else
    # English plus every language of the mix that XNLI has
    heldout_languages: Optional[list] = None
    # decoder evaluation
    finetune_tokens: float = 5e6  # HLM+FT budget per headless checkpoint (its time is counted)
    finetune_lr: float = 1e-4
    lambada_limit: Optional[int] = None
    heldout_sequences: int = 256
    zeroshot_tasks: list = field(default_factory=lambda: ["boolq", "piqa", "arc_easy", "pubmedqa"])
    zeroshot_limit: Optional[int] = 1000
    zeroshot_at: Literal["final", "all", "none"] = "final"
    # encoder / multilingual evaluation
    glue_tasks: list = field(default_factory=lambda: ["cola", "sst2", "mrpc", "stsb", "rte"])
    glue_recipe: Literal["small", "paper"] = "small"  # small: lr chosen per task on dev; paper: balanced CE
    glue_lrs: list = field(default_factory=lambda: [1e-4, 5e-5, 2e-5])
    glue_epochs: int = 3
    glue_max_train_examples: Optional[int] = 8000
    seeds: list = field(default_factory=lambda: [0, 1, 2])  # fine-tuning seeds at the final checkpoint
    curve_seeds: list = field(default_factory=lambda: [0])  # fine-tuning seeds at earlier checkpoints
    # transfer (English only), target (each language), all (translate-train-all: every language's
    # items together, 15 x 1,245 with the parallel dev halves)
    xnli_modes: list = field(default_factory=lambda: ["transfer", "target", "all"])
    xnli_lr: float = 5e-5
    xnli_epochs: int = 10
    # XNLI fine-tuning examples per language (a fixed random subset); with train-<lang>.tsv files
    # in xnli/ (MNLI-sized, the paper's protocol) a cap keeps a point within one job
    xnli_max_train_examples: Optional[int] = None
    eval_workers: int = 1  # GLUE / XNLI fine-tunings run side by side in this many processes (one GPU)
    # refuse to pretrain when a twin would see its text more often than this (estimated before
    # pretraining from its shape's measured throughput, docs/guide/reproduction.md); null: no limit
    max_epochs: Optional[float] = 2.0
    device: str = "auto"
    progress: bool = True

    def validate(self) -> "StudyConfig":
        checks = [
            (self.budget_s > 0, "budget_s must be > 0"),
            (self.compare == "time" or (self.steps or 0) >= 1, "compare=tokens needs steps >= 1"),
            (len(self.fractions) >= 1 and all(isinstance(f, (int, float)) and 0 < f <= 1 for f in self.fractions),
             "fractions must be numbers in (0, 1]"),
            (1.0 in [float(f) for f in self.fractions], "fractions must include 1.0 (the final checkpoint)"),
            (self.finetune_tokens > 0, "finetune_tokens must be > 0"),
            (bool(self.seeds) and bool(self.curve_seeds), "seeds and curve_seeds must not be empty"),
            (bool(self.glue_lrs), "glue_lrs must not be empty"),
            (self.eval_workers >= 1, "eval_workers must be >= 1"),
            (self.max_epochs is None or self.max_epochs > 0, "max_epochs must be > 0 (or null: no limit)"),
            (all(m in ("transfer", "target", "all") for m in self.xnli_modes) and bool(self.xnli_modes),
             "xnli_modes must be among transfer, target, all"),
            (self.enwiki_shards is None or self.enwiki_shards >= 1, "enwiki_shards must be >= 1"),
            (all(n is None or n >= 1 for n in (self.subset_documents, self.subset_chars)),
             "subset_documents and subset_chars must be >= 1"),
            (self.decoder_vocab_size is None or self.decoder_vocab_size >= 256,
             "decoder_vocab_size must be >= 256 (a byte-level BPE holds the 256 bytes)"),
            (all(n is None or n >= 1 for n in (self.glue_max_train_examples, self.xnli_max_train_examples)),
             "glue_max_train_examples and xnli_max_train_examples must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise HeadlessError(f"invalid study config: {message}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def root(self) -> Path:
        from headless.eval.datasets import ENV_VAR, shared_data_root

        root = Path(self.data_root) if self.data_root else shared_data_root()
        if root is None:
            raise HeadlessError(f"no study data: pass data_root=PATH (a folder laid out like ../shared/data) "
                                f"or set {ENV_VAR} to an absolute one")
        if not root.is_dir():
            raise HeadlessError(f"data_root {root} is not a directory")
        return root


# What `headless reproduce STUDY` runs with no override: the protocols of docs/guide/reproduction.md.
# Shape, budget and data keep each twin to at most two epochs of its text (`check_epochs`, and the
# arithmetic in docs/guide/reproduction.md, "At most two epochs"): all the shared English text (20 enwiki
# shards and the books, 87.7 M GPT-NeoX / 84.0 M BERT tokens) and, at the fastest twin's H200 rate,
#   decoder, pythia-160m:  300 s x 500,858 tokens/s + 5 M (HLM+FT) = 155 M tokens = 1.77 epochs
#   encoder, bert-base:    200 s x 664,995 tokens/s = 133 M tokens = 1.58 epochs
# The multilingual text (~19 M tokens) cannot hold a budget in which its twins leave the MLM
# plateau within two epochs (vanilla left it after ~100 s of steps): that study keeps 120 s and
# max_epochs: null (about 7 epochs), and says how many when it runs.
STUDY_DEFAULTS: dict[str, dict] = {
    "decoder": {"preset": "pythia-160m", "budget_s": 300.0,
                "pretrain": ["grad_accum=4", "optim.warmup_steps=200", "eval_every=100000", "log_every=50"]},
    # encoder pieces spend most of their time in GLUE fine-tuning: two curve points, two rates; a
    # piece needs several 10-minute jobs (WALL=, docs/guide/reproduction.md).  lr 5e-4: bert-small's 1e-3
    # halved for the 12-layer post-LN model (not yet run on a GPU at this shape)
    "encoder": {"preset": "bert-base", "budget_s": 200.0, "fractions": [0.5, 1.0], "glue_lrs": [1e-4, 3e-5],
                "pretrain": ["batch_size=256", "optim.lr=5e-4", "optim.warmup_steps=400", "optim.beta2=0.98",
                             "eval_every=100000", "log_every=100", "compile=auto",
                             "compile_mode=reduce-overhead"]},
    "multilingual": {"preset": "multilingual", "budget_s": 120.0, "fractions": [0.5, 1.0], "max_epochs": None,
                     "pretrain": ["batch_size=128", "optim.lr=5e-4", "optim.warmup_steps=300", "optim.beta2=0.98",
                                  "eval_every=100000", "log_every=100", "compile=auto",
                                  "compile_mode=reduce-overhead"],
                     # the paper's raw outputs collapsed at this shape (docs/results/2026-12-05-plateau)
                     "headless_pretrain": ["objective.projector=transform"]},
}


# `size=smoke` (`--size smoke`), on top of STUDY_DEFAULTS: every code path of the study on a tiny twin, a
# few hundred kB of each input and a handful of evaluation examples, in a few minutes on 2 CPU cores.
# The calibration floor (budget.calibration_skip + calibration_steps = 6 steps) stays far below the
# budget's step count, so the budget decides and every fraction gets its own checkpoint.
_SMOKE_MODEL = ["model.hidden_size=64", "model.num_layers=2", "model.num_heads=2", "model.intermediate_size=128",
                "batch_size=8", "grad_accum=1", "optim.warmup_steps=14", "budget.calibration_skip=2",
                "budget.calibration_steps=4", "log_every=5", "eval_batches=2", "eval_every=100000",
                "tensorboard=false", "compile=false"]
_SMOKE_COMMON = {"budget_s": 10.0, "fractions": [0.5, 1.0], "seq_len": 64, "enwiki_shards": 1,
                 "subset_documents": 64, "subset_chars": 4000, "seeds": [0], "curve_seeds": [0],
                 "pretrain": _SMOKE_MODEL}
SMOKE_DEFAULTS: dict[str, dict] = {
    "decoder": dict(_SMOKE_COMMON, preset="tiny-gpt", books=False, finetune_tokens=8192, lambada_limit=64,
                    heldout_sequences=16, zeroshot_tasks=["boolq", "piqa"], zeroshot_limit=32),
    "encoder": dict(_SMOKE_COMMON, preset="tiny", books=False, glue_tasks=["rte", "stsb"], glue_lrs=[1e-4],
                    glue_epochs=1, glue_max_train_examples=128),
    "multilingual": dict(_SMOKE_COMMON, preset="tiny", languages=["de", "fr"], tokenizer_vocab_size=2000,
                         xnli_modes=["all"], xnli_epochs=1, xnli_max_train_examples=128),
}


# -- at most two epochs ---------------------------------------------------------------------------
# Repeated text may favour one twin, so a study's defaults keep each twin to at most
# `max_epochs` passes over its pretraining text, and `headless reproduce` refuses settings that
# would exceed it before pretraining starts (`check_epochs`).  The estimate, per twin:
#   tokens seen = budget_s x its shape's tokens/s (x processes)   [compare=tokens: steps x tokens/step]
#                 + finetune_tokens (HLM+FT fine-tunes the headless decoder on the same text)
#   epochs      = tokens seen / tokens in one epoch of the study's text
# The arithmetic of the defaults is in docs/guide/reproduction.md ("At most two epochs").

# Steady tokens/s of each twin at a preset's shape, both twins captured, on one H200 (the fastest
# GPU the studies ran on, so on a slower one the twins see fewer epochs than estimated):
# preset -> ((micro-batch, seq_len) measured at, {twin: tokens/s}).  "vanilla-hf" is HF's head at
# every position (`vanilla_pretrain=[objective.loss_implementation=hf]`).
THROUGHPUT: dict[str, tuple[tuple[int, int], dict[str, float]]] = {
    # docs/reference/performance.md, "Current numbers" (the bench; the trainer measured 2.6 % below)
    "pythia-70m": ((8, 2048), {"headless": 1_473_568, "vanilla": 1_088_134}),
    # the same table (cwt-paper / ce-hf, one graph)
    "pythia-160m": ((8, 2048), {"headless": 500_858, "vanilla": 434_726}),
    # docs/guide/reproduction.md: the encoder pieces' measured steps
    "bert-small": ((256, 128), {"headless": 2_985_024, "vanilla": 2_735_225, "vanilla-hf": 1_337_469}),
    # docs/reference/performance.md, "Current numbers" (cwt-paper / ce-hf / ce-hf-full, V = 30,522)
    "bert-base": ((256, 128), {"headless": 664_995, "vanilla": 638_827, "vanilla-hf": 422_352}),
    # the twins' steps through `headless pretrain` at V = 119,547 (docs/guide/reproduction.md's table)
    "multilingual": ((128, 128), {"headless": 1_093_940, "vanilla": 886_226, "vanilla-hf": 157_023}),
}

# Tokens per file of ../shared/data as `headless prepare` packs them (each document's tokens and
# the EOS after it) in each study's tokenizer: `python scripts/corpus_tokens.py STUDY DATA_ROOT`.
# The epoch check reads them before a study's data is prepared, the prepared count after.
_ENWIKI_NEOX = (3474885, 3467762, 3484495, 3490618, 3468797, 3478642, 3465962, 3481293, 3487800, 3469513,
                3457026, 3467921, 3471441, 3462114, 3466161, 3467939, 3473528, 3456965, 3475688, 3462756)
_ENWIKI_BERT = (3368594, 3366680, 3372496, 3392420, 3375053, 3373565, 3364751, 3374744, 3382776, 3370092,
                3356799, 3367251, 3363828, 3360742, 3364274, 3359793, 3367875, 3361626, 3378998, 3365123)
SHARED_TOKENS: dict[str, dict[str, int]] = {
    "decoder": {**{f"enwiki-{i:03d}.jsonl.xz": n for i, n in enumerate(_ENWIKI_NEOX)},
                "gutenberg_en.jsonl.xz": 18258068},
    "encoder": {**{f"enwiki-{i:03d}.jsonl.xz": n for i, n in enumerate(_ENWIKI_BERT)},
                "gutenberg_en.jsonl.xz": 16566896},
    # the study's own cased WordPiece tokenizer (tokenizer_vocab_size=119547) trained on its default
    # mix (2 enwiki shards, de/ja/ko/zh, fr/es books): 19,115,235 tokens
    "multilingual": {"enwiki-000.jsonl.xz": 3263653, "enwiki-001.jsonl.xz": 3261121, "de.jsonl.xz": 2405304,
                     "ja.jsonl.xz": 2834041, "ko.jsonl.xz": 2008328, "zh.jsonl.xz": 4069657,
                     "gutenberg_fr_es.jsonl.xz": 1273131},
}
_COUNTED_VOCAB = {"multilingual": 119547}  # the tokenizer a study trains itself: its counts hold at this size


@dataclass
class EpochEstimate:
    flavour: str
    tokens: float  # seen in pretraining (+ HLM+FT's fine-tuning)
    epochs: float
    tokens_per_s: Optional[float]  # None: compare=tokens, counted not estimated


def _twin_config(config: StudyConfig, flavour: str):
    from headless.config import load_config

    own = config.headless_pretrain if flavour == "headless" else config.vanilla_pretrain
    overrides = list(config.pretrain) + list(own) + ([f"data.seq_len={config.seq_len}"] if config.seq_len else [])
    return load_config(config.preset, overrides=overrides, flavour=flavour)


def twin_rate(config: StudyConfig, flavour: str) -> tuple[Optional[float], str]:
    """(the twin's measured H200 tokens/s, what it is) or (None, why there is none): a rate is
    known only for a preset of THROUGHPUT whose model the settings leave as it is."""
    from headless.config import load_config

    if config.preset not in THROUGHPUT:
        return None, f"no measured throughput for preset {config.preset!r}"
    cfg = _twin_config(config, flavour)
    if cfg.model != load_config(config.preset, flavour=flavour).model:
        return None, f"no measured throughput for preset {config.preset!r} with another model shape"
    (batch, seq_len), rates = THROUGHPUT[config.preset]
    twin = "vanilla-hf" if flavour == "vanilla" and cfg.objective.loss_implementation == "hf" else flavour
    if twin not in rates:
        return None, f"no measured throughput for {twin} at preset {config.preset!r}"
    return rates[twin], f"{rates[twin]:,.0f} tokens/s, its H200 rate at {batch} x {seq_len}"


def documented_tokens(config: StudyConfig) -> Optional[int]:
    """Tokens in one epoch of the study's text from SHARED_TOKENS: the files the study would read
    under data_root (or, with no data at hand, the shared data's), None if one is not documented."""
    from headless.lab.reproduce.data import pretraining_files

    counts = SHARED_TOKENS[config.study]
    if config.subset_documents or config.subset_chars or (config.study == "decoder" and config.decoder_vocab_size) \
            or config.tokenizer_vocab_size != _COUNTED_VOCAB.get(config.study, config.tokenizer_vocab_size):
        return None  # another tokenizer or part files: the counts do not apply
    try:
        names = [p.name for p in pretraining_files(config)[0]]
    except HeadlessError:  # no data here yet (a GPU run's data arrives later): the shared data's files
        shards = sorted(n for n in counts if n.startswith("enwiki-"))
        limit = config.enwiki_shards or (2 if config.study == "multilingual" else None)
        names = shards[:limit] if limit else shards
        names += [n for n in counts if not n.startswith("enwiki-")] if config.study == "multilingual" or config.books \
            else []
    if not names or any(n not in counts for n in names):
        return None
    return sum(counts[n] for n in names)


def estimate_epochs(config: StudyConfig, flavour: str, train_tokens: int) -> tuple[Optional[EpochEstimate], str]:
    """The twin's passes over `train_tokens` at the study's budget (module comment above)."""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    extra = config.finetune_tokens if config.study == "decoder" and flavour == "headless" else 0.0
    if config.compare == "tokens":
        cfg = _twin_config(config, flavour)
        tokens = config.steps * cfg.batch_size * cfg.grad_accum * cfg.data.seq_len * world + extra
        return EpochEstimate(flavour, tokens, tokens / train_tokens, None), f"{config.steps} steps"
    rate, what = twin_rate(config, flavour)
    if rate is None:
        return None, what
    tokens = config.budget_s * rate * world + extra
    return EpochEstimate(flavour, tokens, tokens / train_tokens, rate), what


def check_epochs(config: StudyConfig, flavours=FLAVOURS, train_tokens: Optional[int] = None) -> list[str]:
    """Refuse (one line) when a twin would see its text more than `max_epochs` times; returns one
    line per twin saying what was estimated.  `train_tokens`: the prepared count; None: the
    documented count of the shared data (SHARED_TOKENS)."""
    counted = "prepared" if train_tokens else "documented"
    train_tokens = train_tokens or documented_tokens(config)
    if not train_tokens:
        return [f"{config.study}: epochs not estimated before preparing the data (no documented token count "
                "for its files)"]
    lines = []
    for flavour in flavours:
        estimate, what = estimate_epochs(config, flavour, train_tokens)
        if estimate is None:
            lines.append(f"{config.study}/{flavour}: epochs not estimated ({what}); the piece records them")
            continue
        said = (f"{config.study}/{flavour}: about {estimate.tokens / 1e6:,.1f} M tokens at "
                + (f"budget_s={config.budget_s:g} ({what})" if estimate.tokens_per_s else what)
                + f" = {estimate.epochs:.2f} epochs of its {train_tokens / 1e6:,.1f} M {counted} tokens")
        if config.max_epochs is not None and estimate.epochs > config.max_epochs:
            raise HeadlessError(f"{said} > max_epochs={config.max_epochs:g}: lower budget_s, add text "
                                "(data_root, enwiki_shards) or raise max_epochs")
        lines.append(said)
    return lines


PRETRAIN_KEYS = ("pretrain", "headless_pretrain", "vanilla_pretrain")  # key=value lists: CLI items add to them


def load_study(study: str, config_file: str | Path | None = None, overrides: list[str] | dict | None = None
               ) -> StudyConfig:
    """The study's defaults <- its size (`size=smoke`: SMOKE_DEFAULTS) <- a YAML file <- key=value
    overrides, validated.  The size is read from the file and overrides first, so that what they set
    wins over it."""
    from headless.config import deep_merge, from_dict, parse_overrides, read_yaml

    if study not in STUDIES:
        raise HeadlessError(f"unknown study {study!r}; choose one of {', '.join(STUDIES)}")
    layers = []
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise HeadlessError(f"study config file not found: {path}")
        layers.append((read_yaml(path, StudyConfig), False))  # a file's lists replace
    if overrides:  # key=value lists add to the twins' overrides
        layers.append((dict(overrides) if isinstance(overrides, dict) else parse_overrides(list(overrides), StudyConfig),
                       True))
    size = next((layer["size"] for layer, _ in reversed(layers) if "size" in layer), "full")
    if size not in ("full", "smoke"):
        raise HeadlessError(f"invalid study config: size must be full or smoke, got {size!r}")
    data = dict(STUDY_DEFAULTS[study], study=study)
    if size == "smoke":
        layers.insert(0, (dict(SMOKE_DEFAULTS[study], size="smoke"), False))  # its twin overrides replace
    for update, adds in layers:
        for key in PRETRAIN_KEYS:
            if adds and key in update and isinstance(update[key], list):
                update = dict(update, **{key: list(data.get(key, [])) + update[key]})  # add to, not replace
        data = deep_merge(data, update)
    if data.get("study", study) != study:
        raise HeadlessError(f"the config is for study {data['study']!r}, not {study!r}")
    config = from_dict(StudyConfig, data)
    # a list given as one string from YAML/CLI ("pretrain=compile=false") stays a list of strings
    for key in PRETRAIN_KEYS:
        setattr(config, key, [str(p) for p in getattr(config, key)])
    try:  # YAML reads 1e-4 (no dot) as a string
        config.glue_lrs = [float(x) for x in config.glue_lrs]
        config.fractions = [float(x) for x in config.fractions]
    except (TypeError, ValueError):
        raise HeadlessError(f"invalid study config: glue_lrs and fractions must be numbers, got "
                            f"{config.glue_lrs} and {config.fractions}") from None
    return config.validate()
