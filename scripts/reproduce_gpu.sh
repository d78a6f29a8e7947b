#!/usr/bin/env bash
# One GPU job of docs/guide/reproduction.md: one study's twin(s), their evaluations, the pieces in
# $OUT/STUDY-FLAVOUR.tgz (STUDY/: pieces, report, plots, log, the runs' summaries and metrics).
#
#   bash scripts/reproduce_gpu.sh STUDY FLAVOUR [KEY=VALUE ...]     FLAVOUR: headless | vanilla | both
#
# Data: .data/STUDY laid out like ../shared/data (the files the study reads; docs/guide/reproduction.md
# says which), carried to the GPU machine.  Files that compress well (GLUE's TSVs) may travel packed
# instead, as .data/STUDY-extra.tar.xz (paths relative to .data/STUDY): it is unpacked there first,
# which keeps the carried tree under the 64 MiB limit.  DATA_ROOT=DIR reads the data from DIR instead:
# a corpus staged over several calls (`headless stage check`, docs/guide/reproduction.md).  SMOKE=1 first runs the same study at a 10-second budget
# with small evaluation limits, so that a broken path fails in one minute, not ten.
# Two runs in one device call (scripts/campaign_call.sh's list of seeds) share the archive: the
# second unpacks the first's files before adding its own.  HEADLESS_CMD replaces `python3 -m
# headless` (the tests' stub).
#
# WALL=SECONDS stops the piece cleanly before a job's time limit: SIGTERM makes the trainer save a
# checkpoint, and every checkpoint already evaluated is kept in its run.  Running the same command
# again in the same tree (on the GPU box: the next call, while the machine is still warm) resumes
# the pretraining and evaluates only what is left, so one piece can span several jobs.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$([ -d /tmp/site ] && echo /tmp/site:)src PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=true HF_HUB_OFFLINE=1
STUDY=${1:?study}; FLAVOUR=${2:?flavour}; shift 2
WORK=${WORK_DIR:-runs/reproduce}  # the studies' work directory (tokenizers, data, runs)
NAME=$STUDY${RESULTS_TAG:+-$RESULTS_TAG}  # RESULTS_TAG=hf-head: another vanilla's pieces, kept apart
RES=${OUT:-results}/$NAME
if [ -n "${OUT:-}" ] && [ -f "$OUT/$NAME-$FLAVOUR.tgz" ]; then  # an earlier run of this call (another seed): keep its files
  tar xzf "$OUT/$NAME-$FLAVOUR.tgz" -C "$OUT"
fi
mkdir -p "$RES"
[ -f ".data/$STUDY-extra.tar.xz" ] && tar xJf ".data/$STUDY-extra.tar.xz" -C ".data/$STUDY"
H="${HEADLESS_CMD:-python3 -m headless} reproduce $STUDY data_root=${DATA_ROOT:-.data/$STUDY} progress=false"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
if [ "${SMOKE:-0}" = 1 ]; then
  $H budget_s=10 'fractions=[0.5,1.0]' lambada_limit=64 zeroshot_limit=16 heldout_sequences=8 finetune_tokens=1e5 \
     'seeds=[0]' 'glue_lrs=[1e-4]' glue_max_train_examples=256 xnli_epochs=1 ${SMOKE_ARGS:-} \
     --flavour "$FLAVOUR" --work-dir "$WORK" --output runs/smoke/$STUDY 2>&1 | tail -25
  echo "smoke passed"
fi
STOP=()
[ -n "${WALL:-}" ] && STOP=(timeout -s TERM -k 30 "$WALL")
set +e
"${STOP[@]}" $H "$@" --flavour "$FLAVOUR" --work-dir "$WORK" --output "$RES" 2>&1 | tee -a "$RES/$STUDY-$FLAVOUR.log"
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" = 124 ] || [ "$rc" = 143 ]; then
  echo "stopped at WALL=${WALL}s; $WORK keeps the run and the finished evaluations: run the same command again to continue"
fi
# the pretraining runs of this call's twin(s) and seed(s) (their config.yaml says which; the HF-head
# vanilla by its loss_implementation): their own summaries and metrics, not every run in $WORK
python3 - "$WORK/$STUDY/runs" "$RES" "$FLAVOUR" "${RESULTS_TAG:-}" "$@" <<'PY' || echo "the runs' metrics were not copied (above); the pieces are"
import shutil, sys
from pathlib import Path

import yaml

runs, res, flavour, tag, args = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5:]
seeds = {a.split("=", 1)[1] for a in args if a.startswith("seed=")} or {"0"}
flavours = {"headless", "vanilla"} if flavour == "both" else {flavour}
for config in sorted(runs.glob("*/config.yaml")):
    cfg = yaml.safe_load(config.read_text()) or {}
    hf = (cfg.get("objective") or {}).get("loss_implementation") == "hf"
    if cfg.get("flavour") in flavours and str(cfg.get("seed")) in seeds and hf == (tag == "hf-head"):
        for name in ("summary.md", "metrics.jsonl"):
            if (config.parent / name).is_file():
                shutil.copy(config.parent / name, res / f"{config.parent.name}-{name}")
PY
if [ -n "${OUT:-}" ]; then  # on the GPU machine: one archive, since a call brings back at most 8 files
  tar czf "$OUT/$NAME-$FLAVOUR.tgz" -C "$OUT" "$NAME" && rm -r "$RES" && echo "results: $OUT/$NAME-$FLAVOUR.tgz"
fi
exit "$rc"
