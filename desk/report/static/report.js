"use strict";
// The season report: decode the inlined arrays, aggregate them for the current filter, draw on canvases.
// No network, no libraries: everything this page needs is in this file.
const DATA = JSON.parse(document.getElementById("season-data").textContent);
const U = DATA.units.length, S = DATA.species.length, H = DATA.hours;
const DAY_MS = 86400000, SLOTS_PER_DAY = 1440 / DATA.slot_min;
const STATE_COLOURS = ["#ffffff", "#1a9850", "#a6d96a", "#c6dbef", "#fdae61", "#d73027"];
const LINE_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
  "#bcbd22", "#17becf"];
const $ = (id) => document.getElementById(id);
const A = {};  // decoded arrays
const VIEW = {};  // current aggregation

async function decode(name, Type) {
  const bytes = Uint8Array.from(atob(DATA.arrays[name]), (c) => c.charCodeAt(0));
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return new Type(await new Response(stream).arrayBuffer());
}

// ---------------------------------------------------------------------------------------------- time

// The arrays hold 24 hours for each day of DATA.day_ms; between seasons they skip days, and so do the charts.
// A day index counts the shown days: those of DATA.day_ms and their neighbours (local dates can differ by one).
const UTC_DAYS = DATA.day_ms.map((ms) => Math.round(ms / DAY_MS));
const SHOWN = [...new Set(UTC_DAYS.flatMap((d) => [d - 1, d, d + 1]))].sort((a, b) => a - b);
const BASE_DAY = SHOWN[0], DAYS = SHOWN.length;
const INDEX = new Int32Array(SHOWN[DAYS - 1] - BASE_DAY + 1).fill(-1);
SHOWN.forEach((d, i) => { INDEX[d - BASE_DAY] = i; });
function dateOf(day) { return new Date(SHOWN[day] * DAY_MS).toISOString().slice(0, 10); }
function jumpsBefore(day) { return day > 0 && SHOWN[day] > SHOWN[day - 1] + 1; }  // the first day of a season
function dayOfDate(text, upper) {  // the first shown day on or after the date (upper: the last on or before)
  const d = Math.round(Date.parse(text + "T00:00:00Z") / DAY_MS), at = SHOWN.findIndex((x) => x >= d);
  if (!upper) return at < 0 ? DAYS : at;
  return at < 0 ? DAYS - 1 : SHOWN[at] === d ? at : at - 1;
}
function hourMinute(h) { return DATA.day_ms[Math.floor(h / 24)] / 60000 + (h % 24) * 60; }  // UTC minute

function timeMaps(local) {
  // Per unit and UTC hour: the (local or UTC) day index and hour of day at the start of the hour.
  const day = new Int16Array(U * H), hod = new Uint8Array(U * H);
  for (let u = 0; u < U; u++) {
    for (let h = 0; h < H; h++) {
      const minute = hourMinute(h) + (local ? A.offsets[u * H + h] : 0);
      const d = Math.floor(minute / 1440);
      day[u * H + h] = INDEX[d - BASE_DAY];
      hod[u * H + h] = Math.floor((minute - d * 1440) / 60);
    }
  }
  let first = DAYS - 1, last = 0;  // the days that hold any effort or detection
  for (let i = 0; i < U * H; i++) {
    if (A.effort[i] || A.busy[i]) { first = Math.min(first, day[i]); last = Math.max(last, day[i]); }
  }
  return { day, hod, first: Math.min(first, last), last };
}

// ---------------------------------------------------------------------------------------------- filter

function filters() {
  const unit = $("f-unit").value, species = $("f-species").value, local = $("f-time").value === "local";
  const maps = local ? A.local : A.utc;
  const from = $("f-from").value ? dayOfDate($("f-from").value) : maps.first;
  const to = $("f-to").value ? dayOfDate($("f-to").value, true) : maps.last;
  return {
    units: unit === "" ? [...Array(U).keys()] : [Number(unit)],
    species: species === "" ? [...Array(S).keys()] : [Number(species)],
    from: Math.max(0, from), to: Math.max(Math.max(0, from), Math.min(DAYS - 1, to)), local,
  };
}

