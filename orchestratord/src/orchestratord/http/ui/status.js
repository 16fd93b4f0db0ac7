// llorch status page: reads GET /v2/status/events (server-sent snapshots) with fetch,
// so that an API key can go in the Authorization header (EventSource cannot send one;
// a key in a URL would reach logs). The key is asked for only when the orchestrator
// answers 401/403, and kept in this tab's sessionStorage. Read-only: nothing here
// changes the fleet. Every value is written with textContent (never as HTML).
"use strict";

const KEY_ITEM = "llorch.apiKey";
const STREAM = "/v2/status/events";
const RETRY_MIN_MS = 1000;
const RETRY_MAX_MS = 10000;

const $ = (id) => document.getElementById(id);
let controller = null;
let retryMs = RETRY_MIN_MS;

function storedKey() {
  try { return sessionStorage.getItem(KEY_ITEM); } catch (e) { return null; }
}

function setConnection(state, text) {
  const badge = $("connection");
  badge.dataset.state = state;
  badge.textContent = text || state;
}

function askForKey(reason) {
  controller = null;
  setConnection("unauthorized", "key needed");
  $("key-reason").textContent = reason;
  $("key-form").hidden = false;
  $("status").hidden = true;
  $("key-input").focus();
}

async function connect() {
  if (controller) controller.abort();
  controller = new AbortController();
  const mine = controller;
  const key = storedKey();
  const headers = { Accept: "text/event-stream" };
  if (key) headers.Authorization = "Bearer " + key;
  $("forget-key").hidden = !key;
  setConnection("connecting", "connecting…");
  let response;
  try {
    response = await fetch(STREAM, { headers, signal: mine.signal, cache: "no-store" });
  } catch (e) {
    return retry(mine);
  }
  if (response.status === 401 || response.status === 403) {
    let message = "This orchestrator needs an API key to show its status.";
    try {
      const body = await response.json();
      if (body && body.message) message = body.code + ": " + body.message;
    } catch (e) { /* not the error envelope: keep the plain reason */ }
    if (key) sessionStorage.removeItem(KEY_ITEM);
    return askForKey(message);
  }
  if (!response.ok || !response.body) return retry(mine);
  $("key-form").hidden = true;
  setConnection("connected", "live");
  retryMs = RETRY_MIN_MS;
  try {
    await readEvents(response.body, (name, data) => {
      if (name === "status") render(JSON.parse(data));
    });
  } catch (e) { /* dropped: reconnect below */ }
  retry(mine);
}

function retry(mine) {
  if (controller !== mine || mine.signal.aborted) return;
  setConnection("reconnecting", "reconnecting…");
  setTimeout(() => { if (controller === mine) connect(); }, retryMs);
  retryMs = Math.min(RETRY_MAX_MS, retryMs * 2);
}

// Server-sent events over a fetch body: frames end with a blank line; `event:` names
// one, `data:` lines carry it; comments (":") are skipped.
async function readEvents(body, onEvent) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of frame.split("\n")) {
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") name = text;
        else if (field === "data") data.push(text);
      }
      if (data.length) onEvent(name, data.join("\n"));
    }
  }
}

// -- rendering ------------------------------------------------------------------------

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function badge(state, text) {
  const node = el("span", text || state, "badge");
  node.dataset.state = state;
  return node;
}

function cell(row, content, cls) {
  const td = el("td", null, cls);
  if (content instanceof Node) td.appendChild(content);
  else td.textContent = content === null || content === undefined || content === "" ? "–" : String(content);
  row.appendChild(td);
  return td;
}

function fill(tableId, rows, columns) {
  const body = $(tableId).tBodies[0];
  body.replaceChildren();
  if (!rows.length) {
    const tr = el("tr");
    const td = cell(tr, "none", "empty");
    td.colSpan = columns;
    body.appendChild(tr);
    return;
  }
  for (const row of rows) body.appendChild(row);
}

function ms(value) {
  if (value === null || value === undefined) return "–";
  if (value < 1000) return Math.round(value) + " ms";
  if (value < 60000) return (value / 1000).toFixed(1) + " s";
  return Math.floor(value / 60000) + " min " + Math.round((value % 60000) / 1000) + " s";
}

function bytes(value) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (value >= 1024 && i < units.length - 1) { value /= 1024; i++; }
  return value.toFixed(i ? 1 : 0) + " " + units[i];
}

function clock(msSinceEpoch) {
  return msSinceEpoch ? new Date(msSinceEpoch).toLocaleTimeString() : "–";
}

function poolState(p) {
  if (!p.live) return "lost";
  if (p.draining) return "draining";
  if (p.ready) return "ready";
  return p.state || "starting";
}

