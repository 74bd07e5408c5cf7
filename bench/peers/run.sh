#!/usr/bin/env bash
# Tandem next to llama.cpp on the same GGUF files: installs llama.cpp through PyPI (llama-cpp-python, built from
# source, CPU only, -march=native) into a venv under ~/.cache/tandem/peers, then runs bench/peers/peers.py.
# Optional: nothing in the build or the tests needs it. The first run compiles llama.cpp (~15-40 min on 2 cores).
#
#   bench/peers/run.sh [--build DIR] [peers.py options]       e.g.
#   bench/peers/run.sh --build build --models m_q4_0.gguf m_q8_0.gguf --threads 1,2 --out peers.json
#
# Environment: TANDEM_PEERS_VENV (default ~/.cache/tandem/peers/venv), TANDEM_PEERS_LLAMA_VERSION (default 0.3.36).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${TANDEM_PEERS_VENV:-$HOME/.cache/tandem/peers/venv}"
version="${TANDEM_PEERS_LLAMA_VERSION:-0.3.36}"

build="$repo/build"
args=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --build) build="$2"; shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done

if [[ ! -x "$venv/bin/python" ]]; then
    echo "peers: creating $venv" >&2
    python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import llama_cpp, numpy, gguf" 2>/dev/null; then
    echo "peers: installing llama-cpp-python $version (builds llama.cpp from source, CPU only)" >&2
    # CPU only and tuned for this machine; OpenMP is llama.cpp's default thread pool. No BLAS: llama.cpp's own
    # quantized kernels are what Tandem is compared with. No multimodal library (LLAVA_BUILD), which peers.py never
    # loads: it is a third of the build.
    CMAKE_ARGS="-DGGML_NATIVE=ON -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_OPENCL=OFF \
-DGGML_BLAS=OFF -DGGML_OPENMP=ON -DLLAMA_CURL=OFF -DLLAVA_BUILD=OFF" \
    CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
        "$venv/bin/pip" install --no-cache-dir "llama-cpp-python==$version" numpy gguf
fi

exec "$venv/bin/python" "$here/peers.py" --tandem "$build/tools/tandem" \
    --tandem-bench "$build/bench/tandem-bench" "${args[@]}"
