// A run's page: its events (Berth's and Kubernetes'), then its output, live.
// Output is appended as text nodes: whatever a program prints shows as text.
"use strict";

const { project, run } = document.body.dataset;
const base = `/dashboard/runs/${encodeURIComponent(project)}/${encodeURIComponent(run)}`;
const logs = document.getElementById("logs");
const events = document.getElementById("events");
const live = document.getElementById("live");
const jobSelect = document.getElementById("job");
let reader = null;

async function loadEvents() {
  const response = await fetch(`${base}/events`);
  if (response.status === 401) { window.location.assign("/dashboard"); return; }
  if (!response.ok) return;
  const items = await response.json();
  events.replaceChildren(...items.map((e) => {
    const when = new Date(e.at * 1000).toISOString().replace("T", " ").slice(0, 19);
    const item = document.createElement("li");
    item.className = `event source-${e.source}`;
    item.textContent = `${when} ${e.source} ${e.kind}${e.job === null ? "" : ` job ${e.job}`}: ${e.message}`;
    return item;
  }));
}

async function follow() {
  if (reader) await reader.cancel().catch(() => {});
  logs.textContent = "";
  const [replica, job] = (jobSelect.value || "0/0").split("/");
  const response = await fetch(`${base}/logs?replica=${replica}&job=${job}`);
  if (!response.ok) { live.textContent = `output unavailable (${response.status})`; return; }
  live.textContent = "following";
  live.className = "live on";
  reader = response.body.getReader();
  const decoder = new TextDecoder();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    logs.append(decoder.decode(value, { stream: true }));
    logs.dataset.bytes = String(Number(logs.dataset.bytes || 0) + value.length);
  }
  live.textContent = "output complete";
  live.className = "live";
}

jobSelect.addEventListener("change", follow);
loadEvents();
setInterval(loadEvents, 5000);
follow();
