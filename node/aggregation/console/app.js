// oob-node web console: the browser end of the flow (hits -> attacks -> API -> this page).
//
// A static client of the aggregation API (/api/v1), served by the node with a strict CSP.
// SECURITY: everything the API returns is attacker-controlled text (paths, hosts, fragments,
// headers, even rule ids from user rule packs). This file therefore never parses HTML:
//   - no innerHTML / outerHTML / insertAdjacentHTML / document.write anywhere;
//   - elements come from el()/svg(), which accept only a fixed list of harmless attributes,
//     turn every child string into a text node, and only allow internal "#/..." links;
//   - URLs and paths from requests are shown as text, never as href or src;
//   - ids go into URLs through encodeURIComponent only;
//   - the fragment of a hit is highlighted by splitting text into text nodes + <mark>.
// The API token lives in sessionStorage (this tab only) and is sent as a Bearer header.

const TOKEN_KEY = "oob-node.api-token";
const PAUSE_KEY = "oob-node.live-paused";
const REFRESH_MS = 5000;
const PAGE_SIZE = 50;
const MAX_LIMIT = 1000;
const MAX_SHOWN_CHARS = 4000; // long attacker paths are cut for display, never for the API

const CLASS_LABELS = {
  sqli: "SQL injection", xss: "Cross-site scripting", path_traversal: "Path traversal",
  rce: "Command injection", ssti: "Template injection", ssrf: "SSRF", xxe: "XXE",
  ldapi: "LDAP injection", nosqli: "NoSQL injection", jndi: "JNDI / Log4Shell",
  crlf: "CRLF injection", open_redirect: "Open redirect", scanner: "Scanner",
  protocol: "Protocol anomaly",
};
const CLASSES = Object.keys(CLASS_LABELS);
const OUTCOMES = {
  probably_succeeded: ["Probably succeeded", "outcome-bad"],
  failed: ["Failed", "outcome-ok"],
  unknown: ["Unknown", "outcome-unknown"],
};
const SEVERITIES = ["low", "medium", "high", "critical"];
const RANGES = [
  ["15m", "Last 15 minutes", 900], ["1h", "Last hour", 3600], ["6h", "Last 6 hours", 21600],
  ["24h", "Last 24 hours", 86400], ["7d", "Last 7 days", 604800], ["all", "All time", 0],
  ["custom", "Custom range", 0],
];
const CHART_BUCKETS = [60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 86400];
const ALL_TIME_CHART_S = 7 * 86400;

// ------------------------------------------------------------------ safe DOM construction

// SECURITY: the only attributes el()/svg() will set. None of them can run script or load a
// resource; "href" is handled separately and must be an internal "#/" route.
const SAFE_ATTRS = new Set([
  "class", "id", "type", "name", "for", "placeholder", "title", "role", "value", "min", "max",
  "step", "autocomplete", "spellcheck", "colspan", "scope", "datetime", "required", "checked",
  "disabled", "selected", "hidden", "tabindex", "maxlength", "inputmode", "lang", "dir",
  "aria-label", "aria-live", "aria-pressed", "aria-current", "aria-hidden", "aria-modal",
  "aria-labelledby", "aria-describedby", "aria-busy",
]);
const SAFE_SVG_ATTRS = new Set([
  "class", "viewBox", "width", "height", "x", "y", "x1", "y1", "x2", "y2", "rx",
  "text-anchor", "dominant-baseline", "preserveAspectRatio", "role", "aria-label",
  "aria-hidden", "focusable",
]);
const SVG_NS = "http://www.w3.org/2000/svg";

function setAttributes(node, attrs, allowed) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (typeof value === "function" && /^on[A-Z]/.test(name)) {
      node.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (name === "href") {
      node.setAttribute("href", internalHref(value));
    } else if (name.startsWith("data-") && /^data-[a-z-]+$/.test(name)) {
      node.setAttribute(name, String(value));
    } else if (allowed.has(name)) {
      node.setAttribute(name, value === true ? "" : String(value));
    } else {
      throw new Error(`attribute not allowed: ${name}`);
    }
  }
}

// SECURITY: links are only ever internal routes; any other value is refused loudly.
function internalHref(value) {
  const text = String(value);
  if (!text.startsWith("#/")) throw new Error("only internal #/ links are allowed");
  return text;
}

function appendChildren(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    // SECURITY: strings become text nodes, so markup in data is shown, never parsed.
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  setAttributes(node, attrs, SAFE_ATTRS);
  return appendChildren(node, children);
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttributes(node, attrs, SAFE_SVG_ATTRS);
  return appendChildren(node, children);
}

function clear(node) {
  while (node.firstChild) node.firstChild.remove();
  return node;
}

// Long attacker values (multi-kilobyte paths) are cut for display only.
function shown(value) {
  const text = toText(value);
  return text.length > MAX_SHOWN_CHARS ? `${text.slice(0, MAX_SHOWN_CHARS)}…` : text;
}

function toText(value) {
  if (value === null || value === undefined) return "";
  return typeof value === "string" ? value : String(value);
}

// SECURITY: highlight occurrences of `needle` by splitting into text nodes and <mark>s.
function highlighted(text, needle) {
  const frag = document.createDocumentFragment();
  const ranges = findAll(text, needle);
  let pos = 0;
  for (const [start, end] of ranges) {
    frag.append(document.createTextNode(text.slice(pos, start)));
    frag.append(el("mark", null, text.slice(start, end)));
    pos = end;
  }
  frag.append(document.createTextNode(text.slice(pos)));
  return frag;
}

function findAll(text, needle) {
  if (!needle) return [];
  // Case-insensitive when lowercasing keeps offsets (it does not for a few Unicode letters).
  const lower = text.toLowerCase();
  const caseless = lower.length === text.length && needle.toLowerCase().length === needle.length;
  const hay = caseless ? lower : text;
  const pin = caseless ? needle.toLowerCase() : needle;
  const out = [];
  for (let i = hay.indexOf(pin); i >= 0 && out.length < 50; i = hay.indexOf(pin, i + pin.length)) {
    out.push([i, i + pin.length]);
  }
  return out;
}

