#!/usr/bin/env bash
# The pinned wheels of the optional vanilla peers, for the GPU machine (Python 3.12, x86-64, no
# internet there): downloaded here into ignored folders, carried there, installed there offline.
#
#   bash scripts/gpu_wheels.sh            # Liger + Cut Cross-Entropy -> .whl/        (~0.9 MB)
#   bash scripts/gpu_wheels.sh quack      # also quack-kernels + CuTe DSL -> .data/wheels-quack/ (114 MB: over
#                                         # the 64 MiB a device call carries: staged in parts with
#                                         # `headless stage`, docs/reference/performance.md)
#
# There (scripts/bench_peers.sh does it itself; carry `.whl`):
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PYTHONPATH
#
# Pins: docs/requirements.md ("Optional GPU kernels").  PY_VERSION (default 3.12) picks the wheels'
# Python.  Files already there are kept; a second version of a package is refused (pip would
# install neither).
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS=(liger-kernel==0.8.5 cut-cross-entropy==25.1.1)
# quack and every dependency its wheels declare (besides torch and typing-extensions, which the GPU
# image has): installed there AFTER the image's own packages (bench_peers.sh, EXTRA_WHEELS), so an
# image copy of cuda-bindings, protobuf or einops wins over ours
QUACK=(quack-kernels==0.6.5 nvidia-cutlass-dsl==4.8.1 nvidia-cutlass-dsl-libs-base==4.8.1
       nvidia-cutlass-dsl-libs-core==4.8.1 nvidia-cutlass-dsl-libs-cu13==4.8.1 apache-tvm-ffi==0.1.15.post2
       torch-c-dlpack-ext==0.1.5 cuda-bindings==13.0.3 cuda-pathfinder==1.9.1 einops==0.8.2 protobuf==7.36.2)
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux1_x86_64; do PLATFORMS+=(--platform "$p"); done

fetch() {  # folder, requirements...
  local dir=$1; shift
  mkdir -p "$dir"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "${PY_VERSION:-3.12}" \
    --implementation cp "${PLATFORMS[@]}" -d "$dir" "$@"
  local dupes
  dupes=$(ls "$dir"/*.whl | xargs -n1 basename | cut -d- -f1 | sort | uniq -d)
  if [ -n "$dupes" ]; then
    echo "gpu_wheels.sh: $dir holds two versions of: $dupes; remove the old ones (pip would install neither)" >&2
    exit 2
  fi
  du -b "$dir"/*.whl | awk -v d="$dir" '{ n += $1; printf "  %9.1f MB  %s\n", $1 / 1e6, $2 } END { printf "  %9.1f MB  %s in all\n", n / 1e6, d }'
}

fetch .whl "${PEERS[@]}"
if [ "${1:-}" = quack ]; then
  fetch .data/wheels-quack "${QUACK[@]}"
fi
