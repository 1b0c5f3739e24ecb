// Jobs: the list (filters, server-side paging, pick jobs to compare), one job live (curves and log
// tail over Server-Sent Events), and 2+ jobs' curves on one chart.
import {
  actionButton, api, badge, card, color, every, filters, onLeave, fmt, h, heatmap, kv, lineChart, link, mount, pager,
  registerPage, route, setQuery, sse, table,
} from '../app.js';

const PAGE = 50;
const ENDED = new Set(['succeeded', 'failed', 'cancelled']);

registerPage('jobs', {
  title: 'Jobs',
  async render(el, params) {
    const [id, more] = params.path;
    if (!id) return renderList(el, params);
    if (id === 'compare') return renderCompare(el, (more || '').split(',').filter(Boolean));
    return renderJob(el, id);
  },
});

// ------------------------------------------------------------------ list

function target(j) {
  const s = j.spec || {};
  if (j.kind === 'train') return [s.dataset ? link(route('datasets', s.dataset_name || s.dataset.split(':')[0], s.dataset_version), s.dataset) : null, s.register_as ? ` → ${s.register_as}` : ''];
  if (j.kind === 'predict') return `${s.model || ''} on ${s.input || ''}`;
  if (j.kind === 'evaluate') return Object.values(s.models || {}).join(' vs ');
  return s.dataset || s.model || s.endpoint || '';
}

export function progressText(j) {
  const p = j.progress;
  if (!p || p.epoch === undefined) return '';
  let t = `epoch ${p.epoch}${p.epochs ? `/${p.epochs}` : ''}`;
  if (j.status === 'running' && p.batches) t += ` · batch ${p.batch}/${p.batches}`;
  return t;
}

async function renderList(el, params) {
  const offset = Number(params.query.offset || 0);
  const jobs = await api('/jobs', { query: { status: params.query.status, kind: params.query.kind, limit: PAGE, offset } });
  const picked = new Set();
  const compare = h('button', { type: 'button', class: 'primary', disabled: true, onclick: () => { location.hash = route('jobs', 'compare', [...picked].join(',')); } }, 'Compare curves');
  const pick = (j) => h('input', { type: 'checkbox', 'aria-label': `compare ${j.id}`, disabled: j.kind !== 'train', dataset: { job: j.id }, onchange: (e) => {
    if (e.target.checked) picked.add(j.id); else picked.delete(j.id);
    compare.disabled = picked.size < 2;
    compare.textContent = picked.size >= 2 ? `Compare ${picked.size} jobs' curves` : 'Compare curves';
  } });
  el.append(
    h('h1', null, 'Jobs'),
    filters(params, [
      { name: 'status', label: 'status', options: ['queued', 'running', 'succeeded', 'failed', 'cancelled'] },
      { name: 'kind', label: 'kind', options: ['train', 'predict', 'evaluate', 'baseline', 'monitor', 'invoke', 'tune'] },
    ]),
    card(null,
      h('div', { class: 'toolbar' }, compare, h('span', { class: 'muted' }, 'tick two or more training jobs')),
      table(jobs, [
        { label: '', render: pick },
        { label: 'job', render: (j) => link(route('jobs', j.id), j.id) },
        { label: 'kind', key: 'kind' },
        { label: 'status', render: (j) => badge(j.status) },
        { label: 'what', render: (j) => h('span', null, target(j)) },
        { label: 'progress', render: progressText },
        { label: 'node', render: (j) => j.worker?.host },
        { label: 'created', render: (j) => fmt.ago(j.created_at) },
        { label: 'took', render: (j) => (j.started_at ? fmt.duration(j.started_at, j.ended_at) : '') },
      ], { empty: 'no jobs match' }),
      pager({ offset, limit: PAGE, count: jobs.length }, (o) => setQuery({ ...params.query, offset: o }))),
  );
}

// ------------------------------------------------------------------ one job

const CURVES = [
  { title: 'Loss', keys: ['loss', 'val_loss'] },
  { title: 'Accuracy', keys: ['accuracy', 'val_accuracy'] },
];

function curveSeries(metrics, keys, prefix = '') {
  return keys.filter((k) => metrics.some((m) => typeof m[k] === 'number'))
    .map((k, i) => ({ label: prefix + k, points: metrics.filter((m) => typeof m[k] === 'number').map((m) => [m.epoch, m[k]]), dash: k.startsWith('val_') ? [6, 4] : undefined, color: prefix ? undefined : color(i) }));
}

