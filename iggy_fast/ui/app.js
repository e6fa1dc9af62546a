// The iggy-fast dashboard: logs in over the JSON API (a JWT kept for this tab only), then
// refreshes every second: topics, sizes, rates and lag from /stats/rates (one request however
// many topics), and every few seconds the clients and server stats. Charts are drawn on a canvas (no
// library): one line per topic, the last 60 seconds.
"use strict";

const TICK_MS = 1000;
const STRUCTURE_EVERY = 3;          // ticks between refreshes of clients and stats
const HISTORY = 60;                 // seconds of rates kept per topic
const COLORS = ["#2b6cb0", "#c05621", "#2f855a", "#b83280", "#6b46c1", "#b7791f",
                "#2c7a7b", "#c53030", "#4a5568", "#38a169"];

const state = {
  token: sessionStorage.getItem("iggy-token"),
  tick: 0,
  timer: null,
  series: new Map(),                // "stream/topic" -> {in: [..], out: [..], color}
  topics: [],                       // rows for the topics table
  rates: new Map(),                 // "stream/topic" -> {in, out}
};

const $ = (id) => document.getElementById(id);

class Unauthorized extends Error {}

// -- the API -------------------------------------------------------------------------------

async function api(path, options = {}) {
  const headers = {"content-type": "application/json"};
  if (state.token) headers.authorization = `Bearer ${state.token}`;
  let reply;
  try {
    reply = await fetch(path, {...options, headers});
  } catch (e) {
    throw new TypeError("server unreachable");
  }
  if (reply.status === 401) throw new Unauthorized();
  if (reply.status === 404) return null;        // a stream or topic that vanished
  if (!reply.ok) {
    let reason = reply.statusText;
    try { reason = (await reply.json()).reason || reason; } catch (e) { /* not JSON */ }
    throw new Error(`${path}: ${reply.status} ${reason}`);
  }
  return reply.status === 204 ? null : reply.json();
}

// -- logging in and out ----------------------------------------------------------------------

function showLogin(message) {
  clearInterval(state.timer);
  state.timer = null;
  state.token = null;
  sessionStorage.removeItem("iggy-token");
  $("dashboard").hidden = true;
  $("logout").hidden = true;
  $("login-view").hidden = false;
  $("password").value = "";                 // secrets do not stay in the page
  $("token").value = "";
  setBanner(message || "", false);
}

async function login(event) {
  event.preventDefault();
  const token = $("token").value.trim();
  const [path, body] = token
    ? ["/personal-access-tokens/login", {token}]
    : ["/users/login", {username: $("username").value, password: $("password").value}];
  $("login-error").textContent = "";
  try {
    const reply = await fetch(path, {method: "POST", body: JSON.stringify(body),
                                     headers: {"content-type": "application/json"}});
    if (!reply.ok) {
      let reason = reply.statusText;
      try { reason = (await reply.json()).reason || reason; } catch (e) { /* not JSON */ }
      $("login-error").textContent = `Login failed: ${reason}`;
      return;
    }
    const identity = await reply.json();
    state.token = identity.access_token.token;
    sessionStorage.setItem("iggy-token", state.token);
    start();
  } catch (e) {
    $("login-error").textContent = "The server is not answering.";
  }
}

async function logout() {
  try { await api("/users/logout", {method: "DELETE"}); } catch (e) { /* leaving anyway */ }
  showLogin("Logged out.");
}

function start() {
  $("login-view").hidden = true;
  $("dashboard").hidden = false;
  $("logout").hidden = false;
  setBanner("", false);
  state.tick = 0;
  refresh();
  state.timer = setInterval(refresh, TICK_MS);
}

function setBanner(text, gone) {
  const banner = $("banner");
  banner.textContent = text;
  banner.hidden = !text;
  banner.classList.toggle("gone", !!gone);
}

// -- refreshing ------------------------------------------------------------------------------

let busy = false;

async function refresh() {
  if (busy) return;                 // a slow server: skip a tick rather than pile up
  busy = true;
  try {
    await refreshRates();
    if (state.tick % STRUCTURE_EVERY === 0) await refreshStructure();
    state.tick += 1;
    setBanner("", false);
    renderTopics();
    drawCharts();
  } catch (e) {
    if (e instanceof Unauthorized) {
      showLogin("Your session has expired or was revoked: log in again.");
    } else if (e instanceof TypeError) {
      setBanner("The server is not answering; retrying every second.", true);
    } else {
      setBanner(String(e.message || e), false);
    }
  } finally {
    busy = false;
  }
}

