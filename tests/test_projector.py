"""objective.projector (issue #25): CWT scores a transform of the outputs; the paper's raw outputs stay the default."""

from __future__ import annotations

import pytest
import torch

from headless.config import load_config
from headless.errors import HeadlessError

SMALL = ["model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64",
         "batch_size=8", "optim.warmup_steps=2", "log_every=1", "eval_every=1000", "save_every=3",
         "progress=false", "tensorboard=false", "max_steps=6"]


def test_the_projector_is_for_contrastive_losses_only():
    assert load_config("tiny").objective.projector == "none"  # the paper's objective by default
    with pytest.raises(HeadlessError, match="objective.projector=transform transforms the outputs CWT scores"):
        load_config("tiny", flavour="vanilla", overrides=["objective.projector=transform"])
    with pytest.raises(HeadlessError):
        load_config("tiny", overrides=["objective.projector=mlp"])


def test_cwt_scores_the_transformed_outputs_and_the_export_leaves_them_out(fixture_data, fixture_tokenizers, tmp_path):
    import transformers as tf

    from headless.data.prepare import prepare_dataset
    from headless.data.tokenizers import load_tokenizer
    from headless.export import export
    from headless.losses import cwt_loss
    from headless.train.build import build_model, load_data
    from headless.train.distributed import init_distributed
    from headless.train.loop import pretrain

    data = tmp_path / "data"
    prepare_dataset([str(fixture_data["corpus"])], data, load_tokenizer(str(fixture_tokenizers["wordpiece"])),
                    seq_len=32, validation_fraction=0.05, progress=False)
    config = load_config("tiny", overrides=SMALL + [f"data.path={data}", f"run_dir={tmp_path / 'run'}",
                                                    "objective.projector=transform"])
    config, loaded = load_data(config, init_distributed("cpu"))
    model = build_model(config, loaded)
    assert isinstance(model.projector[2], torch.nn.LayerNorm)
    torch.manual_seed(0)
    hidden = torch.randn(2, 32, 32)
    labels = torch.full((2, 32), -100)
    labels[:, ::5] = torch.randint(5, model.input_embedding_weight().shape[0], labels[:, ::5].shape)
    out = model.loss(hidden, labels)
    reference = cwt_loss(model.projector(hidden), labels, model.input_embedding_weight(), reduction="sum",
                         implementation="reference")
    assert torch.allclose(out.loss, reference.loss, rtol=1e-5)
    assert not torch.allclose(out.loss, cwt_loss(hidden, labels, model.input_embedding_weight(), reduction="sum",
                                                 implementation="reference").loss)

    summary = pretrain(config)
    assert summary["steps"] == 6 and summary["final_train_loss"] == summary["final_train_loss"]  # finite
    exported = export(tmp_path / "run", tmp_path / "export")
    loaded_model = tf.AutoModel.from_pretrained(str(exported), output_loading_info=True)
    info = loaded_model[1]
    assert not info["unexpected_keys"] and not [k for k in info["missing_keys"] if "pooler" not in k]
    assert not any("projector" in k for k in loaded_model[0].state_dict())
