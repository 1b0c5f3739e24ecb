// Overview: the loop at a glance — every count and row links to its page.
import { api, badge, card, every, fmt, h, link, registerPage, route, table } from '../app.js';

const LIST = 8;
const TRAFFIC_MS = 3000;  // the endpoints' req/s and p99 refresh this often (one GET /endpoints)

// a list the server may not have (an older server, a feature switched off): show it as empty
async function optional(path, query) {
  try { return await api(path, { query }); } catch (err) { if (err.status === 404) return null; throw err; }
}

function wide(title, ...children) {
  const c = card(title, ...children);
  c.classList.add('wide');
  return c;
}

function stat(value, label, href, cls) {
  return h('a', { class: `stat ${cls || ''}`, href, dataset: { stat: label } }, h('span', { class: 'value' }, value), h('span', { class: 'label' }, label));
}

function countOf(rows, limit) { return rows.length >= limit ? `${limit}+` : rows.length; }

registerPage('overview', {
  title: 'Overview',
  async render(el) {
    const big = 100;  // counts above this show as 100+: the overview stays one cheap page of each
    const [datasets, running, queued, failed, recent, models, endpoints, alerts, executions, triggers] = await Promise.all([
      api('/datasets', { query: { limit: big } }),
      api('/jobs', { query: { status: 'running', limit: big } }),
      api('/jobs', { query: { status: 'queued', limit: big } }),
      api('/jobs', { query: { status: 'failed', limit: big } }),
      api('/jobs', { query: { limit: LIST } }),
      api('/models', { query: { limit: big } }),
      api('/endpoints'),
      optional('/alerts', { open: true }),
      optional('/executions', { limit: LIST }),
      optional('/triggers'),
    ]);
    const openAlerts = alerts || [];
    el.append(
      h('h1', null, 'Overview'),
      h('div', { class: 'stats' },
        stat(countOf(datasets, big), 'datasets', route('datasets')),
        stat(countOf(running, big), 'jobs running', '#/jobs?status=running', running.length ? 'live' : ''),
        stat(countOf(queued, big), 'jobs queued', '#/jobs?status=queued'),
        stat(countOf(failed, big), 'jobs failed', '#/jobs?status=failed'),
        stat(countOf(models, big), 'models', route('models')),
        stat(endpoints.length, 'endpoints', route('endpoints')),
        stat(openAlerts.length, 'open alerts', route('monitors'), openAlerts.length ? 'alerting' : '')),
      h('div', { class: 'cards overview-cards' },
        wide('Jobs', table(recent, [
          { label: 'job', render: (j) => link(route('jobs', j.id), j.id) },
          { label: 'kind', key: 'kind' },
          { label: 'status', render: (j) => badge(j.status) },
          { label: 'what', render: (j) => j.result?.model_ref || j.spec?.register_as || j.spec?.dataset || j.spec?.model },
          { label: 'progress', render: (j) => progressText(j) },
          { label: 'created', render: (j) => fmt.ago(j.created_at) },
        ], { empty: 'no jobs yet' }), h('p', null, link('#/jobs', 'all jobs ›'))),
        card('Models', table(models.slice(0, LIST), [
          { label: 'model', render: (m) => link(route('models', m.name), m.name) },
          { label: 'versions', key: 'versions', class: 'num' },
          { label: 'aliases', render: (m) => h('span', null, Object.entries(m.aliases || {}).map(([a, v]) => h('a', { class: 'tag', href: route('models', m.name, v) }, `${a} → v${v}`))) },
          { label: 'accuracy', class: 'num', render: (m) => fmt.num(m.latest_metrics?.test_accuracy ?? m.latest_metrics?.accuracy) },
        ], { empty: 'no models yet' })),
        card('Datasets', table(datasets.slice(0, LIST), [
          { label: 'dataset', render: (d) => link(route('datasets', d.name), d.name) },
          { label: 'kind', render: (d) => d.latest?.kind },
          { label: 'latest', render: (d) => link(route('datasets', d.name, d.latest_version), `v${d.latest_version}`) },
          { label: 'rows', class: 'num', render: (d) => d.latest?.rows },
        ], { empty: 'no datasets yet' })),
        card('Endpoints', table(endpoints.slice(0, LIST), [
          { label: 'endpoint', render: (e) => link(route('endpoints', e.name), e.name) },
          { label: 'status', render: (e) => badge(e.status) },
          { label: 'serves', render: (e) => servedModels(e) },
          { label: 'req/s', class: 'num', render: (e) => fmt.num(e.traffic?.rps ?? null, 3) },
          { label: 'p99 ms', class: 'num', render: (e) => fmt.num(e.traffic?.p99_ms ?? null, 3) },
        ], { empty: 'no endpoints yet', rowAttrs: (e) => ({ dataset: { endpoint: e.name } }) })),
        card('Open alerts', table(openAlerts.slice(0, LIST), [
          { label: 'monitor', render: (a) => link(route('monitors', a.monitor), a.monitor) },
          { label: 'what', render: (a) => h('span', { title: a.message || '' }, a.key) },
          { label: 'severity', render: (a) => badge(a.severity || a.status) },
          { label: 'since', render: (a) => fmt.ago(a.first_at) },
        ], { empty: alerts ? 'no open alerts' : 'alerts are not available on this server' })),
        card('Workflow executions', table((executions || []).slice(0, LIST), [
          { label: 'workflow', render: (x) => link(route('workflows', x.workflow), x.workflow) },
          { label: 'execution', render: (x) => h('a', { href: route('workflows', x.workflow, x.id), title: x.id }, shortExecution(x)) },
          { label: 'status', render: (x) => badge(x.status) },
          { label: 'started', render: (x) => fmt.ago(x.created_at) },
        ], { empty: 'no executions yet' })),
        card('Triggers', table(recentFirings(triggers || []), [
          { label: 'trigger', render: (t) => link(route('triggers', t.name), t.name) },
          { label: 'kind', key: 'kind' },
          { label: 'status', render: (t) => badge(t.status) },
          { label: 'last firing', render: (t) => (t.last_firing ? h('span', null, badge(t.last_firing.status), ' ', fmt.ago(t.last_firing.at), ' → ', startedLink(t.last_firing)) : 'never') },
        ], { empty: 'no triggers yet' }))),
    );
    if (endpoints.length) every(TRAFFIC_MS, () => liveTraffic(el));
  },
});