function aggregate(f) {
  const maps = f.local ? A.local : A.utc;
  const nd = f.to - f.from + 1;
  const effDay = new Float64Array(nd), effHod = new Float64Array(24);
  const cntDay = new Float64Array(S * nd), cntHod = new Float64Array(S * 24);
  const firstHour = new Int32Array(S).fill(-1), lastHour = new Int32Array(S).fill(-1);
  const firstDay = new Int32Array(U * S).fill(-1);  // per unit and species, for the accumulation curves
  const unitCounts = new Float64Array(U * S);
  for (const u of f.units) {
    for (let h = 0; h < H; h++) {
      const d = maps.day[u * H + h] - f.from;
      if (d < 0 || d >= nd) continue;
      const hod = maps.hod[u * H + h], e = A.effort[u * H + h];
      effDay[d] += e; effHod[hod] += e;
      for (const s of f.species) {
        const c = A.counts[(u * S + s) * H + h];
        if (!c) continue;
        cntDay[s * nd + d] += c; cntHod[s * 24 + hod] += c; unitCounts[u * S + s] += c;
        if (firstHour[s] < 0 || h < firstHour[s]) firstHour[s] = h;
        if (h > lastHour[s]) lastHour[s] = h;
        if (firstDay[u * S + s] < 0) firstDay[u * S + s] = d;
      }
    }
  }
  return { f, nd, effDay, effHod, cntDay, cntHod, firstHour, lastHour, firstDay, unitCounts };
}

function rate(count, seconds) { return seconds >= DATA.min_listened_s ? count / (seconds / 3600) : NaN; }

// ---------------------------------------------------------------------------------------------- drawing

function hatch(ctx) {
  const tile = document.createElement("canvas");
  tile.width = tile.height = 6;
  const t = tile.getContext("2d");
  t.fillStyle = "#eeeeee"; t.fillRect(0, 0, 6, 6);
  t.strokeStyle = "#b0b0b0"; t.beginPath(); t.moveTo(0, 6); t.lineTo(6, 0); t.stroke();
  return ctx.createPattern(tile, "repeat");
}

function colour(x) {  // 0..1 -> a viridis-like ramp
  const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  const p = Math.min(Math.max(x, 0), 1) * (stops.length - 1), i = Math.min(Math.floor(p), stops.length - 2);
  const k = p - i, c = stops[i].map((v, j) => Math.round(v + (stops[i + 1][j] - v) * k));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

function prepare(canvas, width, height) {
  canvas.width = width; canvas.height = height;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, width, height);
  ctx.fillStyle = "#ffffff"; ctx.fillRect(0, 0, width, height);
  ctx.font = "11px system-ui, sans-serif"; ctx.textBaseline = "middle";
  return ctx;
}

function done(canvas, marks, values) {
  canvas.dataset.marks = String(marks);
  canvas.values = values;  // what was drawn (NaN = not listened), for tooltips and tests
}

