// crawlmix dashboard: plain JS, SVG charts, no external assets.
"use strict";
const app = document.getElementById("app");
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const fmt = (n) => (typeof n === "number" ? n.toLocaleString("en-US") : esc(n));
const api = async (path, params) => {
  const r = await fetch(path + "?" + new URLSearchParams(params || {}));
  const data = await r.json();
  if (!r.ok) throw new Error(data.error || r.status);
  return data;
};

// Horizontal bar chart. rows: [{label, value, value2?}]
function barChart(id, rows, opts = {}) {
  const w = opts.width || 520, rowH = 20, left = opts.left || 190, max = Math.max(1, ...rows.map((r) => Math.max(r.value, r.value2 || 0)));
  const h = rows.length * rowH + 10;
  let s = `<svg class="chart" id="${id}" width="${w}" height="${h}" role="img">`;
  rows.forEach((r, i) => {
    const y = i * rowH + 4, bw = ((w - left - 60) * r.value) / max, bw2 = opts.twin ? ((w - left - 60) * (r.value2 || 0)) / max : 0;
    s += `<text x="${left - 6}" y="${y + 12}" text-anchor="end">${esc(r.label).slice(0, 32)}</text>`;
    s += `<rect class="bar" data-label="${esc(r.label)}" x="${left}" y="${y}" width="${Math.max(1, bw)}" height="${opts.twin ? 7 : 14}"><title>${esc(r.label)}: ${r.value}</title></rect>`;
    if (opts.twin) {
      s += `<rect class="bar2" data-label="${esc(r.label)}" x="${left}" y="${y + 8}" width="${Math.max(1, bw2)}" height="7"><title>${esc(r.label)}: ${r.value2}</title></rect>`;
    }
    s += `<text x="${left + Math.max(bw, bw2) + 4}" y="${y + 12}">${opts.pct ? (100 * r.value).toFixed(1) + "%" : fmt(r.value)}${opts.twin ? " / " + (opts.pct ? (100 * (r.value2 || 0)).toFixed(1) + "%" : fmt(r.value2)) : ""}</text>`;
  });
  return s + "</svg>";
}

function setProv(p) {
  document.getElementById("prov").textContent = p ? `config ${p.config_hash || p.mixture_hash || "?"} · seed ${p.seed ?? "?"} · crawlmix ${p.version || p.crawlmix_version || "?"}` : "";
}

async function runsPage() {
  document.getElementById("crumb").textContent = "";
  const runs = await api("/api/runs");
  setProv(runs[0]);
  app.innerHTML = `<section><h2>Runs, mixes and tunings (newest first)</h2><table id="runs"><tr><th>kind</th><th>name</th><th>path</th><th>created</th>
    <th>config</th><th class="num">docs / samples / runs</th><th class="num">size</th></tr>
    ${runs.map((r) => `<tr data-kind="${esc(r.kind)}"><td>${esc(r.kind)}</td><td><a href="#/${esc(r.kind)}/${encodeURIComponent(r.path)}">${esc(r.name)}</a>${r.problem ? ` <span class="warn-text" title="${esc(r.problem)}">(report unreadable)</span>` : ""}${r.status && r.status !== "finished" ? ` <span class="warn-text run-status">(${esc(r.status)})</span>` : ""}</td><td><code>${esc(r.path)}</code></td>
    <td>${esc(r.created)}</td><td><code>${esc(r.config_hash)}</code></td><td class="num">${fmt(r.docs)}${r.kind === "tuning" ? " runs" + (r.proxy_mixes ? ` (${r.proxy_mixes} proxy mix${r.proxy_mixes === 1 ? "" : "es"})` : "") : ""}</td><td class="num">${fmt(Math.round(r.bytes / 1024))} KiB</td></tr>`).join("")}
    </table>${runs.length ? "" : "<p class=muted>No crawl runs, mixes or tuning runs under this root.</p>"}</section>`;
}