// the API measures req/s and p99 between two lists of /endpoints: asking again keeps them live
async function liveTraffic(el) {
  let endpoints;
  try { endpoints = await api('/endpoints'); } catch (err) { console.warn(err.message); return; }
  for (const e of endpoints) {
    const row = [...el.querySelectorAll('tr[data-endpoint]')].find((r) => r.dataset.endpoint === e.name);
    if (!row) continue;
    row.querySelector("td[data-label='req/s']").textContent = fmt.num(e.traffic?.rps ?? null, 3);
    row.querySelector("td[data-label='p99 ms']").textContent = fmt.num(e.traffic?.p99_ms ?? null, 3);
  }
}

export function progressText(j) {
  const p = j.progress;
  if (!p || p.epoch === undefined) return j.status === 'running' ? '…' : '';
  return `epoch ${p.epoch}${p.epochs ? `/${p.epochs}` : ''}`;
}

function servedModels(e) {
  const variants = e.resolved?.variants || e.spec?.variants || [];
  return h('span', null, variants.map((v) => {
    const name = v.model || v.name;
    const version = v.version;
    return name && version ? h('a', { class: 'tag', href: route('models', name, version) }, `${name}:${version}`) : h('span', { class: 'tag' }, v.ref || v.name || '?');
  }));
}

// an execution id is WORKFLOW-START_TIME-SUFFIX: the workflow and the time are in their own columns
function shortExecution(x) {
  const prefix = `${x.workflow}-`;
  const rest = x.id.startsWith(prefix) && x.id.length > prefix.length ? x.id.slice(prefix.length) : x.id;
  return rest.replace(/^\d{8}T\d{6}-/, '');
}

const firedAt = (t) => t.last_firing?.at || null;

// what a firing started: a workflow execution, a function invocation or a job
// (named by its kind, the id in the tooltip: the overview's columns stay narrow)
function startedLink(f) {
  const id = f.started_id;
  if (!id) return f.target?.name || '–';
  const kind = f.target?.kind;
  const href = kind === 'workflow' ? route('workflows', f.target.name, id)
    : kind === 'function' ? `${route('functions', f.target.name)}?invocation=${encodeURIComponent(id)}` : route('jobs', id);
  return h('a', { href, title: id }, kind === 'workflow' ? 'execution' : kind === 'function' ? 'invocation' : 'job');
}

function recentFirings(triggers) {
  return [...triggers].sort((a, b) => String(firedAt(b) || '').localeCompare(String(firedAt(a) || ''))).slice(0, LIST);
}
