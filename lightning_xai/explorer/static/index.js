// The XAI explorer's frontend: an ES module that TensorBoard loads in the tab's iframe and calls render() on.
// Plain JavaScript, no build step. Everything is drawn here from the raw maps the plugin serves.

const BASE = new URL("../", import.meta.url); // the plugin's routes: /data/plugin/xai_explorer/
const TILE = 128; // canvas pixels wide; the height follows the probe image's aspect
const SIGNS = ["positive", "negative", "absolute", "all"];
const COMPARE = { none: "nothing", steps: "two steps", methods: "two methods", runs: "two runs" };

const state = {
  runs: [], runA: "", runB: "", method: "", methodB: "", compare: "none",
  stepA: null, stepB: null, examples: [], opacity: 0.6, sign: "all", scale: "point",
};
const cache = new Map();
let ui = null;
let updates = 0; // the latest update wins: an earlier one that finishes later does not draw over it

async function get(route, params) {
  const url = new URL(route, BASE);
  for (const [key, value] of Object.entries(params || {})) url.searchParams.set(key, value);
  const key = url.toString();
  if (!cache.has(key)) {
    cache.set(key, fetch(url).then(async (response) => {
      const body = await response.json();
      if (!response.ok) throw new Error(body.error || response.statusText);
      return body;
    }));
  }
  return cache.get(key);
}

const manifest = (run) => get("manifest", { run });
const maps = (run, step, method) => get("maps", { run, step, method });
const ranges = (run, method) => get("ranges", { run, method });
const probeUrl = (run, example) => new URL(`probe?run=${encodeURIComponent(run)}&example=${example}`, BASE).toString();

function el(tag, attributes = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function svg(tag, attributes = {}) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  return node;
}

function select(id, options, value, onchange) {
  const node = el("select", { id, onchange: (event) => onchange(event.target.value) });
  for (const [optionValue, text] of options) node.append(el("option", { value: optionValue, text }));
  node.value = value;
  return node;
}

function pointOf(summary, method, step) {
  return (summary.points[method] || []).find((point) => point.step === step);
}

function nearestStep(steps, step) {
  return steps.reduce((best, s) => (Math.abs(s - step) < Math.abs(best - step) ? s : best), steps[0]);
}

function stepLabel(summary, step) {
  const epoch = summary.epochs[String(step)];
  return epoch === undefined || epoch === null ? `step ${step}` : `step ${step} (epoch ${epoch})`;
}

// What the grid shows side by side: one panel, or two of the same kind differing in one thing.
async function panels() {
  const first = { run: state.runA, step: state.stepA, method: state.method };
  if (state.compare === "steps") return [first, { ...first, step: state.stepB }];
  if (state.compare === "methods") return [first, { ...first, method: state.methodB }];
  if (state.compare === "runs" && state.runB) {
    const b = await manifest(state.runB);
    return [first, { run: state.runB, step: nearestStep(b.steps, state.stepA), method: state.method }];
  }
  return [first];
}

// One map value -> [r, g, b, intensity in 0..1] under the sign mode, given the scale's two extremes.
function colour(value, positive, negative) {
  const sign = state.sign;
  if (sign === "positive") return value > 0 ? [255, 0, 0, value / positive] : [0, 0, 0, 0];
  if (sign === "negative") return value < 0 ? [0, 0, 255, -value / negative] : [0, 0, 0, 0];
  const largest = Math.max(positive, negative);
  if (sign === "absolute") {
    const level = Math.abs(value) / largest;
    return [255, Math.round(255 * (1 - Math.min(1, level))), 0, level];
  }
  return value >= 0 ? [255, 0, 0, value / largest] : [0, 0, 255, -value / largest];
}

function extremes(values) {
  let positive = 0;
  let negative = 0;
  for (const v of values) {
    if (v > positive) positive = v;
    if (-v > negative) negative = -v;
  }
  return [positive, negative];
}

async function scaleFor(panel, example, values) {
  if (state.scale === "point") return extremes(values);
  const byStep = await ranges(panel.run, panel.method);
  let positive = 0;
  let negative = 0;
  for (const range of Object.values(byStep)) {
    positive = Math.max(positive, range.positive[example]);
    negative = Math.max(negative, range.negative[example]);
  }
  return [positive, negative];
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error(`cannot load ${src}`));
    image.src = src;
  });
}

