// The tenancy console: a client of the admin API, nothing more. Every
// value from the API is put on the page with textContent, never as HTML,
// so tenant names and metadata cannot inject markup or script (and the
// page's Content-Security-Policy allows no inline script anyway).
"use strict";

const TOKEN_KEY = "tenancy.admin_token";
const PAGE_SIZE = 50;
const STATUSES = ["active", "suspended", "inactive", "provisioning"];

const main = () => document.getElementById("main");
const token = () => sessionStorage.getItem(TOKEN_KEY);

/** An element with attributes and children (strings become text). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = String(value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function showError(message) {
  document.getElementById("notice").textContent = "";
  document.getElementById("error").textContent = message || "";
}

function showNotice(message) {
  document.getElementById("error").textContent = "";
  document.getElementById("notice").textContent = message || "";
}

class ApiError extends Error {
  constructor(status, problem) {
    super(problem && problem.detail ? problem.detail : `request failed (${status})`);
    this.status = status;
    this.code = problem && problem.code;
  }
}

/** Calls the admin API; a problem+json answer becomes an ApiError with its detail. */
async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${token() || ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  if (!res.ok) {
    if (res.status === 401 && path !== "/admin/tenants?limit=1") {
      sessionStorage.removeItem(TOKEN_KEY);
    }
    throw new ApiError(res.status, data);
  }
  return data;
}

function setTitle(text) {
  document.title = `${text} · tenancy console`;
}

function focusMain() {
  main().focus();
}

function statusBadge(status) {
  return el("span", { class: `status status-${status}`, text: status });
}

// Sign in ---------------------------------------------------------------

function renderSignIn(message) {
  setTitle("Sign in");
  document.getElementById("sign-out").hidden = true;
  const input = el("input", { id: "token", name: "token", type: "password", autocomplete: "off", required: true });
  const form = el("form", { "aria-labelledby": "sign-in-title" },
    el("label", { for: "token" }, "Admin token", input),
    el("button", { type: "submit" }, "Sign in"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    try {
      await api("GET", "/admin/tenants?limit=1");
      showError("");
      location.hash = "#/tenants";
      route();
    } catch (e) {
      sessionStorage.removeItem(TOKEN_KEY);
      showError(e.message);
      input.focus();
    }
  });
  main().replaceChildren(
    el("h2", { id: "sign-in-title", text: "Sign in" }),
    el("p", { text: "The console uses the admin token `tenancy serve` printed at start (or --admin-token)." }),
    form);
  if (message) showError(message);
  input.focus();
}

// Notices are shown after the page is drawn again, so what the operator
// (or a test) sees next is the new state.

// Tenant list -----------------------------------------------------------

