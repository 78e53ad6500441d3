// FleetHub dashboard: plain JavaScript, no dependencies. Pages are hash routes (#/devices/…);
// data comes from the hub's REST API, signed in by the session cookie; live updates come from
// the change feed as server-sent events (/v1/events/stream). No page polls.
"use strict";

const S = {
  session: null,       // {policy, rights, csrfToken, expires}
  feed: null,          // EventSource of the change feed
  onEvents: null,      // the current page's handler of feed events
  cleanup: [],         // what the current page must close when left
  renderId: 0,         // which render is current (an older one's late answer is dropped)
};

// ---------- small helpers ----------

/** Builds an element: h("a", {href: "#/"}, "text", child). Text is never parsed as HTML. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// The children given, without the absent ones: el.append and el.replaceChildren would print
// null as the text "null" (h() already skips them).
function present(...children) {
  return children.flat().filter((c) => c !== undefined && c !== null && c !== false);
}

const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

const $ = (id) => document.getElementById(id);
const fmt = (n) => (typeof n === "number" ? n.toLocaleString("en-US") : n ?? "—");
const pct = (part, whole) => (whole > 0 ? `${((100 * part) / whole).toFixed(1)}%` : "—");
const enc = encodeURIComponent;
const badge = (text) => h("span", { class: `badge ${text ?? ""}` }, text ?? "—");
const json = (v) => JSON.stringify(v, null, 2);

function timeText(iso) {
  if (!iso || iso.startsWith("0001-")) return "—";
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString();
}

/** A REST call. Throws an Error carrying the hub's status, errorCode and message. */
async function api(method, path, body, headers) {
  const init = { method, headers: { ...(headers || {}) }, credentials: "same-origin" };
  if (method !== "GET" && method !== "HEAD" && S.session) {
    init.headers["x-fleethub-csrf"] = S.session.csrfToken;
  }
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!res.ok) {
    const err = new Error((data && data.message) || `${res.status} ${res.statusText}`);
    err.status = res.status;
    err.code = data && data.errorCode;
    if (res.status === 401 && path !== "/dashboard/session") showSignIn("Your session ended; sign in again.");
    throw err;
  }
  return { data, headers: res.headers };
}

/** Asks for confirmation in a modal dialog; resolves true when confirmed. */
function confirmAction(text, okLabel) {
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = okLabel || "Confirm";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
    $("confirm-cancel").focus();
  });
}

const can = (right) => !!(S.session && S.session.rights[right]);

function errorBox(e) {
  return h("p", { class: "error", role: "alert" }, e.message || String(e));
}

function table(headers, rows, caption) {
  return h("div", { class: "table-wrap" },
    h("table", {},
      caption ? h("caption", { class: "muted" }, caption) : null,
      h("thead", {}, h("tr", {}, headers.map((t) =>
        h("th", { scope: "col", class: t.num ? "num" : null }, t.label ?? t)))),
      h("tbody", {}, rows)));
}

function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v ?? "—")]));
}

// ---------- session ----------

async function loadSession() {
  try {
    S.session = (await api("GET", "/dashboard/session")).data;
    return true;
  } catch {
    S.session = null;
    return false;
  }
}

function showSignIn(message) {
  S.session = null;
  closeFeed();
  $("nav").hidden = true;
  $("who").hidden = true;
  $("page").replaceChildren();
  $("sign-in").hidden = false;
  const err = $("sign-in-error");
  err.hidden = !message;
  err.textContent = message || "";
  $("sign-in-key").focus();
}

async function signIn(body) {
  const res = await api("POST", "/dashboard/session", body);
  S.session = res.data;
  signedIn();
}

function signedIn() {
  $("sign-in").hidden = true;
  $("nav").hidden = false;
  $("who").hidden = false;
  $("policy").textContent = `${S.session.policy}${can("registryWrite") || can("serviceConnect") ? "" : " (read-only)"}`;
  openFeed();
  route();
}

// ---------- live updates: the change feed ----------

function openFeed() {
  closeFeed();
  const feed = new EventSource("/v1/events/stream");
  S.feed = feed;
  const live = $("live");
  feed.onopen = () => { live.textContent = "live"; live.classList.add("on"); };
  feed.onerror = () => { live.textContent = "reconnecting"; live.classList.remove("on"); };
  feed.addEventListener("events", (m) => {
    const page = JSON.parse(m.data);
    if (S.onEvents) S.onEvents(page.events);
  });
  feed.addEventListener("lagged", () => { if (S.onEvents) S.onEvents([]); });
}

function closeFeed() {
  if (S.feed) S.feed.close();
  S.feed = null;
}

/** Calls fn at most once per `ms`, trailing: a burst of events becomes one refresh. */
function throttle(fn, ms) {
  let timer = null, again = false;
  const run = () => {
    timer = setTimeout(() => { timer = null; if (again) { again = false; run(); fn(); } }, ms);
  };
  return () => { if (timer) { again = true; return; } fn(); run(); };
}

// ---------- routing ----------

const ROUTES = [
  [/^\/$/, overviewPage, "overview"],
  [/^\/devices$/, devicesPage, "devices"],
  [/^\/devices\/(.+)$/, devicePage, "devices"],
  [/^\/jobs$/, jobsPage, "jobs"],
  [/^\/jobs\/(.+)$/, jobPage, "jobs"],
  [/^\/configurations$/, configurationsPage, "configurations"],
  [/^\/configurations\/(.+)$/, configurationPage, "configurations"],
  [/^\/firmware$/, firmwarePage, "firmware"],
  [/^\/firmware\/(.+)$/, firmwareItemPage, "firmware"],
  [/^\/rollouts$/, rolloutsPage, "rollouts"],
  [/^\/rollouts\/(.+)$/, rolloutPage, "rollouts"],
];

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const [path, query] = raw.split("?");
  return { path, params: new URLSearchParams(query || "") };
}