// Topics, their sizes and rates, and consumer-group lag: one document, /stats/rates.
async function refreshRates() {
  const doc = await api("/stats/rates");
  const seen = new Set();
  state.rates.clear();
  state.topics = [];
  for (const t of (doc && doc.topics) || []) {
    const key = `${t.stream}/${t.topic}`;
    const now = t.rates["1s"];
    const rate = {in: now.messages_in, out: now.messages_out};
    state.rates.set(key, rate);
    state.topics.push({stream: t.stream, topic: t.topic, partitions: t.partitions.length,
                       segments: t.partitions.reduce((n, p) => n + p.segments, 0),
                       messages: t.messages, size: bytes(t.size_bytes)});
    seen.add(key);
    let s = state.series.get(key);
    if (!s) {
      s = {in: [], out: [], color: COLORS[state.series.size % COLORS.length]};
      state.series.set(key, s);
    }
    s.in.push(rate.in);
    s.out.push(rate.out);
    if (s.in.length > HISTORY) { s.in.shift(); s.out.shift(); }
  }
  for (const key of [...state.series.keys()]) {
    if (!seen.has(key)) state.series.delete(key);          // the topic is gone
  }
  renderGroups((doc && doc.consumer_groups) || []);
}

// Clients and the server's stats change less often than rates.
async function refreshStructure() {
  const [clients, stats] = await Promise.all([api("/clients"), api("/stats")]);
  renderClients(clients || []);
  renderStats(stats);
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

// -- rendering -------------------------------------------------------------------------------

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text;
  return td;
}

function fillTable(id, rows) {
  const body = $(id).querySelector("tbody");
  body.replaceChildren(...rows.map((values) => {
    const tr = document.createElement("tr");
    tr.append(...values.map(cell));
    return tr;
  }));
}

const rate = (x) => (x === undefined ? "–" : Math.round(x).toLocaleString());

function renderTopics() {
  fillTable("topics", state.topics.map((t) => {
    const r = state.rates.get(`${t.stream}/${t.topic}`) || {};
    return [t.stream, t.topic, t.partitions, t.segments, t.messages.toLocaleString(), t.size,
            rate(r.in), rate(r.out)];
  }));
}

function renderGroups(groups) {
  const rows = [];
  for (const g of groups) {
    for (const p of g.partitions) {
      rows.push([g.stream, g.topic, g.group, g.members, p.partition_id,
                 p.committed_offset ?? "–", p.high_watermark, p.lag.toLocaleString()]);
    }
  }
  fillTable("groups", rows);
}

function renderClients(clients) {
  fillTable("clients", clients.map((c) => [c.client_id, c.user_id ?? "–", c.address,
                                           c.transport, c.consumer_groups_count]));
}

function renderStats(stats) {
  if (!stats) return;
  $("server-line").textContent =
    `${stats.hostname} · iggy-fast ${stats.iggy_server_version} · up ${Math.round(stats.run_time / 1e6)} s`;
  const shown = ["messages_count", "messages_size_bytes", "streams_count", "topics_count",
                 "partitions_count", "segments_count", "clients_count",
                 "consumer_groups_count", "memory_usage", "cpu_usage", "free_disk_space"];
  const dl = $("stats");
  dl.replaceChildren(...shown.flatMap((key) => {
    const dt = document.createElement("dt");
    dt.textContent = key.replaceAll("_", " ");
    const dd = document.createElement("dd");
    const value = stats[key];
    dd.textContent = typeof value === "number" ? value.toLocaleString() : String(value);
    return [dt, dd];
  }));
}

function drawCharts() {
  drawChart($("chart-in"), "in");
  drawChart($("chart-out"), "out");
  const legend = $("legend");
  legend.replaceChildren(...[...state.series].map(([key, s]) => {
    const li = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.style.background = s.color;
    li.append(swatch, key);
    return li;
  }));
}

function drawChart(canvas, which) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 34;
  ctx.clearRect(0, 0, w, h);
  let top = 1;
  for (const s of state.series.values()) top = Math.max(top, ...s[which]);
  ctx.strokeStyle = "#ccd";
  ctx.fillStyle = "#556";
  ctx.font = "11px system-ui, sans-serif";
  ctx.beginPath();
  ctx.moveTo(pad, 4); ctx.lineTo(pad, h - 16); ctx.lineTo(w - 4, h - 16);
  ctx.stroke();
  ctx.fillText(Math.round(top).toLocaleString(), 2, 12);
  ctx.fillText("0", pad - 10, h - 18);
  ctx.fillText(`last ${HISTORY} s`, w - 60, h - 3);
  const x = (i) => pad + (i * (w - pad - 6)) / (HISTORY - 1);
  const y = (v) => h - 16 - (v / top) * (h - 24);
  for (const s of state.series.values()) {
    const points = s[which];
    const offset = HISTORY - points.length;
    ctx.strokeStyle = s.color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    points.forEach((v, i) => (i ? ctx.lineTo(x(i + offset), y(v)) : ctx.moveTo(x(i + offset), y(v))));
    ctx.stroke();
  }
  canvas.dataset.points = [...state.series.values()].reduce((n, s) => n + s[which].filter((v) => v > 0).length, 0);
}

$("login-form").addEventListener("submit", login);
$("logout").addEventListener("click", logout);
if (state.token) start(); else showLogin("");