async function runPage(path) {
  document.getElementById("crumb").textContent = " / crawl " + path;
  const d = await api("/api/run", {path});
  const s = d.stats;
  setProv(s);
  const stages = Object.entries(s.stages);
  const funnel = stages.map(([name, v]) => ({label: name, value: v.in, value2: v.out}));
  const drops = Object.entries(d.removed_reasons).slice(0, 15).map(([k, v]) => ({label: k, value: v}));
  const langs = Object.entries(d.languages).slice(0, 15).map(([k, v]) => ({label: k, value: v}));
  const timings = Object.entries(s.timings_s || {}).map(([k, v]) => ({label: k, value: Math.round(v * 100) / 100}));
  const dedup = s.dedup ? Object.entries(s.dedup.cluster_sizes || {}).map(([k, v]) => ({label: "size " + k, value: v})) : [];
  const pii = s.pii ? Object.entries(s.pii.replacements || s.pii).filter(([, v]) => typeof v === "number").map(([k, v]) => ({label: k, value: v})) : [];
  const rules = Object.keys(d.preview_rules);
  app.innerHTML = `
  <section><h2>Filter funnel</h2>
    <table id="funnel"><tr><th>stage</th><th class="num">in</th><th class="num">out</th><th>dropped</th></tr>
    ${stages.map(([n, v]) => `<tr data-stage="${esc(n)}"><td>${esc(n)}</td><td class="num in">${v.in}</td><td class="num out">${v.out}</td>
      <td>${Object.entries(v.dropped).map(([r, c]) => `<a href="#" data-reason="${esc(r)}">${esc(r)}</a>=${c}`).join(", ")}</td></tr>`).join("")}</table>
    <p>docs in <b id="docs-in">${s.docs_in}</b> → kept <b id="docs-out">${s.docs_out}</b> · bad input: ${s.error_count} · wall ${s.wall_s}s · ${s.inputs} files</p>
    ${barChart("funnel-chart", funnel, {twin: true})}<p class="muted">blue: in, orange: out</p></section>
  <div class="grid">
    <section><h2>Drop reasons</h2>${barChart("drops-chart", drops)}</section>
    <section><h2>Languages (kept)</h2>${barChart("lang-chart", langs)}</section>
    <section><h2>Text length (chars, log bins)</h2>${barChart("length-chart", d.length_histogram, {left: 80})}</section>
    <section><h2>Timings per stage (s, summed over tasks)</h2>${barChart("timing-chart", timings, {left: 120})}</section>
    <section><h2>Dedup</h2>${s.dedup ? `<p>duplicate rate ${(100 * (1 - s.stages.dedup.out / Math.max(1, s.stages.dedup.in))).toFixed(1)}% · ${s.dedup.clusters} clusters · ${s.dedup.bands}×${s.dedup.rows} bands, threshold ${s.dedup.threshold}</p>${barChart("dedup-chart", dedup, {left: 80})}` : "<p class=muted>dedup not run</p>"}</section>
    <section><h2>PII replacements</h2>${pii.length ? barChart("pii-chart", pii) : "<p class=muted>no PII stage in this run</p>"}</section>
    <section><h2>Top domains (kept)</h2><table>${d.top_domains.map(([k, v]) => `<tr><td>${esc(k)}</td><td class=num>${v}</td></tr>`).join("")}</table></section>
    <section><h2>Blocklist hits</h2><table>${d.blocklist_hits.map(([k, v]) => `<tr><td>${esc(k)}</td><td class=num>${v}</td></tr>`).join("") || "<tr><td class=muted>none</td></tr>"}</table></section>
  </div>
  <section><h2>Threshold preview</h2>
    <p>Move a quality rule's threshold and see how many of the ${s.docs_out} kept documents it would keep, computed from the stored signals.</p>
    <select id="rule">${rules.map((r) => `<option>${r}</option>`).join("")}</select>
    <input id="thr" type="range" style="width:300px"> <code id="thr-val"></code>
    <span id="preview">…</span></section>
  <section><h2>Documents</h2>
    <div><button data-kind="curated">kept</button> <button data-kind="removed">dropped</button> <span id="filter" class="muted"></span></div>
    <div id="docs"></div></section>
  <section><h2>Config</h2><pre>${esc(JSON.stringify(d.config, null, 1)).slice(0, 4000)}</pre></section>`;
  // threshold preview
  const sel = document.getElementById("rule"), thr = document.getElementById("thr");
  const setRange = () => {
    const r = d.preview_rules[sel.value];
    const big = r.default > 1.5;
    thr.min = 0; thr.max = big ? r.default * 10 : 1; thr.step = big ? 1 : 0.01; thr.value = r.default;
    update();
  };
  const update = async () => {
    document.getElementById("thr-val").textContent = `${d.preview_rules[sel.value].direction} ${thr.value}`;
    const p = await api("/api/preview", {path, signal: sel.value, value: thr.value});
    document.getElementById("preview").innerHTML = `would keep <b id="preview-count">${p.kept}</b> of ${p.total}`;
  };
  sel.onchange = setRange; thr.oninput = update; setRange();
  // documents
  let kind = "curated", reason = "", page = 0;
  const showDocs = async () => {
    const r = await api("/api/docs", {path, kind, reason, page});
    document.getElementById("filter").textContent = `${kind}${reason ? " · reason " + reason : ""} · ${r.total} docs`;
    const cols = kind === "curated" ? ["url", "language", "language_score", "words", "stop_words", "line_punct_ratio", "text"] : ["url", "stage", "reason", "detail", "language"];
    document.getElementById("docs").innerHTML = `<table id="doc-table"><tr>${cols.map((c) => `<th>${c}</th>`).join("")}</tr>
      ${r.rows.map((row) => `<tr>${cols.map((c) => c === "text" ? `<td><div class=doctext>${esc(row[c])}</div></td>` : `<td>${esc(typeof row[c] === "number" ? Math.round(row[c] * 1000) / 1000 : row[c])}</td>`).join("")}</tr>`).join("")}</table>
      <div class="pager"><button id="prev" ${page ? "" : "disabled"}>prev</button><button id="next" ${(page + 1) * r.page_size < r.total ? "" : "disabled"}>next</button> page ${page + 1} of ${Math.max(1, Math.ceil(r.total / r.page_size))}</div>`;
    document.getElementById("prev").onclick = () => { page--; showDocs(); };
    document.getElementById("next").onclick = () => { page++; showDocs(); };
  };
  document.querySelectorAll("button[data-kind]").forEach((b) => (b.onclick = () => { kind = b.dataset.kind; reason = ""; page = 0; showDocs(); }));
  document.querySelectorAll("a[data-reason]").forEach((a) => (a.onclick = (e) => { e.preventDefault(); kind = "removed"; reason = a.dataset.reason; page = 0; showDocs(); }));
  showDocs();
  if (typeof interleavedSection === "function") interleavedSection(path);  // interleaved.js
}

