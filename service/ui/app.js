// The introspection page. Everything it shows comes from the public API:
//   GET /models, GET /models/{name}/examples,
//   POST /models/{name}/predict?detail=units (JSON), POST /models/{name}/predict_image?detail=units (an upload),
//   each with &version= when a second version of the name serves (GET /models/{name}/shadow says which one is
//   the shadow's or the canary's candidate): then both versions answer the same input, shown side by side;
//   GET /models/{name}/log?atypical=true and GET /models/{name}/log/{id} (the review view: stored atypical
//   inputs, each sent again on a click) and PUT /models/{name}/log/{id}/review (a label, the management key).
"use strict";

const $ = (id) => document.getElementById(id);
const DEBOUNCE_MS = 250;
let models = [];
let current = null; // the selected model's card (GET /models entry)
let versionsOf = {}; // name -> the cards of its serving versions, the one answering the name first
let other = null; // { card, role }: a second version of the selected name, answering beside it
let pending = 0; // answers older than the latest request are dropped
let timer = null;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "style") Object.assign(node.style, value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function fmt(x, digits = 3) {
  return Number(x).toFixed(digits);
}

// With INFERENCE_KEY_FILE set, the routes this page reads need `Authorization: Bearer <key>`: the page asks
// for the key once (on the first 401) and keeps it for this tab only (sessionStorage).
const KEY_ITEM = "sparsity-inference-key";

function withKey(headers = {}) {
  const key = sessionStorage.getItem(KEY_ITEM);
  return key && !headers.authorization ? { ...headers, authorization: `Bearer ${key}` } : headers;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: withKey(options.headers) });
  if (response.status === 401) $("key-form").hidden = false;
  const text = await response.text();
  let body = null;
  try {
    body = JSON.parse(text);
  } catch (_) {
    body = null;
  }
  if (!response.ok) {
    const message = body && body.error ? body.error : `${response.status} ${response.statusText}: ${text.slice(0, 200)}`;
    throw new Error(message);
  }
  return body;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

// [height, width, channels, channelsFirst] of a picture input, else null: (H, W), (H, W, 1|3), or channels
// first, (1|3, H, W), as ONNX exports of NCHW networks take them (sparsity.card.picture_layout)
function pictureSize(card) {
  const shape = card.input_shape;
  if (shape.length === 2) return [shape[0], shape[1], 0, false];
  if (shape.length === 3 && (shape[2] === 1 || shape[2] === 3)) return [shape[0], shape[1], shape[2], false];
  if (shape.length === 3 && (shape[0] === 1 || shape[0] === 3)) return [shape[1], shape[2], shape[0], true];
  return null;
}

function isImage(card) {
  return pictureSize(card) !== null;
}

// ---- the model and its card --------------------------------------------------------------------------

function renderCard(card) {
  const dl = $("model-card");
  dl.replaceChildren();
  const rows = [
    ["tag", card.tag],
    ["kind", card.kind],
    ["input", `${card.input_shape.join(" x ")}, values ${card.input_range[0]} to ${card.input_range[1]}`],
  ];
  if (card.test_accuracy !== undefined) rows.push(["accuracy", `${fmt(card.test_accuracy * 100, 2)}% on ${card.accuracy_on || "held-back data"}`]);
  if (card.dataset) rows.push(["trained on", `${card.dataset}${card.train_size ? ` (${card.train_size} items)` : ""}`]);
  if (card.provenance && card.provenance.file) rows.push(["from file", `${card.provenance.file} (sha256 ${String(card.provenance.sha256).slice(0, 12)}...)`]);
  if (card.parent) rows.push(["pruned from", card.parent]);
  if (card.calibration) rows.push(["calibration", `${card.calibration.size} items (sha256 ${card.calibration.sha256.slice(0, 12)}...)`]);
  const t = card.typicality;
  rows.push(["typicality", `${t.detector || "profile-mahalanobis"}, flags above ${fmt(t.threshold, 2)} (target ${fmt(t.false_alarm_rate * 100, 0)}% false alarms; measured ${fmt((t.measured_false_alarm_rate || 0) * 100, 1)}%)`]);
  for (const [name, value] of rows) dl.append(el("dt", { text: name }), el("dd", { text: value }));
}

