"""One piece of a study: one twin (flavour) at one pretraining seed, trained and evaluated.

A piece fits one GPU job: it prepares the study's data (once per work directory), pretrains the twin
at equal GPU time (or equal tokens), evaluates the checkpoints kept at `fractions` of the run, and
writes one small JSON (no checkpoint has to travel).  `headless report` merges pieces from any
number of runs or machines.  Re-running a piece in the same work directory reuses a finished
pretraining run, resumes an interrupted one, and reuses the checkpoints it had already evaluated,
so a piece too long for one job finishes over several (scripts/reproduce_gpu.sh, WALL=...).
"""

from __future__ import annotations

import dataclasses
import json
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Optional

from headless.errors import HeadlessError
from headless.files import atomic_write_json, mark, marked_kinds
from headless.provenance import source_fingerprint
from headless.lab.reproduce.config import FLAVOURS, StudyConfig, check_epochs
from headless.lab.reproduce.data import check_inputs, content_fingerprint, fingerprint, prepare_study_data
from headless.lab.reproduce import evaluate

PIECE_FORMAT = "headless-reproduce-piece/1"
# far above any budget's step count: with a time budget, max_steps is only a cap
_STEP_CAP = 100_000_000


def eval_files(config: StudyConfig) -> list[Path]:
    """The evaluation data a study reads (their contents make the evaluation fingerprint)."""
    root = config.root
    if config.study == "decoder":
        files = [root / "lambada" / "lambada_openai_dev.jsonl"]
        files += sorted((root / "zeroshot").glob("*.jsonl")) if config.zeroshot_tasks else []
    elif config.study == "encoder":
        from headless.eval.glue import GLUE_TASKS, glue_task

        files = []
        for task in config.glue_tasks:
            folder = root / "glue" / GLUE_TASKS[glue_task(task)[0]].name
            files += sorted(folder.glob("*.tsv"))
    else:
        files = sorted((root / "xnli").glob("*.tsv"))
    missing = [f for f in files if not f.is_file()]
    if not files or missing:
        raise HeadlessError(f"evaluation data missing under {root}: {missing[0] if missing else config.study}")
    return files


def train_config(config: StudyConfig, flavour: str, dataset: Optional[Path], run_dir: Path):
    """The twin's TrainConfig: the preset, the study's overrides, the budget and curve checkpoints.
    `dataset=None` (not prepared yet, `check_settings`): the same config, as the dataset will fit it."""
    from headless.config import load_config

    own = config.headless_pretrain if flavour == "headless" else config.vanilla_pretrain
    data = [f"data.path={dataset}"] if dataset is not None else []
    if dataset is None and config.seq_len:  # what fitting to a prepared dataset does (headless.fit)
        positions = load_config(config.preset, overrides=list(config.pretrain) + list(own),
                                flavour=flavour).model.max_position_embeddings
        if not any(o.startswith("model.max_position_embeddings=") for o in list(config.pretrain) + list(own)):
            data.append(f"model.max_position_embeddings={max(positions, config.seq_len)}")
    vocab = []  # the study's own large BPE: the preset's 50,304 rows would not hold it (pretrain= may still say)
    if config.study == "decoder" and config.decoder_vocab_size:
        from headless.models import round_up
        multiple = load_config(config.preset, flavour=flavour).model.pad_vocab_multiple
        vocab = [f"model.vocab_size={round_up(config.decoder_vocab_size, multiple)}"]
    overrides = vocab + list(config.pretrain) + list(own) + data + [
        f"run_dir={run_dir}", f"seed={config.seed}", f"device={config.device}",
        f"progress={str(config.progress).lower()}", f"budget.checkpoint_fractions={json.dumps(config.fractions)}",
        "save_every=100000000", "keep_last=1"]
    if config.compare == "time":
        overrides += [f"budget.time_s={config.budget_s}", f"max_steps={_STEP_CAP}"]
    else:
        overrides += [f"max_steps={config.steps}"]
    if config.seq_len:
        overrides.append(f"data.seq_len={config.seq_len}")
    return load_config(config.preset, overrides=overrides, flavour=flavour)