async function renderJob(el, id) {
  const job = await api(`/jobs/${encodeURIComponent(id)}`);
  const metrics = [...job.metrics];
  const state = { job, logAfter: 0 };

  const head = h('div');
  const progress = h('div', { class: 'progress-line', 'aria-live': 'polite' });
  const charts = h('div', { class: 'cols' });
  const log = h('pre', { class: 'log', 'aria-label': 'log tail' });
  const details = h('div', { class: 'cards' });

  const drawHead = () => {
    const j = state.job;
    const actions = [];
    if (!ENDED.has(j.status)) {
      actions.push(actionButton(j.cancel_requested ? 'Cancelling…' : 'Cancel', async () => {
        state.job = await api(`/jobs/${encodeURIComponent(id)}/cancel`, { method: 'POST' });
        drawHead();
        return 'cancel requested';
      }, { class: 'danger', disabled: !!j.cancel_requested, need: ['jobs:write'] }));
    }
    if (j.kind === 'train' && (j.status === 'failed' || j.status === 'cancelled')) {
      actions.push(actionButton('Resume', async () => {
        const next = await api('/jobs/train', { method: 'POST', body: { resume: id } });
        location.hash = route('jobs', next.id);
      }, { class: 'primary', title: 'a new job continuing from this one\'s checkpoint', need: ['jobs:write'] }));
    }
    mount(head,
      h('h1', null, link(route('jobs'), 'Jobs'), ' / ', h('span', { class: 'mono' }, id), ' ', badge(j.status)),
      h('div', { class: 'toolbar' }, actions, j.reason ? h('span', { class: 'muted' }, j.reason) : null));
    mount(progress, progressLine(j));
  };

  const charted = [];
  for (const c of CURVES) {
    const box = h('div', { class: 'card', dataset: { chart: c.title.toLowerCase() } });
    charts.append(box);
    charted.push({ c, box, chart: null });
  }
  const drawCharts = () => {
    for (const item of charted) {
      const series = curveSeries(metrics, item.c.keys);
      if (!series.length) { if (!item.chart) mount(item.box, h('h2', null, item.c.title), h('p', { class: 'muted' }, 'no epoch finished yet')); continue; }
      if (!item.chart) { mount(item.box, h('h2', null, item.c.title)); item.chart = lineChart(item.box, series, { xLabel: 'epoch', yLabel: item.c.title.toLowerCase(), integerX: true }); }
      else item.chart.update(series);
      item.box.dataset.points = String(metrics.length);
    }
  };

  const appendLog = (lines) => {
    const follow = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
    for (const l of lines) log.append(`${l.text}\n`);
    if (follow) log.scrollTop = log.scrollHeight;
  };

  el.append(head, progress, charts, card('Log', log), details);
  drawHead();
  drawCharts();
  renderDetails(details, job);
  el.dataset.epochs = String(metrics.length);

  // live: the stream sends the job, every epoch and every log line (backlog first), then `end`
  const follow = () => sse(`/jobs/${encodeURIComponent(id)}/events/stream?after_log=${state.logAfter}&after_epoch=${metrics.at(-1)?.epoch ?? 0}`, ({ event, data }) => {
    if (event === 'metrics') {
      const at = metrics.findIndex((m) => m.epoch === data.epoch);
      if (at >= 0) metrics[at] = data; else metrics.push(data);
      drawCharts();
      el.dataset.epochs = String(metrics.length);
    } else if (event === 'log') {
      state.logAfter = data.id;
      appendLog([data]);
    } else if (event === 'job' || event === 'end') {
      const was = state.job.status;
      state.job = { ...state.job, ...data };
      drawHead();
      if (event === 'end') el.dataset.stream = 'ended';
      if (event === 'end' && was !== data.status) api(`/jobs/${encodeURIComponent(id)}`).then((j) => renderDetails(details, j)).catch(() => {});
    }
    el.dataset.status = state.job.status;
  }, { onEnd: (err) => {
    // the server ends a stream every few seconds while the job runs: pick up where it stopped
    if (left || ENDED.has(state.job.status)) return;
    if (err) setTimeout(() => { if (!left) follow(); }, 2000); else follow();
  } });
  let left = false;
  onLeave(() => { left = true; });
  follow();
}

function progressLine(j) {
  const p = j.progress || {};
  if (p.epoch === undefined) return j.status === 'queued' ? h('p', { class: 'muted' }, 'waiting for a node…') : null;
  const parts = [progressText(j)];
  for (const k of ['loss', 'accuracy', 'val_loss', 'val_accuracy']) if (typeof p[k] === 'number') parts.push(`${k} ${fmt.num(p[k], 4)}`);
  if (p.elapsed_s) parts.push(`${fmt.num(p.elapsed_s, 3)} s`);
  const frac = p.epochs ? Math.min(1, ((p.epoch - 1) + (p.batches ? p.batch / p.batches : 1)) / p.epochs) : null;
  return h('div', { class: 'card' }, h('div', null, parts.join(' · ')),
    frac !== null ? h('div', { class: 'bar-track', title: fmt.pct(frac) }, h('span', { class: 'bar-fill', style: { width: `${frac * 100}%` } })) : null);
}