async function drawTile(canvas, panel, example, data) {
  const image = await loadImage(probeUrl(panel.run, example));
  canvas.height = Math.max(1, Math.round((TILE * image.height) / image.width)); // the probe's own aspect
  const context = canvas.getContext("2d");
  context.imageSmoothingEnabled = false;
  context.filter = "grayscale(1)"; // the probe in grey under the heat, as Captum's blended_heat_map
  context.drawImage(image, 0, 0, TILE, canvas.height);
  context.filter = "none";
  if (!data) return;
  const row = data.examples.indexOf(example);
  const values = data.values[row];
  let [positive, negative] = await scaleFor(panel, example, values);
  positive = positive || 1;
  negative = negative || 1;
  const overlay = new ImageData(data.width, data.height);
  values.forEach((value, i) => {
    const [r, g, b, level] = colour(value, positive, negative);
    overlay.data.set([r, g, b, Math.round(255 * state.opacity * Math.max(0, Math.min(1, level)))], 4 * i);
  });
  const layer = document.createElement("canvas");
  layer.width = data.width;
  layer.height = data.height;
  layer.getContext("2d").putImageData(overlay, 0, 0);
  context.drawImage(layer, 0, 0, TILE, canvas.height);
}

function className(summary, index) {
  if (index === undefined || index === null) return "?";
  return (summary.class_names && summary.class_names[index]) ?? String(index);
}

function caption(summary, step, example) {
  const truth = summary.labels ? summary.labels[example] : undefined;
  const predicted = (summary.predictions[String(step)] || [])[example];
  const text = `#${example} true ${className(summary, truth)} · pred ${className(summary, predicted)}`;
  const verdict = truth === undefined || predicted === undefined ? "" : truth === predicted ? "right" : "wrong";
  return el("span", { class: `caption ${verdict}`, text });
}

async function drawGrid(ticket) {
  const shown = await panels();
  const grid = el("div", { class: "grid", style: `grid-template-columns: repeat(${shown.length}, auto)` });
  const summaries = await Promise.all(shown.map((panel) => manifest(panel.run)));
  shown.forEach((panel, i) => {
    grid.append(el("div", { class: "panel-title", text: `${panel.run} · ${panel.method} · ${stepLabel(summaries[i], panel.step)}` }));
  });
  const data = await Promise.all(shown.map((panel, i) => {
    const point = pointOf(summaries[i], panel.method, panel.step);
    return point && point.maps ? maps(panel.run, panel.step, panel.method) : null;
  }));
  const drawing = [];
  for (const example of state.examples) {
    shown.forEach((panel, i) => {
      const canvas = el("canvas", { width: TILE, height: TILE, "data-example": example, "data-panel": i });
      const missing = (pointOf(summaries[i], panel.method, panel.step) || {}).maps_missing;
      const note = data[i] ? [] : [el("span", { class: "wrong", text: missing || "no maps at this point" })];
      grid.append(el("div", { class: "tile" }, [canvas, caption(summaries[i], panel.step, example), ...note]));
      drawing.push(drawTile(canvas, panel, example, data[i]));
    });
  }
  await Promise.all(drawing);
  if (ticket === updates) ui.grid.replaceChildren(grid);
}

function drawTimeline(summary, node) {
  node.replaceChildren();
  const steps = summary.steps;
  const last = steps.length - 1 || 1; // marks sit under the slider's positions, one per logged point
  for (const point of summary.points[state.method] || []) {
    const x = `${1 + (97 * steps.indexOf(point.step)) / last}%`; // inset like the slider's thumb
    node.append(svg("rect", { x, y: 10, width: 1, height: 4, fill: "#9e9e9e" }));
    const violated = point.verdicts.some((v) => v.violated);
    if (!violated && point.flags.length === 0) continue;
    const reasons = point.verdicts.map((v) => `${v.name || "check"}: ${v.value} ${v.violated ? "violated" : "ok"}`);
    const mark = svg("rect", { x, y: 0, width: 4, height: 14, class: violated ? "verdict" : "flag", fill: violated ? "#c62828" : "#ff9800" });
    const title = svg("title");
    title.textContent = `${stepLabel(summary, point.step)}: ${[...reasons, ...point.flags.map((f) => f.key || JSON.stringify(f))].join("; ")}`;
    mark.append(title);
    node.append(mark);
  }
}

