#!/usr/bin/env bash
# Pushpin alone, started as bench/compare.sh starts it but with a chosen log
# level, one lpload hold run through it, then what its logs say about the
# failures (docs/grip.md, "The 502 under many arriving polls"). Needs
# ./lpload (go build -o lpload ./bench/lpload) and the ports compare.sh uses.
#
#   bash bench/pushpin/hold.sh [LOG_LEVEL=3] [WINDOW=50] [N=10000] [WARM=0]
set -uo pipefail
cd "$(dirname "$0")/../.."
LL=${1:-3}; W=${2:-50}; N=${3:-10000}; WARM=${4:-0}
ulimit -n "$(ulimit -Hn)"
tmp=$(mktemp -d)
mkdir -p "$tmp/pushpin"
sed "s#RUNDIR#$tmp/pushpin#g; s/^log_level=1/log_level=$LL/" bench/pushpin/pushpin.conf >"$tmp/pushpin/pushpin.conf"
sed "s#RUNDIR#$tmp/pushpin#g" bench/pushpin/zurl.conf >"$tmp/pushpin/zurl.conf"
cp bench/pushpin/routes "$tmp/pushpin/"
taskset -c 0 zurl --config="$tmp/pushpin/zurl.conf" >"$tmp/zurl.log" 2>&1 & zp=$!
taskset -c 0 ./lpload grip-origin -listen 127.0.0.1:9190 >"$tmp/origin.log" 2>&1 & op=$!
(cd "$tmp/pushpin" && exec taskset -c 0 pushpin --config "$tmp/pushpin/pushpin.conf") >"$tmp/pushpin.log" 2>&1 & pp=$!
for _ in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:7999/ && curl -s -o /dev/null http://127.0.0.1:9190/stats && break; sleep 0.2; done
taskset -c 1 ./lpload hold -profile pushpin -poll 'http://127.0.0.1:7999/sub/{ch}' -pub 'http://127.0.0.1:9190/pub/{ch}' -origin http://127.0.0.1:9190/stats -window "$W" -warm "$WARM" -n "$N" -channels 1 >"$tmp/result.json" 2>"$tmp/lpload.err"
cat "$tmp/result.json"; tail -2 "$tmp/lpload.err"
kill $pp; sleep 2; kill $op $zp; sleep 1
echo "== logs in $tmp"
for f in "$tmp"/pushpin/*.log; do echo "-- $(basename $f): $(wc -l <$f) lines"; sed -E 's/^\[[A-Z]+\] [0-9-]+ [0-9:.]+ //; s/0x[0-9a-f]+/P/g; s/id=[^ ]+/id=X/g; s/[0-9a-f]{8,}/H/g' "$f" | grep -iv "^$" | sed -E 's/[0-9]+/N/g' | sort | uniq -c | sort -rn | head -25; done
grep -h -o "target error state=[0-9]*, condition=[0-9]*" "$tmp"/pushpin/*.log | sort | uniq -c
