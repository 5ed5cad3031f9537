#!/usr/bin/env bash
# TLS and HTTP/2: Portico against bare Node servers (the floors) and nginx, on the same certificate, 1 KiB static.
#
#   npm run bench -- tls                 # 3 alternating rounds, 10 s per measurement
#   BENCH_QUICK=1 npm run bench -- tls   # smoke run: 2 s measurements, 1 s warm-ups
#
# Three measurements (bench/tls/driver.mjs): HTTPS/1.1 keep-alive with wrk (Portico vs a bare node:https server,
# target ≥ 0.85×, and nginx); HTTP/2 with h2load, 10 streams per connection (Portico vs a bare node:http2 server
# on the compat (req, res) API, target ≥ 0.8×, and nginx http2); TLS handshakes per second, a new connection per
# request without session resumption (wrk with `Connection: close`; Portico vs nginx, recorded only).
# Server on CPU 0, load generator on CPU 1. Knobs as in the static scenario (BENCH_RUNS, BENCH_DURATION,
# BENCH_WARMUP, BENCH_CONNECTIONS, BENCH_ONLY, BENCH_REF, BENCH_BASE), and BENCH_MEASURES (https,h2,handshake).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

step "tls: preparing"
ensure_apt wrk:wrk nginx:nginx taskset:util-linux h2load:nghttp2-client openssl:openssl
command -v wrk >/dev/null 2>&1 || die "wrk is required (apt-get install wrk, as root)"
command -v taskset >/dev/null 2>&1 || die "taskset is required (util-linux)"
command -v openssl >/dev/null 2>&1 || die "openssl is required to make the benchmark's certificate"
command -v h2load >/dev/null 2>&1 || warn "h2load not found (nghttp2-client): the HTTP/2 rows are skipped"
command -v nginx >/dev/null 2>&1 || warn "nginx not found: its rows are skipped"
build_portico

exec node "$BENCH_DIR/tls/driver.mjs" "$@"
