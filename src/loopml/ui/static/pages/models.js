// Models: the registry — models, a model's versions and alias history, one version's lineage
// (dataset version → job → version → endpoints), two versions side by side, downloads.
import {
  api, apiUrl, badge, card, color, errorBox, filters, fmt, h, heatmap, kv, lineChart, link, mount, pager,
  registerPage, route, setQuery, table, token,
} from '../app.js';
import { perClassTable } from './jobs.js';

const PAGE = 50;
const enc = encodeURIComponent;

registerPage('models', {
  title: 'Models',
  async render(el, params) {
    const [name, second, a, b] = params.path;
    if (!name) return renderList(el, params);
    if (second === 'compare') return renderCompare(el, name, a, b);
    if (second) return renderVersion(el, name, second);
    return renderModel(el, params, name);
  },
});

export const isImported = (v) => v?.lineage?.source === 'imported';
const accuracy = (m) => m?.test_accuracy ?? m?.accuracy;

// ------------------------------------------------------------------ list

async function renderList(el, params) {
  // filtered and paged by the server: the page costs the same with 3 models or 3000
  const offset = Number(params.query.offset || 0);
  const rows = await api('/models', { query: { name: params.query.name, limit: PAGE, offset } });
  const filtered = params.query.name || offset;
  el.append(
    h('h1', null, 'Models'),
    filters(params, [{ name: 'name', label: 'name', placeholder: 'contains…' }]),
    card(null, table(rows, [
      { label: 'model', render: (m) => link(route('models', m.name), m.name) },
      { label: 'versions', key: 'versions', class: 'num' },
      { label: 'latest', render: (m) => (m.latest_version ? link(route('models', m.name, m.latest_version), `v${m.latest_version}`) : '–') },
      { label: 'aliases', render: (m) => aliasTags(m.name, m.aliases) },
      { label: 'test accuracy', class: 'num', render: (m) => fmt.num(accuracy(m.latest_metrics), 4) },
      { label: 'created', render: (m) => fmt.ago(m.created_at) },
    ], { empty: filtered ? 'no model matches' : 'no models yet: train one with `loopml train digits --register-as digits-cnn`' }),
    pager({ offset, limit: PAGE, count: rows.length, labels: ['‹ previous', 'next ›'] }, (o) => setQuery({ ...params.query, offset: o }))),
  );
}

function aliasTags(name, aliases) {
  return h('span', null, Object.entries(aliases || {}).map(([alias, v]) => h('a', { class: 'tag', href: route('models', name, v) }, `${alias} → v${v}`)));
}

function servingEndpoints(endpoints, name, version) {
  return endpoints.filter((e) => [...(e.resolved?.variants || []), e.resolved?.shadow].some((v) => v && v.model === name && (version === undefined || v.version === version)));
}

// ------------------------------------------------------------------ one model