function render(s) {
  $("status").hidden = false;
  $("viewer").textContent = s.viewer.api_key
    ? "key " + s.viewer.api_key + (s.viewer.sees_all_jobs ? " (all jobs)" : " (its own jobs)")
    : "";
  const ready = s.pools.filter((p) => p.ready && p.live && !p.draining).length;
  const running = s.jobs.filter((j) => j.state === "running").length;
  $("tokens-per-s").textContent = s.tokens_per_s.toFixed(1);
  $("pools-ready").textContent = ready + " / " + s.pools.length;
  $("queue-depth").textContent = s.queue.depth;
  $("queue-eta").textContent = s.queue.depth === 0 ? "–" : s.queue.eta_ms === null ? "unknown" : ms(s.queue.eta_ms);
  $("jobs-running").textContent = running;
  $("updated").textContent = clock(s.generated_at_ms);

  fill("pools", s.pools.map((p) => {
    const tr = el("tr");
    const state = poolState(p);
    tr.dataset.poolId = p.pool_id;
    tr.dataset.state = state;
    tr.dataset.ready = String(state === "ready");
    cell(tr, p.pool_id, "id");
    cell(tr, p.host_id);
    cell(tr, p.model_id);
    cell(tr, p.engine);
    cell(tr, badge(state));
    cell(tr, p.slots_free + " / " + p.slots_total, "num");
    cell(tr, p.in_flight, "num");
    cell(tr, p.tokens_per_s.toFixed(1), "num");
    cell(tr, p.restarts, "num");
    cell(tr, p.last_error, p.last_error ? "error" : "");
    return tr;
  }), 10);

  fill("jobs", s.jobs.map((j) => {
    const tr = el("tr");
    tr.dataset.taskId = j.task_id;
    tr.dataset.state = j.state;
    const id = cell(tr, j.task_id.slice(0, 12), "id");
    id.title = j.task_id;
    cell(tr, j.model);
    cell(tr, badge(j.state));
    cell(tr, j.pool_id);
    cell(tr, clock(j.created_at_ms));
    cell(tr, ms(j.queue_wait_ms), "num");
    cell(tr, ms(j.ttft_ms), "num");
    cell(tr, ms(j.decode_time_ms), "num");
    cell(tr, ms(j.total_ms), "num");
    cell(tr, j.tokens_in + " / " + j.tokens_out, "num");
    cell(tr, j.tokens_per_s === null ? null : j.tokens_per_s.toFixed(1), "num");
    cell(tr, j.error_code || j.finish_reason, j.error_code ? "error" : "");
    return tr;
  }), 12);

  fill("hosts", s.hosts.map((h) => {
    const tr = el("tr");
    tr.dataset.hostId = h.host_id;
    cell(tr, h.host_id, "id");
    cell(tr, badge(!h.live ? "lost" : h.cordoned ? "cordoned" : "live"));
    const devices = el("div");
    for (const d of h.devices) {
      const line = el("div", null, "device");
      line.appendChild(el("span", d.id + " " + (d.name || d.kind)));
      const meter = el("span", null, "meter");
      const used = el("span");
      const total = d.memory_total_bytes || 1;
      used.style.width = Math.round(100 * (total - d.memory_free_bytes) / total) + "%";
      meter.appendChild(used);
      line.appendChild(meter);
      line.appendChild(el("span", bytes(d.memory_free_bytes) + " / " + bytes(d.memory_total_bytes)));
      devices.appendChild(line);
    }
    cell(tr, h.devices.length ? devices : "no devices");
    cell(tr, h.pools.join(", "));
    return tr;
  }), 4);

  fill("queue", s.queue.by_model.map((q) => {
    const tr = el("tr");
    cell(tr, q.model);
    cell(tr, q.queued, "num");
    cell(tr, q.eta_ms === null ? "unknown" : ms(q.eta_ms), "num");
    return tr;
  }), 3);

  fill("deployments", s.deployments.map((d) => {
    const tr = el("tr");
    tr.dataset.deployment = d.name;
    cell(tr, d.name, "id");
    cell(tr, d.spec.model);
    cell(tr, badge(d.phase));
    cell(tr, d.spec.replicas.min + "–" + d.spec.replicas.max, "num");
    cell(tr, d.pools.map((p) => p.pool_id).join(", "));
    cell(tr, d.last_error, d.last_error ? "error" : "");
    return tr;
  }), 6);
}

// -- start ----------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("key-input").value.trim();
    $("key-input").value = "";
    if (!key) return;
    sessionStorage.setItem(KEY_ITEM, key);
    connect();
  });
  $("forget-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_ITEM);
    if (controller) controller.abort();
    controller = null;
    askForKey("Key forgotten. Enter an API key to show the status again.");
  });
  connect();
});