function heatmap(canvas, rows, cols, values, colLabel, colEvery) {
  // values: Float64Array rows*cols of rates; NaN = not listened.
  const left = Math.min(200, 12 + Math.max(40, ...rows.map((r) => r.length * 6.2)));
  const cell = Math.max(3, Math.min(28, Math.floor((1100 - left - 70) / Math.max(cols, 1))));
  const rowH = rows.length > 40 ? 10 : 16;
  const width = left + cols * cell + 70, height = 30 + rows.length * rowH + 34;
  const ctx = prepare(canvas, width, height);
  let max = 0;
  for (const v of values) if (v > max) max = v;
  const pattern = hatch(ctx);
  let marks = 0;
  for (let r = 0; r < rows.length; r++) {
    ctx.fillStyle = "#222"; ctx.textAlign = "right";
    ctx.fillText(rows[r], left - 6, 30 + r * rowH + rowH / 2);
    for (let c = 0; c < cols; c++) {
      const v = values[r * cols + c];
      ctx.fillStyle = Number.isNaN(v) ? pattern : v === 0 ? "#f7f7f7" : colour(Math.sqrt(v / max));
      ctx.fillRect(left + c * cell, 30 + r * rowH, cell - (cell > 4 ? 1 : 0), rowH - 1);
      marks++;
    }
  }
  ctx.fillStyle = "#222"; ctx.textAlign = "center";
  colEvery = Math.max(colEvery, Math.ceil(34 / cell));
  for (let c = 0; c < cols; c += colEvery) ctx.fillText(colLabel(c), left + c * cell + cell / 2, height - 22);
  // colour bar
  const x0 = left + cols * cell + 14;
  for (let i = 0; i < 100; i++) {
    ctx.fillStyle = colour(Math.sqrt(1 - i / 99));
    ctx.fillRect(x0, 30 + i * (rows.length * rowH) / 100, 10, rows.length * rowH / 100 + 1);
  }
  ctx.textAlign = "left"; ctx.fillStyle = "#222";
  ctx.fillText(max.toPrecision(3), x0 + 13, 32); ctx.fillText("0", x0 + 13, 28 + rows.length * rowH);
  ctx.fillText("per analysed hour", left, 14);
  canvas.layout = { left, cell, rowH, top: 30, rows, cols, colLabel };
  done(canvas, marks, values);
}

function axes(ctx, box, xLabels, every, yMax, yLabel) {
  ctx.strokeStyle = "#999"; ctx.beginPath();
  ctx.moveTo(box.x, box.y); ctx.lineTo(box.x, box.y + box.h); ctx.lineTo(box.x + box.w, box.y + box.h); ctx.stroke();
  ctx.fillStyle = "#222"; ctx.textAlign = "center";
  const step = box.w / Math.max(xLabels.length, 1);
  for (let i = 0; i < xLabels.length; i += every) ctx.fillText(xLabels[i], box.x + (i + 0.5) * step, box.y + box.h + 12);
  ctx.textAlign = "right";
  ctx.fillText(yMax.toPrecision(3), box.x - 4, box.y + 4); ctx.fillText("0", box.x - 4, box.y + box.h);
  ctx.textAlign = "left"; ctx.fillText(yLabel, box.x + 4, box.y - 10);
  return step;
}

function bars(canvas, labels, values, every, yLabel) {
  const ctx = prepare(canvas, canvas.width, canvas.height);
  const box = { x: 50, y: 24, w: canvas.width - 64, h: canvas.height - 50 };
  const yMax = Math.max(1e-9, ...values.filter((v) => !Number.isNaN(v)));
  const step = axes(ctx, box, labels, every, yMax, yLabel);
  const pattern = hatch(ctx);
  let marks = 0;
  values.forEach((v, i) => {
    const x = box.x + i * step + 1, w = Math.max(1, step - 2);
    if (Number.isNaN(v)) { ctx.fillStyle = pattern; ctx.fillRect(x, box.y, w, box.h); }
    else { ctx.fillStyle = "#3b528b"; const hh = (v / yMax) * box.h; ctx.fillRect(x, box.y + box.h - hh, w, Math.max(hh, 1)); }
    marks++;
  });
  done(canvas, marks, values);
}

function lines(canvas, xLabels, series, every, yLabel) {
  const ctx = prepare(canvas, canvas.width, canvas.height);
  const box = { x: 50, y: 24, w: canvas.width - 150, h: canvas.height - 50 };
  let yMax = 1e-9;
  for (const s of series) for (const v of s.values) if (v > yMax) yMax = v;
  const step = axes(ctx, box, xLabels, every, yMax, yLabel);
  let marks = 0;
  series.forEach((s, k) => {
    ctx.strokeStyle = s.colour; ctx.lineWidth = s.width || 1.2; ctx.beginPath();
    let open = false;
    s.values.forEach((v, i) => {
      if (v === null || Number.isNaN(v)) { open = false; return; }
      const x = box.x + (i + 0.5) * step, y = box.y + box.h - (v / yMax) * box.h;
      if (open) ctx.lineTo(x, y); else { ctx.moveTo(x, y); ctx.fillStyle = s.colour; ctx.fillRect(x - 2, y - 2, 4, 4); }
      open = true; marks++;
    });
    ctx.stroke();
    ctx.fillStyle = s.colour; ctx.textAlign = "left";
    if (k < 24) ctx.fillText(s.name, box.x + box.w + 8, box.y + 6 + k * 13);
  });
  ctx.lineWidth = 1;
  done(canvas, marks, series.map((s) => s.values));
}

