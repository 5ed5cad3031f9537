#!/usr/bin/env bash
# Reverse proxy (issue 3): Portico forwarding a 13-byte answer of a keep-alive Node app server, against a bare
# undici pass-through (the Node floor), node-http-proxy, nginx and HAProxy.
#
#   npm run bench -- proxy                  # full run: 3 alternating rounds, wrk -t1 -c50 -d10s per measurement
#   BENCH_QUICK=1 npm run bench -- proxy    # smoke run: 2 s measurements, 1 s warm-ups
#   npm run bench -- proxy profile          # Portico under --cpu-prof, heaviest functions per request
#
# Proxy alone on CPU 0; app server and wrk on CPU 1 (taskset). Knobs as in bench/static.sh: BENCH_RUNS (3),
# BENCH_DURATION (10s), BENCH_WARMUP (3s), BENCH_CONNECTIONS (50), BENCH_ONLY (e.g. portico,undici), BENCH_REF,
# BENCH_BASE.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

step "proxy: preparing"
ensure_apt wrk:wrk taskset:util-linux nginx:nginx haproxy:haproxy
command -v wrk >/dev/null 2>&1 || die "wrk is required (apt-get install wrk, as root)"
command -v taskset >/dev/null 2>&1 || die "taskset is required (util-linux)"
command -v nginx >/dev/null 2>&1 || warn "nginx not found: its row is skipped"
command -v haproxy >/dev/null 2>&1 || warn "haproxy not found: its row is skipped"
ensure_node_module http-proxy
build_portico

if [ "${1:-}" = profile ]; then
  shift
  exec node "$BENCH_DIR/proxy/profile.mjs" proxy "$@"
fi
exec node "$BENCH_DIR/proxy/driver.mjs" "$@"