async function renderList(params) {
  setTitle("Tenants");
  const q = params.get("q") || "";
  const status = params.get("status") || "";
  const page = Math.max(0, parseInt(params.get("page") || "0", 10) || 0);

  const search = el("input", { id: "search", name: "q", type: "search", value: q });
  const select = el("select", { id: "status-filter", name: "status" },
    el("option", { value: "", text: "Any" }),
    STATUSES.map((s) => el("option", { value: s, selected: s === status, text: s })));
  const filters = el("form", { role: "search", "aria-label": "Filter tenants" },
    el("label", { for: "search" }, "Search slug, name or id", search),
    el("label", { for: "status-filter" }, "Status", select),
    el("button", { type: "submit" }, "Filter"));
  filters.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    if (search.value.trim()) next.set("q", search.value.trim());
    if (select.value) next.set("status", select.value);
    location.hash = `#/tenants?${next}`;
  });

  const body = el("tbody");
  // The query this list shows, for whoever waits for it (a test).
  const table = el("table", { "aria-describedby": "tenant-count", "data-params": params.toString() },
    el("caption", { class: "muted", id: "tenant-count", text: "Loading…" }),
    el("thead", {}, el("tr", {},
      ["Slug", "Name", "Status", "Plan", "Created"].map((h) => el("th", { scope: "col", text: h })))),
    body);
  const pager = el("div", { class: "pager" });
  main().replaceChildren(el("h2", { text: "Tenants" }), filters, table, pager);

  const query = new URLSearchParams({ all: "true", limit: String(PAGE_SIZE), offset: String(page * PAGE_SIZE) });
  if (q) query.set("q", q);
  if (status) query.set("status", status);
  const started = performance.now();
  const result = await api("GET", `/admin/tenants?${query}`);
  for (const t of result.items) {
    body.append(el("tr", { "data-tenant": t.slug },
      el("td", {}, el("a", { href: `#/tenants/${encodeURIComponent(t.id)}`, text: t.slug })),
      el("td", { text: t.name }),
      el("td", {}, statusBadge(t.status)),
      el("td", { text: t.plan || "—" }),
      el("td", { text: new Date(t.created_at).toLocaleString() })));
  }
  const pages = Math.max(1, Math.ceil(result.total / PAGE_SIZE));
  table.querySelector("caption").textContent =
    `${result.total} tenant${result.total === 1 ? "" : "s"}, page ${page + 1} of ${pages}`;
  const go = (p) => {
    const next = new URLSearchParams(params);
    next.set("page", String(p));
    location.hash = `#/tenants?${next}`;
  };
  pager.append(
    el("button", { type: "button", disabled: page === 0, onclick: () => go(page - 1) }, "Previous"),
    el("span", { text: `Page ${page + 1} of ${pages}` }),
    el("button", { type: "button", disabled: page + 1 >= pages, onclick: () => go(page + 1) }, "Next"));
  document.body.dataset.listMs = String(Math.round(performance.now() - started));
}

// One tenant --------------------------------------------------------------

