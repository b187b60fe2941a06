#!/usr/bin/env bash
# `tenancy migrate` at scale (SPEC I7), measured, not asserted: N tenant
# schemas (default 10,000) on PostgreSQL, schema strategy, 4 jobs:
#   1. the first `tenancy migrate` (creates each role and schema, applies
#      0001) — the setup, timed for reference;
#   2. one new migration (0002) applied to every schema;
#   3. a re-run with nothing to do (the version index answers in one query);
#   4. the same re-run with --verify (opens every schema, the old way).
#
#   scripts/bench-migrate.sh [N=10000] [JOBS=4]
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-10000}"
jobs="${2:-4}"
pg="postgres://postgres@127.0.0.1:5432"
cargo build --release -p tenancy-cli >/dev/null
bin="$PWD/target/release/tenancy"
work="$(mktemp -d)"
db="tenancy_bench_migrate_$$"
cleanup() {
  psql "$pg/$db" -Atc "SELECT 'DROP ROLE IF EXISTS \"tenant_' || id || '\";' FROM tenancy_tenants" >"$work/roles.sql" 2>/dev/null || true
  psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
  psql "$pg/postgres" -q -f "$work/roles.sql" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
psql "$pg/postgres" -qc "CREATE DATABASE \"$db\""
export DATABASE_URL="$pg/$db"
export TENANCY__LIFECYCLE__ISOLATION_STRATEGY=schema
export TENANCY__LIFECYCLE__MIGRATIONS_DIR="$work/migrations"
mkdir -p "$work/migrations"
echo "CREATE TABLE items (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL);" >"$work/migrations/0001_items.sql"
cd "$work"
"$bin" tenants list >/dev/null # creates the store's tables
psql "$DATABASE_URL" -qc "INSERT INTO tenancy_tenants (id, slug, name, status, metadata, created_at, updated_at) \
  SELECT 'b' || i, 's' || i, 'Tenant ' || i, 'active', '{}', now(), now() FROM generate_series(1, $n) i"
timed() { # label args...
  local label="$1"; shift
  local start end
  start=$(date +%s.%N)
  "$bin" migrate --jobs "$jobs" "$@" 2>/dev/null | tail -n1 >"$work/last"
  end=$(date +%s.%N)
  printf '%-52s %7.2f s   %s\n' "$label" "$(echo "$end - $start" | bc)" "$(cat "$work/last")"
}
echo "tenancy migrate over $n tenant schemas, $jobs jobs:"
timed "first run: create roles + schemas, apply 0001"
echo "CREATE TABLE tags (id BIGSERIAL PRIMARY KEY, label TEXT NOT NULL);" >"$work/migrations/0002_tags.sql"
timed "one new migration (0002) on every schema"
timed "re-run, nothing to do (version index)"
timed "re-run, nothing to do, --verify (every schema)" --verify
