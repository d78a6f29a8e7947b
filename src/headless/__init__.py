"""headless: pretrain language models without a vocabulary head, with Contrastive Weight Tying.

Godey, de la Clergerie & Sagot, "Headless Language Models: Learning without Predicting with
Contrastive Weight Tying", ICLR 2024 (arXiv 2309.08351).

The public API is imported lazily so that `import headless` stays cheap (no torch import until a
function that needs it is touched).
"""

from __future__ import annotations

from headless._lazy import lazy_exports

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "HeadlessError": "headless.errors",
    # losses
    "cwt_loss": "headless.losses",
    "vanilla_ce_loss": "headless.losses",
    "LossOutput": "headless.losses",
    # objectives
    "mlm_mask": "headless.objectives",
    "clm_labels": "headless.objectives",
    # configs and the jobs the CLI runs
    "TrainConfig": "headless.config",
    "load_config": "headless.config",
    "prepare_dataset": "headless.data.prepare",
    "load_tokenizer": "headless.data.tokenizers",
    "train_tokenizer": "headless.data.tokenizers",
    "pretrain": "headless.train.loop",
    "resume_run": "headless.train.loop",
    "export": "headless.export",
    "finetune_head": "headless.finetune",
    "fill_mask": "headless.embedding_head",
    # the paper's comparisons
    "load_study": "headless.lab.reproduce",
    "run_study": "headless.lab.reproduce",
    "run_piece": "headless.lab.reproduce",
    "write_report": "headless.lab.reproduce",
}

__all__ = sorted(_EXPORTS) + ["__version__"]

__getattr__, __dir__ = lazy_exports("headless", _EXPORTS, globals())
