#!/usr/bin/env bash
# Side-by-side: this plugin, Nchan and Pushpin, same machine, same run, same
# load tool (bench/lpload). Servers are pinned to CPU 0, the load to CPU 1.
#
#   bash bench/compare.sh                 # from the repository root; as root for apt-get
#   N=5000 T=5s bash bench/compare.sh     # smaller run
#   SERVERS="longpoll nchan" bash bench/compare.sh
#   BEFORE=e8a7090 SERVERS="longpoll longpoll-before" bash bench/compare.sh
#   SERVERS="longpoll-grip pushpin" WINDOW=0 bash bench/compare.sh
#
# BEFORE=<git rev> adds the rows longpoll-before and longpoll-park-before:
# Caddy built from that revision (its own build, in a copy of its tree) into
# ./caddy-before, run like the longpoll and longpoll-park rows. Installs nginx + libnginx-mod-nchan and pushpin (+ zurl) from
# Debian when missing and in SERVERS. Configs: bench/Caddyfile,
# bench/nchan/nginx.conf, bench/pushpin/pushpin.conf (+ routes; the GRIP
# origin is lpload grip-origin, pinned with the servers). Results: one JSON
# line per scenario in bench/results/compare-<date>.jsonl, and a table at the
# end.
#
# The GRIP rows, pushpin and longpoll-grip (longpoll_grip, bench/Caddyfile.grip;
# longpoll-grip-park: with park), put the same origin behind the proxy and
# count the poll requests it serves (lpload -origin): the table gives them
# per held poll and per delivered message. Their hold and fan-out polls are
# opened with at most WINDOW of them on their way to the origin at once
# (lpload -window), so that neither meets a burst the other does not:
# Pushpin queues at most 100 requests to its HTTP client (zurl) and answers
# the rest 502. And each burst goes to a channel already held on for WARM
# seconds (lpload -warm: one poll held from WARM before the burst): Pushpin
# asks the origin again for every poll held on a channel in the second after
# its first hold there, 100 at a time, which overflows that queue
# (docs/grip.md, "The 502 under many arriving polls"). WINDOW=0 opens the
# polls all at once and WARM=0 holds no poll before, as for the other rows.
#
# The TLS rows, off by default, poll over TLS the way browsers do, each
# poller on a connection of its own (lpload -insecure -proto): longpoll-h2
# (HTTP/2) and longpoll-h1tls (HTTP/1.1) against bench/Caddyfile.tls,
# longpoll-park-h1tls against bench/Caddyfile.tls-park (park mode parks only
# HTTP/1.x polls: an HTTP/2 one is held as longpoll-h2's is), and nchan-h2,
# nchan-h1tls against bench/nchan/nginx-tls.conf with a self-signed
# certificate made here with openssl. Polls on https://127.0.0.1:8443,
# publishes on plain http as for the other rows. They run the hold
# scenario only: what issue 12 asks is what a held poll costs there.
#   SERVERS="longpoll-h2 longpoll-h1tls longpoll-park-h1tls nchan-h2 nchan-h1tls" bash bench/compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-10000}            # held polls (hold: on 1 channel; fanout: on 1 channel)
ROUNDS=${ROUNDS:-5}      # fanout rounds
T=${T:-10s}              # throughput duration
COUNT=${COUNT:-1000}     # latency messages
REPEAT=${REPEAT:-3}      # fanout, throughput and latency runs per server (medians)
BEFORE=${BEFORE:-}       # a git revision to compare with: the *-before rows
WINDOW=${WINDOW:-50}     # GRIP rows: polls on their way to the origin at once (0: no bound)
WARM=${WARM:-2}          # GRIP rows: seconds a channel is held on before a burst (0: cold channel)
DEADLINE=${DEADLINE:-900}      # seconds: lpload -deadline, the longest one scenario may take
ROUND_DEADLINE=${ROUND_DEADLINE:-120} # seconds: lpload -round-deadline (a hold's opening, one fan-out round)
SERVERS=${SERVERS:-"bare longpoll${BEFORE:+ longpoll-before} longpoll-park${BEFORE:+ longpoll-park-before} longpoll-gogc400 nchan longpoll-grip pushpin"}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
has() { [[ " $SERVERS " == *" $1 "* ]]; }
if { has longpoll-before || has longpoll-park-before; } && [ -z "$BEFORE" ]; then
	echo "the *-before rows need BEFORE=<git rev>"
	exit 1