def check_settings(config: StudyConfig, flavours=FLAVOURS) -> dict:
    """Every setting, before any data work: the study config, its inputs and evaluation data, and
    each twin's TrainConfig after all overrides (a bad `pretrain=[...]` item fails here in well
    under a second, not after minutes of tokenising or the other twin's training).  Returns the
    twins' configs."""
    for flavour in flavours:
        if flavour not in FLAVOURS:
            raise HeadlessError(f"unknown flavour {flavour!r}; choose one of {', '.join(FLAVOURS)}")
    config.validate()
    check_inputs(config)
    eval_files(config)
    configs = {}
    for flavour in flavours:
        try:
            configs[flavour] = train_config(config, flavour, None, Path("run"))
        except HeadlessError as err:
            raise HeadlessError(f"the {flavour} twin's pretraining settings: {err}") from None
        rows = configs[flavour].model.vocab_size  # found on the GPU only after tokenising, otherwise
        if config.study == "decoder" and config.decoder_vocab_size and rows and rows < config.decoder_vocab_size:
            raise HeadlessError(f"the {flavour} twin's pretraining settings: model.vocab_size={rows} is smaller "
                                f"than decoder_vocab_size={config.decoder_vocab_size}")
    return configs


def _pretrained_run(cfg, run_dir: Path) -> dict:
    from headless.train.loop import pretrain, resume_run

    summary_path = run_dir / "summary.json"  # written when a run has finished
    if summary_path.is_file():
        print(f"reusing the finished pretraining run {run_dir}", flush=True)
        return json.loads(summary_path.read_text())
    if (run_dir / "config.yaml").is_file():
        print(f"resuming the pretraining run {run_dir}", flush=True)
        return resume_run(run_dir)
    return pretrain(cfg)


def pretraining_curves(records: list[dict], max_points: int = 200) -> dict[str, dict[str, list]]:
    """Train and validation loss and accuracy by step from a run's metrics.jsonl records, each
    thinned evenly to at most `max_points` (first and last kept; a resumed run's repeated steps
    keep their last record). The report plots them: a twin stuck on the MLM plateau shows here
    long before any downstream score."""
    curves = {}
    for split in ("train", "val"):
        by_step = {r["step"]: r for r in records if r.get("split") == split and "loss" in r}
        steps = sorted(by_step)
        if len(steps) > max_points:
            steps = [steps[i] for i in sorted({round(i * (len(steps) - 1) / (max_points - 1))
                                               for i in range(max_points)})]
        if steps:
            curves[split] = {"step": steps, "loss": [by_step[s]["loss"] for s in steps],
                             "accuracy": [by_step[s].get("accuracy") for s in steps]}
    return curves


def run_plateau(records: list[dict], cfg) -> dict | None:
    """Whether and when the run's training accuracy left the MLM plateau (headless.train.plateau),
    read from every logged step, not the thinned curve; None for a CLM run, which has no such plateau."""
    from headless.train.plateau import plateau_exit

    if cfg.objective_kind != "mlm":
        return None
    by_step = {r["step"]: r.get("accuracy") for r in records if r.get("split") == "train"}
    steps = sorted(by_step)
    return plateau_exit(steps, [by_step[s] for s in steps], cfg.optim.warmup_steps, cfg.plateau_patience)


def steady_mfu(records: list[dict], summary: dict) -> float | None:
    """The run's MFU at its steady step: the median over its logged windows. The last window alone
    (`mfu_last`) may be a resumed run's first, compiling again, or a short final one: the HF-head
    vanilla of 2026-12-06-multilingual-hf-head logged 5.0 % there against 11.2 % in every full window."""
    values = [r["mfu"] for r in records if isinstance(r.get("mfu"), (int, float))]
    if not values:
        return summary.get("mfu_last")
    return statistics.median(values)


def time_unit(devices) -> str:
    """What a piece's seconds are: "GPU s" only when every device was a GPU ("cpu"/"mps" is how
    the trainer names the others), "CPU s" when all ran on the CPU, else plain "s"."""
    devices = list(devices)
    if devices and all(d and d not in ("cpu", "mps") for d in devices):
        return "GPU s"
    if devices and all(d == "cpu" for d in devices):
        return "CPU s"
    return "s"


def _budget_text(config: StudyConfig, cfg) -> str:
    if config.compare != "time":
        return f"equal tokens: {cfg.max_steps:,} steps"
    b = cfg.budget
    floor = b.calibration_skip + b.calibration_steps
    return (f"{config.budget_s:g} s of steps; max_steps is planned after step {floor} at the earliest and by the "
            f"end of warm-up (step {cfg.optim.warmup_steps}) at the latest, so a run never takes fewer than "
            f"{floor} steps")


