// The classify page: queue dropped files, send them in chunks (progress), list every specimen in a
// summary table (sortable, filterable, paged: only one page is in the DOM, so thousands render at
// once) and open a row's card with its prediction and nearest reference specimens.
// Every value from a file or the server goes in through textContent, never as markup.
"use strict";
// Photos per request: the progress bar moves once per chunk. Each request pays a fixed cost
// (HTTP, search, vote), so chunks are not small, and two are in flight to overlap it.
const CHUNK = 25, IN_FLIGHT = 2, PAGE = 100;
const RANKS = ["order", "family", "genus", "species"];
const IMAGE = /\.(jpe?g|png|gif|tiff?|bmp|webp|jp2|j2k|ico|pcx|ppm|pgm|pbm|tga|dds|psd|eps|im|sgi|xbm|xpm)$/i;
let photos = [], barcodes = [], csvParts = [], rows = [];
const view = { filter: "all", search: "", key: null, ascending: true, page: 0, open: null };
// For the browser test and the curious: when the last answer arrived and its table was on screen.
window.clibdTiming = { answered: 0, rendered: 0 };
const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}
const fmt = (v) => (v === null || v === undefined ? "–" : Number(v).toFixed(4)); // as the CSV
const pct = (v) => (v === null || v === undefined ? "–" : `${Number(v).toFixed(1)} %`);
const stem = (name) => name.replace(/^.*[\\/]/, "").replace(/\.[^.]*$/, "");

function queue(files) {
  for (const f of files) ((f.type.startsWith("image/") || IMAGE.test(f.name)) ? photos : barcodes).push(f);
  const list = $("queued");
  list.replaceChildren();
  const names = (files) => files.slice(0, 5).map((f) => f.name).join(", ") + (files.length > 5 ? ", …" : "");
  if (photos.length) list.append(el("li", `${photos.length} photo(s): ${names(photos)}`));
  if (barcodes.length) list.append(el("li", `${barcodes.length} barcode file(s): ${names(barcodes)}`));
}

// One summary row per specimen. The deepest confident rank is the server's when it reports one
// (deepest_confident_rank); until then, the species vote.
function summaryRow(specimen, index) {
  const result = specimen.results[0];
  const p = result.prediction;
  const confident = p.deepest_confident_rank !== undefined;
  const rank = confident ? p.deepest_confident_rank : (p.species ? "species" : null);
  return {
    index, id: specimen.id, specimen, evidence: result.evidence, quality: result.quality || "",
    rank: rank ? (confident ? rank : "species (vote)") : "", name: rank ? (p[rank] ?? "") : "",
    similarity: p.best_similarity,
    isNew: result.evidence ? Boolean(p.possible_new_species) : null,
    failed: !result.evidence,
  };
}

const FILTERS = {
  all: () => true,
  new: (r) => r.isNew === true,
  failed: (r) => r.failed,
  known: (r) => r.isNew === false,
};

function visibleRows() {
  const needle = view.search.trim().toLowerCase();
  let shown = rows.filter(FILTERS[view.filter]);
  if (needle) shown = shown.filter((r) => r.id.toLowerCase().includes(needle) || r.name.toLowerCase().includes(needle));
  if (view.key) {
    const key = view.key, sign = view.ascending ? 1 : -1;
    const value = (r) => (r[key] === null || r[key] === undefined || r[key] === "" ? null : r[key]);
    shown = shown.slice().sort((a, b) => {
      const x = value(a), y = value(b);
      if (x === null || y === null) return (x === null) - (y === null) || a.index - b.index; // blanks last
      return (x < y ? -1 : x > y ? 1 : 0) * sign || a.index - b.index;
    });
  }
  return shown;
}

function renderTable() {
  const shown = visibleRows();
  const pages = Math.max(1, Math.ceil(shown.length / PAGE));
  view.page = Math.min(view.page, pages - 1);
  const body = document.createElement("tbody");
  for (const r of shown.slice(view.page * PAGE, (view.page + 1) * PAGE)) {
    const tr = el("tr", null, r.failed ? "failed" : r.isNew ? "new" : "known");
    tr.dataset.specimen = r.id;
    if (view.open === r.id) tr.classList.add("open");
    tr.append(el("td", r.id), el("td", r.evidence || "none"), el("td", r.quality || "passed", "quality"),
      el("td", r.rank || "–"), el("td", r.name || "–", "name"), el("td", fmt(r.similarity)),
      el("td", r.isNew === null ? "–" : r.isNew ? "possible new species" : "known"));
    tr.addEventListener("click", () => openCard(r));
    body.append(tr);
  }
  $("table").tBodies[0].replaceWith(body);
  $("shown").textContent = `${shown.length} of ${rows.length} specimens`;
  $("page").textContent = `page ${view.page + 1} of ${pages}`;
  $("prev").disabled = view.page === 0;
  $("next").disabled = view.page >= pages - 1;
  for (const th of $("table").tHead.rows[0].cells) {
    th.classList.toggle("sorted", th.dataset.key === view.key);
    th.dataset.order = th.dataset.key === view.key ? (view.ascending ? "▲" : "▼") : "";
  }
}

