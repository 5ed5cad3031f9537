#!/usr/bin/env bash
# Concurrent A/B of two static contenders (bench/static/pair.mjs): both on CPU 0 at the same time, one wrk each
# on CPU 1; prints the ratio of their request rates round by round. For changes of a few percent, which
# sequential rounds on a VM cannot show.
#
#   BENCH_BASE=<commit> npm run bench -- pair                # the working tree against that commit
#   npm run bench -- pair floor portico [1k.txt|100k.txt]    # any two ids from bench/static/contenders.mjs
#
# Knobs: BENCH_RUNS (5), BENCH_DURATION (4s), BENCH_REF / BENCH_BASE as in the static scenario.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

step "pair: preparing"
ensure_apt wrk:wrk taskset:util-linux
command -v wrk >/dev/null 2>&1 || die "wrk is required (apt-get install wrk, as root)"
build_portico

exec node "$BENCH_DIR/static/pair.mjs" "$@"
