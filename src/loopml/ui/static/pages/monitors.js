// Monitors and alerts: each monitor's runs over time (per-feature drift statistic vs its threshold),
// the latest report embedded, quality (measured from labels, estimated from confidences) over
// time, open/resolved alerts and what each alert triggered.
import { startedLink } from './_ops.js';
import { api, h, mount, registerPage, lineChart, table, badge, fmt, card, kv, link, route, filters, errorBox, actionButton, refresh } from '../app.js';

/** trigger name → its target {kind, name}: an alert's notification names the trigger only. */
async function triggerTargets() {
  try { return Object.fromEntries((await api('/triggers')).map((t) => [t.name, t.target])); } catch { return {}; }
}

const secs = (iso) => (iso ? new Date(iso).getTime() / 1000 : null);

/** The statistic a feature is judged on (its first threshold) and that threshold. */
export function judged(feature) {
  const [key, limit] = Object.entries(feature.thresholds || {})[0] || [];
  if (key === undefined) return null;
  return { key, limit, value: (feature.statistics || {})[key] };
}

function alertTarget(n, targets) {
  if (n.trigger && n.trigger !== '*') {
    return h('span', null, 'trigger ', link(route('triggers', n.trigger), n.trigger), n.started_id ? [' started ', startedLink(targets[n.trigger], n.started_id)] : '', n.ok ? '' : ` (failed: ${n.error || '?'})`);
  }
  if (n.url) return `webhook ${n.url}: ${n.ok ? 'delivered' : `failed (${n.error || n.status || '?'})`}`;
  return n.error || fmt.json(n);
}

export function alertsTable(alerts, targets, { withMonitor = true } = {}) {
  return table(alerts, [
    { label: 'Alert', render: (a) => h('span', { title: a.id }, a.key) },
    withMonitor ? { label: 'Monitor', render: (a) => link(route('monitors', a.monitor), a.monitor) } : null,
    { label: 'Status', render: (a) => h('span', null, badge(a.status), a.acked_at ? ' acked' : '') },
    { label: 'Severity', key: 'severity' },
    { label: 'Message', key: 'message' },
    { label: 'Runs', key: 'count' },
    { label: 'First / last', render: (a) => `${fmt.time(a.first_at)} / ${fmt.ago(a.last_at)}` },
    { label: 'Resolved', render: (a) => (a.resolved_at ? `${fmt.time(a.resolved_at)}${a.resolved_by ? ` by ${a.resolved_by}` : ''}` : '–') },
    { label: 'Triggered', render: (a) => ((a.notifications || []).length ? h('ul', { class: 'plain' }, a.notifications.map((n) => h('li', null, alertTarget(n, targets)))) : 'nothing') },
    { label: '', render: (a) => (a.status === 'open' ? actionButton('Resolve', async () => { await api(`/alerts/${a.id}/resolve`, { method: 'POST' }); refresh(); }, { need: ['monitors:write'] }) : '') },
  ].filter(Boolean), { empty: 'no alerts' });
}

async function listPage(container, params) {
  const status = params.query.alerts || 'open';
  const [monitors, alerts] = await Promise.all([
    api('/monitors'),
    api('/alerts', { query: { open: status === 'open' ? 'true' : status === 'resolved' ? 'false' : undefined, limit: 200 } }),
  ]);
  const targets = await triggerTargets();
  const q = (params.query.name || '').toLowerCase();
  const rows = monitors.filter((m) => !q || m.name.toLowerCase().includes(q) || m.endpoint.toLowerCase().includes(q));
  mount(container, h('h1', null, 'Monitors and alerts'),
    filters(params, [{ name: 'name', placeholder: 'monitor or endpoint' }, { name: 'alerts', label: 'alerts', options: ['open', 'resolved', 'all'] }]),
    card('Monitors', table(rows, [
      { label: 'Monitor', render: (m) => link(route('monitors', m.name), m.name) },
      { label: 'Endpoint', render: (m) => link(route('endpoints', m.endpoint), `${m.endpoint}${m.variant ? `/${m.variant}` : ''}`) },
      { label: 'Status', render: (m) => badge(m.status) },
      { label: 'Schedule', render: (m) => m.schedule ? `${m.schedule} (${m.tz})` : 'on demand' },
      { label: 'Last run', render: (m) => (m.last_run ? h('span', null, badge(m.last_run.status), ` ${fmt.ago(m.last_run.ended_at || m.last_run.created_at)}, ${m.last_run.rows ?? 0} rows, ${(m.last_run.violations || []).length} violations`) : 'never') },
      { label: 'Open alerts', key: 'open_alerts' },
    ], { empty: monitors.length ? 'no monitor matches' : 'no monitors yet: loopml monitors create NAME --endpoint ENDPOINT' })),
    card(`Alerts (${status})`, alertsTable(alerts, targets)));
}