function drawCurves(summaries) {
  const box = el("div", { class: "curves" });
  const points = summaries.map((summary) => summary.points[state.method] || []);
  const names = [...new Set(points.flat().flatMap((point) => Object.keys(point.metrics)))];
  const [width, height, pad] = [280, 90, 6];
  const legend = summaries.map((summary, r) => `${r ? "dashed purple" : "solid orange"}: ${summary.run}`);
  box.append(el("div", { class: "curve-title", text: `${state.method} · ${legend.join(" · ")} · click a point to go to its step` }));
  for (const name of names) {
    const all = points.flat().filter((p) => typeof p.metrics[name] === "number");
    if (all.length === 0) continue;
    const xs = all.map((p) => p.step);
    const ys = all.map((p) => p.metrics[name]);
    const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    const sx = (x) => pad + ((x - x0) / (x1 - x0 || 1)) * (width - 2 * pad);
    const sy = (y) => height - pad - ((y - y0) / (y1 - y0 || 1)) * (height - 2 * pad);
    const chart = svg("svg", { width, height, class: "curve", "data-metric": name });
    chart.append(svg("line", { x1: sx(state.stepA), x2: sx(state.stepA), y1: 0, y2: height, stroke: "#bbb" }));
    points.forEach((series, r) => {
      const valid = series.filter((p) => typeof p.metrics[name] === "number");
      const path = valid.map((p) => `${sx(p.step)},${sy(p.metrics[name])}`).join(" ");
      chart.append(svg("polyline", { points: path, fill: "none", stroke: r ? "#7e57c2" : "#ff7043", "stroke-dasharray": r ? "4 2" : "" }));
      for (const p of valid) {
        const dot = svg("circle", { cx: sx(p.step), cy: sy(p.metrics[name]), r: 4, class: "curve-point", "data-step": p.step, fill: r ? "#7e57c2" : "#ff7043" });
        const title = svg("title");
        title.textContent = `${name} = ${p.metrics[name].toPrecision(4)} at step ${p.step}`;
        dot.append(title);
        dot.addEventListener("click", () => setStep(r === 0 ? p.step : nearestStep(summaries[0].steps, p.step)));
        chart.append(dot);
      }
    });
    box.append(el("div", { class: "curve-title", text: `${name} [${y0.toPrecision(3)}, ${y1.toPrecision(3)}]` }), chart);
  }
  ui.curves.replaceChildren(box);
}

function drawExamples(summary) {
  const box = el("div", { class: "examples" });
  for (let i = 0; i < summary.examples; i += 1) {
    const chosen = state.examples.includes(i);
    const truth = className(summary, summary.labels ? summary.labels[i] : undefined);
    box.append(el("div", {
      class: `example${chosen ? " selected" : ""}`, "data-example": i,
      onclick: () => {
        state.examples = chosen ? state.examples.filter((e) => e !== i) : [...state.examples, i].sort((a, b) => a - b);
        update();
      },
    }, [el("img", { src: probeUrl(state.runA, i), alt: `example ${i}` }), el("span", { text: `#${i} · ${truth}` })]));
  }
  ui.examples.replaceChildren(box);
}

function setStep(step) {
  state.stepA = step;
  update();
}

async function update() {
  const ticket = ++updates;
  document.body.dataset.requested = String(ticket);
  try {
    ui.error.textContent = "";
    const a = await manifest(state.runA);
    const summaries = [a];
    if (state.compare === "runs" && state.runB) summaries.push(await manifest(state.runB));
    ui.slider.max = String(a.steps.length - 1);
    ui.slider.value = String(a.steps.indexOf(state.stepA));
    ui.sliderB.max = ui.slider.max;
    ui.sliderB.value = String(a.steps.indexOf(state.stepB));
    ui.stepLabel.textContent = stepLabel(a, state.stepA);
    ui.stepLabelB.textContent = stepLabel(a, state.stepB);
    for (const node of ui.secondStep) node.hidden = state.compare !== "steps";
    ui.methodB.hidden = state.compare !== "methods";
    ui.runB.hidden = state.compare !== "runs";
    drawTimeline(a, ui.timeline);
    drawCurves(summaries);
    drawExamples(a);
    await drawGrid(ticket);
  } catch (error) {
    ui.error.textContent = String(error.message || error);
  }
  if (ticket === updates) document.body.dataset.rendered = String(ticket); // drawn: what a script can wait for
}

