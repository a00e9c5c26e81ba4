"use strict";
// The dashboard reads the coordinator's API with the tokens given in the form, or in a link's
// fragment (`#token=…&operator=…`, never sent to the server). Either way they stay in this
// tab's session storage only: a fragment's tokens are erased from the address at once, so
// that they are not left in the address bar, a bookmark or a shared link.
const params = new URLSearchParams(location.hash.slice(1).replace(/^[a-z]+(\/\d+)?&?/, ""));
for (const key of ["token", "operator"]) {
  if (params.get(key)) sessionStorage.setItem(key, params.get(key));
}
if (params.has("token") || params.has("operator")) {
  const view = location.hash.match(/^#([a-z]+(\/\d+)?)/)?.[1] || "jobs";
  history.replaceState(null, "", location.pathname + "#" + view);
}
// The page's CSP allows no inline styles: sizes travel as data attributes, set here.
function applySizes() {
  for (const el of main.querySelectorAll("[data-width]")) el.style.width = el.dataset.width + "%";
  for (const el of main.querySelectorAll("[data-flex]")) el.style.flex = el.dataset.flex;
}
const token = () => sessionStorage.getItem("token") || "";
const operator = () => sessionStorage.getItem("operator") || "";
const main = document.getElementById("main");
const esc = s => String(s ?? "").replace(/[&<>"']/g, c => `&#${c.charCodeAt(0)};`);
const kebab = (o, k) => o?.[k] ?? o?.[k.replaceAll("-", "_")];

async function api(path, bearer) {
  const r = await fetch("/v1" + path, { headers: { Authorization: "Bearer " + bearer } });
  if (!r.ok) throw new Error(`${path}: ${r.status} ${(await r.text()).slice(0, 200)}`);
  return r.json();
}

function route() {
  const m = location.hash.match(/^#(jobs|workers|job\/(\d+))?/);
  return { view: m?.[1]?.startsWith("job/") ? "job" : (m?.[1] || "jobs"), job: m?.[2] };
}

function login(message) {
  main.innerHTML = `<form id="login"><h2>Sign in</h2>
    ${message ? `<p class="error">${esc(message)}</p>` : ""}
    <label>Client token (your jobs)<input name="token" type="password" autocomplete="off"></label>
    <label>Operator token (the workers page; optional)<input name="operator" type="password" autocomplete="off"></label>
    <button>Open</button></form>`;
  document.getElementById("login").onsubmit = e => {
    e.preventDefault();
    const f = new FormData(e.target);
    sessionStorage.setItem("token", f.get("token"));
    sessionStorage.setItem("operator", f.get("operator"));
    refresh();
  };
}

function progress(phases) {
  const done = phases.reduce((a, p) => a + p[1], 0), total = phases.reduce((a, p) => a + p[2], 0);
  const pct = total ? Math.round(100 * done / total) : 0;
  return `<div class="bar" title="${done}/${total} tasks"><i data-width="${pct}"></i></div>
          <span class="muted">${done}/${total}</span>`;
}

async function jobsView() {
  const jobs = await api("/jobs", token());
  main.innerHTML = `<h2>Jobs</h2><table id="jobs"><tr><th>job</th><th>state</th><th>progress</th>
    <th>segments</th><th>height</th><th>elapsed</th></tr>
    ${jobs.map(j => `<tr class="link" data-job="${j["job-id"]}">
      <td>job-${j["job-id"]}</td>
      <td class="state ${esc(j.state)}">${esc(j.state)}${j.executing ? " (executing)" : ""}</td>
      <td>${progress(j.phases)}</td><td>${j.phases[0]?.[2] ?? 0}</td>
      <td>${j["segment-height"]}</td><td>${j["elapsed-seconds"].toFixed(1)} s</td></tr>`).join("")}
    </table>${jobs.length ? "" : `<p class="muted">No jobs yet.</p>`}`;
  main.querySelectorAll("tr[data-job]").forEach(tr =>
    tr.onclick = () => location.hash = "job/" + tr.dataset.job);
}

function figures(p, m) {
  if (!p && !m) return `<p class="muted">No prediction (the coordinator has no device profile for this job).</p>`;
  const row = (name, key) => {
    const pv = kebab(p, key), mv = kebab(m, key);
    const err = pv != null && mv ? ` (${(100 * (pv - mv) / mv).toFixed(0)}%)` : "";
    return `<tr><td>${name}</td><td>${pv != null ? pv.toFixed(1) + " s" : "-"}</td>
      <td>${mv != null ? mv.toFixed(1) + " s" : "-"}${err}</td></tr>`;
  };
  return `<table><tr><th></th><th>predicted</th><th>measured</th></tr>
    ${row("latency T", "latency-seconds")}${row("work L", "work-seconds")}</table>`;
}

const STATES = ["waiting", "ready", "leased", "accepted"];

function nodeDot(n) {
  return `<div class="node${n["last-failure"] ? " failed-before" : ""}" data-task="${n.task}"
    data-state="${n.state}" title="task-${n.task} ${n.state}${n.worker ? " by " + esc(n.worker) : ""}; attempts ${n.attempts}${n["last-failure"] ? "; last failure: " + esc(n["last-failure"]) : ""}"></div>`;
}

// A small tree node by node; a large one (the coordinator sends it counted) as one bar per
// layer, split by state (accepted first, so it fills from the left), with its leased and
// failing nodes beside it.
function treeRows(tree) {
  const byPhase = new Map(tree.layers.map(l => [l.phase, []]));
  for (const n of tree.nodes) (byPhase.get(n.phase) || []).push(n);
  // The root's layer on top, segments at the bottom.
  return [...tree.layers].reverse().map(layer => {
    const total = STATES.reduce((sum, s) => sum + layer[s], 0);
    const nodes = byPhase.get(layer.phase) || [];
    const body = tree.complete ? nodes.map(nodeDot).join("") :
      `<div class="bar" title="${STATES.map(s => `${s} ${layer[s]}`).join(", ")}">${[...STATES].reverse().filter(s => layer[s]).map(s =>
        `<span data-state="${s}" data-flex="${layer[s]}"></span>`).join("")}</div>
      ${nodes.map(nodeDot).join("")}${layer.failing ? ` <span class="muted">${layer.failing} failing</span>` : ""}`;
    return `<div class="layer"><span class="name">${esc(layer.phase)} (${total.toLocaleString()})</span>
      <div class="nodes">${body}</div></div>`;
  }).join("");
}

async function jobView(id) {
  const [job, tree, events] = await Promise.all([
    api(`/jobs/${id}`, token()), api(`/jobs/${id}/tree`, token()), api(`/jobs/${id}/events?last=300`, token())]);
  const counts = {};
  for (const layer of tree.layers) for (const s of STATES) counts[s] = (counts[s] || 0) + layer[s];
  const rows = treeRows(tree);
  main.innerHTML = `<h2>job-${id} <span class="state ${esc(job.state)}">${esc(job.state)}</span></h2>
    ${job.failure ? `<p class="error">${esc(job.failure)}</p>` : ""}
    ${job["waiting-for-memory"] ? `<p class="error">${esc(job["waiting-for-memory"])}</p>` : ""}
    <div class="cards">
      <div class="card"><h3>Progress</h3>${progress(job.phases)}
        <p>${(job.instructions || 0).toLocaleString()} instructions, segment height ${job["segment-height"]},
        ${job["elapsed-seconds"].toFixed(1)} s${job.executing ? ", executing" : ""}</p></div>
      <div class="card"><h3>Predicted and measured</h3>${figures(job.prediction, job.measured)}</div>
    </div>
    <div class="card"><h3>Aggregation tree</h3>
      <p class="legend" id="legend">${STATES.map(s =>
        `<span><i class="node" data-state="${s}"></i>${s} <b data-count="${s}">${counts[s] || 0}</b></span>`).join("")}
        <span><i class="node failed-before"></i>failed before (rejected or lost)</span></p>
      ${tree.complete ? "" : `<p class="muted">${tree.tasks.toLocaleString()} tasks: each layer counted by state, with the tasks leased now and those failing</p>`}
      <div id="tree">${rows}</div></div>
    <h3>Events</h3><div class="log" id="events">${events.map(e =>
      `[${e["at-seconds"].toFixed(1).padStart(7)} s] ${esc(e.message)}`).join("\n")}</div>`;
  const log = document.getElementById("events");
  log.scrollTop = log.scrollHeight;
}

async function workersView() {
  if (!operator()) {
    main.innerHTML = `<p class="muted">The workers page needs the operator token:
      <a href="#" id="relogin">sign in again</a>.</p>`;
    document.getElementById("relogin").onclick = e => { e.preventDefault(); login(); };
    return;
  }
  const workers = await api("/admin/workers", operator());
  const gib = b => (b / 2 ** 30).toFixed(1) + " GiB";
  main.innerHTML = `<h2>Workers</h2><table id="workers"><tr><th>worker</th><th>device</th><th>live</th>
    <th>memory</th><th>current tasks</th><th>tasks done</th><th>rejections</th><th>ban</th></tr>
    ${workers.map(w => `<tr data-worker="${esc(w["worker-id"])}"><td>${esc(w["worker-id"])}</td>
      <td>${esc(w.device || "-")}</td><td>${w.live ? "yes" : "no"}</td><td>${gib(w["memory-bytes"])}</td>
      <td>${esc((w["current-tasks"] || []).join(", ") || "-")}</td><td>${w["tasks-done"] || 0}</td>
      <td>${w.rejections}</td><td>${w.ban ? esc(`by ${w.ban.by}: ${w.ban.reason}`) : "-"}</td></tr>`).join("")}
    </table>`;
}

let busy = false;
async function refresh() {
  if (busy) return;
  if (!token() && !operator()) return login();
  busy = true;
  const { view, job } = route();
  document.getElementById("nav-jobs").className = view !== "workers" ? "here" : "";
  document.getElementById("nav-workers").className = view === "workers" ? "here" : "";
  try {
    if (view === "job") await jobView(job);
    else if (view === "workers") await workersView();
    else await jobsView();
    applySizes();
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    if (String(e).includes(": 401")) login("That token was refused.");
    else main.innerHTML = `<p class="error">${esc(e.message)}</p>`;
  } finally {
    busy = false;
  }
}
window.addEventListener("hashchange", refresh);
refresh();
setInterval(refresh, 1000);
