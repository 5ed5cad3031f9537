#!/usr/bin/env bash
# Compression of cached answers (issue 11): a cache hit of a 20 KiB JSON answer served identity, gzip and br
# by the `compress` middleware (the cache stores identity, each hit is compressed), against the same hit with
# the variants stored by the cache (the origin sends each encoding once; the cache keys them by Accept-Encoding),
# which is what "store one variant per encoding" costs per hit.
#
#   npm run bench -- compress              # 3 alternating rounds, wrk -t1 -c50 -d5s per measurement
#   BENCH_QUICK=1 npm run bench -- compress
#
# Portico on CPU 0; wrk and the origin (in the driver) on CPU 1 (taskset).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

step "compress: preparing"
ensure_apt wrk:wrk taskset:util-linux
command -v wrk >/dev/null 2>&1 || die "wrk is required (apt-get install wrk, as root)"
command -v taskset >/dev/null 2>&1 || die "taskset is required (util-linux)"
build_portico
exec taskset -c 1 node "$BENCH_DIR/compress/driver.mjs" "$@"
