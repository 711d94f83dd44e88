#!/usr/bin/env bash
# Install and start a local PostgreSQL server for the search-worker tests (Debian, as root),
# create role and database "archlab", and print the SQLAlchemy URL on stdout:
#   export ARCHLAB_TEST_POSTGRES_URL=$(.ci/postgres.sh)
# The Python side needs a driver: psycopg2-binary (pyproject's dev extra) or psycopg 3.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ -z "$(ls /usr/lib/postgresql 2>/dev/null)" ]; then
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >/dev/null
fi
version=$(ls /usr/lib/postgresql | sort -V | tail -1)
if [ -z "$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main"')" ]; then
    pg_createcluster "$version" main >&2
fi
pg_ctlcluster "$version" main start >&2 2>&1 || true   # "already running" is fine; stdout carries only the URL
for _ in $(seq 30); do
    pg_isready -q -h 127.0.0.1 -p 5432 && break
    sleep 1
done
pg_isready -q -h 127.0.0.1 -p 5432 || { echo "postgres.sh: server did not come up" >&2; exit 1; }
psql_() { su postgres -c "psql -v ON_ERROR_STOP=1 -qtA -c \"$1\""; }
if [ "$(psql_ "SELECT 1 FROM pg_roles WHERE rolname='archlab'")" != "1" ]; then
    psql_ "CREATE ROLE archlab LOGIN PASSWORD 'archlab'" >&2
fi
if [ "$(psql_ "SELECT 1 FROM pg_database WHERE datname='archlab'")" != "1" ]; then
    psql_ "CREATE DATABASE archlab OWNER archlab" >&2
fi
# the URL form the README documents: archlab picks the installed driver (psycopg2-binary from the dev extra)
echo "postgresql://archlab:archlab@127.0.0.1:5432/archlab"
