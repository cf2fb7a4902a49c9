// tickgraph cockpit: plain browser JavaScript, no build step.
// Panels: live candlestick chart (REST history + WebSocket), replay jobs, signals, exports, parity.
// Every WebSocket message received is kept as its raw text in window.cockpit.recorded[key]
// (ns timestamps exceed JavaScript's exact integers, so checks re-parse the text elsewhere).
"use strict";

const LW = window.LightweightCharts;
const $ = (id) => document.getElementById(id);
const cockpit = (window.cockpit = { recorded: {}, sockets: {}, chartBars: 0, lastHash: null, jobs: [] });

function token() { return $("token").value.trim() || sessionStorage.getItem("tickgraph-token") || ""; }
function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (token()) h["Authorization"] = "Bearer " + token();
  return h;
}
async function api(path, options) {
  const response = await fetch(path, Object.assign({}, options || {}, { headers: headers((options || {}).headers) }));
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (e) { body = text; }
  if (!response.ok) {
    const err = body && body.error ? body.error : { field: null, message: response.statusText };
    throw new Error((err.field ? err.field + ": " : "") + err.message);
  }
  return body;
}
function option(select, value, label) {
  const o = document.createElement("option");
  o.value = value; o.textContent = label === undefined ? value : label;
  select.appendChild(o);
}
const seconds = (ts) => Math.floor(Number(ts) / 1e9);
const candle = (bar) => ({ time: seconds(bar.ts), open: bar.open, high: bar.high, low: bar.low, close: bar.close });

// -- live chart ------------------------------------------------------------------------------
const chart = LW.createChart($("chart"), {
  layout: { background: { color: "#ffffff" }, textColor: "#1d2430", attributionLogo: true },
  timeScale: { timeVisible: true, secondsVisible: true },
  grid: { vertLines: { color: "#f0f2f5" }, horzLines: { color: "#f0f2f5" } },
});
const candles = chart.addSeries(LW.CandlestickSeries, {
  upColor: "#137333", downColor: "#c5221f", borderVisible: false, wickUpColor: "#137333", wickDownColor: "#c5221f",
});

function wsUrl(path) {
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  return scheme + location.host + path;
}
function protocols() { return token() ? ["tickgraph.v1", "bearer." + token()] : ["tickgraph.v1"]; }

// Open (or reuse) a recording WebSocket for one stream; onMessage gets the parsed message.
function subscribe(symbol, timeframe, onMessage) {
  const key = symbol + "/" + timeframe;
  if (cockpit.sockets[key] && cockpit.sockets[key].readyState <= 1) {
    if (onMessage) cockpit.sockets[key].listeners.push(onMessage);
    return cockpit.sockets[key];
  }
  const ws = new WebSocket(wsUrl("/ws/bars/" + encodeURIComponent(symbol) + "/" + timeframe), protocols());
  ws.listeners = onMessage ? [onMessage] : [];
  cockpit.recorded[key] = cockpit.recorded[key] || [];
  ws.onmessage = (event) => {
    cockpit.recorded[key].push(event.data);
    const message = JSON.parse(event.data);
    ws.listeners.forEach((fn) => fn(message));
  };
  cockpit.sockets[key] = ws;
  return ws;
}
// Record every timeframe of these symbols (the parity check hashes all streams of a run).
cockpit.recordAll = function (symbols, timeframes) {
  const opened = [];
  symbols.forEach((s) => timeframes.forEach((tf) => opened.push(subscribe(s, tf, null))));
  return Promise.all(opened.map((ws) => new Promise((resolve) => {
    if (ws.readyState === 1) resolve(); else ws.addEventListener("open", () => resolve(), { once: true });
  })));
};

let chartKey = null;
async function showChart() {
  const symbol = $("chart-symbol").value, timeframe = $("chart-timeframe").value;
  if (!symbol) return;
  const key = symbol + "/" + timeframe;
  if (chartKey && cockpit.sockets[chartKey]) {
    cockpit.sockets[chartKey].listeners = cockpit.sockets[chartKey].listeners.filter((fn) => fn !== onChartMessage);
  }
  chartKey = key;
  cockpit.chartBars = 0;
  candles.setData([]);
  try {
    const history = await api("/api/v1/bars/" + encodeURIComponent(symbol) + "/" + timeframe + "?limit=2000");
    candles.setData(history.bars.map(candle));
    cockpit.chartBars = history.bars.length;
  } catch (e) { $("chart-status").textContent = e.message; }
  const ws = subscribe(symbol, timeframe, onChartMessage);
  const setOpen = () => { $("chart-status").textContent = "streaming " + key; };
  if (ws.readyState === 1) setOpen(); else ws.addEventListener("open", setOpen, { once: true });
  ws.addEventListener("close", () => { $("chart-status").textContent = "disconnected"; }, { once: true });
  chart.timeScale().fitContent();
}
function onChartMessage(message) {
  if (message.symbol + "/" + message.timeframe !== chartKey) return;
  // forming bars update the last candle; confirmed/corrected bars close (or fix) it
  candles.update(candle(message.bar), message.type === "BAR_CORRECTED");
  if (message.type !== "BAR_FORMING") cockpit.chartBars += 1;
  cockpit.lastHash = message.hash;
  $("parity-stream").textContent = message.hash;
  $("parity-stream-count").textContent = String(message.seq);
}

