"""Building a run apart from its loop: data, model, optimizer, schedule, loader, in that order.

`build_run` returns a `Run`: every part the loop, the evaluator and the checkpointer work on.
Nothing here trains; nothing in the loop builds.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Optional

import torch

from headless.config import TrainConfig
from headless.errors import HeadlessError
from headless.files import json_digest
from headless.runtime import compile_plan, compute_dtype
from headless.train import distributed as dist
from headless.train.optim import Schedule, build_optimizer
from headless.train.step import DataInfo


def cache_dir(config: TrainConfig) -> Path:
    base = config.data.cache_dir or os.environ.get("HEADLESS_CACHE") or Path.home() / ".cache" / "headless"
    return Path(base)


def _key(*parts: Any) -> str:
    return json_digest(list(parts), 16)


def _input_key(inputs: list[str]) -> list[str]:
    return [str(Path(i).resolve()) if Path(i).exists() else i for i in inputs]


def resolve_dataset(config: TrainConfig, env=None) -> Path:
    """The prepared dataset of a run: `data.path`, or raw inputs (default: the embedded corpus)
    tokenized and packed once into the cache, with a BPE tokenizer trained on them if none is given."""
    from headless.data.default_corpus import DEFAULT_CORPUS
    from headless.data.prepare import prepare_dataset
    from headless.data.tokenizers import load_tokenizer, tokenizer_hash, train_tokenizer

    data = config.data
    if data.path:
        path = Path(data.path)
        if not (path / "manifest.json").is_file():
            raise HeadlessError(f"{path} is not a prepared dataset (no manifest.json); run `headless prepare` first")
        return path
    inputs = list(data.inputs) or [DEFAULT_CORPUS]
    root = cache_dir(config)
    is_main = env is None or env.is_main
    if data.tokenizer:
        tokenizer = load_tokenizer(data.tokenizer)
    else:
        kind = "wordpiece" if config.model.is_encoder else "bpe"
        tok_dir = root / "tokenizers" / f"{kind}-{data.tokenizer_vocab_size}-{_key(_input_key(inputs), data.text_field)}"
        if is_main and not (tok_dir / "tokenizer.json").is_file():
            train_tokenizer(inputs, kind=kind, vocab_size=data.tokenizer_vocab_size, output_dir=tok_dir)
        dist.barrier()
        tokenizer = load_tokenizer(str(tok_dir))
    out = root / "datasets" / _key(_input_key(inputs), tokenizer_hash(tokenizer), data.seq_len,
                                   data.validation_fraction, data.text_field)
    if is_main:
        prepare_dataset(inputs, out, tokenizer, seq_len=data.seq_len, validation_fraction=data.validation_fraction,
                        text_field=data.text_field, progress=config.progress)
    dist.barrier()
    return out


def data_info(dataset) -> DataInfo:
    return DataInfo(vocab_size=dataset.vocab_size, eos_token_id=dataset.eos_token_id,
                    mask_token_id=dataset.mask_token_id, special_token_ids=list(dataset.special_token_ids))


@dataclasses.dataclass
class Data:
    path: Path
    train: Any                 # PackedDataset
    validation: Optional[Any]  # PackedDataset or None
    info: DataInfo
    fingerprint: str


def load_data(config: TrainConfig, env) -> tuple[TrainConfig, Data]:
    from headless.data.loader import PackedDataset
    from headless.data.prepare import dataset_fingerprint

    path = resolve_dataset(config, env)
    train = PackedDataset(path, "train")
    if train.seq_len != config.data.seq_len and config.data.path:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, seq_len=train.seq_len))
    try:
        validation = PackedDataset(path, "validation")
        if len(validation) == 0:
            validation = None
    except HeadlessError:
        validation = None
    return config, Data(path, train, validation, data_info(train), dataset_fingerprint(path))


def check_data_fits(data: Data, model) -> None:
    """The tokenizer, every token id of the shards and the sequence length against the model, once."""
    rows = model.input_embedding_weight().shape[0]
    train = data.train
    if train.vocab_size > rows:
        raise HeadlessError(f"the dataset's tokenizer has {train.vocab_size} tokens but the model's embedding "
                            f"has {rows} rows; use a matching tokenizer or a larger model.vocab_size")
    max_pos = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    if max_pos is not None and train.seq_len > max_pos:
        raise HeadlessError(f"sequence length {train.seq_len} of the dataset exceeds the model's "
                            f"{max_pos} positions; set model.max_position_embeddings={train.seq_len} "
                            f"(or prepare the data with --seq-len {max_pos})")
    for split in (s for s in (data.train, data.validation) if s is not None):
        top = split.max_token_id()
        if top >= min(rows, split.vocab_size):
            raise HeadlessError(f"the {split.split} shards of {data.path} hold token id {top}, outside the "
                                f"tokenizer's {split.vocab_size} ids / the model's {rows} rows; prepare the "
                                "dataset again with its tokenizer")


@dataclasses.dataclass
class Run:
    """The stateful parts of a run and what the loop needs to drive them."""

    config: TrainConfig
    env: Any
    data: Data
    model: torch.nn.Module         # the plain LanguageModel
    wrapped: torch.nn.Module       # DDP / FSDP2 / the model itself
    optimizer: torch.optim.Optimizer
    scheduler: Any                 # LambdaLR over `schedule`
    schedule: Schedule
    loader: Any                    # BatchIterator
    params: dict
    autocast_dtype: Optional[torch.dtype]
    graphs: bool                   # CUDA graphs captured: mark each step
    trainable: list
    tokens_per_step: int

    @property
    def device(self) -> torch.device:
        return self.env.device


def build_model(config: TrainConfig, data: Data):
    from headless.models import build_model as build

    model = build(config.model, config.objective, config.loss_kind, data.info.vocab_size,
                  pad_token_id=getattr(data.train.tokenizer, "pad_token_id", None),
                  eos_token_id=data.info.eos_token_id)
    check_data_fits(data, model)
    if config.trainable == "head":
        if not model.has_head:
            raise HeadlessError("trainable=head needs a model with a vocabulary head (flavour vanilla)")
        for name, param in model.named_parameters():
            param.requires_grad = not name.startswith("hf." + model.hf.base_model_prefix + ".")
    return model


# Above this share of a step's estimated FLOPs, the vocabulary head is said to dominate it.
HEAD_SHARE_WARNING = 0.5


def head_share(config: TrainConfig, model, seq_len: int) -> tuple[float, float, float]:
    """(share, head FLOPs, backbone FLOPs) per input token of a vocabulary head's training step:
    6·D·V per scored position (every CLM position, `mask_prob` of the MLM ones) against the
    backbone's 6·N + attention (`train.logging.flops_per_token`)."""
    from headless.models import count_parameters, model_shape
    from headless.train.logging import flops_per_token

    layers, hidden = model_shape(model)
    vocab = model.hf.get_output_embeddings().weight.shape[0]
    positions = 1.0 if model.causal else config.objective.mask_prob
    head = 6 * hidden * vocab * positions
    backbone = flops_per_token(count_parameters(model)["non_embedding"], layers, hidden, seq_len, 0.0, 0)
    return head / (head + backbone), head, backbone


