// The classify page: queue dropped files, send them in chunks (progress), render each specimen.
// Every value from a file or the server goes in through textContent, never as markup.
"use strict";
// Photos per request: the progress bar moves once per chunk. Each request pays a fixed cost
// (HTTP, search, vote), so chunks are not small, and two are in flight to overlap it.
const CHUNK = 25, IN_FLIGHT = 2;
const RANKS = ["order", "family", "genus", "species"];
const IMAGE = /\.(jpe?g|png|tiff?|bmp|webp)$/i;
let photos = [], barcodes = [], csvParts = [];
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

function card(id) {
  let node = document.querySelector(`[data-specimen="${CSS.escape(id)}"]`);
  if (!node) {
    node = el("article", null, "specimen-card");
    node.dataset.specimen = id;
    const head = el("div", null, "card-head");
    head.append(el("h2", id));
    const photo = photos.find((f) => stem(f.name) === id);
    if (photo) {
      const img = el("img", null, "query-photo");
      img.src = URL.createObjectURL(photo);
      img.alt = photo.name;
      head.append(img);
    }
    node.append(head);
    $("results").append(node);
  }
  return node;
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

function render(specimens) {
  for (const s of specimens) {
    const node = card(s.id);
    for (const r of s.results) node.append(prediction(r));
    for (const e of s.errors) node.append(el("p", `${e.file}: ${e.error}`, "error"));
  }
}

async function send(form) {
  const response = await fetch("/api/classify", { method: "POST", body: form });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

async function classify() {
  const pasted = $("fasta").value.trim();
  // With barcodes, one request: a photo meets its barcode (same id = one fused row) only within a request.
  const size = barcodes.length || pasted ? Math.max(1, photos.length) : CHUNK;
  const chunks = Math.max(1, Math.ceil(photos.length / size));
  if (!photos.length && !barcodes.length && !pasted) { $("status").textContent = "nothing to classify"; return; }
  $("results").replaceChildren();
  csvParts = [];
  $("csv").hidden = true;
  $("go").disabled = true;
  const bar = $("progress");
  bar.hidden = false; bar.max = photos.length + (barcodes.length || pasted ? 1 : 0); bar.value = 0;
  let done = 0, rows = 0, withheld = 0, errors = 0;
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
      render(body.specimens);
      csvParts.push(c === 0 ? body.csv : body.csv.split("\n").slice(1).join("\n"));
      done += part.length + (c === 0 && (barcodes.length || pasted) ? 1 : 0);
      rows += body.counts.rows; withheld += body.counts.withheld; errors += body.counts.errors;
      bar.value = done;
      $("status").textContent =
        `${done} of ${bar.max} inputs, ${rows} specimens (${withheld} withheld), ${errors} errors`;
    }
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    $("status").textContent = `done: ${rows} specimens (${withheld} withheld), ${errors} errors in ${seconds} s`;
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
  photos = []; barcodes = []; $("queued").replaceChildren(); $("results").replaceChildren(); $("fasta").value = "";
  $("csv").hidden = true; $("progress").hidden = true; $("status").textContent = "";
});
fetch("/api/health").then((r) => r.json()).then((h) => {
  const hash = String(h.checkpoint_hash).slice(0, 12);
  $("model").textContent = `model ${h.model} · index ${h.index} (${h.keys} ${h.index_modality} keys) · hash ${hash}`;
});
