// lora-audio studio page: form -> POST /api/jobs, live progress over Server-Sent Events
// (/api/jobs/ID/events, one event per denoising step), players and downloads per result.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
let info = null;

function el(tag, attrs = {}, text = "") {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text) node.textContent = text;
  return node;
}

// fetch + JSON; a refused request throws the server's one-line message
async function api(path, options) {
  const response = await fetch(path, options);
  let body = null;
  try {
    body = await response.json();
  } catch (e) {
    body = null;
  }
  if (!response.ok) {
    throw new Error((body && body.error) || `${response.status} ${response.statusText}`);
  }
  return body;
}

function showError(message) {
  $("#error").textContent = message;
}

function drawForm() {
  const m = info.model;
  $("#model").textContent = `${m.family} · ${m.base_model} · ${m.sample_rate} Hz`;
  if (info.note) {
    $("#note").textContent = `Note: ${info.note}. A test model: fine for trying the page, not for listening.`;
    $("#note").hidden = false;
  }
  const lim = info.limits;
  const d = info.defaults;
  $("#seconds").value = d.seconds;
  $("#seconds").max = lim.max_seconds;
  $("#steps").value = d.steps;
  $("#steps").max = lim.max_steps;
  $("#guidance").value = d.guidance;
  $("#guidance").max = lim.max_guidance;
  $("#seed").max = lim.max_seed;
  const box = $("#adapters");
  if (!info.adapters.length) {
    box.append(el("p", { class: "empty" }, "No adapters: start the studio with --lora DIR to offer some."));
    $("#compare").checked = false;
    $("#compare").disabled = true;
  }
  info.adapters.forEach((a, i) => {
    const row = el("div", { class: "adapter" });
    const label = el("label");
    const check = el("input", { type: "checkbox", "data-adapter": a.name, id: `use-${i}` });
    check.checked = i === 0;
    label.append(check, ` ${a.name}`);
    const range = el("input", {
      type: "range", min: -lim.max_scale, max: lim.max_scale, step: "0.05",
      value: a.scale, "aria-label": `${a.name} strength`,
    });
    const number = el("input", {
      type: "number", step: "0.05", value: a.scale, "data-scale": a.name,
      "aria-label": `${a.name} strength`,
    });
    range.addEventListener("input", () => { number.value = range.value; });
    number.addEventListener("input", () => { range.value = number.value; });
    row.append(label, range, number);
    box.append(row);
  });
}

function numberOf(id) {
  const text = $(id).value.trim();
  return text === "" ? null : Number(text);
}

function collect() {
  const adapters = [];
  for (const check of document.querySelectorAll("[data-adapter]")) {
    if (!check.checked) continue;
    const name = check.dataset.adapter;
    adapters.push({ name, scale: Number($(`[data-scale="${CSS.escape(name)}"]`).value) });
  }
  return {
    prompt: $("#prompt").value,
    negative_prompt: $("#negative").value,
    seconds: numberOf("#seconds"),
    steps: numberOf("#steps"),
    seed: numberOf("#seed") ?? 0,
    guidance: numberOf("#guidance"),
    adapters,
    compare: $("#compare").checked && adapters.length > 0,
  };
}

function systemLabel(system) {
  if (!system.adapters.length) return `${system.name} (no adapter)`;
  return system.adapters.map((a) => `${a.name} @ ${a.scale}`).join(" + ");
}

function statusText(job) {
  switch (job.state) {
    case "queued": return `Waiting in the queue (position ${job.position})`;
    case "running": return `Generating: step ${job.step} of ${job.total_steps}`;
    case "done": return `Done in ${job.seconds_taken} s`;
    default: return `Failed: ${job.error}`;
  }
}

// create or update the job's card; players are added once per file
function drawJob(job) {
  let card = document.querySelector(`.job[data-job="${CSS.escape(job.id)}"]`);
  if (!card) {
    card = el("article", { class: "job card", "data-job": job.id });
    card.append(el("h2", {}, job.prompt));
    const neg = job.negative_prompt ? ` · not: ${job.negative_prompt}` : "";
    card.append(el("p", { class: "meta" },
      `${job.seconds} s · ${job.steps} steps · seed ${job.seed} · guidance ${job.guidance}${neg} · ` +
      job.systems.map(systemLabel).join(" vs ")));
    const bar = el("div", { class: "bar" });
    bar.append(el("progress", { max: "100", value: "0" }), el("span", { class: "pct" }, "0 %"));
    card.append(bar, el("p", { class: "status" }), el("div", { class: "players" }));
    $("#jobs").prepend(card);
  }
  const pct = Math.round(job.progress * 100);
  card.dataset.state = job.state;
  card.classList.toggle("failed", job.state === "failed");
  $("progress", card).value = pct;
  $(".pct", card).textContent = `${pct} %`;
  $(".status", card).textContent = statusText(job);
  const players = $(".players", card);
  for (const file of job.files) {
    if (players.querySelector(`[data-url="${CSS.escape(file.url)}"]`)) continue;
    const system = job.systems.find((s) => s.name === file.system);
    const cell = el("div", { class: "player", "data-url": file.url, "data-system": file.system });
    cell.append(el("h3", {}, system ? systemLabel(system) : file.system));
    cell.append(el("audio", { controls: "", preload: "metadata", src: file.url }));
    const links = el("div", { class: "links" });
    links.append(el("a", { href: file.url, download: file.download }, "Download"), " · ",
      el("a", { href: file.sidecar, target: "_blank" }, "settings (JSON)"));
    cell.append(links);
    players.append(cell);
  }
}

function follow(jobId) {
  const events = new EventSource(`/api/jobs/${encodeURIComponent(jobId)}/events`);
  events.onmessage = (message) => {
    const job = JSON.parse(message.data);
    drawJob(job);
    if (job.state === "done" || job.state === "failed") events.close();
  };
  // On a dropped connection the browser reconnects by itself and resumes after the last event.
}

async function generate(event) {
  event.preventDefault();
  showError("");
  const button = $("#generate");
  button.disabled = true;
  try {
    const job = await api("/api/jobs", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(collect()),
    });
    drawJob(job);
    follow(job.id);
  } catch (e) {
    showError(e.message);
  } finally {
    button.disabled = false;
  }
}

async function init() {
  try {
    info = await api("/api/info");
  } catch (e) {
    showError(`cannot reach the studio: ${e.message}`);
    return;
  }
  drawForm();
  $("#form").addEventListener("submit", generate);
  $("#random-seed").addEventListener("click", () => {
    $("#seed").value = Math.floor(Math.random() * 2 ** 31);
  });
  const jobs = await api("/api/jobs");
  for (const job of jobs.reverse()) {
    drawJob(job);
    if (job.state !== "done" && job.state !== "failed") follow(job.id);
  }
  document.body.dataset.ready = "1";
}

init();