async function route() {
  if (!S.session) return;
  for (const fn of S.cleanup) fn();
  S.cleanup = [];
  S.onEvents = null;
  const { path, params } = parseHash();
  const id = ++S.renderId;
  const page = $("page");
  for (const [re, render, nav] of ROUTES) {
    const m = path.match(re);
    if (!m) continue;
    for (const a of document.querySelectorAll("[data-nav]")) {
      if (a.dataset.nav === nav) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    const container = h("div", { "aria-busy": "true" });
    page.replaceChildren(container);
    try {
      await render(container, params, ...m.slice(1).map(decodeURIComponent));
    } catch (e) {
      if (id === S.renderId) container.replaceChildren(errorBox(e));
    }
    container.removeAttribute("aria-busy");
    return;
  }
  page.replaceChildren(h("h1", {}, "Not found"), h("p", {}, "No page at ", h("code", {}, path), "."));
}

/** True while the render that called it is still the page shown. */
function current(id) { return id === S.renderId; }

// ---------- overview ----------

async function overviewPage(root) {
  const id = S.renderId;
  root.append(h("h1", {}, "Fleet overview"));
  const body = h("div", {});
  root.append(body);
  const recent = [];
  let seen = 0;   // the newest event this page saw: the figures must count it
  const draw = async () => {
    const o = (await api("GET", `/dashboard/overview?seen=${seen}`)).data;
    if (!current(id)) return;
    if (!recent.length) recent.push(...o.events.events.slice().reverse());
    body.replaceChildren(...overviewContent(o, recent));
  };
  await draw();
  const refresh = throttle(() => draw().catch(() => {}), 2000);
  S.onEvents = (events) => {
    for (const e of events) { recent.unshift(e); seen = Math.max(seen, e.seq); }
    recent.splice(15);
    refresh();
  };
}

function overviewContent(o, recent) {
  const d = o.devices;
  const statuses = Object.fromEntries(o.firmware.statuses.map((x) => [x.status ?? "unreported", x.devices]));
  const failing = (statuses.failed || 0) + (statuses.rolled_back || 0);
  const cards = h("div", { class: "cards" },
    card("Devices", d.total, "devices-total"),
    card("Connected now", d.connected, "devices-connected", pct(d.connected, d.total)),
    card("Disabled", d.disabled, "devices-disabled"),
    card("Firmware failed or rolled back", failing, "devices-failing", null, failing > 0),
    card("Flagged for a visit", o.flagged, "devices-flagged", "by rollouts", o.flagged > 0));
  const maxVersion = Math.max(1, ...o.firmware.versions.map((v) => v.devices));
  const versions = h("section", { class: "panel", "aria-labelledby": "fw-title" },
    h("h2", { id: "fw-title" }, "Firmware versions"),
    o.firmware.versions.length === 0 ? h("p", { class: "muted" }, "No device has reported firmware yet.") :
      table([{ label: "Version" }, { label: "Devices", num: true }, { label: "Share" }],
        o.firmware.versions.map((v) => h("tr", { "data-version": v.version ?? "" },
          h("th", { scope: "row" }, v.version ?? h("span", { class: "muted" }, "not reported")),
          h("td", { class: "num" }, fmt(v.devices)),
          h("td", { class: "bar-cell" }, bar(v.devices / maxVersion, `${pct(v.devices, d.total)} of devices`)))),
        "Oldest to newest, in semantic-version order"));
  const statusPanel = h("section", { class: "panel", "aria-labelledby": "st-title" },
    h("h2", { id: "st-title" }, "Firmware update status"),
    o.firmware.statuses.length === 0 ? h("p", { class: "muted" }, "No reports yet.") :
      table([{ label: "Status" }, { label: "Devices", num: true }],
        o.firmware.statuses.map((x) => h("tr", {},
          h("td", {}, x.status ? badge(x.status) : h("span", { class: "muted" }, "not reported")),
          h("td", { class: "num" }, fmt(x.devices))))));
  const configs = h("section", { class: "panel", "aria-labelledby": "cfg-title" },
    h("h2", { id: "cfg-title" }, "Compliance per configuration"),
    o.configurations.length === 0 ? h("p", { class: "muted" }, "No configurations.") :
      table([{ label: "Configuration" }, { label: "Targeted", num: true }, { label: "Applied", num: true }, { label: "Compliance" }],
        o.configurations.map((c) => h("tr", {},
          h("th", { scope: "row" }, h("a", { href: `#/configurations/${enc(c.id)}` }, c.id)),
          h("td", { class: "num" }, fmt(c.targeted)),
          h("td", { class: "num" }, fmt(c.applied)),
          h("td", { class: "bar-cell" }, progress(c.applied, c.targeted))))));
  const rollouts = h("section", { class: "panel", "aria-labelledby": "ro-title" },
    h("h2", { id: "ro-title" }, "Compliance per rollout"),
    o.rollouts.length === 0 ? h("p", { class: "muted" }, "No rollouts.") :
        table([{ label: "Rollout" }, { label: "Status" }, { label: "Updated", num: true }, { label: "Targeted", num: true }, { label: "Flagged", num: true }, { label: "Compliance" }],
          o.rollouts.map((r) => h("tr", {},
            h("th", { scope: "row" }, h("a", { href: `#/rollouts/${enc(r.id)}` }, r.id)),
            h("td", {}, badge(r.status)),
            h("td", { class: "num" }, fmt(r.updated)),
            h("td", { class: "num" }, fmt(r.targeted)),
            h("td", { class: "num" }, fmt(r.flagged)),
            h("td", { class: "bar-cell" }, progress(r.updated, r.targeted))))));
  const events = h("section", { class: "panel", "aria-labelledby": "ev-title" },
    h("h2", { id: "ev-title" }, "Recent events"),
    recent.length === 0 ? h("p", { class: "muted" }, "Nothing has happened yet.") :
      h("ul", { class: "events", "aria-live": "polite", id: "recent-events" }, recent.map(eventItem)));
  return [cards, h("div", { class: "grid2" }, versions, statusPanel, configs, rollouts), events];
}

function card(label, value, id, note, bad) {
  return h("div", { class: `card${bad ? " bad" : ""}`, id },
    h("span", { class: "value" }, fmt(value)),
    h("span", { class: "label" }, label),
    note ? h("span", { class: "label" }, ` · ${note}`) : null);
}

function bar(fraction, label) {
  const el = h("span", { class: "bar", role: "img", "aria-label": label, title: label });
  el.style.width = `${Math.max(0, Math.min(1, fraction)) * 100}%`;
  return el;
}

function progress(part, whole) {
  return h("span", {},
    h("progress", { max: Math.max(whole, 1), value: part, "aria-label": `${pct(part, whole)} applied` }),
    h("span", { class: "muted" }, ` ${pct(part, whole)}`));
}

function eventItem(e) {
  const what = e.body && Object.keys(e.body).length ? ` ${JSON.stringify(e.body)}` : "";
  return h("li", {},
    h("time", { datetime: e.time }, timeText(e.time)),
    h("strong", {}, e.kind), " ",
    e.deviceId ? h("a", { href: `#/devices/${enc(e.deviceId)}` }, e.deviceId) : null,
    h("span", { class: "muted" }, what));
}

// ---------- devices ----------

const PAGE_SIZE = 50;
const DEFAULT_QUERY = "SELECT * FROM devices";

async function devicesPage(root, params) {
  const text = params.get("q") || DEFAULT_QUERY;
  const box = h("textarea", { id: "query", name: "query", rows: 3, spellcheck: "false", "aria-describedby": "query-help" }, text);
  const err = h("pre", { id: "query-error", class: "error", role: "alert", hidden: true });
  const results = h("div", { id: "results" });
  const form = h("form", { id: "query-form" },
    h("label", { for: "query" }, "Query"),
    box,
    h("p", { id: "query-help", class: "muted" },
      "IoT Hub's query language, e.g. SELECT * FROM devices WHERE properties.reported.firmware.status = 'failed'. ",
      "Ctrl+Enter runs it."),
    h("div", { class: "row" }, h("button", { type: "submit", id: "run-query" }, "Run query")),
    err);
  root.append(h("h1", {}, "Devices"), form, results);
  box.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); form.requestSubmit(); }
  });
  const stack = [];   // continuation tokens of the pages before this one
  const run = async (continuation) => {
    err.hidden = true;
    box.removeAttribute("aria-invalid");
    const headers = { "x-ms-max-item-count": String(PAGE_SIZE) };
    if (continuation) headers["x-ms-continuation"] = continuation;
    let res;
    try {
      res = await api("POST", "/devices/query", { query: box.value }, headers);
    } catch (e) {
      err.textContent = e.message;
      err.hidden = false;
      box.setAttribute("aria-invalid", "true");
      results.replaceChildren();
      return;
    }
    const next = res.headers.get("x-ms-continuation");
    results.replaceChildren(resultsTable(res.data, res.headers.get("x-ms-item-type")),
      h("div", { class: "row" },
        h("button", { type: "button", class: "quiet", id: "prev-page", disabled: stack.length === 0,
          onclick: () => { stack.pop(); run(stack[stack.length - 1]); } }, "Previous page"),
        h("span", { class: "muted", id: "page-info" }, `Page ${stack.length + 1} · ${res.data.length} rows`),
        h("button", { type: "button", class: "quiet", id: "next-page", disabled: !next,
          onclick: () => { stack.push(next); run(next); } }, "Next page")));
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    stack.length = 0;
    const q = box.value.trim();
    history.replaceState(null, "", `#/devices${q && q !== DEFAULT_QUERY ? `?q=${enc(q)}` : ""}`);
    run();
  });
  await run();
}