const versionOf = (card) => card.tag.split(":")[1];

// the version shown beside the one answering the name: the shadow's (or canary's) candidate, else the next
// serving version, else none
async function otherVersion(name) {
  const all = versionsOf[name] || [];
  if (all.length < 2) return null; // a shadow's candidate serves too: one version, no shadow (and no 404 asked)
  let shadow = null;
  try {
    shadow = await api(`/models/${encodeURIComponent(name)}/shadow`);
  } catch (_) {
    shadow = null; // no shadow (404): fine
  }
  if (shadow) {
    const card = all.find((c) => versionOf(c) === shadow.candidate);
    const role = shadow.mode === "canary" ? "the canary's candidate" : "the shadow's candidate";
    if (card) return { card, role: `${role} (${Math.round(shadow.share * 100)}% of requests)` };
  }
  return all.length > 1 ? { card: all[1], role: "also serving" } : null;
}

let selection = 0; // a newer choice of model makes the answers to an older one moot

async function selectModel(name) {
  const mine = ++selection;
  current = models.find((m) => m.name === name);
  $("fields").replaceChildren(); // the previous model's form goes at once, not when this one's examples arrive
  const beside = await otherVersion(name);
  if (mine !== selection) return false;
  other = beside;
  pending += 1;
  showError("");
  $("result").hidden = true;
  $("empty").hidden = false;
  renderCard(current);
  const image = isImage(current);
  $("image-input").hidden = !image;
  $("tabular-input").hidden = image;
  clearPad(false);
  let examples = { inputs: [], labels: null };
  try {
    examples = await api(`/models/${encodeURIComponent(name)}/examples`);
  } catch (error) {
    // EXPOSE_EXAMPLES=false hides them on purpose: no error, only no examples
    if (!error.message.startsWith("examples:")) showError(error.message);
  }
  if (mine !== selection) return false; // another model was chosen meanwhile: its own call draws the form
  if (image) renderImageExamples(examples);
  else renderFields(examples);
  return true;
}

// ---- image input: the drawing pad, uploads, examples -------------------------------------------------

const pad = $("pad");
const ctx = pad.getContext("2d");
let drawing = false;
let last = null;

function clearPad(predictAfter = true) {
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, pad.width, pad.height);
  if (predictAfter) {
    pending += 1;
    clearTimeout(timer);
    timer = null;
    $("result").hidden = true;
    $("empty").hidden = false;
    setState("idle");
  }
}

function padPoint(event) {
  const box = pad.getBoundingClientRect();
  return [((event.clientX - box.left) * pad.width) / box.width, ((event.clientY - box.top) * pad.height) / box.height];
}

function stroke(from, to) {
  ctx.strokeStyle = "#fff";
  ctx.lineWidth = 22;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.beginPath();
  ctx.moveTo(from[0], from[1]);
  ctx.lineTo(to[0], to[1]);
  ctx.stroke();
}

pad.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  drawing = true;
  last = padPoint(event);
  stroke(last, last);
  schedule(predictPad);
});
pad.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  const point = padPoint(event);
  stroke(last, point);
  last = point;
  schedule(predictPad);
});
for (const type of ["pointerup", "pointercancel"]) {
  pad.addEventListener(type, () => {
    if (!drawing) return;
    drawing = false;
    schedule(predictPad);
  });
}
$("clear").addEventListener("click", () => clearPad(true));

// body[data-state]: "waiting" (a request is scheduled), "busy" (one is in flight) or "idle" (the page shows
// the answer to the latest input, or its error); body[data-answers] counts the answers shown. Scripts and
// tests can wait on them.
function setState(state) {
  document.body.dataset.state = state;
}