function dayLabels(v) {  // after a jump between seasons: "… " and the year
  return Array.from({ length: v.nd }, (_, i) => (jumpsBefore(v.f.from + i) ? `… ${dateOf(v.f.from + i)}`
    : dateOf(v.f.from + i).slice(5)));
}
function every(n, target) { return Math.max(1, Math.ceil(n / target)); }

// ---------------------------------------------------------------------------------------------- sections

function drawEffort(f) {
  const box = $("effort-strips");
  box.textContent = "";
  const nd = f.to - f.from + 1, cell = 3, rowH = Math.max(2, Math.min(14, Math.floor(360 / nd)));
  for (const u of f.units) {
    const fig = document.createElement("figure");
    const cap = document.createElement("figcaption");
    cap.textContent = `${DATA.units[u].id} (${f.local ? DATA.units[u].zone : "UTC"})`;
    const canvas = document.createElement("canvas");
    canvas.className = "chart strip";
    const width = 40 + SLOTS_PER_DAY * cell, height = 16 + nd * rowH;
    const ctx = prepare(canvas, width, height);
    ctx.fillStyle = "#222"; ctx.textAlign = "center";
    for (let hr = 0; hr < 24; hr += 6) ctx.fillText(String(hr).padStart(2, "0"), 40 + hr * 4 * cell, 7);
    let marks = 0;
    const slots = A.strip.length / U;
    for (let k = 0; k < slots; k++) {
      const state = A.strip[u * slots + k];
      const hour = Math.floor(k * DATA.slot_min / 60);
      const minute = hourMinute(Math.min(hour, H - 1)) + (k * DATA.slot_min) % 60 +
        (f.local ? A.offsets[u * H + Math.min(hour, H - 1)] : 0);
      const d = INDEX[Math.floor(minute / 1440) - BASE_DAY] - f.from;
      if (d < 0 || d >= nd) continue;
      const col = Math.floor((minute - Math.floor(minute / 1440) * 1440) / DATA.slot_min);
      ctx.fillStyle = STATE_COLOURS[state];
      ctx.fillRect(40 + col * cell, 16 + d * rowH, cell, rowH);
      if (state) marks++;
    }
    ctx.textAlign = "right"; ctx.fillStyle = "#222";
    for (let d = 0; d < nd; d += every(nd, 8)) ctx.fillText(dateOf(f.from + d).slice(5), 36, 16 + d * rowH + rowH / 2);
    ctx.strokeStyle = "#000"; ctx.setLineDash([4, 3]);  // where the rows jump over the days between seasons
    for (let d = 1; d < nd; d++) {
      if (jumpsBefore(f.from + d)) { ctx.beginPath(); ctx.moveTo(0, 16 + d * rowH); ctx.lineTo(width, 16 + d * rowH); ctx.stroke(); }
    }
    ctx.setLineDash([]);
    done(canvas, marks, null);
    fig.append(cap, canvas);
    box.append(fig);
  }
}

function drawHeatmaps(v) {
  const names = v.f.species.map((s) => DATA.species[s]);
  const days = new Float64Array(names.length * v.nd), hours = new Float64Array(names.length * 24);
  v.f.species.forEach((s, r) => {
    for (let d = 0; d < v.nd; d++) days[r * v.nd + d] = rate(v.cntDay[s * v.nd + d], v.effDay[d]);
    for (let h = 0; h < 24; h++) hours[r * 24 + h] = rate(v.cntHod[s * 24 + h], v.effHod[h]);
  });
  const zones = v.f.local ? v.f.units.map((u) => `${DATA.units[u].id} ${DATA.units[u].zone}` +
    (DATA.units[u].zone_from_config ? "" : " (none recorded)")).join(", ") : "UTC";
  for (const span of document.querySelectorAll("figcaption .zones")) span.textContent = `(time: ${zones})`;
  const labels = dayLabels(v);
  heatmap($("heat-days"), names, v.nd, days, (c) => labels[c], every(v.nd, 15));
  heatmap($("heat-hours"), names, 24, hours, (c) => String(c).padStart(2, "0"), 1);
}