// ------------------------------------------------------------------ formatting

const numberFormat = new Intl.NumberFormat();

function fmtNumber(n) {
  return typeof n === "number" && Number.isFinite(n) ? numberFormat.format(n) : "—";
}

function pad2(n) {
  return String(n).padStart(2, "0");
}

function fmtTime(ts) {
  if (typeof ts !== "number" || !Number.isFinite(ts)) return "—";
  const d = new Date(ts * 1000);
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ` +
    `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}

function fmtClock(ts) {
  const d = new Date(ts * 1000);
  return `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
}

function fmtAgo(ts) {
  if (typeof ts !== "number" || !Number.isFinite(ts)) return "—";
  const s = Math.max(0, Date.now() / 1000 - ts);
  if (s < 60) return `${Math.floor(s)}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

function fmtDuration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "—";
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function fmtPoint(point) {
  if (Array.isArray(point)) return point.map(toText).join(".");
  return toText(point);
}

function classLabel(klass) {
  return Object.hasOwn(CLASS_LABELS, klass) ? CLASS_LABELS[klass] : toText(klass);
}

// CSS class names come only from fixed lists, never from data.
function classCss(klass) {
  return Object.hasOwn(CLASS_LABELS, klass) ? `cls-${klass}` : "cls-other";
}

function classBadge(klass) {
  return el("span", { class: `badge ${classCss(klass)}`, title: toText(klass) },
    classLabel(klass));
}

function outcomeBadge(outcome) {
  const [label, css] = OUTCOMES[outcome] || OUTCOMES.unknown;
  return el("span", { class: `badge ${css}` }, label);
}

function severityBadge(severity) {
  const css = SEVERITIES.includes(severity) ? `sev-${severity}` : "sev-other";
  return el("span", { class: `badge sev ${css}` }, toText(severity) || "—");
}

function chips(values, css = "chip") {
  const list = (values || []).map((v) => el("span", { class: css }, shown(v)));
  return list.length ? el("span", { class: "chips" }, list) : el("span", { class: "muted" }, "—");
}

// ------------------------------------------------------------------ API client

class AuthError extends Error {}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function getToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

// SECURITY: the token never goes into a URL, a cookie or localStorage.
async function api(method, path, { query, body, signal } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== "" && value !== null && value !== undefined) url.searchParams.set(key, value);
  }
  const headers = { Authorization: `Bearer ${getToken()}`, Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(url, {
    method, headers, signal, cache: "no-store", credentials: "omit", redirect: "error",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (resp.status === 401) throw new AuthError("the API refused the token");
  const data = await readJson(resp);
  if (!resp.ok) throw new ApiError(resp.status, errorText(resp, data));
  return data;
}

async function readJson(resp) {
  const text = await resp.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

function errorText(resp, data) {
  if (data && typeof data === "object") {
    const message = data.message ?? data.error ?? data.detail;
    const param = data.parameter ?? data.param ?? data.field;
    if (message !== undefined) return param ? `${toText(param)}: ${toText(message)}` : toText(message);
  }
  return `HTTP ${resp.status} ${resp.statusText}`;
}

// ------------------------------------------------------------------ app shell and routing

const app = {
  view: null, // { abort: AbortController, timer: number | null }
};

function viewRoot() {
  return document.getElementById("view");
}

function parseRoute() {
  const raw = window.location.hash.replace(/^#/, "") || "/attacks";
  const q = raw.indexOf("?");
  const path = q < 0 ? raw : raw.slice(0, q);
  const params = new URLSearchParams(q < 0 ? "" : raw.slice(q + 1));
  const segs = path.split("/").filter(Boolean).map(safeDecode);
  if (segs[0] === "attacks" && segs.length === 1) return { name: "attacks", params };
  if (segs[0] === "attacks" && segs.length === 2) return { name: "attack", id: segs[1], params };
  if (segs[0] === "exclusions" && segs.length === 1) return { name: "exclusions", params };
  return { name: "notfound", params };
}

function safeDecode(text) {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

function navigate(hash) {
  if (window.location.hash === hash) route();
  else window.location.hash = hash;
}

function stopView() {
  if (!app.view) return;
  app.view.abort.abort();
  if (app.view.timer !== null) clearTimeout(app.view.timer);
  app.view = null;
}

function startView() {
  stopView();
  app.view = { abort: new AbortController(), timer: null };
  return app.view;
}

const VIEWS = {
  attacks: (ctx, r) => renderAttacks(ctx, r.params),
  attack: (ctx, r) => renderAttack(ctx, r.id),
  exclusions: (ctx) => renderExclusions(ctx),
  notfound: () => renderMessage("Page not found", "Use the navigation above."),
};

function route() {
  closeDialog();
  const r = parseRoute();
  highlightNav(r.name === "attack" ? "attacks" : r.name);
  const ctx = startView();
  if (!getToken()) {
    renderLogin(ctx, "");
    return;
  }
  document.getElementById("sign-out").hidden = false;
  document.getElementById("nav").hidden = false;
  VIEWS[r.name](ctx, r);
}

function highlightNav(name) {
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.nav === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

// Route-level error handling: an expired token brings back the login form.
function handleError(ctx, err, where) {
  if (err && err.name === "AbortError") return;
  if (ctx && ctx.abort.signal.aborted) return; // the view is gone (e.g. already signed out)
  if (err instanceof AuthError) {
    sessionStorage.removeItem(TOKEN_KEY);
    renderLogin(startView(), "The API refused this token. Enter a valid one.");
    return;
  }
  const text = err instanceof Error ? err.message : String(err);
  if (where) replaceWith(where, el("div", { class: "alert alert-error", role: "alert" }, text));
  else toast(text, "error");
}

function replaceWith(container, ...nodes) {
  clear(container);
  appendChildren(container, nodes);
}

function renderMessage(title, text) {
  replaceWith(viewRoot(), el("section", { class: "panel empty-state" },
    el("h1", null, title), el("p", { class: "muted" }, text)));
}

function toast(text, kind = "ok") {
  const box = el("div", { class: `toast toast-${kind}`, role: "status" }, text);
  document.getElementById("toasts").append(box);
  setTimeout(() => box.remove(), 5000);
}

function isPaused() {
  return sessionStorage.getItem(PAUSE_KEY) === "1";
}

// Poll `tick` every REFRESH_MS while the view is alive and live refresh is on.
function schedule(ctx, tick) {
  if (ctx.abort.signal.aborted) return;
  ctx.timer = setTimeout(async () => {
    ctx.timer = null;
    if (!isPaused() && !dialogOpen()) {
      try {
        await tick();
      } catch (err) {
        handleError(ctx, err, null);
        if (err instanceof AuthError) return;
      }
    }
    schedule(ctx, tick);
  }, REFRESH_MS);
}

function liveToggle(onChange) {
  const button = el("button", { type: "button", class: "btn btn-live", "data-live": "" });
  const paint = () => {
    const paused = isPaused();
    button.setAttribute("aria-pressed", paused ? "false" : "true");
    button.classList.toggle("is-paused", paused);
    replaceWith(button, el("span", { class: "live-dot", "aria-hidden": "true" }),
      paused ? "Paused" : "Live");
    button.title = paused ? "Resume live refresh (every 5 s)" : "Pause live refresh";
  };
  button.addEventListener("click", () => {
    sessionStorage.setItem(PAUSE_KEY, isPaused() ? "0" : "1");
    paint();
    if (!isPaused() && onChange) onChange();
  });
  paint();
  return button;
}

function updatedLabel() {
  const label = el("span", { class: "muted updated" });
  return {
    node: label,
    mark() {
      label.textContent = `Updated ${fmtTime(Date.now() / 1000).slice(11)}`;
    },
  };
}

// ------------------------------------------------------------------ login

function renderLogin(ctx, message) {
  document.getElementById("sign-out").hidden = true;
  document.getElementById("nav").hidden = true;
  const input = el("input", {
    type: "password", id: "token", name: "token", autocomplete: "off", required: true,
    spellcheck: "false", placeholder: "API token",
  });
  const error = el("p", { class: "form-error", role: "alert" }, message);
  const form = el("form", { class: "panel login", "data-login": "" },
    el("h1", null, "Sign in to oob-node"),
    el("p", { class: "muted" }, "Paste the API token (", el("code", null, "OOB_API_TOKEN"),
      ", or ", el("code", null, "<data dir>/api-token"), " after ", el("code", null, "oob-node run"),
      "). It is kept in this tab only (sessionStorage) and sent as a Bearer header."),
    el("label", { for: "token" }, "API token"), input, error,
    el("button", { type: "submit", class: "btn btn-primary" }, "Sign in"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    submitLogin(ctx, input.value.trim(), error);
  });
  replaceWith(viewRoot(), form);
  input.focus();
}

async function submitLogin(ctx, token, error) {
  // Header values must be visible ASCII; anything else would make fetch() throw.
  if (!/^[\x21-\x7e]+$/.test(token)) {
    error.textContent = "A token is printable ASCII without spaces.";
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  try {
    await api("GET", "/api/v1/attacks", { query: { limit: 1 }, signal: ctx.abort.signal });
  } catch (err) {
    if (err instanceof AuthError) sessionStorage.removeItem(TOKEN_KEY);
    error.textContent = err instanceof AuthError ? "The API refused this token." : err.message;
    return;
  }
  route();
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  route();
}

// ------------------------------------------------------------------ attacks list

function filtersFromParams(params) {
  const get = (k) => params.get(k) || "";
  return {
    class: get("class"), client_ip: get("client_ip"), host: get("host"),
    outcome: Object.hasOwn(OUTCOMES, get("outcome")) ? get("outcome") : "",
    range: RANGES.some(([key]) => key === get("range")) ? get("range") : "24h",
    since: get("since"), until: get("until"),
  };
}

// The API time window ([since, until] in epoch seconds) of the current filters.
function timeWindow(filters) {
  const now = Date.now() / 1000;
  if (filters.range === "custom") {
    return { since: parseLocalTime(filters.since), until: parseLocalTime(filters.until) };
  }
  const range = RANGES.find(([key]) => key === filters.range);
  return { since: range && range[2] ? Math.floor(now - range[2]) : null, until: null };
}

function parseLocalTime(text) {
  if (!text) return null;
  const ms = new Date(text).getTime();
  return Number.isFinite(ms) ? Math.floor(ms / 1000) : null;
}

function attackQuery(filters, limit, cursor) {
  const win = timeWindow(filters);
  return {
    class: filters.class, client_ip: filters.client_ip, host: filters.host,
    outcome: filters.outcome, since: win.since, until: win.until, limit, cursor,
  };
}

function filtersHash(filters) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(filters)) {
    if (!value) continue;
    if ((key === "since" || key === "until") && filters.range !== "custom") continue;
    params.set(key, value);
  }
  const text = params.toString();
  return text ? `#/attacks?${text}` : "#/attacks";
}

function renderAttacks(ctx, params) {
  const filters = filtersFromParams(params);
  const state = { items: [], next: null, loading: false };
  const updated = updatedLabel();
  const statsBox = el("section", { class: "stats", "aria-label": "Totals" });
  const chartBox = el("section", { class: "panel chart-panel" });
  const tableBox = el("div", { class: "table-wrap" });
  const moreBox = el("div", { class: "more" });
  // Each panel fails on its own: a chart error never hides the list.
  const guard = (promise, box) => promise.catch((err) => handleError(ctx, err, box));
  const refresh = async () => {
    await Promise.all([guard(loadStats(ctx, statsBox), null),
      guard(loadChart(ctx, chartBox, filters), chartBox),
      guard(loadAttacks(ctx, state, filters, tableBox, moreBox, true), tableBox)]);
    updated.mark();
  };
  replaceWith(viewRoot(),
    el("div", { class: "page-head" }, el("h1", null, "Attacks"),
      el("div", { class: "page-tools" }, updated.node, liveToggle(refresh))),
    statsBox, chartBox,
    el("section", { class: "panel" }, filterForm(filters), tableBox, moreBox));
  refresh();
  schedule(ctx, refresh);
}

function filterForm(filters) {
  const classSelect = el("select", { name: "class", id: "f-class" },
    el("option", { value: "" }, "All classes"),
    CLASSES.map((c) => el("option", { value: c, selected: c === filters.class }, classLabel(c))));
  const rangeSelect = el("select", { name: "range", id: "f-range" },
    RANGES.map(([key, label]) => el("option", { value: key, selected: key === filters.range },
      label)));
  const custom = el("span", { class: "custom-range", hidden: filters.range !== "custom" },
    field("From", el("input", { type: "datetime-local", name: "since", value: filters.since })),
    field("To", el("input", { type: "datetime-local", name: "until", value: filters.until })));
  rangeSelect.addEventListener("change", () => {
    custom.hidden = rangeSelect.value !== "custom";
  });
  const form = el("form", { class: "filters", "data-filters": "" },
    field("Class", classSelect),
    field("Client IP", el("input", { name: "client_ip", id: "f-ip", value: filters.client_ip,
      placeholder: "e.g. 203.0.113.7", autocomplete: "off", spellcheck: "false" })),
    field("Host", el("input", { name: "host", id: "f-host", value: filters.host,
      placeholder: "e.g. shop.example", autocomplete: "off", spellcheck: "false" })),
    field("Outcome", el("select", { name: "outcome", id: "f-outcome" },
      el("option", { value: "" }, "Any outcome"),
      Object.entries(OUTCOMES).map(([key, [label]]) => el("option",
        { value: key, selected: key === filters.outcome }, label)))),
    field("Time", rangeSelect), custom,
    el("div", { class: "filter-actions" },
      el("button", { type: "submit", class: "btn btn-primary" }, "Apply"),
      el("button", { type: "button", class: "btn", onClick: () => navigate("#/attacks") },
        "Reset")));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const data = new FormData(form);
    const next = {};
    for (const key of ["class", "client_ip", "host", "outcome", "range", "since", "until"]) {
      next[key] = toText(data.get(key)).trim();
    }
    navigate(filtersHash(next));
  });
  return form;
}

function field(label, control) {
  return el("label", { class: "field" }, el("span", { class: "field-label" }, label), control);
}

async function loadAttacks(ctx, state, filters, tableBox, moreBox, reload) {
  const limit = reload ? Math.min(MAX_LIMIT, Math.max(PAGE_SIZE, state.items.length)) : PAGE_SIZE;
  const page = await fetchAttacks(ctx, filters, limit, reload ? null : state.next);
  state.items = reload ? page.items : state.items.concat(page.items);
  state.next = page.next;
  replaceWith(tableBox, attacksTable(state.items, filters));
  replaceWith(moreBox, moreButton(ctx, state, filters, tableBox, moreBox));
}

// The API scans a bounded slice of its index per call, so a selective filter can return a
// short (even empty) page with a `next` cursor: follow it, a bounded number of times.
async function fetchAttacks(ctx, filters, limit, cursor) {
  const items = [];
  let next = cursor;
  for (let call = 0; call < 10; call += 1) {
    const data = await api("GET", "/api/v1/attacks",
      { query: attackQuery(filters, limit - items.length, next), signal: ctx.abort.signal });
    items.push(...(Array.isArray(data && data.items) ? data.items : []));
    next = data && data.next ? data.next : null;
    if (!next || items.length >= limit) break;
  }
  return { items, next };
}

function moreButton(ctx, state, filters, tableBox, moreBox) {
  if (!state.next) {
    return state.items.length ? el("span", { class: "muted" },
      `${fmtNumber(state.items.length)} attacks shown, no more`) : null;
  }
  const button = el("button", { type: "button", class: "btn", "data-more": "" }, "Load more");
  button.addEventListener("click", () => {
    button.disabled = true;
    loadAttacks(ctx, state, filters, tableBox, moreBox, false)
      .catch((err) => handleError(ctx, err, moreBox));
  });
  return button;
}

function attacksTable(items, filters) {
  if (!items.length) {
    const any = filters.class || filters.client_ip || filters.host || filters.outcome;
    return el("p", { class: "empty" }, any ? "No attacks match these filters."
      : "No attacks in this time range. Attacks appear here seconds after the node sees them.");
  }
  return el("table", { class: "table attacks", "data-attacks": "" },
    el("thead", null, el("tr", null,
      ["Last seen", "Class", "Client IP", "Host", "Top path", "Hits", "Outcome", "Sources"]
        .map((h) => el("th", { scope: "col", class: h === "Hits" ? "num" : null }, h)))),
    el("tbody", null, items.map(attackRow)));
}

function attackHref(id) {
  return `#/attacks/${encodeURIComponent(toText(id))}`;
}

function attackRow(attack) {
  const href = attackHref(attack.id);
  const topPath = Array.isArray(attack.paths) && attack.paths.length ? attack.paths[0][0] : "";
  const row = el("tr", { class: "row-link", "data-attack-id": toText(attack.id) },
    el("td", { class: "nowrap" }, el("a", { href, title: fmtTime(attack.last_seen) },
      fmtAgo(attack.last_seen))),
    el("td", null, classBadge(attack.class)),
    el("td", { class: "mono nowrap" }, shown(attack.client_ip)),
    el("td", { class: "mono cut", title: shown(attack.host) }, shown(attack.host)),
    el("td", { class: "mono cut path", title: shown(topPath) }, shown(topPath)),
    el("td", { class: "num" }, fmtNumber(attack.hits)),
    el("td", null, outcomeBadge(attack.outcome)),
    el("td", null, chips(attack.sources, "chip chip-source")));
  row.addEventListener("click", (ev) => {
    if (ev.target instanceof Element && ev.target.closest("a")) return;
    navigate(href);
  });
  return row;
}

async function loadStats(ctx, box) {
  let stats;
  try {
    stats = await api("GET", "/api/v1/stats", { signal: ctx.abort.signal });
  } catch (err) {
    if (err instanceof AuthError || (err && err.name === "AbortError")) throw err;
    clear(box); // stats are a nicety: the list still works without them
    return;
  }
  const totals = (stats && stats.totals) || {};
  const queues = (stats && stats.queues) || {};
  const lag = (q) => (q ? (q.lag || 0) + (q.pending || 0) : null);
  replaceWith(box,
    statCard("Attacks", totals.attacks),
    statCard("Hits", totals.hits_counted ?? totals.hits, "hits counted into attacks"),
    statCard("Requests analysed", totals.records),
    statCard("Queue backlog", sumOrNull(lag(queues.requests), lag(queues.hits)),
      "requests + hits waiting"),
    statCard("Dropped", sumOrNull(totals.dropped, totals.dead_letters), "overload + dead letters"));
}

function sumOrNull(...values) {
  const nums = values.filter((v) => typeof v === "number");
  return nums.length ? nums.reduce((a, b) => a + b, 0) : null;
}

function statCard(label, value, hint) {
  return el("div", { class: "stat", title: hint || null },
    el("div", { class: "stat-value" }, fmtNumber(value)),
    el("div", { class: "stat-label" }, label));
}

// ------------------------------------------------------------------ timeline chart

function chartWindow(filters) {
  const now = Math.floor(Date.now() / 1000);
  const win = timeWindow(filters);
  const until = win.until || now;
  const since = win.since || until - ALL_TIME_CHART_S;
  const span = Math.max(60, until - since);
  const bucket = CHART_BUCKETS.find((b) => span / b <= 90) || CHART_BUCKETS.at(-1);
  return { since: Math.floor(since / bucket) * bucket, until, bucket };
}

async function loadChart(ctx, box, filters) {
  const win = chartWindow(filters);
  const data = await api("GET", "/api/v1/timeline", { query: win, signal: ctx.abort.signal });
  const points = Array.isArray(data && data.points) ? data.points : [];
  const bucket = Number(data && data.bucket) || win.bucket;
  replaceWith(box,
    el("div", { class: "panel-head" }, el("h2", null, "Hits over time by class"),
      el("span", { class: "muted" }, `${fmtDuration(bucket)} buckets`)),
    timelineSvg(points, { ...win, bucket }, chartWidth(box)), chartLegend(points, filters));
}

function classOrder(points) {
  const seen = new Set();
  for (const p of points) for (const k of Object.keys((p && p.counts) || {})) seen.add(k);
  const known = CLASSES.filter((c) => seen.has(c));
  return known.concat([...seen].filter((c) => !Object.hasOwn(CLASS_LABELS, c)).sort());
}

function niceMax(value) {
  const exp = 10 ** Math.floor(Math.log10(Math.max(1, value)));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * exp >= value) return step * exp;
  return 10 * exp;
}

const CHART = { h: 200, left: 44, right: 16, top: 12, bottom: 26, minW: 480 };

// The drawing is made at the panel's real width, so text is never stretched.
function chartWidth(box) {
  const style = getComputedStyle(box);
  const inner = box.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  return Math.max(CHART.minW, Math.floor(inner) || CHART.minW);
}

// Geometry of one drawing: plot area, slot width (one bucket) and the value scale.
function chartGeometry(win, width, max) {
  const plotW = width - CHART.left - CHART.right;
  const plotH = CHART.h - CHART.top - CHART.bottom;
  const slots = Math.max(1, Math.ceil((win.until - win.since) / win.bucket));
  return {
    w: width, slots, slotW: plotW / slots,
    x: (ts) => CHART.left + ((ts - win.since) / win.bucket) * (plotW / slots),
    y: (v) => CHART.top + plotH - (v / max) * plotH,
  };
}

function timelineSvg(points, win, width) {
  const classes = classOrder(points);
  const totals = points.map((p) => classes.reduce((s, c) => s + countOf(p, c), 0));
  const max = niceMax(Math.max(1, ...totals));
  const g = chartGeometry(win, width, max);
  const root = svg("svg", {
    class: "chart", viewBox: `0 0 ${width} ${CHART.h}`, width, height: CHART.h,
    role: "img", "aria-label": "Hits over time by attack class", "data-chart": "",
  });
  appendChildren(root, [gridLines(g, max), timeTicks(g, win)]);
  points.forEach((p, i) => appendChildren(root, [barStack(g, p, classes, totals[i])]));
  if (!totals.some((t) => t > 0)) {
    root.append(svg("text", { x: width / 2, y: CHART.h / 2, class: "chart-empty",
      "text-anchor": "middle" }, "No hits in this time range"));
  }
  return root;
}

function countOf(point, klass) {
  const n = point && point.counts ? Number(point.counts[klass]) : 0;
  return Number.isFinite(n) && n > 0 ? n : 0;
}

function gridLines(g, max) {
  return [0, max / 2, max].map((v) => [
    svg("line", { class: "grid", x1: CHART.left, x2: g.w - CHART.right, y1: g.y(v), y2: g.y(v) }),
    svg("text", { class: "axis", x: CHART.left - 6, y: g.y(v), "text-anchor": "end",
      "dominant-baseline": "middle" }, fmtNumber(v)),
  ]);
}

function timeTicks(g, win) {
  const every = Math.max(1, Math.ceil(g.slots / Math.max(2, Math.floor(g.w / 110))));
  const ticks = [];
  for (let i = 0; i <= g.slots; i += every) {
    const ts = win.since + i * win.bucket;
    const label = win.bucket >= 86400 ? fmtTime(ts).slice(5, 10) : fmtClock(ts);
    const x = g.x(ts);
    const anchor = x > g.w - CHART.right - 20 ? "end" : "middle"; // keep the last one inside
    ticks.push(svg("text", { class: "axis", x, y: CHART.h - 8, "text-anchor": anchor }, label));
  }
  return ticks;
}

function barStack(g, point, classes, total) {
  const x = g.x(point.ts);
  if (!(x >= CHART.left) || total <= 0) return [];
  const bars = [];
  let acc = 0;
  for (const klass of classes) {
    const n = countOf(point, klass);
    if (!n) continue;
    const top = g.y(acc + n);
    bars.push(svg("rect", { class: `seg ${classCss(klass)}`, x: x + g.slotW * 0.1, y: top,
      width: Math.max(1, g.slotW * 0.8), height: Math.max(0.5, g.y(acc) - top) },
    svg("title", null, `${fmtTime(point.ts)} · ${classLabel(klass)}: ${fmtNumber(n)}`)));
    acc += n;
  }
  return bars;
}

function chartLegend(points, filters) {
  const classes = classOrder(points);
  if (!classes.length) return null;
  return el("div", { class: "legend" }, classes.map((klass) => {
    const total = points.reduce((s, p) => s + countOf(p, klass), 0);
    const next = { ...filters, class: filters.class === klass ? "" : klass };
    return el("button", { type: "button", class: "legend-item", title: "Filter by this class",
      "aria-pressed": filters.class === klass ? "true" : "false",
      onClick: () => navigate(filtersHash(next)) },
    el("span", { class: `swatch ${classCss(klass)}`, "aria-hidden": "true" }),
    classLabel(klass), el("span", { class: "muted" }, fmtNumber(total)));
  }));
}

// ------------------------------------------------------------------ attack detail

function renderAttack(ctx, id) {
  const body = el("div", { class: "detail", "data-detail": "" }, el("p", { class: "muted" },
    "Loading…"));
  const updated = updatedLabel();
  let lastJson = "";
  const load = async () => {
    const attack = await api("GET", `/api/v1/attacks/${encodeURIComponent(id)}`,
      { signal: ctx.abort.signal });
    const json = JSON.stringify(attack);
    updated.mark();
    if (json === lastJson) return; // keep the reader's place when nothing changed
    lastJson = json;
    replaceWith(body, attackDetail(attack));
  };
  const refresh = () => load().catch((err) => {
    lastJson = "";
    if (err instanceof ApiError && err.status === 404) {
      replaceWith(body, el("div", { class: "panel empty-state" }, el("h1", null,
        "Attack not found"), el("p", { class: "muted" }, "It may have expired (retention).")));
    } else {
      handleError(ctx, err, body);
    }
  });
  replaceWith(viewRoot(),
    el("div", { class: "page-head" },
      el("a", { href: "#/attacks", class: "back" }, "← Attacks"),
      el("div", { class: "page-tools" }, updated.node, liveToggle(refresh))),
    body);
  refresh();
  schedule(ctx, refresh);
}

function attackDetail(a) {
  return [
    el("section", { class: "panel detail-head" },
      el("div", { class: "detail-title" }, classBadge(a.class), outcomeBadge(a.outcome),
        el("span", { class: "badge status" }, toText(a.status) || "monitored")),
      el("h1", null, `${classLabel(a.class)} from `, el("span", { class: "mono" },
        shown(a.client_ip)), " against ", el("span", { class: "mono" }, shown(a.host)))),
    el("section", { class: "panel" }, el("dl", { class: "facts" }, facts(a))),
    el("div", { class: "two-col" },
      countsPanel("Top paths", "Path", a.paths),
      countsPanel("Top points", "Point", a.points)),
    sampleHitsPanel(a),
  ];
}

function facts(a) {
  const rows = [
    ["Class", classLabel(a.class)], ["Client IP", mono(a.client_ip)], ["Host", mono(a.host)],
    ["Application", a.application ? mono(a.application) : "—"],
    ["First seen", fmtTime(a.first_seen)], ["Last seen", fmtTime(a.last_seen)],
    ["Duration", fmtDuration(a.last_seen - a.first_seen)], ["Hits", fmtNumber(a.hits)],
    ["Outcome", outcomeBadge(a.outcome)], ["Sources", chips(a.sources, "chip chip-source")],
    ["Rule ids", chips(a.rule_ids, "chip mono")], ["Attack id", mono(a.id)],
  ];
  return rows.map(([k, v]) => el("div", { class: "fact" }, el("dt", null, k), el("dd", null, v)));
}

function mono(value) {
  return el("span", { class: "mono" }, shown(value));
}

function countsPanel(title, label, rows) {
  const list = Array.isArray(rows) ? rows : [];
  return el("section", { class: "panel" }, el("h2", null, title),
    list.length ? el("table", { class: "table compact" },
      el("thead", null, el("tr", null, el("th", { scope: "col" }, label),
        el("th", { scope: "col", class: "num" }, "Hits"))),
      el("tbody", null, list.map((row) => el("tr", null,
        el("td", { class: "mono wrap" }, shown(Array.isArray(row) ? fmtPoint(row[0]) : row)),
        el("td", { class: "num" }, fmtNumber(Array.isArray(row) ? row[1] : null))))))
      : el("p", { class: "muted" }, "—"));
}

function sampleHitsPanel(attack) {
  const hits = Array.isArray(attack.sample_hits) ? attack.sample_hits : [];
  return el("section", { class: "panel" },
    el("div", { class: "panel-head" }, el("h2", null, "Sample hits"),
      el("span", { class: "muted" }, `last ${hits.length} of ${fmtNumber(attack.hits)}`)),
    hits.length ? el("div", { class: "hits", "data-hits": "" }, hits.map((h) => hitCard(h, attack)))
      : el("p", { class: "muted" }, "No sample hits kept."));
}

function requestLine(hit) {
  const query = toText(hit.query);
  return `${toText(hit.method) || "?"} ${toText(hit.path)}${query ? `?${query}` : ""}`;
}

// The request line with the matched fragment marked; when the fragment only appears after
// URL-decoding, the decoded line is shown (and labelled) so the mark lands on the real text.
function requestLineNode(hit) {
  const raw = shown(requestLine(hit));
  const fragment = toText(hit.fragment);
  if (!fragment || findAll(raw, fragment).length) return el("code", { class: "reqline" },
    highlighted(raw, fragment));
  const decoded = safeDecode(raw.replace(/\+/g, " "));
  if (decoded !== raw && findAll(decoded, fragment).length) {
    return el("code", { class: "reqline" }, highlighted(decoded, fragment),
      el("span", { class: "tag" }, "decoded"));
  }
  return el("code", { class: "reqline" }, raw);
}

function hitCard(hit, attack) {
  const status = Number(hit.response_status) || 0;
  const sources = Array.isArray(hit.sources) && hit.sources.length ? hit.sources : [hit.source];
  return el("article", { class: "hit", "data-hit-id": toText(hit.id) },
    el("div", { class: "hit-head" },
      el("span", { class: "muted nowrap" }, fmtTime(hit.ts)),
      severityBadge(hit.severity),
      el("span", { class: "chip mono", title: "Rule id" }, shown(hit.rule_id)),
      el("span", { class: `badge http ${statusCss(status)}`, title: "Response status" },
        status ? `HTTP ${status}` : "response unknown"),
      hit.outcome && hit.outcome !== "unknown" ? outcomeBadge(hit.outcome) : null,
      sources.filter(Boolean).map((s) => el("span", { class: "chip chip-source" }, shown(s))),
      el("span", { class: "spacer" }),
      el("button", { type: "button", class: "btn btn-small", "data-fp": "",
        onClick: () => markFalsePositive(hit, attack) }, "Mark as false positive")),
    requestLineNode(hit),
    el("dl", { class: "hit-facts" }, hitFacts(hit)),
    headersBlock(hit.headers, toText(hit.fragment)));
}

function hitFacts(hit) {
  const fragment = toText(hit.fragment);
  const value = toText(hit.value);
  const rows = [
    ["Point", el("code", null, shown(fmtPoint(hit.point)))],
    ["Matched", el("code", { class: "fragment" }, el("mark", null, shown(fragment)))],
    value && value !== fragment ? ["Value", el("code", { class: "value" },
      highlighted(shown(value), fragment))] : null,
    hit.url ? ["URL", el("code", { class: "value" }, shown(hit.url))] : null,
    hit.response_evidence ? ["Evidence", shown(hit.response_evidence)] : null,
    hit.request_id ? ["Request id", el("span", { class: "mono" }, shown(hit.request_id))] : null,
  ];
  return rows.filter(Boolean).map(([k, v]) => [el("dt", null, k), el("dd", null, v)]);
}

// Request headers, when the stored sample carries them (credentials already redacted).
function headersBlock(headers, fragment) {
  if (!Array.isArray(headers) || !headers.length) return null;
  const rows = headers.slice(0, 100).map((pair) => el("tr", null,
    el("td", { class: "mono nowrap hname" }, shown(Array.isArray(pair) ? pair[0] : "")),
    el("td", { class: "mono wrap value" },
      highlighted(shown(Array.isArray(pair) ? pair[1] : pair), fragment))));
  return el("details", { class: "headers" }, el("summary", null, `Headers (${headers.length})`),
    el("table", { class: "table compact" }, el("tbody", null, rows)));
}

function statusCss(status) {
  if (!status) return "http-unknown";
  if (status >= 500) return "http-5xx";
  if (status >= 400) return "http-4xx";
  if (status >= 300) return "http-3xx";
  return "http-2xx";
}

// ------------------------------------------------------------------ in-page dialog

let activeDialog = null;

function dialogOpen() {
  return activeDialog !== null && activeDialog.open;
}

function closeDialog() {
  if (activeDialog) {
    if (activeDialog.open) activeDialog.close();
    activeDialog.remove();
    activeDialog = null;
  }
}

// A modal <dialog> (not window.confirm): `onConfirm` may throw to show an error inside it.
function openDialog({ title, body, confirmLabel, danger, onConfirm }) {
  closeDialog();
  const error = el("p", { class: "form-error", role: "alert" });
  const confirm = el("button", { type: "submit", class: `btn ${danger ? "btn-danger" : "btn-primary"}`,
    "data-confirm": "" }, confirmLabel);
  const form = el("form", { class: "dialog-form" },
    el("h2", { id: "dialog-title" }, title), body, error,
    el("div", { class: "dialog-actions" },
      el("button", { type: "button", class: "btn", "data-cancel": "", onClick: closeDialog },
        "Cancel"), confirm));
  const dialog = el("dialog", { class: "dialog", "aria-labelledby": "dialog-title" }, form);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    confirm.disabled = true;
    try {
      await onConfirm();
      closeDialog();
    } catch (err) {
      if (err instanceof AuthError) { closeDialog(); handleError(null, err, null); return; }
      error.textContent = err instanceof Error ? err.message : String(err);
      confirm.disabled = false;
    }
  });
  dialog.addEventListener("close", () => { if (activeDialog === dialog) closeDialog(); });
  document.body.append(dialog);
  activeDialog = dialog;
  dialog.showModal();
}