function schedule(fn) {
  clearTimeout(timer);
  setState("waiting");
  timer = setTimeout(() => {
    timer = null;
    fn();
  }, DEBOUNCE_MS);
}

function padBlob() {
  return new Promise((resolve) => pad.toBlob(resolve, "image/png"));
}

// pixels of the pad as one input of the model's shape, scaled onto its input range (models without a
// picture step: the API's predict_image needs one)
function padInput() {
  const [h, w, channels, channelsFirst] = pictureSize(current);
  const small = el("canvas", { width: w, height: h });
  const c = small.getContext("2d");
  c.drawImage(pad, 0, 0, w, h);
  const data = c.getImageData(0, 0, w, h).data;
  const [low, high] = current.input_range;
  const scaled = (v) => low + (v / 255) * (high - low);
  // one plane: the grey value, or colour k of each pixel (channels first takes planes, channels last pixels)
  const plane = (k) => {
    const rows = [];
    for (let y = 0; y < h; y++) {
      const row = [];
      for (let x = 0; x < w; x++) {
        const i = 4 * (y * w + x);
        row.push(scaled(k === null ? (data[i] + data[i + 1] + data[i + 2]) / 3 : data[i + k]));
      }
      rows.push(row);
    }
    return rows;
  };
  if (channelsFirst) return channels === 3 ? [plane(0), plane(1), plane(2)] : [plane(null)];
  if (channels === 3) {
    const [r, g, b] = [plane(0), plane(1), plane(2)];
    return r.map((row, y) => row.map((v, x) => [v, g[y][x], b[y][x]]));
  }
  const grey = plane(null);
  return channels === 1 ? grey.map((row) => row.map((v) => [v])) : grey;
}

async function predictPad() {
  if (!current || !isImage(current)) return;
  if (current.preprocessing) {
    const form = new FormData();
    form.append("image", await padBlob(), "drawing.png");
    return predict(`/models/${encodeURIComponent(current.name)}/predict_image?detail=units`, { method: "POST", body: form });
  }
  return predictJSON([padInput()]);
}

// the uploaded picture, fitted into the pad, so that the page shows what it sent (the pad is cleared when
// the browser cannot read the file either)
async function showUpload(file) {
  clearPad(false);
  try {
    const bitmap = await createImageBitmap(file);
    const scale = Math.min(pad.width / bitmap.width, pad.height / bitmap.height);
    const w = bitmap.width * scale;
    const h = bitmap.height * scale;
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(bitmap, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
  } catch (_) {
    // not a picture the browser can read: the API's answer says why
  }
}

$("upload").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (!file || !current) return;
  setState("busy");
  await showUpload(file);
  const form = new FormData();
  form.append("image", file, file.name);
  await predict(`/models/${encodeURIComponent(current.name)}/predict_image?detail=units`, { method: "POST", body: form });
  event.target.value = "";
});

function exampleToCanvas(example) {
  const [h, w, channels, channelsFirst] = pictureSize(current);
  // channels first: the pixel at (y, x) is [plane[y][x] for each plane]
  const pixel = channelsFirst
    ? (y, x) => (channels === 3 ? example.map((p) => p[y][x]) : example[0][y][x])
    : (y, x) => example[y][x];
  const [low, high] = current.input_range;
  const small = el("canvas", { width: w, height: h });
  const c = small.getContext("2d");
  const image = c.createImageData(w, h);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const v = pixel(y, x);
      const rgb = Array.isArray(v) ? (v.length === 3 ? v : [v[0], v[0], v[0]]) : [v, v, v];
      const i = 4 * (y * w + x);
      for (let k = 0; k < 3; k++) image.data[i + k] = Math.round((255 * (rgb[k] - low)) / (high - low));
      image.data[i + 3] = 255;
    }
  }
  c.putImageData(image, 0, 0);
  return small;
}

