// crawlmix dashboard: the Tuning view (a report.json of "kind": "crawlmix-tuning"). Loaded before app.js,
// whose helpers (app, esc, fmt, api, barChart, setProv) it uses when called. Plain JS, SVG, no external assets.
"use strict";
const num = (x, d = 4) => (typeof x !== "number" || !isFinite(x) ? "—" : Math.abs(x) >= 0.5 * 10 ** -d || x === 0 ? x.toFixed(d) : x.toPrecision(2));
const kindClass = (k) => "k-" + String(k).replace(/[^a-z0-9-]/gi, "");
const KINDS = ["candidate", "base", "uniform", "confirm-tuned", "confirm-base", "confirm-uniform"];

// Scatter of predicted (x) vs measured (y) with the y = x line. pts: [{x, y, kind, id}]
function scatter(id, target, pts) {
  const w = 390, h = 310, m = {l: 56, r: 24, t: 12, b: 42};
  const vals = pts.flatMap((p) => [p.x, p.y]);
  let lo = Math.min(...vals), hi = Math.max(...vals);
  if (!(hi > lo)) { lo -= 0.5; hi += 0.5; }
  const pad = (hi - lo) * 0.06; lo -= pad; hi += pad;
  const dec = Math.min(6, Math.max(2, Math.ceil(-Math.log10((hi - lo) / 4))));  // ticks that differ
  const sx = (v) => m.l + ((v - lo) / (hi - lo)) * (w - m.l - m.r), sy = (v) => h - m.b - ((v - lo) / (hi - lo)) * (h - m.t - m.b);
  let s = `<svg class="chart scatter" id="${id}" data-target="${esc(target)}" width="${w}" height="${h}" role="img">`;
  for (let i = 0; i <= 4; i++) {
    const v = lo + (i * (hi - lo)) / 4;
    s += `<line class="grid" x1="${m.l}" x2="${w - m.r}" y1="${sy(v)}" y2="${sy(v)}"/><line class="grid" x1="${sx(v)}" x2="${sx(v)}" y1="${m.t}" y2="${h - m.b}"/>`;
    s += `<text x="${m.l - 4}" y="${sy(v) + 4}" text-anchor="end">${v.toFixed(dec)}</text><text x="${sx(v)}" y="${h - m.b + 14}" text-anchor="middle">${v.toFixed(dec)}</text>`;
  }
  s += `<line class="diag" x1="${sx(lo)}" y1="${sy(lo)}" x2="${sx(hi)}" y2="${sy(hi)}"><title>y = x</title></line>`;
  s += `<text x="${(m.l + w - m.r) / 2}" y="${h - 6}" text-anchor="middle">predicted loss</text>`;
  s += `<text transform="translate(14 ${(m.t + h - m.b) / 2}) rotate(-90)" text-anchor="middle">measured loss</text>`;
  pts.forEach((p) => {
    s += `<circle class="pt ${kindClass(p.kind)}" data-run="${esc(p.id)}" cx="${sx(p.x).toFixed(1)}" cy="${sy(p.y).toFixed(1)}" r="${p.kind === "candidate" ? 3.5 : 5}">
      <title>${esc(p.id)} (${esc(p.kind)}): predicted ${num(p.x)}, measured ${num(p.y)}</title></circle>`;
  });
  return s + "</svg>";
}

const legend = () => `<p class="legend">${KINDS.map((k) => `<span><svg width="10" height="10"><circle class="pt ${kindClass(k)}" cx="5" cy="5" r="4"/></svg> ${k}</span>`).join(" ")}
  <span><svg width="18" height="10"><line class="diag" x1="0" y1="9" x2="18" y2="1"/></svg> y = x</span></p>`;

function missingNote(d, prefix) {
  const m = d.missing.filter((x) => x === prefix || x.startsWith(prefix + "."));
  return m.length ? `<p class="muted missing-note">not in report.json: ${m.map(esc).join(", ")}</p>` : "";
}

