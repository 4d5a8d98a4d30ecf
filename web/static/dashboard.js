// Refreshes the dashboard's panels (HTML rendered by the server) and its charts (uPlot,
// vendored: the equity curve, PnL per day, and per model an equity curve per version)
// every few seconds, without reloading the page. Each of the seven sources (five panels, two
// charts' JSON) has at most one request out at a time: a slow one delays only itself.
(function () {
  "use strict";

  const root = document.getElementById("dashboard");
  const refreshMs = Number(root.dataset.refreshS) * 1000;
  const performanceUrl = JSON.parse(document.getElementById("chart-source").textContent);
  const modelCurvesUrl = JSON.parse(document.getElementById("model-curves-source").textContent);
  const filter = document.getElementById("trade-filter");
  const knownSymbols = new Set();
  const charts = {};
  const bucketWidths = {}; // chart name -> the width of its buckets, in seconds
  const modelCharts = new Map(); // model name -> {figure, element, chart, signature}
  const VERSION_COLOURS = ["#2563eb", "#d97706", "#7c3aed", "#0d9488", "#db2777", "#65a30d", "#475569"];
  const MODEL_CHART_HEIGHT = 200;
  const DAY_S = 86400;
  // A source whose answer is this late gives up, so that it asks again on the next tick
  // instead of waiting forever: a bit below three refresh periods, and above the server's
  // own limit (WEB_STATEMENT_TIMEOUT_S, 10 s by default), whose 504 says more.
  const REQUEST_TIMEOUT_MS = 12000;

  async function fetchOrLogin(url, signal) {
    const response = await fetch(url, { credentials: "same-origin", signal: signal });
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

  function showFailure(id, message) {
    const panel = document.getElementById(id);
    panel.textContent = message;
    panel.classList.add("failed");
  }

  // Paints the panel `id` from its route; false when nothing was painted. `stale()` says
  // whether the filter changed since the request went out: that answer is not painted.
  async function loadPanel(id, query, signal, stale) {
    const panel = document.getElementById(id);
    const suffix = query && String(query) ? "?" + query : "";
    const response = await fetchOrLogin(panel.dataset.src + suffix, signal);
    if (response === null) return false;
    if (!response.ok) {
      const body = await response.json().catch(() => null);
      if (stale()) return false;
      showFailure(id, body && body.error ? body.error.message : "could not load (" + response.status + ")");
      return false;
    }
    const html = await response.text();
    if (stale()) return false;
    panel.innerHTML = html;
    panel.classList.remove("failed");
    return true;
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

  async function loadTrades(signal, stale) {
    if (await loadPanel("trades", tradeQuery(), signal, stale)) rememberSymbols();
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

  // The x range from the data itself: uPlot widens a single point's range to years. A
  // line with one point gets a minute either side.
  function xRange(xs) {
    if (xs.length === 0) {
      const now = Date.now() / 1000; // nothing closed yet: show today
      return [now - DAY_S, now];
    }
    const min = xs[0];
    const max = xs[xs.length - 1];
    return min === max ? [min - 60, max + 60] : [min, max];
  }

  function drawLine(name, elementId, label, color, data) {
    const element = document.getElementById(elementId);
    if (charts[name]) {
      charts[name].setData(data);
      return;
    }
    const options = {
      width: chartWidth(element),
      height: 220,
      scales: { x: { time: true, range: (u) => xRange(u.data[0]) } },
      tzDate: (seconds) => uPlot.tzDate(new Date(seconds * 1000), "Etc/UTC"), // UTC, as the tables
      series: [{}, { label: label, stroke: color, width: 2 }],
      axes: [{}, { size: 60 }],
      legend: { show: true },
    };
    charts[name] = new uPlot(options, data, element);
  }

  // -- PnL per bucket (a day unless performance.json says otherwise) ------------------------
  // A bar stands for a whole bucket: the axis spans exactly the buckets from the first bar's
  // to the last one's (uPlot's own range put about 36 hours around a single day's bar), each
  // bar stands in the middle of its bucket, labelled with the bucket's date under it.

  const BUCKET_UNITS_S = { minute: 60, hour: 3600, day: DAY_S, week: 7 * DAY_S };
  const LABEL_ROOM_PX = 90; // what a label under the axis needs: every k-th bucket has one

  // performance.json's `bucket` ("1 day", "4 hours") in seconds.
  function bucketSeconds(bucket) {
    const match = /^(\d+) (minute|hour|day|week)s?$/.exec(bucket || "");
    return match ? Number(match[1]) * BUCKET_UNITS_S[match[2]] : DAY_S;
  }

  // One slot per bucket from the first point's to the last one's, at the bucket's middle;
  // a bucket without trades is an empty slot (null), so every bar stays a bucket wide
  // (uPlot sizes bars by the nearest neighbour, and by the whole plot for a single bar).
  function bucketSlots(points, width) {
    if (points.length === 0) return [[], []];
    const pnl = new Map(points.map((p) => [p.at, p.pnl]));
    const xs = [];
    const ys = [];
    for (let at = points[0].at; at <= points[points.length - 1].at; at += width) {
      xs.push(at + width / 2);
      ys.push(pnl.has(at) ? pnl.get(at) : null);
    }
    return [xs, ys];
  }

  // From the first slot's bucket start to the last one's end; nothing yet: today (UTC).
  function bucketRange(xs, width) {
    if (xs.length === 0) {
      const today = Math.floor(Date.now() / 1000 / DAY_S) * DAY_S;
      return [today, today + DAY_S];
    }
    return [xs[0] - width / 2, xs[xs.length - 1] + width / 2];
  }

  // The middles of the buckets between min and max, every k-th so that labels fit.
  function bucketTicks(u, min, max, width) {
    const count = Math.max(1, Math.round((max - min) / width));
    const plotPx = u.bbox.width / (window.devicePixelRatio || 1);
    const every = Math.max(1, Math.ceil(count / Math.max(1, Math.floor(plotPx / LABEL_ROOM_PX))));
    const ticks = [];
    for (let index = 0; index < count; index += every) ticks.push(min + (index + 0.5) * width);
    return ticks;
  }

  // A bucket's label: its start's UTC date, with the time for buckets shorter than a day.
  function bucketLabel(middle, width) {
    const iso = new Date((middle - width / 2) * 1000).toISOString();
    return width % DAY_S === 0 ? iso.slice(0, 10) : iso.slice(0, 16).replace("T", " ");
  }

  // What the axis shows, on the chart's element: the canvas holds no text that scripts (or
  // screen readers) can read. Unix seconds of its bounds, and the labels under it.
  function describeAxis(element, u, width) {
    const labels = bucketTicks(u, u.scales.x.min, u.scales.x.max, width).map((x) => bucketLabel(x, width));
    element.dataset.xMin = String(u.scales.x.min);
    element.dataset.xMax = String(u.scales.x.max);
    element.dataset.xLabels = labels.join(" ");
    element.setAttribute("aria-label", "buckets " + labels.join(", "));
  }

  function drawBuckets(name, elementId, label, color, points, width) {
    const element = document.getElementById(elementId);
    const data = bucketSlots(points, width);
    bucketWidths[name] = width;
    if (charts[name]) {
      charts[name].setData(data);
      return;
    }
    const widthNow = () => bucketWidths[name];
    const options = {
      width: chartWidth(element),
      height: 220,
      scales: {
        x: { time: true, range: (u) => bucketRange(u.data[0], widthNow()) },
        // Bars grow from zero, so zero is on the axis: a bar's height is its PnL.
        y: { range: (u, min, max) => uPlot.rangeNum(Math.min(0, min), Math.max(0, max), 0.1, true) },
      },
      tzDate: (seconds) => uPlot.tzDate(new Date(seconds * 1000), "Etc/UTC"), // UTC, as the tables
      series: [
        { label: "Day", value: (u, x) => (x === null ? "—" : bucketLabel(x, widthNow())) },
        {
          label: label,
          stroke: color,
          fill: color,
          width: 2,
          paths: uPlot.paths.bars({ size: [0.6, Infinity] }),
          points: { show: false },
        },
      ],
      axes: [
        {
          grid: { show: false }, // a grid line would cross every bar: the labels sit under them
          splits: (u, axis, min, max) => bucketTicks(u, min, max, widthNow()),
          values: (u, ticks) => ticks.map((x) => bucketLabel(x, widthNow())),
        },
        { size: 60 },
      ],
      legend: { show: true },
      hooks: { draw: [(u) => describeAxis(element, u, widthNow())] },
    };
    charts[name] = new uPlot(options, data, element);
  }

  async function loadCharts(signal, stale) {
    const query = new URLSearchParams();
    const symbol = tradeQuery().get("symbol");
    if (symbol) query.set("symbol", symbol);
    const response = await fetchOrLogin(performanceUrl + (String(query) ? "?" + query : ""), signal);
    if (response === null || !response.ok) return; // the charts keep their last data
    const body = await response.json();
    if (stale()) return;
    showTotals(body.totals);
    const equity = [body.equity.map((p) => p.at), body.equity.map((p) => p.equity)];
    drawLine("equity", "equity-chart", "equity", "#2563eb", equity);
    drawBuckets("daily", "daily-chart", "PnL", "#0d9488", body.per_bucket, bucketSeconds(body.bucket));
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
        scales: { x: { time: true, range: (u) => xRange(u.data[0]) } },
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

  async function loadModelCurves(signal) {
    const response = await fetchOrLogin(modelCurvesUrl, signal);
    if (response === null || !response.ok) return; // the charts keep their last data
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

  // A source: how it loads (given the request's AbortSignal and `stale()`), and where a
  // failure shows (null: the charts keep their last drawing, as for an error answer).
  // `busy` while its request is out; `again` when the filter changed meanwhile.
  function source(load, panelId) {
    return { load: load, panelId: panelId, busy: false, again: false };
  }

  function panelSource(id) {
    return source((signal, stale) => loadPanel(id, null, signal, stale), id);
  }

  const tradesSource = source(loadTrades, "trades");
  const chartsSource = source(loadCharts, null);
  const sources = [
    panelSource("health"),
    tradesSource,
    panelSource("models"),
    chartsSource,
    panelSource("model-performance"),
    source(loadModelCurves, null),
    panelSource("releases"),
  ];

  // One request of `src`; never rejects. A failure or a timeout ends it like an answer
  // does, so the source asks again on the next tick.
  async function ask(src) {
    src.busy = true;
    src.again = false;
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
    try {
      await src.load(controller.signal, () => src.again);
    } catch (error) {
      if (src.again) {
        // Moot: the panel asks again below, for the filter it now shows.
      } else if (controller.signal.aborted) {
        if (src.panelId) showFailure(src.panelId, "no answer within " + REQUEST_TIMEOUT_MS / 1000 + " s");
      } else {
        if (src.panelId) showFailure(src.panelId, "could not load (" + error.message + ")");
        console.error(error); // a network failure, or a bug in painting: keep it visible
      }
    } finally {
      clearTimeout(timer);
      src.busy = false;
    }
    // The filter changed while the request was out: its answer was not painted; ask again
    // now, with the latest filter.
    if (src.again) await ask(src);
  }

  // Every tick asks each source that has nothing out and skips the others: one slow source
  // delays only itself, and a source never has two requests out whose answers could cross.
  async function refresh() {
    const asked = sources.filter((src) => !src.busy).map(ask);
    if (asked.length === 0) return;
    await Promise.all(asked);
    document.getElementById("updated").textContent = "Updated " + new Date().toLocaleTimeString() + ".";
  }

  // A filter change asks at once, unless the source's last request is still out: then it
  // asks again as soon as that one ends (a second request now could answer first).
  function askForFilter(src) {
    if (src.busy) src.again = true;
    else ask(src);
  }

  filter.addEventListener("submit", (event) => event.preventDefault());
  filter.addEventListener("change", () => {
    askForFilter(tradesSource);
    askForFilter(chartsSource);
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
