"""A thin wrapper over lm-evaluation-harness (`lm_eval.simple_evaluate` with its `hf` model).

Exported decoders are plain Hugging Face directories, so lm-eval runs on them unchanged:

    lm_eval --model hf --model_args pretrained=DIR,dtype=float32 --tasks lambada_openai,boolq

This wrapper adds local task YAMLs (`include_path`), our device/dtype defaults and md/json tables.
lm-eval is an optional extra (`pip install 'headless[eval]'`, i.e. `lm_eval[hf]`); it is imported only when used.
"""

from __future__ import annotations

import json
import os

from headless.errors import HeadlessError
from headless.eval.scoring import (
    load_tokenizer_dir,
    markdown_table,
    model_dir_config,
    require_lm_head,
    write_outputs,
)
from headless.runtime import resolve_device

INSTALL_HINT = "lm-evaluation-harness is not installed: pip install 'headless[eval]' (or pip install 'lm_eval[hf]')"


def import_lm_eval():
    try:
        import lm_eval
        import lm_eval.models.huggingface  # noqa: F401  (needs the [hf] extra: accelerate)
        from lm_eval.tasks import TaskManager
    except ImportError as err:
        raise HeadlessError(f"{INSTALL_HINT} [{err}]") from None
    return lm_eval, TaskManager


def run_harness(
    model_dir: str | os.PathLike,
    tasks,
    *,
    limit: int | float | None = None,
    batch_size: int = 8,
    device: str | None = "auto",
    dtype: str = "float32",
    num_fewshot: int | None = None,
    include_path: str | os.PathLike | list | None = None,
    log_samples: bool = False,
    output_dir: str | os.PathLike | None = None,
) -> dict:
    """lm-eval's result dict (`results`, `versions`, `n-samples`, and `samples` when `log_samples`);
    writes harness.{json,md} (without the samples) to `output_dir` when given."""
    lm_eval, TaskManager = import_lm_eval()
    if isinstance(tasks, str):
        tasks = [t for t in tasks.split(",") if t]
    if not tasks:
        raise HeadlessError("no tasks given")
    # Clear one-line errors for what lm-eval would otherwise report as a deep traceback.
    config = model_dir_config(model_dir)
    require_lm_head(model_dir, config)  # a headless export: lm-eval would score a random head
    tokenizer = load_tokenizer_dir(model_dir)  # refused when absent or not the model's
    if tokenizer.eos_token_id is None and tokenizer.bos_token_id is None:
        raise HeadlessError(f"the tokenizer of {model_dir} has no EOS/BOS token, which lm-eval needs as a prefix: "
                            "set tokenizer.eos_token and save it again")
    paths = [str(p) for p in include_path] if isinstance(include_path, list) else (
        [str(include_path)] if include_path else None)
    # Indexing lm-eval's thousands of built-in YAMLs takes seconds: skip it when the local ones suffice.
    manager = TaskManager(include_path=paths, include_defaults=False) if paths else None
    if manager is None or not all(t in manager.all_tasks for t in tasks):
        manager = TaskManager(include_path=paths)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise HeadlessError(f"lm-eval knows no task {', '.join(unknown)} (add its YAML folder with --include-path)")
    out = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": str(model_dir), "dtype": dtype},
        tasks=list(tasks),
        num_fewshot=num_fewshot,
        batch_size=batch_size,
        device=str(resolve_device(device, mps=True)),
        limit=limit,
        task_manager=manager,
        log_samples=log_samples,
    )
    if out is None:  # non-zero ranks under multi-process evaluation
        return {}
    if output_dir is not None:
        summary = {k: out[k] for k in ("results", "versions", "n-samples") if k in out}
        summary = json.loads(json.dumps(summary, default=str))
        rows = [[task, metric.split(",")[0], value]
                for task, metrics in out["results"].items()
                for metric, value in metrics.items()
                if "," in metric and "_stderr" not in metric and isinstance(value, (int, float))]
        write_outputs(output_dir, "harness", dict(summary, model=str(model_dir)),
                      markdown_table(["task", "metric", "value"], rows))
    return out
