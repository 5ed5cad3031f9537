#!/usr/bin/env bash
# Static file serving: Portico against nginx, sirv and a bare Node server (the floor), 1 KiB and 100 KiB.
#
#   npm run bench                 # full run: 3 alternating rounds, wrk -t1 -c50 -d10s per measurement
#   BENCH_QUICK=1 npm run bench   # smoke run: 2 s measurements, 1 s warm-ups
#
# Server on CPU 0, wrk on CPU 1 (taskset). Knobs: BENCH_RUNS (3), BENCH_DURATION (10s), BENCH_WARMUP (3s),
# BENCH_CONNECTIONS (50), BENCH_ONLY (comma list of contenders, e.g. portico,floor), BENCH_REF (a commit to
# build and measure instead of the working tree, e.g. HEAD), BENCH_BASE (a commit measured beside it as
# `portico-base`, for an A/B in one run).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

step "static: preparing"
ensure_apt wrk:wrk nginx:nginx taskset:util-linux
command -v wrk >/dev/null 2>&1 || die "wrk is required (apt-get install wrk, as root)"
command -v taskset >/dev/null 2>&1 || die "taskset is required (util-linux)"
command -v nginx >/dev/null 2>&1 || warn "nginx not found: its row is skipped"
ensure_node_module sirv
build_portico

exec node "$BENCH_DIR/static/driver.mjs" "$@"
