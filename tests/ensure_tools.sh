#!/usr/bin/env bash
# What the integration tests drive besides Python: Debian's psql
# (postgresql-client), Node.js with npm, and the npm packages in tests/js
# (node-postgres). CI machines start without them; each is installed only
# when missing, so a second run does nothing.
set -euo pipefail
cd "$(dirname "$0")"

apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  elif command -v sudo >/dev/null 2>&1; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  fi
}

missing=()
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
# A PostgreSQL server, to compare answers with (tests/conftest.py postgres)
compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || missing+=(postgresql)
# PostgreSQL's JDBC driver and a JDK to compile the JDBC test program with
[ -f /usr/share/java/postgresql.jar ] || missing+=(libpostgresql-jdbc-java)
command -v javac >/dev/null 2>&1 || missing+=(default-jdk-headless)
if [ ${#missing[@]} -gt 0 ]; then
  apt_install "${missing[@]}"
fi
command -v psql >/dev/null 2>&1 || { echo "psql is required for the tests: install postgresql-client" >&2; exit 1; }
compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || { echo "PostgreSQL is required for the tests: install postgresql" >&2; exit 1; }
command -v node >/dev/null 2>&1 || { echo "Node.js is required for the tests: install nodejs and npm" >&2; exit 1; }

# node_modules/.package-lock.json is what npm wrote at the last install: newer
# than package-lock.json means the packages match it.
if [ ! -f js/node_modules/.package-lock.json ] || [ js/package-lock.json -nt js/node_modules/.package-lock.json ]; then
  (cd js && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
