"""The web console in a real headless Chromium (SPEC A4), driven by
Playwright: sign in, create a tenant with a hostile name, suspend it, see
the API refuse it, activate it again, filter the list, set config, read
the audit. Run by tests/console.rs against a running `tenancy serve`.

Usage: console_e2e.py BASE_URL ADMIN_TOKEN SCREENSHOT_DIR [SQLITE_DB]

With SQLITE_DB (the server's store), 29 past days of usage are written
into it for the tenant, so the usage chart has a history to draw.
"""

import json
import os
import sqlite3
import sys
import time
import urllib.error
import urllib.request

from playwright.sync_api import expect, sync_playwright

BASE, TOKEN, SHOTS = sys.argv[1], sys.argv[2], sys.argv[3]
DB = sys.argv[4] if len(sys.argv) > 4 else None
HOSTILE = "<img src=x onerror=\"window.__xss=1\">\"'><script>window.__xss=2</script>"
os.makedirs(SHOTS, exist_ok=True)


def chromium():
    for path in ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/lib/chromium/chromium"):
        if os.path.exists(path):
            return path
    sys.exit("chromium is required: scripts/test.sh installs it (apt-get install chromium)")


def api_status(tenant):
    req = urllib.request.Request(f"{BASE}/api/notes", headers={"X-Tenant-Id": tenant})
    try:
        with urllib.request.urlopen(req) as res:
            return res.status
    except urllib.error.HTTPError as e:
        return e.code


def shot(page, name):
    page.screenshot(path=os.path.join(SHOTS, f"{name}.png"), full_page=True)


