// Berth's dashboard: draws /dashboard/state and redraws on every server-sent event.
// Every value goes into the page as a text node (never innerHTML), so names and
// reasons with HTML in them show as text.
"use strict";

const root = document.getElementById("projects");
const live = document.getElementById("live");

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined) continue;
    if (key === "class") node.className = value;
    else if (key === "title") node.title = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" || typeof child === "number" ? String(child) : child);
  }
  return node;
}

function age(seconds) {
  if (seconds < 60) return `${Math.floor(seconds)}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h${Math.floor((seconds % 3600) / 60)}m`;
  return `${Math.floor(seconds / 86400)}d`;
}

function gpuMap(project) {
  const section = el("section", { class: "gpu-map" }, el("h3", {}, "GPUs"));
  if (project.mode && project.mode !== "cluster") {
    section.append(el("p", { class: "note" },
      `Nodes unknown: ${project.mode} mode (${project.mode_reason}). The kube-scheduler places runs.`));
    return section;
  }
  const byModel = new Map();
  for (const node of project.nodes) {
    for (const group of node.groups) {
      const key = group.memory_gib ? `${group.name} ${group.memory_gib}GB` : group.name;
      if (!byModel.has(key)) byModel.set(key, []);
      byModel.get(key).push([node, group]);
    }
  }
  if (byModel.size === 0) section.append(el("p", { class: "note" }, "No GPU nodes."));
  for (const [model, entries] of [...byModel.entries()].sort()) {
    const free = entries.reduce((n, [, g]) => n + g.gpus.filter((u) => u === null).length, 0);
    const all = entries.reduce((n, [, g]) => n + g.gpus.length, 0);
    const row = el("div", { class: "model", "data-model": model },
      el("h4", {}, `${model}: ${free} of ${all} free`));
    const byPool = new Map();
    for (const entry of entries) {
      const pool = entry[0].pool || "";
      if (!byPool.has(pool)) byPool.set(pool, []);
      byPool.get(pool).push(entry);
    }
    for (const [pool, members] of [...byPool.entries()].sort()) {
      const poolFree = members.reduce((n, [, g]) => n + g.gpus.filter((u) => u === null).length, 0);
      const poolAll = members.reduce((n, [, g]) => n + g.gpus.length, 0);
      const box = el("div", { class: "pool-group", "data-pool": pool },
        el("span", { class: "pool-name" },
          `${pool ? `pool ${pool}` : "no pool label"}: ${poolFree} of ${poolAll} free`));
      box.append(tiles(members));
      row.append(box);
    }
    section.append(row);
  }
  return poolsSection(section, project);
}

function tiles(entries) {
  const row = el("div", { class: "tiles" });
  for (const [node, group] of entries) {
    const tile = el("div", {
      class: node.schedulable ? "node" : "node unschedulable",
      "data-node": node.name,
      title: node.schedulable ? node.name : `${node.name}: ${node.reasons.join("; ")}`,
    }, el("span", { class: "node-name" }, node.name));
    const gpus = el("div", { class: "gpus" });
    group.gpus.forEach((user, i) => {
      gpus.append(el("span", {
        class: user === null ? "gpu free" : "gpu used",
        title: user === null ? `GPU ${i}: free` : `GPU ${i}: ${user}`,
      }));
    });
    tile.append(gpus);
    row.append(tile);
  }
  return row;
}

function poolsSection(section, project) {
  if (project.pools.length) {
    const pools = el("div", { class: "pools" }, el("h4", {}, "Autoscaler pools (nodes not yet present)"));
    for (const pool of project.pools) {
      const waits = pool.waiting.length ? `; waiting for a node: ${pool.waiting.join(", ")}` : "";
      pools.append(el("p", { class: "pool", "data-pool": pool.pool },
        `${pool.pool}: up to ${pool.max_nodes} nodes of ${pool.shape}${waits}`));
    }
    section.append(pools);
  }
  return section;
}

