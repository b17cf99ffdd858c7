#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# What sidetap-uploader ships, and what shipping costs the proxy.
#
#   ship   frames/s and uploader CPU per frame draining a ring of FRAMES frames per ring (2
#          rings, BYTES of payload each) with --once: file: sink, a local collector
#          (tests/integration/collector.py, counting only; none and zstd bodies), and
#          librdkafka's mock cluster (perf/upl_bench kafka-mock, in its own process)
#   proxy  wrk -t1 -c50 requests/s through sidetap (reverse mode, capture on, nginx origin with
#          a tiny response) with no uploader (frames stay in the ring, then drop), the file:
#          sink, the collector and the Kafka mock
#
#   perf/uploader_bench.sh [--only ship|proxy] [--no-build]
# Environment: FRAMES [100000], BYTES [512], DURATION seconds per wrk run [5], PORT_BASE [18300],
# SIDETAP_BUILD [<repo>/build]. Needs wrk and nginx for proxy (cmake/deps.sh perf).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${SIDETAP_BUILD:-$ROOT/build}
FRAMES=${FRAMES:-100000}
BYTES=${BYTES:-512}
DURATION=${DURATION:-5}
PORT_BASE=${PORT_BASE:-18300}
SECTIONS="ship proxy"
BUILD_IT=1
while [ $# -gt 0 ]; do
	case "$1" in
	--only) SECTIONS=${2//,/ }; shift ;;
	--no-build) BUILD_IT=0 ;;
	-h | --help) sed -n '3,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "uploader_bench.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
	esac
	shift
done
if [ "$BUILD_IT" = 1 ]; then
	cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build "$BUILD" -j"$(nproc)" --target sidetap sidetap-uploader upl_bench >/dev/null
fi
BIN=$BUILD/bin
TMP=$(mktemp -d /tmp/uploader-bench.XXXXXX)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$TMP"
}
trap cleanup EXIT

COLLECTOR_PORT=$((PORT_BASE))
/usr/bin/python3 "$ROOT/tests/integration/collector.py" "$COLLECTOR_PORT" --count-only \
	>"$TMP/collector.out" &
PIDS+=($!)
coproc MOCK { "$BIN/upl_bench" kafka-mock; }
PIDS+=($MOCK_PID)
read -r BOOTSTRAP <&"${MOCK[0]}"
for _ in $(seq 50); do grep -q listening "$TMP/collector.out" && break; sleep 0.1; done

echo "# sidetap-uploader benchmark ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs)"
echo "command: perf/uploader_bench.sh; FRAMES=$FRAMES BYTES=$BYTES DURATION=$DURATION"

# ship SINK LABEL [FLAG...]: drains a freshly filled ring, prints a table row.
ship() {
	local sink=$1 label=$2 t0 t1 cpu
	shift 2
	rm -rf "$TMP/ring" "$TMP/spool" "$TMP/segments"
	"$BIN/upl_bench" fill "$TMP/ring" 2 "$FRAMES" "$BYTES"
	t0=$(date +%s.%N)
	cpu=$( { /usr/bin/env TIMEFORMAT='%U %S' bash -c "time '$BIN/sidetap-uploader' --ring '$TMP/ring' \
		--sink '$sink' --spool-dir '$TMP/spool' --log-level=error --once $*" ; } 2>&1 | tail -1)
	t1=$(date +%s.%N)
	awk -v n=$((2 * FRAMES)) -v t0="$t0" -v t1="$t1" -v cpu="$cpu" -v l="$label" 'BEGIN {
		split(cpu, c, " "); el = t1 - t0;
		printf "| %s | %d | %.2f | %.0f | %.2f |\n", l, n, el, n / el, (c[1] + c[2]) * 1e6 / n }'
}

if [[ " $SECTIONS " == *" ship "* ]]; then
	echo
	echo "## ship: $((2 * FRAMES)) frames of $BYTES payload bytes, sidetap-uploader --once"
	echo
	echo "| sink | frames | seconds | frames/s | uploader CPU µs/frame |"
	echo "|---|---|---|---|---|"
	ship "file:$TMP/segments" "file: (segments, fdatasync)"
	ship "http://127.0.0.1:$COLLECTOR_PORT/v1/frames" "collector (HTTP, 1000-frame POSTs)"
	ship "http://127.0.0.1:$COLLECTOR_PORT/v1/frames" "collector, zstd bodies" --sink-compression=zstd
	ship "kafka://$BOOTSTRAP/frames" "Kafka mock (one message per frame)"
	ship "kafka://$BOOTSTRAP/frames" "Kafka mock, zstd" --sink-compression=zstd
	kill -USR1 "${PIDS[0]}"
	sleep 0.2
	echo
	echo "collector total: $(tail -1 "$TMP/collector.out") (expected $((4 * FRAMES)) frames)"
fi

if [[ " $SECTIONS " == *" proxy "* ]]; then
	ORIGIN=$((PORT_BASE + 1)) PROXY=$((PORT_BASE + 2))
	mkdir -p "$TMP/www"
	cat >"$TMP/nginx.conf" <<EOF
worker_processes 1;
pid $TMP/nginx.pid;
error_log $TMP/nginx.err;
events { worker_connections 1024; }
http {
	access_log off;
	server { listen 127.0.0.1:$ORIGIN; location / { return 200 "hello\n"; } }
}
EOF
	nginx -c "$TMP/nginx.conf"
	# The master writes its pid once it runs; killing it stops its workers too.
	for _ in $(seq 50); do [ -s "$TMP/nginx.pid" ] && break; sleep 0.1; done
	PIDS+=("$(cat "$TMP/nginx.pid")")
	echo
	echo "## proxy: wrk -t1 -c50 -d${DURATION}s, tiny responses, sidetap --workers 1, capture on"
	echo
	echo "| uploader | requests/s | frames shipped | frames dropped |"
	echo "|---|---|---|---|"
	for what in "none" "file" "collector" "kafka"; do
		rm -rf "$TMP/ring" "$TMP/spool" "$TMP/segments"
		case $what in
		none) args=(--uploader=off) ;;
		file) args=(--sink="file:$TMP/segments") ;;
		collector) args=(--sink="http://127.0.0.1:$COLLECTOR_PORT/v1/frames") ;;
		kafka) args=(--sink="kafka://$BOOTSTRAP/frames") ;;
		esac
		"$BIN/sidetap" --inbound-addr=127.0.0.1:$PROXY --outbound-addr=off --admin-addr=127.0.0.1:$((PROXY + 1)) \
			--inbound-mode=reverse --inbound-upstream=127.0.0.1:$ORIGIN --workers=1 \
			--ring="$TMP/ring" --spool-dir="$TMP/spool" --log-level=error "${args[@]}" &
		sp=$!
		for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$PROXY/" && break; sleep 0.1; done
		rps=$(wrk -t1 -c50 -d"${DURATION}s" "http://127.0.0.1:$PROXY/" | awk '/Requests\/sec/ {print $2}')
		sleep 1
		m=$(curl -s "http://127.0.0.1:$((PROXY + 1))/metrics")
		kill -TERM $sp
		wait $sp || true
		shipped=$(awk '/^sidetap_capture_consumed_frames_total/ {print $2}' <<<"$m")
		dropped=$(awk '/^sidetap_capture_dropped_frames_total/ {print $2}' <<<"$m")
		echo "| $what | $rps | $shipped | $dropped |"
	done
fi
