// Functions: configuration, invocations (status, duration, memory) with their logs and results,
// and an invoke button; ?invocation=ID opens one invocation.
import { api, h, mount, registerPage, table, badge, fmt, card, kv, link, route, filters, actionButton, refresh, pager, setQuery } from '../app.js';

const PAGE = 50;  // invocations a page (the server pages)
import { jsonBlock } from './_ops.js';

const fn = (name) => `/functions/${encodeURIComponent(name)}`;
// who invoked: a trigger's firing links to the trigger
const sourceOf = (src) => (src && src.startsWith('trigger:') ? link(route('triggers', src.slice(8)), src) : src || '–');

async function listPage(container, params) {
  const all = await api('/functions');
  const rows = all.filter((f) => !params.query.name || f.name.includes(params.query.name));
  mount(container, h('h1', null, 'Functions'), filters(params, [{ name: 'name', placeholder: 'name contains' }]),
    table(rows, [
      { label: 'Function', render: (f) => link(route('functions', f.name), f.name) },
      { label: 'Handler', key: 'handler' }, { label: 'Timeout', render: (f) => `${fmt.num(f.timeout_s)} s` },
      { label: 'Memory', render: (f) => `${f.memory_mb} MB` }, { label: 'Description', render: (f) => f.description || '–' },
      { label: 'Updated', render: (f) => fmt.time(f.updated_at) },
    ], { empty: all.length ? 'no function matches' : 'no functions yet: loopml functions create NAME handler.py' }));
}

function invocationView(inv) {
  return h('div', { class: 'invocation', 'data-invocation': inv.id },
    kv({ Invocation: inv.id, Status: badge(inv.status), Source: sourceOf(inv.source), Started: fmt.time(inv.started_at), Duration: inv.duration_ms !== null && inv.duration_ms !== undefined ? `${fmt.num(inv.duration_ms, 4)} ms` : null, 'Max memory': inv.max_memory_mb ? `${fmt.num(inv.max_memory_mb, 3)} MB` : null, Error: inv.error_type ? `${inv.error_type}: ${inv.error_message || ''}` : null }),
    h('div', { class: 'cols' }, h('div', null, h('h3', null, 'Event'), jsonBlock(inv.event)), h('div', null, h('h3', null, 'Result'), jsonBlock(inv.result))),
    h('h3', null, 'Logs'), h('pre', { class: 'logs' }, inv.logs || '(no output)'));
}

async function detailPage(container, name, params) {
  const offset = Math.max(0, Number(params.query.offset) || 0);
  const [f, invocations] = await Promise.all([api(fn(name)), api(`${fn(name)}/invocations`, { query: { status: params.query.status, limit: PAGE, offset } })]);
  const chosen = params.query.invocation ? await api(`${fn(name)}/invocations/${encodeURIComponent(params.query.invocation)}`) : invocations[0];
  const event = h('textarea', { rows: 3, cols: 50, name: 'event' }, '{}');
  mount(container, 
    h('p', { class: 'crumbs' }, link('#/functions', 'Functions'), ' / ', name),
    h('h1', null, name),
    h('div', { class: 'cols' },
      card('Configuration', kv({ Handler: f.handler, Timeout: `${fmt.num(f.timeout_s)} s`, Memory: `${f.memory_mb} MB`, 'Code SHA-256': f.code_sha256.slice(0, 16) + '…', Environment: Object.keys(f.environment || {}).join(', ') || 'none', Description: f.description, Updated: fmt.time(f.updated_at) })),
      card('Invoke', h('label', null, 'Event (JSON) ', event), h('p', null, actionButton('Invoke', async () => {
        let body;
        try { body = JSON.parse(event.value || 'null'); } catch (err) { throw new Error(`event: not JSON (${err.message})`); }
        const inv = await api(`${fn(name)}/invocations`, { method: 'POST', body: { event: body, source: 'dashboard' } });
        location.hash = `${route('functions', name)}?invocation=${encodeURIComponent(inv.id)}`;
      }, { class: 'primary', need: ['functions:invoke', name] })))),
    card(chosen ? `Invocation ${chosen.id}` : 'Invocation', chosen ? invocationView(chosen) : h('p', { class: 'muted' }, 'never invoked')),
    card('Invocations', filters(params, [{ name: 'status', options: ['queued', 'running', 'succeeded', 'failed'] }]), table(invocations, [
      { label: 'Invocation', render: (i) => link(`${route('functions', name)}?invocation=${encodeURIComponent(i.id)}`, i.id) },
      { label: 'Status', render: (i) => badge(i.status) }, { label: 'Source', render: (i) => sourceOf(i.source) },
      { label: 'Started', render: (i) => fmt.time(i.started_at || i.created_at) },
      { label: 'Duration', render: (i) => (i.duration_ms !== null && i.duration_ms !== undefined ? `${fmt.num(i.duration_ms, 4)} ms` : '–') },
      { label: 'Error', render: (i) => (i.error_type ? `${i.error_type}: ${i.error_message || ''}` : '–') },
      { label: 'Logs', render: (i) => (i.logs ? h('details', null, h('summary', null, `${i.logs.split('\n').length} lines`), h('pre', { class: 'logs' }, i.logs)) : '–') },
    ], { empty: offset ? 'no older invocations' : 'no invocations' }),
    pager({ offset, limit: PAGE, count: invocations.length }, (o) => setQuery({ ...params.query, invocation: undefined, offset: o }))));
}

registerPage('functions', {
  title: 'Functions',
  render(container, params) {
    return params.path.length ? detailPage(container, params.path[0], params) : listPage(container, params);
  },
});