async function renderModel(el, params, name) {
  const offset = Number(params.query.offset || 0);
  const [model, history, endpoints] = await Promise.all([
    api(`/models/${enc(name)}`, { query: { limit: PAGE, offset, newest_first: true } }),
    api(`/models/${enc(name)}/alias-history`),
    api('/endpoints'),
  ]);
  const picked = new Set();
  const compare = h('button', { type: 'button', class: 'primary', disabled: true, onclick: () => {
    const [x, y] = [...picked].sort((p, q) => p - q);
    location.hash = route('models', name, 'compare', x, y);
  } }, 'Compare two versions');
  const pick = (v) => h('input', { type: 'checkbox', 'aria-label': `compare v${v.version}`, dataset: { version: v.version }, onchange: (e) => {
    if (e.target.checked) picked.add(v.version); else picked.delete(v.version);
    compare.disabled = picked.size !== 2;
  } });
  const serving = servingEndpoints(endpoints, name);
  // alias moves made by a workflow name its execution: find the workflow to link it
  const executions = new Map();
  await Promise.all([...new Set(history.map((e) => e.actor).filter((a) => a?.startsWith('workflow:')))].map(async (actor) => {
    const id = actor.slice('workflow:'.length);
    try { executions.set(id, await api(`/executions/${enc(id)}`)); } catch (err) { if (err.status !== 404) throw err; }
  }));
  // how the versions on this page compare: test metrics by version number
  const scored = model.versions.filter((v) => typeof v.metrics?.test_accuracy === 'number');
  const trend = scored.length >= 2 ? card('Test metrics by version') : null;
  el.append(
    h('h1', null, link(route('models'), 'Models'), ' / ', name),
    h('div', { class: 'toolbar' }, h('span', { class: 'muted' }, `${model.total ?? model.versions.length} versions`), aliasTags(name, model.aliases)),
    card('Versions',
      h('div', { class: 'toolbar' }, compare, h('span', { class: 'muted' }, 'tick two versions')),
      table(model.versions, [
        { label: '', render: pick },
        { label: 'version', render: (v) => link(route('models', name, v.version), `v${v.version}`) },
        { label: 'aliases', render: (v) => h('span', null, v.aliases.map((a) => h('span', { class: 'tag' }, a))) },
        { label: 'origin', render: (v) => (isImported(v) ? badge('imported') : (v.job_id ? link(route('jobs', v.job_id), v.job_id) : '–')) },
        { label: 'dataset', render: (v) => datasetLink(v.dataset) },
        { label: 'template', key: 'template' },
        { label: 'test accuracy', class: 'num', render: (v) => fmt.num(v.metrics?.test_accuracy, 4) },
        { label: 'macro F1', class: 'num', render: (v) => fmt.num(v.metrics?.test_macro_f1, 4) },
        { label: 'created', render: (v) => fmt.ago(v.created_at) },
        { label: '', render: (v) => downloadButton(name, v.version) },
      ]),
      pager({ offset, limit: PAGE, count: model.versions.length }, (o) => setQuery({ ...params.query, offset: o }))),
    trend,
    h('div', { class: 'cols' },
      card('Alias history', aliasHistory(name, history, executions)),
      card('Endpoints serving it', endpointTable(serving, name))),
  );
  if (trend) {
    lineChart(trend, ['test_accuracy', 'test_macro_f1'].map((k, i) => ({
      label: k, color: color(i), points: scored.filter((v) => typeof v.metrics[k] === 'number').map((v) => [v.version, v.metrics[k]]),
    })), { xLabel: 'version', integerX: true, height: 180 });
  }
}

function aliasHistory(name, history, executions) {
  return table([...history].reverse(), [
    { label: 'alias', key: 'alias' },
    { label: 'move', render: (e) => h('span', null, e.from_version ? link(route('models', name, e.from_version), `v${e.from_version}`) : '∅', ' → ', e.to_version ? link(route('models', name, e.to_version), `v${e.to_version}`) : 'deleted') },
    { label: 'by', render: (e) => actorCell(e.actor, executions) },
    { label: 'at', render: (e) => fmt.time(e.at) },
  ], { empty: 'no alias was ever set' });
}

// "workflow:<execution id>": a workflow step moved it — link the execution whose history says why
function actorCell(actor, executions) {
  if (actor && actor.startsWith('workflow:')) {
    const id = actor.slice('workflow:'.length);
    const x = executions.get(id);
    return x ? h('span', null, 'workflow ', link(route('workflows', x.workflow, id), `${x.workflow} / ${id}`), ' ', badge(x.status))
      : h('span', null, 'workflow execution ', h('span', { class: 'mono' }, id), ' (deleted)');
  }
  return actor || '–';
}

function endpointTable(endpoints, name) {
  return table(endpoints, [
    { label: 'endpoint', render: (e) => link(route('endpoints', e.name), e.name) },
    { label: 'status', render: (e) => badge(e.status) },
    { label: 'variants', render: (e) => h('span', null, [...(e.resolved?.variants || []).map((v) => ({ ...v, role: v.name })), ...(e.resolved?.shadow ? [{ ...e.resolved.shadow, role: 'shadow' }] : [])]
      .filter((v) => v.model === name).map((v) => h('span', { class: 'tag' }, `${v.role}: v${v.version}${v.alias ? ` (@${v.alias})` : ''}`))) },
  ], { empty: 'no endpoint serves it' });
}

function datasetLink(ref) {
  if (!ref) return '–';
  const [ds, version] = ref.split(':');
  return link(route('datasets', ds, version), ref);
}

