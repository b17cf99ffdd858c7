#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# sidetap's benchmark suite: sidetap against a direct connection, HAProxy and nginx, as PERF.md says.
#
# Sections (run in this order; --only picks some):
#   throughput  wrk -t1 -c50 closed loop, tiny / 64 KiB / 1 MiB responses from an nginx origin:
#               requests/s, ratio to direct, p99, proxy CPU µs per request and ms per MiB
#   latency     h2load --h1 -c 10 --rps 200 (2000 req/s in all): p50/p99/max, added over direct
#   bulk        iperf3 -R through each TCP proxy: Gbit/s, ratio to direct, proxy CPU ms per GiB
#   idle        idle proxied connections (perf/idle_conns): RSS per connection, back to baseline
#   crossover   sidetap copy vs splice at 1..256 KiB responses: where splice starts to pay (auto's threshold)
#   tls         HTTPS: direct to a TLS origin, through sidetap unwrapping (minted leaf, verified
#               upstream, capture off and on) and through HAProxy terminating and originating TLS:
#               keep-alive requests/s and new-connection (handshake) requests/s, proxy CPU
#   splice      build/bin/splice_bench: copy vs splice(2) vs io_uring splice vs poll + splice
# Results: markdown on stdout and in perf/out/<timestamp>.md (raw per-run rows there too).
set -euo pipefail

usage() {
	cat <<'EOF'
usage: perf/run.sh [--quick] [--force] [--only SECTION[,SECTION...]] [--no-build] [--keep]

  --quick     smoke run: 1 repetition, 2 s per measurement, 2 s latency runs, 256 MiB splice
  --force     skip the noise gate (load average must be below 0.3 otherwise)
  --only S    run only these sections: throughput, latency, bulk, idle, crossover, tls, splice
  --no-build  use the binaries in the build directory as they are
  --keep      keep the scratch directory (configs, logs, raw wrk/h2load/iperf3 output)

Environment (defaults in brackets):
  DURATION      seconds per wrk and iperf3 run [5; 2 with --quick]
  LAT_DURATION  seconds per h2load run [10, or DURATION when that is set and shorter]
  REPS          repetitions, interleaved, median reported [3; 1 with --quick]
  WARMUP        seconds of unmeasured wrk per target before the throughput runs [1; 0 with --quick]
  IDLE_COUNTS   idle connection counts [2000 10000]; counts above what ulimit -n allows are skipped
  SPLICE_BYTES  bytes per splice_bench run [1G; 256M with --quick]
  CLIENT_CPU PROXY_CPU ORIGIN_CPU  placement of load generators, proxy, origin/sinks [0 0 0]
  PORT_BASE     first of the loopback ports used, PORT_BASE..PORT_BASE+49 [18100]
  SIDETAP_BUILD build directory [<repo>/build]
Peers: cmake/deps.sh perf (nginx-light libnginx-mod-stream haproxy wrk nghttp2-client iperf3).
EOF
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${SIDETAP_BUILD:-$ROOT/build}
CMDLINE="perf/run.sh${*:+ $*}"
QUICK=0 FORCE=0 BUILD_IT=1 KEEP=0 ONLY=""
SECTIONS="throughput latency bulk idle crossover tls splice"

while [ $# -gt 0 ]; do
	case "$1" in
	--quick) QUICK=1 ;;
	--force) FORCE=1 ;;
	--no-build) BUILD_IT=0 ;;
	--keep) KEEP=1 ;;
	--only) [ $# -ge 2 ] || { usage >&2; exit 2; }; ONLY=${2//,/ }; shift ;;
	--only=*) ONLY=${1#--only=}; ONLY=${ONLY//,/ } ;;
	-h | --help) usage; exit 0 ;;
	*) echo "run.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
	esac
	shift
done
for s in $ONLY; do
	case " $SECTIONS " in
	*" $s "*) ;;
	*) echo "run.sh: unknown section '$s' (sections: $SECTIONS)" >&2; exit 2 ;;
	esac
done
[ -n "$ONLY" ] && SECTIONS=$ONLY

DURATION_SET=${DURATION:+1}
if [ "$QUICK" = 1 ]; then
	DURATION=${DURATION:-2} REPS=${REPS:-1} WARMUP=${WARMUP:-0} SPLICE_BYTES=${SPLICE_BYTES:-256M}
	DURATION_SET=1
fi
DURATION=${DURATION:-5}
REPS=${REPS:-3}
WARMUP=${WARMUP:-1}
SPLICE_BYTES=${SPLICE_BYTES:-1G}
IDLE_COUNTS=${IDLE_COUNTS:-2000 10000}
if [ -z "${LAT_DURATION:-}" ]; then
	LAT_DURATION=10
	[ -n "$DURATION_SET" ] && [ "$DURATION" -lt 10 ] && LAT_DURATION=$DURATION
fi
CLIENT_CPU=${CLIENT_CPU:-0} PROXY_CPU=${PROXY_CPU:-0} ORIGIN_CPU=${ORIGIN_CPU:-0}
PORT_BASE=${PORT_BASE:-18100}
HZ=$(getconf CLK_TCK)

SIDETAP=$BUILD/bin/sidetap
IDLE_CONNS=$BUILD/bin/idle_conns
SPLICE_BENCH=$BUILD/bin/splice_bench
NGX_STREAM_SO=/usr/lib/nginx/modules/ngx_stream_module.so

# Throughput targets, in table order. Each proxy has a fixed listen and admin port.
TP_TARGETS="direct sidetap-auto sidetap-cap sidetap-splice sidetap-copy haproxy-tcp haproxy-tcp-splice haproxy-http nginx-stream"
LAT_TARGETS="direct sidetap-auto sidetap-cap haproxy-tcp nginx-stream"
BULK_TARGETS="direct sidetap-auto sidetap-splice sidetap-copy haproxy-tcp haproxy-tcp-splice nginx-stream"
IDLE_TARGETS="sidetap-auto sidetap-cap haproxy-tcp nginx-stream"
SIZES="tiny 64k 1m"
CROSS_SIZES=${CROSS_SIZES:-1 4 8 16 32 64 128 256}
CROSS_TARGETS="sidetap-copy sidetap-splice sidetap-auto"
declare -A SIZE_BYTES=([tiny]=3 [64k]=65536 [1m]=1048576)
declare -A SIZE_LABEL=([tiny]="tiny (3 B)" [64k]="64 KiB" [1m]="1 MiB")
declare -A PROXY_IDX=([sidetap-cap]=8 [sidetap-auto]=1 [sidetap-splice]=2 [sidetap-copy]=3 [haproxy-tcp]=4
	[haproxy-tcp-splice]=5 [haproxy-http]=6 [nginx-stream]=7)
P_ORIGIN=$PORT_BASE P_IPERF=$((PORT_BASE + 1)) P_SINK=$((PORT_BASE + 2))

say() { echo "run.sh: $*" >&2; }
die() { say "$*"; exit 1; }

# ---------------------------------------------------------------- processes

declare -A PID=()     # name -> pid of what this script started
CLIENT_PID=""         # the load generator running now
WORK=""

cleanup() {
	local rc=$? name pid
	trap - EXIT INT TERM
	if [ -n "$CLIENT_PID" ]; then
		kill -TERM "$CLIENT_PID" 2>/dev/null || true
	fi
	for name in "${!PID[@]}"; do
		kill -TERM "${PID[$name]}" 2>/dev/null || true
	done
	for name in "${!PID[@]}"; do
		pid=${PID[$name]}
		for _ in $(seq 30); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	if [ -n "$WORK" ] && [ -d "$WORK" ]; then
		if [ "$KEEP" = 1 ] || [ "$rc" -ne 0 ]; then
			say "scratch directory kept: $WORK"
		else
			rm -rf "$WORK"
		fi
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_port NAME PORT: waits until PORT accepts, failing early if NAME's process died.
wait_port() {
	local name=$1 port=$2
	for _ in $(seq 100); do
		port_open "$port" && return 0
		if ! kill -0 "${PID[$name]}" 2>/dev/null; then
			tail -n 20 "$WORK/$name.log" >&2 || true
			die "$name exited during start-up (log: $WORK/$name.log)"
		fi
		sleep 0.05
	done
	tail -n 20 "$WORK/$name.log" >&2 || true
	die "$name does not listen on 127.0.0.1:$port after 5 s (log: $WORK/$name.log)"
}

# start_bg NAME CPU CMD...: starts CMD pinned to CPU, output to $WORK/NAME.log.
start_bg() {
	local name=$1 cpu=$2
	shift 2
	taskset -c "$cpu" "$@" >"$WORK/$name.log" 2>&1 </dev/null &
	PID[$name]=$!
}

stop_bg() {
	local name=$1 pid=${PID[$1]:-}
	[ -n "$pid" ] || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 50); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	unset "PID[$name]"
}

