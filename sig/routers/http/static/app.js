// sig status page: live state over Server-Sent Events (/api/events).
// Every name and value comes from the network and may be hostile: it is only
// ever put into the page as text (textContent, createTextNode), never as HTML.
"use strict";

const TAIL_ROWS = 200;        // tail entries kept in the page
const BUILTIN = new Set(["#connect", "#disconnect"]);
const SHOWN = new Set(["link", "state", "peer", "senders", "frames_in", "frames_out",
  "bytes_in", "bytes_out", "crc_errors", "framing_errors", "oversize", "dropped",
  "dropped_events", "dropped_too_large", "port_state"]);

function $(id) { return document.getElementById(id); }

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function num(value) {
  return typeof value === "number" ? value : 0;
}

function fmt(n) {
  n = num(n);
  if (n >= 1e9) return (n / 1e9).toFixed(1) + "G";
  if (n >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (n >= 1e4) return (n / 1e3).toFixed(1) + "k";
  return String(n);
}

function cell(text, cls) { return el("td", text, cls); }

function renderLinks(state) {
  const body = $("links").tBodies[0];
  const rows = [];
  for (const link of state.links) {
    const tr = el("tr");
    tr.dataset.link = String(link.link);
    const st = String(link.port_state === "closed" ? "closed" : link.state);
    tr.append(cell(link.link, "mono link-name"), cell(st, "state-" + st.replace(/[^a-z-]/g, "")),
      cell(link.peer || "-"), cell((link.senders || []).join(", ") || "-"),
      cell(fmt(link.frames_in) + " / " + fmt(link.frames_out), "num"),
      cell(fmt(link.bytes_in) + " / " + fmt(link.bytes_out), "num"),
      cell(num(link.crc_errors) + " / " + num(link.framing_errors) + " / " + num(link.oversize), "num"),
      cell(fmt(link.dropped_events !== undefined ? link.dropped_events : link.dropped), "num"));
    const other = [];
    for (const [key, value] of Object.entries(link)) {
      if (!SHOWN.has(key) && value !== null && typeof value !== "object") other.push(key + "=" + value);
    }
    tr.append(cell(other.join(" "), "other"));
    rows.push(tr);
  }
  if (!rows.length) {
    const tr = el("tr");
    const td = cell("no links", "muted");
    td.colSpan = 9;
    tr.append(td);
    rows.push(tr);
  }
  body.replaceChildren(...rows);
}

// counts: events per second, oldest first; the last second is still running, so
// it is left out of the line (it would always end in a dip).
function drawSpark(canvas, counts) {
  counts = counts.slice(0, -1);
  const ratio = window.devicePixelRatio || 1;
  const w = 120, h = 22;
  canvas.width = w * ratio;
  canvas.height = h * ratio;
  const ctx = canvas.getContext("2d");
  if (!ctx) return;
  ctx.scale(ratio, ratio);
  const max = Math.max(1, ...counts);
  ctx.strokeStyle = "#2266cc";
  ctx.lineWidth = 1.2;
  ctx.beginPath();
  counts.forEach((c, i) => {
    const x = (i / (counts.length - 1)) * (w - 2) + 1;
    const y = h - 2 - (c / max) * (h - 4);
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.stroke();
}

function renderSenders(state) {
  const rates = new Map();
  for (const r of state.rates) rates.set(r.sender + "\u0000" + r.event, r);
  const body = $("senders").tBodies[0];
  const list = $("sender-names");
  const rows = [];
  const options = [];
  for (const s of state.senders) {
    const tr = el("tr");
    tr.dataset.sender = String(s.name);
    const events = el("td");
    for (const event of s.events) {
      const rate = rates.get(s.name + "\u0000" + event);
      const line = el("div", null, "event-row");
      line.dataset.event = String(event);
      const canvas = el("canvas", null, "spark");
      canvas.setAttribute("aria-label", "events per second of " + event + " over the last minute");
      drawSpark(canvas, rate ? rate.counts : new Array(60).fill(0));
      line.append(el("span", event, "mono"), canvas,
        el("span", (rate ? rate.total : 0) + "/min", "muted"));
      events.append(line);
    }
    tr.append(cell(s.name, "mono sender-name"), cell(s.link, "mono link-name"), events,
      cell(s.requests.join(", ") || "-", "mono"), cell(fmt(s.triggers), "num"));
    rows.push(tr);
    const option = el("option");
    option.value = String(s.name);
    options.push(option);
  }
  if (!rows.length) {
    const tr = el("tr");
    const td = cell("no senders", "muted");
    td.colSpan = 5;
    tr.append(td);
    rows.push(tr);
  }
  body.replaceChildren(...rows);
  list.replaceChildren(...options);
}

function renderState(state) {
  $("gateway-name").textContent = String(state.gateway);
  document.title = "sig " + state.gateway;
  const st = state.stats || {};
  $("summary").textContent = state.links_total + " links · " + state.senders_total +
    " senders · " + fmt(st.triggers) + " triggers · " + fmt(st.dropped_events) + " dropped";
  renderLinks(state);
  renderSenders(state);
}

function addTail(batch) {
  $("tail-dropped").textContent = batch.dropped ? "(" + batch.dropped + " dropped for this page)" : "";
  if ($("tail-pause").checked) return;
  const tail = $("tail");
  for (const e of batch.events) {
    const li = el("li", null, BUILTIN.has(e.event) ? "builtin" : "");
    li.dataset.sender = String(e.sender);
    li.dataset.event = String(e.event);
    const time = new Date(e.time * 1000).toISOString().slice(11, 23);
    li.append(el("span", time + " ", "t"), el("span", e.sender + ":" + e.event, "s"),
      document.createTextNode(" "), el("span", e.data, "d"));
    tail.prepend(li);
  }
  while (tail.childElementCount > TAIL_ROWS) tail.lastElementChild.remove();
}

function connect() {
  const conn = $("conn");
  const source = new EventSource("/api/events");
  source.addEventListener("open", () => { conn.textContent = "live"; conn.className = "conn up"; });
  source.addEventListener("error", () => { conn.textContent = "reconnecting…"; conn.className = "conn down"; });
  source.addEventListener("state", (msg) => renderState(JSON.parse(msg.data)));
  source.addEventListener("tail", (msg) => addTail(JSON.parse(msg.data)));
}

async function sendRequest(ev) {
  ev.preventDefault();
  const out = $("req-outcome");
  let params;
  try {
    params = JSON.parse($("req-params").value || "null");
  } catch (err) {
    out.className = "outcome error";
    out.textContent = "params are not valid JSON: " + err.message;
    return;
  }
  const body = {
    sender: $("req-sender").value, method: $("req-method").value, params: params,
    timeout: Number($("req-timeout").value) || 5,
  };
  out.className = "outcome";
  out.textContent = "…";
  try {
    const resp = await fetch("/api/request", {
      method: "POST", body: JSON.stringify(body),
      headers: { "Content-Type": "application/json", "X-Sig-Page": "1" },
    });
    if (!resp.ok) {
      out.className = "outcome error";
      out.textContent = "HTTP " + resp.status + ": " + await resp.text();
      return;
    }
    const outcome = await resp.json();
    if (outcome.ok) {
      out.className = "outcome ok";
      out.textContent = "ok: " + JSON.stringify(outcome.result, null, 1);
    } else {
      out.className = "outcome error";
      out.textContent = outcome.error + (outcome.code ? " (" + outcome.code + ")" : "") + ": " + outcome.message;
    }
  } catch (err) {
    out.className = "outcome error";
    out.textContent = "request failed: " + err.message;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("request-form").addEventListener("submit", sendRequest);
  $("tail-clear").addEventListener("click", () => $("tail").replaceChildren());
  connect();
});
