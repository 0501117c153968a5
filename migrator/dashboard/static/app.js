// The migrator dashboard: reads /api/* and draws it; polls, so it updates by itself.
// Every text from the server goes in as textContent: never as HTML.
"use strict";

let interval = 2000;
let timer = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function mb(bytes) { return (bytes / 1e6).toFixed(1); }

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "?";
  if (seconds < 100) return `${Math.round(seconds)} s`;
  if (seconds < 6000) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function when(epoch) { return epoch ? new Date(epoch * 1000).toLocaleString() : ""; }

function bar(done, total) {
  const share = total > 0 ? Math.min(100, (100 * done) / total) : 0;
  const inner = el("div");
  inner.style.width = `${share.toFixed(1)}%`;
  return el("div", { class: "bar", title: `${share.toFixed(0)}%` }, inner);
}

function state(name) { return el("span", { class: `state state-${name}` }, name); }

function table(headers, rows) {
  const head = el("tr", {}, ...headers.map((h) => el("th", {}, h)));
  return el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows));
}

function cell(content, cls) { return el("td", cls ? { class: cls } : {}, content); }

function card(label, value) {
  return el("div", { class: "card" }, el("div", { class: "value" }, value), el("div", { class: "label" }, label));
}

function stateSummary(states) {
  const parts = Object.entries(states).filter(([, n]) => n > 0);
  return el("span", {}, ...parts.flatMap(([s, n], i) => [i ? ", " : "", `${n} `, state(s)]));
}

async function getJSON(path) {
  const response = await fetch(path, { cache: "no-store", credentials: "same-origin" });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

function crumbs(...links) {
  const nav = document.getElementById("crumbs");
  nav.replaceChildren(...links.flatMap(([text, href]) => [" / ", href ? el("a", { href }, text) : text]));
}

// -- the batch list ----------------------------------------------------------------

function batchList(batches) {
  crumbs(["batches", null]);
  const rows = batches.map((b) =>
    el("tr", { "data-batch": b.batch_id },
      cell(el("a", { href: `#/batch/${encodeURIComponent(b.batch_id)}` }, b.batch_id)),
      cell(when(b.created)),
      cell(b.mailbox_count, "num"),
      cell(stateSummary(b.states)),
      cell(bar(b.done_bytes, b.total_bytes)),
      cell(`${b.done_messages}/${b.total_messages}`, "num"),
      cell(b.messages_per_second.toFixed(1), "num"),
      cell(b.mb_per_second.toFixed(2), "num"),
      cell(b.finished === b.mailbox_count ? "ended" : duration(b.eta_seconds), "num"),
    ));
  return [
    el("h1", {}, "Batches"),
    batches.length ? table(["Batch", "Created", "Mailboxes", "States", "Progress", "Messages", "msg/s", "MB/s", "ETA"], rows)
      : el("p", { class: "muted", id: "no-batches" }, "No batch in this Redis yet."),
  ];
}

// -- one batch -----------------------------------------------------------------------

function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

const CHART_SPAN = 30 * 60;  // seconds the chart shows at least, up to now

function chart(throughput, now) {
  // A bar of MB/s per minute, and messages/s as a line over them; both scaled to their peak.
  if (throughput.length === 0) return el("p", { class: "muted" }, "Nothing copied yet.");
  const width = 720, height = 170, left = 10, right = 10, top = 10, bottom = 28;
  const points = throughput.map((t) => ({ x: t.minute, m: t.messages / 60, b: t.bytes / 60e6 }));
  const x1 = Math.max(points[points.length - 1].x + 60, Math.ceil(now / 60) * 60);
  const x0 = Math.min(points[0].x, x1 - CHART_SPAN);
  const plotW = width - left - right, plotH = height - top - bottom;
  const xOf = (minute) => left + ((minute - x0) / (x1 - x0)) * plotW;
  const maxM = Math.max(...points.map((p) => p.m), 1e-9), maxB = Math.max(...points.map((p) => p.b), 1e-9);
  const box = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, class: "chart" });
  box.append(svg("line", { x1: left, x2: width - right, y1: top + plotH, y2: top + plotH, stroke: "#8c959f" }));
  const barW = Math.max(1, (60 / (x1 - x0)) * plotW - 2);
  for (const p of points) {
    const h = (p.b / maxB) * plotH;
    box.append(svg("rect", { x: xOf(p.x) + 1, y: top + plotH - h, width: barW, height: h, fill: "#8fd19e" }));
  }
  const coords = points.map((p) => [xOf(p.x) + 1 + barW / 2, top + plotH - (p.m / maxM) * plotH]);
  box.append(svg("polyline", { points: coords.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" "),
    fill: "none", stroke: "#0969da", "stroke-width": 2 }));
  for (const [x, y] of coords) box.append(svg("circle", { cx: x.toFixed(1), cy: y.toFixed(1), r: 3, fill: "#0969da" }));
  const label = (x, text, anchor) => {
    const t = svg("text", { x, y: height - 8, "font-size": 11, fill: "#6e7781", "text-anchor": anchor });
    t.textContent = text;
    return t;
  };
  const clock = (epoch) => new Date(epoch * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  box.append(label(left, clock(x0), "start"), label(width - right, clock(x1), "end"));
  const legend = el("div", { class: "legend" },
    el("span", { class: "b" }, `▮ MB/s (peak ${maxB.toFixed(2)})`),
    el("span", { class: "m" }, `— messages/s (peak ${maxM.toFixed(1)})`),
    el("span", { class: "muted" }, "per minute"));
  return el("div", {}, box, legend);
}