async function renderTenant(id) {
  const path = `/admin/tenants/${encodeURIComponent(id)}`;
  const tenant = await api("GET", path);
  setTitle(tenant.name);

  const details = el("dl", {},
    el("dt", { text: "Id" }), el("dd", { text: tenant.id }),
    el("dt", { text: "Slug" }), el("dd", { text: tenant.slug }),
    el("dt", { text: "Status" }), el("dd", { id: "tenant-status" }, statusBadge(tenant.status)),
    el("dt", { text: "Reason" }), el("dd", { id: "tenant-reason", text: tenant.status_reason || "—" }),
    el("dt", { text: "Plan" }), el("dd", { text: tenant.plan || "—" }),
    el("dt", { text: "Trial ends" }), el("dd", { id: "tenant-trial", text: tenant.trial_ends_at ? new Date(tenant.trial_ends_at).toLocaleString() : "—" }),
    el("dt", { text: "Metadata" }), el("dd", {}, el("code", { text: JSON.stringify(tenant.metadata) })),
    el("dt", { text: "Created" }), el("dd", { text: new Date(tenant.created_at).toLocaleString() }));

  // Status changes.
  const reason = el("input", { id: "reason", name: "reason", type: "text" });
  const act = (action) => async () => {
    try {
      const body = action === "suspend" && reason.value.trim() ? { reason: reason.value.trim() } : undefined;
      await api("POST", `${path}/${action}`, body);
      await renderTenant(id);
      showNotice(`${action}: done`);
    } catch (e) { showError(e.message); }
  };
  const statusForm = el("form", { "aria-label": "Change status", onsubmit: (e) => e.preventDefault() },
    el("label", { for: "reason" }, "Reason (for a suspension)", reason),
    el("button", { type: "button", onclick: act("suspend") }, "Suspend"),
    el("button", { type: "button", onclick: act("activate") }, "Activate"),
    el("button", { type: "button", onclick: act("deactivate") }, "Deactivate"));

  // Plan.
  const plan = el("input", { id: "plan", name: "plan", type: "text", value: tenant.plan || "" });
  const planForm = el("form", { "aria-label": "Change plan" },
    el("label", { for: "plan" }, "Plan", plan),
    el("button", { type: "submit" }, "Save plan"));
  planForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api("PATCH", path, { plan: plan.value.trim() || null });
      await renderTenant(id);
      showNotice("plan saved");
    } catch (e) { showError(e.message); }
  });

  // Config overrides.
  const [config, domains, audit, jobs, usage] = await Promise.all([
    api("GET", `${path}/config`),
    api("GET", `${path}/domains`).catch(() => ({ items: [] })),
    api("GET", `/admin/audit?tenant=${encodeURIComponent(tenant.id)}&limit=10`).catch(() => ({ items: [] })),
    api("GET", `/admin/jobs?tenant=${encodeURIComponent(tenant.id)}&limit=10`).catch(() => ({ items: [] })),
    api("GET", `${path}/usage?from=${new Date(Date.now() - 29 * DAY_MS).toISOString().slice(0, 10)}`).catch(() => null),
  ]);
  const configRows = Object.entries(config || {}).map(([key, value]) =>
    el("tr", {}, el("td", {}, el("code", { text: key })), el("td", {}, el("code", { text: JSON.stringify(value) }))));
  const key = el("input", { id: "config-key", name: "key", type: "text", required: true });
  const value = el("input", { id: "config-value", name: "value", type: "text", required: true });
  const configForm = el("form", { "aria-label": "Set a config value" },
    el("label", { for: "config-key" }, "Key", key),
    el("label", { for: "config-value" }, "Value (JSON, or text)", value),
    el("button", { type: "submit" }, "Set"));
  configForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    let parsed;
    try { parsed = JSON.parse(value.value); } catch (_) { parsed = value.value; }
    try {
      await api("PUT", `${path}/config/${encodeURIComponent(key.value.trim())}`, parsed);
      await renderTenant(id);
      showNotice("config saved");
    } catch (e) { showError(e.message); }
  });

  const sections = [
    el("h2", { text: tenant.name }),
    details,
    el("section", { "aria-labelledby": "status-title" }, el("h3", { id: "status-title", text: "Status" }), statusForm),
    el("section", { "aria-labelledby": "plan-title" }, el("h3", { id: "plan-title", text: "Plan" }), planForm),
    el("section", { "aria-labelledby": "config-title" },
      el("h3", { id: "config-title", text: "Config" }),
      configRows.length
        ? el("table", {}, el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "Key" }), el("th", { scope: "col", text: "Value" }))), el("tbody", {}, configRows))
        : el("p", { class: "muted", text: "No overrides or defaults." }),
      configForm),
  ];
  if (domains.items && domains.items.length) {
    sections.push(el("section", { "aria-labelledby": "domains-title" },
      el("h3", { id: "domains-title", text: "Domains" }),
      el("ul", {}, domains.items.map((d) =>
        el("li", { text: `${d.domain} (${d.status}${d.primary ? ", primary" : ""})` })))));
  }
  sections.push(renderUsage(tenant.id, usage));
  sections.push(renderJobs(id, path, jobs.items || []));
  sections.push(el("section", { "aria-labelledby": "audit-title" },
    el("h3", { id: "audit-title", text: "Recent changes" }),
    audit.items.length
      ? el("ol", { id: "audit" }, audit.items.map((e) =>
          el("li", { text: `${new Date(e.at).toLocaleString()} — ${e.actor}: ${e.action}` })))
      : el("p", { class: "muted", text: "None yet." })));
  main().replaceChildren(...sections);
}

// Usage ------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";
const DAY_MS = 24 * 3600 * 1000;

/** An SVG element with attributes (and text). */
function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

/** The tenant's requests per UTC day over the report's range (the last
 * 30 days, today included), as a bar chart drawn here from the admin
 * API's hourly rows, and the range's totals by metric. */