def warn_head_dominates(config: TrainConfig, model, data: Data, device: torch.device) -> None:
    """Say once, off CUDA, when a vanilla step is mostly its vocabulary head (a tiny model with a
    50k tokenizer: several times the headless twin's step), so the slow steps are not a mystery."""
    if device.type == "cuda" or config.loss.scores != "vocabulary" or not model.has_head:
        return
    share, head, backbone = head_share(config, model, data.train.seq_len)
    if share > HEAD_SHARE_WARNING:
        vocab, hidden = model.hf.get_output_embeddings().weight.shape
        print(f"warning: the vocabulary head ({vocab:,} x {hidden}) is {share:.0%} of this "
              f"step's estimated FLOPs ({head / 1e6:,.1f} M per token against {backbone / 1e6:,.1f} M for the "
              f"backbone): on the {device.type} it sets the step time; a smaller tokenizer or the headless "
              "flavour steps faster", flush=True)


def build_run(config: TrainConfig, env, data: Data, model, schedule: Schedule) -> Run:
    """Wrap, optimize, schedule, load: `model` holds its (restored) weights already, since
    DDP/FSDP2 broadcast rank 0's weights when wrapping.  `schedule` has an explicit length; a plan
    (the time budget's) changes it through `run.schedule`, saved with the optimizer."""
    from headless.data.loader import BatchIterator
    from headless.models import count_parameters

    device = env.device
    params = count_parameters(model)
    model.to(device)
    strategy = config.distributed
    if strategy == "auto":
        strategy = "ddp" if env.world_size > 1 else "none"
    wrapped = dist.wrap_model(model, strategy, env, mixed_precision=config.precision)
    model.loss_group = dist.loss_group(config.objective.negatives, env)
    optimizer = build_optimizer(model, config, device)  # after wrapping: FSDP2 swaps in sharded params
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    cuda = device.type == "cuda"
    loader = BatchIterator(data.train, config.batch_size, seed=config.seed, rank=env.rank,
                           world_size=env.world_size, pin_memory=cuda, prefetch=2 if cuda else 0)
    graphs = False
    mode, note = compile_plan(config.compile, config.compile_mode, device, env.world_size)
    if note and env.is_main:
        print(note, flush=True)
    if config.objective.unique_bound == "auto":  # sized before compile: it decides the captured path
        most = data.train.most_unique_ids(config.batch_size, seed=config.seed)
        room = model.size_unique_bound(most)
        config = dataclasses.replace(config, objective=dataclasses.replace(config.objective, unique_bound=room))
        if env.is_main:
            print(f"objective.unique_bound: auto -> {room:,} (at most {most:,} distinct token ids in 32 random "
                  f"micro-batches of {config.batch_size} sequences)", flush=True)
    if mode is not None:
        graphs = model.compile_model(mode, config.batch_size, data.train.seq_len)
        if env.is_main:
            region = f"backbone and loss as one graph (loss {model.objective.loss_implementation})" \
                if model.compiled_region == "model" else "the backbone (the loss runs eagerly)"
            print(f"compile: {region}, mode={mode}", flush=True)
    if env.is_main:
        warn_head_dominates(config, model, data, device)
    amp = None if strategy == "fsdp2" else compute_dtype(config.precision, device)  # FSDP2 casts itself
    trainable = [p for p in model.parameters() if p.requires_grad]  # fixed once wrapped (FSDP2 shards)
    tokens_per_step = config.batch_size * config.grad_accum * env.world_size * data.train.seq_len
    return Run(config, env, data, model, wrapped, optimizer, scheduler, schedule, loader, params, amp, graphs,
               trainable, tokens_per_step)