// -- replay ------------------------------------------------------------------------------------
$("replay-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("replay-error").textContent = "";
  const symbols = Array.from(document.querySelectorAll("#replay-symbols input:checked")).map((i) => i.value);
  try {
    const job = await api("/v1/replay/ticks", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        provider: $("replay-provider").value, symbols: symbols,
        start: $("replay-start").value.trim(), end: $("replay-end").value.trim(), speed: Number($("replay-speed").value),
      }),
    });
    cockpit.lastJob = job.run_id;
    refreshJobs();
  } catch (e) { $("replay-error").textContent = e.message; }
});

let finishedJobs = null;
async function refreshJobs() {
  try {
    const list = await api("/v1/replay/ticks?limit=10");
    const finished = list.jobs.filter((job) => job.status !== "running").length;
    if (finishedJobs !== null && finished !== finishedJobs) refreshSignalNames();  // a job may have stored new signals
    finishedJobs = finished;
    cockpit.jobs = list.jobs;
    const body = $("replay-jobs").querySelector("tbody");
    body.innerHTML = "";
    list.jobs.forEach((job) => {
      const tr = document.createElement("tr");
      tr.dataset.runId = job.run_id;
      const pct = job.progress === null ? "" : Math.round(job.progress * 100) + "%";
      [job.run_id.slice(0, 8), job.status, pct, job.rows_written === null ? "" : job.rows_written.toLocaleString(), job.error_message || ""]
        .forEach((text, i) => {
          const td = document.createElement("td");
          td.textContent = text;
          if (i === 1) { td.className = "status-" + job.status; td.dataset.testid = "job-status"; }
          tr.appendChild(td);
        });
      const td = document.createElement("td");
      if (job.status === "running") {
        const b = document.createElement("button");
        b.textContent = "cancel";
        b.onclick = () => api("/v1/replay/ticks/" + job.run_id, { method: "DELETE" }).then(refreshJobs, (e) => alert(e.message));
        td.appendChild(b);
      }
      tr.appendChild(td);
      body.appendChild(tr);
    });
    const keep = new Set([$("signal-run").value, $("parity-job").value]);
    [$("signal-run"), $("parity-job")].forEach((select, n) => {
      const current = select.value;
      select.innerHTML = "";
      if (n === 0) option(select, "", "any");
      list.jobs.forEach((job) => option(select, job.run_id, job.run_id.slice(0, 8) + " " + job.status));
      if (current && keep.has(current)) select.value = current;
    });
  } catch (e) { $("replay-error").textContent = e.message; }
}

// -- signals ------------------------------------------------------------------------------------
async function refreshSignalNames() {
  const info = await api("/v1/symbols");
  const current = $("signal-name").value;
  $("signal-name").innerHTML = "";
  info.signals.forEach((x) => option($("signal-name"), x));
  if (info.signals.includes(current)) $("signal-name").value = current;
}
const signalChart = LW.createChart($("signal-chart"), {
  layout: { background: { color: "#ffffff" }, textColor: "#1d2430", attributionLogo: true },
  timeScale: { timeVisible: true }, leftPriceScale: { visible: true }, rightPriceScale: { visible: true },
});
const signalLine = signalChart.addSeries(LW.LineSeries, { color: "#1a73e8", priceScaleId: "left", lineWidth: 1 });
const closeLine = signalChart.addSeries(LW.LineSeries, { color: "#5f6368", priceScaleId: "right", lineWidth: 1 });
$("signal-load").addEventListener("click", async () => {
  const symbol = $("signal-symbol").value, name = $("signal-name").value, run = $("signal-run").value;
  try {
    const query = "symbol=" + encodeURIComponent(symbol) + "&name=" + encodeURIComponent(name) + (run ? "&run_id=" + run : "");
    const values = await api("/v1/signals?" + query + "&limit=20000");
    const points = new Map();
    values.signals.forEach((s) => { if (s.value !== null) points.set(seconds(s.ts), s.value); });
    signalLine.setData(Array.from(points, ([time, value]) => ({ time, value })));
    let closes = [];
    if (values.signals.length) {
      const from = values.signals[0].time, to = values.signals[values.signals.length - 1].ts;
      const bars = await api("/api/v1/bars/" + encodeURIComponent(symbol) + "/1m?from=" + from + "&to=" + (Number(to) + 6e10).toFixed(0) + "&limit=50000");
      closes = bars.bars.map((b) => ({ time: seconds(b.ts), value: b.close }));
    }
    closeLine.setData(closes);
    signalChart.timeScale().fitContent();
    $("signal-status").textContent = values.count + " values of " + name + " (left axis), close of 1m bars (right axis)";
  } catch (e) { $("signal-status").textContent = e.message; }
});

