// The ernie-deploy playground: calls the server's JSON routes and draws their answers.
// Every text, the user's or the server's, is inserted as text (textContent or Text nodes),
// never parsed as HTML. The API key lives only in its input field: it is never stored.
"use strict";

const PALETTE = [
  "#ffd166", "#8fd694", "#7cc6fe", "#f4a6a6", "#c9a7eb",
  "#f7b267", "#9ee6d9", "#e5e58a", "#f2a7d8", "#b8c4d6",
];
const models = [];
const colours = new Map();
const $ = (selector, root = document) => root.querySelector(selector);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function colourOf(label) {
  if (!colours.has(label)) colours.set(label, PALETTE[colours.size % PALETTE.length]);
  return colours.get(label);
}

// "B-PER", "I-PER", ... -> ["PER", ...] in the model's order ("O" left out).
function entityTypes(labels) {
  const types = [];
  for (const label of labels || []) {
    const type = label.replace(/^[BIESLU]-/, "");
    if (label !== "O" && !types.includes(type)) types.push(type);
  }
  return types;
}

// ---- calling the server ----------------------------------------------------------------

function apiKey() {
  return $("#api-key").value.trim();
}

async function request(path, body) {
  const headers = { "Content-Type": "application/json" };
  if (apiKey()) headers.Authorization = `Bearer ${apiKey()}`;
  const init = { method: body === undefined ? "GET" : "POST", headers, cache: "no-store" };
  if (body !== undefined) init.body = JSON.stringify(body);
  const started = performance.now();
  try {
    const response = await fetch(path, init);
    const text = await response.text();
    let data = text;
    try {
      data = JSON.parse(text);
    } catch (_) {
      // not JSON: shown as it came
    }
    const ms = performance.now() - started;
    return { ok: response.ok, status: response.status, statusText: response.statusText, data, ms };
  } catch (_) {
    const ms = performance.now() - started;
    return { ok: false, status: 0, statusText: "", data: null, ms };
  }
}

function errorText(result) {
  if (result.status === 0) return "The server did not answer: is it still running?";
  const message = result.data && result.data.error && result.data.error.message;
  if (message) return message;
  if (result.data && result.data.detail) return JSON.stringify(result.data.detail);
  return `The server answered ${result.status} ${result.statusText}.`;
}

function shellQuote(text) {
  return `'${text.replace(/'/g, "'\\''")}'`;
}

// The same call as a curl line; the key, if any, is named by its variable, never written out.
function curlLine(path, body) {
  const url = new URL(path, document.baseURI).href;
  const parts = ["curl -s", shellQuote(url), "-H", shellQuote("Content-Type: application/json")];
  if (apiKey()) parts.push("-H", '"Authorization: Bearer $ERNIE_DEPLOY_API_KEY"');
  parts.push("-d", shellQuote(JSON.stringify(body)));
  return parts.join(" ");
}

// Send one call from a panel, show its latency, curl line, raw JSON or error; draw on success.
async function run(panel, path, body, draw) {
  const box = $(".call", panel);
  const button = $("button[type=submit]", panel);
  button.disabled = true;
  const result = await request(path, body);
  button.disabled = false;
  box.hidden = false;
  const ms = result.ms.toFixed(0);
  $(".call-status", box).textContent =
    `POST /${path} → ${result.status || "no answer"} ${result.statusText} in ${ms} ms`;
  $(".call-curl", box).textContent = curlLine(path, body);
  $(".call-json", box).textContent =
    typeof result.data === "string" ? result.data : JSON.stringify(result.data, null, 2);
  const error = $(".call-error", box);
  error.hidden = result.ok;
  error.textContent = result.ok ? "" : errorText(result);
  $(".output", panel).hidden = !result.ok;
  if (result.ok) {
    try {
      draw(result.data);
    } catch (err) {
      error.hidden = false;
      error.textContent = `Cannot draw this answer (${err.message}): see the raw JSON.`;
    }
  }
  panel.dataset.calls = String(Number(panel.dataset.calls || 0) + 1);
}

function lines(text) {
  return text.split("\n").filter((line) => line.trim() !== "");
}

// ---- NER -------------------------------------------------------------------------------

