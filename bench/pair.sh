#!/usr/bin/env bash
# Concurrent A/B (bench/pair/driver.mjs, loop in bench/lib/pair.mjs): two contenders of one scenario on CPU 0 at
# the same time, one wrk each on CPU 1 (with the app server for proxy and cache); prints the ratio of their
# request rates round by round, then the median, min and max ratio. For changes of a few percent, which
# sequential rounds on a VM cannot show: two identical builds read 0.98–1.02.
#
#   BENCH_BASE=<commit> npm run bench -- pair                 # = pair all: static, proxy and cache hits, portico / portico-base
#   BENCH_BASE=<commit> npm run bench -- pair static          # one scenario (static, proxy or cache)
#   BENCH_BASE=<commit> npm run bench -- pair cache 100k.txt  # static and cache: 1k.txt (default) or 100k.txt
#   npm run bench -- pair proxy undici portico                # any two ids of bench/SCENARIO/contenders.mjs (B / A)
#   npm run bench -- pair floor portico [1k.txt|100k.txt]     # static, as before there were other scenarios
#   npm run bench -- pair static portico portico-node24       # the same build on Node 24 / this Node (static, proxy, cache)
#
# Without BENCH_BASE or ids, each scenario pairs Portico with its floor. Results on stdout (and
# bench/out/pair/results.json), progress on stderr; colour only on a terminal. Knobs: BENCH_RUNS (5 rounds),
# BENCH_DURATION (4s), BENCH_WARMUP (2s), BENCH_CONNECTIONS (50), BENCH_QUICK=1 (2 rounds of 2s after 1s),
# BENCH_REF / BENCH_BASE as in the static scenario.
set -euo pipefail
# Preparing is progress: it goes to stderr (and common.sh colours it when stderr is a terminal); fd 3 keeps stdout.
exec 3>&1 1>&2
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

step "pair: preparing"
ensure_apt wrk:wrk taskset:util-linux
# A pair naming nginx (e.g. `pair proxy nginx-stream nginx post-1m`) needs it installed.
case " $* " in *nginx*) ensure_apt nginx:nginx ;; esac
command -v wrk >/dev/null 2>&1 || die "wrk is required (apt-get install wrk, as root)"
command -v taskset >/dev/null 2>&1 || die "taskset is required (util-linux)"
# A pair naming portico-node24 runs the same build on Node 24 (.ci/node24.sh; an installed one is reused).
case " $* " in *portico-node24*)
  NODE24_BIN=$("$ROOT_DIR/.ci/node24.sh" --reuse) || die "installing Node 24 failed (.ci/node24.sh)"
  export NODE24_BIN ;;
esac
build_portico

exec node "$BENCH_DIR/pair/driver.mjs" "$@" 1>&3 3>&-
