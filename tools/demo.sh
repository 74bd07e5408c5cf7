#!/usr/bin/env bash
# The main job on the bundled model: installs dependencies if missing, builds Tandem, and generates a
# story with stories260K. Extra arguments go to `tandem generate` (e.g. --temp 0, -p "Once upon").
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install_deps.sh >/dev/null
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" --target tandem_cli >/dev/null
exec build/tools/tandem generate "$@"
