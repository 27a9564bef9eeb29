"use strict";
// The review page: every window of review.csv with its audio; verdicts kept in the browser per window identity
// (the archive's unit, boot, stream and start sample in one embedding space, never a database's row number)
// and downloaded as review.csv. Audio and spectrograms are attached only to windows near the screen.
const data = JSON.parse(document.getElementById("review-data").textContent);
const columns = data.columns;
const rows = data.rows;
const STORE_KEY = "biolingual-review-verdicts-v2";
const saved = JSON.parse(localStorage.getItem(STORE_KEY) || "{}");
const main = document.getElementById("items");
let order = rows.map((_, i) => i);  // shown rows (indices into rows), in display order
let position = 0;                     // current place in order
const byIndex = [];                   // each row's element, by row index

function verdictKey(row) { return row.window_key + "|" + row.label; }

function attachMedia(item, row) {
  if (item.dataset.media) return;
  item.dataset.media = "1";
  const left = item.firstChild;
  if (row.spectrogram) {
    const img = document.createElement("img");
    img.src = row.spectrogram; img.alt = "spectrogram of window " + row.window_id;
    left.appendChild(img);
  }
  if (row.audio_uri) {
    const audio = document.createElement("audio");
    audio.controls = true; audio.preload = "none"; audio.src = row.audio_uri;
    left.appendChild(audio);
  } else {
    const none = document.createElement("p");
    none.className = "noaudio"; none.textContent = "no recording on disk for this window";
    left.appendChild(none);
  }
}

const visible = new IntersectionObserver((entries) => {
  for (const entry of entries) {
    if (entry.isIntersecting) attachMedia(entry.target, rows[Number(entry.target.dataset.index)]);
  }
}, { rootMargin: "800px" });

const fragment = document.createDocumentFragment();
rows.forEach((row, index) => {
  if (saved[verdictKey(row)]) row.verdict = saved[verdictKey(row)];
  const item = document.createElement("section");
  item.className = "item";
  item.dataset.index = index;
  const left = document.createElement("div");
  const right = document.createElement("div");
  right.className = "meta";
  const fields = [["b", "", row.label], ["span", "score ", row.score], ["span", "unit ", row.unit_id],
    ["span", "", row.start_utc + " – " + row.end_utc + " UTC"], ["span", "", row.audio]];
  for (const [tag, caption, text] of fields) {
    const value = document.createElement(tag);
    value.textContent = text;
    if (caption) value.className = caption.trim();
    if (right.childNodes.length) right.append(document.createElement("br"));
    right.append(caption, value);
  }
  const buttons = document.createElement("div");
  buttons.className = "verdict";
  for (const verdict of ["yes", "no", "unsure"]) {
    const button = document.createElement("button");
    button.textContent = verdict; button.dataset.verdict = verdict;
    button.addEventListener("click", (event) => { event.stopPropagation(); selectRow(index); setVerdict(verdict); });
    buttons.appendChild(button);
  }
  right.appendChild(buttons);
  item.append(left, right);
  item.addEventListener("click", () => selectRow(index));
  fragment.appendChild(item);
  byIndex.push(item);
  visible.observe(item);
});
main.appendChild(fragment);

const labelFilter = document.getElementById("f-label");
for (const name of [...new Set(rows.map((r) => r.label))].sort()) {
  const option = document.createElement("option");
  option.value = name; option.textContent = name;
  labelFilter.appendChild(option);
}

function paint(index) {
  const item = byIndex[index];
  const verdict = rows[index].verdict;
  item.classList.remove("yes", "no", "unsure");
  if (verdict) item.classList.add(verdict);
  item.querySelectorAll(".verdict button").forEach((b) => b.classList.toggle("on", b.dataset.verdict === verdict));
  item.classList.toggle("current", order[position] === index);
}

function progress() {
  const done = order.filter((i) => rows[i].verdict).length;
  document.getElementById("progress").textContent = done + " / " + order.length + " reviewed";
}

function arrange() {
  const label = labelFilter.value;
  const sort = document.getElementById("f-sort").value;
  order = rows.map((_, i) => i).filter((i) => !label || rows[i].label === label);
  if (sort) order.sort((a, b) => (Number(rows[a].score) - Number(rows[b].score)) * (sort === "asc" ? 1 : -1));
  const shown = new Set(order);
  rows.forEach((_, i) => { byIndex[i].hidden = !shown.has(i); });
  main.append(...order.map((i) => byIndex[i]));  // display order
  position = 0;  // a new arrangement is reviewed from its top
  rows.forEach((_, i) => paint(i));
  progress();
  if (order.length) select(position);
}

function select(at) {
  if (!order.length) return;
  const previous = order[position];
  position = Math.max(0, Math.min(order.length - 1, at));
  if (previous !== undefined) paint(previous);
  paint(order[position]);
  const item = byIndex[order[position]];
  attachMedia(item, rows[order[position]]);
  item.scrollIntoView({ block: "nearest" });
}

function selectRow(index) { const at = order.indexOf(index); if (at >= 0) select(at); }

function setVerdict(verdict) {
  if (!order.length) return;
  const row = rows[order[position]];
  row.verdict = verdict;
  saved[verdictKey(row)] = verdict;
  localStorage.setItem(STORE_KEY, JSON.stringify(saved));
  paint(order[position]);
  progress();
  select(position + 1);
}

function nextUnreviewed() {
  for (let step = 1; step <= order.length; step++) {
    const at = (position + step) % order.length;
    if (!rows[order[at]].verdict) { select(at); return; }
  }
}

function csvField(value) {
  const text = value === null || value === undefined ? "" : String(value);
  return /[",\n\r]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
}

function reviewCsv() {
  const lines = [columns.join(",")];
  for (const row of rows) lines.push(columns.map((c) => csvField(row[c])).join(","));
  return lines.join("\r\n") + "\r\n";
}

document.getElementById("download").addEventListener("click", () => {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([reviewCsv()], { type: "text/csv" }));
  link.download = "review.csv";
  document.body.appendChild(link); link.click(); link.remove();
});
for (const control of [labelFilter, document.getElementById("f-sort")]) {
  control.addEventListener("change", () => { arrange(); control.blur(); });  // keys review again at once
}
document.getElementById("next-unreviewed").addEventListener("click", nextUnreviewed);

document.addEventListener("keydown", (event) => {
  if (event.target.tagName === "INPUT" || event.target.tagName === "SELECT") return;
  const keys = { y: "yes", n: "no", u: "unsure" };
  if (keys[event.key]) { setVerdict(keys[event.key]); event.preventDefault(); }
  else if (event.key === "j" || event.key === "ArrowDown") { select(position + 1); event.preventDefault(); }
  else if (event.key === "k" || event.key === "ArrowUp") { select(position - 1); event.preventDefault(); }
  else if (event.key === "g") { nextUnreviewed(); event.preventDefault(); }
  else if (event.key === " ") {
    const audio = order.length && byIndex[order[position]].querySelector("audio");
    if (audio) { audio.paused ? audio.play().catch(() => {}) : audio.pause(); }
    event.preventDefault();
  }
});
arrange();
document.body.dataset.rendered = String(rows.length);
