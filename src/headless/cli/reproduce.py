"""`headless reproduce STUDY`, `headless report PIECE.json ...` and `headless stage split|pull|check`."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

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


STAGE_EPILOG = """examples:
  headless stage split ../shared/data/enwiki ../shared/data/books --base ../shared/data --parts-dir .data/stage
  headless stage pull .data/stage /tmp/headless-stage          # on the GPU machine, once per carried part
  headless reproduce decoder data_root=$(headless stage check /tmp/headless-stage .data/stage/manifest.json)"""


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
    p.add_argument("--prepare-only", action="store_true",
                   help="train the study's tokenizer and tokenize its data into WORK_DIR, then exit (on a CPU "
                   "machine before the GPU jobs, which reuse them)")
    from headless.cli.options import add_config_options, add_progress_flag
    from headless.lab.reproduce.config import StudyConfig

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
    r.add_argument("--plot", metavar="PNG", help="with --summary: also draw the table's differences and their "
                   "intervals, one panel per metric (the README's results figure)")
    r.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                   help="replicates of the paired bootstrap over evaluation examples and seeds (0: none)")
    r.set_defaults(func=_report)

    st = subparsers.add_parser("stage", help="carry a corpus larger than one GPU job to the GPU machine, in parts",
                               description="Split a corpus into content-addressed parts, take each carried "
                               "part into a folder on the GPU machine, check that all arrived "
                               "(docs/guide/reproduction.md, 'A corpus larger than one transfer').",
                               epilog=STAGE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = st.add_subparsers(dest="stage_command", metavar="COMMAND", required=True)
    sp = sub.add_parser("split", help="cut CORPUS files/folders into parts + manifest.json")
    sp.add_argument("corpus", nargs="+", metavar="CORPUS", help="files or folders (a folder keeps its name)")
    sp.add_argument("--parts-dir", required=True, help="folder for the parts and manifest (e.g. .data/stage)")
    sp.add_argument("--max-mib", type=float, default=36.0,
                    help="largest part in MiB (default 36: a device call carries 64 MiB, the repository ~24 of them)")
    sp.add_argument("--base", default=None, help="name files relative to this folder (e.g. ../shared/data)")
    sp.set_defaults(func=_stage_split)
    pl = sub.add_parser("pull", help="on the GPU machine: verify the carried parts and take them into DEST")
    pl.add_argument("part_dir", metavar="PART_DIR", help="the carried parts' folder (with manifest.json)")
    pl.add_argument("dest", metavar="DEST", help="a folder outside the repository, e.g. /tmp/headless-stage")
    pl.set_defaults(func=_stage_pull)
    ck = sub.add_parser("check", help="print DEST's data folder when every part arrived intact")
    ck.add_argument("dest", metavar="DEST")
    ck.add_argument("manifest", metavar="MANIFEST", help="the split's manifest.json (or its folder)")
    ck.set_defaults(func=_stage_check)


def _reproduce(args) -> int:
    import yaml

    from headless.lab.reproduce import FLAVOURS, load_study, run_study

    config = load_study(args.study, args.config, args.overrides + (["progress=false"] if args.quiet else []))
    if args.show_config:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return 0
    if args.prepare_only:
        from headless.lab.reproduce import prepare_study

        prepared = prepare_study(config, work_dir=args.work_dir)
        print(*prepared["epochs"], sep="\n")
        print(f"prepared: {prepared['dataset']} ({prepared['train_tokens']:,} training tokens); "
              f"tokenizers in {Path(args.work_dir) / config.study / 'tokenizers'}")
        return 0
    flavours = FLAVOURS if args.flavour == "both" else (args.flavour,)
    result = run_study(config, flavours=flavours, work_dir=args.work_dir, output_dir=args.output,
                       command="headless " + shlex.join(sys.argv[1:]))
    if result["report"]:
        _print_headline(result["report"])
    return 0


def _print_headline(report: dict) -> None:
    from headless.lab.reproduce.report import crossing_text, delta_text, equal_time_text, within_noise

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
    from headless.lab.reproduce.report import summary_markdown, summary_plot, write_report

    if args.plot and not args.summary:
        raise HeadlessError("headless report: --plot goes with --summary (a report's own plots are in its --output)")
    if args.summary:
        print(summary_markdown(args.pieces), end="")
        if args.plot:
            print(f"plot written: {summary_plot(args.pieces, args.plot)}", file=sys.stderr)
        return 0
    if args.output is None:
        raise HeadlessError("headless report: --output FOLDER is required (or --summary to tabulate reports)")
    if args.bootstrap < 0:
        raise HeadlessError(f"--bootstrap must be >= 0, got {args.bootstrap}")
    report = write_report(args.pieces, args.output, bootstrap=args.bootstrap)
    _print_headline(report)
    print(f"report written: {args.output}/{report['study']}-report.md")
    return 0


def _stage_split(args) -> int:
    from headless.lab.reproduce.stage import carry_warning, split_corpus

    manifest = split_corpus(args.corpus, args.parts_dir, args.max_mib, base=args.base)
    print(f"{len(manifest['files'])} files, {manifest['bytes'] / 2**20:.1f} MiB in {len(manifest['parts'])} "
          f"part(s) under {args.parts_dir} (sha256 {manifest['sha256'][:12]}):")
    for part in manifest["parts"]:
        print(f"  {part['name']}  {part['bytes'] / 2**20:.1f} MiB")
    warning = carry_warning(manifest, args.parts_dir)
    if warning:
        print(warning, file=sys.stderr)
    return 0


def _stage_pull(args) -> int:
    from headless.lab.reproduce.stage import pull

    pull(args.part_dir, args.dest)
    return 0


def _stage_check(args) -> int:
    from headless.lab.reproduce.stage import check

    print(check(args.dest, args.manifest))
    return 0