function checkRow(name, label, value, checked = true) {
  const box = el("input", { type: "checkbox", name, checked });
  return el("label", { class: "check" }, box, el("span", { class: "check-label" }, label),
    el("code", { class: "check-value" }, shown(value)));
}

// "Mark as false positive": an exclusion prefilled from the hit (all chosen fields must match).
function markFalsePositive(hit, attack) {
  const rows = [
    ["class", "Class", hit.class ?? attack.class], ["rule_id", "Rule", hit.rule_id],
    ["point", "Point", hit.point], ["host", "Host", hit.host ?? attack.host],
  ].filter(([, , v]) => v !== undefined && v !== null && v !== "");
  const comment = el("input", { name: "comment", value: "False positive (marked in the console)",
    maxlength: "500" });
  const body = el("div", { class: "dialog-body" },
    el("p", { class: "muted" }, "Future hits matching every checked field are ignored by the " +
      "workers (applied without a restart). Existing attacks are kept."),
    rows.map(([name, label, value]) => checkRow(name, label, Array.isArray(value) ?
      fmtPoint(value) : value)),
    field("Comment", comment));
  openDialog({
    title: "Mark as false positive", body, confirmLabel: "Create exclusion",
    onConfirm: async () => {
      const payload = { comment: comment.value.trim() };
      for (const [name, , value] of rows) {
        if (body.querySelector(`input[name="${name}"]`).checked) payload[name] = value;
      }
      if (Object.keys(payload).length < 2) throw new Error("Check at least one field.");
      const created = await api("POST", "/api/v1/exclusions", { body: payload });
      toast(created && created.id ? `Exclusion ${toText(created.id)} created — see Exclusions`
        : "Exclusion created");
    },
  });
}

