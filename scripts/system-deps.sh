#!/usr/bin/env bash
# Debian packages the test suites drive for real: Chromium (dashboard tests through Playwright),
# bubblewrap (the functions sandbox), HAProxy (load balancer in front of data-plane nodes) and wrk
# (load generator for bench/). Idempotent: installs only what is missing; without root or apt-get it
# says what to install and leaves the choice to the user.
set -euo pipefail
declare -A pkg_for=([chromium]=chromium [bwrap]=bubblewrap [haproxy]=haproxy [wrk]=wrk)
missing=()
for cmd in "${!pkg_for[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${pkg_for[$cmd]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "system packages missing: ${missing[*]} (install them with your package manager; tests that need them will fail)" >&2
fi