def budget_note(config: StudyConfig, cfg, summary: dict, spent: Optional[float]) -> Optional[str]:
    """Why a time-budget run's steps did not take its budget (None when they did, within the
    calibration tolerance)."""
    if not spent:
        return None
    tolerance = cfg.budget.calibration_tolerance
    if abs(spent / config.budget_s - 1) <= tolerance:
        return None
    steps = int(summary["steps"])
    calibrated = summary.get("calibrated_at")
    if spent > config.budget_s and calibrated is not None and steps <= calibrated:
        return (f"the budget of {config.budget_s:g} s was spent before the time budget could plan: the run took "
                f"the {steps} steps of its calibration (budget.calibration_skip={cfg.budget.calibration_skip} + "
                f"windows of budget.calibration_steps={cfg.budget.calibration_steps}), {spent:.1f} s; lower them, "
                f"or raise budget_s")
    if steps >= cfg.max_steps:
        return f"max_steps={cfg.max_steps} capped the run below its budget of {config.budget_s:g} s"
    return (f"the steps took {spent:.1f} s, not the budget's {config.budget_s:g} s: the step time measured over the "
            "run differed from the plan's (the report compares the twins at the seconds each actually spent)")


def fraction_steps(fractions: list[float], curve: list[int], steps: int, summary: dict) -> list[dict]:
    """Each requested fraction, the checkpoint step that stands for it, and why it is not its own
    when it is not: with a time budget no checkpoint is kept before max_steps is planned, and two
    fractions may round to one step."""
    out = []
    planned_at = summary.get("replanned_at") or summary.get("calibrated_at")
    owner: dict[int, float] = {}
    for f in sorted(fractions, reverse=True):
        want = max(1, round(f * steps))
        step = min([s for s in curve if s >= want], default=steps)
        reason, kept = None, step not in owner
        if step in owner:
            why = (f"no checkpoint is kept before step {planned_at}, where the time budget fixed max_steps"
                   if planned_at and want < planned_at else "both round to that step")
            reason = (f"fraction {f:g} (step {want}) is not evaluated on its own: {why}; checkpoint {step} "
                      f"(fraction {owner[step]:g}) stands for it")
        elif step != want:
            reason = (f"fraction {f:g} is evaluated at step {step} ({step / steps:.2f} of the run), not step {want}: "
                      f"no checkpoint is kept before step {planned_at}, where the time budget fixed max_steps")
        owner.setdefault(step, f)
        out.append({"requested": f, "step": step, "fraction": step / steps, "kept": kept, "reason": reason})
    return sorted(out, key=lambda e: e["requested"])


def _checkpoint(run_dir: Path, step: int) -> tuple[Path, dict]:
    from headless.train.checkpoint import checkpoint_name

    path = run_dir / "checkpoints" / checkpoint_name(step)
    state_file = path / "state.json"
    if not state_file.is_file():
        raise HeadlessError(f"the curve checkpoint {path} is missing; was the run pruned?")
    return path, json.loads(state_file.read_text())


def _evaluate_point(config: StudyConfig, flavour: str, run_dir: Path, work: Path, dataset: Path, step: int,
                    final: bool, seconds_per_step: Optional[float]) -> dict:
    from headless.export import export

    scratch = work / f"eval-step-{step}"
    if scratch.exists():  # an interrupted piece's scratch: removed only if a piece made it
        if "scratch" not in marked_kinds(scratch):
            raise HeadlessError(f"{scratch} exists and was not made by `headless reproduce`; move it away")
        shutil.rmtree(scratch)
    ckpt, state = _checkpoint(run_dir, step)
    counters = state.get("counters", {})
    pretrain_s = step * seconds_per_step if seconds_per_step else float(counters.get("elapsed", 0.0))
    point: dict[str, Any] = {"step": step, "tokens": int(counters.get("tokens", 0)), "pretrain_gpu_s": pretrain_s,
                             "wall_s": float(counters.get("elapsed", 0.0)), "variants": {}}
    scratch.mkdir(parents=True)
    mark(scratch, "scratch")
    try:
        if config.study == "decoder":
            def scored(model_dir: Path, **extra) -> dict:
                scores, predictions = evaluate.decoder_scores(model_dir, config, dataset, final=final)
                return {"gpu_s": pretrain_s, **extra, "scores": scores, "predictions": predictions}

            if flavour == "vanilla":
                point["variants"]["vanilla"] = scored(export(run_dir, scratch / "vanilla", checkpoint=str(ckpt)))
            else:
                raw = export(run_dir, scratch / "raw", checkpoint=str(ckpt), add_head=True)
                point["variants"]["headless_raw"] = scored(raw)
                ft_s = evaluate.hlm_finetune(raw, scratch / "hlm-ft", scratch / "hlm-ft-run", config, dataset)
                point["variants"]["hlm_ft"] = dict(scored(scratch / "hlm-ft", finetune_gpu_s=ft_s),
                                                   gpu_s=pretrain_s + ft_s)
        else:
            model = export(run_dir, scratch / flavour, checkpoint=str(ckpt))
            seeds = list(config.seeds if final else config.curve_seeds)
            scores, predictions = evaluate.ENCODER_EVALS[config.study](model, config, seeds)
            # the predictions travel too: `headless report`'s paired bootstrap resamples the dev examples
            point["variants"][flavour] = {"gpu_s": pretrain_s, "scores": scores, "predictions": predictions}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return point


