"""`headless reproduce`: the paper's headless-vs-vanilla comparisons as commands.

`run_study` trains and evaluates both twins of a study (or one, as one piece of a larger run);
`write_report` merges pieces into tables and curves.  See docs/guide/reproduction.md.
"""

from __future__ import annotations

from pathlib import Path

from headless.lab.reproduce.config import FLAVOURS, STUDIES, StudyConfig, check_epochs, load_study
from headless.lab.reproduce.piece import check_settings, run_piece, study_seq_len
from headless.lab.reproduce.report import build_report, write_report


def run_study(config: StudyConfig, *, flavours=FLAVOURS, work_dir: str | Path = "runs/reproduce",
              output_dir: str | Path | None = None, command: str | None = None) -> dict:
    """Run the study's pieces for `flavours` into OUTPUT_DIR (default WORK_DIR/STUDY/results) and,
    when both twins are there, the report; returns {"pieces": [paths], "report": report or None}."""
    import os

    from headless.errors import HeadlessError

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and len(flavours) > 1:
        raise HeadlessError("under torchrun a launch runs one piece: pass --flavour headless or --flavour vanilla "
                            "(rank 0 evaluates while the other ranks have finished), then `headless report`")
    # before any data is prepared: the documented token count (the piece checks the prepared one)
    lines = check_epochs(config, flavours)
    check_settings(config, flavours)  # both twins' settings before the first one's data work
    if int(os.environ.get("RANK", "0")) == 0:
        print(*lines, sep="\n", flush=True)
    out = Path(output_dir) if output_dir else Path(work_dir) / config.study / "results"
    main = int(os.environ.get("RANK", "0")) == 0
    if main:
        print(f"headless reproduce {config.study} (size {config.size}): twin(s) {', '.join(flavours)}, data from "
              f"{config.root}, work in {Path(work_dir) / config.study}, results in {out}", flush=True)
    paths = []
    for flavour in flavours:
        path = out / f"{config.study}-{flavour}-seed{config.seed}.json"
        if run_piece(config, flavour, work_dir=work_dir, output=path, command=command) is not None:
            print(f"piece written: {path}", flush=True)
            paths.append(path)  # rank 0 (or the one process): the other ranks only pretrain
    report = None
    if len(set(flavours)) == 2 and paths:
        print(f"writing the report to {out}", flush=True)
        report = write_report(paths, out)
        print(f"report written: {out / (config.study + '-report.md')}", flush=True)
    elif paths:
        print("one twin: no report; `headless report` merges this piece with the other twin's", flush=True)
    return {"pieces": paths, "report": report}


def prepare_study(config: StudyConfig, *, work_dir: str | Path = "runs/reproduce") -> dict:
    """The study's tokenizer (trained when the study trains one) and packed data in WORK_DIR/STUDY,
    without training: for a CPU machine before the GPU jobs.  Both folders are named by the content
    of their inputs, so a piece on another machine with the same files reuses them; carrying
    WORK_DIR/STUDY/tokenizers alone saves the GPU job the tokenizer's training (docs/guide/reproduction.md).
    Returns {"dataset", "train_tokens", "tokenizer", "epochs"} (the twins' epoch estimates, which
    refuse more than max_epochs as a piece would)."""
    from headless.lab.reproduce.data import prepare_study_data

    check_settings(config, FLAVOURS)
    data = prepare_study_data(config, Path(work_dir) / config.study, study_seq_len(config))
    tokenizer = Path(data.dataset) / "tokenizer"
    return {"dataset": str(data.dataset), "train_tokens": data.train_tokens, "tokenizer": str(tokenizer),
            "epochs": check_epochs(config, FLAVOURS, data.train_tokens)}


__all__ = ["FLAVOURS", "STUDIES", "StudyConfig", "check_epochs", "load_study", "prepare_study", "run_piece",
           "run_study", "build_report", "write_report"]
