#!/usr/bin/env bash
# Runs `python -m bench.gpu_llamacpp STEP ...` on a GPU machine that has CUDA, CMake and a
# Python 3.12 with numpy, but not this workspace: the wheels in build/gpu/whl are
# installed into /tmp/site and the members' sources go on PYTHONPATH. See bench/README.md
# (GPU) for how build/gpu is prepared. Output goes to $OUT when set.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d /tmp/site ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site build/gpu/whl/*.whl
fi
root=$(pwd)
members=(specs catalog-core worker-adapters adapter-host provisioners pool-managerd orchestratord cli)
path=/tmp/site:$root
for member in "${members[@]}"; do path=$path:$root/$member/src; done
export PYTHONPATH=$path PYTHONUNBUFFERED=1
out=${OUT:-$root/bench/results}
mkdir -p "$out"
python3 -m bench.gpu_llamacpp "$@" --out "$out/gpu_llamacpp.json"
