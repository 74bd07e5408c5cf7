#!/usr/bin/env bash
# A real network path for edge-cloud runs: two network namespaces joined by a veth pair, with tc netem adding
# delay, jitter, loss and a rate cap in both directions (the kernel's path, unlike the in-process emulator of
# `tandem edge --delay-ms`). Needs root, iproute2 and the sch_netem kernel module (a container without it
# fails at `tc qdisc add ... netem` with "Specified qdisc kind is unknown"; use the emulator there).
#
#   tools/netem.sh up [DELAY_MS] [JITTER_MS] [LOSS_PCT] [RATE]   # e.g. up 25 2 0.1 100mbit
#   ip netns exec tandem-cloud build/tools/tandem serve --listen 10.77.0.1:50051 --token T &
#   ip netns exec tandem-edge  build/tools/tandem edge --server 10.77.0.1:50051 --token T
#   tools/netem.sh down
set -euo pipefail
cmd=${1:-}
case "$cmd" in
  up)
    delay=${2:-25}; jitter=${3:-0}; loss=${4:-0}; rate=${5:-1gbit}
    trap '"$0" down' ERR  # leave nothing half set up
    ip netns add tandem-cloud
    ip netns add tandem-edge
    ip link add tandem-c type veth peer name tandem-e
    ip link set tandem-c netns tandem-cloud
    ip link set tandem-e netns tandem-edge
    ip -n tandem-cloud addr add 10.77.0.1/24 dev tandem-c
    ip -n tandem-edge addr add 10.77.0.2/24 dev tandem-e
    for ns in tandem-cloud tandem-edge; do ip -n "$ns" link set lo up; done
    ip -n tandem-cloud link set tandem-c up
    ip -n tandem-edge link set tandem-e up
    # One-way delay on each side's egress: a round trip costs 2 x delay.
    for pair in tandem-cloud:tandem-c tandem-edge:tandem-e; do
      ip netns exec "${pair%%:*}" tc qdisc add dev "${pair##*:}" root netem delay "${delay}ms" "${jitter}ms" loss "${loss}%" rate "$rate"
    done
    echo "netem: 10.77.0.1 (tandem-cloud) <-> 10.77.0.2 (tandem-edge), ${delay} ms one way, jitter ${jitter} ms, loss ${loss}%, rate ${rate}"
    ;;
  down)
    ip netns del tandem-cloud 2>/dev/null || true
    ip netns del tandem-edge 2>/dev/null || true
    ;;
  *)
    sed -n '2,10p' "$0"
    exit 1
    ;;
esac
