#!/usr/bin/env bash
# Measures what the Redis store adds over the memory store: publish→delivery
# latency (lpload latency) against the same Caddy config with either store,
# and Redis round trips per poll (scripts Redis ran during lpload throughput,
# less one per publish, divided by the polls answered; and for polls that
# arrive with the current cursor, during lpload hold).
#
#   bash bench/redis-vs-memory.sh            # from the repository root
#
# Starts its own redis-server on port ${PORT:-6391} (no persistence) and
# Caddy on :8080/:8081, as bench/Caddyfile expects.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-6391}
COUNT=${COUNT:-1000}
go run ./cmd/build-caddy >/dev/null
go build -o lpload ./bench/lpload
tmp=$(mktemp -d)
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$tmp" --daemonize no >"$tmp/redis.log" &
redis_pid=$!
caddy_pid=
cleanup() { [ -n "$caddy_pid" ] && kill "$caddy_pid" 2>/dev/null; kill "$redis_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
until redis-cli -p "$PORT" ping >/dev/null 2>&1; do sleep 0.1; done

run_caddy() {
	LONGPOLL_REDIS=127.0.0.1:$PORT ./caddy run --config "$1" >"$tmp/caddy.log" 2>&1 &
	caddy_pid=$!
	until curl -fs http://127.0.0.1:8081/publish/warmup >/dev/null; do sleep 0.1; done
}
stop_caddy() { kill "$caddy_pid"; wait "$caddy_pid" 2>/dev/null || true; caddy_pid=; }
scripts() { redis-cli -p "$PORT" info commandstats | tr -d '\r' | awk -F'[=,:]' '/^cmdstat_eval(sha)?:/ {n += $3} END {print n + 0}'; }

for store in memory redis; do
	cfg=bench/Caddyfile; [ "$store" = redis ] && cfg=bench/Caddyfile.redis
	run_caddy "$cfg"
	echo "== $store: latency ($COUNT publishes, one every 10 ms)"
	./lpload latency -count "$COUNT"
	if [ "$store" = redis ]; then
		echo "== redis: round trips per poll (throughput S=100 C=10 P=4, 5 s)"
		before=$(scripts)
		out=$(./lpload throughput -s 100 -channels 10 -p 4 -t 5s)
		after=$(scripts)
		echo "$out"
		python3 - "$before" "$after" "$out" <<'PY'
import json, sys
before, after, out = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3].strip().splitlines()[-1])
reads = after - before - out["published"]
print(json.dumps({"scripts": after - before, "publishes": out["published"], "polls_answered": out["polls_answered"],
                  "reads": reads, "redis_round_trips_per_poll": round(reads / out["polls_answered"], 3)}))
PY
		echo "== redis: round trips per poll arriving with the current cursor (hold 1000 polls on 10 channels)"
		before=$(scripts)
		./lpload hold -n 1000 -channels 10
		after=$(scripts)
		echo "{\"scripts\": $((after - before)), \"of_which_reading_the_10_start_cursors\": 10, \"held_polls\": 1000}"
	fi
	stop_caddy
done