# run_client SECONDS OUTFILE CMD...: runs a load generator pinned to CLIENT_CPU, with a deadline.
run_client() {
	local limit=$1 out=$2 rc=0
	shift 2
	timeout "$limit" taskset -c "$CLIENT_CPU" "$@" >"$out" 2>&1 &
	CLIENT_PID=$!
	wait "$CLIENT_PID" || rc=$?
	CLIENT_PID=""
	return "$rc"
}

proxy_port() { echo $((PORT_BASE + 10 + PROXY_IDX[$1])); }
admin_port() { echo $((PORT_BASE + 30 + PROXY_IDX[$1])); }
target_port() { if [ "$1" = direct ]; then echo "$2"; else proxy_port "$1"; fi; }

# ---------------------------------------------------------------- /proc readings

# The pid and its children (nginx's workers): a proxy's CPU and memory are the tree's.
proc_tree() {
	echo "$1"
	cat "/proc/$1/task/"*/children 2>/dev/null | tr ' ' '\n' | grep . || true
}

# utime+stime in clock ticks of the process tree under <pid> (all threads, io-wq included).
cpu_ticks() {
	local t=0 p s
	for p in $(proc_tree "$1"); do
		s=$(cat "/proc/$p/stat" 2>/dev/null) || continue
		s=${s##*) }
		# shellcheck disable=SC2086
		set -- $s
		t=$((t + ${12} + ${13}))
	done
	echo "$t"
}

# VmRSS less RssShmem (sidetap's capture ring is shared memory, PERF.md's T13 excludes it),
# in KiB, of the process tree under <pid>.
rss_kib() {
	local t=0 p v
	for p in $(proc_tree "$1"); do
		v=$(awk '/^VmRSS:/ { r = $2 } /^RssShmem:/ { s = $2 } END { print r - s }' "/proc/$p/status" 2>/dev/null) || continue
		t=$((t + ${v:-0}))
	done
	echo "$t"
}

# Open descriptors of the process tree under <pid>.
fd_count() {
	local t=0 p
	for p in $(proc_tree "$1"); do
		t=$((t + $(find "/proc/$p/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)))
	done
	echo "$t"
}

# CPUs that nothing is pinned to: their busy share during a run shows work escaping the pin
# (io_uring's io-wq workers follow the cpuset, not the affinity mask).
OFF_CPUS=""
for c in $(seq 0 $(($(nproc --all) - 1))); do
	case " $CLIENT_CPU $PROXY_CPU $ORIGIN_CPU " in
	*" $c "*) ;;
	*) OFF_CPUS="$OFF_CPUS $c" ;;
	esac
done

# Prints "busy total" jiffies summed over OFF_CPUS.
offcore_snap() {
	awk -v list=" $OFF_CPUS " '$1 ~ /^cpu[0-9]+$/ && index(list, " " substr($1, 4) " ") {
		b += $2 + $3 + $4 + $7 + $8 + $9; t += $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }
		END { printf "%d %d\n", b, t }' /proc/stat
}

offcore_pct() { # BEFORE AFTER (each "busy total")
	awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " ")
		if (y[2] - x[2] <= 0) { print "-"; exit } printf "%.0f\n", 100 * (y[1] - x[1]) / (y[2] - x[2]) }'
}

# ---------------------------------------------------------------- peers

NGINX_USER=""
[ "$(id -u)" = 0 ] && NGINX_USER="user root;"

start_origin() {
	mkdir -p "$WORK/www" "$WORK/nginx-tmp"
	head -c 65536 /dev/zero | tr '\0' 'a' >"$WORK/www/64k"
	head -c 1048576 /dev/zero | tr '\0' 'b' >"$WORK/www/1m"
	for k in $CROSS_SIZES; do
		head -c $((k * 1024)) /dev/zero | tr '\0' 'c' >"$WORK/www/x${k}k"
	done
	cat >"$WORK/origin.conf" <<EOF
$NGINX_USER
worker_processes 1;
pid $WORK/origin.pid;
error_log $WORK/origin.err warn;
worker_rlimit_nofile $NOFILE;
events { worker_connections $((NOFILE - 64)); }
http {
	access_log off;
	sendfile on;
	tcp_nopush on;
	tcp_nodelay on;
	keepalive_timeout 120s;
	keepalive_requests 100000000;
	default_type application/octet-stream;
	client_body_temp_path $WORK/nginx-tmp/body;
	proxy_temp_path $WORK/nginx-tmp/proxy;
	fastcgi_temp_path $WORK/nginx-tmp/fastcgi;
	uwsgi_temp_path $WORK/nginx-tmp/uwsgi;
	scgi_temp_path $WORK/nginx-tmp/scgi;
	server {
		listen 127.0.0.1:$P_ORIGIN backlog=4096;
		root $WORK/www;
		location = /tiny { return 200 "ok\n"; }
	}
}
EOF
	start_bg origin "$ORIGIN_CPU" nginx -p "$WORK" -e "$WORK/origin.err" -c "$WORK/origin.conf" -g 'daemon off;'
	wait_port origin "$P_ORIGIN"
}

# start_proxy NAME UPSTREAM_PORT: starts one proxy in front of 127.0.0.1:UPSTREAM_PORT.
start_proxy() {
	local name=$1 up=$2 port admin mode
	port=$(proxy_port "$name")
	admin=$(admin_port "$name")
	case "$name" in
	sidetap-*)
		# sidetap-cap: auto with capture on, its uploader writing segments to the scratch dir.
		local capture=(--capture off)
		mode=${name#sidetap-}
		if [ "$mode" = cap ]; then
			mode=auto
			capture=(--capture on --ring "$WORK/$name.ring" --ring-size 64M
				--sink "file:$WORK/$name.capture")
		fi
		start_bg "$name" "$PROXY_CPU" "$SIDETAP" --inbound-addr "127.0.0.1:$port" \
			--inbound-mode reverse --inbound-upstream "127.0.0.1:$up" --outbound-addr off \
			--admin-addr "127.0.0.1:$admin" --workers 1 --forward "$mode" "${capture[@]}" \
			--max-connections "$MAXCONN" --drain-timeout 1000 --log-level warn
		;;
	haproxy-*)
		local hmode=tcp extra=""
		[ "$name" = haproxy-http ] && hmode=http
		[ "$name" = haproxy-tcp-splice ] && extra=$'\toption splice-auto\n\toption splice-response'
		cat >"$WORK/$name.cfg" <<EOF
global
	nbthread 1
	maxconn $MAXCONN
	maxpipes $MAXPIPES
defaults
	mode $hmode
	timeout connect 5s
	timeout client 10m
	timeout server 10m
	timeout http-request 10s
	timeout http-keep-alive 10m
$extra
frontend fe
	bind 127.0.0.1:$port
	default_backend be
backend be
	server origin 127.0.0.1:$up
EOF
		start_bg "$name" "$PROXY_CPU" haproxy -db -f "$WORK/$name.cfg"
		;;
	nginx-stream)
		local load=""
		[ -f "$NGX_STREAM_SO" ] && load="load_module $NGX_STREAM_SO;"
		cat >"$WORK/$name.conf" <<EOF
$load
$NGINX_USER
worker_processes 1;
pid $WORK/$name.pid;
error_log $WORK/$name.err warn;
worker_rlimit_nofile $NOFILE;
events { worker_connections $((NOFILE - 64)); }
stream {
	server {
		listen 127.0.0.1:$port backlog=4096;
		proxy_pass 127.0.0.1:$up;
		proxy_timeout 10m;
	}
}
EOF
		start_bg "$name" "$PROXY_CPU" nginx -p "$WORK" -e "$WORK/$name.err" -c "$WORK/$name.conf" -g 'daemon off;'
		;;
	*) die "unknown proxy $name" ;;
	esac
	wait_port "$name" "$port"
}

# ---------------------------------------------------------------- checks and header

check_tools() {
	local missing="" t
	for t in "$@"; do
		command -v "$t" >/dev/null 2>&1 || missing="$missing $t"
	done
	[ -z "$missing" ] || die "missing:$missing; install the peers with: sudo cmake/deps.sh perf"
}

