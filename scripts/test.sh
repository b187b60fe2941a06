#!/usr/bin/env bash
# The whole test suite: starts the local services the tests need when they
# are not running, then checks formatting, lints and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }

ensure_postgres() {
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then return 0; fi
  say "PostgreSQL is not answering on 127.0.0.1:5432; starting it"
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
  for _ in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && return 0
    sleep 1
  done
  echo "ERROR: PostgreSQL is required on 127.0.0.1:5432 (trust auth, user postgres)." >&2
  echo "       Install it (apt-get install postgresql) or start it:" >&2
  echo "       pg_ctlcluster --skip-systemctl-redirect \$(ls /etc/postgresql) main start" >&2
  exit 1
}

ensure_redis() {
  if command -v redis-cli >/dev/null 2>&1 && redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then return 0; fi
  say "Redis is not answering on 127.0.0.1:6379; starting it"
  if command -v redis-server >/dev/null 2>&1; then
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null || true
    for _ in $(seq 1 20); do
      redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && return 0
      sleep 0.5
    done
  fi
  echo "ERROR: Redis is required on 127.0.0.1:6379." >&2
  echo "       Install it (apt-get install redis-server) or start it:" >&2
  echo "       redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no" >&2
  exit 1
}

ensure_nats() {
  if (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null; then return 0; fi
  say "NATS is not answering on 127.0.0.1:4222; starting it"
  if command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ]; then
    local bin; bin="$(command -v nats-server || echo /usr/sbin/nats-server)"
    if command -v start-stop-daemon >/dev/null 2>&1; then
      start-stop-daemon --start --oknodo --background --exec "$bin" -- -a 127.0.0.1 -p 4222 || true
    else
      nohup "$bin" -a 127.0.0.1 -p 4222 >/dev/null 2>&1 &
    fi
    for _ in $(seq 1 20); do
      (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null && return 0
      sleep 0.5
    done
  fi
  echo "ERROR: NATS is required on 127.0.0.1:4222 (the event-sink test publishes to it)." >&2
  echo "       Install it (apt-get install nats-server) or start it: nats-server -a 127.0.0.1 -p 4222" >&2
  exit 1
}

# Components some tests start themselves on free loopback ports (dnsmasq for
# domain verification, Caddy for on-demand TLS, pgbouncer in transaction
# mode, nginx for the gateway example), from Debian's packages.
ensure_packages() {
  local missing=()
  command -v dnsmasq >/dev/null 2>&1 || [ -x /usr/sbin/dnsmasq ] || missing+=(dnsmasq-base)
  command -v caddy >/dev/null 2>&1 || missing+=(caddy)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
  command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || missing+=(chromium)
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing ${missing[*]} (Debian packages)"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >/dev/null 2>&1 || {
      apt-get update >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >/dev/null
    } || {
      echo "ERROR: could not install ${missing[*]}: the domain, pgbouncer and gateway tests need them (apt-get install ${missing[*]})" >&2
      exit 1
    }
  else
    echo "ERROR: ${missing[*]} missing and cannot be installed without root: apt-get install ${missing[*]}" >&2
    exit 1
  fi
}

# schemathesis (OpenAPI conformance) and Playwright (drives Debian's
# chromium for the console test), from PyPI, in a virtualenv of their own;
# the tests find it through TENANCY_SCHEMATHESIS.
ensure_schemathesis() {
  local venv="${TENANCY_SCHEMATHESIS_VENV:-$HOME/.cache/tenancy-schemathesis}"
  if [ ! -x "$venv/bin/st" ] || ! "$venv/bin/python" -c "import playwright" >/dev/null 2>&1; then
    say "installing schemathesis and playwright (PyPI) into $venv"
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv >/dev/null 2>&1 || true
      fi
      python3 -m venv "$venv" || {
        echo "ERROR: cannot create a Python virtualenv for schemathesis (install python3 and python3-venv)" >&2
        exit 1
      }
    fi
    "$venv/bin/pip" install -q schemathesis playwright || {
      echo "ERROR: cannot install schemathesis and playwright from PyPI into $venv" >&2
      exit 1
    }
  fi
  export TENANCY_SCHEMATHESIS="$venv/bin/st"
}

# node-oidc-provider, the real OpenID provider the identity tests start on a
# free loopback port (crates/tenancy-axum/tests/oidc/op.mjs), from npm, in a
# directory of its own; the tests find it through TENANCY_OIDC_PROVIDER.
ensure_oidc_provider() {
  local dir="${TENANCY_OIDC_PROVIDER:-$HOME/.cache/tenancy-oidc}"
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "ERROR: node and npm are required: the identity provider tests run node-oidc-provider" >&2
    echo "       (apt-get install nodejs npm; Node 20 or later)" >&2
    exit 1
  fi
  if ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'; then
    echo "ERROR: node-oidc-provider 9 needs Node 20 or later; this is Node $(node --version)" >&2
    exit 1
  fi
  if [ ! -f "$dir/node_modules/oidc-provider/package.json" ]; then
    say "installing oidc-provider (npm) into $dir"
    mkdir -p "$dir"
    [ -f "$dir/package.json" ] || echo '{"name": "tenancy-oidc", "private": true}' > "$dir/package.json"
    (cd "$dir" && npm install --no-audit --no-fund --loglevel=error oidc-provider@9 >/dev/null) || {
      echo "ERROR: cannot install oidc-provider from npm into $dir (npm install oidc-provider@9)" >&2
      exit 1
    }
  fi
  export TENANCY_OIDC_PROVIDER="$dir"
}

ensure_postgres
ensure_redis
ensure_nats
ensure_packages
ensure_schemathesis
ensure_oidc_provider

say "cargo fmt --check"
cargo fmt --all -- --check

say "no module circle in any crate, and the binary's layers (ops, cli, http) kept"
python3 scripts/module-cycles.py

say "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

say "the facade with each feature on its own (no warnings either)"
for features in "" axum jwt postgres sqlite interceptor redis nats; do
  cargo clippy -q -p tenancy --no-default-features ${features:+--features "$features"} -- -D warnings
done

say "cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace -q

say "cargo test"
cargo test --workspace

say "fuzzing: a short run of every target (SPEC F4)"
./scripts/fuzz.sh "${TENANCY_FUZZ_SECONDS:-10}"