fi

need=()
if has nchan || has nchan-h2 || has nchan-h1tls; then
	command -v nginx >/dev/null || need+=(nginx)
	[ -e /usr/lib/nginx/modules/ngx_nchan_module.so ] || need+=(libnginx-mod-nchan)
fi
if has pushpin; then
	command -v pushpin >/dev/null || need+=(pushpin)
	command -v zurl >/dev/null || need+=(zurl)
fi
if [ ${#need[@]} -gt 0 ]; then
	echo "== installing ${need[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
ulimit -n "$(ulimit -Hn)"

echo "== building ./caddy, ./lpload and the bare-Caddy floor (bench/barecaddy)"
go run ./cmd/build-caddy >/dev/null 2>&1
go build -o lpload ./bench/lpload
go build -o barecaddy ./bench/barecaddy
if has longpoll-before || has longpoll-park-before; then
	rev=$(git rev-parse --short --verify "$BEFORE^{commit}")
	echo "== building ./caddy-before from $BEFORE ($rev), as that tree builds ./caddy"
	src=$(mktemp -d)
	git archive "$rev" | tar -x -C "$src"
	if [ -d "$src/cmd/build-caddy" ]; then
		build=(go run ./cmd/build-caddy) # xcaddy.json: writes ./caddy
	else
		build=(go build -o caddy ./cmd/caddy)
	fi
	(cd "$src" && "${build[@]}") >"$src.log" 2>&1 || { tail -30 "$src.log"; rm -rf "$src" "$src.log"; exit 1; }
	cp "$src/caddy" caddy-before
	rm -rf "$src" "$src.log"
fi
mkdir -p bench/results
out=bench/results/compare-$(date -u +%Y%m%dT%H%M%SZ).jsonl
tmp=$(mktemp -d)
pids=()
stop_all() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	pkill -f "pushpin --config $tmp" 2>/dev/null || true
	sleep 1
	pids=()
}
trap 'stop_all; rm -rf "$tmp"' EXIT
srv() { exec taskset -c "$SERVER_CPU" "$@"; } # exec: $! is the server itself
# No scenario may hang the run: lpload gives up (a failure, recorded) at its
# deadlines, and timeout(1) ends it should it not.
load() {
	local sc=$1
	shift
	taskset -c "$LOAD_CPU" timeout -k 10 $((DEADLINE + 120)) \
		./lpload "$sc" "$@" -deadline "${DEADLINE}s" -round-deadline "${ROUND_DEADLINE}s"
}
# record SCENARIO FLAGS...: runs lpload, files its result under the server's name.
record() {
	local sc=$1
	shift
	local failed=""
	load "$sc" "$@" >"$tmp/result.json" || failed='"failed":true,'
	if grep -q '^{' "$tmp/result.json"; then
		# A failed run keeps its figures (lost messages, say), marked failed.
		sed "s/\"profile\":\"[^\"]*\"/\"profile\":\"$s\"/; s/^{/{$failed/" "$tmp/result.json" >>"$out"
	else
		echo "{\"profile\":\"$s\",\"scenario\":\"$sc\",\"failed\":true}" >>"$out"
	fi
}
# The GRIP rows' lpload flags: count the origin's poll requests, bound the
# polls on their way to it and warm the channel (hold, fanout).
GRIP=(-origin http://127.0.0.1:9190/stats -window "$WINDOW" -warm "${WARM}s")
wait_http() { for _ in $(seq 200); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; echo "$1 did not come up"; exit 1; }
# wait_tls URL: until a TLS handshake there succeeds (Caddy gets its
# internal certificate in the background after it starts); any status.
wait_tls() { for _ in $(seq 300); do curl -sk -o /dev/null "$1" && return 0; sleep 0.1; done; echo "$1: no TLS handshake"; exit 1; }

# start_server NAME: starts it pinned, waits until it answers, and sets P
# (lpload's flags for it) and rss (its processes, for hold).
start_server() {
	case $1 in
	bare) # the floor: Caddy parking each request on a Go channel
		srv ./barecaddy run --config bench/Caddyfile.bare --adapter caddyfile >"$tmp/bare.log" 2>&1 &
		pids+=($!)
		wait_http http://127.0.0.1:8281/pub/ready
		P=(-profile bare -poll 'http://127.0.0.1:8280/sub/{ch}' -pub 'http://127.0.0.1:8281/pub/{ch}')
		rss=$(pgrep -d, -f "barecaddy run --config")
		;;
	longpoll | longpoll-park | longpoll-gogc400 | longpoll-before | longpoll-park-before)
		cfg=bench/Caddyfile; [[ $1 == longpoll-park* ]] && cfg=bench/Caddyfile.park
		# longpoll-gogc400: the default mode with the Go GC tuned to
		# trade memory for CPU (GOGC=400; Caddy's default is 100).
		gogc=100; [ "$1" = longpoll-gogc400 ] && gogc=400
		# longpoll-before, longpoll-park-before: Caddy built from $BEFORE.
		bin=caddy; [[ $1 == *-before ]] && bin=caddy-before
		GOGC=$gogc srv "./$bin" run --config "$cfg" --adapter caddyfile >"$tmp/caddy.log" 2>&1 &
		pids+=($!)
		wait_http http://127.0.0.1:8081/publish/ready
		P=(-profile longpoll -poll 'http://127.0.0.1:8080/poll/{ch}' -pub 'http://127.0.0.1:8081/publish/{ch}')
		rss=$(pgrep -d, -f "$bin run --config $cfg")
		;;
	longpoll-grip | longpoll-grip-park) # Caddy in Pushpin's place, same origin
		cfg=bench/Caddyfile.grip; [ "$1" = longpoll-grip-park ] && cfg=bench/Caddyfile.grip-park
		srv ./lpload grip-origin -listen 127.0.0.1:9190 -pushpin http://127.0.0.1:8081/publish/ >"$tmp/origin.log" 2>&1 &
		pids+=($!)
		srv ./caddy run --config "$cfg" --adapter caddyfile >"$tmp/caddy.log" 2>&1 &
		pids+=($!)
		wait_http http://127.0.0.1:9190/pub/ready
		wait_http http://127.0.0.1:8081/publish/ready
		P=(-profile pushpin -poll 'http://127.0.0.1:8080/sub/{ch}' -pub 'http://127.0.0.1:9190/pub/{ch}' "${GRIP[@]}")
		rss=$(pgrep -d, -f "caddy run --config $cfg|lpload grip-origin")
		;;
	nchan)
		mkdir -p "$tmp/nginx/tmp"
		srv nginx -p "$tmp/nginx" -c "$PWD/bench/nchan/nginx.conf" >"$tmp/nginx.log" 2>&1 &
		pids+=($!)
		wait_http http://127.0.0.1:8181/pub/ready
		P=(-profile nchan -poll 'http://127.0.0.1:8180/sub/{ch}' -pub 'http://127.0.0.1:8181/pub/{ch}')
		rss=$(pgrep -d, -f "nginx: (master|worker)")
		;;
	longpoll-h2 | longpoll-h1tls | longpoll-park-h1tls) # polls over TLS
		cfg=bench/Caddyfile.tls; [[ $1 == longpoll-park-* ]] && cfg=bench/Caddyfile.tls-park
		proto=h2; [[ $1 == *-h1tls ]] && proto=h1
		# The internal CA and certificate go to the run's directory.
		XDG_DATA_HOME="$tmp/caddy-data" srv ./caddy run --config "$cfg" --adapter caddyfile >"$tmp/caddy.log" 2>&1 &
		pids+=($!)
		rss=$!
		wait_http http://127.0.0.1:8081/publish/ready
		wait_tls https://127.0.0.1:8443/
		P=(-profile longpoll -poll 'https://127.0.0.1:8443/poll/{ch}' -insecure -proto "$proto" -pub 'http://127.0.0.1:8081/publish/{ch}')
		;;
	nchan-h2 | nchan-h1tls) # subscribers over TLS
		proto=h2; [ "$1" = nchan-h1tls ] && proto=h1
		d=$tmp/nginx-tls
		mkdir -p "$d/tmp"
		[ -e "$d/cert.pem" ] || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
			-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -keyout "$d/key.pem" -out "$d/cert.pem" 2>/dev/null
		cp bench/nchan/nginx-tls.conf "$d/" # nginx finds the certificate beside it
		srv nginx -p "$d" -c "$d/nginx-tls.conf" >"$tmp/nginx.log" 2>&1 &
		pids+=($!)
		wait_http http://127.0.0.1:8181/pub/ready
		wait_tls https://127.0.0.1:8443/
		P=(-profile nchan -poll 'https://127.0.0.1:8443/sub/{ch}' -insecure -proto "$proto" -pub 'http://127.0.0.1:8181/pub/{ch}')
		rss=${pids[-1]},$(pgrep -d, -P "${pids[-1]}") # this master and its worker
		;;
	pushpin)
		mkdir -p "$tmp/pushpin"
		sed "s#RUNDIR#$tmp/pushpin#g" bench/pushpin/pushpin.conf >"$tmp/pushpin/pushpin.conf"
		sed "s#RUNDIR#$tmp/pushpin#g" bench/pushpin/zurl.conf >"$tmp/pushpin/zurl.conf"
		cp bench/pushpin/routes "$tmp/pushpin/"
		srv zurl --config="$tmp/pushpin/zurl.conf" >"$tmp/zurl.log" 2>&1 &
		pids+=($!)
		srv ./lpload grip-origin -listen 127.0.0.1:9190 >"$tmp/origin.log" 2>&1 &
		pids+=($!)
		(cd "$tmp/pushpin" && exec taskset -c "$SERVER_CPU" pushpin --config "$tmp/pushpin/pushpin.conf") >"$tmp/pushpin.log" 2>&1 &
		pids+=($!)
		wait_http http://127.0.0.1:9190/pub/ready
		wait_http http://127.0.0.1:7999/
		P=(-profile pushpin -poll 'http://127.0.0.1:7999/sub/{ch}' -pub 'http://127.0.0.1:9190/pub/{ch}' "${GRIP[@]}")
		rss=$(pgrep -d, -f "condure|pushpin-proxy|pushpin-handler|zurl --config=$tmp|lpload grip-origin")
		;;
	*) echo "unknown server $1"; exit 1 ;;
	esac
}