async function chooseRun(run) {
  state.runA = run;
  const summary = await manifest(run);
  if (!summary.methods.includes(state.method)) state.method = summary.methods[0];
  if (!summary.methods.includes(state.methodB)) state.methodB = summary.methods[1] || summary.methods[0];
  if (!summary.steps.includes(state.stepA)) state.stepA = summary.steps[summary.steps.length - 1];
  if (!summary.steps.includes(state.stepB)) state.stepB = summary.steps[0];
  state.examples = state.examples.filter((e) => e < summary.examples);
  if (state.examples.length === 0) state.examples = [...Array(Math.min(4, summary.examples)).keys()];
  const methods = summary.methods.map((m) => [m, m]);
  ui.method.replaceWith((ui.method = select("method", methods, state.method, (m) => { state.method = m; update(); })));
  ui.methodB.replaceWith((ui.methodB = select("method-b", methods, state.methodB, (m) => { state.methodB = m; update(); })));
}

export async function render() {
  const link = el("link", { rel: "stylesheet", href: new URL("static/style.css", BASE).toString() });
  document.head.append(link);
  const error = el("div", { class: "error", id: "error" });
  document.body.append(error);
  try {
    state.runs = await get("runs");
  } catch (failure) {
    error.textContent = String(failure.message || failure);
    return;
  }
  if (state.runs.length === 0) {
    error.textContent = "No run under this log directory has an xai/manifest.json: log one with lightning_xai.AttributionMonitor.";
    return;
  }
  const runOptions = state.runs.map((r) => [r, r]);
  state.runB = state.runs[1] || state.runs[0];
  ui = {
    error,
    method: el("select"),
    methodB: el("select"),
    runB: select("run-b", runOptions, state.runB, (r) => { state.runB = r; update(); }),
    slider: el("input", { id: "step", type: "range", min: 0, step: 1 }),
    sliderB: el("input", { id: "step-b", type: "range", min: 0, step: 1 }),
    stepLabel: el("span", { id: "step-label" }),
    stepLabelB: el("span", { id: "step-label-b" }),
    timeline: svg("svg", { class: "timeline", id: "timeline" }),
    curves: el("div"),
    examples: el("div"),
    grid: el("div", { id: "grid" }),
  };
  const steps = async () => (await manifest(state.runA)).steps;
  ui.slider.addEventListener("input", async () => setStep((await steps())[Number(ui.slider.value)]));
  ui.sliderB.addEventListener("input", async () => { state.stepB = (await steps())[Number(ui.sliderB.value)]; update(); });
  ui.secondStep = [el("span", { text: "second step" }), ui.sliderB, ui.stepLabelB];
  await chooseRun(state.runs[0]);
  const opacity = el("input", { id: "opacity", type: "range", min: 0, max: 1, step: 0.05, value: state.opacity });
  opacity.addEventListener("input", () => { state.opacity = Number(opacity.value); update(); });
  const controls = el("div", { class: "controls" }, [
    el("label", { text: "run " }, [select("run", runOptions, state.runA, async (r) => { await chooseRun(r); update(); })]),
    el("label", { text: "method " }, [ui.method]),
    el("label", { text: "compare " }, [select("compare", Object.entries(COMPARE), state.compare, (c) => { state.compare = c; update(); })]),
    ui.methodB, ui.runB,
    el("label", { text: "opacity " }, [opacity]),
    el("label", { text: "sign " }, [select("sign", SIGNS.map((s) => [s, s]), state.sign, (s) => { state.sign = s; update(); })]),
    el("label", { text: "colour scale " }, [select("scale", [["point", "per point"], ["run", "shared over the run"]], state.scale, (s) => { state.scale = s; update(); })]),
  ]);
  const sliders = el("div", { class: "sliders" }, [el("span", { text: "step" }), ui.slider, ui.stepLabel, ui.timeline, ...ui.secondStep]);
  document.body.append(controls, sliders, ui.examples, el("div", { class: "main" }, [ui.grid, ui.curves]));
  await update();
}
