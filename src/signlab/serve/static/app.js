// signlab's page: send one photo to the API and show the top classes. Plain JS, no build step, no CDN.
"use strict";

const $ = (id) => document.getElementById(id);
const server = { task: "classify", maxBytes: 10e6 };
let latest = 0; // only the newest request's answer is shown, when photos are dropped quickly in a row

function setState(state) {
  document.body.dataset.state = state; // tests and styles can wait on "busy", "done" or "error"
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
  setState("error");
}

async function loadHealth() {
  try {
    const response = await fetch("/api/health");
    const health = await response.json();
    server.task = health.task;
    server.maxBytes = health.max_upload_bytes;
    $("limits").textContent = `JPEG, PNG, WebP, GIF, BMP, TIFF or PPM, up to ${formatMB(server.maxBytes)}.`;
    $("model-info").textContent = `Model: ${health.classes} classes.`;
  } catch (err) {
    showError(`The server does not answer (${err.message}). Is signlab serve still running?`);
  }
}

function formatMB(bytes) {
  return `${Math.round(bytes / 104857.6) / 10} MB`; // MB of 2^20 bytes, as --max-upload-mb counts them
}

function detailText(body, response) {
  if (body && typeof body.detail === "string") return body.detail;
  if (body && body.detail) return JSON.stringify(body.detail);
  return `${response.status} ${response.statusText}`;
}

async function send(file) {
  const request = ++latest;
  $("error").hidden = true;
  if (file.size > server.maxBytes) {
    showError(`${file.name} is ${formatMB(file.size)}: the limit is ${formatMB(server.maxBytes)}.`);
    return;
  }
  const preview = $("preview");
  if (preview.src.startsWith("blob:")) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  $("caption").textContent = file.name || "photo";
  $("result").hidden = false;
  $("status").textContent = "Looking at it…";
  $("top").replaceChildren();
  setState("busy");
  const form = new FormData();
  form.append("file", file, file.name || "photo");
  let response, body;
  try {
    response = await fetch(`/api/${server.task}`, { method: "POST", body: form });
    body = await response.json().catch(() => null);
  } catch (err) {
    if (request === latest) showError(`Upload failed: ${err.message}`);
    return;
  }
  if (request !== latest) return;
  if (!response.ok) {
    $("status").textContent = "";
    showError(detailText(body, response));
    return;
  }
  showResult(body);
}

function showResult(result) {
  const best = result.top[0];
  $("status").textContent = `Best guess: ${best.name} (${percent(best.probability)})`;
  $("caption").textContent += ` · ${result.image.width}×${result.image.height} ${result.image.format}`;
  $("top").replaceChildren(...result.top.map(scoreItem));
  setState("done");
}

function percent(p) {
  return `${(100 * p).toFixed(p >= 0.995 || p < 0.001 ? 2 : 1)} %`;
}

function scoreItem(score) {
  const li = document.createElement("li");
  li.dataset.classId = score.class_id;
  const picture = document.createElement("img");
  picture.alt = "";
  if (score.pictogram) picture.src = score.pictogram;
  const text = document.createElement("div");
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = score.name;
  const bar = document.createElement("div");
  bar.className = "bar";
  const fill = document.createElement("span");
  fill.style.width = `${Math.max(0.5, 100 * score.probability)}%`;
  bar.append(fill);
  const prob = document.createElement("span");
  prob.className = "prob";
  prob.textContent = percent(score.probability);
  text.append(name, bar, prob);
  li.append(picture, text);
  return li;
}

function firstImage(files) {
  return Array.from(files || []).find((f) => f.type.startsWith("image/")) || (files && files[0]);
}

function wire() {
  for (const id of ["file", "camera"]) {
    $(id).addEventListener("change", (event) => {
      const file = event.target.files[0];
      if (file) send(file);
      event.target.value = ""; // picking the same file again still sends it
    });
  }
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const file = firstImage(event.dataTransfer.files);
    if (file) send(file);
  });
  // Dropped outside the box, the browser would leave the page to show the file.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
}

wire();
loadHealth();
