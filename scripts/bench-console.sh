#!/usr/bin/env bash
# The console's tenant list at N tenants (default 10,000): API page times
# (curl) and, in headless Chromium, page load to rows shown for the first
# page, the last page, a search and a status filter (median of 5).
#
#   scripts/bench-console.sh [tenants]
#
# Needs what scripts/test.sh installs (chromium; Playwright in
# ~/.cache/tenancy-schemathesis).
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-10000}"
venv="${TENANCY_SCHEMATHESIS_VENV:-$HOME/.cache/tenancy-schemathesis}"
cargo build -q --release -p tenancy-cli
bin="$PWD/target/release/tenancy"
work="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
token="bench-console-token-$$"
(cd "$work" && TENANCY_LOG=error "$bin" serve --bind 127.0.0.1:0 --admin-token "$token" >"$work/out" 2>&1) &
pid=$!
for _ in $(seq 1 50); do grep -q "listening on" "$work/out" 2>/dev/null && break; sleep 0.1; done
base="$(grep -o 'http://[0-9.:]*' "$work/out" | head -n1)"
# Bulk insert straight into the SQLite store (creating 10,000 through the
# API would measure provisioning, not the list).
"$venv/bin/python" - "$work/tenancy.db" "$n" <<'PY'
import datetime, sqlite3, sys, uuid
db = sqlite3.connect(sys.argv[1]); n = int(sys.argv[2])
now = datetime.datetime.now(datetime.timezone.utc)
rows = []
for i in range(n):
    ts = (now + datetime.timedelta(microseconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
    rows.append((str(uuid.uuid4()), f"t{i:05d}", f"Tenant {i}", "suspended" if i % 7 == 0 else "active",
                 None, "pro" if i % 3 == 0 else None, "{}", ts, ts))
db.executemany("INSERT INTO tenancy_tenants (id, slug, name, status, status_reason, plan, metadata, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?)", rows)
db.commit()
PY
last=$(( (n + 49) / 50 - 1 ))
for q in "limit=50" "limit=50&offset=$(( last * 50 ))" "limit=50&q=tenant%2099" "limit=50&status=suspended&offset=1000"; do
  curl -s -o /dev/null -w "API GET /admin/tenants?$q: %{time_total}s\n" -H "Authorization: Bearer $token" "$base/admin/tenants?$q"
done
"$venv/bin/python" - "$base" "$token" "$last" <<'PY'
import sys, time
from playwright.sync_api import expect, sync_playwright
base, token, last = sys.argv[1], sys.argv[2], int(sys.argv[3])
with sync_playwright() as pw:
    browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
    page = browser.new_page()
    page.goto(f"{base}/console")
    page.get_by_label("Admin token").fill(token)
    page.get_by_label("Admin token").press("Enter")
    expect(page.locator("caption")).to_contain_text("tenants")
    for frag in ["#/tenants", f"#/tenants?page={last}", "#/tenants?q=tenant%2099", "#/tenants?status=suspended&page=20"]:
        times = []
        for _ in range(5):
            page.goto(f"{base}/console{frag}")
            started = time.monotonic()
            page.reload()
            expect(page.locator("caption")).to_contain_text("page")
            times.append((time.monotonic() - started) * 1000)
        print(f"console {frag}: {sorted(times)[2]:.0f} ms median, page load to rows shown "
              f"(the list request: {page.evaluate('document.body.dataset.listMs')} ms)")
    browser.close()
PY