function renderUsage(tenantId, report) {
  const section = el("section", { "aria-labelledby": "usage-title" },
    el("h3", { id: "usage-title", text: "Usage, last 30 days" }));
  if (!report) {
    section.append(el("p", { class: "muted", text: "Usage is unavailable." }));
    return section;
  }
  const from = Date.parse(report.from);
  const days = Math.max(1, Math.ceil((Date.parse(report.to) - from) / DAY_MS));
  const perDay = new Array(days).fill(0);
  for (const row of report.rows || []) {
    if (row.metric !== "requests") continue;
    const day = Math.floor((Date.parse(row.hour) - from) / DAY_MS);
    if (day >= 0 && day < days) perDay[day] += row.value;
  }
  const max = Math.max(1, ...perDay);
  const [width, height, left, bottom] = [720, 180, 48, 24];
  const barWidth = (width - left) / days;
  const chart = svg("svg", {
    id: "usage-chart", viewBox: `0 0 ${width} ${height}`, width, height,
    role: "img", "aria-label": `Requests per day: ${perDay.reduce((a, b) => a + b, 0)} in ${days} days`,
  });
  chart.append(svg("line", { x1: left, y1: height - bottom, x2: width, y2: height - bottom, stroke: "#868e96" }));
  chart.append(svg("text", { x: left - 6, y: 12, "text-anchor": "end", "font-size": 11, fill: "#495057" }, max));
  chart.append(svg("text", { x: left - 6, y: height - bottom, "text-anchor": "end", "font-size": 11, fill: "#495057" }, 0));
  perDay.forEach((count, day) => {
    const barHeight = Math.round((count / max) * (height - bottom - 8));
    const bar = svg("rect", {
      x: (left + day * barWidth + 1).toFixed(1), y: height - bottom - barHeight,
      width: Math.max(1, barWidth - 2).toFixed(1), height: barHeight, fill: "#1c7ed6",
      "data-day": new Date(from + day * DAY_MS).toISOString().slice(0, 10), "data-requests": count,
    });
    bar.append(svg("title", {}, `${new Date(from + day * DAY_MS).toISOString().slice(0, 10)}: ${count} requests`));
    chart.append(bar);
  });
  for (const [day, anchor] of [[0, "start"], [Math.floor(days / 2), "middle"], [days - 1, "end"]]) {
    const x = anchor === "start" ? left + day * barWidth : anchor === "end" ? width : left + (day + 0.5) * barWidth;
    chart.append(svg("text", {
      x: x.toFixed(1), y: height - 6, "text-anchor": anchor, "font-size": 11, fill: "#495057",
    }, new Date(from + day * DAY_MS).toISOString().slice(5, 10)));
  }
  section.append(chart);
  const totals = (report.totals || {})[tenantId] || {};
  const entries = Object.entries(totals);
  section.append(entries.length
    ? el("table", { id: "usage-totals" },
        el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "Metric" }), el("th", { scope: "col", text: "Total" }))),
        el("tbody", {}, entries.map(([metric, value]) =>
          el("tr", {}, el("td", {}, el("code", { text: metric })), el("td", { text: String(value) })))))
    : el("p", { class: "muted", text: "No usage recorded yet." }));
  return section;
}

// Jobs -------------------------------------------------------------------

/** The tenant's recent background jobs, an export button, and a download
 * button for each finished export (the archive is fetched with the admin
 * token and saved from memory: a plain link would not carry the token). */
