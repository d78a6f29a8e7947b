"""The loss table (headless.loss_kinds) is the dispatch: validation, the model's loss, what can be
captured and the bench read it; adding a loss is one entry and one function."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from headless.config import load_config
from headless.errors import HeadlessError
from headless.loss_kinds import LOSSES, Implementation, LossKind

IMPLEMENTATIONS = sorted({i.name for kind in LOSSES.values() for i in kind.implementations} | {"softmax"})
SMALL = ["model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64",
         "model.max_position_embeddings=64", "data.seq_len=32"]


def _flavour(loss: str) -> str:
    return "vanilla" if LOSSES[loss].needs_head else "headless"


@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_every_loss_and_implementation_is_valid_or_refused_in_one_line(loss, impl):
    overrides = [f"objective.loss={loss}", f"objective.loss_implementation={impl}"]
    valid = LOSSES[loss].implementation_names
    if impl in valid:
        config = load_config("tiny", flavour=_flavour(loss), overrides=overrides)
        assert config.loss_kind == loss and config.objective.loss_implementation == impl
        return
    with pytest.raises(HeadlessError) as err:
        load_config("tiny", flavour=_flavour(loss), overrides=overrides)
    message = str(err.value)
    assert "\n" not in message
    assert message == (f"invalid config: objective.loss_implementation={impl!r} is not an implementation of the "
                       f"{loss} loss; choose one of {', '.join(valid)}")


def test_the_magic_implementations_belong_to_one_loss_each():
    """"hf" (HF's own head at every position) only for cross-entropy, "none" (the backbone alone)
    only for CWT, the bench's floor: anywhere else they used to fail deep inside the first step."""
    assert [k for k, kind in LOSSES.items() if "hf" in kind.implementation_names] == ["ce"]
    assert [k for k, kind in LOSSES.items() if "none" in kind.implementation_names] == ["cwt"]
    with pytest.raises(HeadlessError, match="choose one of auto, reference"):
        load_config("tiny", flavour="headless", overrides=["objective.loss_implementation=hf"])


@pytest.mark.parametrize("loss", list(LOSSES))
def test_capturable_implementations_are_the_sync_free_ones(loss):
    """`sync_free` (one graph with the backbone) is the table's `capturable`, given static shapes."""
    from headless.models import build_model

    for impl in LOSSES[loss].implementations:
        if impl.forward is not None:
            continue
        config = load_config("tiny", flavour=_flavour(loss), overrides=SMALL + [
            f"objective.loss={loss}", f"objective.loss_implementation={impl.name}", "objective.masking=static"])
        model = build_model(config.model, config.objective, loss, 100, 0, 2)
        assert model.sync_free == impl.capturable, impl.name


# -- "Add a loss" (docs/contributing.md): one function and one entry ----------------------------------


def cosine_of(model, outputs, targets):
    """A toy loss: 1 - cos(output, input embedding of its target), summed over the labelled rows."""
    from headless.losses import LossOutput
    from headless.objectives import select_loss_positions

    if not model.static_shapes:
        outputs, targets = select_loss_positions(outputs, targets)
    keep = targets != -100
    embedding = model.input_embedding_weight()[targets.clamp_min(0)]
    losses = 1 - torch.nn.functional.cosine_similarity(outputs.float(), embedding.float(), dim=-1)
    return LossOutput(loss=(losses * keep).sum(), num_targets=keep.sum(), accuracy=None, num_unique=None)


def test_a_loss_is_one_entry_and_one_function(monkeypatch):
    from headless.models import build_model

    entry = LossKind("cosine", needs_head=False, scores="in-batch", metrics=(), function="test_loss_kinds:cosine_of",
                     implementations=(Implementation("auto", "plain PyTorch", capturable=True),),
                     description="1 - cosine similarity to the target's input embedding")
    monkeypatch.setitem(LOSSES, "cosine", entry)
    base = load_config("tiny", overrides=SMALL)
    config = dataclasses.replace(base, objective=dataclasses.replace(base.objective, loss="cosine"))
    assert config.validate().loss is entry  # as the config's Literal would list it
    with pytest.raises(HeadlessError, match="not an implementation of the cosine loss; choose one of auto$"):
        dataclasses.replace(config, objective=dataclasses.replace(config.objective,
                                                                  loss_implementation="triton")).validate()
    torch.manual_seed(0)
    model = build_model(config.model, config.objective, "cosine", 100, 0, 2)
    assert not model.has_head
    ids = torch.randint(4, 100, (2, 16))
    labels = torch.full_like(ids, -100)
    labels[:, 2:5] = ids[:, 2:5]
    out = model(ids, labels)
    out.loss.backward()
    assert int(out.num_targets) == 6 and 0 < out.loss.item() < 12
    assert model.input_embedding_weight().grad is not None
    from headless.lab.bench import _cases

    assert _cases()["cosine"] == ("headless", "cosine", "auto")  # and `headless bench` times it
