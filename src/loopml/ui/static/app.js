// The dashboard's foundation: API client, DOM helper, hash router, charts and small widgets.
// Every page is a module in pages/ that calls registerPage(); see README-ui.md for the contract.
import uPlot from './vendor/uplot-1.6.32/uPlot.esm.js';

const TOKEN_KEY = 'loopml.token';
// the API lives at the same origin, under whatever prefix /ui is served from
export const BASE = location.pathname.replace(/\/ui(\/.*)?$/, '');

// ------------------------------------------------------------------ API client

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function token() { return localStorage.getItem(TOKEN_KEY) || ''; }

function authHeaders(extra = {}) {
  const t = token();
  return t ? { ...extra, Authorization: `Bearer ${t}` } : extra;
}

/** The URL of an API path (for links such as downloads). */
export function apiUrl(path) { return BASE + path; }

/**
 * Fetch `path` from the REST API and return its JSON (or the Response with opts.raw).
 * opts: {method, body (object → JSON, FormData as is), headers, query (object), signal, raw}.
 * Throws ApiError(status, code, message) with the API's {code, message}; a 401 shows the token form.
 */
export async function api(path, opts = {}) {
  const { method = 'GET', body, headers = {}, query, signal, raw = false } = opts;
  let url = BASE + path;
  if (query) {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== '') qs.set(k, v);
    const s = qs.toString();
    if (s) url += (url.includes('?') ? '&' : '?') + s;
  }
  const init = { method, headers: authHeaders(headers), signal };
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers['Content-Type'] = 'application/json';
  }
  const res = await fetch(url, init);
  if (!res.ok) {
    let code = 'error', message = `${method} ${path}: HTTP ${res.status}`;
    try {
      const j = await res.json();
      if (j && j.message) { code = j.code || code; message = j.message; }
    } catch { /* not JSON: keep the status line */ }
    if (res.status === 401) showTokenForm(message);
    throw new ApiError(res.status, code, message);
  }
  if (raw) return res;
  const type = res.headers.get('content-type') || '';
  return type.includes('json') ? res.json() : res.text();
}

/**
 * Follow a Server-Sent Events route (fetch-based, so the token goes in a header, not the URL).
 * onEvent({event, data}) gets each event, data parsed as JSON when it is JSON. Returns an
 * AbortController; the stream is also closed when the page is left.
 */
export function sse(path, onEvent, { onEnd } = {}) {
  const ctl = new AbortController();
  onLeave(() => ctl.abort());
  (async () => {
    try {
      const res = await fetch(BASE + path, { headers: authHeaders({ Accept: 'text/event-stream' }), signal: ctl.signal });
      if (!res.ok) {
        if (res.status === 401) showTokenForm('the live stream needs an API token');
        throw new Error(`stream ${path}: HTTP ${res.status}`);
      }
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let cut;
        while ((cut = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          let event = 'message';
          const data = [];
          for (const line of block.split('\n')) {
            if (line.startsWith('event:')) event = line.slice(6).trim();
            else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
          }
          if (!data.length) continue;  // a comment (keep-alive)
          const text = data.join('\n');
          let parsed = text;
          try { parsed = JSON.parse(text); } catch { /* plain text */ }
          onEvent({ event, data: parsed });
        }
      }
      if (onEnd) onEnd();
    } catch (err) {
      if (err.name !== 'AbortError') { console.warn(err.message); if (onEnd) onEnd(err); }
    }
  })();
  return ctl;
}

// ------------------------------------------------------------------ DOM helper

/**
 * h('a', {href: '#/jobs', class: 'x', onclick: fn, style: {color: 'red'}, dataset: {k: 'v'}}, child, …)
 * Children: nodes, strings, numbers, arrays (flattened); null/undefined/false are skipped.
 */
