#!/usr/bin/env bash
# Cluster-wide rate limits (issue 19, performance): a route whose rate_limit's bucket is in Redis against the same
# rule kept in the box (`scope: box`) and against no rate limit, on a box with a `cluster` section, at a fixed request
# rate (CPU per request of Portico and of redis-server, p50/p99) and at wrk's most; then `redis-benchmark -t get -P 1`
# (and EVALSHA of the rate script) on the same machine as the floor of one Redis round trip.
#
#   npm run bench -- cluster-rate
#
# Knobs: BENCH_RATE (1000 req/s), BENCH_RATE_SECONDS (8), BENCH_DURATION (wrk, 5s), BENCH_ROUNDS (3).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

step "cluster-rate: preparing"
ensure_apt wrk:wrk taskset:util-linux redis-server:redis-server redis-benchmark:redis-tools
for tool in wrk taskset redis-server redis-benchmark redis-cli; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is required (apt-get install wrk util-linux redis-server redis-tools, as root)"
done
build_portico
# The driver is the load generator: it shares CPU 1 with wrk and redis-server; Portico has CPU 0.
exec taskset -c 1 node "$BENCH_DIR/cluster-rate/driver.mjs" "$@"