function errorGroups(groups) {
  if (groups.length === 0) return el("p", { class: "muted", id: "errors" }, "No errors.");
  return el("div", { id: "errors" }, ...groups.map((g) =>
    el("div", { class: "reason", "data-reason": g.reason },
      el("strong", {}, `${g.reason} `), el("span", { class: "muted" }, `(${g.count} mailboxes)`),
      el("ul", {}, ...g.mailboxes.map((m) => el("li", {},
        el("a", { href: `#/batch/${encodeURIComponent(currentBatch)}/mailbox/${encodeURIComponent(m.job_id)}` }, m.source),
        " ", state(m.state), ": ", el("span", { class: "error-text" }, m.error)))))));
}

let currentBatch = "";

function batchPage(b) {
  currentBatch = b.batch_id;
  crumbs(["batches", "#/"], [b.batch_id, null]);
  const ended = b.finished === b.mailbox_count;
  const rows = b.mailboxes.map((m) =>
    el("tr", { "data-job": m.job_id },
      cell(m.line, "num"),
      cell(el("a", { href: `#/batch/${encodeURIComponent(b.batch_id)}/mailbox/${encodeURIComponent(m.job_id)}` }, m.source)),
      cell(m.target),
      cell(state(m.state), "state-cell"),
      cell(bar(m.done_messages, m.total_messages)),
      cell(`${m.done_messages}/${m.total_messages}`, "num"),
      cell(`${mb(m.done_bytes)}/${mb(m.total_bytes)}`, "num"),
      cell(m.skipped_messages || "", "num"),
      cell(m.heartbeat_age === null ? "" : duration(m.heartbeat_age), "num"),
      cell(m.last_sync ? `${duration(Math.max(0, b.now - m.last_sync))} ago` : "", "num last-sync"),
      cell(note(m), "note"),
    ));
  return [
    el("h1", {}, `Batch ${b.batch_id}`),
    el("div", { class: "cards" },
      card("mailboxes ended", `${b.finished}/${b.mailbox_count}`),
      card("messages", `${b.done_messages}/${b.total_messages}`),
      card("MB", `${mb(b.done_bytes)}/${mb(b.total_bytes)}`),
      card("messages/s, last 5 min", b.messages_per_second.toFixed(1)),
      card("MB/s, last 5 min", b.mb_per_second.toFixed(2)),
      card("ETA", ended ? "ended" : duration(b.eta_seconds)),
      card("skipped", b.skipped_messages)),
    el("p", {}, "States: ", stateSummary(b.states)),
    bar(b.done_bytes, b.total_bytes),
    el("h2", {}, "Throughput"), chart(b.throughput, b.now),
    el("h2", {}, "Errors by reason"), errorGroups(b.errors),
    el("h2", {}, "Mailboxes"),
    table(["Line", "Source", "Target", "State", "Progress", "Messages", "MB", "Skipped", "Heartbeat", "Last sync", "Note"], rows),
  ];
}

// -- one mailbox ---------------------------------------------------------------------

// Folders read the mailbox's checkpoints: fetched when the page opens and every 15 s.
const FOLDERS_EVERY = 15000;
let folderCache = { key: "", at: 0, rows: [] };

