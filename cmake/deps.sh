#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs what sidetap needs to build, test and benchmark, as Debian packages. Idempotent:
# packages already installed are not touched, and nothing runs apt-get when all are there.
#   cmake/deps.sh [build|test|perf|fuzz]...   (default: build test)
set -euo pipefail

build_pkgs=(build-essential cmake pkg-config liburing-dev libssl-dev node-llhttp libmsgpack-dev
	libcriterion-dev libcurl4-openssl-dev librdkafka-dev libzstd-dev zlib1g-dev libjansson-dev
	libyaml-dev)
test_pkgs=(curl iproute2 iptables util-linux procps python3 python3-msgpack openssl nginx-light
	socat zstd python3-jsonpatch python3-yaml)
perf_pkgs=(nginx-light libnginx-mod-stream haproxy wrk nghttp2-client iperf3 procps)
fuzz_pkgs=(clang-14 libclang-rt-14-dev)

want=()
[ $# -eq 0 ] && set -- build test
for what in "$@"; do
	case "$what" in
	build) want+=("${build_pkgs[@]}") ;;
	test) want+=("${test_pkgs[@]}") ;;
	perf) want+=("${perf_pkgs[@]}") ;;
	fuzz) want+=("${fuzz_pkgs[@]}") ;;
	*) echo "deps.sh: unknown set '$what' (accepted: build, test, perf, fuzz)" >&2; exit 2 ;;
	esac
done

missing=()
for p in "${want[@]}"; do
	# An installed package reports "install ok installed"; anything else needs apt-get.
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done
# nginx-light and nginx (or nginx-core) all provide /usr/sbin/nginx: any of them will do.
if [ -x /usr/sbin/nginx ]; then
	missing=("${missing[@]/nginx-light/}")
fi
read -r -a missing <<<"${missing[*]}"
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "deps.sh: missing Debian packages: ${missing[*]}" >&2
	echo "deps.sh: run as root (sudo $0 $*) or install them with: sudo apt-get install ${missing[*]}" >&2
	exit 1
fi
echo "deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
