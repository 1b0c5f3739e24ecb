// Overview: the loop at a glance — every count and row links to its page.
import { api, badge, card, fmt, h, link, registerPage, route, table } from '../app.js';

const LIST = 8;

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
      h('div', { class: 'cards' },
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
        ], { empty: 'no endpoints yet' })),
        card('Open alerts', table(openAlerts.slice(0, LIST), [
          { label: 'monitor', render: (a) => link(route('monitors', a.monitor), a.monitor) },
          { label: 'what', render: (a) => h('span', { title: a.message || '' }, a.key) },
          { label: 'severity', render: (a) => badge(a.severity || a.status) },
          { label: 'since', render: (a) => fmt.ago(a.first_at) },
        ], { empty: alerts ? 'no open alerts' : 'alerts are not available on this server' })),
        card('Workflow executions', table((executions || []).slice(0, LIST), [
          { label: 'execution', render: (x) => link(route('workflows', x.workflow, x.id), x.id) },
          { label: 'workflow', render: (x) => link(route('workflows', x.workflow), x.workflow) },
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
  },
});

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

const firedAt = (t) => t.last_firing?.at || null;

// what a firing started: a workflow execution, a function invocation or a job
function startedLink(f) {
  const id = f.started_id;
  if (!id) return f.target?.name || '–';
  if (f.target?.kind === 'workflow') return link(route('workflows', f.target.name, id), id);
  if (f.target?.kind === 'function') return link(route('functions', f.target.name), id);
  return link(route('jobs', id), id);
}

function recentFirings(triggers) {
  return [...triggers].sort((a, b) => String(firedAt(b) || '').localeCompare(String(firedAt(a) || ''))).slice(0, LIST);
}
