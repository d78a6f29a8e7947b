#!/usr/bin/env bash
# Issue #29 item 3 on one GPU (about 4 minutes on an H200): which SDPA kernel (`model.attention_kernel`),
# FlexAttention or GELU-tanh makes the backbone's training step fastest, and its MFU.
#
#   OUT=/some/dir bash scripts/bench_attention.sh      # BUDGET_S=420 reaches more cases (each saved as it ends)
#
# 1. the GPU test of the kernels (each against fp32 math within bf16's own error) -> attention-pytest.txt
# 2. scripts/bench_attention.py: SDPA alone per kernel, then full captured training steps
#    (`headless bench --compile`, compile_mode=reduce-overhead) of the backbone alone and of CWT at
#    Pythia-160M and Pythia-70M 8 x 2048 per kernel, most telling first; no new case starts after
#    BUDGET_S seconds (default 150) -> attention.json, attention.md, attention-log.txt
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$([ -d /tmp/site ] && echo /tmp/site:)src PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-results/attention}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_attention_kernel.py 2>&1 | tail -5 | tee "$OUT/attention-pytest.txt" || true
python3 scripts/bench_attention.py "$OUT" --budget-s "${BUDGET_S:-150}" 2>&1 | tee "$OUT/attention-log.txt"
