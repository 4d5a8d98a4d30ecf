// Refreshes the dashboard's panels (HTML rendered by the server) and its charts (uPlot,
// vendored: the equity curve, PnL per day, and per model an equity curve per version)
// every few seconds, without reloading the page.
(function () {
  "use strict";

  const root = document.getElementById("dashboard");
  const refreshMs = Number(root.dataset.refreshS) * 1000;
  const performanceUrl = JSON.parse(document.getElementById("chart-source").textContent);
  const modelCurvesUrl = JSON.parse(document.getElementById("model-curves-source").textContent);
  const filter = document.getElementById("trade-filter");
  const knownSymbols = new Set();
  const charts = {};
  const modelCharts = new Map(); // model name -> {figure, element, chart, signature}
  const VERSION_COLOURS = ["#2563eb", "#d97706", "#7c3aed", "#0d9488", "#db2777", "#65a30d", "#475569"];
  const MODEL_CHART_HEIGHT = 200;
  const DAY_S = 86400;
  let refreshing = false;

  async function fetchOrLogin(url) {
    const response = await fetch(url, { credentials: "same-origin" });
    if (response.status === 401) {
      window.location.reload(); // the session is gone: the page asks for the token again
      return null;
    }
    return response;
  }

  function tradeQuery() {
    const query = new URLSearchParams();
    for (const [name, value] of new FormData(filter)) {
      if (String(value).trim() !== "") query.set(name, String(value).trim());
    }
    return query;
  }

  async function loadPanel(id, query) {
    const panel = document.getElementById(id);
    const suffix = query && String(query) ? "?" + query : "";
    const response = await fetchOrLogin(panel.dataset.src + suffix);
    if (response === null) return;
    if (!response.ok) {
      const body = await response.json().catch(() => null);
      panel.textContent = body && body.error ? body.error.message : "could not load (" + response.status + ")";
      panel.classList.add("failed");
      return;
    }
    panel.innerHTML = await response.text();
    panel.classList.remove("failed");
  }

  function rememberSymbols() {
    const list = document.getElementById("known-symbols");
    for (const row of document.querySelectorAll("#trades tr[data-symbol]")) {
      if (!knownSymbols.has(row.dataset.symbol)) {
        knownSymbols.add(row.dataset.symbol);
        const option = document.createElement("option");
        option.value = row.dataset.symbol;
        list.appendChild(option);
      }
    }
  }

  async function loadTrades() {
    await loadPanel("trades", tradeQuery());
    rememberSymbols();
  }

  function money(value) {
    return value === null || value === undefined ? "—" : value.toFixed(2);
  }

  function showTotals(totals) {
    const box = document.getElementById("totals");
    const rate = totals.win_rate === null ? "—" : (100 * totals.win_rate).toFixed(1) + " %";
    const sign = totals.total_pnl > 0 ? "pnl-positive" : totals.total_pnl < 0 ? "pnl-negative" : "pnl-zero";
    box.innerHTML = "";
    const facts = [
      ["trades", String(totals.trades)],
      ["closed", String(totals.closed)],
      ["win rate", rate],
      ["total PnL", money(totals.total_pnl), sign],
      ["average PnL", money(totals.avg_pnl)],
      ["fees", money(totals.fees)],
    ];
    for (const [label, value, className] of facts) {
      const item = document.createElement("span");
      item.className = "fact";
      const strong = document.createElement("strong");
      strong.textContent = value;
      if (className) strong.className = className;
      item.append(label + " ", strong);
      box.appendChild(item);
    }
  }

  function chartWidth(element) {
    return Math.max(240, element.clientWidth || 480);
  }

  // The x range from the data itself: uPlot widens a single point's range to years.
  function xRange(xs, bars, pad) {
    if (xs.length === 0) {
      const now = Date.now() / 1000; // nothing closed yet: show today
      return [now - DAY_S, now];
    }
    const min = xs[0];
    const max = xs[xs.length - 1];
    return bars || min === max ? [min - pad, max + pad] : [min, max];
  }

  function drawChart(name, elementId, label, color, data, bars) {
    const element = document.getElementById(elementId);
    if (charts[name]) {
      charts[name].setData(data);
      return;
    }
    const series = { label: label, stroke: color, width: 2 };
    if (bars) {
      series.fill = color;
      series.paths = uPlot.paths.bars({ size: [0.6, 60] });
      series.points = { show: false };
    }
    // Bars are one day wide: keep half a day either side. A line with one point gets a minute.
    const pad = bars ? 0.75 * DAY_S : 60;
    const options = {
      width: chartWidth(element),
      height: 220,
      scales: {
        x: { time: true, range: (u) => xRange(u.data[0], bars, pad) },
      },
      tzDate: (seconds) => uPlot.tzDate(new Date(seconds * 1000), "Etc/UTC"), // UTC, as the tables
      series: [{}, series],
      axes: [{}, { size: 60 }],
      legend: { show: true },
    };
    charts[name] = new uPlot(options, data, element);
  }

  async function loadCharts() {
    const query = new URLSearchParams();
    const symbol = tradeQuery().get("symbol");
    if (symbol) query.set("symbol", symbol);
    const response = await fetchOrLogin(performanceUrl + (String(query) ? "?" + query : ""));
    if (response === null || !response.ok) return;
    const body = await response.json();
    showTotals(body.totals);
    const equity = [body.equity.map((p) => p.at), body.equity.map((p) => p.equity)];
    const perDay = [body.per_bucket.map((p) => p.at), body.per_bucket.map((p) => p.pnl)];
    drawChart("equity", "equity-chart", "equity", "#2563eb", equity, false);
    drawChart("daily", "daily-chart", "PnL", "#0d9488", perDay, true);
  }

  function versionLabel(version) {
    return version === null ? "no version" : version;
  }

  function modelFigure(name) {
    const figure = document.createElement("figure");
    figure.dataset.curvesModel = name;
    const caption = document.createElement("figcaption");
    caption.textContent = name + ": equity per version (cumulative realized PnL of its linked trades, UTC)";
    const element = document.createElement("div");
    element.className = "chart";
    figure.append(caption, element);
    return { figure, element, chart: null, signature: null };
  }

  // One chart per model, a series per version; uPlot.join puts the versions' points on one x axis.
  function drawModelChart(entry, versions) {
    const data = uPlot.join(versions.map((v) => [v.equity.map((p) => p.at), v.equity.map((p) => p.equity)]));
    const signature = JSON.stringify(versions.map((v) => v.model_version));
    if (entry.chart && entry.signature === signature) {
      entry.chart.setData(data);
      return;
    }
    if (entry.chart) entry.chart.destroy(); // a version came or went: new series
    const series = versions.map((v, index) => ({
      label: versionLabel(v.model_version),
      stroke: VERSION_COLOURS[index % VERSION_COLOURS.length],
      width: 2,
      spanGaps: true, // a version has no point where only another one closed a trade
    }));
    entry.chart = new uPlot(
      {
        width: chartWidth(entry.element),
        height: MODEL_CHART_HEIGHT,
        scales: { x: { time: true, range: (u) => xRange(u.data[0], false, 60) } },
        tzDate: (seconds) => uPlot.tzDate(new Date(seconds * 1000), "Etc/UTC"),
        series: [{}, ...series],
        axes: [{}, { size: 60 }],
        legend: { show: true },
      },
      data,
      entry.element,
    );
    entry.signature = signature;
  }

  async function loadModelCurves() {
    const response = await fetchOrLogin(modelCurvesUrl);
    if (response === null || !response.ok) return;
    const body = await response.json();
    const box = document.getElementById("model-curves");
    const seen = new Set();
    for (const model of body.models) {
      seen.add(model.model_name);
      let entry = modelCharts.get(model.model_name);
      if (!entry) {
        entry = modelFigure(model.model_name);
        modelCharts.set(model.model_name, entry);
      }
      box.appendChild(entry.figure); // (re)placed in the answer's order
      drawModelChart(entry, model.versions);
    }
    for (const [name, entry] of modelCharts) {
      if (!seen.has(name)) {
        if (entry.chart) entry.chart.destroy();
        entry.figure.remove();
        modelCharts.delete(name);
      }
    }
    let hint = document.getElementById("model-curves-empty");
    if (body.models.length === 0 && !hint) {
      hint = document.createElement("p");
      hint.id = "model-curves-empty";
      hint.className = "note";
      hint.textContent = "No closed trade is linked to a model version yet: no equity curve per version.";
      box.appendChild(hint);
    } else if (body.models.length > 0 && hint) {
      hint.remove();
    }
  }

  async function refresh() {
    if (refreshing) return;
    refreshing = true;
    try {
      await Promise.all([
        loadPanel("health"),
        loadTrades(),
        loadPanel("models"),
        loadCharts(),
        loadPanel("model-performance"),
        loadModelCurves(),
      ]);
      document.getElementById("updated").textContent = "Updated " + new Date().toLocaleTimeString() + ".";
    } finally {
      refreshing = false;
    }
  }

  filter.addEventListener("submit", (event) => event.preventDefault());
  filter.addEventListener("change", () => {
    loadTrades();
    loadCharts();
  });
  window.addEventListener("resize", () => {
    for (const [name, chart] of Object.entries(charts)) {
      const element = document.getElementById(name === "equity" ? "equity-chart" : "daily-chart");
      chart.setSize({ width: chartWidth(element), height: 220 });
    }
    for (const entry of modelCharts.values()) {
      if (entry.chart) entry.chart.setSize({ width: chartWidth(entry.element), height: MODEL_CHART_HEIGHT });
    }
  });

  refresh();
  setInterval(refresh, refreshMs);
})();