export function h(tag, attrs, ...children) {
  const el = tag.includes(':') || tag === 'svg'
    ? document.createElementNS('http://www.w3.org/2000/svg', tag.replace(/^svg:/, ''))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'style' && typeof v === 'object') Object.assign(el.style, v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'class' || k === 'className') el.setAttribute('class', v);
    else if (k in el && !(el instanceof SVGElement) && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

/** Replace a container's content. */
export function mount(container, ...children) {
  container.replaceChildren();
  append(container, children);
  return container;
}

// ------------------------------------------------------------------ formatting

export const fmt = {
  num(x, digits = 4) {
    if (x === null || x === undefined || x === '') return '–';
    if (typeof x !== 'number') return String(x);
    if (Number.isInteger(x)) return x.toLocaleString('en-US');
    return Number(x.toPrecision(digits)).toString();
  },
  pct(x, digits = 1) { return x === null || x === undefined ? '–' : `${(x * 100).toFixed(digits)}%`; },
  time(iso) {
    if (!iso) return '–';
    const d = new Date(iso);
    return isNaN(d) ? String(iso) : d.toLocaleString('en-GB', { dateStyle: 'short', timeStyle: 'medium' });
  },
  ago(iso) {
    if (!iso) return '–';
    const s = (Date.now() - new Date(iso).getTime()) / 1000;
    if (isNaN(s)) return String(iso);
    if (s < 60) return `${Math.max(0, Math.round(s))} s ago`;
    if (s < 3600) return `${Math.round(s / 60)} min ago`;
    if (s < 86400) return `${Math.round(s / 3600)} h ago`;
    return `${Math.round(s / 86400)} d ago`;
  },
  duration(a, b) {
    if (!a) return '–';
    const s = ((b ? new Date(b) : new Date()) - new Date(a)) / 1000;
    if (s < 120) return `${s.toFixed(1)} s`;
    if (s < 7200) return `${(s / 60).toFixed(1)} min`;
    return `${(s / 3600).toFixed(1)} h`;
  },
  bytes(n) {
    if (n === null || n === undefined) return '–';
    const u = ['B', 'KB', 'MB', 'GB', 'TB'];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
  },
  json(v) { return JSON.stringify(v, null, 2); },
};

// ------------------------------------------------------------------ widgets

/** A status pill: green for succeeded/InService, red for failed, blue for running, … */
export function badge(status) {
  const s = String(status ?? 'unknown');
  return h('span', { class: `badge badge-${s.toLowerCase().replace(/[^a-z0-9]+/g, '-')}` }, s);
}

/** A link to a dashboard route: link('#/jobs/ID', 'ID'). */
export function link(href, text) { return h('a', { href }, text ?? href); }

/**
 * A table. columns: [{label, key, render(row) → node|string, class, title}] or key strings.
 * opts: {empty: 'text when no rows', rowAttrs(row) → attrs}.
 */
export function table(rows, columns, opts = {}) {
  const cols = columns.map((c) => (typeof c === 'string' ? { key: c, label: c } : c));
  const head = h('thead', null, h('tr', null, cols.map((c) => h('th', { class: c.class, title: c.title }, c.label ?? c.key))));
  const body = h('tbody', null, rows.length
    ? rows.map((r) => h('tr', opts.rowAttrs ? opts.rowAttrs(r) : null, cols.map((c) => {
      const v = c.render ? c.render(r) : r[c.key];
      return h('td', { class: c.class, 'data-label': c.label ?? c.key }, v === null || v === undefined ? '–' : (v instanceof Node ? v : (typeof v === 'number' ? fmt.num(v) : String(v))));
    })))
    : h('tr', null, h('td', { colspan: cols.length, class: 'muted' }, opts.empty || 'nothing yet')));
  return h('div', { class: 'table-wrap' }, h('table', { class: 'grid' }, head, body));
}

/** A titled panel (card). */
export function card(title, ...children) {
  return h('section', { class: 'card' }, title ? h('h2', null, title) : null, ...children);
}

/** Key/value list: kv({Status: badge(x), Node: 'n1'}). */
export function kv(obj) {
  return h('dl', { class: 'kv' }, Object.entries(obj).flatMap(([k, v]) => [
    h('dt', null, k), h('dd', null, v === null || v === undefined ? '–' : (v instanceof Node ? v : (typeof v === 'number' ? fmt.num(v) : String(v)))),
  ]));
}

/** Horizontal bars: barChart(el, [{label, value, title?}], {max, format}). Plain HTML, scales to width. */
export function barChart(container, bars, opts = {}) {
  const max = opts.max ?? Math.max(1e-12, ...bars.map((b) => b.value));
  const format = opts.format || ((v) => fmt.num(v));
  return mount(container, h('div', { class: 'bars' }, bars.map((b) => h('div', { class: 'bar-row', title: b.title || `${b.label}: ${format(b.value)}` },
    h('span', { class: 'bar-label' }, b.label),
    h('span', { class: 'bar-track' }, h('span', { class: 'bar-fill', style: { width: `${Math.max(0, Math.min(100, (b.value / max) * 100))}%` } })),
    h('span', { class: 'bar-value' }, format(b.value))))));
}

/** A heat map (e.g. a confusion matrix, rows = true, columns = predicted). */
export function heatmap(container, matrix, rowLabels, colLabels = rowLabels, opts = {}) {
  const max = Math.max(1, ...matrix.flat());
  const cells = matrix.map((row, i) => h('tr', null, h('th', { scope: 'row' }, rowLabels[i]), row.map((v, j) => {
    const a = v / max;
    return h('td', {
      class: `heat${i === j ? ' diag' : ''}`, title: `${opts.rowName || 'true'} ${rowLabels[i]}, ${opts.colName || 'predicted'} ${colLabels[j]}: ${v}`,
      style: { background: `rgba(${i === j ? '34,139,84' : '200,60,50'}, ${v ? 0.12 + 0.88 * a : 0})`, color: a > 0.55 ? '#fff' : '' },
    }, v);
  })));
  return mount(container, h('div', { class: 'table-wrap' }, h('table', { class: 'heatmap' },
    h('thead', null, h('tr', null, h('th', { class: 'corner' }, `${opts.rowName || 'true'} \\ ${opts.colName || 'predicted'}`), colLabels.map((c) => h('th', null, c)))),
    h('tbody', null, cells))));
}

const PALETTE = ['#2563eb', '#dc2626', '#16a34a', '#d97706', '#7c3aed', '#0891b2', '#db2777', '#65a30d', '#475569', '#ea580c'];
export const color = (i) => PALETTE[i % PALETTE.length];

function alignSeries(series) {
  const xs = [...new Set(series.flatMap((s) => s.points.map((p) => p[0])))].sort((a, b) => a - b);
  const index = new Map(xs.map((x, i) => [x, i]));
  const data = [xs];
  for (const s of series) {
    const ys = new Array(xs.length).fill(null);
    for (const [x, y] of s.points) ys[index.get(x)] = y ?? null;
    data.push(ys);
  }
  return data;
}

/** [x - pad, x + pad] when every x is the same x, else null. */
function singleX(xs, pad) {
  return xs && xs.length && xs[0] !== null && xs[0] === xs[xs.length - 1] ? [xs[0] - pad, xs[0] + pad] : null;
}

/**
 * A line chart (uPlot). series: [{label, points: [[x, y], …], color?, dash?}] — x values of all
 * series are merged, so series of different lengths (jobs with different epochs) share one chart.
 * opts: {height, xLabel, yLabel, time (x = unix seconds), integerX (ticks on whole numbers: epochs), title}.
 * Returns {el, plot, update(series)}: update() redraws with new points (live curves).
 */
export function lineChart(container, series, opts = {}) {
  const el = h('div', { class: 'chart' });
  if (opts.title) container.append(h('h3', { class: 'chart-title' }, opts.title));
  container.append(el);
  let plot = null;
  let shape = '';
  const width = () => Math.max(240, (el.clientWidth || container.clientWidth || 600));
  const build = (ss) => {
    const data = alignSeries(ss);
    const key = ss.map((s) => s.label).join('\u0000');
    if (plot && key === shape) { plot.setData(data); return; }
    if (plot) plot.destroy();
    shape = key;
    plot = new uPlot({
      width: width(), height: opts.height || 220,
      // one x value (a monitor's first run, a model's only version): a small window around it, not years
      // (uPlot alone widens one time value by 86400 / ms seconds: 1000 days with seconds)
      scales: { x: { time: !!opts.time, range: (u, lo, hi) => singleX(u.data[0], opts.time ? 3600 : 1) || [lo, hi] } },
      axes: [{ label: opts.xLabel, stroke: '#64748b', grid: { stroke: '#e2e8f0' }, ...(opts.integerX ? { incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000] } : {}) },
        { label: opts.yLabel, stroke: '#64748b', grid: { stroke: '#e2e8f0' }, size: 55 }],
      series: [{ label: opts.xLabel || 'x' }, ...ss.map((s, i) => ({
        label: s.label, stroke: s.color || color(i), width: 2, dash: s.dash, spanGaps: true,
        points: { show: data[0].length < 60 },
      }))],
    }, data, el);
  };
  build(series);
  const ro = new ResizeObserver(() => { if (plot) plot.setSize({ width: width(), height: opts.height || 220 }); });
  ro.observe(container);
  onLeave(() => { ro.disconnect(); if (plot) plot.destroy(); });
  return { el, get plot() { return plot; }, update: build };
}

