#!/usr/bin/env bash
# Fuzzing (SPEC F4): a bounded run of every cargo-fuzz target, seeded from
# fuzz/corpus/<target>/ (new inputs go to a temporary directory, not the
# repository). Needs the nightly toolchain; installs cargo-fuzz when missing.
#
#   scripts/fuzz.sh [seconds-per-target=10] [target ...]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
shift || true
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "fuzzing skipped: no nightly toolchain (cargo-fuzz needs it; rustup toolchain install nightly)"
  exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz (crates.io)"
  cargo install cargo-fuzz --locked >/dev/null
fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(rewrite resolvers jwt names config)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cargo +nightly fuzz build -O >/dev/null
status=0
for t in "${targets[@]}"; do
  mkdir -p "$work/$t"
  log="$work/$t.log"
  if cargo +nightly fuzz run -O "$t" "$work/$t" "fuzz/corpus/$t" -- \
      -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    echo "fuzz $t: $runs executions in ${secs}s, no failure"
  else
    echo "fuzz $t: FAILED (crash input under fuzz/artifacts/$t/); last lines:" >&2
    tail -30 "$log" >&2
    status=1
  fi
done
exit $status
