// Triggers: what fires what (cron, webhook, object, alert), every firing with the execution or
// invocation it started (linked), test fire and redrive of failed firings.
import { api, h, mount, registerPage, table, badge, fmt, card, kv, link, route, filters, actionButton, refresh, pager, setQuery } from '../app.js';

const PAGE = 50;  // firings a page (the server pages: a cron trigger fires every minute)
import { jsonBlock, startedLink } from './_ops.js';

const targetLink = (t) => (t ? link(route(t.kind === 'workflow' ? 'workflows' : 'functions', t.name), `${t.kind} ${t.name}`) : '–');

function when(tr) {
  const s = tr.spec || {};
  if (tr.kind === 'cron') return `${s.cron}${s.tz ? ` (${s.tz})` : ''}${tr.next_run ? `, next ${fmt.time(tr.next_run)}` : ''}`;
  if (tr.kind === 'webhook') return `POST ${tr.url}`;
  if (tr.kind === 'objects') return `new objects under ${s.uri || s.objects_uri || '?'}${s.suffix ? ` ending ${s.suffix}` : ''}`;
  if (tr.kind === 'alert') return `alerts of monitor ${s.monitor || '*'}`;
  return fmt.json(s);
}

async function listPage(container, params) {
  const all = await api('/triggers');
  const rows = all.filter((t) => (!params.query.kind || t.kind === params.query.kind) && (!params.query.name || t.name.includes(params.query.name)));
  mount(container, h('h1', null, 'Triggers'),
    filters(params, [{ name: 'name', placeholder: 'name contains' }, { name: 'kind', options: ['cron', 'webhook', 'objects', 'alert'] }]),
    table(rows, [
      { label: 'Trigger', render: (t) => link(route('triggers', t.name), t.name) },
      { label: 'Kind', key: 'kind' }, { label: 'When', render: when }, { label: 'Starts', render: (t) => targetLink(t.target) },
      { label: 'Status', render: (t) => badge(t.status) },
      { label: 'Last firing', render: (t) => (t.last_firing ? h('span', null, badge(t.last_firing.status), ` ${fmt.ago(t.last_firing.at)} → `, startedLink(t.target, t.last_firing.started_id)) : 'never') },
    ], { empty: all.length ? 'no trigger matches' : 'no triggers yet: loopml triggers create NAME --cron "0 * * * *" --workflow W' }));
}

async function detailPage(container, name, params) {
  const offset = Math.max(0, Number(params.query.offset) || 0);
  const [tr, history] = await Promise.all([api(`/triggers/${encodeURIComponent(name)}`), api(`/triggers/${encodeURIComponent(name)}/history`, { query: { limit: PAGE, offset } })]);
  const failed = history.filter((f) => f.status === 'failed').length;
  const whole = !offset && history.length < PAGE;  // the counts below are exact only when one page holds every firing
  const count = (n) => (whole ? n : `${n} of the ${history.length} on this page`);
  mount(container, 
    h('p', { class: 'crumbs' }, link('#/triggers', 'Triggers'), ' / ', name),
    h('h1', null, name, ' ', badge(tr.status)),
    card('Trigger', kv({ Kind: tr.kind, When: when(tr), Starts: targetLink(tr.target), Firings: history.length < PAGE ? offset + history.length : `${offset + history.length}+`, Failed: count(failed), Created: fmt.time(tr.created_at) }),
      h('p', null,
        actionButton('Test fire', async () => { const r = await api(`/triggers/${encodeURIComponent(name)}/fire`, { method: 'POST' }); refresh(); return `started ${r.started ? r.started.id : '–'}`; }, { need: ['triggers:write', name] }), ' ',
        tr.status === 'paused'
          ? actionButton('Resume', async () => { await api(`/triggers/${encodeURIComponent(name)}/resume`, { method: 'POST' }); refresh(); }, { need: ['triggers:write', name] })
          : actionButton('Pause', async () => { await api(`/triggers/${encodeURIComponent(name)}/pause`, { method: 'POST' }); refresh(); }, { need: ['triggers:write', name] }), ' ',
        failed ? actionButton(`Redrive ${failed} failed`, async () => { const r = await api(`/triggers/${encodeURIComponent(name)}/redrive`, { method: 'POST' }); refresh(); return `${r.length} started again`; }, { need: ['triggers:write', name] }) : null)),
    card('Firing history', table(history, [
      { label: 'At', render: (f) => fmt.time(f.at) }, { label: 'Status', render: (f) => badge(f.status) },
      { label: 'Started', render: (f) => startedLink(f.target, f.started_id) },
      { label: 'Redrive of', render: (f) => f.redrive_of || '–' },
      { label: 'Error', render: (f) => f.error || '–' },
      { label: 'Event', render: (f) => (f.event ? h('details', null, h('summary', null, 'event'), jsonBlock(f.event)) : '–') },
    ], { empty: offset ? 'no older firings' : 'never fired' }),
    pager({ offset, limit: PAGE, count: history.length }, (o) => setQuery({ ...params.query, offset: o }))));
}

registerPage('triggers', {
  title: 'Triggers',
  render(container, params) {
    return params.path.length ? detailPage(container, params.path[0], params) : listPage(container, params);
  },
});