with sync_playwright() as pw:
    browser = pw.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: (errors.append(f"dialog: {d.message}"), d.dismiss()))

    # Sign in: a wrong token shows the API's problem detail; then the right one, by keyboard.
    page.goto(f"{BASE}/console")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    # No authentication is configured: every page says tenant data is open.
    expect(page.locator("#auth-warning")).to_contain_text("Authentication: open")
    expect(page.locator("#auth-warning")).to_contain_text("any caller naming a tenant")
    page.get_by_label("Admin token").fill("wrong-token-0000000000")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("admin token")
    shot(page, "01-sign-in-refused")
    page.get_by_label("Admin token").fill(TOKEN)
    page.get_by_label("Admin token").press("Enter")
    expect(page.get_by_role("heading", name="Tenants")).to_be_visible()

    # Create a tenant; a bad slug shows the API's detail first.
    page.get_by_role("link", name="New tenant").click()
    page.get_by_label("Slug").fill("../bad")
    page.get_by_label("Name").fill("x")
    page.get_by_role("button", name="Create tenant").click()
    expect(page.get_by_role("alert")).not_to_be_empty()
    shot(page, "02-create-refused")
    page.get_by_label("Slug").fill("acme")
    page.get_by_label("Name").fill(HOSTILE)
    page.get_by_label("Plan (optional)").fill("pro")
    page.get_by_role("button", name="Create tenant").click()
    expect(page.locator("#tenant-status")).to_have_text("active")
    # The hostile name is text, not markup.
    expect(page.get_by_role("heading", level=2)).to_have_text(HOSTILE)
    assert page.evaluate("window.__xss") is None, "script from a tenant name ran"
    assert page.locator("main img").count() == 0, "markup from a tenant name was inserted"
    shot(page, "03-created")
    assert api_status("acme") == 200

    # Suspend with a reason: the API refuses the tenant at once.
    page.get_by_label("Reason (for a suspension)").fill("unpaid invoice")
    page.get_by_role("button", name="Suspend", exact=True).click()
    expect(page.locator("#tenant-status")).to_have_text("suspended")
    expect(page.locator("#tenant-reason")).to_have_text("unpaid invoice")
    shot(page, "04-suspended")
    assert api_status("acme") == 403, "suspended tenant still served"

    # Activate again.
    page.get_by_role("button", name="Activate", exact=True).click()
    expect(page.locator("#tenant-status")).to_have_text("active")
    assert api_status("acme") == 200

    # Plan and config.
    page.get_by_role("textbox", name="Plan", exact=True).fill("enterprise")
    page.get_by_role("button", name="Save plan").click()
    expect(page.get_by_role("status")).to_contain_text("plan saved")
    page.get_by_label("Key").fill("notes.max")
    page.get_by_label("Value (JSON, or text)").fill("250")
    page.get_by_role("button", name="Set", exact=True).click()
    expect(page.locator("main")).to_contain_text("notes.max")
    page.get_by_label("Key").fill("bad key!")
    page.get_by_label("Value (JSON, or text)").fill("1")
    page.get_by_role("button", name="Set", exact=True).click()
    expect(page.get_by_role("alert")).not_to_be_empty()

    # Recent audit entries.
    page.reload()
    expect(page.locator("#audit")).to_contain_text("tenant.suspend")
    expect(page.locator("#audit")).to_contain_text("config.set")
    shot(page, "05-tenant-page")

    # Usage: the page draws the last 30 days from the admin API. Past days
    # are written straight into the store (a history this test cannot wait
    # for); today's requests are the ones made above, flushed by the report.
    if DB:
        tenant_id = page.locator("dl dd").first.inner_text()
        now = int(time.time())
        today = now - now % 86400
        with sqlite3.connect(DB) as db:
            for days_ago in range(1, 30):
                db.execute(
                    "INSERT INTO tenancy_usage (tenant_id, hour, metric, value) VALUES (?, ?, 'requests', ?)",
                    (tenant_id, today - days_ago * 86400 + 12 * 3600, 40 + (days_ago * 37) % 160),
                )
        page.reload()
        chart = page.locator("#usage-chart")
        expect(chart).to_be_visible()
        bars = chart.locator("rect")
        assert bars.count() == 30, f"{bars.count()} bars"
        drawn = [int(bars.nth(i).get_attribute("data-requests")) for i in range(30)]
        assert sum(1 for d in drawn if d > 0) >= 29, drawn
        assert drawn[-1] > 0, f"today's requests are not drawn: {drawn}"
        expect(page.locator("#usage-totals")).to_contain_text("requests")
        chart.scroll_into_view_if_needed()
        shot(page, "05c-usage-chart")

    # Export as a background job, then download its archive.
    page.get_by_role("button", name="Export", exact=True).click()
    expect(page.locator("#jobs")).to_contain_text("tenancy.export — done", timeout=30000)
    with page.expect_download() as download:
        page.locator("#jobs li").first.get_by_role("button", name="Download").click()
    saved = download.value.path()
    assert os.path.getsize(saved) > 0, "the downloaded archive is empty"
    shot(page, "05b-tenant-export")

    # The list: search and status filter.
    page.get_by_role("link", name="Tenants", exact=True).click()
    page.get_by_label("Search slug, name or id").fill("acme")
    page.get_by_role("button", name="Filter").click()
    # The filtered list, not the one it replaces (the hash changes at
    # once, the list is drawn after; a status chosen on the old form would
    # be lost with it).
    expect(page.locator("table[data-params='q=acme']")).to_be_visible()
    expect(page.locator("tr[data-tenant='acme']")).to_be_visible()
    page.get_by_label("Status").select_option("suspended")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("table[data-params='q=acme&status=suspended']")).to_be_visible()
    expect(page.locator("caption")).to_contain_text("0 tenants")
    shot(page, "06-list-filtered")

    # A big list pages quickly.
    count = int(os.environ.get("CONSOLE_TENANTS", "0"))
    if count:
        page.goto(f"{BASE}/console#/tenants?page={count // 50 - 1}")
        started = time.monotonic()
        page.reload()
        expect(page.locator("caption")).to_contain_text(f"page {count // 50}")
        took = (time.monotonic() - started) * 1000
        print(f"console list of {count + 1} tenants, page {count // 50}: {took:.0f} ms "
              f"(API {page.evaluate('document.body.dataset.listMs')} ms)")
        shot(page, "07-big-list")

    assert not errors, errors
    browser.close()
print("console e2e: ok")