function renderJobs(id, path, items) {
  const exportButton = el("button", { type: "button", id: "export" }, "Export");
  exportButton.addEventListener("click", async () => {
    try {
      const accepted = await api("POST", `${path}/export`);
      showNotice(`export queued: job ${accepted.job}`);
      for (let i = 0; i < 120; i += 1) {
        const job = await api("GET", `/admin/jobs/${accepted.job}`);
        if (job.state !== "queued" && job.state !== "running") break;
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
      await renderTenant(id);
    } catch (e) { showError(e.message); }
  });
  const rows = items.map((job) => {
    const text = `#${job.id} ${job.kind} — ${job.state}` +
      (job.attempts ? ` (attempt ${job.attempts}/${job.max_attempts})` : "") +
      (job.last_error ? `: ${job.last_error}` : "");
    const li = el("li", { "data-job": String(job.id) }, el("span", { text }));
    if (job.kind === "tenancy.export" && job.state === "done") {
      const download = el("button", { type: "button", class: "download" }, "Download");
      download.addEventListener("click", async () => {
        try {
          const res = await fetch(`/admin/jobs/${job.id}/result`, {
            headers: { Authorization: `Bearer ${token() || ""}` },
          });
          if (!res.ok) throw new Error(`download failed (${res.status})`);
          const blob = await res.blob();
          const link = el("a", { href: URL.createObjectURL(blob), download: `export-${job.id}.tenancy` });
          document.body.append(link);
          link.click();
          link.remove();
        } catch (e) { showError(e.message); }
      });
      li.append(" ", download);
    }
    return li;
  });
  return el("section", { "aria-labelledby": "jobs-title" },
    el("h3", { id: "jobs-title", text: "Jobs" }),
    rows.length ? el("ol", { id: "jobs" }, rows) : el("p", { class: "muted", text: "None yet." }),
    exportButton);
}

// Create ----------------------------------------------------------------

function renderCreate() {
  setTitle("New tenant");
  const slug = el("input", { id: "new-slug", name: "slug", type: "text", required: true, autocomplete: "off" });
  const name = el("input", { id: "new-name", name: "name", type: "text", required: true, autocomplete: "off" });
  const plan = el("input", { id: "new-plan", name: "plan", type: "text", autocomplete: "off" });
  const form = el("form", { "aria-labelledby": "create-title" },
    el("label", { for: "new-slug" }, "Slug", slug),
    el("label", { for: "new-name" }, "Name", name),
    el("label", { for: "new-plan" }, "Plan (optional)", plan),
    el("button", { type: "submit" }, "Create tenant"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { slug: slug.value.trim(), name: name.value };
    if (plan.value.trim()) body.plan = plan.value.trim();
    try {
      const tenant = await api("POST", "/admin/tenants", body);
      showNotice(`created ${tenant.slug}`);
      location.hash = `#/tenants/${encodeURIComponent(tenant.id)}`;
    } catch (e) {
      showError(e.message);
      slug.focus();
    }
  });
  main().replaceChildren(el("h2", { id: "create-title", text: "New tenant" }), form);
  slug.focus();
}

// Routing ---------------------------------------------------------------

async function route() {
  if (!token()) {
    renderSignIn();
    return;
  }
  document.getElementById("sign-out").hidden = false;
  const hash = location.hash.replace(/^#/, "") || "/tenants";
  const [pathPart, queryPart] = hash.split("?");
  try {
    if (pathPart === "/new") renderCreate();
    else if (pathPart.startsWith("/tenants/")) await renderTenant(decodeURIComponent(pathPart.slice("/tenants/".length)));
    else await renderList(new URLSearchParams(queryPart || ""));
    focusMain();
  } catch (e) {
    if (e.status === 401) renderSignIn(e.message);
    else showError(e.message);
  }
}

/** Says on every page when tenant routes are open to anyone naming a tenant (GET /health's `auth`). */
async function showAuthWarning() {
  try {
    const res = await fetch("/health");
    const health = await res.json();
    if (health && health.auth && health.auth !== "required") {
      document.getElementById("auth-warning").textContent =
        `Authentication: ${health.auth}. ${health.auth_warning || ""}`;
    }
  } catch (_) {
    // The warning is advisory; the console works without it.
  }
}

window.addEventListener("hashchange", () => { showNotice(document.getElementById("notice").textContent); route(); });
window.addEventListener("DOMContentLoaded", () => {
  document.getElementById("sign-out").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showNotice("signed out");
    renderSignIn();
  });
  showAuthWarning();
  route();
});
