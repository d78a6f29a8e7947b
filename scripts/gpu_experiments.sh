#!/usr/bin/env bash
# The GPU runs behind the numbers in docs/ (one H100).  Each stage is one command; the results of a
# stage land in results/<stage>/ and are packed into $OUT/<stage>.tgz when OUT is set.
#
#   bash scripts/gpu_experiments.sh smoke|bench|pythia|decoder-eval|encoders
#
# Data: copy the enwiki shards, tokenizers and evaluation sets of ../shared/data into .data/ first
# (see docs/training.md); `headless prepare` packs them here.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=src PYTHONUNBUFFERED=1 HEADLESS_CACHE=runs/cache TOKENIZERS_PARALLELISM=true
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
  *) echo "unknown stage $STAGE"; exit 2;;
esac