function drawAccumulation(v) {
  const labels = dayLabels(v), series = [];
  const pooledFirst = new Int32Array(S).fill(-1);
  v.f.units.forEach((u, k) => {
    const added = new Float64Array(v.nd);
    for (const s of v.f.species) {
      const d = v.firstDay[u * S + s];
      if (d >= 0) {
        added[d]++;
        if (pooledFirst[s] < 0 || d < pooledFirst[s]) pooledFirst[s] = d;
      }
    }
    let total = 0;
    series.push({ name: DATA.units[u].id, colour: LINE_COLOURS[k % LINE_COLOURS.length],
      values: Array.from(added, (a) => (total += a)) });
  });
  if (v.f.units.length > 1) {
    const added = new Float64Array(v.nd);
    for (const d of pooledFirst) if (d >= 0) added[d]++;
    let total = 0;
    series.push({ name: "pooled", colour: "#000", width: 3, values: Array.from(added, (a) => (total += a)) });
  }
  lines($("accum"), labels, series, every(v.nd, 12), "species");
}

function hourText(h, u) {
  if (h < 0) return "";
  const local = $("f-time").value === "local" && u !== null;
  const ms = (hourMinute(h) + (local ? A.offsets[u * H + h] : 0)) * 60000;
  return new Date(ms).toISOString().slice(0, 13).replace("T", " ") + "h";
}

function table(el, header, rows) {
  el.textContent = "";
  const head = el.createTHead().insertRow();
  for (const h of header) { const th = document.createElement("th"); th.textContent = h; head.append(th); }
  const body = el.createTBody();
  for (const row of rows) {
    const tr = body.insertRow();
    for (const cell of row) {
      const td = tr.insertCell();
      if (cell instanceof Node) td.append(cell); else td.textContent = cell === null || cell === undefined ? "" : cell;
    }
  }
  el.dataset.rows = String(rows.length);
}

function speciesLink(s) {
  const a = document.createElement("a");
  a.href = "#species=" + encodeURIComponent(DATA.species[s]);
  a.textContent = DATA.species[s];
  return a;
}

function drawSpeciesTable(v) {
  const effort = v.effDay.reduce((a, b) => a + b, 0);
  const oneUnit = v.f.units.length === 1 ? v.f.units[0] : null;
  const rows = v.f.species.map((s) => {
    let n = 0;
    for (let d = 0; d < v.nd; d++) n += v.cntDay[s * v.nd + d];
    const units = v.f.units.filter((u) => v.unitCounts[u * S + s] > 0).length;
    const r = rate(n, effort);
    return [speciesLink(s), n, Number.isNaN(r) ? "not listened" : r.toFixed(3), units,
      hourText(v.firstHour[s], oneUnit), hourText(v.lastHour[s], oneUnit)];
  }).filter((row) => row[1] > 0).sort((a, b) => b[1] - a[1]);
  const zone = oneUnit !== null && v.f.local ? DATA.units[oneUnit].zone : "UTC";
  table($("species-table"), ["species", "detections", "per analysed hour", "units", `first (hour, ${zone})`,
    `last (hour, ${zone})`], rows);
  return { effort, detections: rows.reduce((a, r) => a + r[1], 0) };
}

