#!/usr/bin/env bash
# Flake check: runs the test suite N times (default 10; FLAKE_RUNS=N or the first argument) while one CPU hog
# per core loads the machine, as a busy CI runner would be. Builds once, then runs the same test command as
# `npm test`. Stops at the first failing run, keeps its log under a temporary folder and prints the path.
# Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

runs="${1:-${FLAKE_RUNS:-10}}"
if ! [[ "$runs" =~ ^[1-9][0-9]*$ ]]; then
  echo "flake-check: the run count must be a positive integer, got '$runs'" >&2
  exit 2
fi

logs="$(mktemp -d "${TMPDIR:-/tmp}/portico-flake.XXXXXX")"
hogs=()
stop_hogs() {
  for pid in "${hogs[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${hogs[@]}"; do wait "$pid" 2>/dev/null || true; done
  hogs=()
}
trap stop_hogs EXIT
trap 'exit 130' INT TERM

echo "flake-check: building"
npx tsc -p tsconfig.json

cores="$(nproc 2>/dev/null || echo 2)"
for ((c = 0; c < cores; c++)); do
  node -e 'for (;;) {}' &
  hogs+=("$!")
done
echo "flake-check: $runs runs with $cores CPU hogs (pids ${hogs[*]}); logs in $logs"

passed=0
total_start=$SECONDS
for ((i = 1; i <= runs; i++)); do
  log="$logs/run-$i.log"
  start=$SECONDS
  # The test command of `npm test`, without its build step (built once above).
  if node --test --test-concurrency=2 $(find dist/test -name '*.test.js' | sort) >"$log" 2>&1; then
    passed=$((passed + 1))
    echo "run $i/$runs: pass ($((SECONDS - start)) s)"
    rm -f "$log"
  else
    echo "run $i/$runs: FAIL ($((SECONDS - start)) s)"
    echo "flake-check: failing tests:"
    grep -E '^\s*not ok ' "$log" | grep -v '# TODO' | sed 's/^/  /' || true
    echo "flake-check: the full log is kept at $log"
    echo "flake-check: $passed of $i runs passed before the failure ($((SECONDS - total_start)) s)"
    exit 1
  fi
done
rmdir "$logs" 2>/dev/null || true
echo "flake-check: all $runs runs passed in $((SECONDS - total_start)) s"
