// The Shoal dashboard: reads /api/v1/swarm and /api/v1/status every 2 s and redraws.
// Data goes into the page only through textContent and attributes (never as HTML).
"use strict";

const EVERY_MS = 2000;
const token = new URLSearchParams(location.hash.slice(1)).get("token");
let updates = 0;
let lastOk = 0;

function $(id) { return document.getElementById(id); }

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i === 0 ? v.toFixed(0) : v.toFixed(1)) + " " + units[i];
}

function pct(p) { return (Math.floor(p * 10) / 10).toFixed(p >= 100 || p === 0 ? 0 : 1) + "%"; }

function when(unix) {
  if (!unix) return "–";
  return new Date(unix * 1000).toLocaleString();
}

function bar(percent) {
  const b = el("div", undefined, "bar" + (percent >= 100 ? " done" : ""));
  const fill = el("div", undefined, "fill");
  fill.style.width = Math.min(100, Math.max(0, percent)) + "%";
  b.append(fill, el("span", pct(percent), "pct"));
  return b;
}

async function get(path) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const r = await fetch(path, { headers, cache: "no-store" });
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}

function drawSwarm(s) {
  $("offload").textContent = pct(s.offload_percent);
  $("offload").dataset.percent = s.offload_percent;
  $("saved").textContent = bytes(s.origin_bytes_saved);
  $("saved").dataset.bytes = s.origin_bytes_saved;
  $("sent").textContent = bytes(s.bytes_from_origin) + " came from the origin";
  const money = s.money_saved.toFixed(2);
  $("money").textContent = money + " " + s.money.currency;
  $("money").dataset.amount = money;
  $("price").textContent = "at " + s.money.price_per_gb + " " + s.money.currency + " per GB from the origin";
  const names = [...new Set(s.agents.map(a => a.name))];
  $("agents").textContent = names.length;
  $("agents").dataset.count = names.length;
  const complete = s.releases.map(r => r.complete_agents + " of " + r.agents + " complete on " + r.release);
  $("complete").textContent = complete.join("; ") || "–";

  const releases = s.releases.map(r => r.release);
  const head = el("tr");
  head.append(el("th", "Agent"));
  for (const r of s.releases) {
    const th = el("th", r.release + " · " + pct(r.offload_percent) + " from peers");
    th.dataset.release = r.release;
    head.append(th);
  }
  $("grid").tHead.replaceChildren(head);
  const rows = [];
  for (const name of names) {
    const tr = el("tr");
    const mine = s.agents.find(a => a.name === name && a.this_agent);
    const live = s.agents.some(a => a.name === name && a.connected);
    tr.append(el("td", name + (mine ? " (this agent)" : ""), mine ? "me" : (live ? "" : "gone")));
    tr.dataset.agent = name;
    for (const release of releases) {
      const a = s.agents.find(x => x.name === name && x.release === release);
      const td = el("td", undefined, "cell");
      td.dataset.release = release;
      if (a) {
        td.dataset.percent = a.percent;
        td.title = a.pieces_held + " of " + a.piece_count + " pieces; " + bytes(a.bytes_from_peers) +
          " from peers, " + bytes(a.bytes_from_origin) + " from the origin, " + bytes(a.bytes_uploaded) + " uploaded";
        td.append(bar(a.percent));
      } else {
        td.textContent = "–";
      }
      tr.append(td);
    }
    rows.push(tr);
  }
  $("grid").tBodies[0].replaceChildren(...rows);
  $("grid-empty").hidden = releases.length > 0;
}

function drawStatus(st) {
  const keys = st.swarm_keys || [];
  const swarm = keys.length ? "private swarm (key " + keys[0] + ")" : "public swarm";
  $("where").textContent = st.name + " · channel " + st.channel + " · " + st.origin + " · " + swarm + " · shoal-agent " + st.agent_version;
  const c = st.current;
  if (!c) {
    for (const id of ["release", "progress", "from-peers", "from-origin", "uploaded", "fetches"]) {
      $(id).textContent = id === "release" ? "none now" : "–";
    }
    $("peers").tBodies[0].replaceChildren();
    $("bans").tBodies[0].replaceChildren();
  } else {
    $("release").textContent = c.release + " (version " + c.version + ", " + bytes(c.bytes) + ")";
    $("progress").textContent = c.pieces_held + " of " + c.piece_count + " pieces" + (c.complete ? ", complete, seeding" : "");
    $("progress").dataset.held = c.pieces_held;
    $("progress").dataset.count = c.piece_count;
    $("from-peers").textContent = bytes(c.bytes_from_peers);
    $("from-peers").dataset.bytes = c.bytes_from_peers;
    $("from-origin").textContent = bytes(c.bytes_from_origin);
    $("from-origin").dataset.bytes = c.bytes_from_origin;
    $("uploaded").textContent = bytes(c.bytes_uploaded);
    $("uploaded").dataset.bytes = c.bytes_uploaded;
    $("fetches").textContent = c.origin_fetches + " (" + c.origin_failures + " failed)";
    const peers = c.peers.map(p => {
      const tr = el("tr");
      tr.dataset.peer = p.peer;
      tr.append(el("td", p.peer.slice(0, 12)), el("td", p.name || "–"), el("td", p.address || "–"),
        el("td", pct(c.piece_count ? 100 * p.pieces_held / c.piece_count : 0), "num"),
        el("td", String(p.fetching), "num"), el("td", String(p.serving), "num"),
        el("td", p.slow_link ? "slow" : "fast"));
      return tr;
    });
    $("peers").tBodies[0].replaceChildren(...peers);
    const bans = c.bans.slice().reverse().map(b => {
      const tr = el("tr");
      tr.append(el("td", when(b.at)), el("td", b.peer.slice(0, 12)), el("td", b.addresses.join(", ") || "–"), el("td", b.reason));
      return tr;
    });
    $("bans").tBodies[0].replaceChildren(...bans);
  }
  const p = st.last_poll;
  $("poll").textContent = p ? when(p.at) + ": " + (p.ok ? "" : "failed: ") + p.message : "not yet";
  $("next-poll").textContent = when(st.next_poll_at);
  $("kept").textContent = st.kept.map(k => k.release).join(", ") || "none yet";
  const e = st.last_error;
  // An error followed by a good check is history, not a live problem.
  const past = e && p && p.ok && p.seq > e.seq;
  $("last-error").textContent = e ? (past ? "(since recovered) " : "") + when(e.at) + ": " + e.message +
    (e.note ? " (" + e.note + ")" : "") : "none";
  $("last-error").className = e && !past ? "error" : "";
}

let busy = false;

async function tick() {
  if (busy) return; // a slow answer is not overtaken by the next one
  busy = true;
  try {
    const [swarm, status] = await Promise.all([get("/api/v1/swarm"), get("/api/v1/status")]);
    drawSwarm(swarm);
    drawStatus(status);
    updates++;
    lastOk = Date.now();
    const live = $("live");
    live.dataset.updates = updates;
    live.className = "live";
    live.textContent = "live · updated " + new Date().toLocaleTimeString();
  } catch (err) {
    const live = $("live");
    live.className = "live stale";
    live.textContent = "cannot reach the agent (" + err.message + ")" +
      (lastOk ? "; last update " + new Date(lastOk).toLocaleTimeString() : "");
  } finally {
    busy = false;
  }
}

tick();
setInterval(tick, EVERY_MS);
