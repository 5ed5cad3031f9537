#!/usr/bin/env bash
# `npm run bench [-- SCENARIO]`: runs one benchmark scenario (default: static).
#
# Each scenario is bench/SCENARIO.sh; it sources bench/lib/common.sh for the shared steps (installing the
# tools, building Portico, progress output) and usually hands the measuring to a Node driver under
# bench/SCENARIO/. Results go to stdout and to bench/out/ (git-ignored); bench/RESULTS.md is written by hand
# from a real run.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
scenario=${1:-static}
[ $# -gt 0 ] && shift

if [ ! -f "$BENCH_DIR/$scenario.sh" ]; then
  echo "bench: unknown scenario '$scenario'" >&2
  echo "available: $(cd "$BENCH_DIR" && ls ./*.sh | sed 's|^\./||; s|\.sh$||' | grep -vx run | tr '\n' ' ')" >&2
  exit 2
fi
exec bash "$BENCH_DIR/$scenario.sh" "$@"
