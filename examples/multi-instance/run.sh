#!/usr/bin/env bash
# Two caddy-longpoll instances behind a load balancer, one Redis.
# From the repository root:  bash examples/multi-instance/run.sh
# Needs redis-server; builds ./caddy if missing. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -x ./caddy ] || go run ./cmd/build-caddy
dir=examples/multi-instance
export REDIS_ADDR=${REDIS_ADDR:-127.0.0.1:6399}
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT
redis-server --port "${REDIS_ADDR##*:}" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
pids+=($!)
until redis-cli -p "${REDIS_ADDR##*:}" ping >/dev/null 2>&1; do sleep 0.1; done
POLL_PORT=9001 PUBLISH_PORT=9101 ./caddy run --config $dir/instance.Caddyfile 2>/dev/null & pids+=($!)
POLL_PORT=9002 PUBLISH_PORT=9102 ./caddy run --config $dir/instance.Caddyfile 2>/dev/null & pids+=($!)
./caddy run --config $dir/lb.Caddyfile 2>/dev/null & pids+=($!)
until curl -fs http://127.0.0.1:8081/publish/chat-1 >/dev/null; do sleep 0.1; done

cursor=$(curl -s http://127.0.0.1:9101/publish/chat-1 | sed 's/.*"cursor":"\([^"]*\)".*/\1/')
echo "cursor from instance A: $cursor"
echo "polling instance B with it (held until a publish)..."
curl -s "http://127.0.0.1:9002/chat/poll?chat_id=1&since=$cursor" &
poll=$!
sleep 0.5
echo "publishing through instance A:"
curl -s -X POST -H 'Content-Type: application/json' -d '{"user":"ann","text":"hi from A"}' http://127.0.0.1:9101/publish/chat-1
wait $poll
echo
echo "Running: polls on http://127.0.0.1:8080/chat/poll?chat_id=N, publishes on http://127.0.0.1:8081/publish/chat-N."
echo "Ctrl-C to stop."
wait