function renderImageExamples(examples) {
  const box = $("examples");
  box.replaceChildren();
  if (!examples.inputs.length) return;
  box.append(el("p", { class: "hint", text: "Or try an item of the calibration set the model never fitted on:" }));
  examples.inputs.forEach((input, i) => {
    const small = exampleToCanvas(input);
    const label = examples.labels ? current.class_names[examples.labels[i]] : `#${i + 1}`;
    const button = el("button", { type: "button", "aria-label": `Example ${i + 1}, labelled ${label}`, title: `labelled ${label}` },
      el("img", { src: small.toDataURL(), alt: "" }));
    button.addEventListener("click", () => {
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(small, 0, 0, pad.width, pad.height);
      predictJSON([input]);
    });
    box.append(button);
  });
}

// ---- tabular input -------------------------------------------------------------------------------------

function featureNames(card) {
  if (card.feature_names) return card.feature_names;
  return Array.from({ length: card.input_shape[0] }, (_, i) => `x${i}`);
}

function renderFields(examples) {
  const fields = $("fields");
  fields.replaceChildren();
  const names = featureNames(current);
  const ranges = current.feature_ranges || names.map(() => current.input_range);
  const start = examples.inputs[0] || ranges.map(([lo, hi]) => (lo + hi) / 2);
  names.forEach((name, i) => {
    const [lo, hi] = ranges[i];
    const input = el("input", { type: "number", step: "any", id: `feature-${i}`, name, value: String(start[i]) });
    input.addEventListener("input", () => schedule(predictFields));
    fields.append(el("label", { for: `feature-${i}` }, `${name} `, el("span", { class: "hint", text: `(calibration: ${lo} to ${hi})` }), input));
  });
  const row = $("tabular-examples");
  row.replaceChildren();
  examples.inputs.slice(0, 6).forEach((values, i) => {
    const label = examples.labels ? current.class_names[examples.labels[i]] : `#${i + 1}`;
    const button = el("button", { type: "button", text: `Example ${i + 1}: ${label}` });
    button.addEventListener("click", () => {
      values.forEach((v, k) => ($(`feature-${k}`).value = String(v)));
      predictFields();
    });
    row.append(button);
  });
  predictFields();
}

function predictFields() {
  if (isImage(current) || !$("feature-0")) { // the form of another model, gone or not drawn yet
    setState("idle");
    return;
  }
  const values = featureNames(current).map((_, i) => $(`feature-${i}`).value);
  const bad = values.findIndex((v) => v === "" || !Number.isFinite(Number(v)));
  if (bad >= 0) {
    showError(`${featureNames(current)[bad]}: enter a number`);
    setState("idle");
    return;
  }
  return predictJSON([values.map(Number)]);
}
$("tabular-input").addEventListener("submit", (event) => {
  event.preventDefault();
  predictFields();
});

// ---- predictions -----------------------------------------------------------------------------------------

function predictJSON(inputs) {
  return predict(`/models/${encodeURIComponent(current.name)}/predict?detail=units`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ inputs }),
  });
}

async function predict(path, options) {
  const ticket = ++pending;
  const card = current;
  const beside = other;
  setState("busy");
  try {
    const ask = (version) => api(`${path}&version=${encodeURIComponent(version)}`, options);
    const [answer, second] = await Promise.all([ask(versionOf(card)), beside ? ask(versionOf(beside.card)) : null]);
    if (ticket !== pending) return;
    showError("");
    render(card, answer.predictions[0]);
    renderCompare(card, answer.predictions[0], beside, second ? second.predictions[0] : null);
  } catch (error) {
    if (ticket !== pending) return;
    $("result").hidden = true;
    $("empty").hidden = false;
    showError(error.message);
  } finally {
    if (ticket === pending) {
      document.body.dataset.answers = String(Number(document.body.dataset.answers || 0) + 1);
      if (timer === null) setState("idle");
    }
  }
}