/** What `loopml models download` gives: the version's zip. Fetched with the token, then saved. */
function downloadButton(name, version) {
  const path = `/models/${enc(name)}/versions/${version}/download`;
  const out = h('span');
  const a = h('a', { href: apiUrl(path), class: 'download', download: `${name}-${version}.zip`, onclick: async (e) => {
    if (!token()) return;  // no token: the browser downloads the link itself
    e.preventDefault();
    try {
      const res = await api(path, { raw: true });
      const url = URL.createObjectURL(await res.blob());
      const tmp = h('a', { href: url, download: `${name}-${version}.zip` });
      document.body.append(tmp); tmp.click(); tmp.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (err) { mount(out, errorBox(err)); }
  } }, 'download');
  return h('span', null, a, out);
}

// ------------------------------------------------------------------ one version

async function jobOf(v) {
  if (!v.job_id) return null;
  try { return await api(`/jobs/${enc(v.job_id)}`); } catch (err) { if (err.status === 404) return null; throw err; }
}

async function renderVersion(el, name, version) {
  const v = await api(`/models/${enc(name)}/versions/${enc(version)}`);
  const [job, endpoints] = await Promise.all([jobOf(v), api('/endpoints')]);
  const serving = servingEndpoints(endpoints, name, v.version);
  const ev = job?.result?.evaluation || {};
  const cm = h('div');
  if (ev.confusion_matrix) heatmap(cm, ev.confusion_matrix, ev.labels);
  const curves = h('div', { class: 'cols' });
  el.append(
    h('h1', null, link(route('models'), 'Models'), ' / ', link(route('models', name), name), ' / ', `v${v.version}`, ' ',
      isImported(v) ? badge('imported') : null, ' ', v.aliases.map((a) => h('span', { class: 'tag' }, a))),
    h('div', { class: 'toolbar' }, downloadButton(name, v.version), h('span', { class: 'muted' }, 'the same zip as ', h('code', null, `loopml models download ${v.ref}`))),
    card('Lineage', lineage(v, job, serving)),
    h('div', { class: 'cols' },
      card('Version', kv({
        Reference: h('span', { class: 'mono' }, v.ref), Kind: v.kind, Template: v.template,
        Origin: isImported(v) ? `imported from ${v.lineage.file} (${v.lineage.format})` : (v.job_id ? link(route('jobs', v.job_id), v.job_id) : null),
        Runtimes: (v.runtimes || []).join(', '), Trusted: v.trusted ? 'yes' : 'no', Created: fmt.time(v.created_at),
        Frameworks: v.lineage?.frameworks ? Object.entries(v.lineage.frameworks).map(([k, x]) => `${k} ${x}`).join(', ') : null,
      })),
      card('Metrics', v.metrics && Object.keys(v.metrics).length
        ? kv(Object.fromEntries(Object.entries(v.metrics).map(([k, x]) => [k, typeof x === 'number' ? fmt.num(x, 4) : x])))
        : h('p', { class: 'muted' }, 'no metrics recorded'))),
    curves,
    h('div', { class: 'cols' },
      ev.confusion_matrix ? card('Confusion matrix (test split)', cm) : null,
      ev.per_class ? card('Per-class metrics', perClassTable(ev.per_class)) : null),
    v.hparams && Object.keys(v.hparams).length ? card('Hyperparameters', h('div', { class: 'kv-columns' }, kv(Object.fromEntries(Object.entries(v.hparams).map(([k, x]) => [k, String(x)]))))) : null,
  );
  if (job?.metrics?.length) {
    for (const [title, keys] of [['Loss', ['loss', 'val_loss']], ['Accuracy', ['accuracy', 'val_accuracy']]]) {
      const box = h('div', { class: 'card' }, h('h2', null, title));
      curves.append(box);
      lineChart(box, keys.filter((k) => job.metrics.some((m) => typeof m[k] === 'number')).map((k, i) => ({
        label: k, color: color(i), dash: k.startsWith('val_') ? [6, 4] : undefined,
        points: job.metrics.filter((m) => typeof m[k] === 'number').map((m) => [m.epoch, m[k]]),
      })), { xLabel: 'epoch', integerX: true });
    }
  }
}

function lineage(v, job, serving) {
  const arrow = () => h('span', { class: 'arrow' }, '→');
  const node = (label, body) => h('span', { class: 'node' }, h('span', { class: 'muted' }, `${label} `), body);
  return h('div', { class: 'lineage' },
    isImported(v) ? node('imported', h('span', { class: 'mono' }, v.lineage.file)) : node('dataset', datasetLink(v.dataset || v.lineage?.dataset)),
    arrow(),
    node('job', v.job_id ? h('span', null, link(route('jobs', v.job_id), v.job_id), job ? [' ', badge(job.status)] : null) : '–'),
    arrow(),
    node('version', h('strong', null, v.ref)),
    arrow(),
    serving.length ? serving.map((e) => node('endpoint', link(route('endpoints', e.name), e.name))) : node('endpoints', 'none'),
    v.lineage?.resumed_from ? h('span', { class: 'muted' }, ' (resumed from ', link(route('jobs', v.lineage.resumed_from), v.lineage.resumed_from), ')') : null);
}

// ------------------------------------------------------------------ compare two versions

async function renderCompare(el, name, a, b) {
  if (!a || !b) throw new Error(`pick two versions to compare (#/models/${name}/compare/1/2)`);
  const versions = await Promise.all([a, b].map((x) => api(`/models/${enc(name)}/versions/${enc(x)}`)));
  const [jobs, endpoints] = await Promise.all([Promise.all(versions.map(jobOf)), api('/endpoints')]);
  const label = (i) => `v${versions[i].version}`;
  const both = (fn) => versions.map((v, i) => fn(v, jobs[i]));
  const delta = (x, y) => (typeof x === 'number' && typeof y === 'number' ? x - y : null);
  const metricKeys = [...new Set(versions.flatMap((v) => Object.keys(v.metrics || {})))];
  const cols = [{ label: '', key: 'k' }, { label: label(0), class: 'num', render: (r) => r.v[0] }, { label: label(1), class: 'num', render: (r) => r.v[1] }];
  // green when v2 is better: higher, except for losses
  const signed = (d, lowerIsBetter = false) => (d === null ? '–' : h('span', {
    class: d === 0 ? '' : ((d > 0) !== lowerIsBetter ? 'better' : 'worse'),
  }, `${d > 0 ? '+' : ''}${fmt.num(d, 4)}`));

  const classes = [...new Set(both((v, j) => Object.keys(j?.result?.evaluation?.per_class || {})).flat())];
  const hpKeys = [...new Set(versions.flatMap((v) => Object.keys(v.hparams || {})))];
  el.append(
    h('h1', null, link(route('models'), 'Models'), ' / ', link(route('models', name), name), ` / ${label(0)} vs ${label(1)}`),
    h('div', { class: 'cols' },
      versions.map((v, i) => card(h('span', { style: { color: color(i) } }, v.ref), lineage(v, jobs[i], servingEndpoints(endpoints, name, v.version)), h('p', null, isImported(v) ? badge('imported') : null, ' ', v.aliases.map((x) => h('span', { class: 'tag' }, x)))))),
    h('div', { class: 'cols' },
      card('Metrics', table(metricKeys.map((k) => {
        const [x, y] = versions.map((v) => v.metrics?.[k]);
        return { k, v: [fmt.num(x, 4), fmt.num(y, 4)], d: delta(y, x), low: /loss/.test(k) };
      }), [...cols, { label: `${label(1)} − ${label(0)}`, class: 'num', render: (r) => (/^(epochs|best_epoch|train_samples_per_s)$/.test(r.k) ? (r.d === null ? '–' : `${r.d > 0 ? '+' : ''}${fmt.num(r.d, 4)}`) : signed(r.d, r.low)) }])),
      card('Per-class F1 (test split)', classes.length ? table(classes.map((c) => {
        const [x, y] = jobs.map((j) => j?.result?.evaluation?.per_class?.[c]?.f1);
        return { k: c, v: [fmt.num(x, 4), fmt.num(y, 4)], d: delta(y, x) };
      }), [...cols, { label: 'Δ', class: 'num', render: (r) => signed(r.d) }]) : h('p', { class: 'muted' }, 'no per-class evaluation recorded'))),
  );
  const curves = h('div', { class: 'cols' });
  el.append(curves,
    card('Hyperparameters', table(hpKeys.map((k) => ({ k, v: versions.map((v) => String(v.hparams?.[k] ?? '–')) })), cols,
      { rowAttrs: (r) => (r.v[0] !== r.v[1] ? { class: 'selected', title: 'differs' } : null), empty: 'no hyperparameters recorded' })));
  for (const [title, keys] of [['Loss', ['loss', 'val_loss']], ['Accuracy', ['accuracy', 'val_accuracy']]]) {
    const series = jobs.flatMap((j, i) => (j?.metrics || []).length ? keys.filter((k) => j.metrics.some((m) => typeof m[k] === 'number')).map((k) => ({
      label: `${label(i)} ${k}`, color: color(i), dash: k.startsWith('val_') ? [6, 4] : undefined,
      points: j.metrics.filter((m) => typeof m[k] === 'number').map((m) => [m.epoch, m[k]]),
    })) : []);
    if (!series.length) continue;
    const box = h('div', { class: 'card' }, h('h2', null, title));
    curves.append(box);
    lineChart(box, series, { xLabel: 'epoch', integerX: true });
  }
}
