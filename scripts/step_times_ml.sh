#!/usr/bin/env bash
# Step times of the multilingual twins through `headless pretrain` at the paper's vocabulary
# (119,547, the carried dataset) and XLM-R's (250,048 rows, same data): headless, vanilla (head at the
# masked positions), vanilla with HF's head at every position (the paper's baseline), and the
# backbone alone (`objective.loss_implementation=none`: each vanilla's ceiling is backbone / vanilla).
#   SIZES="119547 250048" STEPS=300 RUN_S=120 bash scripts/step_times_ml.sh   # -> $OUT/step_times.txt
# TWINS (default "headless backbone vanilla vanilla-hf") may add headless-2lookups: the headless twin with
# the targets gathered apart from the input lookup (LanguageModel.one_lookup patched off, as before the
# one lookup), to time that change against its baseline on one machine.
set -uo pipefail
OUT=${OUT:-out}; mkdir -p "$OUT" /tmp/st
DATA=/tmp/st/data-119547; [ -d "$DATA" ] || tar -xJf .data/carry/ml-119547.tar.xz -C /tmp/st
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
STEPS=${STEPS:-300}; SIZES=${SIZES:-"119547 250048"}; RUN_S=${RUN_S:-150}
TWINS=${TWINS:-"headless backbone vanilla vanilla-hf"}
for v in $SIZES; do
  for name in $TWINS; do
    case $name in
      headless|headless-2lookups) args=(--flavour headless) ;;
      backbone) args=(--flavour headless objective.loss_implementation=none) ;;
      vanilla) args=(--flavour vanilla) ;;
      vanilla-hf) args=(--flavour vanilla objective.loss_implementation=hf) ;;
      *) echo "step_times_ml.sh: unknown twin $name" >&2; exit 2 ;;
    esac
    patch=""; [ "$name" = headless-2lookups ] && patch="import headless.models as m; m.LanguageModel.one_lookup = property(lambda self: False); "
    timeout -k 10 "$RUN_S" python -c "${patch}import sys; from headless.cli import main; sys.exit(main(sys.argv[1:]))" \
      pretrain --preset multilingual "${args[@]}" data.path=$DATA \
      model.vocab_size=$v batch_size=128 optim.warmup_steps=300 max_steps=$STEPS log_every=50 eval_every=100000 \
      save_every=100000 compile=true compile_mode=reduce-overhead progress=false tensorboard=false \
      run_dir=/tmp/st/$name-$v > /tmp/st/$name-$v.log 2>&1 || { echo "$name-$v: exit $? (log tail below)"; tail -3 /tmp/st/$name-$v.log; }
    python - "$name-$v" /tmp/st/$name-$v/metrics.jsonl <<'PY' | tee -a "$OUT/step_times.txt"
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
