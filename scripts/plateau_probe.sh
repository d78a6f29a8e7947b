#!/usr/bin/env bash
# Side-by-side plateau probes on one GPU (scripts/plateau_probe.py): unpack the carried dataset,
# start one process per variant, wait.  Results: $OUT/<variant>-lr<LR>.jsonl and $OUT/probe.log.
#   VARIANTS="vanilla paper proj@5e-4" LR=1e-3 STEPS=4000 DEADLINE=540 bash scripts/plateau_probe.sh
#   STUDY=encoder DATA_ROOT=/tmp/headless-stage/data VARIANTS="vanilla@5e-4 paper@5e-4" \
#     EXTRA="batch_size=256" WARMUP=400 SCHEDULE=4000 bash scripts/plateau_probe.sh   # the encoder study's recipe
set -uo pipefail
OUT=${OUT:-out}; mkdir -p "$OUT" /tmp/probe
# TAR: a `headless prepare` dataset packed as one folder (default: the multilingual study's mix at
# 119,547 entries); PRESET: the twins' shape (default: the multilingual study's)
# STUDY=encoder DATA_ROOT=DIR instead: the study's own prepared data (`headless reproduce STUDY
# --prepare-only` into runs/reproduce, which the study's pieces on the same machine then reuse), e.g. a
# corpus staged in parts: DATA_ROOT=$(python3 -m headless stage check /tmp/headless-stage MANIFEST)
if [ -n "${STUDY:-}" ]; then
  PRESET=${PRESET:-$([ "$STUDY" = encoder ] && echo bert-base || echo "$STUDY")}
  PYTHONPATH=$PWD/src python3 -m headless reproduce "$STUDY" data_root="${DATA_ROOT:?DATA_ROOT: the folder of the study data}" \
    progress=false --prepare-only --work-dir runs/reproduce > /tmp/probe/prepare.log 2>&1 \
    || { tail -5 /tmp/probe/prepare.log; exit 2; }
  DATA=$(sed -n 's/^prepared: \([^ ]*\) (.*/\1/p' /tmp/probe/prepare.log | tail -1)
  [ -d "$DATA" ] || { echo "plateau_probe.sh: no prepared data in /tmp/probe/prepare.log"; tail -5 /tmp/probe/prepare.log; exit 2; }
  echo "data: $DATA"
else
  TAR=${TAR:-.data/carry/ml-119547.tar.xz}; PRESET=${PRESET:-multilingual}
  DATA=/tmp/probe/$(tar -tJf "$TAR" | head -1 | cut -d/ -f1)
  [ -d "$DATA" ] || tar -xJf "$TAR" -C /tmp/probe
fi
VARIANTS=${VARIANTS:-"vanilla paper scale bias both cosine"}
LR=${LR:-1e-3}; STEPS=${STEPS:-4000}; DEADLINE=${DEADLINE:-540}; WARMUP=${WARMUP:-300}; SCHEDULE=${SCHEDULE:-10000}
EXTRA=${EXTRA:-}
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
for entry in $VARIANTS; do  # NAME or NAME@LR
  v=${entry%@*}; lr=$LR; [ "$entry" != "$v" ] && lr=${entry#*@}
  python scripts/plateau_probe.py --data "$DATA" --preset "$PRESET" --variant "$v" --steps "$STEPS" --deadline "$DEADLINE" \
    --out "$OUT/$v-lr$lr.jsonl" batch_size=128 optim.lr=$lr optim.warmup_steps=$WARMUP optim.beta2=0.98 \
    optim.schedule_steps=$SCHEDULE compile=true compile_mode=reduce-overhead progress=false tensorboard=false \
    $EXTRA > "/tmp/probe/$v-$lr.log" 2>&1 &
done
wait
for f in /tmp/probe/*.log; do echo "== $f"; tail -3 "$f"; done > "$OUT/probe.log"
python - "$OUT" <<'PY'
import json, sys, glob, os
for f in sorted(glob.glob(os.path.join(sys.argv[1], "*.jsonl"))):
    rows = [json.loads(l) for l in open(f)][1:]
    if not rows: print(os.path.basename(f), "no rows"); continue
    accs = " ".join(f"{r['acc']:.3f}" for r in rows[4::5])
    last = rows[-1]
    print(f"{os.path.basename(f):24s} steps {last['step']:5d} wall {last['wall']:6.0f}s acc/500: {accs}")
    diag = [r for r in rows if "o_cos" in r]
    for r in diag[-1:]:
        print("   ", {k: round(v, 3) for k, v in r.items() if k in ("o_norm","e_norm","e_common","o_cos","in_cos","pos_logit","logit_std","scale","bias_std","emb_rows_norm")})
PY
cat "$OUT/probe.log" | tail -40