const SOURCES = { image: "from the photo", dna: "from the barcode", "image+dna": "from the photo and the barcode" };

function prediction(result) {
  const box = el("div", null, `result ${result.evidence.replace("+", "-") || "withheld"}`);
  const p = result.prediction;
  box.append(el("h3", SOURCES[result.evidence] ?? "no prediction: no usable input"));
  box.append(el("p", `evidence: ${result.evidence || "none"}`, "evidence"),
    el("p", `quality: ${result.quality || "passed"}`, "quality"));
  if (!result.evidence) return box;
  if (p.strand === "-") box.append(el("p", "barcode read on the other strand: reverse-complemented", "strand"));
  const table = el("table", null, "prediction");
  const head = el("tr");
  for (const h of ["rank", "predicted", "similarity", "margin", "identity", "vote share"]) head.append(el("th", h));
  table.append(head);
  for (const rank of RANKS) {
    const row = el("tr");
    // A name withheld below the deepest confident rank (the vote had one) reads "uncertain".
    const withheld = p[rank] === null && p[`${rank}_vote_share`] !== null;
    row.append(el("td", rank), el("td", withheld ? "uncertain" : p[rank] ?? "unknown", withheld ? "name uncertain" : "name"),
      el("td", fmt(p[`${rank}_similarity`])), el("td", fmt(p[`${rank}_margin`])), el("td", pct(p[`${rank}_identity`])),
      el("td", p[`${rank}_vote_share`] === null ? "–" : `${Math.round(100 * p[`${rank}_vote_share`])} %`));
    table.append(row);
  }
  box.append(table);
  box.append(el("p", p.deepest_confident_rank
    ? `Sure down to ${p.deepest_confident_rank}` + (p.deepest_confident_rank === "species" ? "" : ": the ranks below are uncertain")
    : (p.possible_new_species === null ? "The library is not calibrated: no rank is judged" : "Not sure of any rank"),
    "deepest"));
  const flag = p.possible_new_species;
  const byIdentity = result.threshold_on === "identity";
  const [score, show] = byIdentity ? [`top hit identity ${pct(p.identity)}`, pct] : [`best similarity ${fmt(p.best_similarity)}`, fmt];
  if (flag !== null) box.append(el("p", flag
    ? `Possible new species: ${score} < calibrated threshold ${show(result.threshold)}`
    : `Known species: ${score} ≥ calibrated threshold ${show(result.threshold)}`,
    flag ? "flag new" : "flag known"));
  const strip = el("div", null, "neighbours");
  for (const n of result.neighbours) {
    const fig = el("figure", null, "neighbour");
    if (n.thumbnail) {
      const img = el("img");
      img.src = n.thumbnail;
      img.alt = n.id;
      img.loading = "lazy";
      fig.append(img);
    } else fig.append(el("div", "no photo", "nophoto"));
    const cap = el("figcaption");
    cap.append(el("b", n.id), el("span", `similarity ${fmt(n.similarity)}` + (n.identity === null ? "" : ` · identity ${pct(n.identity)}`)),
      el("span", [n.order, n.family, n.genus, n.species].map((x) => x ?? "?").join(" › ")));
    fig.append(cap);
    strip.append(fig);
  }
  box.append(el("h4", `${result.neighbours.length} nearest reference specimens`), strip);
  return box;
}

function openCard(r) {
  view.open = r.id;
  const node = el("article", null, "specimen-card");
  node.dataset.specimen = r.id;
  const head = el("div", null, "card-head");
  head.append(el("h2", r.id));
  const photo = photos.find((f) => stem(f.name) === r.id);
  if (photo) {
    const img = el("img", null, "query-photo");
    img.src = URL.createObjectURL(photo);
    img.alt = photo.name;
    head.append(img);
  }
  const close = el("button", "close", "close");
  close.type = "button";
  close.addEventListener("click", () => { view.open = null; $("results").replaceChildren(); renderTable(); });
  head.append(close);
  node.append(head);
  for (const result of r.specimen.results) node.append(prediction(result));
  $("results").replaceChildren(node);
  renderTable();
  node.scrollIntoView({ block: "nearest" });
}

async function send(form) {
  const response = await fetch("/api/classify", { method: "POST", body: form });
  const text = await response.text();
  const arrived = performance.now(); // the answer is here: what follows (parse, table) is the page's time
  const body = JSON.parse(text);
  if (!response.ok) throw new Error(body.error || response.statusText);
  body.arrived = arrived;
  return body;
}

function showRows(specimens, arrived) {
  window.clibdTiming.answered = arrived;
  for (const s of specimens) rows.push(summaryRow(s, rows.length));
  $("summary").hidden = false;
  renderTable();
  requestAnimationFrame(() => { window.clibdTiming.rendered = performance.now(); });
}