function drawHealth(f) {
  const show = new Set(f.units.map((u) => DATA.units[u].id));
  const rows = DATA.health.units.filter((r) => show.has(r.unit_id)).map((r) => [
    r.unit_id, r.time_zone, r.boots, r.crashes, r.uptime_h, r.effort_h, r.effort_fraction, r.listened_h,
    r.scheduled_off_h, r.gap_h, r.down_after_crash_h, r.gap_events, r.xruns, r.max_temperature_c === null ? null : r.max_temperature_c.toFixed(1),
    r.min_disk_free_mib, Object.entries(r.clock_sync || {}).map(([k, x]) => `${k} ${(100 * x).toFixed(0)}%`).join(", "),
    r.first_utc, r.last_utc, r.last_heard, r.scoring]);
  table($("health-table"), ["unit", "time zone", "boots", "crashes", "uptime h", "effort h", "effort fraction",
    "listened h", "scheduled off h", "gap h", "down after crash h", "gap events", "xruns", "max °C",
    "min free MiB", "clock sync (share of effort)", "first (UTC)", "last (UTC)", "last heard on the air (UTC)",
    "scoring (latest boot)"], rows);
  const days = H / 24, labels = DATA.day_ms.map((ms, d) => new Date(ms).toISOString()
    .slice(d > 0 && ms > DATA.day_ms[d - 1] + DAY_MS ? 0 : 5, 10));
  for (const [id, index] of [["temperature", 0], ["disk", 1]]) {
    const series = f.units.map((u, k) => ({ name: DATA.units[u].id, colour: LINE_COLOURS[k % LINE_COLOURS.length],
      values: (DATA.health.daily[DATA.units[u].id] || []).map((x) => (x[index] === null ? NaN : x[index])) }));
    lines($(id), labels, series, every(days, 10), id === "disk" ? "MiB" : "°C");
  }
  const drift = DATA.health.drift.map((d) => [d.setting, ...f.units.map((u) => d.values[DATA.units[u].id] ?? "")])
    .filter((row) => new Set(row.slice(1)).size > 1);
  table($("drift-table"), ["setting", ...f.units.map((u) => DATA.units[u].id)], drift);
  const list = $("findings");
  list.textContent = "";
  for (const x of DATA.health.findings) {
    const li = document.createElement("li");
    li.className = x.severity;
    li.textContent = `${x.severity} [${x.check}] ${x.message}`;
    list.append(li);
  }
}

function drawSpeciesPage(v) {
  const page = $("species-page");
  page.hidden = v.f.species.length !== 1;
  if (page.hidden) return;
  const s = v.f.species[0], name = DATA.species[s];
  $("sp-title").textContent = name;
  let n = 0;
  for (let d = 0; d < v.nd; d++) n += v.cntDay[s * v.nd + d];
  const effort = v.effDay.reduce((a, b) => a + b, 0), r = rate(n, effort);
  $("sp-numbers").textContent = `${n} detections in ${(effort / 3600).toFixed(1)} analysed hours ` +
    `(${Number.isNaN(r) ? "not listened" : r.toFixed(3) + " per analysed hour"}) on ` +
    `${v.f.units.filter((u) => v.unitCounts[u * S + s] > 0).length} of ${v.f.units.length} unit(s).`;
  bars($("sp-hours"), Array.from({ length: 24 }, (_, h) => String(h).padStart(2, "0")),
    Array.from({ length: 24 }, (_, h) => rate(v.cntHod[s * 24 + h], v.effHod[h])), 3, "per analysed hour");
  bars($("sp-days"), dayLabels(v), Array.from({ length: v.nd }, (_, d) => rate(v.cntDay[s * v.nd + d], v.effDay[d])),
    every(v.nd, 8), "per analysed hour");
  const show = new Set(v.f.units);
  table($("sp-units"), ["unit", "detections (season)", "first detection (UTC)", "last detection (UTC)", "best score"],
    DATA.first_last.filter((x) => x[1] === s && show.has(x[0]))
      .map((x) => [DATA.units[x[0]].id, x[4], x[2], x[3], x[5]]));
  drawConfidence(s);
  drawClips(name);
}

