# Shared steps for bench scenarios; sourced, not run. Sets BENCH_DIR, ROOT_DIR and OUT_DIR.
# shellcheck shell=bash

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT_DIR=$(cd "$BENCH_DIR/.." && pwd)
OUT_DIR="$BENCH_DIR/out"
mkdir -p "$OUT_DIR"

# Colour only when stdout is a terminal (and NO_COLOR is unset), so logs and CI output stay plain.
if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then
  C_BOLD=$'\e[1m' C_DIM=$'\e[2m' C_GREEN=$'\e[32m' C_YELLOW=$'\e[33m' C_RED=$'\e[31m' C_RESET=$'\e[0m'
else
  C_BOLD='' C_DIM='' C_GREEN='' C_YELLOW='' C_RED='' C_RESET=''
fi

step() { printf '%s==>%s %s\n' "$C_BOLD" "$C_RESET" "$*"; }
info() { printf '    %s%s%s\n' "$C_DIM" "$*" "$C_RESET"; }
warn() { printf '    %swarning:%s %s\n' "$C_YELLOW" "$C_RESET" "$*" >&2; }
die() { printf '%serror:%s %s\n' "$C_RED" "$C_RESET" "$*" >&2; exit 1; }

# ensure_apt CMD:PKG...: installs the Debian packages whose command is missing. Needs root; without it the
# missing commands are reported and left out (the caller decides what it can do without them).
APT_UPDATED=0
ensure_apt() {
  local missing=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    warn "not root: cannot apt-get install ${missing[*]}; install them to include them"
    return 0
  fi
  info "apt-get install -y ${missing[*]}"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >"$OUT_DIR/apt.log" 2>&1; then
    if [ "$APT_UPDATED" -eq 0 ]; then
      info "install failed; apt-get update, then retrying"
      apt-get update >>"$OUT_DIR/apt.log" 2>&1 || true
      APT_UPDATED=1
      DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >>"$OUT_DIR/apt.log" 2>&1 ||
        warn "apt-get install ${missing[*]} failed (see bench/out/apt.log)"
    else
      warn "apt-get install ${missing[*]} failed (see bench/out/apt.log)"
    fi
  fi
}

# ensure_node_module NAME: installs the project's devDependencies when NAME cannot be resolved.
ensure_node_module() {
  (cd "$ROOT_DIR" && node -e "require.resolve('$1')" >/dev/null 2>&1) && return 0
  info "$1 is missing: npm install (devDependencies)"
  (cd "$ROOT_DIR" && npm install --no-audit --no-fund >"$OUT_DIR/npm-install.log" 2>&1) ||
    die "npm install failed (see bench/out/npm-install.log)"
}

# build_ref COMMIT: exports COMMIT into bench/out/ref-<sha>/, compiles its src/ there and prints that folder.
build_ref() {
  local sha dir
  sha=$(git -C "$ROOT_DIR" rev-parse --short "$1^{commit}") || die "$1 is not a commit"
  dir="$OUT_DIR/ref-$sha"
  rm -rf "$dir" && mkdir -p "$dir"
  git -C "$ROOT_DIR" archive "$sha" -- src tsconfig.json package.json | tar -x -C "$dir"
  ln -s "$ROOT_DIR/node_modules" "$dir/node_modules"
  # Only src/ is compiled: the commit's tests are not needed to serve.
  (cd "$dir" && node "$ROOT_DIR/node_modules/typescript/bin/tsc" -p tsconfig.json >"$OUT_DIR/build.log" 2>&1) || {
    cat "$OUT_DIR/build.log" >&2
    die "building $1 failed"
  }
  printf '%s\n' "$dir"
}

# build_portico: compiles the Portico to measure and exports PORTICO_DIR (where its dist/ is).
# By default that is the working tree (`npm run build`). With BENCH_REF=<commit> (e.g. HEAD), that commit is
# exported with `git archive` into bench/out/ref-<sha>/ and built there, so a committed version can be
# measured (or two compared) while the working tree is being edited. The working tree is never changed.
# With BENCH_BASE=<commit>, that commit is built too and measured as the extra contender `portico-base`, in
# the same rounds: an A/B of two versions on one machine at one time (PORTICO_BASE_DIR, PORTICO_BASE_VERSION).
build_portico() {
  if [ -n "${BENCH_BASE:-}" ]; then
    info "building base $BENCH_BASE"
    PORTICO_BASE_DIR=$(build_ref "$BENCH_BASE") || exit 1
    PORTICO_BASE_VERSION=$(git -C "$ROOT_DIR" rev-parse --short "$BENCH_BASE")
    export PORTICO_BASE_DIR PORTICO_BASE_VERSION
  fi
  if [ -z "${BENCH_REF:-}" ]; then
    info "npm run build"
    (cd "$ROOT_DIR" && npm run --silent build >"$OUT_DIR/build.log" 2>&1) || {
      cat "$OUT_DIR/build.log" >&2
      die "npm run build failed (to measure a commit instead: BENCH_REF=HEAD npm run bench)"
    }
    PORTICO_DIR=$ROOT_DIR
  else
    info "building $BENCH_REF"
    PORTICO_DIR=$(build_ref "$BENCH_REF") || exit 1
  fi
  export PORTICO_DIR
  PORTICO_VERSION=$(git -C "$ROOT_DIR" rev-parse --short "${BENCH_REF:-HEAD}")
  if [ -z "${BENCH_REF:-}" ] && [ -n "$(git -C "$ROOT_DIR" status --porcelain -- src)" ]; then
    PORTICO_VERSION+=" + uncommitted changes in src/"
  fi
  export PORTICO_VERSION
}
