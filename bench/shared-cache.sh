#!/usr/bin/env bash
# Shared cache tier (issue 19): a hit from the box's memory, a hit from the cluster's Redis and a miss to the app,
# per request (latency one at a time, requests/s at 16 in flight), against a box with no shared tier.
#
#   npm run bench -- shared-cache                # 3000 URLs per phase
#   BENCH_QUICK=1 npm run bench -- shared-cache  # 500 URLs per phase
#   BENCH_SHARED_URLS=N npm run bench -- shared-cache
#
# The boxes on CPU 0 (taskset); Redis, the origin and the client unpinned.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

step "shared-cache: preparing"
ensure_apt taskset:util-linux redis-server:redis-server
command -v redis-server >/dev/null 2>&1 || die "redis-server is required (apt-get install redis-server)"
build_portico
exec node "$BENCH_DIR/shared-cache/driver.mjs" "$@"