function render(card, answer) {
  $("empty").hidden = true;
  const result = $("result");
  result.hidden = false;
  result.dataset.label = answer.label;
  result.dataset.model = card.name;
  const p = answer.probabilities[answer.label];
  $("label").textContent = answer.name;
  $("confidence").textContent = `class ${answer.label}, probability ${fmt(p * 100, 1)}%`;
  renderTypicality(card, answer.typicality);
  renderProbabilities(card, answer);
  renderLayers(card, answer.sparsity);
  renderUnits(card, answer.units || {});
}

function renderTypicality(card, typicality) {
  const box = $("typicality");
  const threshold = card.typicality.threshold;
  box.className = `typicality${typicality.atypical ? " atypical" : ""}`;
  box.dataset.atypical = String(typicality.atypical);
  box.dataset.score = String(typicality.score);
  const top = Math.max(threshold * 2, typicality.score * 1.1);
  const bottom = Math.min(0, typicality.score);
  const at = (v) => `${(100 * (v - bottom)) / (top - bottom)}%`;
  const words = typicality.atypical
    ? "Unlike the calibration data: treat this prediction with care."
    : "Like the calibration data.";
  box.replaceChildren(
    el("p", { class: "words", id: "verdict", text: words }),
    el("div", { class: "scale", role: "img", "aria-label": `typicality score ${fmt(typicality.score, 2)}, threshold ${fmt(threshold, 2)}` },
      el("span", { class: "threshold", style: { left: at(threshold) } }),
      el("span", { class: "marker", style: { left: at(Math.min(typicality.score, top)) } })),
    el("div", { class: "scale-labels" },
      el("span", { text: `score ${fmt(typicality.score, 2)}` }),
      el("span", { text: `threshold ${fmt(threshold, 2)} (dashed); higher is less typical` })),
  );
}

function renderProbabilities(card, answer) {
  const box = $("probabilities");
  box.replaceChildren();
  const order = answer.probabilities.map((p, i) => [p, i]).sort((a, b) => b[0] - a[0]).slice(0, 10);
  if (order.length < answer.probabilities.length) box.append(el("span", { class: "hint", style: { gridColumn: "1 / -1" }, text: "the 10 most probable classes" }));
  for (const [p, i] of order) {
    const top = i === answer.label ? " top" : "";
    box.append(
      el("span", { class: top.trim(), text: card.class_names[i] }),
      el("span", { class: "bar", role: "img", "aria-label": `${card.class_names[i]}: ${fmt(p * 100, 1)}%` }, el("span", { style: { width: `${100 * p}%` } })),
      el("span", { class: top.trim(), text: `${fmt(p * 100, 1)}%` }),
    );
  }
}