// ------------------------------------------------------------------ exclusions

const EXCLUSION_FIELDS = [
  ["class", "Class"], ["rule_id", "Rule id"], ["point", "Point"], ["host", "Host"],
  ["path_prefix", "Path prefix"], ["client_cidr", "Client CIDR"],
];

function renderExclusions(ctx) {
  const listBox = el("div", { class: "table-wrap" }, el("p", { class: "muted" }, "Loading…"));
  const reload = () => loadExclusions(ctx, listBox, reload)
    .catch((err) => handleError(ctx, err, listBox));
  replaceWith(viewRoot(),
    el("div", { class: "page-head" }, el("h1", null, "Exclusions")),
    el("p", { class: "muted intro" }, "False-positive tuning: a hit matching every field of an " +
      "exclusion is dropped by the processing workers. Point is a prefix (query.id matches " +
      "query.id only; query matches every query argument)."),
    el("section", { class: "panel" }, el("h2", null, "Active exclusions"), listBox),
    el("section", { class: "panel" }, el("h2", null, "New exclusion"), exclusionForm(reload)));
  reload();
}

async function loadExclusions(ctx, box, reload) {
  const items = [];
  let cursor = null;
  for (let page = 0; page < 20; page += 1) { // bounded: at most 20 000 exclusions shown
    const data = await api("GET", "/api/v1/exclusions",
      { query: { limit: MAX_LIMIT, cursor }, signal: ctx.abort.signal });
    items.push(...(Array.isArray(data && data.items) ? data.items : []));
    cursor = data && data.next;
    if (!cursor) break;
  }
  replaceWith(box, exclusionsTable(items, reload));
}