for s in $SERVERS; do
	echo "== $s, hold"
	# A failed scenario is recorded, not fatal.
	start_server "$s"
	record hold "${P[@]}" -n "$N" -channels 1 -pid "$rss"
	stop_all
done
# Fan-out, throughput and latency vary from run to run on a shared machine:
# they are run REPEAT times, the servers taking turns, and the table shows
# medians.
for r in $(seq "$REPEAT"); do
	for s in $SERVERS; do
		case $s in *-h2 | *-h1tls) continue ;; esac # the TLS rows: hold only
		echo "== $s, fanout, throughput and latency, run $r of $REPEAT"
		start_server "$s"
		record fanout "${P[@]}" -n "$N" -rounds "$ROUNDS"
		if [ "$s" != bare ]; then # the floor keeps no messages: nothing to follow
			record throughput "${P[@]}" -s 100 -channels 10 -p 4 -t "$T"
			record latency "${P[@]}" -count "$COUNT"
		fi
		stop_all
	done
done

echo "== results: $out ($(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); servers on CPU $SERVER_CPU, load on CPU $LOAD_CPU; GRIP rows' WINDOW=$WINDOW, WARM=${WARM}s)${rev:+; longpoll-before is $rev}"
python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
by = {}
for r in rows:
    by.setdefault(r["profile"], {}).setdefault(r["scenario"], []).append(r)
