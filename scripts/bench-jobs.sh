#!/usr/bin/env bash
# Background jobs on PostgreSQL, measured, not asserted (SPEC J3, J5):
#  - trivial jobs per second with 1, 2 and 8 worker loops (JOBS jobs over
#    16 tenants), beside a bare `FOR UPDATE SKIP LOCKED` dequeue-and-delete
#    loop run by pgbench with as many connections, in the same run: the
#    database's own limit for this pattern;
#  - the fairness figure: a tenant's job start latency (p50/p99) while
#    another has 100,000 jobs queued (the test that asserts it is not
#    starved, with its figure printed);
#  - the cost of enqueue_in inside a row-level scoped transaction.
#
#   scripts/bench-jobs.sh [JOBS=20000]
set -euo pipefail
cd "$(dirname "$0")/.."
jobs="${1:-20000}"
pg="postgres://postgres@127.0.0.1:5432"
db="tenancy_bench_jobs_$$"
cleanup() { psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true; }
trap cleanup EXIT
psql "$pg/postgres" -qc "CREATE DATABASE \"$db\"" >/dev/null
export TENANCY_BENCH_DB="$pg/$db" JOBS="$jobs"
cargo bench -q -p tenancy-sql --bench jobs --no-run >/dev/null 2>&1
bare() { # the bare loop: $1 connections until JOBS rows are gone
  psql "$pg/$db" -qc "DROP TABLE IF EXISTS bare_jobs; CREATE TABLE bare_jobs (id BIGSERIAL PRIMARY KEY, tenant_id TEXT, payload JSONB);
    INSERT INTO bare_jobs (tenant_id, payload) SELECT 't' || (g % 16), jsonb_build_object('n', g) FROM generate_series(1, $jobs) g;" >/dev/null
  local script; script="$(mktemp)"
  echo "DELETE FROM bare_jobs WHERE id = (SELECT id FROM bare_jobs ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id;" > "$script"
  local per=$(( jobs / $1 ))
  local tps
  tps="$(pgbench -n -c "$1" -j "$1" -t "$per" -f "$script" "$pg/$db" 2>/dev/null | awk '/^tps/ {print $3}')"
  rm -f "$script"
  printf 'bare SKIP LOCKED loop, %s connections: %.0f jobs/s\n' "$1" "$tps"
}
for workers in 1 2 8; do
  bare "$workers"
  cargo bench -q -p tenancy-sql --bench jobs -- throughput "$workers" 2>/dev/null | grep 'jobs throughput'
done
cargo bench -q -p tenancy-sql --bench jobs -- enqueue 2>/dev/null | grep 'scoped transaction'
cargo test -q -p tenancy-sql --test jobs a_tenants_backlog_does_not_starve_another -- --nocapture 2>/dev/null | grep '^fairness'
