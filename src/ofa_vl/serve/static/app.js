// The demo page: one image, one task, one request to /v1/<task>; results are kept in a row.
"use strict";

const $ = (selector) => document.querySelector(selector);
const TEXT_FIELD = {
  grounding: { name: "text", label: "Region to find", example: "e.g. the red circle" },
  vqa: { name: "question", label: "Question", example: "e.g. what color is the square?" },
};
let image = null; // { file, url } of the chosen image

function showStatus(message, isError = false) {
  const status = $("#status");
  status.textContent = message;
  status.classList.toggle("error", isError);
}

async function loadModels() {
  const res = await fetch("/v1/models");
  const data = await res.json();
  for (const m of data.models) $("#model").add(new Option(m.name, m.name, m.default, m.default));
}

function chooseImage(file) {
  if (!file || !file.type.startsWith("image/")) return showStatus("Please choose an image file.", true);
  image = { file, url: URL.createObjectURL(file) };
  $("#preview").src = image.url;
  $("#preview").hidden = false;
  $("#drop-hint").hidden = true;
  showStatus("");
}

const currentTask = () => $("input[name=task]:checked").value;

function showTextField() {
  const field = TEXT_FIELD[currentTask()];
  $("#text-label").hidden = !field;
  $("#text-input").required = Boolean(field);
  if (field) {
    $("#text-name").textContent = field.label;
    $("#text-input").placeholder = field.example;
  }
}

function describe(task, data) {
  if (task === "caption") return data.caption;
  if (task === "ocr") return data.text;
  if (task === "vqa") return `${data.question} → ${data.answer}`;
  if (!data.boxes.length) return `“${data.text}”: no box found`;
  return `“${data.text}”: [${data.boxes[0].map(Math.round).join(", ")}]`;
}

// A box in original-image pixels -> percentages of the frame, so it follows the displayed size.
function placeBox(el, [x1, y1, x2, y2], width, height) {
  const span = (a, b, size) => {
    const [lo, hi] = [a, b].map((v) => (100 * Math.min(Math.max(v, 0), size)) / size);
    return [Math.min(lo, hi), Math.abs(hi - lo)];
  };
  const [left, w] = span(x1, x2, width);
  const [top, h] = span(y1, y2, height);
  Object.assign(el.style, { left: `${left}%`, top: `${top}%`, width: `${w}%`, height: `${h}%` });
  el.hidden = false;
}

function addResult(task, data) {
  const item = $("#result-template").content.firstElementChild.cloneNode(true);
  item.dataset.task = task;
  item.querySelector("img").src = image.url;
  item.querySelector(".result-task").textContent = task;
  item.querySelector(".result-text").textContent = describe(task, data);
  if (task === "grounding" && data.boxes.length) {
    placeBox(item.querySelector(".box"), data.boxes[0], data.width, data.height);
  }
  $("#results").prepend(item);
}

async function run(event) {
  event.preventDefault();
  if (!image) return showStatus("Choose an image first.", true);
  const task = currentTask();
  const form = new FormData();
  form.append("image", image.file);
  form.append("model", $("#model").value);
  if (TEXT_FIELD[task]) form.append(TEXT_FIELD[task].name, $("#text-input").value);
  showStatus("Running…");
  $("#run").disabled = true;
  try {
    const res = await fetch(`/v1/${task}`, { method: "POST", body: form });
    const data = await res.json();
    if (!res.ok) throw new Error(data.error ? data.error.message : res.statusText);
    addResult(task, data);
    showStatus("");
  } catch (err) {
    showStatus(err.message, true);
  } finally {
    $("#run").disabled = false;
  }
}

const drop = $("#drop");
drop.addEventListener("dragover", (e) => {
  e.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  chooseImage(e.dataTransfer.files[0]);
});
$("#image-input").addEventListener("change", (e) => chooseImage(e.target.files[0]));
for (const radio of document.querySelectorAll("input[name=task]")) {
  radio.addEventListener("change", showTextField);
}
$("#query").addEventListener("submit", run);
showTextField();
loadModels().catch((err) => showStatus(`Could not list the models: ${err.message}`, true));
