#!/usr/bin/env bash
# CPU profile of a static contender (Portico by default) under wrk load:
#
#   npm run bench -- profile-static [portico|floor|sirv] [1k.txt|100k.txt]    # defaults: portico 1k.txt
#
# The server runs pinned to CPU 0 with `node --cpu-prof`, wrk on CPU 1 (-t1 -c50, BENCH_DURATION, default 10s);
# the profile goes to bench/out/profile/ and its heaviest functions are printed (bench/tools/cpuprofile-top.mjs).
# Open the .cpuprofile in Chrome DevTools (Performance tab) for the flame chart. BENCH_REF works as in static.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

step "profile-static: preparing"
ensure_apt wrk:wrk taskset:util-linux
command -v wrk >/dev/null 2>&1 || die "wrk is required (apt-get install wrk, as root)"
build_portico

exec node "$BENCH_DIR/static/profile.mjs" "$@"