function resultsTable(items, itemType) {
  if (items.length === 0) return h("p", { class: "muted", id: "no-results" }, "No results.");
  if (itemType === "twin" || (items[0] && items[0].deviceId && items[0].properties)) {
    return table(["Device", "Status", "Connection", "Firmware", "Update", { label: "Last activity" }],
      items.map((t) => {
        const fw = (t.properties && t.properties.reported && t.properties.reported.firmware) || {};
        return h("tr", {},
          h("th", { scope: "row" }, h("a", { href: `#/devices/${enc(t.deviceId)}` }, t.deviceId)),
          h("td", {}, badge(t.status)),
          h("td", {}, badge(t.connectionState)),
          h("td", {}, fw.current_version ?? "—"),
          h("td", {}, fw.status ? badge(fw.status) : "—"),
          h("td", {}, timeText(t.lastActivityTime)));
      }), "Query results");
  }
  const keys = [...new Set(items.flatMap((i) => (i && typeof i === "object" ? Object.keys(i) : ["value"])))];
  return table(keys, items.map((i) => h("tr", {}, keys.map((k) => {
    const v = i && typeof i === "object" ? i[k] : i;
    const cell = v === undefined ? "" : typeof v === "object" ? JSON.stringify(v) : String(v);
    return h("td", {}, k === "deviceId" && v ? h("a", { href: `#/devices/${enc(v)}` }, v) : cell);
  }))), "Query results");
}

