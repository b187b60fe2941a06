#!/usr/bin/env bash
# How long `tenancy doctor` takes on a schema-per-tenant database with many
# tenants (default 1,000): builds a throwaway database on the local
# PostgreSQL with N tenants, each with its role, schema and a table (made in
# SQL, which is much faster than provisioning them one by one), times the
# doctor, then drops the database and the roles. Not part of the test suite.
#
#   scripts/doctor-scale.sh [N]        (needs a built binary: cargo build --release -p tenancy-cli)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-1000}"
PG="${TENANCY_TEST_PG:-postgres://postgres@127.0.0.1:5432/postgres}"
BIN="${TENANCY_BIN:-target/release/tenancy}"
[ -x "$BIN" ] || BIN=target/debug/tenancy
[ -x "$BIN" ] || { echo "build the binary first: cargo build --release -p tenancy-cli" >&2; exit 1; }
RUN="s$(date +%s)$$"
DB="doctor_scale_${RUN}"
URL="${PG%/*}/${DB}"
cleanup() {
  psql "$PG" -qXc "DROP DATABASE IF EXISTS ${DB} WITH (FORCE)" >/dev/null 2>&1 || true
  psql "$PG" -qAtX -c "SELECT format('DROP ROLE %I;', rolname) FROM pg_roles WHERE rolname LIKE 'tenant\_${RUN}\_%'" \
    | psql "$PG" -qX >/dev/null 2>&1 || true
}
trap cleanup EXIT
psql "$PG" -qXc "CREATE DATABASE ${DB}"
export TENANCY__LIFECYCLE__ISOLATION_STRATEGY=schema TENANCY__AUTH__JWT_SECRET=doctor-scale-secret-0123456789abcdef
"$BIN" --database-url "$URL" tenants list >/dev/null   # the store's tables and the recorded strategy
psql "$URL" -qX <<SQL
DO \$\$
DECLARE id text; r text;
BEGIN
  FOR i IN 1..${N} LOOP
    id := '${RUN}_' || i; r := 'tenant_' || id;
    EXECUTE format('CREATE ROLE %I NOLOGIN', r);
    EXECUTE format('GRANT %I TO CURRENT_USER', r);
    EXECUTE format('CREATE SCHEMA %I AUTHORIZATION %I', r, r);
    EXECUTE format('CREATE TABLE %I.notes (id bigserial PRIMARY KEY, body text NOT NULL)', r);
    INSERT INTO tenancy_tenants (id, slug, name, status, created_at, updated_at)
      VALUES (id, 'slug-' || replace(id, '_', '-'), 'Tenant ' || i, 'active', now(), now());
  END LOOP;
END \$\$;
SQL
echo "database ${DB}: ${N} tenants, ${N} schemas and roles"
for run in 1 2 3; do
  start=$(date +%s.%N)
  code=0; "$BIN" --database-url "$URL" doctor >/tmp/doctor-scale.out || code=$?
  end=$(date +%s.%N)
  printf 'run %d: %.2f s (exit %d; %s)\n' "$run" "$(echo "$end - $start" | bc)" "$code" "$(tail -n1 /tmp/doctor-scale.out)"
done
