#!/usr/bin/env bash
# The GPU runs on a machine that has CUDA's compiler, CMake, ninja and a Python 3.12 with
# numpy, scikit-build-core (and PyTorch, for the foreign process of `suite`), but neither
# this workspace nor a network: bench/gpu_prepare.sh made build/gpu here beforehand.
#
#   bench/gpu_device.sh STEP...      steps run in the order given; output under $OUT
#
#   setup   the wheels of build/gpu/whl into /tmp/site; llama-cpp-python 0.3.36 (the
#           lock's version; its sdist trimmed in build/gpu) built with CUDA for sm_90 into
#           a wheel installed into /tmp/site-llama, and llama-server from the same CMake
#           build; the random-weight 1B f16 GGUF (bench.gpu_llamacpp model). Outputs stay
#           in /tmp/gpu: a second call on the same warm machine skips what exists.
#   suite   bench.gpu_suite: NVML inventory, GPU deployment, memory vs estimate, jobs
#   parity  bench.gpu_parity: CPU vs GPU on the 1B model, 256 greedy tokens
#   bench   bench.gpu_llamacpp run: direct vs llorch at c=1, 8, 32
#   trace   bench.gpu_trace: where llorch's added TTFT goes at c=32 (TRACE_ARGS to change)
#
# Each step but setup runs under `timeout` (STEP_TIMEOUT_S, default 240 s; bench 420 s)
# so that one hung step cannot take the whole call; a failed step does not stop the next.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out=${OUT:-$root/bench/results}
work=/tmp/gpu
model=$work/model/random-1b-f16.gguf
mkdir -p "$out" "$work"
members=(specs catalog-core worker-adapters adapter-host provisioners pool-managerd orchestratord cli)
path=/tmp/site-llama:/tmp/site:$root
for member in "${members[@]}" ci/harness; do path=$path:$root/$member/src; done
export PYTHONPATH=$path PYTHONUNBUFFERED=1
# Multicast stays off on these machines (the device notes); nothing here uses NCCL.
export NCCL_NVLS_ENABLE=0

stamp() { echo "== $(date -u +%H:%M:%S) $*"; }

setup() {
    if [ ! -f /tmp/site/.installed ]; then
        stamp "installing $(ls build/gpu/whl | wc -l) wheels into /tmp/site"
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --target /tmp/site build/gpu/whl/*.whl
        touch /tmp/site/.installed
    fi
    if [ ! -f "$model" ]; then
        stamp "writing the model (in the background)"
        python3 -m bench.gpu_llamacpp model --model "$model" >"$out/model.log" 2>&1 &
        model_pid=$!
    fi
    if [ ! -x $work/bin/llama-server ] || [ ! -f /tmp/site-llama/llama_cpp/__init__.py ]; then
        stamp "building llama-cpp-python with CUDA (sm_90) and llama-server"
        rm -rf $work/src $work/skb $work/wheel
        mkdir -p $work/src
        tar xJf build/gpu/llama_cpp_python-0.3.36-trimmed.tar.xz -C $work/src
        local started=$SECONDS
        # FlashAttention kernels off (a third of the CUDA build time); the same library
        # serves every side of the comparisons. mtmd (LLAVA_BUILD) is not needed.
        CMAKE_ARGS="-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_CUDA_FA=OFF \
-DGGML_CUDA_NCCL=OFF -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TOOLS=ON \
-DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
-DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
        CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
            python3 -m pip wheel -v --no-build-isolation --no-deps --no-index \
            -w $work/wheel -C build-dir=$work/skb $work/src/llama_cpp_python-0.3.36 \
            >"$out/build.log" 2>&1 || { tail -60 "$out/build.log"; exit 1; }
        python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site-llama \
            $work/wheel/llama_cpp_python-*.whl
        mkdir -p $work/bin
        ln -sf $work/skb/bin/llama-server $work/bin/llama-server
        stamp "built in $((SECONDS - started)) s: $(ls $work/wheel)"
        ls -la /tmp/site-llama/llama_cpp/lib
    fi
    if [ -n "${model_pid:-}" ]; then wait "$model_pid"; cat "$out/model.log"; fi
    python3 -c "import llama_cpp, grpc; print('llama_cpp', llama_cpp.__version__, \
'gpu offload', llama_cpp.llama_supports_gpu_offload(), 'grpcio', grpc.__version__)"
}

limit() { timeout -k 10 "${STEP_TIMEOUT_S:-$1}" "${@:2}" || echo "== step failed: rc $?"; }

for step in "$@"; do
    stamp "step $step"
    case $step in
    setup) setup ;;
    suite)
        limit 240 python3 -m bench.gpu_suite --model "$model" \
            --llama-server $work/bin/llama-server --out "$out" ${SUITE_ARGS:-}
        ;;
    parity)
        limit 240 python3 -m bench.gpu_parity --model "$model" --tokens 256 \
            --out "$out/gpu_parity.json"
        ;;
    bench)
        limit 420 python3 -m bench.gpu_llamacpp run --build-dir $work --model "$model" \
            --out "$out/gpu_llamacpp.json" ${BENCH_ARGS:-}  # e.g. BENCH_ARGS="--rounds 5"
        ;;
    trace)
        limit 240 python3 -m bench.gpu_trace --llama-server $work/bin/llama-server \
            --model "$model" --out "$out/gpu_trace.json" ${TRACE_ARGS:-}
        ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
    esac
done
stamp done