async function mixPage(path) {
  document.getElementById("crumb").textContent = " / mix " + path;
  const d = await api("/api/mix", {path});
  setProv(d.stages[0] && d.stages[0].plan);
  app.innerHTML = d.stages.map((st, i) => {
    const plan = st.plan;
    const sources = Array.isArray(plan.sources) ? plan.sources : Object.entries(plan.sources || {}).map(([name, v]) => ({name, ...v}));
    const perSource = (s, name) => { const v = (s.sources || s.per_source || {})[name]; return typeof v === "object" ? v.samples : v || 0; };
    const total = st.shards.reduce((a, s) => a + (s.samples || 0), 0) || 1;
    const share = (src) => st.shards.reduce((a, s) => a + perSource(s, src.name), 0) / total;
    const rows = sources.map((src) => ({label: `${src.name} (${src.modality || ""})`, value: src.target_share ?? src.weight ?? 0, value2: share(src)}));
    const mods = {};
    sources.forEach((src) => { const m = src.modality || "?"; mods[m] = mods[m] || {label: m, value: 0, value2: 0}; mods[m].value += src.target_share ?? src.weight ?? 0; mods[m].value2 += share(src); });
    return `<section><h2>Stage ${esc(st.stage)}: target (blue) vs realised (orange) share</h2>
      ${barChart("mix-chart-" + i, rows, {twin: true, pct: true, left: 220})}${barChart("mod-chart-" + i, Object.values(mods), {twin: true, pct: true, left: 220})}
      <table><tr><th>source</th><th class=num>samples</th><th class=num>epochs used</th></tr>${sources.map((src) => `<tr><td>${esc(src.name)}</td><td class=num>${fmt(src.samples ?? "")}</td><td class=num>${esc(src.epochs_used ?? src.epochs ?? "")}</td></tr>`).join("")}</table>
      <h2>Shards</h2><table class="shards"><tr><th>shard</th><th class=num>samples</th><th class=num>bytes</th><th class=num>tokens</th><th>md5</th><th>per source</th><th></th></tr>
      ${st.shards.map((s) => `<tr><td>${esc(s.shard)}</td><td class=num>${fmt(s.samples)}</td><td class=num>${fmt(s.bytes)}</td><td class=num>${fmt(s.tokens)}</td><td><code>${esc((s.md5 || "").slice(0, 10))}</code></td>
        <td>${sources.map((src) => `${esc(src.name)}=${perSource(s, src.name)}`).join(", ")}</td><td><a href="#" data-shard="${esc(st.path + "/" + s.shard + ".tar")}">view</a></td></tr>`).join("")}</table>
      ${st.images && st.images.count ? `<h2>Image widths / aspect ratios (${st.images.count} images)</h2>${barChart("img-w-" + i, st.images.width, {left: 80})}${barChart("img-a-" + i, st.images.aspect, {left: 80})}` : ""}
      <div id="viewer-${i}"></div></section>`;
  }).join("");
  document.querySelectorAll("a[data-shard]").forEach((a) => (a.onclick = async (e) => {
    e.preventDefault();
    const s = await api("/api/sample", {path: ".", shard: a.dataset.shard, index: 0});
    a.closest("section").querySelector("[id^=viewer]").innerHTML = `<h2>Sample ${esc(s.key)}</h2><p>${esc(s.members.join(", "))}</p>
      ${(s.images || []).map((src) => `<img class=sample src="${src}">`).join("")}<div class=doctext>${esc(s.text || "")}</div><pre>${esc(JSON.stringify(s.json || {}, null, 1))}</pre>`;
  }));
}

async function route() {
  const [, kind, path] = location.hash.match(/^#\/(crawl|mix|tuning)\/(.+)$/) || [];
  try {
    if (kind === "crawl") await runPage(decodeURIComponent(path));
    else if (kind === "mix") await mixPage(decodeURIComponent(path));
    else if (kind === "tuning") await tuningPage(decodeURIComponent(path));
    else await runsPage();
  } catch (e) {
    app.innerHTML = `<section><h2>Error</h2><p>${esc(e.message)}</p></section>`;
  }
}
window.addEventListener("hashchange", route);
route();
