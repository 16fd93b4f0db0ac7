#!/usr/bin/env bash
# Prepares build/gpu (an ignored folder, carried to the GPU machine) on a machine with a
# network: what bench/gpu_device.sh needs where nothing can be downloaded.
#
#   build/gpu/llama_cpp_python-0.3.36-trimmed.tar.xz  the lock's llama-cpp-python sdist
#       without its docs, tests, examples, .git and the llama.cpp parts no CUDA build
#       reads (models, docs, tests, gguf-py, examples, the other ggml backends): 217 MB
#       unpacked becomes 38 MB, 6.4 MB packed;
#   build/gpu/whl  cp312 manylinux wheels of every package the lock pins for the
#       services, exactly those versions (the image's grpcio 1.84.0 is older than the
#       generated bindings accept, and it lacks most of the rest); numpy, PyTorch,
#       scikit-build-core, CMake and ninja come from the image. 69 wheels, 40 MB.
#
# Everything carried (the repository, build/gpu) must stay under the device's 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
version=0.3.36
dest=build/gpu
mkdir -p $dest/whl
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

if [ ! -f $dest/llama_cpp_python-$version-trimmed.tar.xz ]; then
    python3 -m pip download -q --no-deps --no-binary :all: -d "$scratch" \
        llama-cpp-python==$version
    tar xzf "$scratch"/llama_cpp_python-$version.tar.gz -C "$scratch"
    (
        cd "$scratch/llama_cpp_python-$version"
        rm -rf docs examples tests docker .git .github
        cd vendor/llama.cpp
        rm -rf models/*.gguf docs benches media .github .devops .git tests gguf-py \
            conversion examples pocs
        for d in ggml/src/ggml-*/; do
            case $d in
            *ggml-cpu/ | *ggml-cuda/ | *ggml-blas/ | *ggml-rpc/) ;;
            *) rm -rf "$d" ;;
            esac
        done
    )
    tar cJf $dest/llama_cpp_python-$version-trimmed.tar.xz -C "$scratch" \
        llama_cpp_python-$version
fi

# The lock's versions of every third-party package, less the build and code-generation
# tools, the bundled default model and what the image has (numpy) or the device builds
# (llama-cpp-python).
uv export --frozen --no-hashes --all-packages --all-extras --no-emit-workspace --no-dev |
    grep -v '^\s*#\|^-e\|^\s*$' | sed 's/ ;.*//' |
    grep -v -E '^(black|datamodel-code-generator|grpcio-tools|isort|mypy-protobuf|types-protobuf|gemma3|llama-cpp-python|numpy|setuptools|trustme|hf-xet|genson|inflect|argcomplete|pytokens|pathspec|platformdirs|typeguard|more-itertools|jaraco|colorama)' \
        >"$scratch/requirements.txt"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --abi cp312 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_34_x86_64 --platform any \
    -d $dest/whl -r "$scratch/requirements.txt"
echo "build/gpu: $(ls $dest/whl | wc -l) wheels, $(du -sh $dest | cut -f1)"