async function foldersOf(batch, job) {
  const key = `${batch}/${job}`;
  if (folderCache.key !== key || Date.now() - folderCache.at > FOLDERS_EVERY) {
    const data = await getJSON(`/api/batches/${encodeURIComponent(batch)}/mailboxes/${encodeURIComponent(job)}/folders`);
    folderCache = { key, at: Date.now(), rows: data.folders };
  }
  return folderCache.rows;
}

function mailboxPage(m, folders) {
  crumbs(["batches", "#/"], [m.batch_id, `#/batch/${encodeURIComponent(m.batch_id)}`], [m.source, null]);
  const skipped = m.skipped.map((s) =>
    el("tr", { class: "skipped" }, cell(s.folder), cell(s.uid, "num"), cell(s.size, "num"), cell(s.reason, "note")));
  const passes = m.passes.slice().reverse().map((p) =>
    el("tr", { class: `pass pass-${p.kind}` }, cell(p.finished), cell(p.kind), cell(state(p.state)), cell(p.moved, "note")));
  const events = m.events.slice().reverse().map((e) =>
    el("tr", { class: `event event-${e.kind}` }, cell(e.time), cell(e.kind), cell(e.text, "note")));
  return [
    el("h1", {}, `${m.source} → ${m.target}`),
    el("p", {}, state(m.state), m.folder && m.state === "running" ? ` in ${m.folder}` : ""),
    el("div", { class: "cards" },
      card("messages", `${m.done_messages}/${m.total_messages}`),
      card("MB", `${mb(m.done_bytes)}/${mb(m.total_bytes)}`),
      card("copied by this batch", m.copied_messages),
      card("left by quota", m.left_messages),
      card("skipped", m.skipped_messages),
      card("time", duration(m.seconds)),
      card("MB/s", m.mb_per_second === null ? "?" : m.mb_per_second)),
    m.error ? el("p", { class: "problem", id: "mailbox-error" }, m.error) : null,
    el("h2", {}, "Folders"),
    folders.length ? el("div", { id: "folders" }, table(["Source folder", "At the target", "Skipped"],
      folders.map((f) => el("tr", {}, cell(f.folder), cell(f.copied, "num"), cell(f.skipped || "", "num")))))
      : el("p", { class: "muted", id: "folders" }, "Nothing copied yet."),
    el("h2", {}, "Passes (newest first)"),
    passes.length ? el("div", { id: "passes" }, table(["Ended", "Pass", "State", "What it moved"], passes))
      : el("p", { class: "muted", id: "passes" }, "No pass ended yet."),
    el("h2", {}, "Skipped messages"),
    skipped.length ? el("div", { id: "skipped" }, table(["Folder", "UID", "Bytes", "Why"], skipped))
      : el("p", { class: "muted", id: "skipped" }, "None."),
    el("h2", {}, "Event log (newest first)"),
    el("div", { id: "events" }, table(["Time", "Event", "What"], events)),
  ];
}

// -- routing and polling -------------------------------------------------------------

async function render() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  let content;
  if (parts[0] === "batch" && parts[2] === "mailbox") {
    const data = await getJSON(`/api/batches/${encodeURIComponent(parts[1])}/mailboxes/${encodeURIComponent(parts[3])}`);
    content = mailboxPage(data, await foldersOf(parts[1], parts[3]));
  } else if (parts[0] === "batch" && parts[1]) {
    content = batchPage(await getJSON(`/api/batches/${encodeURIComponent(parts[1])}`));
  } else {
    content = batchList(await getJSON("/api/batches"));
  }
  document.getElementById("view").replaceChildren(...content.filter((c) => c !== null));
}

async function tick() {
  clearTimeout(timer);
  const updated = document.getElementById("updated");
  try {
    await render();
    updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
    updated.dataset.ticks = String(Number(updated.dataset.ticks || 0) + 1);
  } catch (error) {
    updated.textContent = `not updated: ${error.message}`;
  }
  timer = setTimeout(tick, interval);
}

window.addEventListener("hashchange", tick);
window.addEventListener("DOMContentLoaded", async () => {
  try { interval = 1000 * (await getJSON("/api/settings")).interval; } catch (error) { /* the default */ }
  tick();
});

// What the Note column says of a mailbox: a paused one's resume time first, its error whole.
function note(m) {
  const text = m.error || (m.state === "running" ? m.folder : "");
  if (m.state !== "paused" || !m.resume_at) return text;
  const at = new Date(m.resume_at * 1000).toLocaleString();
  return text ? `resumes ${at}: ${text}` : `resumes ${at}`;
}
