#!/usr/bin/env bash
# HLM+FT's fine-tuning rate, probed on a finished headless decoder run of `headless reproduce decoder`.
#
#   bash scripts/hlmft_lr_probe.sh [SEED]        on the GPU machine, right after the campaign's calls
#
# Why: in docs/results/2026-12-05-decoder-seeds the raw embedding head scored 6.93 LAMBADA against
# HLM+FT's 5.51, and the gap grew as pretraining's cosine rate fell (6e-4 down to 6e-5) below
# HLM+FT's constant 1e-4: 0.12 / 0.16 / 0.99 / 1.42 points at the four checkpoints.  The paper's
# Tab. 15 gives 1e-5, its text 1e-4.  This fine-tunes the run's final checkpoint as the study does
# (`headless finetune-head`, the study's 5 M tokens of its own data) at each rate of LRS, and with
# PROBE=1 also the new head alone (backbone frozen, at 1e-3), then scores LAMBADA on each
# (`headless eval lambada`, as the study does); RAW=1 also scores the raw head (its LAMBADA is in
# the campaign's piece already).  Results: two files in $OUT (the device returns at most 8):
# hlmft-lr-probe-summary.md, one row per variant, and hlmft-lr-probe.tgz (every score and the
# fine-tunings' summaries), both rewritten after each variant, so a probe stopped by the device's
# time limit keeps every variant it finished.
# What may decide: LAMBADA here is the campaign's headline set (the one half the shared data holds),
# so a rate chosen on it would be chosen on the test.  Each variant is also scored on held-out
# cross-entropy over the validation sequences AFTER the study's first 256 (`headless eval heldout
# --skip 256`, 256 of them), which no report of the study scores: a change of the study's rate is
# decided on that column; the LAMBADA column is read, not selected on.
# Settings: OUT (results), WORK (runs/reproduce), DATA_ROOT (the staged corpus, /tmp/headless-stage/data), LRS
# ("1e-5 3e-5 1e-4"), TOKENS (5e6), LIMIT (LAMBADA examples, all), DEVICE (auto), HELDOUT_SKIP /
# HELDOUT_N (256 / 256: the study's held-out sequences are the first `heldout_sequences`, 256).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$([ -d /tmp/site ] && echo /tmp/site:)src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
SEED=${1:-0}; WORK=${WORK:-runs/reproduce}; DATA_ROOT=${DATA_ROOT:-/tmp/headless-stage/data}
LRS=${LRS:-"1e-5 3e-5 1e-4"}; TOKENS=${TOKENS:-5e6}; DEVICE=${DEVICE:-auto}
RUNS=("$WORK"/decoder/runs/headless-seed"$SEED"-*/); SETS=("$WORK"/decoder/data/decoder-*/)
[ -d "${RUNS[0]}" ] || { echo "hlmft_lr_probe.sh: no headless run of seed $SEED under $WORK/decoder/runs"; exit 2; }
[ "${#RUNS[@]}" = 1 ] && [ "${#SETS[@]}" = 1 ] && [ -d "${SETS[0]}" ] || {
  echo "hlmft_lr_probe.sh: expected one headless-seed$SEED run and one prepared dataset under $WORK/decoder"; exit 2; }
RUN=${RUNS[0]%/}; DATASET=${SETS[0]%/}; LAMBADA=$DATA_ROOT/lambada/lambada_openai_dev.jsonl
[ -f "$LAMBADA" ] || { echo "hlmft_lr_probe.sh: $LAMBADA is missing (DATA_ROOT)"; exit 2; }
OUTDIR=${OUT:-results}; SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/hlmft-probe-XXXX")
trap 'rm -rf "$SCRATCH"' EXIT
RES=$SCRATCH/hlmft-lr-probe; mkdir -p "$RES" "$OUTDIR"
H="python3 -m headless"
EVAL=(--data "$LAMBADA" --device "$DEVICE" --batch-size 32 -q ${LIMIT:+--limit "$LIMIT"})
SKIP=${HELDOUT_SKIP:-256}; NHELD=${HELDOUT_N:-256}
HELD=(--data "$DATASET" --skip "$SKIP" --limit "$NHELD" --device "$DEVICE")
echo "run $RUN, data $DATASET"
printf '%s\n' "| variant | held-out CE, $NHELD sequences after the first $SKIP (decides) | LAMBADA accuracy (%) (read only) | token perplexity |" \
  "|---|---|---|---|" > "$RES/summary.md"
score() {  # score MODEL_DIR NAME: held-out first (it decides), LAMBADA, one summary row, both files out
  $H eval heldout "$1" "${HELD[@]}" --output "$RES/$2" >/dev/null
  $H eval lambada "$1" "${EVAL[@]}" --output "$RES/$2" >/dev/null
  python3 - "$RES" "$2" <<'PY'
import json, sys
from pathlib import Path
res, name = Path(sys.argv[1]), sys.argv[2]
held = json.loads(next((res / name).rglob("heldout.json")).read_text())
scores = json.loads(next((res / name).rglob("lambada.json")).read_text())
row = f"| {name} | {held['cross_entropy']:.4f} | {100 * scores['accuracy']:.2f} | {scores['token_perplexity']:.1f} |"
with open(res / "summary.md", "a") as summary:
    summary.write(row + "\n")
print(row)
PY
  cp "$RES/summary.md" "$OUTDIR/.hlmft-lr-probe-summary.md" && mv "$OUTDIR/.hlmft-lr-probe-summary.md" "$OUTDIR/hlmft-lr-probe-summary.md"
  tar -czf "$OUTDIR/.hlmft-lr-probe.tgz" -C "$SCRATCH" hlmft-lr-probe && mv "$OUTDIR/.hlmft-lr-probe.tgz" "$OUTDIR/hlmft-lr-probe.tgz"
}
$H export "$RUN" "$SCRATCH/raw" --add-head >/dev/null
[ "${RAW:-0}" = 1 ] && score "$SCRATCH/raw" raw
variants=()
for lr in $LRS; do variants+=("lr-$lr"); done
[ "${PROBE:-0}" = 1 ] && variants+=("probe-1e-3")
for v in "${variants[@]}"; do
  lr=${v#*-}; extra=(); [ "${v%%-*}" = probe ] && extra=(--probe)
  start=$SECONDS
  $H finetune-head "$SCRATCH/raw" "$SCRATCH/$v" --data "$DATASET" --tokens "$TOKENS" --lr "$lr" "${extra[@]}" \
     --run-dir "$SCRATCH/$v-run" --device "$DEVICE" --seed "$SEED" -q eval_every=1000000 save_every=1000000 \
     tensorboard=false >/dev/null
  echo "$v: fine-tuned in $((SECONDS - start)) s"
  cp "$SCRATCH/$v-run/summary.md" "$RES/$v-finetune-summary.md"
  score "$SCRATCH/$v" "$v"
done
echo "summary: $OUTDIR/hlmft-lr-probe-summary.md; every score: $OUTDIR/hlmft-lr-probe.tgz"