need_tools() {
	local s tools="taskset timeout awk" peers=0
	[ "$BUILD_IT" = 1 ] && tools="$tools cmake"
	for s in $SECTIONS; do
		case $s in
		throughput) tools="$tools nginx haproxy wrk" peers=1 ;;
		latency) tools="$tools nginx haproxy h2load" peers=1 ;;
		bulk) tools="$tools haproxy nginx iperf3" peers=1 ;;
		idle) tools="$tools haproxy nginx" peers=1 ;;
		tls) tools="$tools haproxy nginx wrk openssl" peers=1 ;;
		esac
	done
	# shellcheck disable=SC2086 # a list of words
	check_tools $tools
	if [ "$peers" = 1 ] && [ ! -f "$NGX_STREAM_SO" ] && ! nginx -V 2>&1 | grep -Eq -- '--with-stream( |$)'; then
		die "nginx has no stream module: apt-get install libnginx-mod-stream (or cmake/deps.sh perf)"
	fi
}

build() {
	if [ "$BUILD_IT" = 1 ]; then
		if [ ! -f "$BUILD/CMakeCache.txt" ]; then
			say "configuring $BUILD"
			cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$WORK/build.log" 2>&1 ||
				{ tail -n 30 "$WORK/build.log" >&2; die "cmake configure failed"; }
		fi
		say "building sidetap, idle_conns, splice_bench in $BUILD"
		cmake --build "$BUILD" -j "$(nproc)" --target sidetap idle_conns splice_bench \
			>>"$WORK/build.log" 2>&1 || { tail -n 30 "$WORK/build.log" >&2; die "build failed"; }
	fi
	for b in "$SIDETAP" "$IDLE_CONNS" "$SPLICE_BENCH"; do
		[ -x "$b" ] || die "$b missing: cmake -S $ROOT -B $BUILD && cmake --build $BUILD"
	done
	BUILD_TYPE=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD/CMakeCache.txt" 2>/dev/null)
	SANITIZERS=$(sed -n 's/^\(SIDETAP_[AT]SAN\):BOOL=ON$/\1/p' "$BUILD/CMakeCache.txt" 2>/dev/null | tr '\n' ' ')
	SANITIZERS=${SANITIZERS% }
	[ -z "$SANITIZERS" ] || say "warning: $BUILD is a sanitizer build ($SANITIZERS): numbers are not comparable"
}

# Load average below 0.3 or abort. Right after a build that compiled something, the load first gets
# up to two minutes to settle.
noise_gate() {
	local load
	if [ "$FORCE" != 1 ] && grep -q 'Building C object' "$WORK/build.log" 2>/dev/null; then
		for _ in $(seq 24); do
			awk '{ exit !($1 >= 0.3) }' /proc/loadavg || break
			say "load average $(cut -d' ' -f1 /proc/loadavg) after the build: waiting for it to settle"
			sleep 5
		done
	fi
	load=$(cut -d' ' -f1 /proc/loadavg)
	LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
	if awk -v l="$load" 'BEGIN { exit !(l >= 0.3) }'; then
		if [ "$FORCE" = 1 ]; then
			say "load average $load >= 0.3: noise gate skipped (--force); numbers may be noisy"
			GATE="skipped (--force) at load $load"
		else
			die "load average $load >= 0.3: the machine is not quiet (see PERF.md); wait, or --force"
		fi
	else
		GATE="passed (load $load < 0.3)"
	fi
}

raise_nofile() {
	local want=65536
	ulimit -n "$want" 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
	NOFILE=$(ulimit -n)
	# Connections each proxy may hold: two descriptors apiece, two per pipe (HAProxy's splice
	# pipes; sidetap pools its own) and some to spare.
	MAXPIPES=1024
	MAXCONN=$(((NOFILE - 2 * MAXPIPES - 256) / 2))
	[ "$MAXCONN" -gt 12000 ] && MAXCONN=12000
	return 0
}

check_ports() {
	local p
	for p in $P_ORIGIN $P_IPERF $P_SINK $(for n in "${!PROXY_IDX[@]}"; do proxy_port "$n"; admin_port "$n"; done); do
		port_open "$p" && die "127.0.0.1:$p is in use: stop what listens there or set PORT_BASE"
	done
	return 0
}

ver() { "$@" 2>&1 | head -n 1 | tr -d '\r' || true; }

out() { printf '%s\n' "$*" | tee -a "$OUT_MD"; }

header() {
	local cpu mem git
	cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
	mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
	git=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
	[ -z "$(git -C "$ROOT" status --porcelain 2>/dev/null)" ] || git="$git (with uncommitted changes)"
	out "# sidetap perf run $STAMP"
	out ""
	out "- command: \`$CMDLINE\` (DURATION=$DURATION REPS=$REPS LAT_DURATION=$LAT_DURATION WARMUP=$WARMUP SPLICE_BYTES=$SPLICE_BYTES IDLE_COUNTS=\"$IDLE_COUNTS\")"
	out "- sections: $SECTIONS"
	out "- machine: $cpu, $(nproc --all) CPUs, $mem; kernel $(uname -r) ($(uname -m))"
	out "- noise gate: $GATE; load average at start $LOAD_AT_START"
	out "- placement: load generators (wrk, h2load, iperf3 -c, idle_conns) cpu $CLIENT_CPU; proxy cpu $PROXY_CPU; origin nginx, iperf3 -s, idle sink cpu $ORIGIN_CPU; off-core column = busy % of cpu(s)${OFF_CPUS:- none} that nothing is pinned to"
	out "- proxies: sidetap --workers 1; HAProxy nbthread 1; nginx worker_processes 1 (CPU and RSS summed over master and worker)"
	out "- sidetap: $(ver "$SIDETAP" --version), git $git, build $BUILD (${BUILD_TYPE:-unknown}${SANITIZERS:+, $SANITIZERS})"
	out "- peers: $(ver nginx -v); $(ver haproxy -v); $(ver wrk -v); $(ver h2load --version); $(ver iperf3 --version); liburing $(pkg-config --modversion liburing 2>/dev/null || echo '?')"
	if command -v mitmdump >/dev/null 2>&1; then
		out "- mitmproxy: $(ver mitmdump --version) installed, not driven by this suite yet (its comparison needs sidetap's capture on)"
	else
		out "- mitmproxy: not installed, skipped (the capture peer; apt-get install mitmproxy when capture is measured)"
	fi
	out "- CPU: utime+stime from /proc/PID/stat (clock tick $HZ Hz) before and after each run; ulimit -n $NOFILE"
	out ""
}

# ---------------------------------------------------------------- sections

# Median and other aggregation helpers shared by the table builders (POSIX awk).
AWK_LIB='
function med(s,   a, n, i, j, t) {
	n = split(s, a, " ")
	if (n == 0) return ""
	for (i = 1; i <= n; i++) a[i] += 0
	for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
	return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function add(arr, k, v) { arr[k] = (k in arr) ? arr[k] " " v : v }
function f(fmt, v) { return v == "" ? "—" : sprintf(fmt, v) }
function us(v) { return v == "" ? "—" : (v >= 10000 ? sprintf("%.1f ms", v / 1000) : sprintf("%.0f µs", v)) }
'

# shellcheck disable=SC2016 # awk programs, not shell expansions
# Converts wrk's latency ("53.00us", "2.51ms", "1.02s") to µs.
WRK_PARSE='
function to_us(v) {
	if (v ~ /us$/) return v + 0
	if (v ~ /ms$/) return v * 1000
	if (v ~ /m$/) return v * 60e6
	if (v ~ /s$/) return v * 1e6
	return v + 0
}
/^Requests\/sec:/ { rps = $2 }
/^ +99%/ { p99 = to_us($2) }
/ requests in / { req = $1 }
/^ +Non-2xx or 3xx responses:/ { err += $NF }
/^ +Socket errors:/ { gsub(/,/, ""); err += $4 + $6 + $8 + $10 }
END { printf "%s\t%s\t%s\t%d\n", rps, p99, req, err }
'

section_throughput() {
	local t rep size port pid out c0 c1 o0 o1 line
	say "throughput: origin and proxies"
	start_origin
	for t in $TP_TARGETS; do
		[ "$t" = direct ] || start_proxy "$t" "$P_ORIGIN"
	done
	if [ "$WARMUP" -gt 0 ]; then
		say "throughput: warm-up, ${WARMUP}s per target"
		for t in $TP_TARGETS; do
			port=$(target_port "$t" "$P_ORIGIN")
			run_client $((WARMUP + 20)) "$WORK/warmup.out" wrk -t1 -c50 -d"${WARMUP}s" "http://127.0.0.1:$port/tiny" ||
				die "wrk warm-up against $t failed: $(tail -n 3 "$WORK/warmup.out")"
		done
	fi
	for rep in $(seq "$REPS"); do
		for size in $SIZES; do
			for t in $TP_TARGETS; do
				say "throughput: rep $rep/$REPS size $size target $t"
				port=$(target_port "$t" "$P_ORIGIN")
				pid=${PID[$t]:-}
				out=$WORK/wrk.$rep.$size.$t.out
				c0=0 c1=0
				[ -n "$pid" ] && c0=$(cpu_ticks "$pid")
				[ "$t" = sidetap-cap ] && m0=$(capture_counts "$t")
				o0=$(offcore_snap)
				run_client $((DURATION + 30)) "$out" wrk -t1 -c50 -d"${DURATION}s" --latency \
					"http://127.0.0.1:$port/$size" || die "wrk against $t failed: $(tail -n 3 "$out")"
				o1=$(offcore_snap)
				[ -n "$pid" ] && c1=$(cpu_ticks "$pid")
				if [ "$t" = sidetap-cap ]; then
					m1=$(capture_counts "$t")
					# shellcheck disable=SC2086 # two numbers each
					printf 'cap\t%s\t%s\t%s\n' "$rep" "$size" \
						"$(awk -v a="$m0" -v b="$m1" 'BEGIN { split(a, x, " "); split(b, y, " ")
							printf "%d\t%d", y[1] - x[1], y[2] - x[2] }')" >>"$RAW"
				fi
				line=$(awk "$WRK_PARSE" "$out")
				[ -n "$(cut -f1 <<<"$line")" ] || die "no Requests/sec in $out"
				if [ -n "$pid" ]; then
					printf 'tp\t%s\t%s\t%s\t%s\t%s\t%s\n' "$rep" "$size" "$t" "$line" \
						$((c1 - c0)) "$(offcore_pct "$o0" "$o1")" >>"$RAW"
				else
					printf 'tp\t%s\t%s\t%s\t%s\t-\t%s\n' "$rep" "$size" "$t" "$line" \
						"$(offcore_pct "$o0" "$o1")" >>"$RAW"
				fi
			done
		done
	done
	sidetap_counters
	for t in $TP_TARGETS; do
		[ "$t" = direct ] || stop_bg "$t"
	done
	stop_bg origin
	report_throughput
}

