#!/usr/bin/env bash
# The main job on the bundled models: installs dependencies if missing, builds Tandem, starts a
# verification server (`tandem serve`, target stories260K) and an edge client (`tandem edge`, draft
# llama2xs_tinystories_279K) on loopback, streams the story the pair writes, and ends with the
# statistics of both sides. Extra arguments go to `tandem edge` (e.g. --spec chain, --temp 0.8, -p "Once").
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install_deps.sh >/dev/null
cmake -S . -B "${TANDEM_BUILD_DIR:-build}" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "${TANDEM_BUILD_DIR:-build}" -j "$(nproc)" --target tandem_cli >/dev/null

tandem="${TANDEM_BUILD_DIR:-build}"/tools/tandem
token=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
log=$(mktemp)
TANDEM_TOKEN=$token "$tandem" serve --listen 127.0.0.1:0 --stats-interval 0 2>"$log" &
server=$!
trap 'kill -INT $server 2>/dev/null || true; rm -f "$log"' EXIT
port=""
for _ in $(seq 1 100); do
  port=$(sed -n 's/.*listening on port \([0-9]*\).*/\1/p' "$log")
  [ -n "$port" ] && break
  kill -0 $server 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$port" ] || { echo "demo: the server did not start" >&2; cat "$log" >&2; exit 1; }
echo "demo: tandem serve (stories260K) on 127.0.0.1:$port; tandem edge (llama2xs_tinystories_279K) drafts token trees" >&2
TANDEM_TOKEN=$token "$tandem" edge --server "127.0.0.1:$port" "$@"
kill -INT $server
wait $server || true
grep "tandem serve:" "$log" | tail -1 >&2