async function devicePage(root, params, deviceId) {
  const id = S.renderId;
  const header = h("div", {});
  const sections = h("div", {});
  root.append(h("p", {}, h("a", { href: "#/devices" }, "← Devices")), header, sections);
  let twin;
  const drawTwin = async () => {
    twin = (await api("GET", `/twins/${enc(deviceId)}`)).data;
    if (!current(id)) return;
    const fw = (twin.properties.reported || {}).firmware || {};
    header.replaceChildren(
      h("h1", {}, "Device ", h("span", { class: "mono", id: "device-id" }, deviceId)),
      facts([
        ["Status", badge(twin.status)],
        ["Connection", badge(twin.connectionState)],
        ["Last activity", timeText(twin.lastActivityTime)],
        ["Twin version", String(twin.version)],
      ]),
      h("h2", {}, "Firmware"),
      facts([
        ["Running", h("span", { id: "fw-current" }, fw.current_version ?? "—")],
        ["Update status", fw.status ? badge(fw.status) : "—"],
        ["Progress", fw.progress != null ? `${fw.progress}%` : "—"],
        ["Target", fw.target_version ?? "—"],
        ["Last update", timeText(fw.last_update_time)],
        ["Error", fw.error ?? "—"],
        ["Desired", ((twin.properties.desired || {}).firmware || {}).version ?? "—"],
      ]),
      h("h2", {}, "Twin"),
      h("div", { class: "grid2" },
        h("div", {}, h("h3", {}, "Tags"), h("pre", { id: "twin-tags" }, json(twin.tags || {}))),
        h("div", {}, h("h3", {}, "Desired"), h("pre", { id: "twin-desired" }, json(strip(twin.properties.desired)))),
        h("div", {}, h("h3", {}, "Reported"), h("pre", { id: "twin-reported" }, json(strip(twin.properties.reported))))));
  };
  await drawTwin();
  if (can("serviceConnect")) sections.append(deviceActions(deviceId, () => twin, drawTwin));
  sections.append(await firmwareHistorySection(deviceId), await telemetrySection(deviceId),
    await deviceJobsSection(deviceId));
  const refresh = throttle(() => drawTwin().catch(() => {}), 1000);
  S.onEvents = (events) => { if (events.some((e) => e.deviceId === deviceId)) refresh(); };
}

/** A twin section without its $metadata and $version, as a person reads it. */
function strip(section) {
  const out = {};
  for (const [k, v] of Object.entries(section || {})) if (!k.startsWith("$")) out[k] = v;
  return out;
}

function deviceActions(deviceId, getTwin, redraw) {
  const methodOut = h("pre", { id: "method-result", hidden: true });
  const method = h("form", { id: "method-form" },
    h("h2", {}, "Call a direct method"),
    h("label", { for: "method-name" }, "Method name"),
    h("input", { id: "method-name", required: true, placeholder: "reboot" }),
    h("label", { for: "method-payload" }, "Payload (JSON)"),
    h("textarea", { id: "method-payload", rows: 2 }, "{}"),
    h("label", { for: "method-timeout" }, "Response timeout (seconds)"),
    h("input", { id: "method-timeout", type: "number", min: 5, max: 300, value: 30 }),
    h("div", { class: "row" }, h("button", { type: "submit", id: "method-call" }, "Call method")),
    methodOut);
  method.addEventListener("submit", async (e) => {
    e.preventDefault();
    methodOut.hidden = false;
    methodOut.className = "";
    let payload;
    try { payload = JSON.parse($("method-payload").value || "null"); } catch (err) {
      methodOut.className = "error"; methodOut.textContent = `Payload is not JSON: ${err.message}`; return;
    }
    const name = $("method-name").value.trim();
    if (!await confirmAction(`Call ${name} on ${deviceId}?`, "Call")) return;
    methodOut.textContent = "Calling…";
    try {
      const r = await api("POST", `/twins/${enc(deviceId)}/methods`, {
        methodName: name, payload, responseTimeoutInSeconds: Number($("method-timeout").value) || 30,
      });
      methodOut.textContent = `status ${r.data.status}\n${json(r.data.payload)}`;
    } catch (err) { methodOut.className = "error"; methodOut.textContent = err.message; }
  });

  const desiredOut = h("p", { id: "desired-result", role: "status" });
  const desired = h("form", { id: "desired-form" },
    h("h2", {}, "Edit desired properties"),
    h("label", { for: "desired-patch" }, "Merge patch for properties.desired (JSON; null removes a key)"),
    h("textarea", { id: "desired-patch", rows: 4 }, json(strip(getTwin().properties.desired))),
    h("div", { class: "row" }, h("button", { type: "submit", id: "desired-save" }, "Save desired")),
    desiredOut);
  desired.addEventListener("submit", async (e) => {
    e.preventDefault();
    let patch;
    try { patch = JSON.parse($("desired-patch").value); } catch (err) {
      desiredOut.className = "error"; desiredOut.textContent = `Not JSON: ${err.message}`; return;
    }
    if (!await confirmAction(`Change the desired properties of ${deviceId}?`, "Save")) return;
    try {
      // The etag read with the twin: a change someone else made meanwhile is not overwritten.
      await api("PATCH", `/twins/${enc(deviceId)}`, { properties: { desired: patch } },
        { "if-match": `"${getTwin().etag}"` });
      desiredOut.className = ""; desiredOut.textContent = "Saved.";
      await redraw();
    } catch (err) { desiredOut.className = "error"; desiredOut.textContent = err.message; }
  });
  return h("div", { class: "grid2" }, h("section", { class: "panel" }, method), h("section", { class: "panel" }, desired));
}

