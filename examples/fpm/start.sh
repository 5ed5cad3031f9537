#!/bin/sh
# Starts PHP-FPM for the showcase (Portico runs this per slot: upstreams.php.spawn in examples/portico.yaml).
# Debian/Ubuntu name it php-fpm8.2 (8.3, ...) in /usr/sbin. Without PHP-FPM on this machine, a FastCGI stand-in
# written in Node (stand-in.mjs) answers instead, so that the rest of the showcase runs: `apt install php-fpm`
# for the real thing.
cd "$(dirname "$0")" || exit 1
mkdir -p ../var
for name in php-fpm8.4 php-fpm8.3 php-fpm8.2 php-fpm8.1 php-fpm; do
  for dir in /usr/sbin /usr/local/sbin /usr/bin /usr/local/bin /opt/homebrew/sbin; do
    if [ -x "$dir/$name" ]; then
      # -R: php-fpm refuses to run as root without it (CI and containers run as root)
      if [ "$(id -u)" = 0 ]; then exec "$dir/$name" -F -y fpm.conf -p . -R; fi
      exec "$dir/$name" -F -y fpm.conf -p .
    fi
  done
done
echo "php-fpm is not installed (apt install php-fpm): a FastCGI stand-in answers http://php.localhost:8080/ instead" >&2
exec node stand-in.mjs
