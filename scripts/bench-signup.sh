#!/usr/bin/env bash
# Signup latency with and without the pending pool (SPEC N1), measured,
# not asserted: `POST /admin/tenants` against `tenancy serve` on
# PostgreSQL, for the schema and database strategies, with a 5-table and a
# 50-table migration. With `lifecycle.pending_pool: POOL`, each round signs
# up POOL tenants one after another, then waits for the background refill;
# without the pool (the baseline) every signup provisions.
#
#   [STRATEGIES="schema database"] scripts/bench-signup.sh [ROUNDS=3] [POOL=20]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
size="${2:-20}"
pg="postgres://postgres@127.0.0.1:5432"
cargo build --release -p tenancy-cli >/dev/null
bin="$PWD/target/release/tenancy"
work="$(mktemp -d)"
token="bench-signup-token-$$"
pid=""
db=""
drop_all() { # the test database, its tenants' schemas and roles, their databases
  [ -n "$db" ] || return 0
  local ids
  ids="$(psql "$pg/$db" -Atc "SELECT id FROM tenancy_tenants UNION SELECT id FROM tenancy_pending" 2>/dev/null || true)"
  for id in $ids; do
    psql "$pg/$db" -qc "DROP SCHEMA IF EXISTS \"tenant_$id\" CASCADE" >/dev/null 2>&1 || true
    psql "$pg/$db" -qc "DROP OWNED BY \"tenant_$id\"" >/dev/null 2>&1 || true
    psql "$pg/postgres" -qc "DROP ROLE IF EXISTS \"tenant_$id\"" >/dev/null 2>&1 || true
    psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS \"tenant_$id\" WITH (FORCE)" >/dev/null 2>&1 || true
  done
  psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
  db=""
}
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  drop_all
  rm -rf "$work"
}
trap cleanup EXIT

migrations() { # dir tables
  rm -rf "$1"; mkdir -p "$1"
  for i in $(seq 1 "$2"); do
    printf 'CREATE TABLE t%s (id BIGSERIAL PRIMARY KEY, tenant_ref TEXT, name TEXT NOT NULL, body TEXT, created_at TIMESTAMPTZ NOT NULL DEFAULT now());\nCREATE INDEX t%s_name ON t%s (name);\n' \
      "$i" "$i" "$i" >"$1/$(printf '%04d' "$i")_t$i.sql"
  done
}

pctl() { # file percentile -> ms
  sort -n "$1" | awk -v p="$2" '{v[NR]=$1} END {i=int((NR*p/100)+0.999); if (i<1) i=1; if (i>NR) i=NR; printf "%.1f", v[i]*1000}'
}

pool_ready() {
  "$bin" tenants pool status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["ready"])'
}

run() { # strategy tables pool -> "p50 p99 n"
  local strategy="$1" tables="$2" pool="$3" n=0
  db="tenancy_bench_signup_$$_$RANDOM"
  psql "$pg/postgres" -qc "CREATE DATABASE \"$db\""
  migrations "$work/migrations" "$tables"
  export DATABASE_URL="$pg/$db"
  export TENANCY__LIFECYCLE__ISOLATION_STRATEGY="$strategy"
  export TENANCY__LIFECYCLE__MIGRATIONS_DIR="$work/migrations"
  export TENANCY__LIFECYCLE__PENDING_POOL="$pool"
  : >"$work/times"
  (cd "$work" && exec env TENANCY_LOG=error "$bin" serve --bind 127.0.0.1:0 --admin-token "$token" >"$work/out" 2>&1) &
  pid=$!
  for _ in $(seq 1 100); do grep -q "listening on" "$work/out" 2>/dev/null && break; sleep 0.1; done
  local base
  base="$(grep -o 'http://[0-9.:]*' "$work/out" | head -n1)"
  [ -n "$base" ] || { cat "$work/out" >&2; exit 1; }
  local per_round="$size"
  for round in $(seq 1 "$rounds"); do
    if [ "$pool" -gt 0 ]; then
      for _ in $(seq 1 1200); do [ "$(cd "$work" && pool_ready)" -ge "$pool" ] && break; sleep 0.1; done
    fi
    for i in $(seq 1 "$per_round"); do
      n=$((n + 1))
      curl -sf -o /dev/null -w '%{time_total}\n' -XPOST "$base/admin/tenants" \
        -H "Authorization: Bearer $token" -H 'content-type: application/json' \
        -d "{\"slug\":\"s$round-$i\",\"name\":\"Shop $n\"}" >>"$work/times"
    done
    [ "$pool" -gt 0 ] || break # the baseline needs one round
  done
  kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""
  unset TENANCY__LIFECYCLE__PENDING_POOL
  drop_all
  echo "$(pctl "$work/times" 50) $(pctl "$work/times" 99) $(wc -l <"$work/times")"
}

echo "POST /admin/tenants, one signup at a time; pool of $size, $rounds rounds (refill awaited between rounds)"
printf '%-10s %-7s %-22s %9s %9s %6s\n' strategy tables setup p50_ms p99_ms n
for strategy in ${STRATEGIES:-schema database}; do
  for tables in 5 50; do
    read -r b50 b99 bn <<<"$(run "$strategy" "$tables" 0)"
    printf '%-10s %-7s %-22s %9s %9s %6s\n' "$strategy" "$tables" "no pool (baseline)" "$b50" "$b99" "$bn"
    read -r p50 p99 pn <<<"$(run "$strategy" "$tables" "$size")"
    printf '%-10s %-7s %-22s %9s %9s %6s\n' "$strategy" "$tables" "pending_pool: $size" "$p50" "$p99" "$pn"
  done
done