async function telemetrySection(deviceId) {
  const section = h("section", { class: "panel", "aria-labelledby": "tm-title" }, h("h2", { id: "tm-title" }, "Recent telemetry"));
  if (!can("serviceConnect")) {
    section.append(h("p", { class: "muted" }, "Reading telemetry needs the ServiceConnect right."));
    return section;
  }
  const items = (await api("GET", `/v1/telemetry?deviceId=${enc(deviceId)}&last=100`)).data.items;
  const points = [];
  const add = (m) => {
    if (m.bodyEncoding !== "utf-8") return;
    let body; try { body = JSON.parse(m.body); } catch { return; }
    if (!body || typeof body !== "object") return;
    points.push({ t: new Date(m.enqueuedTime).getTime(), v: body });
    points.splice(0, Math.max(0, points.length - 200));
  };
  items.forEach(add);
  const holder = h("div", {});
  const draw = () => holder.replaceChildren(plot(points));
  draw();
  section.append(holder);
  const stream = new EventSource(`/v1/telemetry/stream?deviceId=${enc(deviceId)}`);
  stream.onmessage = (m) => { add(JSON.parse(m.data)); draw(); };
  S.cleanup.push(() => stream.close());
  return section;
}

const COLORS = ["#0b5cad", "#b42318", "#1a7f37", "#9a6700"];

function plot(points) {
  const keys = [...new Set(points.flatMap((p) => Object.keys(p.v).filter((k) => typeof p.v[k] === "number")))].slice(0, 4);
  if (keys.length === 0) return h("p", { class: "muted", id: "telemetry-none" }, "No numeric telemetry stored for this device.");
  const W = 600, H = 180, P = 30;
  const ts = points.map((p) => p.t);
  const vs = points.flatMap((p) => keys.map((k) => p.v[k]).filter((v) => typeof v === "number"));
  const [t0, t1] = [Math.min(...ts), Math.max(...ts)];
  const [v0, v1] = [Math.min(...vs), Math.max(...vs)];
  const x = (t) => P + ((t - t0) / Math.max(1, t1 - t0)) * (W - 2 * P);
  const y = (v) => H - P / 2 - ((v - v0) / Math.max(1e-9, v1 - v0)) * (H - P);
  const svg = s("svg", { class: "plot", viewBox: `0 0 ${W} ${H}`, role: "img", id: "telemetry-plot",
    "aria-label": `Telemetry over time: ${keys.join(", ")}; ${points.length} messages` });
  svg.append(s("text", { x: 2, y: 12 }, fmtNum(v1)), s("text", { x: 2, y: H - 4 }, fmtNum(v0)));
  keys.forEach((k, i) => {
    const pts = points.filter((p) => typeof p.v[k] === "number").map((p) => `${x(p.t).toFixed(1)},${y(p.v[k]).toFixed(1)}`);
    svg.append(s("polyline", { points: pts.join(" "), fill: "none", stroke: COLORS[i], "stroke-width": 2 }));
  });
  const legend = h("p", { class: "legend" }, keys.map((k, i) => {
    const sw = h("span", { class: "swatch" }); sw.style.background = COLORS[i];
    return h("span", {}, sw, k);
  }));
  return h("div", {}, svg, legend);
}

const fmtNum = (v) => (Math.abs(v) >= 1000 ? v.toFixed(0) : v.toPrecision(3));

/** The device's rollout attempts, newest first: its firmware history. */
async function firmwareHistorySection(deviceId) {
  const section = h("section", { class: "panel", "aria-labelledby": "fh-title", id: "firmware-history" },
    h("h2", { id: "fh-title" }, "Firmware history: rollout attempts"));
  if (!can("registryRead")) {
    section.append(h("p", { class: "muted" }, "Reading rollouts needs the RegistryRead right."));
    return section;
  }
  let rows;
  try { rows = (await api("GET", `/v1/devices/${enc(deviceId)}/rollouts?top=20`)).data; } catch (e) {
    section.append(errorBox(e));
    return section;
  }
  section.append(rows.length === 0 ? h("p", { class: "muted" }, "No rollout has included this device.") :
    table(["Rollout", "Wave", "Outcome", { label: "Attempt", num: true }, "From → to", "Started", "Finished", "Reason"],
      rows.map((a) => h("tr", { "data-rollout": a.rollout },
        h("th", { scope: "row" }, h("a", { href: `#/rollouts/${enc(a.rollout)}` }, a.rollout)),
        h("td", {}, a.wave ?? "—"),
        h("td", {}, badge(a.state)),
        h("td", { class: "num" }, fmt(a.attempt)),
        h("td", { class: "mono" }, `${a.from_version ?? "—"} → ${a.to_version}`),
        h("td", {}, timeText(a.started)),
        h("td", {}, timeText(a.finished)),
        h("td", {}, a.failure ?? a.error ?? "—"))),
      "The rollouts this device belongs to, newest first"));
  return section;
}

async function deviceJobsSection(deviceId) {
  const section = h("section", { class: "panel", "aria-labelledby": "dj-title" }, h("h2", { id: "dj-title" }, "Jobs"));
  const q = `SELECT * FROM devices.jobs WHERE deviceId = '${deviceId.replace(/'/g, "''")}'`;
  const rows = (await api("POST", "/devices/query", { query: q }, { "x-ms-max-item-count": "20" })).data;
  section.append(rows.length === 0 ? h("p", { class: "muted" }, "No jobs have touched this device.") :
    table(["Job", "Type", "Status", "Last update"], rows.map((r) => h("tr", {},
      h("td", {}, h("a", { href: `#/jobs/${enc(r.jobId)}` }, r.jobId)),
      h("td", {}, r.jobType), h("td", {}, badge(r.status)),
      h("td", {}, timeText(r.lastUpdatedDateTimeUtc))))));
  return section;
}

