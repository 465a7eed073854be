#!/usr/bin/env bash
# The integration tests drive the real psql client; install Debian's
# postgresql-client when it is missing (CI machines start without it).
set -euo pipefail
if command -v psql >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-client >/dev/null
elif command -v sudo >/dev/null 2>&1; then
  sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-client >/dev/null
fi
command -v psql >/dev/null 2>&1 || { echo "psql is required for the tests: install postgresql-client" >&2; exit 1; }
