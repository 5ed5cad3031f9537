#!/usr/bin/env bash
# gRPC (issue 20): unary calls per second of a @grpc/grpc-js client through Portico (TLS listener, HTTP/2, to an
# h2c:// app server) against the same client straight to the app (TLS) and through nginx's grpc_pass.
#
#   npm run bench -- grpc                  # 3 alternating rounds, 10 s per measurement, 50 calls in flight
#   BENCH_QUICK=1 npm run bench -- grpc    # smoke run
#   BENCH_BASE=<commit> npm run bench -- grpc   # that build too (portico-base), in the same rounds
#   BENCH_BASE=<commit> BENCH_PAIR=1 npm run bench -- grpc   # the two builds at once on CPU 0: CPU per call, after / before
#
# Proxy (Portico or nginx) alone on CPU 0; the app server and the client on CPU 1 (taskset). Knobs: BENCH_RUNS,
# BENCH_DURATION, BENCH_WARMUP, BENCH_CONNECTIONS (calls in flight, on one channel), BENCH_ONLY (e.g. portico,direct),
# BENCH_PROFILE=1 (Portico under node --cpu-prof; profiles in bench/out/grpc/profile/, read with bench/tools/cpuprofile-top.mjs).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

step "grpc: preparing"
ensure_apt taskset:util-linux nginx:nginx
command -v taskset >/dev/null 2>&1 || die "taskset is required (util-linux)"
command -v nginx >/dev/null 2>&1 || warn "nginx not found: its row is skipped"
build_portico
exec taskset -c 1 node "$BENCH_DIR/grpc/driver.mjs" "$@"