// ---------- jobs ----------

async function jobsPage(root) {
  const res = await api("GET", "/jobs/v2/query?pageSize=100");
  const items = res.data.items || [];
  root.append(h("h1", {}, "Jobs"),
    items.length === 0 ? h("p", { class: "muted" }, "No jobs.") :
      table(["Job", "Type", "Status", { label: "Devices", num: true }, { label: "Succeeded", num: true }, { label: "Failed", num: true }, "Started"],
        items.map((j) => {
          const st = j.deviceJobStatistics || {};
          return h("tr", {},
            h("th", { scope: "row" }, h("a", { href: `#/jobs/${enc(j.jobId)}` }, j.jobId)),
            h("td", {}, j.type), h("td", {}, badge(j.status)),
            h("td", { class: "num" }, fmt(st.deviceCount)), h("td", { class: "num" }, fmt(st.succeededCount)),
            h("td", { class: "num" }, fmt(st.failedCount)), h("td", {}, timeText(j.startTimeUtc)));
        })));
  const refresh = throttle(() => { if (parseHash().path === "/jobs") route(); }, 3000);
  S.onEvents = (events) => { if (events.some((e) => e.kind.startsWith("job."))) refresh(); };
}

async function jobPage(root, params, jobId) {
  const id = S.renderId;
  const head = h("div", {});
  root.append(h("p", {}, h("a", { href: "#/jobs" }, "← Jobs")), head);
  const draw = async () => {
    const j = (await api("GET", `/jobs/v2/${enc(jobId)}`)).data;
    if (!current(id)) return;
    const st = j.deviceJobStatistics || {};
    const finished = ["completed", "failed", "cancelled"].includes(j.status);
    head.replaceChildren(...present(h("h1", {}, "Job ", h("span", { class: "mono" }, jobId)),
      facts([["Type", j.type], ["Status", badge(j.status)], ["Query", j.queryCondition],
        ["Created", timeText(j.createdTime)], ["Started", timeText(j.startTimeUtc)], ["Ended", timeText(j.endTimeUtc)],
        ["Devices", fmt(st.deviceCount)], ["Succeeded", fmt(st.succeededCount)], ["Failed", fmt(st.failedCount)],
        ["Running", fmt(st.runningCount)], ["Pending", fmt(st.pendingCount)]]),
      can("serviceConnect") && !finished ? h("div", { class: "row" },
        h("button", { type: "button", class: "danger", id: "job-cancel", onclick: async () => {
          if (!await confirmAction(`Cancel job ${jobId}? Devices not reached yet are skipped.`, "Cancel job")) return;
          try { await api("POST", `/jobs/v2/${enc(jobId)}/cancel`); await draw(); } catch (e) { head.append(errorBox(e)); }
        } }, "Cancel job")) : null,
      h("h2", {}, "Devices"), await jobDevices(jobId)));
  };
  await draw();
  const refresh = throttle(() => draw().catch(() => {}), 2000);
  S.onEvents = (events) => { if (events.length === 0 || events.some((e) => e.body && e.body.jobId === jobId)) refresh(); };
}

async function jobDevices(jobId) {
  const q = `SELECT * FROM devices.jobs WHERE devices.jobs.jobId = '${jobId.replace(/'/g, "''")}'`;
  const rows = (await api("POST", "/devices/query", { query: q }, { "x-ms-max-item-count": "100" })).data;
  if (rows.length === 0) return h("p", { class: "muted" }, "No device rows.");
  return table(["Device", "Status", "Outcome or error"], rows.map((r) => h("tr", {},
    h("td", {}, h("a", { href: `#/devices/${enc(r.deviceId)}` }, r.deviceId)),
    h("td", {}, badge(r.status)),
    h("td", { class: "mono" }, r.error ? JSON.stringify(r.error) : r.outcome ? JSON.stringify(r.outcome) : "")),
  ), "The first 100 devices");
}

// ---------- configurations ----------

async function configurationsPage(root) {
  const items = (await api("GET", "/configurations?top=100")).data;
  root.append(h("h1", {}, "Configurations"),
    items.length === 0 ? h("p", { class: "muted" }, "No configurations.") :
      table(["Configuration", { label: "Priority", num: true }, "Target condition", { label: "Targeted", num: true }, { label: "Applied", num: true }],
        items.map((c) => {
          const m = (c.systemMetrics && c.systemMetrics.results) || {};
          return h("tr", {},
            h("th", { scope: "row" }, h("a", { href: `#/configurations/${enc(c.id)}` }, c.id)),
            h("td", { class: "num" }, c.priority), h("td", { class: "mono" }, c.targetCondition),
            h("td", { class: "num" }, fmt(m.targetedCount)), h("td", { class: "num" }, fmt(m.appliedCount)));
        })));
}

async function configurationPage(root, params, cid) {
  const c = (await api("GET", `/configurations/${enc(cid)}`)).data;
  const m = (c.systemMetrics && c.systemMetrics.results) || {};
  root.append(...present(h("p", {}, h("a", { href: "#/configurations" }, "← Configurations")),
    h("h1", {}, "Configuration ", h("span", { class: "mono" }, cid)),
    facts([["Priority", String(c.priority)], ["Target condition", h("code", {}, c.targetCondition)],
      ["Targeted", fmt(m.targetedCount)], ["Applied", fmt(m.appliedCount)],
      ["Compliance", progress(m.appliedCount || 0, m.targetedCount || 0)],
      ["Created", timeText(c.createdTimeUtc)], ["Updated", timeText(c.lastUpdatedTimeUtc)]]),
    h("h2", {}, "Content"), h("pre", {}, json(c.content)),
    h("h2", {}, "Custom metrics"), h("pre", {}, json(c.metrics)),
    can("registryWrite") ? h("div", { class: "row" }, h("button", { type: "button", class: "danger", id: "config-delete",
      onclick: async () => {
        if (!await confirmAction(`Delete configuration ${cid}? Its settings leave every twin it targets.`, "Delete")) return;
        try { await api("DELETE", `/configurations/${enc(cid)}`, undefined, { "if-match": "*" }); location.hash = "#/configurations"; }
        catch (e) { root.append(errorBox(e)); }
      } }, "Delete configuration")) : null));
}

