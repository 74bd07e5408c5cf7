#!/usr/bin/env bash
# Builds Tandem and runs the whole test suite: installs Debian dependencies if missing, configures,
# builds, runs ctest. Usage: tools/check.sh [--sanitize] [--fuzz] [--tsan]
#   --sanitize  AddressSanitizer + UndefinedBehaviorSanitizer build in build-asan/ (instead of build/)
#   --fuzz      also build the libFuzzer targets with clang (build-fuzz/) and run each for a short smoke time
#   --tsan      ThreadSanitizer build of the collaboration tests only (build-tsan/)
set -euo pipefail
cd "$(dirname "$0")/.."

sanitize=0
fuzz=0
tsan=0
for arg in "$@"; do
  case "$arg" in
    --sanitize) sanitize=1 ;;
    --fuzz) fuzz=1 ;;
    --tsan) tsan=1 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "check.sh: unknown option '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

tools/install_deps.sh
jobs=$(nproc)

if [ "$fuzz" = 1 ]; then
  # The fuzz targets run on the cpu backend only, so the GPU backends are left out of this build. Each target
  # runs 20 s from its seed corpus (tests/fuzz/corpus/<target>); a finding fails the check and its input is
  # saved in build-fuzz/tests/fuzz/fuzz_<target>_work/ (crash-*, leak-*, oom-*, timeout-*).
  CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTANDEM_FUZZ=ON \
    -DTANDEM_BUILD_TESTS=ON -DTANDEM_OPENCL=OFF -DTANDEM_VULKAN=OFF >/dev/null
  cmake --build build-fuzz -j "$jobs" --target fuzz_targets
  ctest --test-dir build-fuzz -L fuzz --output-on-failure
  exit 0
fi

if [ "$tsan" = 1 ]; then
  # ThreadSanitizer on the multi-threaded collaboration layer (server, scheduler, edges, HTTP API).
  cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTANDEM_SANITIZE_THREAD=ON \
    -DTANDEM_OPENCL=OFF -DTANDEM_VULKAN=OFF >/dev/null
  cmake --build build-tsan -j "$jobs" --target test_collab test_collab_http test_collab_faults test_collab_security test_collab_distill tandem_cli
  OPENBLAS_NUM_THREADS=1 TSAN_OPTIONS="halt_on_error=1 suppressions=$PWD/tests/tsan.supp" ctest --test-dir build-tsan \
    -R "^(collab_|http_loopback|chat_template)" --output-on-failure --timeout 900
  exit 0
fi

if [ "$sanitize" = 1 ]; then
  dir=build-asan
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTANDEM_SANITIZE=ON >/dev/null
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
else
  dir=build
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$dir" -j "$jobs"
# The official openai package for the HTTP API test, from PyPI into a venv (best effort: without it that test
# is skipped and says why).
if ! "$dir/pyenv/bin/python" -c "import openai" >/dev/null 2>&1; then
  (python3 -m venv "$dir/pyenv" && "$dir/pyenv/bin/pip" install -q openai) >/dev/null 2>&1 ||
    echo "check: could not install the openai Python package; its test will be skipped"
fi
# kubernetes-validate for the offline schema check of deploy/k8s (test k8s_manifests; skipped without it).
if ! "$dir/pyenv/bin/python" -c "import kubernetes_validate" >/dev/null 2>&1; then
  (python3 -m venv "$dir/pyenv" && "$dir/pyenv/bin/pip" install -q kubernetes-validate) >/dev/null 2>&1 ||
    echo "check: could not install the kubernetes-validate Python package; the k8s_manifests test will be skipped"
fi
export TANDEM_PYTHON="$PWD/$dir/pyenv/bin/python"
ctest --test-dir "$dir" -j "$jobs" --output-on-failure --timeout 900 -LE "slow|fuzz"
