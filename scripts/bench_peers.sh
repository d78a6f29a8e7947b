#!/usr/bin/env bash
# Issue #29 on one GPU: headless against every vanilla peer (our head, HF's own head, Cut
# Cross-Entropy, Liger, quack when installed), captured as in the issue's command, and the largest
# micro-batch each fits.  Results: $OUT/bench_peers.tgz (each stage's bench.json/.md/.png),
# $OUT/summary.md (every stage's tables), $OUT/log.txt.
#
#   bash scripts/bench_peers.sh                     # every stage, in this order, within BUDGET_S
#   bash scripts/bench_peers.sh maxb-p160 p160-128k # named stages only
#
# Stages (estimates on an H200, from the compiles: a cold compile ~45 s at Pythia-160M and ~80 s at
# llama-1b, one that hits Inductor's cache of an earlier case ~15 s; the timed steps take seconds):
#   p160-256k   Pythia-160M 8 x 2048, V = 256,000: backbone, cwt, ce, ce-hf-full, ce-cce, ce-liger (+ce-quack);
#               3 cold + 3-4 cached compiles, ~3.5 min (measured: 187 s on an H100, CCE failing at once)
#   p160-50k    the same at V = 50,304, ~3.5 min
#   llama-1b    the Llama-3.2-1B shape, 4 x 2048, V = 128,256: backbone, cwt, ce, ce-cce, ce-liger (+ce-quack);
#               3 cold + 2-3 cached compiles, ~5 min
#   maxb-llama  largest micro-batch of cwt, ce, ce-hf-full, ce-liger on llama-1b at V = 128,256: eager probes
#               (--max-batch-eager; ~5 probes of ~10 s, at most 45 s of probing per search), ~3.5 min
#   maxb-p160   the same on Pythia-160M at V = 50,304, 128,256 and 256,000 (12 searches), ~5 min
#   p160-128k   Pythia-160M at V = 128,256, ~3.5 min
# Together ~24 min: three 10-minute calls.  A stage starts only while BUDGET_S (default 470 s)
# has at least 60 s left and runs under what is left; the reports are rewritten after every case,
# so a stage stopped at the limit keeps its finished rows.  summary.md says which stages did not
# run: name them in the next call.
#
# Carry `.whl` (scripts/gpu_wheels.sh): the wheels are installed offline into /tmp/site first.
# EXTRA_WHEELS=DIR also installs DIR/*.whl (quack, staged in parts: docs/reference/performance.md)
# into /tmp/site-extra, which a .pth file puts after the image's own packages.
set -uo pipefail
cd "$(dirname "$0")/.."
ALL=(p160-256k p160-50k llama-1b maxb-llama maxb-p160 p160-128k)
STAGES=("$@")
[ ${#STAGES[@]} -eq 0 ] && STAGES=("${ALL[@]}")
for s in "${STAGES[@]}"; do
  case " ${ALL[*]} " in *" $s "*) ;; *) echo "bench_peers.sh: unknown stage $s (${ALL[*]})" >&2; exit 2 ;; esac
done
START=$SECONDS
BUDGET_S=${BUDGET_S:-470}
OUT=${OUT:-runs/bench_peers-out}
RES=runs/bench_peers
mkdir -p "$RES" "$OUT"
LOG=$OUT/log.txt
if command -v nvidia-smi >/dev/null && ls .whl/*.whl >/dev/null 2>&1; then  # the GPU machine only
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    2>&1 | tee -a "$LOG"
fi
if [ -n "${EXTRA_WHEELS:-}" ]; then  # staged wheels (quack): placed AFTER the image's packages, which win
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site-extra \
    "$EXTRA_WHEELS"/*.whl 2>&1 | tee -a "$LOG"
  # addsitedir, not a bare path: it also reads the .pth files inside (the CuTe DSL's own)
  echo "import site; site.addsitedir('/tmp/site-extra')" \
    > "$(python3 -c 'import site; print(site.getsitepackages()[0])')/zz-headless-extra.pth"
fi
export PYTHONPATH=$([ -d /tmp/site ] && echo /tmp/site:)src PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
PEERS=""
for pair in ce-cce:cut_cross_entropy ce-liger:liger_kernel ce-quack:quack; do
  if python3 -c "import ${pair#*:}" 2>/dev/null; then PEERS="$PEERS,${pair%%:*}"
  else echo "not installed, no row: ${pair%%:*} (${pair#*:})" | tee -a "$LOG"; fi
done
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, transformers, triton; print('torch', torch.__version__, 'transformers', transformers.__version__, 'triton', triton.__version__)"
  python3 -m pip list 2>/dev/null | grep -i -E "liger|cut.cross|quack|cutlass" ; } 2>&1 | tee -a "$LOG"

CAPTURED=(--compile --steps 10 --warmup 3 compile_mode=reduce-overhead)
stage() {  # name, bench arguments...
  local name=$1; shift
  local left=$((BUDGET_S - (SECONDS - START)))
  if [ "$left" -lt 60 ]; then echo "NOT RUN (time budget): $name" | tee -a "$LOG"; return; fi
  echo "== $name ($left s left): headless bench $*" | tee -a "$LOG"
  local t0=$SECONDS
  timeout --signal=INT --kill-after=15 "$left" python3 -m headless bench --no-progress --output "$RES/$name" "$@" \
    >>"$LOG" 2>&1
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - t0)) s$([ $rc = 124 ] && echo ' (time budget: partial)')" | tee -a "$LOG"
}

run() {
  case "$1" in
    p160-256k) stage p160-256k --preset pythia-160m --objectives "backbone,cwt,ce,ce-hf-full$PEERS" \
                 --vocab-sizes 256000 --batch-sizes 8 "${CAPTURED[@]}" ;;
    p160-50k)  stage p160-50k --preset pythia-160m --objectives "backbone,cwt,ce,ce-hf-full$PEERS" \
                 --vocab-sizes 50304 --batch-sizes 8 "${CAPTURED[@]}" ;;
    p160-128k) stage p160-128k --preset pythia-160m --objectives "backbone,cwt,ce,ce-hf-full$PEERS" \
                 --vocab-sizes 128256 --batch-sizes 8 "${CAPTURED[@]}" ;;
    llama-1b)  stage llama-1b --preset llama-1b --objectives "backbone,cwt,ce$PEERS" \
                 --vocab-sizes 128256 --batch-sizes 4 "${CAPTURED[@]}" ;;
    maxb-llama) stage maxb-llama --preset llama-1b --objectives "cwt,ce,ce-hf-full${PEERS/,ce-cce/}" \
                 --vocab-sizes 128256 --batch-sizes 4 --steps 2 --warmup 1 \
                 --max-batch --max-batch-eager --max-batch-seconds 45 ;;
    maxb-p160) stage maxb-p160 --preset pythia-160m --objectives "cwt,ce,ce-hf-full${PEERS/,ce-cce/}" \
                 --vocab-sizes 50304,128256,256000 --batch-sizes 8 --steps 2 --warmup 1 \
                 --max-batch --max-batch-eager --max-batch-seconds 45 ;;
  esac
}

for s in "${STAGES[@]}"; do run "$s"; done

{ echo "# bench_peers $(date -u +%FT%TZ), $((SECONDS - START)) s"; echo
  grep -E "^(== |NOT RUN|not installed)" "$LOG"; echo
  for d in "$RES"/*/; do [ -f "$d/bench.md" ] && { echo "## $(basename "$d")"; echo; cat "$d/bench.md"; echo; }; done
} >"$OUT/summary.md"
tar czf "$OUT/bench_peers.tgz" "$RES"
cat "$OUT/summary.md"