function renderLayers(card, sparsity) {
  const box = $("layers");
  box.replaceChildren();
  $("layers-heading").firstChild.textContent = card.kind === "linear" ? "Zero terms " : "Sparsity per layer ";
  $("layers-hint").textContent = card.kind === "linear"
    ? "(share of coefficient \u00d7 feature terms that are exactly zero; the band is the calibration baseline, mean \u00b1 std)"
    : "(share of exact zeros; the band is the calibration baseline, mean \u00b1 std)";
  for (const [name, value] of Object.entries(sparsity.layers)) {
    const baseline = card.activation_sparsity ? card.activation_sparsity[name] : card.contribution_sparsity;
    const row = el("div", { class: "layer", "data-layer": name, "data-value": String(value) });
    const track = el("div", { class: "track", role: "img", "aria-label": `${name}: ${fmt(value)} zeros` });
    let note = `${fmt(value)} zeros`;
    let unusual = false;
    // the track shows the part of 0..1 around the baseline and this value, so that a narrow band is visible
    let start = 0;
    let end = 1;
    if (baseline) {
      start = Math.max(0, Math.min(value, baseline.mean - 3 * baseline.std) - 0.02);
      end = Math.min(1, Math.max(value, baseline.mean + 3 * baseline.std) + 0.02);
    }
    const at = (v) => `${(100 * (v - start)) / (end - start)}%`;
    if (baseline) {
      const lo = Math.max(0, baseline.mean - baseline.std);
      const hi = Math.min(1, baseline.mean + baseline.std);
      track.append(el("span", { class: "band", style: { left: at(lo), width: `${(100 * (hi - lo)) / (end - start)}%` } }));
      note += ` (baseline ${fmt(baseline.mean)} \u00b1 ${fmt(baseline.std)})`;
      const distance = baseline.std > 0 ? (value - baseline.mean) / baseline.std : 0;
      if (Math.abs(distance) > 2) {
        unusual = true;
        note += distance > 0 ? ": unusually sparse" : ": unusually dense";
      }
    }
    track.append(el("span", { class: "value", style: { left: at(value) } }));
    const axis = el("span", { class: "axis" }, el("span", { text: fmt(start, 2) }), el("span", { text: fmt(end, 2) }));
    row.append(el("span", { text: name }), track, axis, el("span", { class: `note${unusual ? " unusual" : ""}`, text: note }));
    box.append(row);
  }
}

function renderUnits(card, units) {
  const box = $("units");
  box.replaceChildren();
  const layers = Object.entries(units);
  $("units-heading").hidden = $("units-legend").hidden = layers.length === 0;
  for (const [name, shares] of layers) {
    const calibration = card.unit_firing ? card.unit_firing[name] : null;
    const fired = shares.filter((s) => s > 0).length;
    const busiest = Math.max(...shares, 0);
    const grid = el("div", { class: "grid" });
    shares.forEach((share, i) => {
      const dead = calibration && calibration[i] === 0;
      const cell = el("span", { class: `unit${dead ? " dead" : ""}` });
      if (share > 0) cell.style.background = `rgba(0, 114, 178, ${0.25 + (0.75 * share) / busiest})`;
      const usual = calibration ? `; fired on ${fmt(calibration[i] * 100, 0)}% of calibration items` : "";
      cell.title = `${name} unit ${i}: ${share > 0 ? `on at ${fmt(share * 100, 1)}% of its positions` : "did not fire"}${usual}${dead ? " (dead)" : ""}`;
      grid.append(cell);
    });
    const dead = calibration ? calibration.filter((c) => c === 0).length : 0;
    const busy = fired ? `; the busiest was on at ${fmt(busiest * 100, 1)}% of its positions` : "";
    const text = `${name}: ${fired} of ${shares.length} units fired${busy}${dead ? `; ${dead} dead on the calibration set` : ""}`;
    box.append(el("div", { class: "units-layer", "data-layer": name, "data-fired": String(fired) }, el("span", { text }), grid));
  }
}

