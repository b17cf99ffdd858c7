#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The main job, end to end on one machine: sets up and builds sidetap, starts a
# demo upstream (Python's http.server), puts sidetap in front of it in reverse
# mode with capture on, sends a few requests through it, shows what it
# forwarded, then what it captured (sidetapctl dump of the uploader's files).
#   sudo tools/demo/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

UPSTREAM_PORT=${UPSTREAM_PORT:-18080}
PROXY_PORT=${PROXY_PORT:-14143}
ADMIN_PORT=${ADMIN_PORT:-14191}

cmake/deps.sh build test
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target sidetap sidetap-uploader sidetapctl >/dev/null

for port in "$UPSTREAM_PORT" "$PROXY_PORT" "$ADMIN_PORT"; do
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		echo "demo: port $port is in use; set UPSTREAM_PORT, PROXY_PORT or ADMIN_PORT to free ones" >&2
		exit 1
	fi
done

work=$(mktemp -d /tmp/sidetap-demo.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/site"
printf '<h1>hello from the demo upstream</h1>\n' >"$work/site/index.html"
printf '{"service":"demo","items":[1,2,3]}\n' >"$work/site/data.json"
head -c 1048576 /dev/urandom >"$work/site/blob.bin"

/usr/bin/python3 -m http.server --bind 127.0.0.1 --directory "$work/site" "$UPSTREAM_PORT" \
	>"$work/upstream.log" 2>&1 &
pids+=($!)
build/bin/sidetap --inbound-addr "127.0.0.1:$PROXY_PORT" --inbound-mode reverse \
	--inbound-upstream "127.0.0.1:$UPSTREAM_PORT" --outbound-addr off \
	--admin-addr "127.0.0.1:$ADMIN_PORT" --workers 2 \
	--ring "$work/sidetap.ring" --sink "file:$work/capture" >"$work/sidetap.log" 2>&1 &
sidetap_pid=$!
pids+=("$sidetap_pid")
for _ in $(seq 50); do
	curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null 2>&1 &&
		curl -s -o /dev/null "http://127.0.0.1:$UPSTREAM_PORT/" 2>/dev/null && break
	sleep 0.1
done

echo "== sidetap (reverse mode) :$PROXY_PORT -> demo upstream :$UPSTREAM_PORT"
cat "$work/sidetap.log"
echo
echo "== requests through sidetap"
for req in "GET /" "GET /data.json" "HEAD /data.json" "GET /missing" "POST /data.json"; do
	method=${req%% *}
	path=${req#* }
	if [ "$method" = HEAD ]; then
		out=$(curl -s -I "http://127.0.0.1:$PROXY_PORT$path" | head -1)
	elif [ "$method" = POST ]; then
		out=$(curl -s -o /dev/null -w 'HTTP %{http_code}' -d 'name=demo' "http://127.0.0.1:$PROXY_PORT$path")
	else
		body=$(curl -s -w '\n%{http_code}' "http://127.0.0.1:$PROXY_PORT$path")
		out="HTTP ${body##*$'\n'}  $(printf '%s' "${body%$'\n'*}" | tr -s '\n ' ' ' | cut -c1-60)"
	fi
	printf '%-18s -> %s\n' "$req" "$out"
done
got=$(curl -s "http://127.0.0.1:$PROXY_PORT/blob.bin" | sha256sum | cut -d' ' -f1)
want=$(sha256sum "$work/site/blob.bin" | cut -d' ' -f1)
printf '%-18s -> 1 MiB, sha256 %s (%s)\n' "GET /blob.bin" "${got:0:16}..." \
	"$([ "$got" = "$want" ] && echo "identical to the upstream's file" || echo MISMATCH)"

echo
echo "== what sidetap forwarded (build/bin/sidetapctl stats)"
build/bin/sidetapctl stats --admin "127.0.0.1:$ADMIN_PORT"

echo
echo "== stopping sidetap with SIGTERM"
kill -TERM "$sidetap_pid"
status=0
wait "$sidetap_pid" || status=$?
pids=("${pids[@]/$sidetap_pid/}")
tail -n 2 "$work/sidetap.log"
echo "sidetap exited with status $status (its uploader shipped the last frames first)"

echo
echo "== what sidetap captured: segment files in $work/capture"
ls "$work/capture"
echo
echo "-- sidetapctl dump --type http (one JSON object per frame; here summarised a line each)"
build/bin/sidetapctl dump --type http "$work/capture" | /usr/bin/python3 -c '
import json, sys
for line in sys.stdin:
    f = json.loads(line)
    q, r = f["request"], f["response"]
    print("  %-5s %-15s -> %s %-10s request body %4d B, response body %7d B%s  [conn %d, pair %d]" % (
        q["method"], q["target"], r["status"], r["reason"], q["body_size"], r["body_size"],
        " (truncated)" if r["body_truncated"] else "", f["conn_id"], f["pair"]))'
echo
echo "-- the frame of GET /data.json, whole (each key on a line):"
build/bin/sidetapctl dump --type http "$work/capture" | grep '"target":"/data.json"' |
	grep '"method":"GET"' | /usr/bin/python3 -c '
import json, sys
f = json.loads(sys.stdin.readline())
for k, v in f.items():
    if isinstance(v, dict):
        print("  %s:" % k)
        for k2, v2 in v.items():
            print("      %s: %s" % (k2, json.dumps(v2)))
    else:
        print("  %s: %s" % (k, json.dumps(v)))'

echo
echo "(sidetapctl har $work/capture > demo.har writes the pairs as HAR 1.2 for browser devtools)"
[ "$got" = "$want" ] && [ "$status" -eq 0 ]
