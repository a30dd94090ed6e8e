#!/usr/bin/env bash
# Install what the local stack needs from the OS: a JDK (Kafka), Maven (fetches the
# Kafka jars from Maven Central), PostgreSQL and Redis servers, and promtool (the Debian
# `prometheus` package; tests/deploy checks deploy/prometheus/ with it), and Chromium
# (tests/ops/test_dashboard.py drives it headless through Playwright, which is never
# allowed to download a browser of its own). Idempotent: installs
# only what is missing, and runs `apt-get update` at most once.
set -euo pipefail

missing=()
command -v java >/dev/null 2>&1 || missing+=(default-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)   # promtool: tests/deploy

if [ ${#missing[@]} -eq 0 ]; then
  echo "system deps: java, mvn, postgresql, redis-server, promtool, chromium present"
  exit 0
fi

echo "system deps: installing ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
  echo "error: missing ${missing[*]} and not root (no sudo): install them with your package manager" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: missing ${missing[*]}; this script knows apt-get only: install them yourself" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
# Debian starts the packaged services; sinkfleet runs its own instances on other ports
# (and only promtool is wanted from the prometheus package, whose server would take 9090).
for svc in postgresql redis-server prometheus; do
  if command -v service >/dev/null 2>&1; then $SUDO service "$svc" stop >/dev/null 2>&1 || true; fi
done
echo "system deps: done"