def study_seq_len(config: StudyConfig) -> int:
    """The sequence length the study packs its data at: its own, else its preset's."""
    from headless.config import load_config

    return config.seq_len or load_config(config.preset).data.seq_len


def run_piece(config: StudyConfig, flavour: str, *, work_dir: str | Path = "runs/reproduce",
              output: str | Path | None = None, command: str | None = None) -> dict | None:
    """Pretrain and evaluate one twin; returns the piece (also written to `output` as JSON).

    Under torchrun every rank pretrains, and rank 0 alone prepares the data and evaluates: the
    other ranks return None once pretraining is done.  GPU seconds count all processes."""
    import torch

    check_settings(config, [flavour])  # every setting and input, before any data work
    work = Path(work_dir) / config.study
    from headless.train import distributed as dist

    seq_len = study_seq_len(config)
    files = eval_files(config)
    # under torchrun every rank pretrains (the trainer's DDP/FSDP2) and rank 0 alone prepares the
    # data first and evaluates afterwards; one process: no group, nothing changes
    env = dist.init_distributed(config.device)
    try:
        data = dist.rank_zero_first(lambda: prepare_study_data(config, work, seq_len))
        epochs = check_epochs(config, (flavour,), data.train_tokens)  # refuses > max_epochs, before pretraining
        if env.is_main:
            print(*epochs, sep="\n", flush=True)
        cfg = train_config(config, flavour, data.dataset, Path("run"))
        # one run directory per distinct pretraining config: a piece re-run reuses or resumes its own run
        key = fingerprint([], config={k: v for k, v in cfg.to_dict().items() if k not in ("progress", "device")})
        run_dir = work / "runs" / f"{flavour}-seed{config.seed}-{key}"
        cfg = dataclasses.replace(cfg, run_dir=str(run_dir))
        if env.is_main:
            print(f"{config.study}: training twin {flavour} ({config.preset}, {_budget_text(config, cfg)}) "
                  f"in {run_dir}", flush=True)
        summary = _pretrained_run(cfg, run_dir)
    finally:
        dist.shutdown()  # the trainer ends the group it used; a reused run never started it
    if not env.is_main:
        return None

    steps = int(summary["steps"])
    world = env.world_size  # GPU seconds count every process's seconds
    # GPU seconds are the steady-state seconds per step measured over the run (saves and validation
    # excluded), else the planned ones that fixed max_steps
    planned = summary.get("steady_s_per_step")
    per_step = summary.get("measured_s_per_step") or planned
    gpu_per_step = per_step * world if per_step else None  # GPU seconds per step, all processes
    tokens_per_step = cfg.batch_size * cfg.grad_accum * seq_len * world
    curve = sorted(summary.get("checkpoint_steps") or [steps])
    unit = time_unit([summary.get("device")])
    spent = steps * gpu_per_step if per_step else None
    print(f"{config.study}/{flavour}: {steps:,} steps, " + (f"{spent:.1f} {unit} of steps" if spent else "")
          + (f" (budget {config.budget_s:g} s)" if config.compare == "time" else ""), flush=True)
    if config.compare == "time":
        note = budget_note(config, cfg, summary, spent)
        if note:
            print(f"{config.study}/{flavour}: {note}", flush=True)
    fractions = fraction_steps(config.fractions, curve, steps, summary)
    for entry in fractions:
        if entry["reason"]:
            print(f"{config.study}/{flavour}: {entry['reason']}", flush=True)

    eval_fingerprint = content_fingerprint(files)
    # each evaluated point is kept in the run, so that a piece stopped mid-evaluation (a job's time
    # limit) and run again evaluates only the points it had not finished
    # (the package's own source is in the key: a changed evaluation never serves a stale score)
    import headless
    from headless.eval.classification import shared_workers
    from headless.train.logging import read_metrics

    code = content_fingerprint(sorted(Path(headless.__file__).parent.rglob("*.py")))
    eval_key = fingerprint([], evaluation=eval_fingerprint, per_step=gpu_per_step, code=code, config={
        k: v for k, v in config.to_dict().items() if k not in ("progress", "device", "eval_workers")})
    points = []
    # one pool of fine-tuning processes for every point (eval_workers > 1): spawned once, not per call
    with shared_workers():
        for k, step in enumerate(curve, 1):
            print(f"{config.study}/{flavour}: evaluating checkpoint {k} of {len(curve)} (step {step:,}, "
                  f"{step / steps:.2f} of the run)", flush=True)
            done = run_dir / "reproduce-points" / f"step-{step}-{eval_key}.json"
            if done.is_file():
                point = json.loads(done.read_text())
                print(f"reusing the evaluation of step {step} ({done})", flush=True)
            else:
                started = time.perf_counter()
                with dist.single_process():  # rank 0 alone: HLM+FT's trainer must not join the finished job
                    point = _evaluate_point(config, flavour, run_dir, work, data.dataset, step, step == steps,
                                            gpu_per_step)
                point["eval_wall_s"] = time.perf_counter() - started  # export + every evaluation: plans job sizes
                point["fraction"] = step / steps
                point["epochs"] = point["tokens"] / data.train_tokens
                done.parent.mkdir(exist_ok=True)
                atomic_write_json(done, point)
            points.append(point)
            print(f"{config.study}/{flavour} step {step}: " + "; ".join(
                f"{v}: " + ", ".join(f"{k} {s['scores'][k][0]:.4g}" for k in list(s["scores"])[:4])
                for v, s in point["variants"].items())
                + (f" (evaluated in {point['eval_wall_s']:.0f} s)" if "eval_wall_s" in point else ""), flush=True)

    records = read_metrics(run_dir)  # the run's log, read once: MFU, curves, plateau
    piece = {
        "format": PIECE_FORMAT, "study": config.study, "flavour": flavour, "seed": config.seed,
        "compare": config.compare, "budget_s": config.budget_s if config.compare == "time" else None,
        "steps_requested": config.steps if config.compare == "tokens" else None,
        "data": {"fingerprint": data.fingerprint, "train_tokens": data.train_tokens, "inputs": data.inputs},
        "eval_fingerprint": eval_fingerprint,
        "pretrain": {
            "preset": config.preset, "steps": steps, "tokens": int(summary.get("tokens", steps * tokens_per_step)),
            "tokens_per_step": tokens_per_step, "steady_s_per_step": planned,
            "measured_s_per_step": summary.get("measured_s_per_step"),
            "calibrated_s_per_step": summary.get("calibrated_s_per_step"), "calibrated_at": summary.get("calibrated_at"),
            "replanned_at": summary.get("replanned_at"),
            "planned_gpu_s": steps * planned * world if planned else None, "world_size": world,
            "tokens_per_s": tokens_per_step / per_step if per_step else summary.get("tokens_per_s_last"),
            "gpu_s": steps * gpu_per_step if per_step else (summary.get("wall_time_s") or 0.0) * world,
            "wall_time_s": summary.get("wall_time_s"), "epochs": summary.get("tokens", 0) / data.train_tokens,
            "parameters": summary.get("parameters"), "non_embedding_parameters": summary.get("non_embedding_parameters"),
            "peak_mem_gib": summary.get("peak_mem_gib"), "mfu": steady_mfu(records, summary),
            "final_val_loss": summary.get("final_val_loss"), "device": summary.get("device"),
            "curves": pretraining_curves(records), "plateau": run_plateau(records, cfg),
            "objective_kind": cfg.objective_kind},
        "points": points, "fractions": fractions,
        "study_config": config.to_dict(), "train_config": cfg.to_dict(),
        "environment": {"host": platform.node(), "python": sys.version.split()[0], "torch": torch.__version__,
                        "device": summary.get("device"), "device_uuid": summary.get("device_uuid"),
                        "source": source_fingerprint(),  # the library code of this piece (scripts/source_commit.py)
                        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        "command": command,
    }
    if output is not None:
        atomic_write_json(Path(output), piece)
    return piece

