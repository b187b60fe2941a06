#!/usr/bin/env bash
# Portability figures (SPEC P1–P3), measured, not asserted:
#   1. export throughput of one tenant's ROWS rows of a 10-column table on
#      PostgreSQL (`tenancy export`, `tenancy tenants export`) beside
#      `psql \copy` of the same rows, in the same run;
#   2. the write pause of `tenancy tenants move` for a tenant of MOVE_ROWS
#      notes, to a second PostgreSQL cluster this script starts (initdb in a
#      temporary directory, free port) and stops.
#
#   scripts/bench-portability.sh [ROWS=1000000] [MOVE_ROWS=100000]
set -euo pipefail
cd "$(dirname "$0")/.."
rows="${1:-1000000}"
move_rows="${2:-100000}"
pg="postgres://postgres@127.0.0.1:5432"
cargo build --release -p tenancy-cli >/dev/null
bin="$PWD/target/release/tenancy"
work="$(mktemp -d)"
chmod 755 "$work"
db="tenancy_bench_$$"
cluster=""
cleanup() {
  if [ -n "$cluster" ]; then
    runuser -u postgres -- "$pgbin/pg_ctl" -D "$cluster/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$cluster"
  fi
  for d in $(psql "$pg/postgres" -Atc "SELECT datname FROM pg_database WHERE datname = '$db' OR datname LIKE 'tenant\\_%bench%'" 2>/dev/null); do
    psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS \"$d\" WITH (FORCE)" >/dev/null 2>&1 || true
  done
  psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
psql "$pg/postgres" -qc "CREATE DATABASE \"$db\""
export DATABASE_URL="$pg/$db"
cd "$work"

echo "==> $rows rows of a 10-column table for one tenant (and as many for another)"
acme="$("$bin" tenants create --slug acme --name Acme --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
other="$("$bin" tenants create --slug other --name Other --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
psql "$DATABASE_URL" -q -v ON_ERROR_STOP=1 <<SQL
CREATE TABLE wide (id BIGSERIAL PRIMARY KEY, tenant_id TEXT NOT NULL, qty INT, big BIGINT, label TEXT,
  price NUMERIC(12,2), at TIMESTAMPTZ, ref UUID, doc JSONB, flag BOOLEAN, ratio DOUBLE PRECISION);
INSERT INTO wide (tenant_id, qty, big, label, price, at, ref, doc, flag, ratio)
  SELECT t, g, g::bigint * 1000003, 'label ' || g, g / 7.0, now() - g * interval '1 second', gen_random_uuid(),
         jsonb_build_object('n', g, 'tags', jsonb_build_array('a', 'b')), g % 2 = 0, g / 3.0
  FROM (VALUES ('$acme'), ('$other')) v(t), generate_series(1, $rows) g;
CREATE INDEX wide_tenant ON wide (tenant_id, id);
VACUUM ANALYZE wide;
SQL

t() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); echo "$e - $s" | bc -l; }
best() { local b=999999 x; for _ in 1 2 3; do x=$(t "$@"); b=$(echo "if ($x < $b) $x else $b" | bc -l); done; echo "$b"; }
copy_s=$(best psql "$DATABASE_URL" -c "\\copy (SELECT * FROM wide WHERE tenant_id = '$acme' ORDER BY id) TO '$work/copy.txt'")
export_s=$(best "$bin" export wide --tenant-id acme --format ndjson --output "$work/wide.ndjson")
archive_s=$(best "$bin" tenants export acme --output "$work/acme.tar")
lines=$(wc -l < "$work/wide.ndjson")
rate() { echo "$rows / $1" | bc -l | xargs printf '%.0f'; }
ratio() { echo "$1 / $copy_s" | bc -l | xargs printf '%.2f'; }
printf '%-44s %8.2f s %10s rows/s\n' "psql \\copy (text format, baseline)" "$copy_s" "$(rate "$copy_s")"
printf '%-44s %8.2f s %10s rows/s  %sx the baseline time\n' "tenancy export wide --format ndjson" "$export_s" "$(rate "$export_s")" "$(ratio "$export_s")"
printf '%-44s %8.2f s %10s rows/s  %sx the baseline time\n' "tenancy tenants export (archive, all tables)" "$archive_s" "$(rate "$archive_s")" "$(ratio "$archive_s")"
echo "(exported lines: $lines; best of 3 runs each)"

echo "==> move pause for a tenant of $move_rows notes"
pgbin="$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | head -n1)")"
cluster="$(mktemp -d)"
chown postgres:postgres "$cluster"
runuser -u postgres -- "$pgbin/initdb" -D "$cluster/data" -A trust -U postgres --no-sync >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
runuser -u postgres -- "$pgbin/pg_ctl" -D "$cluster/data" -l "$cluster/log" -w \
  -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$cluster" start >/dev/null
mdb="${db}_move"
psql "$pg/postgres" -qc "CREATE DATABASE \"$mdb\""
mkdir -p "$work/move" && cd "$work/move"
export DATABASE_URL="$pg/$mdb"
printf 'tenancy:\n  lifecycle:\n    isolation_strategy: database\n    database_servers:\n      - { name: a, url: "%s" }\n' "$DATABASE_URL" > tenancy.yaml
big="$("$bin" tenants create --slug big --name Big --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
psql "$pg/tenant_$big" -qc "INSERT INTO notes (tenant_id, title, body) SELECT '$big', 'note ' || g, repeat('x', 200) FROM generate_series(1, $move_rows) g"
printf '      - { name: b, url: "postgres://postgres@127.0.0.1:%s/postgres" }\n' "$port" >> tenancy.yaml
"$bin" tenants move big --to-server b --json | python3 -c '
import json, sys
r = json.load(sys.stdin)
print("moved %d rows from %s to %s: writes paused %.0f ms" % (r["rows"], r["from"], r["to"], r["pause_ms"]))'
psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS \"$mdb\" WITH (FORCE)"
