// The dashboard: alerts (live over server-sent events), charts (plotly.js), drill-down.
"use strict";

const api = (path, options = {}) =>
  fetch(`/v1/sentiment${path}`, {credentials: "same-origin", ...options}).then(async (r) => {
    if (r.status === 401) { window.location.assign("/dashboard/login"); throw new Error("signed out"); }
    if (!r.ok) throw new Error(`${r.status} ${await r.text()}`);
    return r.json();
  });

const state = {alerts: new Map(), entities: [], ticker: null, alertId: null};
const $ = (id) => document.getElementById(id);
const time = (iso) => iso ? new Date(iso).toLocaleString([], {
  month: "short", day: "numeric", hour: "2-digit", minute: "2-digit"}) : "";
const esc = (text) => String(text ?? "").replace(/[&<>"']/g, (c) =>
  ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));

function describe(alert) {
  const d = alert.details || {};
  const parts = [`${d.volume ?? "?"} articles`];
  if (d.mean_score != null) parts.push(`mean ${d.mean_score >= 0 ? "+" : ""}${d.mean_score.toFixed(2)}`);
  if (d.negative_share != null) parts.push(`${Math.round(d.negative_share * 100)}% negative`);
  parts.push(`${alert.kind} ${alert.value.toFixed(2)} (threshold ${alert.threshold})`);
  return parts.join(" · ");
}

function renderAlerts() {
  const showResolved = $("show-resolved").checked;
  const order = {firing: 0, pending: 1, resolved: 2};
  const alerts = [...state.alerts.values()]
    .filter((a) => showResolved || a.state !== "resolved")
    .sort((a, b) => order[a.state] - order[b.state] || b.updated_at.localeCompare(a.updated_at));
  const list = $("alerts");
  list.replaceChildren(...alerts.map((alert) => {
    const item = document.createElement("li");
    item.className = `alert ${alert.state}${alert.id === state.alertId ? " selected" : ""}${alert._fresh ? " fresh" : ""}`;
    item.dataset.id = alert.id;
    item.dataset.state = alert.state;
    const acked = alert.acknowledged_at
      ? `<span class="acked">✓ acknowledged by ${esc(alert.acknowledged_by)}</span>`
      : `<button class="ack primary" data-id="${alert.id}">Acknowledge</button>`;
    item.innerHTML = `
      <div class="row"><span class="what">${esc(alert.ticker)} · ${esc(alert.entity)}</span>
        <span class="badge ${alert.state}">${alert.state}</span></div>
      <div class="meta">${esc(alert.rule)} — ${esc(describe(alert))}</div>
      <div class="row meta"><span>${alert.fired_at ? "fired " + time(alert.fired_at) : "since " + time(alert.started_at)}
        ${alert.resolved_at ? " · resolved " + time(alert.resolved_at) : ""}</span>${acked}</div>`;
    alert._fresh = false;
    return item;
  }));
  $("no-alerts").hidden = alerts.length > 0;
  renderWatchlist();
}

function renderWatchlist() {
  const open = {};
  for (const a of state.alerts.values()) if (a.state !== "resolved") open[a.ticker] = (open[a.ticker] || 0) + 1;
  $("watchlist").querySelector("tbody").replaceChildren(...state.entities.map((e) => {
    const row = document.createElement("tr");
    row.dataset.ticker = e.ticker;
    if (e.ticker === state.ticker) row.className = "selected";
    row.innerHTML = `<td><b>${esc(e.ticker)}</b></td><td>${esc(e.name)}</td><td>${esc(e.sector)}</td>
      <td>${open[e.ticker] ? `<span class="badge firing">${open[e.ticker]}</span>` : ""}</td>`;
    return row;
  }));
}

const LABELS = ["negative", "neutral", "positive"];

function articleItem(a) {
  const item = document.createElement("li");
  item.dataset.id = a.id;
  const score = a.score == null ? "" : ` · score ${a.score >= 0 ? "+" : ""}${a.score.toFixed(2)}`;
  // An analyst's label, where the model read the article wrong: learnt by the next training.
  const options = [`<option value="">${a.analyst_label ? "withdraw" : "relabel…"}</option>`,
    ...LABELS.map((l) => `<option value="${l}"${l === a.analyst_label ? " selected" : ""}>${l}</option>`)];
  const fixed = a.analyst_label
    ? `<span class="fixed">analyst: <b class="${a.analyst_label}">${esc(a.analyst_label)}</b></span>` : "";
  item.innerHTML = `<span class="label ${a.label}">${esc(a.label)}</span>
    <div class="body"><div class="headline">${a.url ? `<a href="${esc(a.url)}" target="_blank" rel="noopener">${esc(a.title)}</a>` : esc(a.title)}</div>
    <div class="source">${esc(a.source)} · ${time(a.published_at)}${score} ${fixed}</div></div>
    <select class="relabel" title="The right label, if the model's is wrong">${options.join("")}</select>`;
  return item;
}

function renderArticles(articles, title) {
  $("articles-title").textContent = title;
  $("articles").replaceChildren(...articles.map(articleItem));
}