// ---------- firmware ----------

async function firmwarePage(root) {
  const items = (await api("GET", "/v1/firmware")).data;
  const list = Array.isArray(items) ? items : items.items || [];
  root.append(h("h1", {}, "Firmware"),
    list.length === 0 ? h("p", { class: "muted" }, "No firmware uploaded. Upload with: fleethub firmware upload FILE --version V --model M") :
      table(["Version", "Models", { label: "Size", num: true }, "SHA-256", "Uploaded"],
        list.map((a) => h("tr", {},
          h("th", { scope: "row" }, h("a", { href: `#/firmware/${enc(a.id)}` }, a.version)),
          h("td", {}, a.models.join(", ")), h("td", { class: "num" }, fmt(a.size)),
          h("td", { class: "mono" }, a.sha256.slice(0, 16) + "…"), h("td", {}, timeText(a.uploadedTimeUtc))))));
}

async function firmwareItemPage(root, params, fid) {
  const a = (await api("GET", `/v1/firmware/${enc(fid)}`)).data;
  root.append(...present(h("p", {}, h("a", { href: "#/firmware" }, "← Firmware")),
    h("h1", {}, "Firmware ", a.version),
    facts([["Models", a.models.join(", ")], ["Size", `${fmt(a.size)} bytes`], ["SHA-256", h("code", {}, a.sha256)],
      ["Signed by", h("code", {}, a.signedBy)], ["Uploaded", timeText(a.uploadedTimeUtc)], ["Notes", a.notes || "—"]]),
    h("h2", {}, "Downloads"),
    (a.downloads || []).length === 0 ? h("p", { class: "muted" }, "No device has downloaded it since the hub started.") :
      table(["Device", { label: "Bytes served", num: true }, { label: "Requests", num: true }, "Last request"],
        a.downloads.map((d) => h("tr", {},
          h("td", {}, h("a", { href: `#/devices/${enc(d.deviceId)}` }, d.deviceId)),
          h("td", { class: "num" }, fmt(d.bytesServed)), h("td", { class: "num" }, fmt(d.requests)),
          h("td", {}, timeText(d.lastRequestTimeUtc))))),
    can("registryWrite") ? h("div", { class: "row" }, h("button", { type: "button", class: "danger", id: "firmware-delete",
      onclick: async () => {
        if (!await confirmAction(`Delete firmware ${a.version}? The hub refuses while a twin or job still points at it.`, "Delete")) return;
        try { await api("DELETE", `/v1/firmware/${enc(fid)}`); location.hash = "#/firmware"; }
        catch (e) { root.append(errorBox(e)); }
      } }, "Delete firmware")) : null));
}

// ---------- rollouts ----------

async function rolloutsPage(root) {
  const list = (await api("GET", "/v1/rollouts?top=100")).data;
  root.append(h("h1", {}, "Rollouts"),
    list.length === 0 ? h("p", { class: "muted" }, "No rollouts. Create one with: fleethub rollout create FILE") :
      table(["Rollout", "Status", "Firmware", { label: "Targeted", num: true }, { label: "Updated", num: true },
        { label: "Failed", num: true }, { label: "Flagged", num: true }, "Compliance"],
      list.map((r) => h("tr", {},
        h("th", { scope: "row" }, h("a", { href: `#/rollouts/${enc(r.id)}` }, r.id)),
        h("td", {}, badge(r.status)), h("td", {}, (r.spec && r.spec.artifact && r.spec.artifact.version) || "—"),
        h("td", { class: "num" }, fmt(r.compliance.targeted)), h("td", { class: "num" }, fmt(r.compliance.updated)),
        h("td", { class: "num" }, fmt(r.compliance.failed)), h("td", { class: "num" }, fmt(r.compliance.flagged)),
        h("td", { class: "bar-cell" }, progress(r.compliance.updated, r.compliance.targeted))))));
  const refresh = throttle(() => { if (parseHash().path === "/rollouts") route(); }, 3000);
  S.onEvents = (events) => { if (events.length) refresh(); };
}

const COMMANDS = [
  ["pause", "Pause", (r) => r.status === "running", "Pause rollout %s? No device is pushed until it is resumed."],
  ["resume", "Resume", (r) => r.status === "paused", "Resume rollout %s?"],
  ["retry", "Retry failed", (r) => r.status === "running" || r.status === "paused", "Retry the failed and flagged devices of %s with fresh retries?"],
  ["rollback", "Roll back", (r) => r.status !== "aborted" && r.status !== "superseded", "Roll back rollout %s? Its devices are sent back to their previous firmware."],
  ["abort", "Abort", (r) => r.status !== "aborted" && r.status !== "superseded", "Abort rollout %s? Nothing more is pushed; this cannot be undone."],
];