// Offsets from the server count Unicode code points (Python's str indexes); a JS string counts
// UTF-16 units, so the text is split into code points first and sliced there.
function drawEntities(view, text, entities) {
  view.replaceChildren();
  const chars = Array.from(text);
  const sorted = [...entities].sort((a, b) => a.start - b.start || b.end - a.end);
  let at = 0;
  let skipped = 0;
  for (const entity of sorted) {
    if (entity.start < at || entity.end <= entity.start || entity.end > chars.length) {
      skipped += 1; // overlapping or out of range: listed in the raw JSON only
      continue;
    }
    view.append(chars.slice(at, entity.start).join(""));
    const mark = el("mark", "entity", chars.slice(entity.start, entity.end).join(""));
    mark.dataset.label = entity.label;
    mark.dataset.start = String(entity.start);
    mark.dataset.end = String(entity.end);
    mark.title = `${entity.label}  score ${entity.score.toFixed(3)}  [${entity.start}, ${entity.end})`;
    mark.style.setProperty("--entity", colourOf(entity.label));
    view.append(mark);
    at = entity.end;
  }
  view.append(chars.slice(at).join(""));
  view.dataset.skipped = String(skipped);
}

function drawLegend(legend, types, entities) {
  legend.replaceChildren();
  const counts = new Map();
  for (const entity of entities) counts.set(entity.label, (counts.get(entity.label) || 0) + 1);
  const all = [...types, ...[...counts.keys()].filter((label) => !types.includes(label))];
  for (const label of all) {
    const item = el("span", "legend-item");
    const swatch = el("span", "swatch");
    swatch.style.setProperty("--entity", colourOf(label));
    item.append(swatch, el("span", "legend-label", label));
    item.append(el("span", "legend-count", counts.get(label) || 0));
    if (!counts.has(label)) item.classList.add("absent");
    legend.append(item);
  }
}

function submitNer(panel) {
  const model = $(".model", panel).value;
  const body = { texts: [$("#ner-text").value], model };
  const types = entityTypes((models.find((m) => m.id === model) || {}).labels);
  return run(panel, "v1/ner", body, (data) => {
    const result = data.results[0];
    drawEntities($("#ner-view"), result.text, result.entities);
    drawLegend($("#ner-legend"), types, result.entities);
  });
}

// ---- classification, embeddings, rerank ---------------------------------------------------

function bar(label, score, chosen) {
  const row = el("div", chosen ? "bar-row chosen" : "bar-row");
  const track = el("span", "bar-track");
  const fill = el("span", "bar-fill");
  fill.style.width = `${Math.max(0, Math.min(1, score)) * 100}%`;
  track.append(fill);
  row.append(el("span", "bar-label", label), track, el("span", "bar-value", score.toFixed(3)));
  return row;
}

function submitClassify(panel) {
  const body = {
    texts: [$("#classify-text").value],
    model: $(".model", panel).value,
    top_k: Number($("#classify-k").value) || 1,
  };
  return run(panel, "v1/classify", body, (data) => {
    const result = data.results[0];
    const rows = result.top_k.map((t) => bar(t.label, t.score, result.labels.includes(t.label)));
    $("#classify-bars").replaceChildren(...rows);
  });
}

function cosine(a, b) {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i += 1) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return na && nb ? dot / Math.sqrt(na * nb) : 0;
}

function heatColour(value) {
  const v = Math.max(-1, Math.min(1, value));
  return `hsl(${v >= 0 ? 215 : 5} 75% ${Math.round(97 - 52 * Math.abs(v))}%)`;
}

function drawHeatmap(box, texts, vectors) {
  const table = el("table");
  const head = el("tr");
  head.append(el("th"));
  texts.forEach((text, j) => {
    const th = el("th", "col", j + 1);
    th.title = text;
    head.append(th);
  });
  table.append(head);
  texts.forEach((text, i) => {
    const row = el("tr");
    const th = el("th", "row", `${i + 1}. ${text}`);
    th.title = text;
    row.append(th);
    vectors.forEach((other, j) => {
      const value = cosine(vectors[i], other);
      const cell = el("td", Math.abs(value) > 0.6 ? "dark" : "", value.toFixed(2));
      cell.dataset.value = String(value);
      cell.title = `${texts[i]}\n${texts[j]}\ncosine ${value.toFixed(4)}`;
      cell.style.background = heatColour(value);
      row.append(cell);
    });
    table.append(row);
  });
  box.replaceChildren(table, el("p", "note", "Cosine similarity of each pair of texts."));
}