function queue(project) {
  const section = el("section", { class: "queue" }, el("h3", {}, `Queue (${project.queue.length})`));
  const s = project.standing;
  const caps = Object.entries(project.quotas || {}).map(([model, n]) => `${model} ≤ ${n}`);
  section.append(el("p", { class: "standing" },
    `${project.name} holds ${s.gpus_held} GPU${s.gpus_held === 1 ? "" : "s"};`
    + ` ${s.running} running, ${s.waiting} waiting`
    + (s.share === null ? "" : `; fair share: ${(s.share * 100).toFixed(1)}% of the cluster`
      + " (its largest fraction of any GPU model, CPU or memory; the smallest goes next)")
    + (caps.length ? `; quota: ${caps.join(", ")}` : "")));
  if (!project.queue.length) {
    section.append(el("p", { class: "note" }, "Nothing waits."));
    return section;
  }
  const table = el("table", {}, el("tr", {},
    el("th", {}, "#"), el("th", {}, "run"), el("th", {}, "user"), el("th", {}, "priority"),
    el("th", {}, "asks"), el("th", {}, "why it waits")));
  for (const entry of project.queue) {
    const asks = `${entry.nodes > 1 ? `${entry.nodes} nodes × ` : ""}${entry.gpu || "-"}`;
    table.append(el("tr", { class: "waiting", "data-run": entry.name },
      el("td", {}, entry.position === null ? "-" : `${entry.position} of ${entry.of}`),
      el("td", {}, runLink(project.name, entry.name)),
      el("td", {}, entry.user), el("td", {}, entry.priority), el("td", {}, asks),
      el("td", { class: "reason" }, entry.reason)));
  }
  section.append(table);
  return section;
}

function runLink(project, name) {
  return el("a", { href: `/dashboard/runs/${encodeURIComponent(project)}/${encodeURIComponent(name)}` }, name);
}

function runs(project, now) {
  const section = el("section", { class: "runs" }, el("h3", {}, "Runs"));
  const table = el("table", {}, el("tr", {},
    el("th", {}, "run"), el("th", {}, "user"), el("th", {}, "type"), el("th", {}, "status"),
    el("th", {}, "nodes"), el("th", {}, "GPUs"), el("th", {}, "age")));
  for (const run of project.runs) {
    table.append(el("tr", { class: `run status-${run.status}`, "data-run": run.name },
      el("td", {}, runLink(project.name, run.name)), el("td", {}, run.user), el("td", {}, run.type),
      el("td", { title: run.reason }, run.status), el("td", {}, run.nodes.join(", ")),
      el("td", {}, run.gpus), el("td", {}, age(now - run.submitted_at))));
  }
  section.append(table);
  return section;
}

function chart(project) {
  const section = el("section", { class: "chart" }, el("h3", {}, "Last hour"));
  const samples = project.usage;
  if (samples.length < 2) {
    section.append(el("p", { class: "note" }, "Samples every 30 s; the chart starts with the second."));
    return section;
  }
  const ns = "http://www.w3.org/2000/svg";
  const width = 600, height = 120;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("class", "usage");
  const t0 = samples[0].t, t1 = samples[samples.length - 1].t || t0 + 1;
  const top = Math.max(1, ...samples.map((s) => Math.max(s.total, s.queued)));
  const line = (key, cls) => {
    const path = document.createElementNS(ns, "polyline");
    path.setAttribute("points", samples.map((s) =>
      `${((s.t - t0) / Math.max(1, t1 - t0)) * width},${height - (s[key] / top) * (height - 4)}`).join(" "));
    path.setAttribute("class", cls);
    svg.append(path);
  };
  line("used", "used-line");
  line("queued", "queued-line");
  section.append(svg, el("p", { class: "legend" },
    el("span", { class: "used-key" }, "GPUs used"), " ", el("span", { class: "queued-key" }, "runs waiting"),
    ` (of ${samples[samples.length - 1].total} GPUs)`));
  return section;
}

function render(state) {
  const started = performance.now();
  const now = Date.now() / 1000;
  const nodes = state.projects.map((project) => {
    const section = el("section", { class: "project", "data-project": project.name },
      el("h2", {}, project.name));
    if (project.error) {
      section.append(el("p", { class: "error" }, project.error));
      return section;
    }
    section.append(gpuMap(project), queue(project), runs(project, now), chart(project));
    return section;
  });
  if (!nodes.length) nodes.push(el("p", { class: "note" }, "You are in no project yet."));
  root.replaceChildren(...nodes);
  // Read by tests and bench/dashboard.py: how many states were drawn, the last one's cost.
  document.body.dataset.renderMs = (performance.now() - started).toFixed(1);
  document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
}

function connect() {
  const source = new EventSource("/dashboard/stream");
  source.addEventListener("state", (event) => {
    live.textContent = "live";
    live.className = "live on";
    render(JSON.parse(event.data));
  });
  source.onerror = () => {
    live.textContent = "reconnecting…";
    live.className = "live";
    // A session that ended: the stream answers 401 and the browser gives up; go log in.
    fetch("/dashboard/state").then((r) => { if (r.status === 401) window.location.assign("/dashboard"); });
  };
}

connect();