/** Server-side paging controls: pager({offset, limit, count}, go(offset)). `count` = rows on this page. */
export function pager({ offset = 0, limit, count, labels = ['‹ newer', 'older ›'] }, go) {
  return h('div', { class: 'pager' },
    h('button', { type: 'button', disabled: offset <= 0, onclick: () => go(Math.max(0, offset - limit)) }, labels[0]),
    h('span', { class: 'muted' }, count ? `${offset + 1}–${offset + count}` : 'none'),
    h('button', { type: 'button', disabled: count < limit, onclick: () => go(offset + limit) }, labels[1]));
}

/** A filter bar bound to the route's query: filters(params, [{name, label, options?: [...], placeholder}]). */
export function filters(params, fields) {
  const form = h('form', { class: 'filters', onsubmit: (e) => {
    e.preventDefault();
    const q = {};
    for (const f of fields) { const v = form.elements[f.name].value; if (v) q[f.name] = v; }
    setQuery(q);
  } }, fields.map((f) => h('label', null, f.label || f.name, ' ', f.options
    ? h('select', { name: f.name, onchange: () => form.requestSubmit() }, [h('option', { value: '' }, 'any'),
      ...f.options.map((o) => h('option', { value: o, selected: params.query[f.name] === o }, o))])
    : h('input', { name: f.name, value: params.query[f.name] || '', placeholder: f.placeholder || '', size: 14 }))),
  h('button', { type: 'submit' }, 'Filter'));
  return form;
}

