// poold's dashboard (docs/dashboard.md): reads the pool from /api/v1 with the token the person
// signed in with, and draws it. Read-only. Every string the API returns enters the page as
// text (createElement, textContent, setAttribute), never as HTML.
"use strict";

(function () {
  const API = "/api/v1";
  const REFRESH_MS = 5000;
  const TOKEN_KEY = "poold.token";
  const FULL = 0.999; // a share at least this is the whole device (shares are rounded to 1e-6)
  let timer = null;
  let refreshes = 0;
  let generation = 0; // bumped by each refresh and by signing out: an older refresh still in flight draws nothing

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // ---- the token: from the address (#token=...), or the sign-in form; kept in this tab only ----

  function takeTokenFromAddress() {
    const found = /(?:^#|&)token=([^&]+)/.exec(location.hash);
    if (found) {
      sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(found[1]));
      history.replaceState(null, "", location.pathname + location.search);
    }
  }

  function showSignIn(message) {
    clearTimeout(timer);
    generation += 1;
    document.getElementById("board").hidden = true;
    document.getElementById("sign-out").hidden = true;
    document.getElementById("sign-in").hidden = false;
    const error = document.getElementById("sign-in-error");
    error.textContent = message || "";
    error.hidden = !message;
    document.body.dataset.view = "sign-in";
  }

  async function get(path) {
    const response = await fetch(API + path, {
      headers: { Authorization: "Bearer " + sessionStorage.getItem(TOKEN_KEY), Accept: "application/json" },
      cache: "no-store",
      credentials: "omit",
    });
    if (!response.ok) {
      let detail = response.statusText;
      try {
        detail = (await response.json()).detail || detail;
      } catch (ignored) {
        // not JSON: keep the status text
      }
      throw new ApiError(response.status, `${path.split("?")[0]}: ${response.status} ${detail}`);
    }
    return response.json();
  }

  // ---- building elements from data, as text ----

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false || name.startsWith("on")) continue;
      if (name === "class") node.className = value;
      else node.setAttribute(name, String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const DASH = "\u2014";
  const num = (value, digits = 0) => (value === null || value === undefined ? DASH : Number(value).toFixed(digits));
  const pct = (value) => (value === null || value === undefined ? DASH : `${Number(value).toFixed(0)}%`);
  const money = (value) => (value === null || value === undefined ? DASH : Number(value).toFixed(2));
  const amount = (value) => String(Number(Number(value).toFixed(2)));
  // The API's times are UTC; one without a zone (as a SQLite store gives them) is read as UTC too.
  const parseTime = (iso) => Date.parse(/(?:[zZ]|[+-]\d\d:?\d\d)$/.test(iso) ? iso : iso + "Z");

  function age(iso) {
    if (!iso) return DASH;
    const seconds = Math.max(0, (Date.now() - parseTime(iso)) / 1000);
    if (seconds < 90) return `${seconds.toFixed(0)} s`;
    if (seconds < 5400) return `${(seconds / 60).toFixed(0)} min`;
    if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
    return `${(seconds / 86400).toFixed(1)} d`;
  }

  function fill(tableId, rows, empty) {
    const body = document.querySelector(`#${tableId} tbody`);
    const columns = document.querySelectorAll(`#${tableId} thead th`).length;
    body.replaceChildren(...(rows.length ? rows : [el("tr", { class: "empty" }, el("td", { colspan: columns }, empty))]));
  }

  function showError(section, message) {
    const box = document.querySelector(`[data-error="${section}"]`);
    box.textContent = message || "";
    box.hidden = !message;
  }

  // ---- sections: each draws from its calls; a failed call shows in place, the rest stays ----

  function deviceState(device, slices, node) {
    if (node.state !== "ready") return "down";
    if (device.quarantine || device.health !== "ok") return "unhealthy";
    if (device.scrubbing) return "scrubbing";
    const own = device.allocated_share;
    const held = own >= FULL ? "allocated" : own > 0 || slices.some((s) => s.allocated_share > 0) ? "shared" : "free";
    return held === "free" && node.drained ? "down" : held;
  }

  function jobLabels(holders) {
    return (holders || []).map((job) =>
      el("span", { class: "job", "data-job-id": job.id, title: `job ${job.id} ${job.name} (${job.owner || "?"}, queue ${job.queue})` },
        `#${job.id} ${job.name}`));
  }

  function deviceTile(device, slices, node, holders) {
    const state = deviceState(device, slices, node);
    const label = device.index === null ? device.uuid : `${device.kind.toUpperCase()} ${device.index}`;
    const memory = device.memory_total_mib ? `${(device.memory_total_mib / 1024).toFixed(0)} GiB` : null;
    const why = device.quarantine ? `quarantined: ${device.quarantine.reason || device.health_reason || "unhealthy"}`
      : device.health !== "ok" ? `unhealthy: ${device.health_reason || ""}` : device.scrubbing ? "scrubbing after a job" : null;
    return el("div", { class: `device ${state}`, "data-device": device.uuid, "data-node": device.node, "data-state": state,
                       title: `${device.uuid}\n${device.name}` },
      el("div", { class: "device-head" }, el("b", {}, label), " ", device.model, memory ? ` \u00b7 ${memory}` : null),
      el("div", { class: "device-figures muted" },
        `util ${pct(device.utilization_pct)}`, device.allocated_share > 0 && device.allocated_share < FULL ? ` \u00b7 held ${pct(device.allocated_share * 100)}` : null),
      why ? el("div", { class: "device-why" }, why) : null,
      el("div", { class: "jobs" }, jobLabels(holders.get(`${device.node}/${device.uuid}`))),
      slices.length ? el("div", { class: "slices" }, slices.map((slice) => {
        const sliceState = deviceState(slice, [], node);
        return el("div", { class: `slice ${sliceState}`, "data-device": slice.uuid, "data-parent": device.uuid, "data-state": sliceState,
                           title: slice.uuid },
          el("span", { class: "slice-name" }, slice.attributes.mig_profile || slice.name || slice.uuid),
          jobLabels(holders.get(`${slice.node}/${slice.uuid}`)));
      })) : null);
  }

  function drawMap(nodes, devices, placed) {
    const holders = new Map(); // "node/uuid" -> the placed jobs holding (a share of) it
    for (const job of placed || []) {
      for (const alloc of job.allocations) {
        const key = `${alloc.node}/${alloc.device_uuid}`;
        if (!holders.has(key)) holders.set(key, []);
        if (!holders.get(key).includes(job)) holders.get(key).push(job);
      }
    }
    const cards = nodes.map((node) => {
      const own = devices.filter((d) => d.node === node.name);
      const whole = own.filter((d) => !d.parent_uuid || !own.some((p) => p.uuid === d.parent_uuid));
      const down = node.state !== "ready" ? node.state : node.drained ? "drained" : null;
      const tiles = whole.map((d) => deviceTile(d, own.filter((s) => s.parent_uuid === d.uuid), node, holders));
      const free = tiles.filter((tile) => tile.dataset.state === "free").length; // whole devices: slices are drawn inside theirs
      return el("article", { class: `node${down ? " down" : ""}`, "data-node": node.name, "data-node-state": down || "ready" },
        el("h3", {}, node.name, " ", el("span", { class: "muted" }, `${free}/${whole.length} free \u00b7 heartbeat ${age(node.last_heartbeat_at)} ago`)),
        down ? el("div", { class: "node-down" }, down, node.drain_reason ? `: ${node.drain_reason}` : null) : null,
        el("div", { class: "devices" }, tiles),
        whole.length ? null : el("div", { class: "muted" }, `no devices (${node.cpu_cores} CPU cores)`));
    });
    document.getElementById("map").replaceChildren(...cards);
  }

  function drawModels(pool) {
    fill("models", pool.models.map((m) => el("tr", { "data-model": m.model },
      el("td", {}, m.model), el("td", {}, m.kind), el("td", {}, m.devices), el("td", {}, m.in_service), el("td", {}, m.free),
      el("td", {}, num(m.allocated, 2)),
      el("td", {}, Object.keys(m.mig || {}).length ? Object.entries(m.mig).map(([profile, c]) => `${profile} ${c.free}/${c.total}`).join(", ") : DASH),
      el("td", { "data-utilization": m.utilization_pct ?? "" }, pct(m.utilization_pct)),
      el("td", { "data-fragmentation": m.fragmentation ?? "" }, m.fragmentation === null ? DASH : pct(m.fragmentation * 100)),
      el("td", {}, money(m.price_per_hour)))), "no devices");
  }

  function queueUse(queue, key, kindOf) {
    if (key.toLowerCase() === "cost") return queue.cost_per_hour;
    let used = 0;
    for (const [model, count] of Object.entries(queue.devices)) {
      if (model.toLowerCase() === key.toLowerCase() || kindOf.get(model) === key.toLowerCase()) used += count;
    }
    return used;
  }

  function drawQueues(queues, devices) {
    const kindOf = new Map((devices || []).map((d) => [d.model, d.kind]));
    fill("queues", queues.map((q) => {
      const keys = [...new Set([...Object.keys(q.devices), ...Object.keys(q.guarantee), ...Object.keys(q.limit)])];
      const uses = keys.map((key) => {
        const used = queueUse(q, key, kindOf);
        const guarantee = q.guarantee[key];
        const limit = q.limit[key];
        const top = limit ?? guarantee ?? used;
        return el("div", { class: "use", "data-key": key, "data-used": used },
          el("span", { class: "use-key" }, key), " ", amount(used),
          guarantee !== undefined ? ` / guarantee ${guarantee}` : null, limit !== undefined ? ` / limit ${limit}` : null,
          top > 0 ? el("meter", { min: 0, max: top, value: Math.min(used, top), low: guarantee ?? top, high: top }) : null);
      });
      return el("tr", { "data-queue": q.name, title: q.description || "" },
        el("td", {}, q.name), el("td", {}, q.priority), el("td", { "data-placed": q.placed }, q.placed),
        el("td", { "data-pending": q.pending }, q.pending), el("td", {}, q.oldest_pending_at ? age(q.oldest_pending_at) : DASH),
        el("td", {}, money(q.cost_per_hour)), el("td", {}, uses.length ? uses : el("span", { class: "muted" }, "nothing held, no entitlement")));
    }), "no queues");
  }

  function drawRunning(placed, usage) {
    const spent = new Map((usage ? usage.rows : []).map((row) => [row.job_id, row]));
    fill("running", placed.map((job) => {
      const row = spent.get(job.id);
      return el("tr", { "data-job-id": job.id, "data-state": job.state },
        el("td", {}, job.id), el("td", {}, job.name), el("td", {}, job.owner || DASH), el("td", {}, job.queue),
        el("td", {}, job.state, job.stopping ? " (stopping)" : null), el("td", {}, job.node || DASH),
        el("td", { title: job.allocations.map((a) => a.device_uuid).join("\n") },
          job.allocations.length ? job.allocations.map((a) => `${a.device_model}${a.share < FULL ? ` \u00d7${a.share}` : ""}`).join(", ") : "CPU"),
        el("td", {}, money(row ? row.price_per_hour : job.price_per_hour)),
        el("td", { "data-cost": row ? row.cost : "" }, row ? money(row.cost) : DASH),
        el("td", {}, pct(row ? row.utilization_pct : null)));
    }), "no job is running");
  }

  function drawPending(pending) {
    fill("pending", pending.map((job) => el("tr", { "data-job-id": job.id },
      el("td", {}, job.id), el("td", {}, job.name), el("td", {}, job.owner || DASH), el("td", {}, job.queue),
      el("td", {}, age(job.submitted_at)), el("td", { class: "reason", "data-reason": "" }, job.reason || DASH))), "no job waits");
  }

  function drawEvents(events) {
    fill("events", events.map((e) => el("tr", { "data-event-id": e.id, "data-kind": e.kind },
      el("td", { title: e.at }, new Date(parseTime(e.at)).toLocaleTimeString()), el("td", {}, e.kind), el("td", {}, e.job_id ?? DASH),
      el("td", {}, e.node || DASH), el("td", {}, e.message))), "no events");
  }

  const SECTIONS = [
    // [section, calls it needs, calls it can do without, draw]
    ["map", ["nodes", "devices"], ["placed"], (r) => drawMap(r.nodes, r.devices, r.placed)],
    ["models", ["pool"], [], (r) => drawModels(r.pool)],
    ["queues", ["queues"], ["devices"], (r) => drawQueues(r.queues, r.devices)],
    ["running", ["placed"], ["usage"], (r) => drawRunning(r.placed, r.usage)],
    ["pending", ["pending"], [], (r) => drawPending(r.pending)],
    ["events", ["events"], [], (r) => drawEvents(r.events)],
  ];

  async function refresh() {
    clearTimeout(timer);
    const calls = {
      nodes: "/nodes", devices: "/devices", placed: "/jobs?state=assigned&state=running", pending: "/jobs?state=pending",
      queues: "/queues", pool: "/pool", usage: "/usage?by=job&state=running", events: "/events?limit=40",
    };
    const names = Object.keys(calls);
    const mine = ++generation;
    const settled = await Promise.allSettled(names.map((name) => get(calls[name])));
    if (mine !== generation) return;
    const denied = settled.find((s) => s.status === "rejected" && [401, 403].includes(s.reason.status));
    if (denied) {
      showSignIn(denied.reason.message);
      return;
    }
    const results = {};
    const failures = {};
    names.forEach((name, i) => {
      if (settled[i].status === "fulfilled") results[name] = settled[i].value;
      else failures[name] = settled[i].reason.message || String(settled[i].reason);
    });
    document.getElementById("sign-in").hidden = true;
    document.getElementById("board").hidden = false;
    document.getElementById("sign-out").hidden = false;
    for (const [section, needs, wants, draw] of SECTIONS) {
      const missing = needs.filter((name) => name in failures);
      const partial = wants.filter((name) => name in failures);
      try {
        if (!missing.length) draw(results);
        showError(section, [...missing, ...partial].map((name) => failures[name]).join("; ") || null);
      } catch (problem) {
        showError(section, `could not draw: ${problem.message}`);
      }
    }
    refreshes += 1;
    const failed = Object.keys(failures).length;
    document.getElementById("refreshed").textContent =
      `refreshed ${new Date().toLocaleTimeString()}` + (failed ? ` \u00b7 ${failed} of ${names.length} calls failed` : "");
    document.body.dataset.view = "board";
    document.body.dataset.refreshes = String(refreshes);
    clearTimeout(timer);
    timer = setTimeout(refresh, REFRESH_MS);
  }

  function start() {
    takeTokenFromAddress();
    document.getElementById("sign-in").addEventListener("submit", (event) => {
      event.preventDefault();
      const input = document.getElementById("token");
      const token = input.value.trim();
      input.value = "";
      if (!token) return showSignIn("paste a token first");
      sessionStorage.setItem(TOKEN_KEY, token);
      refresh();
    });
    document.getElementById("sign-out").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      showSignIn(null);
    });
    if (sessionStorage.getItem(TOKEN_KEY)) refresh();
    else showSignIn(null);
  }

  start();
})();
