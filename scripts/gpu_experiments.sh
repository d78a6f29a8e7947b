#!/usr/bin/env bash
# The GPU runs behind the numbers in docs/ (one H100).  Each stage is one command; the results of a
# stage land in results/<stage>/ and are packed into $OUT/<stage>.tgz when OUT is set.
#
#   bash scripts/gpu_experiments.sh smoke|bench|pythia|decoder-eval|encoders|...|captured
#
# Optional kernels (Liger, Cut Cross-Entropy) on a machine without internet: carry their wheels and
# install them with `pip install --no-deps --target /tmp/site .whl/*.whl`; /tmp/site is then used.
# Data: copy the enwiki shards, tokenizers and evaluation sets of ../shared/data into .data/ first
# (see docs/guide/training.md); `headless prepare` packs them here.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$([ -d /tmp/site ] && echo /tmp/site:)src PYTHONUNBUFFERED=1 HEADLESS_CACHE=runs/cache TOKENIZERS_PARALLELISM=true
H="python3 -m headless"
STAGE=${1:?stage}
RES=results/$STAGE
mkdir -p "$RES"
P70_STEPS=${P70_STEPS:-800}
BERT_STEPS=${BERT_STEPS:-3000}

prepare_data() {
  $H prepare .data/enwiki/train/*.jsonl.xz --validation-input .data/enwiki/validation/enwiki-029.jsonl.xz \
     --output runs/data/enwiki-neox --tokenizer .data/tokenizers/gpt-neox-20b/tokenizer.json --seq-len 2048 --workers 8 -q
  $H prepare .data/enwiki/train/*.jsonl.xz --validation-input .data/enwiki/validation/enwiki-029.jsonl.xz \
     --output runs/data/enwiki-bert --tokenizer .data/tokenizers/bert-base-uncased/vocab.txt --seq-len 128 --workers 8 -q
}

pack() { [ -n "${OUT:-}" ] && tar czf "$OUT/$STAGE.tgz" results/"$STAGE" || true; }
trap pack EXIT

case "$STAGE" in
  smoke)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$RES/gpu.txt"
    python3 - <<'EOF' | tee "$RES/packages.txt"
import importlib.util, torch, transformers
print("torch", torch.__version__, "transformers", transformers.__version__)
for m in ["yaml", "tqdm", "datasets", "tensorboard", "matplotlib", "sklearn", "scipy", "zstandard", "pyarrow", "triton", "pytest"]:
    print(m, bool(importlib.util.find_spec(m)))
EOF
    python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_cwt_triton.py 2>&1 | tail -3 | tee "$RES/pytest-gpu.txt"
    prepare_data
    $H pretrain --preset tiny-gpt --run-dir runs/smoke-headless data.path=runs/data/enwiki-neox data.seq_len=128 \
       model.max_position_embeddings=2048 max_steps=30 log_every=10 eval_every=30 --no-progress
    cp runs/smoke-headless/summary.md "$RES/smoke-headless.md"
    ;;
  bench)
    prepare_data
    $H bench --preset pythia-70m --objectives cwt,cwt-paper,ce,ce-hf --vocab-sizes 50304,256000 --batch-sizes 8 \
       --steps 10 --warmup 3 --output "$RES/pythia-70m"
    $H bench --preset pythia-70m --objectives cwt,ce --vocab-sizes 50304 --batch-sizes 32,64 \
       --steps 6 --warmup 2 --output "$RES/pythia-70m-large-batch"
    $H bench --preset pythia-160m --objectives cwt,ce,ce-hf --vocab-sizes 50304,256000 --batch-sizes 8 \
       --steps 10 --warmup 3 --output "$RES/pythia-160m"
    $H bench --preset bert-base --objectives cwt,ce,ce-hf --vocab-sizes 30522 --batch-sizes 256 \
       --steps 10 --warmup 3 --output "$RES/bert-base"
    ;;
  pythia)
    prepare_data
    $H bench --preset pythia-70m --objectives cwt,cwt-paper,ce,ce-hf --vocab-sizes 50304,256000 --batch-sizes 8 \
       --steps 10 --warmup 3 --output "$RES/bench-p70" || true
    $H bench --preset pythia-70m --objectives cwt,ce-hf --vocab-sizes 50304 --batch-sizes 8 --compile \
       --steps 10 --warmup 5 --output "$RES/bench-p70-compile" || true
    for flavour in headless vanilla; do
      $H pretrain --preset pythia-70m --flavour $flavour --data runs/data/enwiki-neox --run-dir runs/p70-$flavour \
         max_steps=$P70_STEPS grad_accum=4 optim.warmup_steps=100 eval_every=200 eval_batches=16 log_every=20 \
         save_every=100000 --no-progress
      cp runs/p70-$flavour/summary.md "$RES/p70-$flavour.md"; cp runs/p70-$flavour/metrics.jsonl "$RES/p70-$flavour.jsonl"
      cp runs/p70-$flavour/curves.png "$RES/p70-$flavour.png" || true
    done
    ;;
  decoder-eval)
    $H export runs/p70-vanilla exports/p70-vanilla --overwrite
    $H export runs/p70-headless exports/p70-headless-raw --add-head --overwrite
    $H finetune-head runs/p70-headless exports/p70-hlm-ft --data runs/data/enwiki-neox --tokens 5e6 --batch-size 8 \
       --lr 1e-4 --run-dir runs/p70-hlm-ft-run --no-progress
    cp runs/p70-hlm-ft-run/summary.md "$RES/hlm-ft-run.md"
    for m in p70-vanilla p70-headless-raw p70-hlm-ft; do
      $H eval lambada exports/$m --data .data/lambada/lambada_openai_dev.jsonl --batch-size 64 --output "$RES/$m"
      $H eval zeroshot exports/$m --data-dir .data/zeroshot --batch-size 32 --output "$RES/$m"
    done
    ;;
  encoders)
    prepare_data
    for flavour in ${ENC_FLAVOURS:-headless vanilla}; do
      $H pretrain --preset bert-small --flavour $flavour --data runs/data/enwiki-bert --run-dir runs/bs-$flavour \
         max_steps=$BERT_STEPS batch_size=128 optim.lr=5e-4 optim.warmup_steps=300 eval_every=500 log_every=50 \
         save_every=100000 --no-progress
      cp runs/bs-$flavour/summary.md "$RES/bs-$flavour.md"; cp runs/bs-$flavour/metrics.jsonl "$RES/bs-$flavour.jsonl"
      $H export runs/bs-$flavour exports/bs-$flavour --overwrite
      $H glue exports/bs-$flavour --data-dir .data/glue --tasks sst2,mrpc,stsb,rte,wnli --max-train-examples 8000 \
         --seeds 0,1 --bf16 --output "$RES/glue-bs-$flavour" --quiet
    done
    [ -f "$RES/glue-bs-headless/glue.json" ] && [ -f "$RES/glue-bs-vanilla/glue.json" ] && \
      $H glue compare "$RES/glue-bs-headless/glue.json" "$RES/glue-bs-vanilla/glue.json" --output "$RES" || true
    ;;
  bench-autocast)  # after making the Triton kernel follow autocast (bf16 inputs)
    $H bench --preset pythia-70m --objectives cwt,ce-hf,ce-triton --vocab-sizes 50304,256000 --batch-sizes 8 \
       --steps 10 --warmup 3 --output "$RES/pythia-70m"
    $H bench --preset pythia-160m --objectives cwt,ce-hf --vocab-sizes 50304,256000 --batch-sizes 8 \
       --steps 10 --warmup 3 --output "$RES/pythia-160m"
    $H bench --preset bert-base --objectives cwt,ce-hf --vocab-sizes 30522 --batch-sizes 256 \
       --steps 10 --warmup 3 --output "$RES/bert-base"
    ;;
  profile)  # where a Pythia-160M step spends its time, eager and compiled; external fused-CE kernels
    python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_external_kernels.py --tb=line 2>&1 \
      | tail -15 | tee "$RES/pytest-gpu.txt" || true
    $H bench --preset pythia-160m --objectives cwt,cwt-liger,cwt-cce,ce-hf,ce-hf-full,ce-triton,ce-liger,ce-cce \
       --vocab-sizes 50304 --batch-sizes 8 --steps 10 --warmup 3 --profile --output "$RES/p160-eager" || true
    $H bench --preset pythia-160m --objectives cwt,ce-triton,ce-liger,ce-hf --vocab-sizes 50304 --batch-sizes 8 \
       --steps 10 --warmup 5 --compile --profile --output "$RES/p160-compile" || true
    python3 - <<'EOF2' 2>&1 | tail -30 | tee "$RES/graph-breaks.txt"
import torch
from headless.config import load_config
from headless.models import build_model
cfg = load_config("pythia-160m", flavour="headless")
m = build_model(cfg.model, cfg.objective, "cwt", 50304).cuda()
ids = torch.randint(0, 50304, (2, 2048), device="cuda")
with torch.autocast("cuda", dtype=torch.bfloat16):
    ex = torch._dynamo.explain(m.backbone)(input_ids=ids)
print("graphs", ex.graph_count, "breaks", ex.graph_break_count)
for b in ex.break_reasons[:10]:
    print(b.reason)
EOF2
    ;;
  fast)  # after headless_sdpa (flash kernels under compile) and sync-free timing
    python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_external_kernels.py --tb=line 2>&1 \
      | tail -8 | tee "$RES/pytest-gpu.txt" || true
    python3 scripts/sdpa_backends.py | tee "$RES/sdpa-backends.txt" || true
    B="$H bench --steps 10 --warmup 4"
    $B --preset pythia-160m --compile --profile --objectives cwt,ce-triton,ce-hf,ce-liger,ce-cce \
       --vocab-sizes 50304 --batch-sizes 8 --output "$RES/p160-compile" || true
    $B --preset pythia-160m --objectives cwt,cwt-liger,cwt-cce,ce-hf-full,ce-triton,ce-liger \
       --vocab-sizes 50304 --batch-sizes 8 --output "$RES/p160-eager" || true
    ;;
  fast2)  # host synchronisations, CUDA graphs, external kernels without compile
    python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_external_kernels.py --tb=line 2>&1 \
      | tail -8 | tee "$RES/pytest-gpu.txt" || true
    B="$H bench --steps 10 --warmup 4 --preset pythia-160m --vocab-sizes 50304 --batch-sizes 8"
    $B --compile --sync-debug --objectives cwt,ce-triton --output "$RES/p160-syncs" || true
    $B --compile --objectives cwt,ce-triton,ce-hf --output "$RES/p160-graphs" compile_mode=reduce-overhead || true
    $B --objectives cwt,cwt-liger,cwt-cce,ce-hf-full,ce-triton,ce-liger,ce-cce --output "$RES/p160-eager" || true
    ;;
  final-p160)  # the numbers in docs/reference/performance.md: compiled backbone with CUDA graphs, every head
    B="$H bench --steps 8 --warmup 4 --preset pythia-160m --batch-sizes 8 --compile"
    $B --objectives backbone,cwt,ce-triton,ce-hf,ce-hf-full --vocab-sizes 50304 --output "$RES/p160-50k" \
       compile_mode=reduce-overhead || true
    $B --objectives cwt,ce-triton,ce-hf --vocab-sizes 256000 --output "$RES/p160-256k" compile_mode=reduce-overhead || true
    ;;
  final-p70-bert)
    $H bench --steps 8 --warmup 4 --preset pythia-70m --batch-sizes 8,32,64 --compile --vocab-sizes 50304 \
       --objectives backbone,cwt,ce-triton --output "$RES/p70-batches" compile_mode=reduce-overhead || true
    $H bench --steps 8 --warmup 4 --preset bert-base --batch-sizes 256 --compile --vocab-sizes 30522 \
       --objectives backbone,cwt,ce-hf-full,ce-hf,ce-triton --output "$RES/bert-base" compile_mode=reduce-overhead || true
    ;;
  final-train)  # the trainer itself with the presets' fast step (compile + CUDA graphs), on real text
    for t in neox:gpt-neox-20b/tokenizer.json:2048 bert:bert-base-uncased/vocab.txt:128; do
      IFS=: read name tok seq <<< "$t"
      $H prepare .data/enwiki/train/enwiki-000.jsonl.xz --validation-input .data/enwiki/validation/enwiki-029.jsonl.xz \
         --output runs/data/enwiki-$name --tokenizer .data/tokenizers/$tok --seq-len $seq --workers 8 -q
    done
    for flavour in headless vanilla; do
      for p in pythia-160m:neox bert-base:bert; do
        IFS=: read preset data <<< "$p"
        $H pretrain --preset $preset --flavour $flavour --data runs/data/enwiki-$data --run-dir runs/ft-$preset-$flavour \
           max_steps=40 log_every=10 eval_every=40 eval_batches=4 save_every=40 optim.warmup_steps=10 --no-progress \
           > "$RES/$preset-$flavour.log" 2>&1 || tail -5 "$RES/$preset-$flavour.log"
        cp runs/ft-$preset-$flavour/metrics.jsonl "$RES/$preset-$flavour.jsonl" 2>/dev/null || true
        cp runs/ft-$preset-$flavour/summary.md "$RES/$preset-$flavour.md" 2>/dev/null || true
      done
    done
    grep -h '"train"' "$RES"/*.jsonl | tail -20 || true
    ;;
  final-sweep)  # GPU tests on the final code; the paper's Fig. 2 / 6b sweep; largest micro-batches
    python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_cwt_triton.py tests/test_external_kernels.py --tb=line 2>&1 | tail -8 | tee "$RES/pytest-gpu.txt" || true
    $H bench --preset pythia-70m --objectives cwt,cwt-paper,ce-triton,ce-hf --vocab-sizes 8192,32768,50304,131072,256000 \
       --batch-sizes 8 --steps 6 --warmup 2 --output "$RES/p70-vocab-sweep" || true
    $H bench --preset pythia-70m --objectives cwt,ce-triton,ce-hf --vocab-sizes 50304,256000 --batch-sizes 8 \
       --steps 2 --warmup 1 --max-batch --output "$RES/p70-max-batch" || true
    ;;
  loss-profile)  # where a compiled CWT step waits: profiler tables, GPU-busy fraction, host syncs
    B="$H bench --steps 6 --warmup 4 --compile --profile --sync-debug --objectives backbone,cwt"
    $B --preset bert-base --batch-sizes 256 --vocab-sizes 30522 --output "$RES/bert" compile_mode=reduce-overhead || true
    $B --preset pythia-160m --batch-sizes 8 --vocab-sizes 50304 --output "$RES/p160" compile_mode=reduce-overhead || true
    ;;
  syncs)  # host syncs per step and tokens/s: MLM with Bernoulli vs static masking (objective.masking), CLM
    B="$H bench --steps 8 --warmup 4 --compile --sync-debug --objectives backbone,cwt,ce-hf"
    $B --preset bert-base --batch-sizes 256 --vocab-sizes 30522 --output "$RES/bert-bernoulli" compile_mode=reduce-overhead || true
    $B --preset bert-base --batch-sizes 256 --vocab-sizes 30522 --output "$RES/bert-static" compile_mode=reduce-overhead \
       objective.masking=static || true
    $B --preset pythia-160m --batch-sizes 8 --vocab-sizes 50304 --output "$RES/p160" compile_mode=reduce-overhead || true
    ;;
  captured)  # one captured step (sync_free: backbone and loss as one CUDA graph) against the eager-loss paths.
    # cwt-paper = CWT "reference" (K x K pairs), ce-hf = dense vanilla head: with static shapes both are one
    # graph; cwt / ce / ce-triton keep the eager loss. Both twins side by side. One shape per command
    # (each objective compiles for about a minute): captured bert-small | bert-base | p160 | p70 | test
    B="$H bench -q --compile --steps 20 --warmup 10 --sync-debug compile_mode=reduce-overhead"
    case "${2:?shape: bert-small, bert-base, p160, p70 or test}" in
      bert-small) $B --preset bert-small --batch-sizes 256 --seq-len 128 --objectives backbone,cwt,cwt-paper,ce,ce-hf \
                     --output "$RES/bert-small" objective.masking=static ;;
      bert-base) $B --preset bert-base --batch-sizes 256 --seq-len 128 --vocab-sizes 30522 \
                    --objectives cwt,cwt-paper,ce,ce-hf,ce-hf-full --output "$RES/bert-base" objective.masking=static ;;
      p160) $B --preset pythia-160m --batch-sizes 8 --seq-len 2048 --objectives backbone,cwt,cwt-paper,ce-triton,ce-hf \
               --output "$RES/p160" ;;
      p70) $B --preset pythia-70m --batch-sizes 8 --seq-len 2048 --objectives backbone,cwt,cwt-paper,ce-triton,ce-hf \
              --output "$RES/p70" ;;  # the decoder study's shape: whether its twins should capture too
      p160-256k) $B --preset pythia-160m --batch-sizes 8 --seq-len 2048 --vocab-sizes 256000 \
                    --objectives backbone,cwt,cwt-paper,ce-triton,ce-hf --output "$RES/p160-256k" ;;
      p70-64) # 64 x 2048: K = 131,072 rows, where the K x K scores (64 GiB in float32) cannot be used
              $B --preset pythia-70m --batch-sizes 64 --seq-len 2048 --objectives backbone,cwt,ce-triton,ce-hf \
                 --output "$RES/p70-64" ;;
      test) python3 -m pytest -q -p no:cacheprovider -m gpu tests 2>&1 | tee "$RES/gpu-test.txt" | tail -40 ;;
      *) echo "unknown shape $2"; exit 2;;
    esac
    ;;
  trainer)  # `headless pretrain` at a bench shape, both twins, eager and captured loss: is the trainer as fast as
    # the bench (issue #14)?  Steady ms per step from each run's own metrics.jsonl; compare with `captured p70`.
    [ "${2:?shape: p70}" = p70 ] || { echo "unknown shape $2"; exit 2; }
    STEPS=${TRAINER_STEPS:-1000}
    $H prepare .data/enwiki/train/enwiki-00[01].jsonl.xz --output runs/data/enwiki-neox-2 \
       --tokenizer .data/tokenizers/gpt-neox-20b/tokenizer.json --seq-len 2048 --workers 8 -q
    for twin in "headless triton" "headless reference" "vanilla triton" "vanilla reference"; do
      set -- $twin
      run=runs/trainer-p70-$1-$2
      $H pretrain --preset pythia-70m --flavour "$1" --data runs/data/enwiki-neox-2 --run-dir "$run" -q \
         max_steps="$STEPS" log_every=50 eval_every=100000 save_every=100000 objective.loss_implementation="$2" \
         2>&1 | tail -3
      cp "$run/summary.md" "$RES/p70-$1-$2-summary.md"; cp "$run/metrics.jsonl" "$RES/p70-$1-$2-metrics.jsonl"
      python3 scripts/steady_step_time.py "$run/metrics.jsonl" --after 300 | tee -a "$RES/steady.txt"
    done
    ;;
  *) echo "unknown stage $STAGE"; exit 2;;
esac