function exclusionsTable(items, reload) {
  if (!items.length) return el("p", { class: "empty" }, "No exclusions yet.");
  return el("table", { class: "table", "data-exclusions": "" },
    el("thead", null, el("tr", null,
      [...EXCLUSION_FIELDS.map(([, label]) => label), "Comment", "Created", ""]
        .map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", null, items.map((x) => exclusionRow(x, reload))));
}

function exclusionRow(x, reload) {
  return el("tr", { "data-exclusion-id": toText(x.id) },
    EXCLUSION_FIELDS.map(([key]) => el("td", { class: key === "class" ? null : "mono wrap" },
      exclusionValue(key, x[key]))),
    el("td", { class: "wrap" }, shown(x.comment)),
    el("td", { class: "nowrap muted" }, typeof x.created === "number" ? fmtTime(x.created)
      : shown(x.created)),
    el("td", { class: "actions" }, el("button", { type: "button", class: "btn btn-small btn-danger",
      "data-delete": "", onClick: () => confirmDelete(x, reload) }, "Delete")));
}

function exclusionValue(key, value) {
  if (value === undefined || value === null || value === "") return el("span", { class: "muted" },
    "any");
  if (key === "class") return classBadge(value);
  return shown(key === "point" ? fmtPoint(value) : value);
}

function confirmDelete(x, reload) {
  const summary = EXCLUSION_FIELDS.filter(([key]) => x[key]).map(([key, label]) =>
    el("div", null, el("span", { class: "muted" }, `${label}: `),
      el("code", null, shown(key === "point" ? fmtPoint(x[key]) : x[key]))));
  openDialog({
    title: "Delete exclusion?", danger: true, confirmLabel: "Delete",
    body: el("div", { class: "dialog-body" }, el("p", null, "Matching hits will be reported " +
      "again."), summary),
    onConfirm: async () => {
      await api("DELETE", `/api/v1/exclusions/${encodeURIComponent(toText(x.id))}`);
      toast("Exclusion deleted");
      reload();
    },
  });
}

function exclusionForm(reload) {
  const error = el("p", { class: "form-error", role: "alert" });
  const inputs = {
    class: el("select", { name: "class" }, el("option", { value: "" }, "Any class"),
      CLASSES.map((c) => el("option", { value: c }, classLabel(c)))),
    rule_id: el("input", { name: "rule_id", placeholder: "e.g. sqli-tautology" }),
    point: el("input", { name: "point", placeholder: "e.g. query.id or header.user-agent" }),
    host: el("input", { name: "host", placeholder: "e.g. shop.example" }),
    path_prefix: el("input", { name: "path_prefix", placeholder: "e.g. /api/search" }),
    client_cidr: el("input", { name: "client_cidr", placeholder: "e.g. 10.0.0.0/8" }),
  };
  const comment = el("input", { name: "comment", placeholder: "why this is not an attack" });
  const form = el("form", { class: "form-grid", "data-exclusion-form": "" },
    EXCLUSION_FIELDS.map(([key, label]) => field(label, inputs[key])),
    field("Comment", comment), error,
    el("div", { class: "filter-actions" },
      el("button", { type: "submit", class: "btn btn-primary" }, "Create exclusion")));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    const payload = exclusionPayload(inputs, comment.value.trim());
    if (Object.keys(payload).length < 2) {
      error.textContent = "Fill at least one field besides the comment.";
      return;
    }
    try {
      await api("POST", "/api/v1/exclusions", { body: payload });
    } catch (err) {
      if (err instanceof AuthError) { handleError(null, err, null); return; }
      error.textContent = err.message;
      return;
    }
    form.reset();
    toast("Exclusion created");
    reload();
  });
  return form;
}

function exclusionPayload(inputs, comment) {
  const payload = { comment };
  for (const [key, input] of Object.entries(inputs)) {
    const value = input.value.trim();
    if (!value) continue;
    payload[key] = key === "point" ? parsePointInput(value) : value;
  }
  return payload;
}

// "query.id" -> ["query", "id"]; a JSON array is taken as is (for keys containing dots).
function parsePointInput(text) {
  if (text.startsWith("[")) {
    try {
      const parsed = JSON.parse(text);
      if (Array.isArray(parsed)) return parsed.map(toText);
    } catch {
      // fall through to the dotted form
    }
  }
  return text.split(".").filter(Boolean);
}

// ------------------------------------------------------------------ start

function start() {
  document.getElementById("sign-out").addEventListener("click", signOut);
  window.addEventListener("hashchange", route);
  route();
}

start();
