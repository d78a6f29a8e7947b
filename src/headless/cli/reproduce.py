"""`headless reproduce STUDY` and `headless report PIECE.json ...`."""

from __future__ import annotations

import argparse
import shlex
import sys

REPRODUCE_EPILOG = """examples:
  headless reproduce decoder                                  # both twins, 240 GPU-seconds each, report
  headless reproduce decoder --size smoke                     # a tiny twin on a data subset: minutes on a CPU
  headless reproduce encoder --flavour vanilla --output results/   # one piece (one GPU job)
  headless reproduce decoder budget_s=3600 seed=1 data_root=/data/shared
  headless reproduce decoder compare=tokens steps=5000        # equal tokens instead of equal time
  headless report results/*.json --output reports/decoder
  headless report --summary docs/results/*/*-report.json   # one Markdown row per committed report
study settings are key=value pairs or --key value options (see --show-config); `pretrain=[k=v,...]`
adds to the twins' TrainConfig overrides."""


def register(subparsers) -> None:
    p = subparsers.add_parser("reproduce", help="train and compare a headless/vanilla pair as the paper does",
                              description="Train the headless and vanilla twins of a study on the same data "
                              "at equal GPU time (or equal tokens), evaluate checkpoints along the way, and "
                              "write one JSON piece per twin plus a report.", epilog=REPRODUCE_EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", choices=["decoder", "encoder", "multilingual"])
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="study settings, e.g. budget_s=600")
    p.add_argument("--flavour", "--flavor", choices=["headless", "vanilla", "both"], default="both",
                   help="which twin(s) to run: one is one piece of the study (default both)")
    p.add_argument("--config", default=None, help="a YAML file of study settings")
    p.add_argument("--work-dir", default="runs/reproduce", help="data, runs and scratch (default runs/reproduce)")
    p.add_argument("--output", default=None, help="folder for the pieces and report (default WORK_DIR/STUDY/results)")
    p.add_argument("--show-config", action="store_true", help="print the resolved study settings and exit")
    from headless.cli.options import add_config_options, add_progress_flag
    from headless.reproduce.config import StudyConfig

    add_progress_flag(p)
    add_config_options(p, cls=StudyConfig, skip={"study", "progress"})
    p.set_defaults(func=_reproduce)

    r = subparsers.add_parser("report", help="merge `headless reproduce` pieces into tables and curves",
                              description="Merge pieces of one study (any order, any machines) into "
                              "STUDY-report.md, STUDY-report.json and PNG curves; or, with --summary, print "
                              "one Markdown row per committed report (the README's results table).")
    r.add_argument("pieces", nargs="+", metavar="PIECE.json", help="pieces, or reports with --summary")
    r.add_argument("--output", help="folder for the report (required unless --summary)")
    r.add_argument("--summary", action="store_true",
                   help="read STUDY-report.json files and print a table of their headline metric")
    r.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                   help="replicates of the paired bootstrap over evaluation examples and seeds (0: none)")
    r.set_defaults(func=_report)


def _reproduce(args) -> int:
    import yaml

    from headless.reproduce import FLAVOURS, load_study, run_study

    config = load_study(args.study, args.config, args.overrides + (["progress=false"] if args.quiet else []))
    if args.show_config:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return 0
    flavours = FLAVOURS if args.flavour == "both" else (args.flavour,)
    result = run_study(config, flavours=flavours, work_dir=args.work_dir, output_dir=args.output,
                       command="headless " + shlex.join(sys.argv[1:]))
    if result["report"]:
        _print_headline(result["report"])
    return 0


def _print_headline(report: dict) -> None:
    from headless.reproduce.report import crossing_text, delta_text, equal_time_text, within_noise

    unit = report.get("time_unit", "GPU s")
    for entry in report["headline"].values():
        if "delta" in entry:
            b = entry.get("paired_bootstrap")
            paired = f"; paired bootstrap 95 % [{b['low']:+.2f}, {b['high']:+.2f}]" if b else ""
            print(f"{entry['label']}: headless {entry['headless']['mean']:.2f} vs vanilla "
                  f"{entry['vanilla']['mean']:.2f} ({delta_text(entry)}{paired}); at equal {unit}: "
                  f"{equal_time_text(entry)}; headless reaches vanilla's final score: "
                  f"{crossing_text(entry['crossing'], within_noise(entry), unit)}")


def _report(args) -> int:
    from headless.errors import HeadlessError
    from headless.reproduce.report import summary_markdown, write_report

    if args.summary:
        print(summary_markdown(args.pieces), end="")
        return 0
    if args.output is None:
        raise HeadlessError("headless report: --output FOLDER is required (or --summary to tabulate reports)")
    if args.bootstrap < 0:
        raise HeadlessError(f"--bootstrap must be >= 0, got {args.bootstrap}")
    report = write_report(args.pieces, args.output, bootstrap=args.bootstrap)
    _print_headline(report)
    print(f"report written: {args.output}/{report['study']}-report.md")
    return 0