function submitEmbed(panel) {
  const texts = lines($("#embed-texts").value);
  const body = { texts, model: $(".model", panel).value };
  return run(panel, "v1/embed", body, (data) => {
    const vectors = data.results.map((r) => r.embedding);
    drawHeatmap($("#embed-heatmap"), data.results.map((r) => r.text), vectors);
  });
}

function submitRerank(panel) {
  const documents = lines($("#rerank-docs").value);
  const body = {
    query: $("#rerank-query").value,
    documents,
    model: $(".model", panel).value,
    return_documents: true,
  };
  return run(panel, "v1/rerank", body, (data) => {
    const items = data.results.map((hit) => {
      const item = el("li");
      item.dataset.index = String(hit.index);
      const text = hit.document ? hit.document.text : documents[hit.index];
      item.append(bar(`#${hit.index + 1}`, hit.relevance_score, false), el("p", "doc", text));
      return item;
    });
    $("#rerank-list").replaceChildren(...items);
  });
}

// ---- models, tabs, start-up ---------------------------------------------------------------

const SUBMIT = { ner: submitNer, classify: submitClassify, embed: submitEmbed, rerank: submitRerank };

function showPanel(name) {
  for (const tab of document.querySelectorAll("#tabs button")) {
    const on = tab.dataset.panel === name;
    tab.setAttribute("aria-selected", String(on));
    $(`#panel-${tab.dataset.panel}`).hidden = !on;
  }
}

function drawModels() {
  const list = $("#models");
  list.replaceChildren(
    ...models.map((m) => {
      const item = el("li");
      const device = (m.providers || [])[0] || "";
      const facts = `${m.task} · ${m.max_seq_length} tokens · ${device.replace("ExecutionProvider", "")}`;
      item.append(el("code", "", m.id), el("span", "facts", facts));
      return item;
    }),
  );
  let first = null;
  for (const tab of document.querySelectorAll("#tabs button")) {
    const panel = $(`#panel-${tab.dataset.panel}`);
    const served = models.filter((m) => m.task === panel.dataset.task);
    $(".model", panel).replaceChildren(...served.map((m) => el("option", "", m.id)));
    tab.disabled = served.length === 0;
    tab.title = served.length ? "" : `No ${panel.dataset.task} model is served.`;
    if (served.length && first === null) first = tab.dataset.panel;
    if (panel.dataset.task === "token_cls") served.forEach((m) => entityTypes(m.labels).forEach(colourOf));
  }
  const current = document.querySelector("#tabs button[aria-selected=true]");
  showPanel(current && !current.disabled ? current.dataset.panel : first);
}

async function loadModels() {
  const status = $("#models-status");
  const result = await request("v1/models");
  status.classList.toggle("error", !result.ok);
  if (!result.ok) {
    models.length = 0;
    drawModels();
    status.textContent =
      result.status === 401
        ? "This server needs an API key: enter it above."
        : `Cannot list the models: ${errorText(result)}`;
    return;
  }
  models.splice(0, models.length, ...result.data.data);
  drawModels();
  status.textContent = models.length === 1 ? "1 model" : `${models.length} models`;
  document.body.dataset.ready = "true";
}

function start() {
  const template = $("#call-template");
  for (const [name, submit] of Object.entries(SUBMIT)) {
    const panel = $(`#panel-${name}`);
    const box = template.content.firstElementChild.cloneNode(true);
    box.hidden = true;
    const copy = $(".copy", box);
    copy.hidden = !navigator.clipboard;
    copy.addEventListener("click", () => navigator.clipboard.writeText($(".call-curl", box).textContent));
    panel.append(box);
    $("form", panel).addEventListener("submit", (event) => {
      event.preventDefault();
      submit(panel);
    });
  }
  for (const tab of document.querySelectorAll("#tabs button")) {
    tab.addEventListener("click", () => showPanel(tab.dataset.panel));
  }
  $("#api-key").addEventListener("change", loadModels);
  loadModels();
}

start();