// both versions on the same input: label, typicality, and each layer's zeros and units that fired, side by side
function renderCompare(card, answer, beside, second) {
  const box = $("compare");
  box.hidden = !beside || !second;
  if (box.hidden) return;
  const a = versionOf(card);
  const b = versionOf(beside.card);
  $("compare-hint").textContent = `${a} answers ${card.name}; ${b} is ${beside.role}. The same input, both versions' forward passes.`;
  const table = el("table", { class: "compare" });
  table.append(el("thead", {}, el("tr", {},
    el("th", { scope: "col", text: "" }),
    el("th", { scope: "col", text: a }),
    el("th", { scope: "col", text: b }),
    el("th", { scope: "col", text: `${b} \u2212 ${a}` }))));
  const body = el("tbody");
  const same = answer.label === second.label;
  const row = (name, left, right, diff, attrs = {}) => body.append(el("tr", attrs,
    el("th", { scope: "row", text: name }), el("td", {}, left), el("td", {}, right), el("td", {}, diff)));
  row("label", card.class_names[answer.label], beside.card.class_names[second.label], same ? "same" : "differs",
    { "data-row": "label", class: same ? "" : "differs" });
  const flag = (t) => (t.atypical ? "atypical" : "typical");
  row("typicality", flag(answer.typicality), flag(second.typicality), "", { "data-row": "typicality" });
  const bar = (value) => el("span", { class: "mini", role: "img", "aria-label": `${fmt(value)} zeros` },
    el("span", { style: { width: `${100 * value}%` } }), el("span", { class: "num", text: fmt(value) }));
  const layers = [...new Set([...Object.keys(answer.sparsity.layers), ...Object.keys(second.sparsity.layers)])];
  for (const layer of layers) {
    const x = answer.sparsity.layers[layer];
    const y = second.sparsity.layers[layer];
    const diff = x === undefined || y === undefined ? "" : `${y - x >= 0 ? "+" : ""}${fmt(y - x)}`;
    row(layer, x === undefined ? "-" : bar(x), y === undefined ? "-" : bar(y), diff, { "data-layer": layer, "data-a": String(x), "data-b": String(y) });
  }
  const fired = (units, layer) => (units && units[layer] ? `${units[layer].filter((v) => v > 0).length} of ${units[layer].length}` : "-");
  for (const layer of Object.keys(answer.units || {})) {
    row(`${layer}: units fired`, fired(answer.units, layer), fired(second.units, layer), "", { "data-units": layer });
  }
  table.append(body);
  $("compare-table").replaceChildren(table);
}

// ---- review: the stored atypical inputs of the prediction log ----------------------------------------------

const MANAGEMENT_ITEM = "sparsity-management-key";
let reviewing = null; // the log row being reviewed

function showInput(input) {
  if (isImage(current)) {
    const small = exampleToCanvas(input);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(small, 0, 0, pad.width, pad.height);
  } else {
    document.querySelectorAll("#fields input").forEach((field, i) => { field.value = input[i]; });
  }
}

async function showDrift() {
  // GET /models/{name}/drift: each serving version's last drift window against its calibration data
  const box = $("drift");
  try {
    const drift = await api(`/models/${encodeURIComponent(current.name)}/drift`);
    box.replaceChildren(...drift.versions.map((v) => {
      const psi = Object.values(v.psi);
      const worst = psi.length ? Math.max(...psi) : null;
      const text = !v.baseline
        ? `${v.version}: no drift baseline in its card (registered before the prediction log)`
        : worst === null
          ? `${v.version}: no drift window closed yet (${v.window} items a window)`
          : `${v.version}: ${v.drifted ? "drifted" : "no drift"}, largest PSI of the last window ${fmt(worst, 3)} ` +
            `(alarm over ${v.alarm}); windows so far ${v.windows.clean} clean, ${v.windows.drifted} drifted`;
      return el("span", { class: v.drifted ? "drifted" : "", "data-version": v.version, text: text + ". " });
    }));
  } catch (error) {
    box.textContent = `Drift cannot be read: ${error.message}`;
  }
}

async function loadReview() {
  const mine = selection;
  const list = $("review-list");
  list.replaceChildren();
  $("review-form").hidden = true;
  if (!current) return;
  await showDrift();
  if (mine !== selection) return;
  const params = new URLSearchParams({ atypical: "true", limit: "24" });
  const version = $("review-version").value;
  if (version) params.set("version", version);
  const since = $("review-since").value;
  if (since) params.set("since", String(Math.floor(Date.now() / 1000) - Number(since)));
  let page;
  try {
    page = await api(`/models/${encodeURIComponent(current.name)}/log?${params}`);
    if (mine !== selection) return;
  } catch (error) {
    $("review-empty").hidden = false;
    $("review-empty").textContent = `The prediction log cannot be read: ${error.message}`;
    return;
  }
  const rows = page.rows.filter((row) => row.has_input);
  const items = await Promise.all(rows.map((row) => api(`/models/${encodeURIComponent(current.name)}/log/${row.id}`)));
  if (mine !== selection) return;
  $("review-empty").hidden = rows.length > 0;
  $("review-empty").textContent = "No atypical input with its input kept in this range.";
  for (const [k, row] of rows.entries()) {
    const item = items[k];
    const title = `#${row.id}: ${row.label}, score ${fmt(row.typicality_score, 1)}, ${row.at}` +
      (row.review ? `, labelled ${row.review.label}` : "");
    const face = isImage(current)
      ? el("img", { src: exampleToCanvas(item.input).toDataURL(), alt: "" })
      : el("span", { text: item.input.map((v) => fmt(v, 2)).join(", ") });
    const button = el("button", { type: "button", title, "aria-label": title, "data-id": String(row.id) }, face);
    button.addEventListener("click", () => review(item));
    list.append(button);
  }
}

