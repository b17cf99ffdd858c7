#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Sets up, builds and runs every test: the release build with -Werror (all of
# CTest: unit, integration, network-namespace tests), all but the slow ones
# again under ASan+UBSan, and the stress programs under ThreadSanitizer.
#   sudo tests/run-all.sh
# Network-namespace tests need root; without it they skip and say why.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

cmake/deps.sh build test

echo "== release build (-Werror), all tests"
cmake -S . -B build -DSIDETAP_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure

echo "== ASan+UBSan build, unit, integration (but the gigabyte ones) and stress tests"
cmake -S . -B build-asan -DSIDETAP_WERROR=ON -DSIDETAP_ASAN=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-asan -j"$jobs"
ctest --test-dir build-asan --output-on-failure -L 'unit|integration|stress' -LE slow

echo "== ThreadSanitizer build, engine and ring stress"
cmake -S . -B build-tsan -DSIDETAP_WERROR=ON -DSIDETAP_TSAN=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-tsan -j"$jobs" --target engine_stress ring_stress
ctest --test-dir build-tsan --output-on-failure -L stress
echo "== all tests passed"