# "frames dropped" of sidetap <name>'s capture, from its /metrics.
capture_counts() {
	# shellcheck disable=SC2016 # $1 is the inner shell's
	timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/$1
		printf "GET /metrics HTTP/1.0\r\nHost: perf\r\n\r\n" >&3; cat <&3' _ "$(admin_port "$1")" 2>/dev/null |
		awk '/^sidetap_capture_frames_total / { f = $NF } /^sidetap_capture_dropped_frames_total / { d = $NF }
			END { printf "%d %d\n", f, d }'
}

# Reads sidetap's own counters: did --forward auto really take the splice path for bulk?
sidetap_counters() {
	local t m
	: >"$WORK/counters.tsv"
	for t in $TP_TARGETS; do
		case $t in sidetap-*) ;; *) continue ;; esac
		# shellcheck disable=SC2016 # $1 is the inner shell's
		m=$(timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/$1
			printf "GET /metrics HTTP/1.0\r\nHost: perf\r\n\r\n" >&3; cat <&3' _ "$(admin_port "$t")" 2>/dev/null) || true
		awk -v t="$t" '
			/^sidetap_bytes_total\{listener="inbound"/ { b += $NF }
			/^sidetap_splice_bytes_total\{listener="inbound"/ { s += $NF }
			/^sidetap_splice_switches_total\{listener="inbound"/ { w += $NF }
			/^sidetap_connections_accepted_total\{listener="inbound"/ { a += $NF }
			/^sidetap_capture_frames_total / { cf += $NF }
			/^sidetap_capture_dropped_frames_total / { cd += $NF }
			/^sidetap_capture_consumed_frames_total / { cc += $NF }
			/^sidetap_connect_errors_total\{listener="inbound"/ { e += $NF }
			END { printf "%s\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\n", t, a, b, s, w, e, cf, cc, cd }' <<<"$m" >>"$WORK/counters.tsv"
		if [ "$t" = sidetap-cap ]; then
			awk -F'\t' -v t="$t" '$1 == t { printf "cap.frames\t%s\ncap.consumed\t%s\ncap.dropped\t%s\n", $7, $8, $9 }' \
				"$WORK/counters.tsv" >>"$KV"
		fi
	done
}

report_throughput() {
	out "## Throughput: wrk -t1 -c50 -d${DURATION}s, HTTP/1.1 keep-alive, median of $REPS"
	out ""
	out "Ratio: requests/s ÷ direct in the same repetition (median). CPU: the proxy's utime+stime ÷ requests"
	out "(or ÷ MiB of response bodies). Off-core: busy % of the CPUs nothing is pinned to."
	out ""
	awk -F'\t' -v hz="$HZ" -v order="$TP_TARGETS" -v sizes="$SIZES" -v kv="$KV" \
		-v b_tiny="${SIZE_BYTES[tiny]}" -v b_64k="${SIZE_BYTES[64k]}" -v b_1m="${SIZE_BYTES[1m]}" \
		-v l_tiny="${SIZE_LABEL[tiny]}" -v l_64k="${SIZE_LABEL[64k]}" -v l_1m="${SIZE_LABEL[1m]}" "$AWK_LIB"'
	$1 == "tp" { rps[$2, $3, $4] = $5; rows[$3, $4] = rows[$3, $4] " " $2
		add(P99, $3 SUBSEP $4, $6); errs[$3, $4] += $8
		if ($10 != "-") add(OFF, $3 SUBSEP $4, $10)
		if ($9 != "-" && $7 > 0) {
			add(US, $3 SUBSEP $4, $9 / hz * 1e6 / $7)
			add(MS, $3 SUBSEP $4, $9 / hz * 1e3 / ($7 * bytes[$3] / 1048576))
		}
	}
	BEGIN { bytes["tiny"] = b_tiny; bytes["64k"] = b_64k; bytes["1m"] = b_1m
		label["tiny"] = l_tiny; label["64k"] = l_64k; label["1m"] = l_1m }
	END {
		print "| size | target | req/s | ÷ direct | p99 | proxy CPU µs/req | proxy CPU ms/MiB | off-core % | errors |"
		print "|---|---|---:|---:|---:|---:|---:|---:|---:|"
		ns = split(sizes, S, " "); nt = split(order, T, " ")
		for (i = 1; i <= ns; i++) for (j = 1; j <= nt; j++) {
			s = S[i]; t = T[j]; if (!((s, t) in rows)) continue
			n = split(rows[s, t], R, " "); r = ""; q = ""
			for (k = 1; k <= n; k++) { r = r " " rps[R[k], s, t]
				if ((R[k], s, "direct") in rps && rps[R[k], s, "direct"] > 0)
					q = q " " rps[R[k], s, t] / rps[R[k], s, "direct"] }
			mr = med(r); mq = med(q); mu = med(US[s, t]); mm = (s == "tiny") ? "" : med(MS[s, t])
			printf "| %s | %s | %s | %s | %s | %s | %s | %s | %d |\n", label[s], t, f("%.0f", mr),
				(t == "direct") ? "1.00" : f("%.2f", mq), us(med(P99[s, t])), f("%.1f", mu),
				f("%.2f", mm), f("%s", med(OFF[s, t])), errs[s, t]
			printf "tp.%s.%s.ratio\t%s\ntp.%s.%s.us\t%s\ntp.%s.%s.ms\t%s\n", s, t, mq, s, t, mu, s, t, mm >> kv
		}
	}' "$RAW" | tee -a "$OUT_MD"
	if grep -q '^cap' "$RAW"; then
		out ""
		out "Capture at that load (sidetap-cap: capture on, its uploader writing segment files to disk on the same"
		out "core): frames written to the ring and dropped because it was full, per ${DURATION}s run, median of $REPS."
		out ""
		awk -F'\t' -v d="$DURATION" -v sizes="$SIZES" -v kv="$KV" "$AWK_LIB"'
		$1 == "cap" { add(F, $3, $4); add(D, $3, $5) }
		END {
			print "| size | frames/s | frames dropped per run |"
			print "|---|---:|---:|"
			n = split(sizes, S, " ")
			for (i = 1; i <= n; i++) if (S[i] in F) {
				printf "| %s | %.0f | %.0f |\n", S[i], med(F[S[i]]) / d, med(D[S[i]])
				printf "cap.%s.fps\t%s\ncap.%s.dropped\t%s\n", S[i], med(F[S[i]]) / d, S[i], med(D[S[i]]) >> kv
			}
		}' "$RAW" | tee -a "$OUT_MD"
	fi
	if [ -s "$WORK/counters.tsv" ]; then
		out ""
		out "sidetap's counters after the section (inbound listener): the splice share shows which path carried the bytes."
		out ""
		out "| sidetap | connections | bytes | spliced bytes | splice share | splice switches | connect errors | frames captured | frames shipped | frames dropped |"
		out "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
		awk -F'\t' '{ printf "| %s | %d | %.0f | %.0f | %s | %d | %d | %s | %s | %s |\n", $1, $2, $3, $4,
			($3 > 0) ? sprintf("%.0f %%", 100 * $4 / $3) : "—", $5, $6,
			($1 == "sidetap-cap") ? $7 : "—", ($1 == "sidetap-cap") ? $8 : "—",
			($1 == "sidetap-cap") ? $9 : "—" }' "$WORK/counters.tsv" | tee -a "$OUT_MD"
	fi
	out ""
}

section_latency() {
	local t rep port out log
	say "latency: origin and proxies"
	start_origin
	for t in $LAT_TARGETS; do
		[ "$t" = direct ] || start_proxy "$t" "$P_ORIGIN"
	done
	for rep in $(seq "$REPS"); do
		for t in $LAT_TARGETS; do
			say "latency: rep $rep/$REPS target $t (${LAT_DURATION}s)"
			port=$(target_port "$t" "$P_ORIGIN")
			out=$WORK/h2load.$rep.$t.out
			log=$WORK/h2load.$rep.$t.log
			run_client $((LAT_DURATION + 30)) "$out" h2load --h1 -c 10 --rps 200 -D "$LAT_DURATION" \
				--log-file "$log" "http://127.0.0.1:$port/tiny" || die "h2load against $t failed: $(tail -n 3 "$out")"
			# The log: start time µs, status, µs to the end of the response; one line a request.
			sort -t$'\t' -k3,3n "$log" | awk -F'\t' -v rep="$rep" -v t="$t" \
				-v failed="$(awk '/^requests:/ { for (i = 1; i < NF; i++) if ($(i + 1) ~ /^failed/) print $i }' "$out")" '
				{ v[NR] = $3; if ($2 !~ /^2/) bad++ }
				END { if (NR == 0) exit 1
					p50 = v[int(0.50 * (NR - 1)) + 1]; p99 = v[int(0.99 * (NR - 1)) + 1]
					printf "lat\t%s\t%s\t%d\t%d\t%d\t%d\t%d\n", rep, t, p50, p99, v[NR], NR, failed + bad }' \
				>>"$RAW" || die "empty h2load log for $t: $out"
		done
	done
	for t in $LAT_TARGETS; do
		[ "$t" = direct ] || stop_bg "$t"
	done
	stop_bg origin
	out "## Latency below saturation: h2load --h1 -c 10 --rps 200 -D $LAT_DURATION (2000 req/s), tiny response, median of $REPS"
	out ""
	out "Added: proxied − direct in the same repetition (median). Max: the slowest request of the run."
	out ""
	awk -F'\t' -v order="$LAT_TARGETS" -v kv="$KV" "$AWK_LIB"'
	$1 == "lat" { p50[$2, $3] = $4; p99[$2, $3] = $5; add(MX, $3, $6); add(N, $3, $7); bad[$3] += $8; reps[$3] = reps[$3] " " $2 }
	END {
		print "| target | p50 | p99 | max | added p50 | added p99 | requests | failed |"
		print "|---|---:|---:|---:|---:|---:|---:|---:|"
		nt = split(order, T, " ")
		for (j = 1; j <= nt; j++) { t = T[j]; if (!(t in reps)) continue
			n = split(reps[t], R, " "); a = ""; b = ""; c = ""; d = ""
			for (k = 1; k <= n; k++) { a = a " " p50[R[k], t]; b = b " " p99[R[k], t]
				if ((R[k], "direct") in p50) { c = c " " p50[R[k], t] - p50[R[k], "direct"]
					d = d " " p99[R[k], t] - p99[R[k], "direct"] } }
			ap = (t == "direct") ? "" : med(c); aq = (t == "direct") ? "" : med(d)
			printf "| %s | %s | %s | %s | %s | %s | %s | %d |\n", t, us(med(a)), us(med(b)), us(med(MX[t])),
				(ap == "") ? "—" : sprintf("%+.0f µs", ap), (aq == "") ? "—" : sprintf("%+.0f µs", aq), f("%.0f", med(N[t])), bad[t]
			printf "lat.%s.add50\t%s\nlat.%s.add99\t%s\nlat.%s.max\t%s\n", t, ap, t, aq, t, med(MX[t]) >> kv
		}
	}' "$RAW" | tee -a "$OUT_MD"
	out ""
}

section_bulk() {
	local t rep port pid out c0 c1 o0 o1
	say "bulk: iperf3 server and proxies"
	start_bg iperf3-server "$ORIGIN_CPU" iperf3 -s -p "$P_IPERF"
	wait_port iperf3-server "$P_IPERF"
	for t in $BULK_TARGETS; do
		[ "$t" = direct ] || start_proxy "$t" "$P_IPERF"
	done
	for rep in $(seq "$REPS"); do
		for t in $BULK_TARGETS; do
			say "bulk: rep $rep/$REPS target $t (${DURATION}s)"
			port=$(target_port "$t" "$P_IPERF")
			pid=${PID[$t]:-}
			out=$WORK/iperf3.$rep.$t.out
			c0=0 c1=0
			[ -n "$pid" ] && c0=$(cpu_ticks "$pid")
			o0=$(offcore_snap)
			# -R: the server sends, so the bytes flow upstream -> client, the way responses do
			# (and the way HAProxy's option splice-response applies).
			run_client $((DURATION + 30)) "$out" iperf3 -c 127.0.0.1 -p "$port" -t "$DURATION" -R -f m ||
				die "iperf3 through $t failed: $(tail -n 3 "$out")"
			o1=$(offcore_snap)
			[ -n "$pid" ] && c1=$(cpu_ticks "$pid")
			# The receiver line: transfer with a binary unit, bitrate in Mbits/sec.
			awk -v rep="$rep" -v t="$t" -v ticks="$([ -n "$pid" ] && echo $((c1 - c0)) || echo -)" \
				-v off="$(offcore_pct "$o0" "$o1")" '
				/receiver$/ { for (i = 1; i <= NF; i++) {
					if ($i == "KBytes") by = $(i - 1) * 1024
					if ($i == "MBytes") by = $(i - 1) * 1048576
					if ($i == "GBytes") by = $(i - 1) * 1073741824
					if ($i == "Mbits/sec") mb = $(i - 1) } }
				END { if (mb == "") exit 1; printf "bulk\t%s\t%s\t%s\t%.0f\t%s\t%s\n", rep, t, mb, by, ticks, off }' \
				"$out" >>"$RAW" || die "no receiver line in $out"
			sleep 0.2
		done
	done
	for t in $BULK_TARGETS; do
		[ "$t" = direct ] || stop_bg "$t"
	done
	stop_bg iperf3-server
	out "## Bulk: iperf3 -R -t $DURATION, one stream from the server (upstream) to the client, median of $REPS"
	out ""
	out "Ratio: Gbit/s ÷ direct in the same repetition (median). CPU: the proxy's utime+stime ÷ GiB received."
	out ""
	awk -F'\t' -v hz="$HZ" -v order="$BULK_TARGETS" -v kv="$KV" "$AWK_LIB"'
	$1 == "bulk" { mb[$2, $3] = $4; reps[$3] = reps[$3] " " $2; if ($7 != "-") add(OFF, $3, $7)
		if ($6 != "-" && $5 > 0) add(MS, $3, $6 / hz * 1e3 / ($5 / 1073741824)) }
	END {
		print "| target | Gbit/s | ÷ direct | proxy CPU ms/GiB | off-core % |"
		print "|---|---:|---:|---:|---:|"
		nt = split(order, T, " ")
		for (j = 1; j <= nt; j++) { t = T[j]; if (!(t in reps)) continue
			n = split(reps[t], R, " "); g = ""; q = ""
			for (k = 1; k <= n; k++) { g = g " " mb[R[k], t] / 1000
				if ((R[k], "direct") in mb && mb[R[k], "direct"] > 0) q = q " " mb[R[k], t] / mb[R[k], "direct"] }
			printf "| %s | %s | %s | %s | %s |\n", t, f("%.1f", med(g)), (t == "direct") ? "1.00" : f("%.2f", med(q)),
				f("%.0f", med(MS[t])), f("%s", med(OFF[t]))
			printf "bulk.%s.ratio\t%s\n", t, med(q) >> kv
		}
	}' "$RAW" | tee -a "$OUT_MD"
	out ""
}

# idle_one NAME N: fresh proxy, RSS before, with N idle connections open, and after they close.
idle_one() {
	local t=$1 n=$2 port pid r0 r1 r2 f0 f1 opened dropped ctl fd
	start_proxy "$t" "$P_SINK"
	port=$(proxy_port "$t")
	pid=${PID[$t]}
	sleep 0.5
	r0=$(rss_kib "$pid")
	f0=$(fd_count "$pid")
	ctl=$WORK/idle.ctl
	rm -f "$ctl"
	mkfifo "$ctl"
	taskset -c "$CLIENT_CPU" "$IDLE_CONNS" --greeting --timeout 120 "127.0.0.1:$port" "$n" \
		<"$ctl" >"$WORK/idle.$t.$n.out" 2>&1 &
	PID[idle-client]=$!
	exec {fd}>"$ctl"
	for _ in $(seq 1300); do
		grep -q '^open=' "$WORK/idle.$t.$n.out" && break
		kill -0 "${PID[idle-client]}" 2>/dev/null || break
		sleep 0.1
	done
	if ! grep -q '^open=' "$WORK/idle.$t.$n.out"; then
		exec {fd}>&-
		die "idle_conns could not open $n connections through $t: $(tail -n 3 "$WORK/idle.$t.$n.out")"
	fi
	sleep 1
	r1=$(rss_kib "$pid")
	f1=$(fd_count "$pid")
	echo close >&"$fd"
	exec {fd}>&-
	wait "${PID[idle-client]}" || die "idle_conns through $t failed: $(tail -n 3 "$WORK/idle.$t.$n.out")"
	unset "PID[idle-client]"
	# The proxy has let go of both sides once its descriptor count is back where it started.
	for _ in $(seq 100); do
		[ "$(fd_count "$pid")" -le $((f0 + 2)) ] && break
		sleep 0.1
	done
	sleep 2
	r2=$(rss_kib "$pid")
	opened=$(sed -n 's/^open=\([0-9]*\).*/\1/p' "$WORK/idle.$t.$n.out")
	dropped=$(sed -n 's/.*dropped_while_held=\([0-9]*\).*/\1/p' "$WORK/idle.$t.$n.out")
	printf 'idle\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$t" "$r0" "$r1" "$r2" "$opened" "${dropped:-?}" \
		$((f1 - f0)) >>"$RAW"
	stop_bg "$t"
}

section_idle() {
	local n t counts="" skipped=""
	for n in $IDLE_COUNTS; do
		# Each connection costs the proxy two descriptors (see raise_nofile), the client and the sink one.
		if [ "$n" -gt "$MAXCONN" ]; then
			say "idle: skipping $n connections: ulimit -n is $NOFILE"
			skipped="$skipped $n"
			continue
		fi
		counts="$counts $n"
	done
	start_bg idle-sink "$ORIGIN_CPU" "$IDLE_CONNS" --sink --greeting "127.0.0.1:$P_SINK"
	wait_port idle-sink "$P_SINK"
	for n in $counts; do
		for t in $IDLE_TARGETS; do
			say "idle: $t with $n connections"
			idle_one "$t" "$n"
		done
	done
	stop_bg idle-sink
	out "## Idle connections: userspace RSS of the proxy (VmRSS less shared memory), fresh proxy per row"
	out ""
	out "Each connection carried a one-byte greeting from the sink to the client, then sat idle. Per connection:"
	out "(RSS with them open − RSS before) ÷ N. After close: RSS 2 s after they closed − RSS before."
	out "Proxy fds added: descriptors the proxy held with them open (2 per connection: both sides are up)."
	out "Back to baseline: RSS after close within 10 % of the rise (+64 KiB); allocators that keep freed memory"
	out "(glibc arenas, HAProxy's pools) answer no. Kernel socket memory (about 10 KB for two sockets) is not included."
	out ""
	awk -F'\t' -v order="$IDLE_TARGETS" -v kv="$KV" '
	$1 == "idle" { k = $2 SUBSEP $3; r0[k] = $4; r1[k] = $5; r2[k] = $6; op[k] = $7; dr[k] = $8; fds[k] = $9; ns[$2] = 1 }
	END {
		print "| connections | proxy | proxy fds added | RSS before | RSS open | per connection | RSS after close | back to baseline | dropped |"
		print "|---:|---|---:|---:|---:|---:|---:|---:|---:|"
		nt = split(order, T, " ")
		for (n in ns) list = list " " n
		m = split(list, L, " ")
		for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (L[j] + 0 < L[i] + 0) { x = L[i]; L[i] = L[j]; L[j] = x }
		for (i = 1; i <= m; i++) for (j = 1; j <= nt; j++) { k = L[i] SUBSEP T[j]; if (!(k in r0)) continue
			per = (r1[k] - r0[k]) * 1024 / L[i]; back = r2[k] - r0[k]
			printf "| %d | %s | %d | %.1f MiB | %.1f MiB | %.0f B | %+d KiB | %s | %s |\n", L[i], T[j], fds[k], r0[k] / 1024, r1[k] / 1024,
				per, back, (back <= 0.1 * (r1[k] - r0[k]) + 64) ? "yes" : "no", dr[k]
			printf "idle.%s.%s.per\t%s\nidle.%s.%s.rss0\t%s\nidle.%s.%s.rss1\t%s\n", L[i], T[j], per, L[i], T[j], r0[k], L[i], T[j], r1[k] >> kv
		}
	}' "$RAW" | tee -a "$OUT_MD"
	if [ -n "$skipped" ]; then
		out ""
		out "Skipped:$skipped connections: ulimit -n is $NOFILE here (the hard limit); a proxy needs 2 descriptors"
		out "per connection. Raise the hard limit (e.g. LimitNOFILE, or run as root where it can be raised)."
	fi
	out ""
}

# Copy against splice per response size: where the splice path starts to pay, which is what
# --forward auto's --splice-threshold should follow.
section_crossover() {
	local t rep k port pid out c0 c1 line
	say "crossover: origin and sidetap copy / splice / auto"
	start_origin
	for t in $CROSS_TARGETS; do
		start_proxy "$t" "$P_ORIGIN"
	done
	for rep in $(seq "$REPS"); do
		for k in $CROSS_SIZES; do
			for t in $CROSS_TARGETS; do
				say "crossover: rep $rep/$REPS size ${k}k target $t"
				port=$(proxy_port "$t")
				pid=${PID[$t]}
				out=$WORK/wrk.x.$rep.$k.$t.out
				c0=$(cpu_ticks "$pid")
				run_client $((DURATION + 30)) "$out" wrk -t1 -c50 -d"${DURATION}s" \
					"http://127.0.0.1:$port/x${k}k" || die "wrk against $t failed: $(tail -n 3 "$out")"
				c1=$(cpu_ticks "$pid")
				line=$(awk "$WRK_PARSE" "$out")
				printf 'x\t%s\t%s\t%s\t%s\t%s\n' "$rep" "$k" "$t" "$line" $((c1 - c0)) >>"$RAW"
			done
		done
	done
	for t in $CROSS_TARGETS; do
		stop_bg "$t"
	done
	stop_bg origin
	out "## Crossover: sidetap copy vs splice by response size, wrk -t1 -c50 -d${DURATION}s, median of $REPS"
	out ""
	out "Where splice ÷ copy passes 1.00 the splice path pays; auto should be close to the better of the two."
	out ""
	awk -F'\t' -v hz="$HZ" -v sizes="$CROSS_SIZES" "$AWK_LIB"'
	$1 == "x" { add(R, $3 SUBSEP $4, $5); if ($7 > 0) add(U, $3 SUBSEP $4, $9 / hz * 1e6 / $7) }
	END {
		print "| response | copy req/s | splice req/s | auto req/s | splice ÷ copy | copy µs/req | splice µs/req | auto µs/req |"
		print "|---:|---:|---:|---:|---:|---:|---:|---:|"
		n = split(sizes, S, " ")
		for (i = 1; i <= n; i++) { k = S[i]
			c = med(R[k, "sidetap-copy"]); s = med(R[k, "sidetap-splice"]); a = med(R[k, "sidetap-auto"])
			printf "| %s KiB | %.0f | %.0f | %.0f | %.2f | %.1f | %.1f | %.1f |\n", k, c, s, a, (c > 0) ? s / c : 0,
				med(U[k, "sidetap-copy"]), med(U[k, "sidetap-splice"]), med(U[k, "sidetap-auto"]) }
	}' "$RAW" | tee -a "$OUT_MD"
	out ""
}

# HTTPS: direct, sidetap unwrapping (capture off and on), HAProxy terminating and originating TLS.
TLS_TARGETS="direct sidetap-tls sidetap-tls-cap haproxy-tls"
section_tls() {
	local t rep kind port pid out c0 c1 line mode p n name=perf.example.test
	local origin=$((PORT_BASE + 40)) hp=$((PORT_BASE + 41)) sp=$((PORT_BASE + 42)) scp=$((PORT_BASE + 43))
	say "tls: certificates, a TLS origin, the proxies"
	mkdir -p "$WORK/tls" "$WORK/nginx-tmp"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=perf CA" \
		-keyout "$WORK/tls/up-ca.key" -out "$WORK/tls/up-ca.crt" 2>/dev/null
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$name" \
		-keyout "$WORK/tls/origin.key" -out "$WORK/tls/origin.csr" 2>/dev/null
	printf 'subjectAltName=DNS:%s,IP:127.0.0.1\n' "$name" >"$WORK/tls/ext"
	openssl x509 -req -in "$WORK/tls/origin.csr" -CA "$WORK/tls/up-ca.crt" -CAkey "$WORK/tls/up-ca.key" \
		-CAcreateserial -days 2 -extfile "$WORK/tls/ext" -out "$WORK/tls/origin.crt" 2>/dev/null
	cat "$WORK/tls/origin.crt" "$WORK/tls/origin.key" >"$WORK/tls/origin.pem"
	"$BUILD/bin/sidetapctl" ca create --out "$WORK/tls/sidetap-ca" >/dev/null
	{
		echo "$NGINX_USER"
		echo "worker_processes 1; pid $WORK/tls-origin.pid; error_log $WORK/tls-origin.err warn;"
		echo "events { worker_connections 4096; }"
		echo "http { access_log off; keepalive_requests 100000000;"
		echo "  client_body_temp_path $WORK/nginx-tmp/body; proxy_temp_path $WORK/nginx-tmp/proxy;"
		echo "  fastcgi_temp_path $WORK/nginx-tmp/fastcgi; uwsgi_temp_path $WORK/nginx-tmp/uwsgi;"
		echo "  scgi_temp_path $WORK/nginx-tmp/scgi;"
		echo "  server { listen 127.0.0.1:$origin ssl backlog=4096;"
		echo "    ssl_certificate $WORK/tls/origin.crt; ssl_certificate_key $WORK/tls/origin.key;"
		echo "    location = /tiny { return 200 \"ok\\n\"; } } }"
	} >"$WORK/tls-origin.conf"
	start_bg tls-origin "$ORIGIN_CPU" nginx -p "$WORK" -e "$WORK/tls-origin.err" -c "$WORK/tls-origin.conf" -g 'daemon off;'
	wait_port tls-origin "$origin"
	{
		printf 'global\n\tnbthread 1\n\tmaxconn %s\n' "$MAXCONN"
		printf 'defaults\n\tmode http\n\ttimeout connect 5s\n\ttimeout client 10m\n\ttimeout server 10m\n'
		printf '\ttimeout http-keep-alive 10m\n'
		printf 'frontend fe\n\tbind 127.0.0.1:%s ssl crt %s\n\tdefault_backend be\n' "$hp" "$WORK/tls/origin.pem"
		printf 'backend be\n\tserver origin 127.0.0.1:%s ssl verify required ca-file %s sni str(%s) verifyhost %s\n' \
			"$origin" "$WORK/tls/up-ca.crt" "$name" "$name"
	} >"$WORK/haproxy-tls.cfg"
	start_bg haproxy-tls "$PROXY_CPU" haproxy -f "$WORK/haproxy-tls.cfg" -db
	for mode in off on; do
		p=$sp n=sidetap-tls
		[ "$mode" = on ] && p=$scp n=sidetap-tls-cap
		start_bg "$n" "$PROXY_CPU" "$SIDETAP" --outbound-addr "127.0.0.1:$p" --outbound-mode reverse \
			--outbound-upstream "127.0.0.1:$origin" --inbound-addr off --admin-addr off --workers 1 \
			--tls-out unwrap --tls-ca-cert "$WORK/tls/sidetap-ca/ca.crt" \
			--tls-ca-key "$WORK/tls/sidetap-ca/ca.key" --tls-upstream-ca "$WORK/tls/up-ca.crt" \
			--capture "$mode" --ring "$WORK/$n.ring" --sink "file:$WORK/$n.capture" \
			--max-connections "$MAXCONN" --log-level warn
	done
	wait_port haproxy-tls "$hp"
	wait_port sidetap-tls "$sp"
	wait_port sidetap-tls-cap "$scp"
	for rep in $(seq "$REPS"); do
		for kind in keepalive handshake; do
			for t in $TLS_TARGETS; do
				case $t in
				direct) port=$origin ;;
				sidetap-tls) port=$sp ;;
				sidetap-tls-cap) port=$scp ;;
				haproxy-tls) port=$hp ;;
				esac
				pid=${PID[$t]:-}
				out=$WORK/wrk.tls.$rep.$kind.$t.out
				say "tls: rep $rep/$REPS $kind target $t"
				c0=0 c1=0
				[ -n "$pid" ] && c0=$(cpu_ticks "$pid")
				if [ "$kind" = keepalive ]; then
					run_client $((DURATION + 30)) "$out" wrk -t1 -c50 -d"${DURATION}s" \
						"https://127.0.0.1:$port/tiny" || die "wrk against $t failed: $(tail -n 3 "$out")"
				else
					run_client $((DURATION + 30)) "$out" wrk -t1 -c50 -d"${DURATION}s" \
						-H "Connection: close" "https://127.0.0.1:$port/tiny" ||
						die "wrk against $t failed: $(tail -n 3 "$out")"
				fi
				[ -n "$pid" ] && c1=$(cpu_ticks "$pid")
				line=$(awk "$WRK_PARSE" "$out")
				printf 'tls\t%s\t%s\t%s\t%s\t%s\n' "$rep" "$kind" "$t" "$line" \
					"$([ -n "$pid" ] && echo $((c1 - c0)) || echo -)" >>"$RAW"
			done
		done
	done
	for t in sidetap-tls sidetap-tls-cap haproxy-tls tls-origin; do
		stop_bg "$t"
	done
	out "## TLS: wrk -t1 -c50 -d${DURATION}s over HTTPS, median of $REPS"
	out ""
	out "The URLs name 127.0.0.1: sidetap mints its leaf for that IP and checks the origin's IP SAN."
	out "sidetap unwraps (its CA's leaf to the client, the origin verified against the origin's CA) with"
	out "capture off and on; HAProxy terminates with the origin's certificate and originates TLS with"
	out "verification. handshake: one request per connection (Connection: close)."
	out ""
	awk -F'\t' -v hz="$HZ" -v order="$TLS_TARGETS" "$AWK_LIB"'
	$1 == "tls" { add(R, $3 SUBSEP $4, $5); if ($9 != "-" && $7 > 0) add(U, $3 SUBSEP $4, $9 / hz * 1e6 / $7) }
	END {
		print "| connections | target | req/s | ÷ direct | proxy CPU µs/req |"
		print "|---|---|---:|---:|---:|"
		nt = split(order, T, " ")
		split("keepalive handshake", K, " ")
		for (k = 1; k <= 2; k++) for (j = 1; j <= nt; j++) {
			t = T[j]; r = med(R[K[k], t]); dr = med(R[K[k], "direct"])
			printf "| %s | %s | %.0f | %s | %s |\n", K[k], t, r, (dr > 0) ? sprintf("%.2f", r / dr) : "—",
				f("%.1f", med(U[K[k], t]))
		}
	}' "$RAW" | tee -a "$OUT_MD"
	out ""
}