/** An error message box. */
export function errorBox(err) {
  return h('div', { class: 'error', role: 'alert' }, err && err.message ? err.message : String(err));
}

// ------------------------------------------------------------------ who the token is

let me = null;  // GET /whoami of the current token: {name, role, grants, auth}
let meToken = null;

/** Ask /whoami once per token (a 401 shows the token form and throws). */
async function loadMe() {
  const t = token();
  if (me && meToken === t) return me;
  me = null;
  try { me = await api('/whoami'); } catch (err) { if (err instanceof ApiError && err.status === 401) throw err; console.warn(err.message); }
  meToken = t;
  return me;
}

/** The signed-in principal (/whoami), or null when unknown. */
export function whoami() { return me; }

/**
 * Whether the token may do `permission` (RESOURCE:ACTION), on object `name` when given — the same
 * rule as identity.permissions.allows: `*`, the exact grant, or an unscoped grant for a scoped need.
 * With auth off (or /whoami unknown) everything is allowed: the API stays the real guard.
 */
export function can(permission, name) {
  if (!me || !me.auth) return true;
  const grants = new Set(me.grants || []);
  const [resource, action] = permission.split(':');
  const needed = name ? `${resource}:${name}:${action}` : permission;
  return grants.has('*') || grants.has(needed) || (!!name && grants.has(permission));
}

/** `node` when the token may do `permission` (on `name`), else null: mutating controls are hidden. */
export function allowed(permission, name, node) { return can(permission, name) ? node : null; }

/**
 * A button that runs an async action and shows its error inline (for mutating actions).
 * attrs.need: [permission, name?] — the button is left out when the token lacks it.
 */
export function actionButton(label, action, attrs = {}) {
  const { need, ...rest } = attrs;
  if (need && !can(...need)) return null;
  attrs = rest;
  const out = h('span', { class: 'action-result' });
  const btn = h('button', { type: 'button', ...attrs, onclick: async () => {
    btn.disabled = true;
    out.textContent = '';
    try { const msg = await action(); if (msg) out.textContent = msg; } catch (err) { out.replaceChildren(errorBox(err)); } finally { btn.disabled = false; }
  } }, label);
  return h('span', { class: 'action' }, btn, out);
}

// ------------------------------------------------------------------ router

const pages = new Map();
let leaveHandlers = [];

/**
 * registerPage('jobs', {title: 'Jobs', nav: true, render(container, params)}) serves #/jobs/…
 * params: {path: ['ID', …] (decoded segments after the name), query: {k: v}, name}.
 * render may be async; it may return a cleanup function (also see onLeave).
 */
export function registerPage(name, page) { pages.set(name, { nav: true, ...page }); }

/** Run fn when the current page is left (stop streams, timers). */
export function onLeave(fn) { leaveHandlers.push(fn); }

