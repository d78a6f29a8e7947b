#!/usr/bin/env bash
# Step times of the multilingual twins through `headless pretrain` at the paper's vocabulary
# (119,547, the carried dataset) and XLM-R's (250,048 rows, same data): headless, vanilla (head at the
# masked positions), vanilla with HF's head at every position (the paper's baseline), and the
# backbone alone (`objective.loss_implementation=none`: each vanilla's ceiling is backbone / vanilla).
#   SIZES="119547 250048" STEPS=300 RUN_S=120 bash scripts/step_times_ml.sh   # -> $OUT/step_times.txt
set -uo pipefail
OUT=${OUT:-out}; mkdir -p "$OUT" /tmp/st
DATA=/tmp/st/data-119547; [ -d "$DATA" ] || tar -xJf .data/carry/ml-119547.tar.xz -C /tmp/st
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
STEPS=${STEPS:-300}; SIZES=${SIZES:-"119547 250048"}; RUN_S=${RUN_S:-150}
for v in $SIZES; do
  for twin in "headless" "headless objective.loss_implementation=none" "vanilla" "vanilla objective.loss_implementation=hf"; do
    set -- $twin ""; name="$1-${2#objective.loss_implementation=}-$v"
    timeout -k 10 "$RUN_S" python -m headless pretrain --preset multilingual --flavour $1 ${2:-} data.path=$DATA \
      model.vocab_size=$v batch_size=128 optim.warmup_steps=300 max_steps=$STEPS log_every=50 eval_every=100000 \
      save_every=100000 compile=true compile_mode=reduce-overhead progress=false tensorboard=false \
      run_dir=/tmp/st/$name > /tmp/st/$name.log 2>&1 || { echo "$name: exit $? (log tail below)"; tail -3 /tmp/st/$name.log; }
    python - "$name" /tmp/st/$name/metrics.jsonl <<'PY' | tee -a "$OUT/step_times.txt"
import json, sys
try:
    rows = [json.loads(l) for l in open(sys.argv[2]) if '"train"' in l]
except OSError:
    rows = []
last = [r for r in rows if r.get("split") == "train"][-3:]
if not last:
    print(f"{sys.argv[1]:32s} no train rows"); raise SystemExit
tps = sum(r["tokens_per_s"] for r in last) / len(last)
print(f"{sys.argv[1]:32s} tokens/s {tps:10,.0f}  ms/step {128*128/tps*1e3:6.2f}  peak GiB {last[-1].get('peak_mem_gib', 0):.1f}")
PY
  done
done