function renderDetails(box, job) {
  const s = job.spec || {};
  const r = job.result || {};
  const ev = r.evaluation || {};
  const model = r.model;
  const cm = h('div');
  if (ev.confusion_matrix) heatmap(cm, ev.confusion_matrix, ev.labels);
  mount(box,
    card('Job', kv({
      Kind: job.kind,
      Dataset: s.dataset ? link(route('datasets', s.dataset_name || s.dataset.split(':')[0], s.dataset_version), s.dataset) : null,
      Template: s.template || s.model,
      Model: model ? link(route('models', model.name, model.version), model.ref) : (r.model_ref || s.register_as || s.model),
      ...(s.resume_from ? { 'Resumed from': link(route('jobs', s.resume_from), s.resume_from) } : {}),
      Node: job.worker?.host ?? null,
      Created: fmt.time(job.created_at), Started: fmt.time(job.started_at), Ended: fmt.time(job.ended_at),
      Took: job.ended_at && job.started_at ? fmt.duration(job.started_at, job.ended_at) : (job.started_at ? 'still running' : null),
      Resources: s.resources ? Object.entries(s.resources).map(([k, v]) => `${k} ${v}`).join(', ') : null,
    })),
    s.hparams ? card('Hyperparameters', table(Object.entries(s.hparams).map(([k, v]) => ({ k, v })), [{ label: 'name', key: 'k' }, { label: 'value', render: (x) => String(x.v) }])) : null,
    r.metrics ? card('Result metrics', kv(Object.fromEntries(Object.entries(r.metrics).map(([k, v]) => [k, typeof v === 'number' ? fmt.num(v, 4) : v])))) : null,
    ev.confusion_matrix ? card('Confusion matrix (test split)', cm) : null,
    ev.per_class ? card('Per-class metrics', perClassTable(ev.per_class)) : null,
    job.kind !== 'train' && Object.keys(r).length ? card('Result', h('pre', null, fmt.json(r))) : null,
    card('Events', table(job.events || [], [{ label: 'status', render: (e) => badge(e.status) }, { label: 'at', render: (e) => fmt.time(e.at) }, { label: 'message', key: 'message' }])),
  );
}

export function perClassTable(perClass) {
  return table(Object.entries(perClass).map(([name, m]) => ({ name, ...m })), [
    { label: 'class', key: 'name' },
    { label: 'precision', class: 'num', render: (m) => fmt.num(m.precision, 4) },
    { label: 'recall', class: 'num', render: (m) => fmt.num(m.recall, 4) },
    { label: 'F1', class: 'num', render: (m) => fmt.num(m.f1, 4) },
    { label: 'support', class: 'num', key: 'support' },
  ]);
}

// ------------------------------------------------------------------ compare

async function renderCompare(el, ids) {
  if (ids.length < 2) throw new Error('pick at least two jobs to compare (#/jobs/compare/ID1,ID2)');
  const jobs = await Promise.all(ids.map((id) => api(`/jobs/${encodeURIComponent(id)}`)));
  el.append(h('h1', null, link(route('jobs'), 'Jobs'), ` / compare ${jobs.length}`));
  const charts = h('div', { class: 'cols' });
  el.append(charts);
  const drawn = [];
  for (const c of CURVES) {
    const box = h('div', { class: 'card', dataset: { chart: c.title.toLowerCase() } }, h('h2', null, c.title));
    charts.append(box);
    const build = () => jobs.flatMap((j, i) => curveSeries(j.metrics, c.keys, `${j.id} `).map((s) => ({ ...s, color: color(i) })));
    drawn.push({ chart: lineChart(box, build(), { xLabel: 'epoch', yLabel: c.title.toLowerCase(), integerX: true }), build });
  }
  // running jobs keep adding epochs: refresh their curves
  if (jobs.some((j) => !ENDED.has(j.status))) {
    every(3000, async () => {
      for (let i = 0; i < jobs.length; i++) if (!ENDED.has(jobs[i].status)) jobs[i] = await api(`/jobs/${encodeURIComponent(jobs[i].id)}`);
      for (const d of drawn) d.chart.update(d.build());
    });
  }
  const keys = [...new Set(jobs.flatMap((j) => Object.keys(j.spec?.hparams || {})))];
  const metricKeys = ['test_accuracy', 'test_macro_f1', 'test_loss', 'val_accuracy', 'val_loss', 'epochs', 'best_epoch'];
  const cols = [{ label: '', key: 'k' }, ...jobs.map((j, i) => ({ label: h('span', { style: { color: color(i) } }, j.id), render: (row) => row.v[i] }))];
  const differs = (vals) => new Set(vals.map(String)).size > 1;
  el.append(h('div', { class: 'cols' },
    card('Final metrics', table(metricKeys.map((k) => ({ k, v: jobs.map((j) => fmt.num(j.result?.metrics?.[k], 4)) })), cols)),
    card('Hyperparameters', table(keys.map((k) => ({ k, v: jobs.map((j) => String(j.spec?.hparams?.[k] ?? '–')) })), cols,
      { rowAttrs: (row) => (differs(row.v) ? { class: 'selected', title: 'differs' } : null) }))),
  card('Jobs', table(jobs, [
    { label: 'job', render: (j) => link(route('jobs', j.id), j.id) }, { label: 'status', render: (j) => badge(j.status) },
    { label: 'dataset', render: (j) => j.spec?.dataset }, { label: 'model', render: (j) => j.result?.model_ref || j.spec?.register_as },
  ])));
}
