// crawlmix dashboard: a crawl run's interleaved documents (OUTPUT/interleaved/, crawlmix.interleaved), shown on the
// crawl page: the document and image funnels, then the documents, paged, text and images in reading order.
// Loaded before app.js, whose helpers (app, esc, fmt, api, barChart) it uses when called. Plain JS, no external assets.
"use strict";

function interleavedFunnel(id, rows) {
  return `<table id="${id}" class="il-funnel"><tr><th>stage</th><th class="num">in</th><th class="num">out</th><th>dropped</th></tr>
    ${(rows || []).map((f) => `<tr data-stage="${esc(f.stage)}"><td>${esc(f.stage)}</td><td class="num in">${fmt(f.in)}</td><td class="num out">${fmt(f.out)}</td>
      <td>${Object.entries(f.dropped || {}).map(([r, n]) => `${esc(r)}=${fmt(n)}`).join(", ")}</td></tr>`).join("")}</table>`;
}

function interleavedDoc(doc) {
  const items = doc.items.map((it, k) => it.type === "text"
    ? `<div class="il-text" data-pos="${k}">${esc(it.text)}${it.cut ? `<span class="muted"> … (${fmt(it.cut)} more characters)</span>` : ""}</div>`
    : `<figure class="il-image" data-pos="${k}">${it.src ? `<img src="${it.src}" alt="">` : ""}<figcaption>${esc(it.width)}×${esc(it.height)} · <code>${esc(it.url)}</code></figcaption></figure>`).join("");
  const link = /^https?:\/\//i.test(doc.url || "") ? `<a href="${esc(doc.url)}" rel="noreferrer">${esc(doc.url)}</a>` : esc(doc.url);
  return `<article class="il-doc" data-id="${esc(doc.id)}"><h3>${link}
    <span class="muted">${esc(doc.language)} · ${doc.items.filter((i) => i.type === "image").length} images · ${esc(doc.file)}</span></h3>${items}</article>`;
}

async function interleavedSection(path) {
  const hash = location.hash;
  const sec = document.createElement("section");
  sec.id = "interleaved";
  sec.innerHTML = "<h2>Interleaved documents</h2><p class=muted>loading…</p>";
  app.appendChild(sec);
  let page = 0;
  const show = async () => {
    let d;
    try {
      d = await api("/api/interleaved", {path, page});
    } catch (e) {
      sec.innerHTML = `<h2>Interleaved documents</h2><p class="warn-text">${esc(e.message)}</p>`;
      return;
    }
    if (location.hash !== hash) return;  // navigated away meanwhile
    if (!d.present) {
      sec.innerHTML = "<h2>Interleaved documents</h2><p class=muted>no interleaved output in this run (interleaved.enabled in the job YAML)</p>";
      return;
    }
    const pages = Math.max(1, Math.ceil(d.total / d.page_size));
    sec.innerHTML = `<h2>Interleaved documents</h2>
      ${d.problem ? `<p class="warn-text">${esc(d.problem)}</p>` : ""}
      <p><b id="il-docs">${fmt(d.documents)}</b> documents with <b id="il-images">${fmt(d.images)}</b> images · ${(d.shards || []).length} WebDataset shard(s) · config <code>${esc(d.config_hash)}</code></p>
      <div class="grid"><div><h3>Documents</h3>${interleavedFunnel("il-doc-funnel", (d.funnel || {}).documents)}</div>
      <div><h3>Images</h3>${interleavedFunnel("il-image-funnel", (d.funnel || {}).images)}</div></div>
      <div id="il-list">${d.docs.map(interleavedDoc).join("") || "<p class=muted>no documents</p>"}</div>
      <div class="pager"><button id="il-prev" ${page ? "" : "disabled"}>prev</button><button id="il-next" ${page + 1 < pages ? "" : "disabled"}>next</button> document page ${page + 1} of ${pages}</div>`;
    document.getElementById("il-prev").onclick = () => { page--; show(); };
    document.getElementById("il-next").onclick = () => { page++; show(); };
  };
  await show();
}
