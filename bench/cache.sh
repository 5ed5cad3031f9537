#!/usr/bin/env bash
# HTTP cache (issue 4): a cache hit of a 1 KiB and a 100 KiB answer (the origin sends `Cache-Control: public,
# max-age=3600`) in Portico's memory zone, against nginx proxy_cache, Varnish, the bare Node Buffer server (the
# floor) and Portico's own uncached proxy path for the same answers.
#
#   npm run bench -- cache                  # full run: 3 alternating rounds, wrk -t1 -c50 -d10s per measurement
#   BENCH_QUICK=1 npm run bench -- cache    # smoke run: 2 s measurements, 1 s warm-ups
#   npm run bench -- cache profile [1k.txt|100k.txt]   # Portico's cache hit under --cpu-prof
#
# Cache alone on CPU 0 (Varnish's threads too); origin and wrk on CPU 1 (taskset). Knobs as in bench/static.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

step "cache: preparing"
ensure_apt wrk:wrk taskset:util-linux nginx:nginx varnishd:varnish
command -v wrk >/dev/null 2>&1 || die "wrk is required (apt-get install wrk, as root)"
command -v taskset >/dev/null 2>&1 || die "taskset is required (util-linux)"
command -v nginx >/dev/null 2>&1 || warn "nginx not found: its row is skipped"
command -v varnishd >/dev/null 2>&1 || warn "varnishd not found: its row is skipped"
build_portico

if [ "${1:-}" = profile ]; then
  shift
  exec node "$BENCH_DIR/proxy/profile.mjs" cache "$@"
fi
exec node "$BENCH_DIR/cache/driver.mjs" "$@"