async function classify() {
  const pasted = $("fasta").value.trim();
  // With barcodes, one request: a photo meets its barcode (same id = one fused row) only within a request.
  const size = barcodes.length || pasted ? Math.max(1, photos.length) : CHUNK;
  const chunks = Math.max(1, Math.ceil(photos.length / size));
  if (!photos.length && !barcodes.length && !pasted) { $("status").textContent = "nothing to classify"; return; }
  $("results").replaceChildren();
  rows = []; csvParts = []; view.page = 0; view.open = null;
  $("csv").hidden = true;
  $("go").disabled = true;
  const bar = $("progress");
  bar.hidden = false; bar.max = photos.length + (barcodes.length || pasted ? 1 : 0); bar.value = 0;
  let done = 0, count = 0, withheld = 0, errors = 0;
  const started = performance.now();
  try {
    const form = (c) => {
      const data = new FormData();
      for (const f of photos.slice(c * size, (c + 1) * size)) data.append("photos", f, f.name);
      if (c === 0) { // barcodes travel with the first chunk
        for (const f of barcodes) data.append("barcodes", f, f.name);
        if (pasted) data.append("fasta", pasted);
      }
      return data;
    };
    const pending = [];
    const launch = () => { if (pending.length < chunks) pending.push(send(form(pending.length))); };
    for (let i = 0; i < IN_FLIGHT; i++) launch();
    for (let c = 0; c < chunks; c++) {
      const part = photos.slice(c * size, (c + 1) * size);
      const body = await pending[c]; // answers are shown in order
      launch();
      showRows(body.specimens, body.arrived);
      csvParts.push(c === 0 ? body.csv : body.csv.split("\n").slice(1).join("\n"));
      done += part.length + (c === 0 && (barcodes.length || pasted) ? 1 : 0);
      count += body.counts.rows; withheld += body.counts.withheld; errors += body.counts.errors;
      bar.value = done;
      $("status").textContent =
        `${done} of ${bar.max} inputs, ${count} specimens (${withheld} withheld), ${errors} unreadable`;
    }
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    $("status").textContent = `done: ${count} specimens (${withheld} withheld), ${errors} unreadable in ${seconds} s`;
    $("csv").href = URL.createObjectURL(new Blob([csvParts.join("")], { type: "text/csv" }));
    $("csv").hidden = false;
  } catch (err) {
    $("status").textContent = `failed: ${err.message}`;
  } finally {
    $("go").disabled = false;
  }
}

const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  queue(e.dataTransfer.files);
});
$("files").addEventListener("change", (e) => queue(e.target.files));
$("go").addEventListener("click", classify);
$("clear").addEventListener("click", () => {
  photos = []; barcodes = []; rows = []; $("queued").replaceChildren(); $("results").replaceChildren();
  $("fasta").value = ""; $("summary").hidden = true;
  Object.assign(view, { filter: "all", search: "", key: null, ascending: true, page: 0, open: null });
  $("filter").value = "all"; $("search").value = "";
  $("csv").hidden = true; $("progress").hidden = true; $("status").textContent = "";
});
$("filter").addEventListener("change", (e) => { view.filter = e.target.value; view.page = 0; renderTable(); });
$("search").addEventListener("input", (e) => { view.search = e.target.value; view.page = 0; renderTable(); });
$("prev").addEventListener("click", () => { view.page -= 1; renderTable(); });
$("next").addEventListener("click", () => { view.page += 1; renderTable(); });
for (const th of document.querySelectorAll("#table th[data-key]")) {
  th.addEventListener("click", () => {
    view.ascending = view.key === th.dataset.key ? !view.ascending : true;
    view.key = th.dataset.key;
    renderTable();
  });
}
fetch("/api/health").then((r) => r.json()).then((h) => {
  const hash = String(h.checkpoint_hash).slice(0, 12);
  $("model").textContent = `model ${h.model} · index ${h.index} (${h.keys} ${h.index_modality} keys) · hash ${hash}`;
  const lib = h.library || {};
  $("provenance").textContent = `Reference library: ${h.keys} ${h.index_modality} keys` +
    (lib.dataset ? ` from ${lib.dataset}` : h.provenance ? ` from ${h.provenance.file} (${h.provenance.rows} rows)` : "") +
    (lib.key_splits ? ` (splits ${lib.key_splits.join(", ")})` : "") +
    ` · built with checkpoint ${String(h.index_checkpoint_hash).slice(0, 12)}` +
    (lib.checkpoint ? ` (${lib.checkpoint})` : "") + ` · model trained on ${h.trained_on || "unknown data"}.`;
  if (h.synthetic_demo) {
    $("synthetic").hidden = false;
    $("synthetic").textContent = "This model was trained on the synthetic demo data (clibd's simulated tree of " +
      "life): its names are invented and its predictions say nothing about real specimens.";
  }
});