// -- exports -------------------------------------------------------------------------------------
$("export-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("export-error").textContent = "";
  const dataset = $("export-dataset").value;
  const body = {
    dataset: dataset, symbols: $("export-symbols").value.split(",").map((s) => s.trim()).filter(Boolean),
    start: $("export-start").value.trim(), end: $("export-end").value.trim(), format: $("export-format").value,
  };
  if (dataset === "bars") body.timeframe = $("export-timeframe").value;
  try {
    await api("/v1/exports", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  } catch (e) { $("export-error").textContent = e.message; }
  refreshExports();
});
async function refreshExports() {
  try {
    const list = await api("/v1/exports?limit=10");
    const body = $("export-jobs").querySelector("tbody");
    body.innerHTML = "";
    list.jobs.forEach((job) => {
      const tr = document.createElement("tr");
      [job.run_id.slice(0, 8), job.status, job.rows_written === null ? "" : String(job.rows_written)].forEach((t) => {
        const td = document.createElement("td"); td.textContent = t; tr.appendChild(td);
      });
      const td = document.createElement("td");
      if (job.download) {
        const a = document.createElement("a");
        a.textContent = "download";
        a.href = job.download;
        a.onclick = (e) => { if (token()) { e.preventDefault(); download(job.download); } };
        td.appendChild(a);
      }
      tr.appendChild(td);
      body.appendChild(tr);
    });
  } catch (e) { $("export-error").textContent = e.message; }
}
async function download(path) {  // with a token the link needs the Authorization header
  const response = await fetch(path, { headers: headers() });
  const url = URL.createObjectURL(await response.blob());
  const a = document.createElement("a"); a.href = url; a.download = path.split("/").slice(-2)[0]; a.click();
  URL.revokeObjectURL(url);
}

// -- parity ----------------------------------------------------------------------------------------
$("parity-load").addEventListener("click", async () => {
  const run = $("parity-job").value;
  if (!run) return;
  try {
    const parity = await api("/v1/parity/jobs/" + run);
    $("parity-job-hashes").textContent = Object.entries(parity.streams)
      .map(([stream, v]) => stream + ": " + v.messages + " messages\n  " + v.hash).join("\n") || "(" + parity.status + ", no hashes yet)";
  } catch (e) { $("parity-job-hashes").textContent = e.message; }
});

// -- start-up ---------------------------------------------------------------------------------------
async function start() {
  if ($("token").value) sessionStorage.setItem("tickgraph-token", $("token").value);
  try {
    const info = await api("/v1/symbols");
    [$("chart-symbol"), $("signal-symbol")].forEach((s) => { s.innerHTML = ""; info.symbols.forEach((x) => option(s, x)); });
    [$("chart-timeframe"), $("export-timeframe")].forEach((s) => { s.innerHTML = ""; info.timeframes.forEach((x) => option(s, x)); });
    $("chart-timeframe").value = "1m"; $("export-timeframe").value = "1m";
    $("signal-name").innerHTML = ""; info.signals.forEach((x) => option($("signal-name"), x));
    const box = $("replay-symbols");
    box.querySelectorAll("label").forEach((l) => l.remove());
    info.symbols.forEach((x) => {
      const label = document.createElement("label");
      label.innerHTML = '<input type="checkbox" checked> ';
      label.firstChild.value = x;
      label.appendChild(document.createTextNode(x));
      box.appendChild(label);
    });
    const health = await api("/healthz");
    $("health").textContent = health.ray ? "Ray cluster connected" : "no Ray cluster (replays disabled)";
    await showChart();
  } catch (e) { $("health").textContent = e.message; }
  refreshJobs();
  refreshExports();
}
$("chart-symbol").addEventListener("change", showChart);
$("chart-timeframe").addEventListener("change", showChart);
$("token").addEventListener("change", start);
setInterval(refreshJobs, 1000);
cockpit.ready = start();