async function relabel(select) {
  const item = select.closest("li[data-id]");
  const path = `/articles/${item.dataset.id}/label`;
  let error = null;
  try {
    if (select.value) {
      const body = JSON.stringify({label: select.value});
      await api(path, {method: "PUT", body, headers: {"Content-Type": "application/json"}});
    } else {
      const r = await fetch(`/v1/sentiment${path}`, {method: "DELETE", credentials: "same-origin"});
      if (!r.ok && r.status !== 404) throw new Error(`${r.status} ${await r.text()}`);
    }
  } catch (failed) {
    error = failed;
  }
  // Show what the server holds now, saved or not.
  const shown = articleItem(await api(`/articles/${item.dataset.id}`));
  if (error) {
    shown.classList.add("unsaved");
    shown.querySelector("select.relabel").title = `not saved: ${error.message}`;
  }
  item.replaceWith(shown);
}

async function drawChart(ticker) {
  state.ticker = ticker;
  renderWatchlist();
  const bucket = $("bucket").value;
  const series = await api(`/entities/${encodeURIComponent(ticker)}/series?bucket_s=${bucket}`);
  const entity = state.entities.find((e) => e.ticker === ticker);
  $("chart-title").textContent = `${ticker} · ${entity ? entity.name : ""}`;
  const x = series.buckets.map((b) => b.start);
  const fired = [...state.alerts.values()].filter((a) => a.ticker === ticker && a.fired_at);
  Plotly.react("chart", [
    {type: "bar", name: "articles", x, y: series.buckets.map((b) => b.volume), yaxis: "y2",
     marker: {color: "rgba(47,111,237,0.25)"}, hovertemplate: "%{y} articles<extra></extra>"},
    {type: "scatter", mode: "lines+markers", name: "mean score", x,
     y: series.buckets.map((b) => b.mean_score), connectgaps: true,
     line: {color: "#1c2430", width: 2}, marker: {size: 4}},
    {type: "scatter", mode: "markers", name: "alerts", x: fired.map((a) => a.fired_at),
     y: fired.map(() => -0.95), text: fired.map((a) => a.rule),
     marker: {symbol: "triangle-up", size: 13, color: "#d92d20"},
     hovertemplate: "alert: %{text}<br>%{x}<extra></extra>"},
  ], {
    margin: {l: 48, r: 48, t: 10, b: 36}, showlegend: true,
    legend: {orientation: "h", y: 1.12, x: 0}, hovermode: "x unified",
    yaxis: {title: "sentiment", range: [-1, 1], zeroline: true, zerolinecolor: "#d0d5dd"},
    yaxis2: {title: "articles", overlaying: "y", side: "right", showgrid: false, rangemode: "tozero"},
    shapes: fired.map((a) => ({type: "line", xref: "x", yref: "paper", x0: a.fired_at, x1: a.fired_at,
      y0: 0, y1: 1, line: {color: "#d92d20", width: 1, dash: "dot"}})),
    paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
  }, {displayModeBar: false, responsive: true});
  if (!state.alertId) {
    const articles = await api(`/articles?ticker=${encodeURIComponent(ticker)}&limit=50`);
    renderArticles(articles, `Latest articles · ${ticker}`);
  }
}

async function selectAlert(id) {
  state.alertId = id;
  renderAlerts();
  const alert = await api(`/alerts/${id}`);
  renderArticles(alert.articles, `Behind the alert · ${alert.ticker} · ${alert.rule}`);
  await drawChart(alert.ticker);
}

async function acknowledge(id) {
  const alert = await api(`/alerts/${id}/ack`, {method: "POST"});
  state.alerts.set(alert.id, alert);
  renderAlerts();
}

async function catchUp() {
  const alerts = await api("/alerts?limit=200");
  for (const alert of alerts) state.alerts.set(alert.id, { ...state.alerts.get(alert.id), ...alert });
  renderAlerts();
  if (state.ticker) drawChart(state.ticker);
}

function listen() {
  const live = $("live");
  const source = new EventSource("/v1/sentiment/alerts/stream");
  // On every (re)connection, read the list again: what changed while the page was not
  // listening (a restart, a proxy's timeout, before the first connection) is not replayed.
  source.onopen = () => {
    live.textContent = "live"; live.className = "live on";
    catchUp().catch(() => {});  // a failed read waits for the next event or reconnection
  };
  source.onerror = () => { live.textContent = "reconnecting…"; live.className = "live off"; };
  source.addEventListener("alert", (event) => {
    const alert = JSON.parse(event.data);
    alert._fresh = true;
    state.alerts.set(alert.id, alert);
    renderAlerts();
    if (alert.ticker === state.ticker) drawChart(state.ticker);
  });
}

async function start() {
  $("alerts").addEventListener("click", (event) => {
    const ack = event.target.closest("button.ack");
    if (ack) { event.stopPropagation(); acknowledge(ack.dataset.id); return; }
    const item = event.target.closest("li.alert");
    if (item) selectAlert(item.dataset.id);
  });
  $("watchlist").addEventListener("click", (event) => {
    const row = event.target.closest("tr[data-ticker]");
    if (row) { state.alertId = null; renderAlerts(); drawChart(row.dataset.ticker); }
  });
  $("articles").addEventListener("change", (event) => {
    if (event.target.matches("select.relabel")) relabel(event.target);
  });
  $("show-resolved").addEventListener("change", renderAlerts);
  $("bucket").addEventListener("change", () => state.ticker && drawChart(state.ticker));
  const [entities, alerts] = await Promise.all([api("/entities"), api("/alerts?limit=200")]);
  state.entities = entities;
  for (const alert of alerts) state.alerts.set(alert.id, alert);
  renderAlerts();
  listen();
  const first = alerts.find((a) => a.state !== "resolved") || alerts[0];
  if (first) await selectAlert(first.id);
  else if (entities.length) await drawChart(entities[0].ticker);
}

start();