function review(item) {
  reviewing = item;
  showInput(item.input);
  predictJSON([item.input]);
  $("review-item").textContent = `#${item.id} (${item.version}, answered ${item.label})`;
  const select = $("review-label");
  select.replaceChildren(...current.class_names.map((name) => el("option", { value: name, text: name })),
    el("option", { value: "invalid", text: "not a valid input" }));
  if (item.review) select.value = item.review.label;
  $("review-key").value = sessionStorage.getItem(MANAGEMENT_ITEM) || "";
  $("review-status").textContent = item.review ? `labelled ${item.review.label} at ${item.review.at}` : "";
  $("review-form").hidden = false;
}

$("review-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!reviewing) return;
  const key = $("review-key").value.trim();
  sessionStorage.setItem(MANAGEMENT_ITEM, key);
  try {
    const done = await api(`/models/${encodeURIComponent(current.name)}/log/${reviewing.id}/review`, {
      method: "PUT",
      headers: { "content-type": "application/json", authorization: `Bearer ${key}` },
      body: JSON.stringify({ label: $("review-label").value }),
    });
    reviewing = done;
    $("review-status").textContent = `labelled ${done.review.label} at ${done.review.at}`;
  } catch (error) {
    $("review-status").textContent = `not saved: ${error.message}`;
  }
});
$("review-refresh").addEventListener("click", loadReview);
$("review-version").addEventListener("change", loadReview);
$("review-since").addEventListener("change", loadReview);

function reviewVersions(name) {
  const select = $("review-version");
  select.replaceChildren(el("option", { value: "", text: "every version" }),
    ...(versionsOf[name] || []).map((card) => el("option", { value: versionOf(card), text: versionOf(card) })));
}

// ---- start -----------------------------------------------------------------------------------------------

$("model-select").addEventListener("change", async (event) => {
  if (!(await selectModel(event.target.value))) return;
  reviewVersions(event.target.value);
  await loadReview();
});
$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY_ITEM, $("key-input").value.trim());
  location.reload();
});

(async function start() {
  clearPad(false);
  try {
    const listing = await api("/models");
    // several versions of a name may serve: the first listed (the newest) is the one the name's routes answer
    models = listing.models.filter((m, i, all) => all.findIndex((o) => o.name === m.name) === i);
    versionsOf = {};
    for (const card of listing.models) (versionsOf[card.name] = versionsOf[card.name] || []).push(card);
  } catch (error) {
    showError(`could not list the models: ${error.message}`);
    return;
  }
  const select = $("model-select");
  for (const model of models) select.append(el("option", { value: model.name, text: `${model.name} (${model.kind})` }));
  const wanted = new URLSearchParams(location.search).get("model");
  const first = models.find((m) => m.name === wanted) || models.find((m) => m.name === "mnist_cnn") || models[0];
  if (first) {
    select.value = first.name;
    await selectModel(first.name);
    reviewVersions(first.name);
    await loadReview();
  }
  if (document.body.dataset.state === undefined) setState("idle");
  document.body.setAttribute("data-ready", "true");
})();