def med(runs, key):
    vals = sorted(r[key] for r in runs if not r.get("failed") and key in r)
    return vals[(len(vals) - 1) // 2] if vals else None
def merged(runs):
    # One row of medians (each figure on its own) over the runs that passed;
    # failed if every run failed; correctness counts are summed over all runs,
    # failed ones included (a run fails when it loses a message).
    if not runs:
        return {}
    ok = [r for r in runs if not r.get("failed")]
    if not ok:
        # errors/polls: failed polls over polls tried, summed (hold, fanout).
        return {"failed": True, **{k: sum(r.get(k, 0) for r in runs) for k in ("lost", "duplicated", "out_of_order", "errors", "polls")}}
    out = {k: med(ok, k) for k in ok[0] if isinstance(ok[0][k], (int, float)) and not isinstance(ok[0][k], bool)}
    for k in ("lost", "duplicated", "out_of_order", "errors"):
        if k in ok[0]:
            out[k] = sum(r.get(k, 0) for r in runs)
    out["runs"], out["failed_runs"] = len(runs), len(runs) - len(ok)
    return out
def cost(x, key):
    # Origin poll requests per held poll (hold) or per delivered message.
    v = x.get(key)
    return "—" if v is None or x.get("failed") else f"{v:.2f}"
print("| server | KB RSS per held poll (hold errors) | fanout p50 / p99 / max ms | publishes/s (lost/dup/ooo) | deliveries/s | latency p50 / p99 / max ms | origin requests per held poll / per delivery: fanout / throughput / latency |")
print("|---|---|---|---|---|---|---|")
for p, s in by.items():
    h, fo, t, la = (merged(s.get(k, [])) for k in ("hold", "fanout", "throughput", "latency"))
    failed = lambda x: f'failed ({x["errors"]:,} of {x["polls"]:,} polls failed)' if x.get("errors") and x.get("polls") else "failed"
    hold = "—" if not h else failed(h) if h.get("failed") else f'{h.get("rss_bytes_per_held_poll", 0)/1000:.1f} ({h.get("errors")})'
    bad = lambda x: f' [{x["failed_runs"]} of {x["runs"]} runs failed]' if x.get("failed_runs") else ""
    fan = "—" if not fo else failed(fo) if fo.get("failed") else f'{fo.get("p50_ms")} / {fo.get("p99_ms")} / {fo.get("max_ms")}{bad(fo)}'
    thr = "—" if not t else f'failed ({t.get("lost")}/{t.get("duplicated")}/{t.get("out_of_order")})' if t.get("failed") else f'{t.get("publishes_per_second", 0):,.0f} ({t.get("lost")}/{t.get("duplicated")}/{t.get("out_of_order")}){bad(t)}'
    dps = "—" if not t or t.get("failed") else f'{t.get("deliveries_per_second", 0):,.0f}'
    lat = "—" if not la else "failed" if la.get("failed") else f'{la.get("p50_ms")} / {la.get("p99_ms")} / {la.get("max_ms")}{bad(la)}'
    grip = "—" if "origin_requests" not in {**h, **fo, **t, **la} else " / ".join(
        [cost(h, "origin_requests_per_held_poll")] + [cost(x, "origin_requests_per_delivery") for x in (fo, t, la)])
    print(f"| {p} | {hold} | {fan} | {thr} | {dps} | {lat} | {grip} |")
print(f"(fanout, throughput and latency: medians of each figure over the runs; lost/dup/ooo summed over them)")
PY
