#!/usr/bin/env bash
# What cluster mode costs a request that needs nothing of Redis (bench/cluster/driver.mjs): the same build with
# and without a `cluster` section, proxying GET / to one app server, at a fixed request rate (wrk paced by a Lua
# delay), both on CPU 0, the wrks, the app server and the redis-server on CPU 1. Prints CPU time per request and
# p99 of each, round by round, and the median ratios (cluster / plain). Issue 19's target: ≤ 2 %.
#
#   npm run bench -- cluster                        # concurrent rounds (both loaded at once; the default)
#   BENCH_MODE=alternate npm run bench -- cluster   # one at a time, alternating which goes first
#   BENCH_AA=1 npm run bench -- cluster             # the A/A control: two Porticos without cluster (the noise)
#   BENCH_FIRST=b|plain npm run bench -- cluster    # one start order only (default: half the rounds each way,
#                                                   # restarted between: the one started second read ~1.5 % dearer)
#
# Knobs: BENCH_RUNS (7 rounds), BENCH_DURATION (10s), BENCH_WARMUP (3s), BENCH_RATE_CONNECTIONS (16), BENCH_QUIET_WAIT (30 s
# before each round for the rest of the machine to fall under BENCH_NOISE, 5 %; medians over the quiet rounds),
# BENCH_DELAY_MS (5: each connection waits that long after an answer before its next request), BENCH_REF.
set -euo pipefail
exec 3>&1 1>&2
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

step "cluster: preparing"
ensure_apt wrk:wrk taskset:util-linux redis-server:redis-server
command -v wrk >/dev/null 2>&1 || die "wrk is required (apt-get install wrk, as root)"
command -v taskset >/dev/null 2>&1 || die "taskset is required (util-linux)"
command -v redis-server >/dev/null 2>&1 || die "redis-server is required (apt-get install redis-server, as root)"
build_portico

exec node "$BENCH_DIR/cluster/driver.mjs" "$@" 1>&3 3>&-
