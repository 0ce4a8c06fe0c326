"""The upload page served at GET /: pick or drop a photo, see it, see the top-3 categories."""

INDEX_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Fashion Classification Service</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
  #drop { display: block; margin: 1rem 0; border: 2px dashed #999; border-radius: 8px; padding: 2rem;
          text-align: center; cursor: pointer; }
  #drop.over { border-color: #2a6; background: #f3fff6; }
  #preview { max-width: 100%; max-height: 20rem; display: none; margin: 1rem auto; }
  #category { font-size: 1.6rem; font-weight: bold; margin: 0.5rem 0; }
  #error { color: #b00; }
  table { border-collapse: collapse; width: 100%; }
  td { padding: 0.25rem 0.5rem; border-bottom: 1px solid #eee; }
  .bar { background: #2a6; height: 0.8rem; border-radius: 3px; }
  footer { margin-top: 2rem; font-size: 0.8rem; color: #777; }
</style>
</head>
<body>
<h1>What is this item?</h1>
<p>Pick or drop a photo of the item; the service suggests its category.</p>
<label id="drop" for="file">Drop a photo here, or click to choose one
  <input id="file" type="file" accept="image/*" hidden>
</label>
<img id="preview" alt="the uploaded photo">
<div id="status" aria-live="polite"></div>
<div id="category"></div>
<table id="top"></table>
<div id="error" role="alert"></div>
<footer id="model"></footer>
<script>
const drop = document.getElementById("drop");
const input = document.getElementById("file");
const show = (id, text) => { document.getElementById(id).textContent = text; };

async function classify(file) {
  show("category", ""); show("error", ""); document.getElementById("top").innerHTML = "";
  const preview = document.getElementById("preview");
  preview.src = URL.createObjectURL(file);
  preview.style.display = "block";
  show("status", "Classifying...");
  const form = new FormData();
  form.append("file", file);
  try {
    const response = await fetch("/predict", { method: "POST", body: form });
    const answer = await response.json();
    show("status", "");
    if (!response.ok) { show("error", answer.error || ("HTTP " + response.status)); return; }
    show("category", answer.category);
    const table = document.getElementById("top");
    for (const row of answer.top) {
      const tr = table.insertRow();
      tr.className = "prediction";
      tr.insertCell().textContent = row.class;
      tr.insertCell().textContent = (100 * row.probability).toFixed(1) + "%";
      const bar = document.createElement("div");
      bar.className = "bar";
      bar.style.width = (100 * row.probability).toFixed(1) + "%";
      tr.insertCell().appendChild(bar);
    }
    show("model", "model " + answer.model.name + " version " + answer.model.version +
         " (" + answer.model.backend + "), " + answer.time_ms + " ms");
  } catch (err) {
    show("status", ""); show("error", "The service did not answer: " + err);
  }
}

input.addEventListener("change", () => { if (input.files.length) classify(input.files[0]); });
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over");
  if (e.dataTransfer.files.length) classify(e.dataTransfer.files[0]);
});
</script>
</body>
</html>
"""