async function tuningPage(path) {
  document.getElementById("crumb").textContent = " / tuning " + path;
  const hash = location.hash, d = await api("/api/tuning", {path});
  if (location.hash !== hash) return;  // navigated away meanwhile
  document.getElementById("prov").textContent = `sweep ${d.sweep_hash || "?"} · created ${d.created || "?"}`;
  const runLink = (id) => (d.run_mixes[id] ? `<a href="#/mix/${encodeURIComponent(d.path.replace(/\/+$/, "") + "/" + d.run_mixes[id])}">${esc(id)}</a>` : esc(id));
  const ok = d.runs.filter((r) => r.status === "ok"), failed = d.runs.filter((r) => r.status !== "ok");
  const p = d.proxy;
  const proxy = p.trainer ? `proxy <b id="proxy-trainer">${esc(p.trainer)}</b>${p.text_only ? ', <b id="proxy-text-only">text-only</b> (non-text sources are not trained on by the proxy)' : ""}${p.budget_tokens != null ? `, ${fmt(p.budget_tokens)} tokens per run` : ""}` : "proxy not stated";
  // predicted vs measured, one chart per target
  const scatters = d.targets.map((t, i) => {
    const pts = ok.filter((r) => r.predicted && typeof r.predicted[t] === "number" && typeof r.losses[t] === "number")
      .map((r) => ({x: r.predicted[t], y: r.losses[t], kind: r.kind, id: r.id}));
    const h = d.regression.heldout[t] || {};
    const unplotted = ok.length - pts.length;
    return `<div class="scatter-box"><h3>${esc(t)} <span class="muted">held-out Spearman ${num(h.spearman, 2)} · R² ${num(h.r2, 2)}</span></h3>
      ${pts.length ? scatter("scatter-" + i, t, pts) : `<p class="muted">no run has both a predicted and a measured loss for ${esc(t)}</p>`}
      ${unplotted > 0 ? `<p class="muted">${unplotted} ok run(s) not plotted: no prediction (run before the fit) or no loss</p>` : ""}</div>`;
  }).join("");
  // weights base -> tuned
  const bw = d.baselines.base.weights, tw = d.tuned.weights;
  const wrows = d.sources.map((s) => ({label: s, value: bw[s] ?? 0, value2: tw[s] ?? 0}));
  // baselines: confirmed mean ± std per target (and the tuned mixture's prediction)
  const rowsB = [["base", d.baselines.base], ["uniform", d.baselines.uniform], ["tuned", d.tuned]];
  const best = Object.fromEntries(d.targets.map((t) => [t, Math.min(...rowsB.map(([, b]) => (b.confirmed[t] || {}).mean).filter((v) => typeof v === "number"))]));
  const cell = (b, t) => {
    const c = b.confirmed[t];
    return c && typeof c.mean === "number" ? `<span class="mean">${num(c.mean)}</span> ± <span class="std">${num(c.std)}</span>${c.n ? ` <span class="muted">(n=${c.n})</span>` : ""}` : `<span class="muted">—</span>`;
  };
  const delta = (t) => {
    const a = (d.tuned.confirmed[t] || {}).mean, b = (d.baselines.base.confirmed[t] || {}).mean;
    return typeof a === "number" && typeof b === "number" ? `${a - b <= 0 ? "" : "+"}${num(a - b)}` : "—";
  };
  const baselines = `<table id="baselines"><tr><th>mixture</th>${d.targets.map((t) => `<th class="num">${esc(t)} confirmed</th><th class="num">${esc(t)} predicted</th>`).join("")}</tr>
    ${rowsB.map(([name, b]) => `<tr data-row="${name}"><td>${name}</td>${d.targets.map((t) => `<td class="num${(b.confirmed[t] || {}).mean === best[t] ? " best" : ""}" data-target="${esc(t)}">${cell(b, t)}</td>
      <td class="num pred" data-target="${esc(t)}">${name === "tuned" ? num(d.tuned.predicted[t]) : ""}</td>`).join("")}</tr>`).join("")}
    <tr data-row="delta" class="muted"><td>tuned − base</td>${d.targets.map((t) => `<td class="num">${delta(t)}</td><td></td>`).join("")}</tr></table>`;
  const heldout = `<table id="heldout"><tr><th>target</th><th class="num">Spearman</th><th class="num">R²</th></tr>
    ${d.targets.map((t) => { const h = d.regression.heldout[t] || {}; return `<tr data-target="${esc(t)}"><td>${esc(t)}</td><td class="num">${num(h.spearman, 3)}</td><td class="num">${num(h.r2, 3)}</td></tr>`; }).join("")}</table>`;
  const fails = failed.length ? `<table id="failed"><tr><th>run</th><th>kind</th><th>seed</th><th>status</th><th>error</th></tr>
    ${failed.map((r) => `<tr data-run="${esc(r.id)}"><td>${runLink(r.id)}</td><td>${esc(r.kind)}</td><td>${esc(r.seed)}</td><td>${esc(r.status)}</td><td>${esc(r.error) || '<span class="muted">no error recorded</span>'}</td></tr>`).join("")}</table>`
    : `<p class="muted" id="failed">no failed runs</p>`;
  const gaps = d.missing.length || d.problems.length ? `<section id="missing" class="warn"><h2>Incomplete report</h2>
    ${d.missing.length ? `<p>Missing: ${d.missing.map((m) => `<code>${esc(m)}</code>`).join(" ")}</p>` : ""}
    ${d.problems.length ? `<ul>${d.problems.slice(0, 20).map((m) => `<li>${esc(m)}</li>`).join("")}${d.problems.length > 20 ? `<li>… and ${d.problems.length - 20} more</li>` : ""}</ul>` : ""}</section>` : "";
  app.innerHTML = `${gaps}
  <section id="summary"><h2>Tuning ${esc(d.name)}</h2>
    <p>base mixture <code>${esc(d.base || "?")}</code> · stage <code>${esc(d.stage || "?")}</code> · ${d.sources.length} sources · targets ${d.targets.map(esc).join(", ") || "—"}</p>
    <p id="proxy">${proxy}</p>
    <p>${d.runs.length} runs: ${ok.length} ok, ${failed.length} failed · fit <b>${esc(d.regression.model || "?")}</b>${Object.keys(d.run_mixes).length ? ` · ${Object.keys(d.run_mixes).length} proxy mix(es) kept (run ids link to them)` : ""}</p></section>
  <section><h2>Predicted vs measured loss (ok runs)</h2>${missingNote(d, "regression")}${legend()}<div class="scatters">${scatters || '<p class="muted">no targets</p>'}</div></section>
  <div class="grid">
    <section><h2>Weights: base (blue) → tuned (orange)</h2>${missingNote(d, "tuned.weights")}${Object.keys(bw).length ? "" : '<p class="muted missing-note">base weights: not in report.json (no baselines.base.weights, no base run)</p>'}${wrows.length ? barChart("weights-chart", wrows, {twin: true, pct: true, left: 150, width: 500}) : '<p class="muted">no sources</p>'}</section>
    <section><h2>Held-out fit quality (${esc(d.regression.model || "?")})</h2>${heldout}</section>
  </div>
  <section><h2>Baselines: confirmed loss, mean ± std over seeds (lower is better)</h2>${missingNote(d, "baselines")}${missingNote(d, "tuned.confirmed")}${baselines}</section>
  <section><h2>Failed runs (${failed.length})</h2>${fails}</section>
  <section><h2>Candidates</h2><p class="muted" id="cand-source"></p><div id="candidates"></div></section>
  <section id="provenance"><h2>Provenance</h2><table>
    <tr><th>sweep hash</th><td><code id="sweep-hash">${esc(d.sweep_hash || "—")}</code></td></tr><tr><th>created</th><td id="created">${esc(d.created)}</td></tr>
    <tr><th>base mixture</th><td><code>${esc(d.base || "—")}</code></td></tr><tr><th>folder</th><td><code>${esc(d.path)}</code></td></tr></table>
    <h3>tuned.yaml</h3>${d.tuned_yaml != null ? `<pre>${esc(d.tuned_yaml)}</pre>` : '<p class="muted">tuned.yaml is missing</p>'}</section>`;
  let page = 0;
  const showCandidates = async () => {
    const c = await api("/api/candidates", {path, page});
    if (location.hash !== hash) return;
    const cellv = (v) => (typeof v === "number" && !Number.isInteger(v)) || (typeof v === "string" && /^-?\d+\.\d{5,}$/.test(v)) ? num(Number(v)) : esc(v ?? "");
    document.getElementById("cand-source").textContent = `from ${c.source} · ${c.total} rows`;
    document.getElementById("candidates").innerHTML = `<table id="cand-table"><tr>${c.columns.map((h) => `<th>${esc(h)}</th>`).join("")}</tr>
      ${c.rows.map((r) => `<tr>${r.map((v, j) => `<td>${j === 0 && d.run_mixes[v] ? runLink(v) : cellv(v)}</td>`).join("")}</tr>`).join("")}</table>
      <div class="pager"><button id="cand-prev" ${page ? "" : "disabled"}>prev</button><button id="cand-next" ${(page + 1) * c.page_size < c.total ? "" : "disabled"}>next</button>
      <span id="cand-page">page ${page + 1} of ${Math.max(1, Math.ceil(c.total / c.page_size))}</span></div>`;
    document.getElementById("cand-prev").onclick = () => { page--; showCandidates(); };
    document.getElementById("cand-next").onclick = () => { page++; showCandidates(); };
  };
  showCandidates().catch((e) => { document.getElementById("candidates").innerHTML = `<p class="muted">no candidate table: ${esc(e.message)}</p>`; });
}
