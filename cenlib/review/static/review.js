// The review page: one patch at a time, decisions by keyboard.
// Caption text is data, never markup: every string from the server goes in with textContent.
"use strict";

const TOKEN = document.querySelector('meta[name="review-token"]').content;
const REGION_LABELS = {
  whole: "whole", "top left": "TL", "top right": "TR", "bottom left": "BL",
  "bottom right": "BR", middle: "mid",
};
const state = { classes: [], patches: [], shown: [], index: 0, current: null, editing: false };

function $(id) { return document.getElementById(id); }

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

async function api(path, body) {
  const init = { headers: { "X-Review-Token": TOKEN }, credentials: "same-origin" };
  if (body !== undefined) {
    init.method = "POST";
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  if (!res.ok) throw new Error(`${res.status}: ${await res.text()}`);
  return res.json();
}

function showError(err) { $("error").textContent = err ? String(err.message || err) : ""; }

function swatch(cls) {
  const c = state.classes[cls];
  const s = el("span", null, "swatch");
  s.style.backgroundColor = c.color;
  return s;
}

// --- the list and its filters --------------------------------------------------------------

function fillSelect(select, values, label) {
  for (const v of values) {
    const o = el("option", label ? label(v) : v);
    o.value = String(v);
    select.append(o);
  }
}

function setupFilters() {
  const p = state.patches;
  fillSelect($("f-status"), [...new Set(p.map((x) => x.status))].sort());
  fillSelect($("f-type"), [...new Set(p.flatMap((x) => x.types))].sort());
  const classes = [...new Set(p.flatMap((x) => x.classes))].sort((a, b) => a - b);
  fillSelect($("f-class"), classes, (k) => state.classes[k].name);
  for (const id of ["f-status", "f-type", "f-class", "f-decision"]) {
    $(id).addEventListener("change", () => { applyFilters(); $(id).blur(); });
  }
}

function applyFilters(keepId) {
  const status = $("f-status").value, type = $("f-type").value;
  const cls = $("f-class").value, decision = $("f-decision").value;
  state.shown = state.patches.filter((x) =>
    (!status || x.status === status) &&
    (!type || x.types.includes(type)) &&
    (!cls || x.classes.includes(Number(cls))) &&
    (!decision || (decision === "none" ? !x.decision : x.decision === decision)));
  const at = keepId ? state.shown.findIndex((x) => x.id === keepId) : -1;
  state.index = Math.max(0, at);
  renderList();
  show();
}

function renderList() {
  const nav = $("list");
  nav.replaceChildren();
  state.shown.forEach((x, i) => {
    const item = el("button", null, "item");
    item.type = "button";
    item.dataset.id = x.id;
    item.dataset.decision = x.decision || "";
    const dot = el("span", "", `dot ${x.status}`);
    dot.title = x.status;
    item.append(dot, el("span", x.id, "pid"));
    item.append(el("span", x.decision ? x.decision : "", `mark ${x.decision || ""}`));
    item.addEventListener("click", () => { state.index = i; show(); });
    nav.append(item);
  });
  if (!state.shown.length) nav.append(el("p", "no patch matches the filters", "meta"));
}

function markList() {
  for (const node of $("list").children) {
    const x = state.shown.find((p) => p.id === node.dataset.id);
    if (!x) continue;
    node.dataset.decision = x.decision || "";
    node.classList.toggle("current", x === state.shown[state.index]);
    const mark = node.querySelector(".mark");
    mark.textContent = x.decision || "";
    mark.className = `mark ${x.decision || ""}`;
  }
  const cur = $("list").querySelector(".current");
  if (cur) cur.scrollIntoView({ block: "nearest" });
}

function setProgress(reviewed, total) {
  $("progress").textContent = `${reviewed} / ${total} reviewed`;
  $("progress-bar").style.width = total ? `${(100 * reviewed) / total}%` : "0";
}

// --- one patch --------------------------------------------------------------------------------

function renderSegments(target, segments, violations) {
  target.replaceChildren();
  segments.forEach((seg, i) => {
    const span = el("span", seg.text);
    if (seg.cls !== null) {
      const c = state.classes[seg.cls];
      span.classList.add("mention");
      span.style.backgroundColor = c.color;
      span.style.color = c.ink;
      span.title = seg.negated ? `${c.name} (negated)` : c.name;
      if (seg.negated) span.classList.add("negated");
    }
    if (seg.violations.length) {
      span.classList.add("violation");
      span.title = seg.violations.map((v) => `[${v + 1}] ${violations[v].reason}`).join("\n");
    }
    target.append(span);
    const next = segments[i + 1];
    for (const v of seg.violations) {
      if (!next || !next.violations.includes(v)) target.append(el("sup", `[${v + 1}]`, "vref"));
    }
  });
}

function renderStats(stats) {
  const table = $("stats");
  table.replaceChildren();
  if (!stats) { $("nodata").textContent = "no statistics: run `cen analyze CONFIG`"; return; }
  const head = el("tr");
  head.append(el("th", "class"));
  for (const r of stats.regions) head.append(el("th", REGION_LABELS[r] || r));
  table.append(head);
  for (const row of stats.rows) {
    const tr = el("tr");
    const name = el("td", null, "cname");
    name.append(swatch(row.cls), document.createTextNode(state.classes[row.cls].name));
    tr.append(name);
    row.shares.forEach((s, i) => {
      const text = s <= 0 ? "·" : s < 0.0005 ? "<0.1" : (100 * s).toFixed(1);
      const td = el("td", text, i === 0 ? "whole" : "");
      if (i === 0) {
        const bar = el("span", null, "sharebar");
        bar.style.width = `${Math.round(60 * s)}px`;
        bar.style.backgroundColor = state.classes[row.cls].color;
        td.prepend(bar);
      }
      tr.append(td);
    });
    table.append(tr);
  }
  $("nodata").textContent = `shares in % of labelled pixels; no data ${(100 * stats.no_data).toFixed(1)} %`;
}

function renderLegend(present) {
  const ul = $("legend");
  ul.replaceChildren();
  for (const c of state.classes.slice(1)) {
    const li = el("li", null, present.includes(c.index) ? "present" : "absent");
    li.append(swatch(c.index), document.createTextNode(c.name));
    ul.append(li);
  }
}

function renderViolations(violations) {
  const ol = $("violations");
  ol.replaceChildren();
  $("violations-title").textContent = violations.length ? `Violations (${violations.length})` : "Violations: none";
  for (const v of violations) {
    const li = el("li");
    li.append(el("span", v.type, "vtype"));
    if (v.class !== null && v.class !== undefined) {
      const c = el("span", null, "vclass");
      c.append(swatch(v.class), document.createTextNode(state.classes[v.class].name));
      li.append(c);
    }
    if (v.words) li.append(el("q", v.words));
    li.append(el("span", v.reason, "reason"));
    ol.append(li);
  }
}

function renderDecision(d) {
  const node = $("decision");
  node.className = "decision";
  if (!d.decision) {
    node.textContent = "undecided";
    $("edited-box").hidden = true;
    $("caption-title").textContent = "Caption";
    $("caption").classList.remove("superseded");
    return;
  }
  const dec = d.decision;
  const when = dec.time.replace("T", " ").slice(0, 19);
  node.textContent = `${dec.decision}ed by ${dec.reviewer}, ${when} UTC`;
  if (d.stale) node.textContent += " (on an earlier caption)";
  else node.classList.add(dec.decision);
  const box = $("edited-box");
  box.hidden = !(d.edited_segments && !d.stale);
  $("caption-title").textContent = box.hidden ? "Caption" : "Caption (original)";
  $("caption").classList.toggle("superseded", !box.hidden);
  if (!box.hidden) renderSegments($("edited"), d.edited_segments, []);
}

function renderHistory(history) {
  const ol = $("history");
  ol.replaceChildren();
  $("history-count").textContent = `(${history.length})`;
  for (const h of history) {
    const li = el("li", `${h.time.slice(0, 19)} ${h.reviewer}: ${h.decision}`);
    if (h.text) li.append(el("div", h.text, "htext"));
    ol.append(li);
  }
}

async function show() {
  cancelEdit();
  showError(null);
  const x = state.shown[state.index];
  $("main").classList.toggle("empty", !x);
  markList();
  // Until this patch's data arrives nothing can be decided: a key pressed now must not land
  // on the patch shown before.
  state.current = null;
  if (!x) return;
  $("main").classList.add("loading");
  $("caption").replaceChildren();
  $("patch-id").textContent = x.id;
  $("position").textContent = `${state.index + 1} of ${state.shown.length}`;
  history.replaceState(null, "", `#${encodeURIComponent(x.id)}`);
  const path = encodeURIComponent(x.id);
  $("img-rgb").src = `/img/${path}/rgb.png`;
  $("img-lc").src = `/img/${path}/land-cover.png`;
  let d;
  try { d = await api(`/api/patch/${path}`); } catch (err) { showError(err); return; }
  if (state.shown[state.index] !== x) return; // moved on while loading
  state.current = d;
  $("patch-id").textContent = d.id;
  $("status").textContent = d.status;
  $("status").className = `badge ${d.status}`;
  const meta = [d.style, `score ${d.score.toFixed(2)}`];
  if (d.round) meta.push(`repair round ${d.round}`);
  if (d.first_violations) meta.push(`${d.first_violations} violations before repair`);
  $("meta").textContent = meta.join(" · ");
  renderSegments($("caption"), d.segments, d.violations);
  renderViolations(d.violations);
  renderStats(d.stats);
  renderLegend(x.classes);
  renderDecision(d);
  renderHistory(d.history);
  $("main").classList.remove("loading");
}

function move(step) {
  if (!state.shown.length) return;
  state.index = Math.min(state.shown.length - 1, Math.max(0, state.index + step));
  show();
}

async function decide(decision, text) {
  const d = state.current;
  if (!d) return;
  try {
    const out = await api("/api/decision", { patch_id: d.id, key: d.key, decision, text });
    const x = state.patches.find((p) => p.id === d.id);
    x.decision = decision;
    setProgress(out.reviewed, out.total);
    cancelEdit();
    if (state.index < state.shown.length - 1) move(1);
    else show();
  } catch (err) {
    showError(err);
  }
}

function startEdit() {
  const d = state.current;
  if (!d) return;
  const editor = $("editor");
  const edited = d.decision && d.decision.decision === "edit" && !d.stale ? d.decision.text : null;
  editor.value = edited || d.caption;
  editor.hidden = false;
  $("edit-help").hidden = false;
  $("caption").hidden = true;
  state.editing = true;
  editor.focus();
}

function cancelEdit() {
  state.editing = false;
  $("editor").hidden = true;
  $("edit-help").hidden = true;
  $("caption").hidden = false;
}

function onKey(ev) {
  if (ev.target === $("editor")) {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      const text = $("editor").value;
      if (text.trim()) decide("edit", text); else showError("an edited caption cannot be empty");
    } else if (ev.key === "Escape") {
      ev.preventDefault();
      cancelEdit();
    }
    return;
  }
  if (ev.ctrlKey || ev.metaKey || ev.altKey || ev.target.tagName === "SELECT") return;
  const actions = {
    a: () => decide("accept"), r: () => decide("reject"), e: startEdit,
    j: () => move(1), ArrowRight: () => move(1), ArrowDown: () => move(1),
    k: () => move(-1), ArrowLeft: () => move(-1), ArrowUp: () => move(-1),
  };
  const act = actions[ev.key];
  if (act) { ev.preventDefault(); act(); }
}

async function start() {
  let data;
  try { data = await api("/api/patches"); } catch (err) { showError(err); return; }
  state.classes = data.classes;
  state.patches = data.patches;
  $("run").textContent = data.run;
  $("reviewer").textContent = `reviewer: ${data.reviewer}`;
  setProgress(data.reviewed, data.total);
  setupFilters();
  $("b-accept").addEventListener("click", () => decide("accept"));
  $("b-reject").addEventListener("click", () => decide("reject"));
  $("b-edit").addEventListener("click", startEdit);
  document.addEventListener("keydown", onKey);
  applyFilters(decodeURIComponent(location.hash.slice(1)));
}

start();