section_splice() {
	say "splice: splice_bench --bytes $SPLICE_BYTES --reps $REPS --cpu $PROXY_CPU"
	run_client $((REPS * 600)) "$WORK/splice.out" "$SPLICE_BENCH" --bytes "$SPLICE_BYTES" \
		--reps "$REPS" --cpu "$PROXY_CPU" || die "splice_bench failed: $(tail -n 3 "$WORK/splice.out")"
	out "## splice_bench: socket → pipe → socket on loopback, one core"
	out ""
	out "Command: \`$SPLICE_BENCH --bytes $SPLICE_BYTES --reps $REPS --cpu $PROXY_CPU\`. CPU is the mover's alone (io-wq workers"
	out "included; source and sink are separate processes on the same core, so CPU % of wall stays below 100)."
	out ""
	sed -n '/^|/p' "$WORK/splice.out" | tee -a "$OUT_MD"
	out ""
}

# ---------------------------------------------------------------- targets

report_targets() {
	out "## PERF.md targets"
	out ""
	awk -F'\t' '
	{ v[$1] = $2 }
	function has(k) { return (k in v) && v[k] != "" }
	function row(id, what, target, got, verdict) { printf "| %s | %s | %s | %s | %s |\n", id, what, target, got, verdict }
	function yn(c) { return c ? "meets" : "misses" }
	END {
		print "| # | what | target | measured | verdict |"
		print "|---|---|---|---|---|"
		if (has("tp.tiny.sidetap-auto.ratio")) {
			r = v["tp.tiny.sidetap-auto.ratio"]; h = v["tp.tiny.haproxy-tcp.ratio"]
			row("T1", "tiny ÷ direct (sidetap auto)", "≥ 0.60 and ≥ 1.1× HAProxy tcp",
				sprintf("%.2f (HAProxy tcp %s)", r, h == "" ? "—" : sprintf("%.2f", h)),
				yn(r >= 0.60 && (h == "" || r >= 1.1 * h)))
		} else row("T1", "tiny ÷ direct", "≥ 0.60", "not run", "—")
		if (has("tp.tiny.sidetap-auto.us"))
			row("T3", "proxy CPU per tiny request (sidetap auto)", "≤ 5 µs (with capture on)",
				sprintf("%.1f µs", v["tp.tiny.sidetap-auto.us"]), yn(v["tp.tiny.sidetap-auto.us"] <= 5) " (capture off: necessary, not sufficient)")
		else row("T3", "proxy CPU per tiny request", "≤ 5 µs", "not run", "—")
		if (has("tp.64k.sidetap-auto.ratio"))
			row("T4", "64 KiB ÷ direct, splice path (auto; forced splice)", "≥ 0.63",
				sprintf("%.2f; %s", v["tp.64k.sidetap-auto.ratio"], has("tp.64k.sidetap-splice.ratio") ? sprintf("%.2f", v["tp.64k.sidetap-splice.ratio"]) : "—"),
				yn(v["tp.64k.sidetap-auto.ratio"] >= 0.63))
		else row("T4", "64 KiB ÷ direct, capture off", "≥ 0.63", "not run", "—")
		if (has("tp.1m.sidetap-auto.ms"))
			row("T5", "1 MiB, proxy CPU per MiB (auto; forced splice)", "≤ 0.30 ms (headers-only capture + splice)",
				sprintf("%.2f ms; %s", v["tp.1m.sidetap-auto.ms"], has("tp.1m.sidetap-splice.ms") ? sprintf("%.2f ms", v["tp.1m.sidetap-splice.ms"]) : "—"),
				yn(v["tp.1m.sidetap-auto.ms"] <= 0.30) " (capture off: necessary, not sufficient)")
		else row("T5", "1 MiB, proxy CPU per MiB", "≤ 0.30 ms", "not run", "—")
		if (has("lat.sidetap-auto.add50"))
			row("T6", "added latency at 2000 req/s (sidetap auto)", "≤ +60 µs p50, ≤ +100 µs p99, max ≤ 5 ms",
				sprintf("%+.0f µs p50, %+.0f µs p99, max %.0f µs", v["lat.sidetap-auto.add50"], v["lat.sidetap-auto.add99"], v["lat.sidetap-auto.max"]),
				yn(v["lat.sidetap-auto.add50"] <= 60 && v["lat.sidetap-auto.add99"] <= 100 && v["lat.sidetap-auto.max"] <= 5000))
		else row("T6", "added latency at 2000 req/s", "≤ +60 µs p50, ≤ +100 µs p99", "not run", "—")
		big = ""
		for (k in v) if (k ~ /^idle\.[0-9]+\.sidetap-auto\.per$/) { split(k, a, "."); if (big == "" || a[2] + 0 > big + 0) big = a[2] }
		if (big != "") {
			p = v["idle." big ".sidetap-auto.per"]
			row("T12", "idle connection, userspace (sidetap, " big " connections)", "≤ 1 KiB", sprintf("%.0f B", p), yn(p <= 1024))
			s0 = v["idle." big ".sidetap-auto.rss0"] / 1024; s1 = v["idle." big ".sidetap-auto.rss1"] / 1024
			row("T13", "RSS (no ring): at start; at " big " connections", "≤ 8 MiB; ≤ 16 MiB at 10k",
				sprintf("%.1f MiB; %.1f MiB", s0, s1), yn(s0 <= 8 && s1 <= 16) (big + 0 < 10000 ? " (10k not measured)" : ""))
		} else {
			row("T12", "idle connection, userspace", "≤ 1 KiB", "not run", "—")
			row("T13", "RSS without the ring", "≤ 8 MiB start, ≤ 16 MiB at 10k", "not run", "—")
		}
		if (has("tp.tiny.sidetap-cap.ratio")) {
			r = v["tp.tiny.sidetap-cap.ratio"]; h = v["tp.tiny.haproxy-http.ratio"]
			row("T2", "tiny ÷ direct, capture on (sidetap-cap)", "≥ 0.55 (≥ 1.45× HAProxy http)",
				sprintf("%.2f (HAProxy http %s)", r, h == "" ? "—" : sprintf("%.2f", h)),
				yn(r >= 0.55 && (h == "" || r >= 1.45 * h)))
			row("T3", "proxy CPU per tiny request, capture on (uploader included)", "≤ 5 µs",
				sprintf("%.1f µs", v["tp.tiny.sidetap-cap.us"]), yn(v["tp.tiny.sidetap-cap.us"] <= 5))
		}
		if (has("tp.64k.sidetap-cap.ratio"))
			row("T4", "64 KiB ÷ direct, capture on", "≥ 0.55", sprintf("%.2f", v["tp.64k.sidetap-cap.ratio"]),
				yn(v["tp.64k.sidetap-cap.ratio"] >= 0.55))
		if (has("tp.1m.sidetap-cap.ms"))
			row("T5", "1 MiB, proxy CPU per MiB, capture on (1 MiB body limit)", "≤ 0.6 ms",
				sprintf("%.2f ms", v["tp.1m.sidetap-cap.ms"]), yn(v["tp.1m.sidetap-cap.ms"] <= 0.6))
		if (has("tp.tiny.sidetap-cap.ratio") && has("tp.tiny.sidetap-auto.ratio")) {
			r9 = v["tp.tiny.sidetap-cap.ratio"] / v["tp.tiny.sidetap-auto.ratio"]
			q9 = has("tp.64k.sidetap-cap.ratio") ? v["tp.64k.sidetap-cap.ratio"] / v["tp.64k.sidetap-auto.ratio"] : 0
			row("T9", "capture on ÷ capture off", "≥ 0.92 tiny, ≥ 0.85 64 KiB",
				sprintf("%.2f tiny, %s 64 KiB", r9, q9 ? sprintf("%.2f", q9) : "—"), yn(r9 >= 0.92 && (!q9 || q9 >= 0.85)))
		}
		if (has("cap.tiny.fps"))
			row("T10", "capture loss at full proxied load, tiny responses", "0 drops",
				sprintf("%d dropped per run at %.0f frames/s", v["cap.tiny.dropped"], v["cap.tiny.fps"]),
				yn(v["cap.tiny.dropped"] == 0))
		if (has("cap.frames"))
			row("—", "capture over the whole throughput section (bulk bodies included)", "—",
				sprintf("%d frames, %d shipped, %d dropped", v["cap.frames"], v["cap.consumed"], v["cap.dropped"]), "—")
		row("T15", "epoll backend ÷ io_uring", "≥ 0.9 throughput, ≤ +20% p99", "not yet: epoll backend", "—")
	}' "$KV" | tee -a "$OUT_MD"
	out ""
	out "T1, T3 (capture off), T4 (splice), T5 (splice), T6, T12 and T13 are for sidetap with capture off;"
	out "rows marked capture on are sidetap-cap: capture on, uploader running, segments written to disk."
	out "mitmproxy, the capture peer, is not driven by the suite."
	out ""
}

# ---------------------------------------------------------------- main

WORK=$(mktemp -d /tmp/sidetap-perf.XXXXXX)
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$ROOT/perf/out"
OUT_MD=$ROOT/perf/out/$STAMP.md
RAW=$WORK/raw.tsv
KV=$WORK/summary.tsv
: >"$RAW"
: >"$KV"

need_tools
build
noise_gate
: >"$OUT_MD"
raise_nofile
check_ports
header
for s in $SECTIONS; do
	"section_$s"
done
[ -s "$KV" ] && report_targets
{
	echo "## Raw rows"
	echo ""
	echo "tp: rep size target req/s p99µs requests errors proxy-ticks off-core% ·"
	echo "lat: rep target p50µs p99µs maxµs requests failed · bulk: rep target Mbit/s bytes proxy-ticks off-core% ·"
	echo "idle: N target rss-before rss-open rss-after (KiB) opened dropped proxy-fds-added"
	echo ""
	echo '```'
	cat "$RAW"
	echo '```'
} >>"$OUT_MD"
say "written: $OUT_MD"