function driftCharts(runs) {
  const byFeature = new Map();
  for (const run of runs) {
    const x = secs(run.ended_at || run.created_at);
    for (const f of (run.summary && run.summary.features) || []) {
      const j = judged(f);
      if (!j || j.value === null || j.value === undefined) continue;
      const e = byFeature.get(f.name) || { name: f.name, key: j.key, stat: [], limit: [], worst: 0 };
      e.stat.push([x, j.value]);
      e.limit.push([x, j.limit]);
      e.worst = Math.max(e.worst, j.limit ? j.value / j.limit : 0);
      byFeature.set(f.name, e);
    }
  }
  const features = [...byFeature.values()].sort((a, b) => b.worst - a.worst);
  const box = h('div', { class: 'grid3 drift-charts' });
  const shown = features.slice(0, 9);
  for (const f of shown) {
    const slot = h('div', { class: 'chart-slot', 'data-feature': f.name });
    box.append(slot);
    lineChart(slot, [{ label: f.key, points: f.stat }, { label: 'threshold', points: f.limit, color: '#dc2626', dash: [6, 4] }],
      { title: `${f.name}: ${f.key}`, time: true, height: 150 });
  }
  return card('Drift per feature over runs (statistic vs threshold)',
    features.length ? box : h('p', { class: 'muted' }, 'no drift statistics yet (a run needs captured traffic and a baseline)'),
    features.length > shown.length ? h('p', { class: 'muted' }, `the ${shown.length} features closest to their thresholds of ${features.length}`) : null);
}

function qualityChart(runs) {
  const measured = [], estimated = [], floor = [];
  for (const run of runs) {
    const x = secs(run.ended_at || run.created_at);
    const s = run.summary || {};
    if (s.quality && s.quality.accuracy !== null && s.quality.accuracy !== undefined) measured.push([x, s.quality.accuracy]);
    if (s.estimate && s.estimate.accuracy !== undefined) estimated.push([x, s.estimate.accuracy]);
    if (s.estimate && s.estimate.floor !== undefined) floor.push([x, s.estimate.floor]);
  }
  const slot = h('div', { class: 'chart-slot quality-chart' });
  const series = [
    measured.length ? { label: 'accuracy (from labels)', points: measured, color: '#2563eb' } : null,
    estimated.length ? { label: 'estimated accuracy (from confidences)', points: estimated, color: '#7c3aed', dash: [4, 4] } : null,
    floor.length ? { label: 'floor', points: floor, color: '#dc2626', dash: [6, 4] } : null,
  ].filter(Boolean);
  if (series.length) lineChart(slot, series, { time: true, height: 180, yLabel: 'accuracy' });
  return card('Quality over runs', series.length ? slot : h('p', { class: 'muted' }, 'no quality yet: upload labels (loopml monitors labels NAME FILE) or compute a baseline with calibration'));
}

async function reportCard(name, run) {
  if (!run || !run.report_key) return card('Latest report', h('p', { class: 'muted' }, 'no report yet'));
  const box = h('div', { class: 'report' });
  try {
    const html = await api(`/monitors/${encodeURIComponent(name)}/runs/${run.id}/report.html`);
    // srcdoc + sandbox without allow-same-origin: the report runs in an opaque origin (no token, no API)
    box.append(h('iframe', { srcdoc: html, sandbox: 'allow-scripts', title: `report of run ${run.id}`, class: 'report-frame' }));
  } catch (err) { box.append(errorBox(err)); }
  return card(`Latest report (run ${run.id}, ${fmt.time(run.ended_at)})`, box);
}