function drawConfidence(s) {
  const name = DATA.species[s], cal = DATA.confidence ? DATA.confidence[name] : null;
  const hist = DATA.score_hist[name] || [], [lo, hi] = DATA.score_range;
  const canvas = $("sp-scores"), ctx = prepare(canvas, canvas.width, canvas.height);
  const box = { x: 50, y: 24, w: canvas.width - 100, h: canvas.height - 50 };
  const top = Math.max(1, ...hist), step = box.w / Math.max(hist.length, 1);
  const xLabels = hist.map((_, i) => (lo + (i + 0.5) * (hi - lo) / hist.length).toFixed(2));
  axes(ctx, box, xLabels, every(hist.length, 8), top, "detections by score");
  let marks = 0;
  hist.forEach((c, i) => {
    ctx.fillStyle = "#9ecae1";
    const hh = (c / top) * box.h;
    ctx.fillRect(box.x + i * step + 1, box.y + box.h - hh, Math.max(1, step - 2), hh);
    if (c) marks++;
  });
  const xOf = (score) => box.x + ((score - lo) / (hi - lo || 1)) * box.w;
  let caption = "Score distribution (no --confidence given)";
  if (cal && cal.fitted) {
    ctx.strokeStyle = "#d62728"; ctx.lineWidth = 2; ctx.beginPath();
    for (let i = 0; i <= 100; i++) {
      const x = lo + (i / 100) * (hi - lo), p = 1 / (1 + Math.exp(-(cal.a + cal.b * x)));
      const px = xOf(x), py = box.y + box.h - p * box.h;
      if (i) ctx.lineTo(px, py); else ctx.moveTo(px, py);
      marks++;
    }
    ctx.stroke(); ctx.lineWidth = 1;
    ctx.fillStyle = "#d62728"; ctx.textAlign = "left"; ctx.fillText("P(correct) 1.0", box.x + box.w + 4, box.y);
    const parts = [];
    for (const [p, t] of Object.entries(cal.thresholds)) {
      ctx.strokeStyle = "#444"; ctx.setLineDash([4, 3]); ctx.beginPath();
      ctx.moveTo(xOf(t.score), box.y); ctx.lineTo(xOf(t.score), box.y + box.h); ctx.stroke(); ctx.setLineDash([]);
      ctx.fillStyle = "#444"; ctx.fillText(`P≥${p}`, xOf(t.score) + 3, box.y + 10);
      parts.push(`P≥${p} at score ${t.score.toFixed(3)}` + (t.ci.length === 2 ? ` [${t.ci[0].toFixed(3)}, ${t.ci[1].toFixed(3)}]` : ""));
    }
    caption = `Confidence (${cal.n_yes} yes / ${cal.n_no} no / ${cal.n_unsure} unsure reviewed): red = P(correct); ` +
      (parts.join("; ") || "no threshold chosen");
  } else if (cal) {
    caption = `Not fitted: ${cal.reason || "too few reviews"}`;
  }
  $("sp-cal-caption").textContent = caption;
  done(canvas, marks, hist);
}

function drawClips(name) {
  const box = $("sp-clips");
  box.textContent = "";
  const clips = DATA.clips[name] || [];
  if (!clips.length) {
    box.textContent = DATA.clips_requested ? "No clips or recordings of this species were found." :
      "Clips not included (render with --clips).";
    return;
  }
  for (const c of clips) {
    const div = document.createElement("div");
    div.className = "clip";
    const img = document.createElement("img");
    img.src = c.image; img.alt = `spectrogram, ${name}, ${c.unit}, ${c.utc}`;
    const audio = document.createElement("audio");
    audio.controls = true; audio.preload = "metadata"; audio.src = c.audio;
    const p = document.createElement("p");
    p.textContent = `${c.kind === "top" ? "top-scoring" : "random"} · ${c.unit} · ${c.utc} · score ${c.score} ` +
      `· ${c.source} ${c.file} (0–8 kHz, peak-normalised)`;
    div.append(img, audio, p);
    box.append(div);
  }
}