/** Poll fn every ms milliseconds while the page is shown. */
export function every(ms, fn) {
  const id = setInterval(fn, ms);
  onLeave(() => clearInterval(id));
  return id;
}

export function parseHash(hash = location.hash) {
  const raw = hash.replace(/^#\/?/, '');
  const [pathPart, queryPart = ''] = raw.split('?');
  const segs = pathPart.split('/').filter(Boolean).map(decodeURIComponent);
  const query = Object.fromEntries(new URLSearchParams(queryPart));
  return { name: segs[0] || 'overview', path: segs.slice(1), query };
}

/** A route: route('models', name, version) → '#/models/NAME/VERSION'. */
export function route(name, ...segs) {
  return `#/${[name, ...segs.filter((s) => s !== undefined && s !== null).map((s) => encodeURIComponent(s))].join('/')}`;
}

/** Change the current route's query (filters, paging) and re-render. */
export function setQuery(q) {
  const { name, path } = parseHash();
  const qs = new URLSearchParams(Object.entries(q).filter(([, v]) => v !== undefined && v !== null && v !== '')).toString();
  location.hash = route(name, ...path) + (qs ? `?${qs}` : '');
}

function renderNav(current) {
  const nav = document.getElementById('nav');
  mount(nav, [...pages.entries()].filter(([, p]) => p.nav).map(([name, p]) => h('a', {
    href: `#/${name}`, class: name === current ? 'active' : null, 'aria-current': name === current ? 'page' : null,
  }, p.title || name)));
  const auth = document.getElementById('auth');
  mount(auth, me && me.auth ? h('span', { class: 'whoami muted', title: (me.grants || []).join(' ') }, `${me.name} (${me.role || me.kind}) `) : null,
    token() ? h('button', { type: 'button', class: 'link', title: 'forget the API token stored in this browser', onclick: () => { localStorage.removeItem(TOKEN_KEY); show(); } }, 'sign out') : null);
}

let renderSeq = 0;

async function show() {
  for (const fn of leaveHandlers.splice(0)) { try { fn(); } catch (e) { console.warn(e); } }
  const params = parseHash();
  const container = document.getElementById('page');
  const page = pages.get(params.name);
  renderNav(params.name);
  const seq = ++renderSeq;
  if (!page) {
    mount(container, h('h1', null, 'Not found'), h('p', null, `No page "${params.name}". `, link('#/overview', 'Overview')));
    return;
  }
  document.title = `${page.title || params.name} · LoopML`;
  container.dataset.ready = '';
  container.dataset.route = '';
  mount(container, h('p', { class: 'muted loading' }, 'Loading…'));
  const body = h('div', { class: `page page-${params.name}` });
  try {
    if (meToken !== token()) { await loadMe(); renderNav(params.name); }
    const cleanup = await page.render(body, params);
    if (typeof cleanup === 'function') onLeave(cleanup);
    if (seq === renderSeq) mount(container, body);
  } catch (err) {
    if (seq !== renderSeq) return;
    if (err instanceof ApiError && err.status === 401) return;  // the token form is shown
    console.warn(err);
    mount(container, h('h1', null, page.title || params.name), errorBox(err));
  }
  container.dataset.route = location.hash;
  container.dataset.ready = params.name;  // tests wait for this
}

/** Re-render the current route (after an action). */
export function refresh() { return show(); }

function showTokenForm(message) {
  const container = document.getElementById('page');
  ++renderSeq;
  const input = h('input', { type: 'password', name: 'token', autocomplete: 'current-password', required: true, placeholder: 'API token', size: 32 });
  mount(container, h('section', { class: 'card token-form' },
    h('h1', null, 'API token needed'),
    h('p', null, message || 'This server needs an API token.'),
    h('p', { class: 'muted' }, 'It is the server\'s LOOPML_TOKEN (what the CLI and SDK send). It is kept in this browser\'s local storage and sent as Authorization: Bearer with every request.'),
    h('form', { onsubmit: (e) => { e.preventDefault(); localStorage.setItem(TOKEN_KEY, input.value.trim()); show(); } },
      input, ' ', h('button', { type: 'submit' }, 'Use token'))));
  container.dataset.route = location.hash;
  container.dataset.ready = 'token';
}

export function start() {
  window.addEventListener('hashchange', show);
  if (!location.hash) history.replaceState(null, '', '#/overview');
  show();
}
