"""Typed run configuration: dataclasses, YAML presets, `key=value` overrides, validation.

A run is fully described by one `TrainConfig`; it is validated once here (so nothing deep inside the
trainer has to guess) and saved as `config.yaml` in the run directory, which is what `--resume` and
`export` read back.  Presets live in `headless/presets/*.yaml`; a preset is just a partial config.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from headless.architectures import ARCHITECTURES
from headless.errors import HeadlessError
from headless.loss_kinds import LOSSES

PRESET_DIR = Path(__file__).parent / "presets"

Architecture = Literal[tuple(ARCHITECTURES)]  # the table in headless.architectures


@dataclass
class ModelConfig:
    """The backbone.  Either built from these shape fields, or loaded from `init_from` (an HF dir)."""

    architecture: Architecture = "bert"  # the Hugging Face model family; encoders train with MLM, decoders with CLM
    init_from: Optional[str] = None  # an HF model directory to start from (its shape fields win over the ones below)
    hidden_size: int = 256  # width D of the hidden states and embeddings
    num_layers: int = 4  # transformer blocks
    num_heads: int = 4  # attention heads (hidden_size must be a multiple)
    intermediate_size: Optional[int] = None  # default 4 * hidden_size
    max_position_embeddings: int = 512  # longest input; with data.path, a preset's value grows to fit
    vocab_size: Optional[int] = None  # default: the tokenizer's size rounded up to pad_vocab_multiple
    pad_vocab_multiple: int = 64  # round the embedding rows up to a multiple of this (fast matmuls)
    dropout: float = 0.1  # hidden and attention dropout
    rotary_pct: float = 0.25  # gpt-neox only
    tie_word_embeddings: bool = True  # vanilla flavour: tie the head to the input embeddings
    attn_implementation: str = "sdpa"  # HF attention backend: sdpa, eager, flash_attention_2, headless_sdpa
    # the kernel SDPA runs (attn_implementation sdpa): auto = torch's own pick; flash (FlashAttention-2),
    # cudnn (cuDNN's, Hopper-tuned), efficient (memory-efficient), math (reference); refused where absent
    attention_kernel: Literal["auto", "flash", "cudnn", "efficient", "math"] = "auto"
    extra: dict = field(default_factory=dict)  # passed verbatim to the HF config

    @property
    def is_encoder(self) -> bool:
        return ARCHITECTURES[self.architecture].encoder


@dataclass
class ObjectiveConfig:
    """What is predicted (MLM / CLM) and with which loss.

    `loss: auto` follows the run's flavour: headless -> cwt, vanilla -> ce.  The ablations of the
    paper's Tab. 6 are `ce+cwt` and `nce` (contrastive against a separate, untied target matrix).
    """

    kind: Literal["auto", "mlm", "clm"] = "auto"  # auto: mlm for encoders, clm for decoders
    loss: Literal[("auto", *LOSSES)] = "auto"  # auto: cwt if headless, else ce; ce+cwt, nce: ablations (loss_kinds.LOSSES)
    mask_prob: float = 0.15  # MLM: fraction of tokens chosen for prediction
    replace_prob: float = 0.8  # MLM: of the chosen tokens, the fraction replaced by the mask token
    random_prob: float = 0.1  # MLM: of the chosen tokens, the fraction replaced by a random token
    # bernoulli: each position with mask_prob (BERT); exact: round(p·n) of a row's n eligible ones
    # (the official code); static: round(p·seq_len) per row, a constant count the model gathers
    # with static shapes (docs/guide/training.md)
    masking: Literal["bernoulli", "exact", "static"] = "bernoulli"
    temperature: float = 1.0  # CWT: the logits O @ E[targets]^T are divided by this
    # CWT / NCE: transform: score a transform of the outputs (Linear D x D, GELU, LayerNorm: the one the
    # vanilla MLM head applies before its tied decoder), not exported; none: the paper's raw outputs.
    # At the multilingual shape and lr 1e-3 the paper's objective collapsed and this did not
    # (docs/guide/training.md, 'The MLM plateau')
    projector: Literal["none", "transform"] = "none"
    negatives: Literal["rank", "global"] = "rank"  # CWT negatives: this process's batch, or every process's
    max_negatives: Optional[int] = None  # CWT: cap on the unique target ids scored against (none: all of the batch)
    loss_implementation: str = "auto"  # auto, reference, chunked, triton, ...: each loss's own set (loss_kinds.LOSSES)
    # CWT "bounded" path: room for the unique targets of a micro-batch (rounded up to 128); null:
    # min(vocab, scored rows), always enough. Smaller is faster; a micro-batch with more stops the run.
    # Set, it lets auto capture CWT above 16,384 scored rows (e.g. 20480 at 64 x 2048 tokens); auto:
    # 1.25 x the most distinct token ids in 32 random micro-batches of the training data
    unique_bound: Optional[int | Literal["auto"]] = None
    respect_documents: bool = True  # CLM: never predict across a document boundary (EOS)


@dataclass
class DataConfig:
    """Training data: a directory made by `headless prepare`, or raw inputs prepared on the fly.

    With neither, the embedded default corpus (Python's own documentation) is used, so a fresh
    install can train without any download.
    """

    path: Optional[str] = None  # a directory made by `headless prepare` (its seq_len and tokenizer are used)
    inputs: list = field(default_factory=list)  # raw text sources prepared on the fly (default: the embedded corpus)
    tokenizer: Optional[str] = None  # None: train a BPE tokenizer of tokenizer_vocab_size on the corpus
    tokenizer_vocab_size: int = 8192  # size of the tokenizer trained when data.tokenizer is not given
    seq_len: int = 128  # tokens per training sequence; follows data.path when it is given
    validation_fraction: float = 0.01  # fraction of documents held out for validation (on-the-fly data)
    text_field: str = "text"  # JSON field / column that holds the text
    cache_dir: Optional[str] = None  # where on-the-fly datasets go (default ~/.cache/headless)


@dataclass
class OptimConfig:
    """AdamW and its learning-rate schedule."""

    lr: float = 5e-4  # peak learning rate of AdamW
    weight_decay: float = 0.01  # decoupled weight decay (not on norms and biases)
    beta1: float = 0.9  # AdamW beta1, in [0, 1)
    beta2: float = 0.98  # AdamW beta2, in [0, 1)
    eps: float = 1e-8  # AdamW epsilon
    schedule: Literal["linear", "cosine", "constant"] = "linear"  # learning-rate decay after the warm-up
    warmup_steps: int = 100  # linear warm-up from 0 to optim.lr
    min_lr_ratio: float = 0.0  # the schedule decays to optim.lr * min_lr_ratio
    # Gradient-norm clipping threshold; null or 0 turns clipping off (the norm is still logged).
    grad_clip: Optional[float] = 1.0
    # Length of the LR schedule (warm-up included), apart from max_steps (the stop criterion).
    # null (saved as null) = follows max_steps, or the time budget's plan; a resume continues the
    # checkpoint's schedule.  Set it only to decouple the schedule from the stop criterion.
    schedule_steps: Optional[int] = None
    # A resume whose max_steps goes past the end of the checkpoint's schedule: cosine = a new cosine
    # tail from the checkpoint's step to max_steps (from the LR a max_steps-long schedule has there,
    # or the current one if higher); constant = keep the schedule's final LR (refused when it is 0);
    # refuse = stop with one line.  The choice is printed at the start.
    extend: Literal["cosine", "constant", "refuse"] = "cosine"


@dataclass
class BudgetConfig:
    """Equal-compute runs (`headless reproduce`) and learning-curve checkpoints, owned by the time
    budget policy (headless.train.budget): the loop itself knows nothing of them.

    With `time_s`, train for that many seconds of steady-state step time.  max_steps is planned at
    the end of warm-up (the last step whose learning rate does not depend on it), from the median
    of the last three windows of `calibration_steps` timed steps after `calibration_skip` untimed
    ones (compilation), and planned again once, at `calibration_replan` of that plan, from every
    step timed since: short windows were 5-30 % off the run's own step time.  The faster flavour
    therefore takes more steps; max_steps is then a cap.  The plan is saved with each checkpoint.
    """

    time_s: Optional[float] = None  # seconds of training steps (null: max_steps decides)
    calibration_skip: int = 10  # time budget: untimed first steps (compilation)
    calibration_steps: int = 20  # time budget: steps per timed window
    calibration_tolerance: float = 0.05  # time budget: windows (and the run) further apart than this are reported
    # time budget: max_steps is planned again at this fraction of the first plan (earlier when a
    # checkpoint fraction comes sooner), from all steps timed since the calibration; 0: never
    calibration_replan: float = 0.2
    # Checkpoints kept at these fractions of max_steps (never pruned by keep_last): the points
    # of a learning curve.
    checkpoint_fractions: list = field(default_factory=list)


@dataclass
class TrainConfig:
    """One pretraining run.  `batch_size` is per device and micro-step; the global batch is
    batch_size * grad_accum * world_size sequences."""

    flavour: Literal["headless", "vanilla"] = "headless"  # headless: CWT, no head; vanilla: cross-entropy head
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run_dir: Optional[str] = None  # default runs/<preset>-<flavour>-<timestamp>
    seed: int = 0  # seeds the weights, the data order and the masks
    batch_size: int = 16  # sequences per device and micro-step
    grad_accum: int = 1  # micro-steps per optimizer step
    max_steps: int = 1000  # optimizer steps of the run
    device: str = "auto"  # auto (cuda if available, else cpu), cpu, cuda, cuda:1, mps
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    # torch.compile the backbone (and the loss with it when it can be one graph); auto: on CUDA only,
    # eager elsewhere (the GPU presets: compiling on the CPU costs minutes before the first step)
    compile: bool | Literal["auto"] = False
    # reduce-overhead adds CUDA graphs: the host no longer launches the backbone's kernels one by one
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    distributed: Literal["auto", "none", "ddp", "fsdp2"] = "auto"  # auto: ddp under a multi-process torchrun
    eval_every: int = 200  # validation every N steps (and at the end)
    eval_batches: int = 20  # validation batches per evaluation
    log_every: int = 10  # metrics.jsonl / TensorBoard / progress-bar numbers every N steps
    save_every: int = 500  # checkpoint every N steps (and at the end)
    keep_last: int = 2  # checkpoints kept on disk
    progress: bool = True  # show a progress bar
    tensorboard: bool = True  # write TensorBoard logs to RUN_DIR/tensorboard (false drops it from report_to)
    # where metrics, the config and its hparams go, through each tool's own library: tensorboard
    # (RUN_DIR/tensorboard), wandb (project $WANDB_PROJECT or headless), mlflow ($MLFLOW_TRACKING_URI)
    report_to: list = field(default_factory=lambda: ["tensorboard"])
    trainable: Literal["all", "head"] = "all"  # head: train only the vocabulary head (HLM+FT --probe)
    max_nan_skips: int = 5  # non-finite steps tolerated (skipped) before the run stops; checked on log/save steps
    # MLM runs: warn when training accuracy has not risen 25 % above its early plateau this many steps
    # after the warm-up (the MLM plateau a headless twin can stay on; headless.train.plateau); 0: never
    plateau_patience: int = 4000
    budget: BudgetConfig = field(default_factory=BudgetConfig)  # time budget, curve checkpoints
    preset: Optional[str] = None  # informational: the preset this config started from

    # -- derived values: one place that decides them ------------------------------------------
    @property
    def objective_kind(self) -> str:
        if self.objective.kind != "auto":
            return self.objective.kind
        return "mlm" if self.model.is_encoder else "clm"

    @property
    def loss_kind(self) -> str:
        if self.objective.loss != "auto":
            return self.objective.loss
        return "cwt" if self.flavour == "headless" else "ce"

    @property
    def needs_head(self) -> bool:
        return self.loss.needs_head

    @property
    def loss(self):
        """The registry entry (`headless.loss_kinds.LOSSES`) of this run's loss."""
        return LOSSES[self.loss_kind]

    def validate(self) -> "TrainConfig":
        from headless.runtime import host_memory_bytes

        checks = [
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.grad_accum >= 1, "grad_accum must be >= 1"),
            (self.max_steps >= 1, "max_steps must be >= 1"),
            (self.plateau_patience >= 0, "plateau_patience must be >= 0 (0: never warn)"),
            # a step's micro-batches are held on the host together (their loss positions are counted
            # first): 16 bytes a token (ids and labels); an absurd grad_accum would fill the memory
            (16 * self.batch_size * self.grad_accum * self.data.seq_len <= host_memory_bytes() // 2,
             f"batch_size x grad_accum x data.seq_len = {self.batch_size * self.grad_accum * self.data.seq_len:,} "
             f"tokens per step do not fit half of this machine's memory "
             f"({host_memory_bytes() / 2**30:,.0f} GiB); lower grad_accum or batch_size"),
            (self.objective.projector == "none" or self.loss_kind in ("cwt", "nce"),
             f"objective.projector={self.objective.projector} transforms the outputs CWT scores; the "
             f"{self.loss_kind} loss has none (use objective.projector=none)"),
            (self.data.seq_len >= 2, "data.seq_len must be >= 2"),
            (math.isfinite(self.optim.lr) and self.optim.lr > 0, "optim.lr must be > 0 and finite"),
            (0 <= self.optim.beta1 < 1, "optim.beta1 must be in [0, 1)"),
            (0 <= self.optim.beta2 < 1, "optim.beta2 must be in [0, 1)"),
            (math.isfinite(self.optim.eps) and self.optim.eps > 0, "optim.eps must be a finite number > 0"),
            (self.optim.grad_clip is None or (math.isfinite(self.optim.grad_clip) and self.optim.grad_clip >= 0),
             "optim.grad_clip must be > 0, or 0 / null for no clipping"),
            (self.optim.schedule_steps is None or self.optim.schedule_steps >= 1,
             "optim.schedule_steps must be >= 1 (or null: follows max_steps)"),
            (self.optim.warmup_steps >= 0, "optim.warmup_steps must be >= 0"),
            (0 <= self.optim.min_lr_ratio <= 1, "optim.min_lr_ratio must be in [0, 1]"),
            (self.optim.weight_decay >= 0, "optim.weight_decay must be >= 0"),
            (0 < self.objective.mask_prob < 1, "objective.mask_prob must be in (0, 1)"),
            (self.objective.replace_prob + self.objective.random_prob <= 1,
             "objective.replace_prob + objective.random_prob must be <= 1"),
            (self.objective.temperature > 0, "objective.temperature must be > 0"),
            (self.objective.unique_bound in (None, "auto") or self.objective.unique_bound >= 1,
             "objective.unique_bound must be >= 1, auto, or null (min(vocab, scored rows))"),
            *[(getattr(self.model, name) is None or getattr(self.model, name) >= 1, f"model.{name} must be >= 1")
              for name in ("hidden_size", "num_heads", "num_layers", "intermediate_size",
                           "max_position_embeddings", "vocab_size", "pad_vocab_multiple")],
            (0 <= self.model.dropout < 1, "model.dropout must be in [0, 1)"),
            (self.data.tokenizer_vocab_size >= 1, "data.tokenizer_vocab_size must be >= 1"),
            (0 <= self.data.validation_fraction < 1, "data.validation_fraction must be in [0, 1)"),
            (self.eval_batches >= 0, "eval_batches must be >= 0"),
            (self.max_nan_skips >= 0, "max_nan_skips must be >= 0"),
            (self.model.num_heads < 1 or self.model.hidden_size % self.model.num_heads == 0,
             "model.hidden_size must be a multiple of model.num_heads"),
            (self.model.num_layers >= 1, "model.num_layers must be >= 1"),
            (self.eval_every >= 1 and self.log_every >= 1 and self.save_every >= 1,
             "eval_every, log_every and save_every must be >= 1"),
            (self.keep_last >= 1, "keep_last must be >= 1"),
            (self.budget.time_s is None or self.budget.time_s > 0, "budget.time_s must be > 0"),
            (self.budget.calibration_skip >= 1 and self.budget.calibration_steps >= 1,
             "budget.calibration_skip and budget.calibration_steps must be >= 1"),
            (0 <= self.budget.calibration_tolerance < 1, "budget.calibration_tolerance must be in [0, 1)"),
            (0 <= self.budget.calibration_replan < 1, "budget.calibration_replan must be in [0, 1)"),
            (self.budget.time_s is None
             or self.optim.warmup_steps >= self.budget.calibration_skip + self.budget.calibration_steps,
             f"budget.time_s needs optim.warmup_steps >= budget.calibration_skip + budget.calibration_steps "
             f"({self.budget.calibration_skip + self.budget.calibration_steps}): steps before max_steps is known "
             "must not depend on it"),
            (all(isinstance(f, (int, float)) and 0 < f <= 1 for f in self.budget.checkpoint_fractions),
             "budget.checkpoint_fractions must be numbers in (0, 1]"),
            (self.model.attention_kernel == "auto" or self.model.attn_implementation in ("sdpa", "headless_sdpa"),
             f"model.attention_kernel={self.model.attention_kernel} picks a kernel of PyTorch's SDPA; "
             f"model.attn_implementation={self.model.attn_implementation} does not use it (set it to sdpa, "
             "or model.attention_kernel=auto)"),
            (self.model.init_from is not None or self.data.seq_len <= self.model.max_position_embeddings,
             f"data.seq_len={self.data.seq_len} exceeds model.max_position_embeddings="
             f"{self.model.max_position_embeddings}"),
        ]
        from headless.runtime import check_device_spec

        check_device_spec(self.device, "config: device")
        for ok, message in checks:
            if not ok:
                raise HeadlessError(f"invalid config: {message}")
        try:  # each loss has its own implementations (headless.loss_kinds)
            self.loss.implementation(self.objective.loss_implementation)
        except HeadlessError as err:
            raise HeadlessError(f"invalid config: {err}") from None
        _check_report_to(self.report_to)
        if self.objective_kind == "mlm" and not self.model.is_encoder:
            raise HeadlessError(f"invalid config: MLM needs an encoder, got model.architecture={self.model.architecture}")
        if self.objective_kind == "clm" and self.model.is_encoder:
            raise HeadlessError(f"invalid config: CLM needs a decoder, got model.architecture={self.model.architecture}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------------------
# dict <-> dataclass with type checking


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except HeadlessError as err:
                errors.append(str(err))
        words = [str(w) for a in args for w in typing.get_args(a)]
        if bool in args and words:  # a flag with more words (`compile: auto`)
            raise HeadlessError(f"invalid config: {key} must be true, false or {' or '.join(words)}, got {value!r}")
        raise HeadlessError(errors[0] if errors else f"invalid config: {key} must not be null")
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise HeadlessError(f"invalid config: {key}={value!r}; choose one of {choices}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise HeadlessError(f"invalid config: {key} must be a mapping, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise HeadlessError(f"invalid config: {key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise HeadlessError(f"invalid config: {key} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise HeadlessError(f"invalid config: {key} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise HeadlessError(f"invalid config: {key} must be a string, got {value!r}")
    if tp in (list, dict) or origin in (list, dict):
        base = origin or tp
        if base is list and isinstance(value, str):
            return [value]
        if not isinstance(value, base):
            raise HeadlessError(f"invalid config: {key} must be a {base.__name__}, got {value!r}")
        return value
    return value


# Settings that were removed but that the config.yaml of older run directories still holds: loading
# them (resume, export) must keep working while their default value is given; any other value
# fails with the reason.
_REMOVED = {
    "objective.cwt_sync_free": (False, ("objective.cwt_sync_free was removed: the sync-free CWT path "
                                        "measured slower than the captured K x K path (CHANGELOG.md); drop the key")),
}


# Settings that moved.  Note: config.yaml files saved before the `budget:` sub-config held the
# time budget's fields at the top level and `optim.schedule_steps` filled in with max_steps by the
# trainer (not necessarily by the user); `upgrade_saved` maps such a file on load, so old run
# directories still resume and export.  An old key in an override gets one line with the new name.
_MOVED = {old: f"budget.{new}" for old, new in [
    ("time_budget_s", "time_s"), ("calibration_skip", "calibration_skip"), ("calibration_steps", "calibration_steps"),
    ("calibration_tolerance", "calibration_tolerance"), ("calibration_replan", "calibration_replan"),
    ("checkpoint_fractions", "checkpoint_fractions")]}


def upgrade_saved(data: dict) -> dict:
    """A config file in the layout before `budget:` (see `_MOVED`), in today's: the budget keys
    moved, and a schedule length equal to max_steps (the trainer wrote it) back to null."""
    if not any(key in data for key in _MOVED):
        return data
    data = dict(data)
    budget = dict(data.get("budget") or {})
    for old, new in _MOVED.items():
        if old in data:
            budget[new.split(".", 1)[1]] = data.pop(old)
    data["budget"] = budget
    optim = data.get("optim")
    if isinstance(optim, dict) and optim.get("schedule_steps") is not None \
            and optim.get("schedule_steps") == data.get("max_steps"):
        data["optim"] = dict(optim, schedule_steps=None)
    return data


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if not isinstance(key, str):  # `1: 2` in a YAML file
            raise HeadlessError(f"invalid config: unknown key {prefix}{key!r}")
        if not prefix and key in _MOVED and key not in names:
            raise HeadlessError(f"invalid config: {key} is now {_MOVED[key]}")
    for key in [k for k in data if prefix + k in _REMOVED and k not in names]:
        default, reason = _REMOVED[prefix + key]
        if data[key] is not default:
            raise HeadlessError(f"invalid config: {reason}")
        data = {k: v for k, v in data.items() if k != key}
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
            raise HeadlessError(f"invalid config: unknown key {prefix}{key}{hint}")
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "extra":
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _field_type(cls: type, parts: list[str]) -> Any:
    """The annotation of the dotted field `parts` of dataclass `cls` (None: unknown, or inside a dict)."""
    tp: Any = cls
    for part in parts:
        if not dataclasses.is_dataclass(tp):
            return None
        tp = typing.get_type_hints(tp).get(part)
    return tp


def _non_null(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return inner[0] if len(inner) == 1 else tp
    return tp


def _is_text(tp: Any) -> bool:
    """str, Optional[str] or a Literal of strings: its value is the text as written (a path
    `runs/010` or `data/ep #2` must not become 8 or `data/ep`)."""
    tp = _non_null(tp)
    return tp is str or (typing.get_origin(tp) is Literal and all(isinstance(a, str) for a in typing.get_args(tp)))


def _is_number(tp: Any) -> bool:
    return _non_null(tp) in (int, float)


def _scalar(raw: str) -> Any:
    """A value written on the command line: YAML, with `1e-3` (a string to YAML 1.1) a number."""
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    return value


def parse_overrides(overrides: list[str], cls: type | None = None) -> dict:
    """`["optim.lr=1e-3", "model.num_layers=2"]` -> nested dict.  A string-typed field of `cls`
    (default TrainConfig) keeps the raw text (empty: null); other values are parsed as YAML."""
    cls = cls or TrainConfig
    out: dict = {}
    for item in overrides:
        if "=" not in item:
            raise HeadlessError(f"invalid override {item!r}: expected key=value, e.g. optim.lr=1e-3")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        tp = _field_type(cls, parts)
        if _is_text(tp):
            value = raw if raw != "" else None
        else:
            value = _scalar(raw)
            # one item of a list (`data.inputs=data/ep #2`): a string item is the text, unclipped
            if isinstance(value, str) and list in (tp, typing.get_origin(tp)) and not raw.startswith(("'", '"')):
                value = raw
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise HeadlessError(f"invalid override {item!r}: {part} is not a section")
        node[parts[-1]] = value
    return out


_NULL_TAG = "tag:yaml.org,2002:null"
_STR_TAG = "tag:yaml.org,2002:str"


def _construct(loader: yaml.SafeLoader, node: yaml.Node, tp: Any) -> Any:
    """A YAML node as the field typed `tp` reads it: a plain scalar of a string field is its text
    (`run_dir: 010` stays "010"; `null` and an empty value stay null), a plain scalar of a number
    field that YAML 1.1 takes for a string (`lr: 1e-3`) is a number, as on the command line."""
    if tp is not None and isinstance(node, yaml.ScalarNode) and node.style is None and node.tag != _NULL_TAG:
        if _is_text(tp):
            return node.value
        if _is_number(tp) and node.tag == _STR_TAG:
            try:
                return float(node.value)
            except ValueError:
                pass
    if tp is not None and dataclasses.is_dataclass(tp) and isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        hints = typing.get_type_hints(tp)
        out = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if isinstance(key, (list, dict)):
                raise yaml.constructor.ConstructorError(None, None, "found an unhashable key", key_node.start_mark)
            out[key] = _construct(loader, value_node, hints.get(key) if isinstance(key, str) else None)
        return out
    return loader.construct_object(node, deep=True)


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def read_yaml(path: Path, cls: type | None = None) -> dict:
    """A YAML config file as a dict; with `cls`, its fields are read by their type (`_construct`)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise HeadlessError(f"{path}: not a UTF-8 text file (byte {err.start})") from None
    except OSError as err:
        raise HeadlessError(f"cannot read {path}: {err.strerror or err}") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = None if node is None else _construct(loader, node, cls)
    except yaml.YAMLError as err:
        raise HeadlessError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    finally:
        loader.dispose()
    data = data or {}
    if not isinstance(data, dict):
        raise HeadlessError(f"{path}: a config file must hold a mapping at the top level")
    if cls is not None:
        _check_sections(cls, data, str(path))
    return data


REPORTERS = ("tensorboard", "wandb", "mlflow")


def _check_report_to(report_to: list) -> None:
    """Known names, and their package installed: refused before a run starts, not at its first log."""
    import importlib.util

    for name in report_to:
        if name not in REPORTERS:
            raise HeadlessError(f"invalid config: report_to: unknown {name!r}; choose from {', '.join(REPORTERS)}")
        if importlib.util.find_spec(name) is None:
            raise HeadlessError(f"invalid config: report_to includes {name} but the {name} package is not "
                                f"installed (pip install {name})")


def _check_sections(cls: type, data: dict, where: str, prefix: str = "") -> None:
    """A section (`model:`, `optim:`...) must be a mapping: `model: 5` is one line, not a crash later."""
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        tp = hints.get(key) if isinstance(key, str) else None
        if tp is not None and dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise HeadlessError(f"{where}: {prefix}{key} must be a mapping of its fields, got {value!r}")
            _check_sections(tp, value, where, f"{prefix}{key}.")


def load_config(
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: list[str] | dict | None = None,
    flavour: str | None = None,
) -> TrainConfig:
    """Preset (by name or path) <- YAML file <- overrides <- flavour, then validated."""
    data: dict = {}
    if preset:
        path = Path(preset)
        if not path.suffix:
            path = PRESET_DIR / f"{preset}.yaml"
            if not path.is_file():
                raise HeadlessError(f"unknown preset {preset!r}; available: {', '.join(list_presets())}")
        elif not path.is_file():
            raise HeadlessError(f"preset file not found: {path}")
        data = upgrade_saved(read_yaml(path, TrainConfig))
        data.setdefault("preset", Path(preset).stem)
    user: dict = {}  # what the user wrote (file, overrides): never adapted, see headless.fit
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise HeadlessError(f"config file not found: {path}")
        user = upgrade_saved(read_yaml(path, TrainConfig))
        data = deep_merge(data, user)
    if overrides:
        update = overrides if isinstance(overrides, dict) else parse_overrides(list(overrides))
        data = deep_merge(data, update)
        user = deep_merge(user, update)
    _check_sections(TrainConfig, data, "invalid config")
    if flavour:
        data["flavour"] = flavour
    from headless.fit import fit_to_dataset

    data = fit_to_dataset(data, user)
    return from_dict(TrainConfig, data).validate()


def save_config(config: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")


def config_from_file(path: str | Path) -> TrainConfig:
    return from_dict(TrainConfig, upgrade_saved(read_yaml(Path(path), TrainConfig))).validate()
