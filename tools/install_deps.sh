#!/usr/bin/env bash
# Installs every Debian 12 package Tandem needs to build, test and benchmark.
# Idempotent and quiet: packages already present are skipped; run as root (or with sudo).
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libopenblas-dev                      # cpu backend matmul
  libspdlog-dev libfmt-dev             # logging
  libcli11-dev                         # command line
  nlohmann-json3-dev                   # JSON (bench output, HTTP API)
  libgtest-dev libgmock-dev            # unit tests
  libbenchmark-dev                     # microbenchmarks
  clang libclang-rt-14-dev llvm        # libFuzzer targets (check.sh --fuzz); llvm: llvm-symbolizer for their reports
  ocl-icd-opencl-dev opencl-headers opencl-c-headers clinfo pocl-opencl-icd libclblast-dev   # OpenCL backend
  libvulkan-dev glslang-tools mesa-vulkan-drivers vulkan-tools vulkan-validationlayers   # Vulkan backend
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc openssl   # edge-cloud link (openssl: test certificates)
  libcpp-httplib-dev curl python3-venv # OpenAI-compatible HTTP API (curl and the openai package in its tests)
  python3                              # helper scripts
  nginx-light                          # gRPC load balancer of the failover test (deploy/nginx)
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install_deps: installing ${#missing[@]} packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install_deps: done"