async function rolloutPage(root, params, rid) {
  const id = S.renderId;
  const head = h("div", {});
  const body = h("div", {});
  root.append(h("p", {}, h("a", { href: "#/rollouts" }, "← Rollouts")), head, body);
  const draw = async () => {
    const r = (await api("GET", `/v1/rollouts/${enc(rid)}`)).data;
    const trail = (await api("GET", `/v1/rollouts/${enc(rid)}/events?top=500`)).data.events || [];
    if (!current(id)) return;
    const c = r.compliance;
    head.replaceChildren(...present(
      h("h1", {}, "Rollout ", h("span", { class: "mono" }, rid), " ", h("span", { id: "rollout-status" }, badge(r.status))),
      r.reason ? h("p", { class: "notice" }, r.reason) : null,
      h("div", { class: "cards" },
        card("Targeted", c.targeted, "ro-targeted"), card("Updated", c.updated, "ro-updated", pct(c.updated, c.targeted)),
        card("Pending", c.pending, "ro-pending"), card("Failed", c.failed, "ro-failed", null, c.failed > 0),
        card("Rolled back", c.rolled_back, "ro-rolled-back"), card("Flagged", c.flagged, "ro-flagged", null, c.flagged > 0)),
      can("registryWrite") ? h("div", { class: "row", id: "rollout-actions" },
        COMMANDS.filter(([, , when]) => when(r)).map(([verb, label, , question]) =>
          h("button", { type: "button", id: `rollout-${verb}`, class: verb === "resume" || verb === "pause" ? "" : "danger",
            onclick: async () => {
              if (!await confirmAction(question.replace("%s", rid), label)) return;
              try { await api("POST", `/v1/rollouts/${enc(rid)}/${verb}`, {}); await draw(); }
              catch (e) { head.append(errorBox(e)); }
            } }, label))) : null));
    body.replaceChildren(
      h("h2", {}, "Waves"),
      table(["Wave", "Status", { label: "Pending", num: true }, { label: "Updating", num: true }, { label: "Updated", num: true },
        { label: "Failed", num: true }, { label: "Rolled back", num: true }, "Gate"],
      r.waves.map((w) => {
        const k = w.counts, g = w.gate;
        return h("tr", { "data-wave": w.name },
          h("th", { scope: "row" }, w.name), h("td", {}, badge(w.status)),
          h("td", { class: "num", "data-count": "pending" }, fmt(k.unassigned + k.waiting)),
          h("td", { class: "num", "data-count": "updating" }, fmt(k.in_progress)),
          h("td", { class: "num", "data-count": "updated" }, fmt(k.updated)),
          h("td", { class: "num", "data-count": "failed" }, fmt(k.failed + k.flagged)),
          h("td", { class: "num", "data-count": "rolled-back" }, fmt(k.rolled_back + k.rolling_back)),
          h("td", {}, `success ${g.success_text}: ${g.updated}/${g.size} ${g.success_reached ? "✓ reached" : "not yet"}; ` +
            `failure ${g.failure_text}: ${g.failures} ${g.failure_exceeded ? "✗ exceeded" : "within"}`));
      }), "Per wave, live"),
      h("h2", {}, "Failure reasons"), failureReasons(trail),
      h("h2", {}, "Audit trail"),
      trail.length === 0 ? h("p", { class: "muted" }, "Nothing yet.") :
        h("ul", { class: "events", id: "rollout-trail" }, trail.slice().reverse().slice(0, 100).map((e) => h("li", {},
          h("time", { datetime: e.at }, timeText(e.at)), h("strong", {}, e.kind), " ",
          e.wave ? `[${e.wave}] ` : "", e.device ? h("a", { href: `#/devices/${enc(e.device)}` }, e.device) : null,
          h("span", { class: "muted" }, ` ${e.message}`)))));
  };
  await draw();
  const refresh = throttle(() => draw().catch(() => {}), 1000);
  S.onEvents = (events) => { if (events.length) refresh(); };
}

/** Failed and flagged devices' messages from the audit trail, grouped with a count each. */
function failureReasons(trail) {
  const groups = new Map();
  for (const e of trail) {
    if (!["device_failed", "device_flagged", "device_refused"].includes(e.kind)) continue;
    const reason = e.message.replace(/^device \S+:?\s*/, "");
    groups.set(reason, (groups.get(reason) || 0) + 1);
  }
  if (groups.size === 0) return h("p", { class: "muted" }, "No failures.");
  return table(["Reason", { label: "Events", num: true }],
    [...groups].sort((a, b) => b[1] - a[1]).map(([reason, n]) => h("tr", {}, h("td", {}, reason), h("td", { class: "num" }, fmt(n)))));
}

// ---------- start ----------

async function start() {
  $("sign-in-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const button = $("sign-in-submit");
    button.disabled = true;
    try {
      await signIn({ policy: $("sign-in-policy").value, key: $("sign-in-key").value });
      $("sign-in-key").value = "";
    } catch (err) {
      $("sign-in-error").hidden = false;
      $("sign-in-error").textContent = err.message;
    } finally { button.disabled = false; }
  });
  $("sign-out").addEventListener("click", async () => {
    await api("DELETE", "/dashboard/session").catch(() => {});
    showSignIn("Signed out.");
  });
  window.addEventListener("hashchange", async () => {
    if (await signInByLink()) return;
    if (S.session) route();
  });
  if (await signInByLink()) return;
  if (await loadSession()) signedIn(); else showSignIn();
}

/** Signs in with a one-time link's token (`#signin=…`), if the address carries one. */
async function signInByLink() {
  const link = location.hash.match(/^#signin=(.+)$/);
  if (!link) return false;
  // The token lives in the fragment, so it never reaches a server log; drop it from history.
  history.replaceState(null, "", "#/");
  try { await signIn({ link: decodeURIComponent(link[1]) }); } catch (e) { showSignIn(e.message); }
  return true;
}

start();
