#!/usr/bin/env bash
# Workers (issue 17 §5): `workers: 2` against `workers: 1` for static 1 KiB, proxy 13 B and cache hits 1 KiB:
# throughput (wrk, unpinned: the load generator shares the cores) and CPU per request of Portico's whole
# process tree (primary + workers) at a fixed request rate, keep-alive and a new connection per request.
#
#   npm run bench -- workers                           # this Node (node:cluster; reusePort too on Node ≥ 22.12)
#   BENCH_NODE=$(npx -y node@24 -p process.execPath) npm run bench -- workers    # under Node 24
#
# Knobs: BENCH_DURATION (6s), BENCH_RUNS (2), BENCH_RATE (2000), BENCH_RATE_NEW (500), BENCH_RATE_SECONDS (8),
# BENCH_ONLY (static,proxy,cache).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

step "workers: preparing"
ensure_apt wrk:wrk taskset:util-linux
command -v wrk >/dev/null 2>&1 || die "wrk is required (apt-get install wrk, as root)"
build_portico
exec node "$BENCH_DIR/workers/driver.mjs" "$@"
