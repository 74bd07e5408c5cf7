#!/usr/bin/env bash
# Runs N `tandem serve` replicas and nginx in front of them (deploy/nginx/tandem.conf.template) on loopback, as
# the current user: nginx gets a private prefix (-p DIR -c DIR/nginx.conf), its pid, logs and temp files stay in
# DIR. Stays in the foreground until SIGINT/SIGTERM, then stops everything it started.
#
#   deploy/nginx/run_local.sh [--tandem BIN] [--replicas N] [--port P] [--dir DIR] [-- extra `tandem serve` args]
#
# The edges connect to 127.0.0.1:P (P = 0: a free port, printed). The token is $TANDEM_TOKEN, or a random one
# written to DIR/state. DIR/state (sourceable shell) appears once everything listens: LB_PORT, TOKEN,
# REPLICA_PORTS, REPLICA_PIDS, NGINX_PID, DIR; DIR/replica<i>.log and DIR/access.log are the logs.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
tandem="${TANDEM_BIN:-$root/build/tools/tandem}"
replicas=3
port=0
dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --tandem) tandem="$2"; shift 2 ;;
    --replicas) replicas="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --dir) dir="$2"; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "run_local.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  echo "run_local.sh: nginx is not installed (apt-get install nginx-light)" >&2
  exit 3
fi
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"
if [ ! -x "$tandem" ]; then
  echo "run_local.sh: no tandem binary at '$tandem' (build tandem_cli, or pass --tandem)" >&2
  exit 2
fi
case "$replicas" in ''|*[!0-9]*|0) echo "run_local.sh: --replicas must be a positive number" >&2; exit 2 ;; esac
[ -n "$dir" ] || dir="$(mktemp -d "${TMPDIR:-/tmp}/tandem-lb.XXXXXX")"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
token="${TANDEM_TOKEN:-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')}"

pids=()
nginx_pid=""
cleanup() {
  trap - EXIT INT TERM
  [ -n "$nginx_pid" ] && kill -QUIT "$nginx_pid" 2>/dev/null || true
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 0' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() {  # $1 = log file, $2 = pid: prints the port the replica listens on
  for _ in $(seq 1 600); do
    p=$(sed -n 's/.*listening on port \([0-9]*\).*/\1/p' "$1" | head -1)
    [ -n "$p" ] && { echo "$p"; return 0; }
    kill -0 "$2" 2>/dev/null || { cat "$1" >&2; return 1; }
    sleep 0.1
  done
  echo "run_local.sh: replica did not start within 60 s" >&2
  return 1
}

ports=()
for i in $(seq 0 $((replicas - 1))); do
  TANDEM_TOKEN="$token" "$tandem" serve --listen 127.0.0.1:0 --stats-interval 0 "$@" 2>"$dir/replica$i.log" &
  pids+=($!)
done
servers=""
for i in $(seq 0 $((replicas - 1))); do
  p=$(wait_port "$dir/replica$i.log" "${pids[$i]}") || { echo "run_local.sh: replica $i failed" >&2; exit 1; }
  ports+=("$p")
  servers+="        server 127.0.0.1:$p max_fails=1 fail_timeout=10s;"$'\n'
done
[ "$port" = 0 ] && port=$(free_port)
user_line=""
[ "$(id -u)" = 0 ] && user_line="user root;"
# Fill the template: @SERVERS@ is several lines, the rest are single values.
python3 - "$here/tandem.conf.template" "$dir/nginx.conf" "$dir" "127.0.0.1:$port" "$servers" "$user_line" <<'PY'
import sys
src, dst, prefix, listen, servers, user = sys.argv[1:7]
text = open(src).read()
for k, v in (("@PREFIX@", prefix), ("@LISTEN@", listen), ("@SERVERS@", servers.rstrip("\n")), ("@USER@", user)):
    text = text.replace(k, v)
open(dst, "w").write(text)
PY
"$nginx_bin" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" -t -q || { cat "$dir/error.log" >&2; exit 1; }
"$nginx_bin" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" -g 'daemon off;' &
nginx_pid=$!
for _ in $(seq 1 100); do
  python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2)' "$port" \
    2>/dev/null && break
  kill -0 "$nginx_pid" 2>/dev/null || { cat "$dir/error.log" >&2; exit 1; }
  sleep 0.1
done
cat >"$dir/state.tmp" <<ST
DIR=$dir
LB_PORT=$port
TOKEN=$token
REPLICA_PORTS="${ports[*]}"
REPLICA_PIDS="${pids[*]}"
NGINX_PID=$nginx_pid
ST
mv "$dir/state.tmp" "$dir/state"
echo "run_local.sh: nginx on 127.0.0.1:$port -> replicas on ports ${ports[*]} (pids ${pids[*]}); logs in $dir;" \
  "Ctrl-C stops" >&2
wait "$nginx_pid"