function tooltip(event) {
  const canvas = event.target, L = canvas.layout, tip = $("heat-tip");
  if (!L) return;
  const rect = canvas.getBoundingClientRect(), scale = canvas.width / rect.width;
  const x = (event.clientX - rect.left) * scale, y = (event.clientY - rect.top) * scale;
  const c = Math.floor((x - L.left) / L.cell), r = Math.floor((y - L.top) / L.rowH);
  if (c < 0 || r < 0 || c >= L.cols || r >= L.rows.length) { tip.hidden = true; return; }
  const v = canvas.values[r * L.cols + c];
  tip.textContent = `${L.rows[r]}, ${L.colLabel(c)}: ${Number.isNaN(v) ? "not listened" : v.toFixed(3) + " per analysed hour"}`;
  tip.style.left = event.clientX + 12 + "px"; tip.style.top = event.clientY + 12 + "px"; tip.hidden = false;
}

// ---------------------------------------------------------------------------------------------- wiring

function render() {
  const f = filters();
  const v = aggregate(f);
  drawEffort(f);
  drawHeatmaps(v);
  drawAccumulation(v);
  const totals = drawSpeciesTable(v);
  drawHealth(f);
  drawSpeciesPage(v);
  $("f-summary").textContent = `${totals.detections} detections in ${(totals.effort / 3600).toFixed(1)} analysed ` +
    `hours on ${f.units.length} unit(s), ${dateOf(f.from)} to ${dateOf(f.to)}`;
  document.body.dataset.rendered = String(++VIEW.renders);
}

function fromHash() {
  const match = location.hash.match(/^#species=(.*)$/);
  if (!match) return;
  const s = DATA.species.indexOf(decodeURIComponent(match[1]));
  if (s >= 0) { $("f-species").value = String(s); render(); $("species-page").scrollIntoView(); }
}

async function main() {
  A.effort = await decode("effort", Uint16Array);
  A.counts = await decode("counts", Uint16Array);
  A.offsets = await decode("offsets", Int16Array);
  A.strip = await decode("strip", Uint8Array);
  A.busy = new Uint8Array(U * H);
  for (let u = 0; u < U; u++) {
    for (let s = 0; s < S; s++) for (let h = 0; h < H; h++) if (A.counts[(u * S + s) * H + h]) A.busy[u * H + h] = 1;
  }
  A.local = timeMaps(true); A.utc = timeMaps(false);
  VIEW.renders = 0;
  DATA.units.forEach((u, i) => $("f-unit").add(new Option(u.id, String(i))));
  DATA.species.forEach((s, i) => $("f-species").add(new Option(s, String(i))));
  for (const id of ["f-from", "f-to"]) { $(id).min = dateOf(0); $(id).max = dateOf(DAYS - 1); }
  $("effort-legend").innerHTML = DATA.state_names.map((n, i) => `<span class="item"><span class="key s${i}"></span> ${n}</span>`).join("");
  const season = `${dateOf(A.utc.first)} to ${dateOf(A.utc.last)} (UTC)` + (DATA.seasons.length > 1
    ? ` in ${DATA.seasons.length} seasons (${DATA.seasons.map(([a, b]) => `${a} to ${b}`).join(", ")}; the days ` +
      "between them hold no record and are left out of the charts, marked by a dashed line or \"…\")" : "");
  $("overview").textContent = `${U} unit(s), ${S} species, ${DATA.detections} detections, ${season}. ` +
    `Generated ${DATA.generated_utc}.` + (DATA.left_out ? ` ${DATA.left_out} record(s) with implausible clock ` +
    "times are left out (see the clock findings)." : "");
  for (const id of ["f-unit", "f-species", "f-from", "f-to", "f-time"]) $(id).addEventListener("change", render);
  $("filters").addEventListener("submit", (e) => e.preventDefault());
  $("f-reset").addEventListener("click", () => { $("filters").reset(); history.replaceState(null, "", " "); render(); });
  for (const id of ["heat-days", "heat-hours"]) {
    $(id).addEventListener("mousemove", tooltip);
    $(id).addEventListener("mouseleave", () => { $("heat-tip").hidden = true; });
  }
  window.addEventListener("hashchange", fromHash);
  render();
  fromHash();
}

main();
