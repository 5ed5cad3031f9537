#!/usr/bin/env bash
# FastCGI (issue 20 §1): a small PHP page through Portico's `php` route vs through nginx's `fastcgi_pass`, to the
# same php-fpm pool (pm static, 4 workers, unix socket), with Portico's and nginx's CPU per request.
#
#   npm run bench -- fastcgi                 # 3 alternating rounds, wrk -t1 -c16 -d10s per measurement
#   BENCH_QUICK=1 npm run bench -- fastcgi   # smoke run: 3 s measurements
#
# The front end alone on CPU 0; php-fpm and wrk on CPU 1 (taskset). Knobs: BENCH_RUNS (3), BENCH_DURATION (10s),
# BENCH_CONNECTIONS (16), BENCH_FPM_WORKERS (4), BENCH_KEEP_CONN (1: both keep their FastCGI connections; 0: neither).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

step "fastcgi: preparing"
ensure_apt wrk:wrk taskset:util-linux nginx:nginx php-fpm8.2:php8.2-fpm
command -v wrk >/dev/null 2>&1 || die "wrk is required (apt-get install wrk, as root)"
[ -x /usr/sbin/php-fpm8.2 ] || die "php-fpm8.2 is required (apt-get install php8.2-fpm, as root)"
command -v nginx >/dev/null 2>&1 || warn "nginx not found: its row is skipped"
build_portico
exec node "$BENCH_DIR/fastcgi/driver.mjs" "$@"
