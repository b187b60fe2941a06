#!/usr/bin/env bash
# Soak (SPEC F1–F2 follow-up; outside the default suite): 100 tenants under
# mixed load through two `tenancy serve` instances on PostgreSQL while
# tenants are suspended and activated every few hundred milliseconds.
# Prints requests served after an acknowledged suspension and the servers'
# RSS at start and end.
#
#   scripts/soak.sh [seconds=120]
set -euo pipefail
cd "$(dirname "$0")/.."
export SOAK_SECONDS="${1:-120}"
cargo test --release -p tenancy-cli --test soak -- --ignored --nocapture soak 2>&1 | grep -E '^(soak|served|RSS)|panicked|test result'