async function detailPage(container, name) {
  const [monitor, runsNewest, alerts] = await Promise.all([
    api(`/monitors/${encodeURIComponent(name)}`),
    api(`/monitors/${encodeURIComponent(name)}/runs`, { query: { limit: 200 } }),
    api('/alerts', { query: { monitor: name, limit: 200 } }),
  ]);
  const targets = await triggerTargets();
  const runs = [...runsNewest].reverse();
  const lastDone = runsNewest.find((r) => r.report_key);
  const latest = runsNewest[0];
  const features = (lastDone && lastDone.summary && lastDone.summary.features) || [];
  mount(container, 
    h('p', { class: 'crumbs' }, link('#/monitors', 'Monitors'), ' / ', name),
    h('h1', null, name, ' ', badge(monitor.status)),
    h('div', { class: 'cols' },
      card('Monitor', kv({
        Endpoint: link(route('endpoints', monitor.endpoint), `${monitor.endpoint}${monitor.variant ? ` / ${monitor.variant}` : ''}`),
        Schedule: monitor.schedule ? `${monitor.schedule} (${monitor.tz})` : 'on demand', 'Next run': fmt.time(monitor.next_run_at),
        Window: monitor.window || `${monitor.window_s} s`, 'Min samples': monitor.min_samples,
        Thresholds: Object.keys(monitor.thresholds || {}).length ? Object.entries(monitor.thresholds).map(([k, v]) => `${k}=${v}`).join(', ') : 'defaults',
        Labels: monitor.labels, Runs: runsNewest.length, 'Open alerts': alerts.filter((a) => a.status === 'open').length,
      }), h('p', null,
        actionButton('Run now', async () => { const r = await api(`/monitors/${encodeURIComponent(name)}/runs`, { method: 'POST' }); return `queued run ${r.run.id}`; }, { need: ['monitors:write', name] }), ' ',
        monitor.status === 'active'
          ? actionButton('Pause', async () => { await api(`/monitors/${encodeURIComponent(name)}/pause`, { method: 'POST' }); refresh(); }, { need: ['monitors:write', name] })
          : actionButton('Resume', async () => { await api(`/monitors/${encodeURIComponent(name)}/resume`, { method: 'POST' }); refresh(); }, { need: ['monitors:write', name] }))),
      card('Latest run', latest ? kv({
        Run: latest.id, Status: badge(latest.status), Window: `${fmt.time(latest.since)} → ${fmt.time(latest.until)}`,
        Rows: latest.rows, Violations: (latest.violations || []).length, Error: latest.error,
        Model: latest.summary && latest.summary.model ? `${latest.summary.model.name}:${latest.summary.model.version}` : null,
      }) : h('p', { class: 'muted' }, 'never ran'))),
    driftCharts(runs),
    card('Features of the latest report', table(features, [
      { label: 'Feature', key: 'name' }, { label: 'Type', key: 'type' },
      { label: 'Statistic', render: (f) => (judged(f) ? judged(f).key : '–') },
      { label: 'Value', render: (f) => (judged(f) ? fmt.num(judged(f).value) : '–') },
      { label: 'Threshold', render: (f) => (judged(f) ? fmt.num(judged(f).limit) : '–') },
      { label: 'Verdict', render: (f) => badge(f.violated ? 'drift' : 'ok') },
      { label: 'Other checks', render: (f) => Object.entries(f.thresholds || {}).slice(1).map(([k, v]) => `${k} ${fmt.num((f.statistics || {})[k])} (limit ${fmt.num(v)})`).join('; ') || '–' },
      { label: 'Rows (baseline / window)', render: (f) => `${f.n_baseline ?? '–'} / ${f.n_current ?? '–'}` },
    ], { empty: 'no features judged yet' })),
    qualityChart(runs),
    card('Runs', table(runsNewest.slice(0, 50), [
      { label: 'Run', key: 'id' }, { label: 'Status', render: (r) => badge(r.status) }, { label: 'Source', key: 'source' },
      { label: 'Ended', render: (r) => fmt.time(r.ended_at) }, { label: 'Rows', key: 'rows' },
      { label: 'Violations', render: (r) => (r.violations || []).map((v) => v.key).join(', ') || 'none' },
      { label: 'Job', render: (r) => (r.job_id ? link(route('jobs', r.job_id), r.job_id) : '–') },
    ])),
    card('Alerts', alertsTable(alerts, targets, { withMonitor: false })),
    await reportCard(name, lastDone));
}

registerPage('monitors', {
  title: 'Monitors',
  render(container, params) {
    return params.path.length ? detailPage(container, params.path[0]) : listPage(container, params);
  },
});
