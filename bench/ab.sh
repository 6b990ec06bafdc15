#!/usr/bin/env bash
# A/B throughput of ./caddy-before against ./caddy, alternating runs, so that
# what one run leaves behind (sockets in TIME_WAIT, a warm page cache) falls
# on both sides alike. Build both first: BEFORE=<rev> bash bench/compare.sh
# (with SERVERS="longpoll-before" for a short run) leaves ./caddy-before.
#
#   bash bench/ab.sh                                  # park mode, 3 rounds
#   CONFIG=bench/Caddyfile ROUNDS=5 bash bench/ab.sh  # the default mode
#
# Prints one line per run: binary, publishes/s, deliveries/s, lost, duplicated.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${CONFIG:-bench/Caddyfile.park}
ROUNDS=${ROUNDS:-3}
T=${T:-10s}
for f in caddy caddy-before lpload; do
	[ -x "./$f" ] || { echo "./$f missing: run bench/compare.sh (with BEFORE=<rev>) first"; exit 1; }
done
ulimit -n "$(ulimit -Hn)"
for _ in $(seq "$ROUNDS"); do
	for bin in caddy-before caddy; do
		taskset -c 0 "./$bin" run --config "$CONFIG" --adapter caddyfile >/dev/null 2>&1 &
		pid=$!
		for _ in $(seq 100); do
			curl -sf -o /dev/null http://127.0.0.1:8081/publish/ready && break
			sleep 0.1
		done
		taskset -c 1 ./lpload throughput -profile longpoll -poll 'http://127.0.0.1:8080/poll/{ch}' \
			-pub 'http://127.0.0.1:8081/publish/{ch}' -s 100 -channels 10 -p 4 -t "$T" 2>/dev/null |
			python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); print(sys.argv[1], round(d["publishes_per_second"]), round(d["deliveries_per_second"]), d["lost"], d["duplicated"])' "$bin"
		kill "$pid"
		wait "$pid" 2>/dev/null || true
		sleep 2
	done
done
