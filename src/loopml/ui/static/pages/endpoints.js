// Endpoints: variants and weights, shadow, where it is served, live per-variant charts from the
// data plane's own metrics (/endpoints/NAME/stats), capture settings and the newest captured
// requests, and a try-it panel that sends through the real data plane (/endpoints/NAME/invocations,
// forwarded unchanged by the control plane).
import { api, h, mount, registerPage, lineChart, table, badge, fmt, card, kv, link, route, filters, every, onLeave, errorBox, can } from '../app.js';
import { LiveStats, confidenceBars, drawPad, jsonBlock, postRaw, answerError } from './_ops.js';

const POLL_MS = 2000;

function versionText(v) {
  if (!v) return '–';
  return v.version !== undefined ? `${v.model || v.name}:${v.version}` : (v.ref || `${v.model}@${v.alias}`);
}

function variantsOf(ep) {
  const resolved = (ep.resolved && ep.resolved.variants) || [];
  const spec = (ep.spec && ep.spec.variants) || [];
  const total = spec.reduce((s, v) => s + (v.weight ?? 1), 0) || 1;
  return spec.map((v, i) => ({
    name: v.name || `variant-${i + 1}`,
    wanted: v.alias ? `${v.model}@${v.alias}` : versionText(v),
    serves: versionText(resolved.find((r) => r.name === v.name) || resolved[i]),
    model: (resolved.find((r) => r.name === v.name) || resolved[i] || {}).model || v.model,
    version: (resolved.find((r) => r.name === v.name) || resolved[i] || {}).version,
    weight: v.weight ?? 1,
    share: (v.weight ?? 1) / total,
  }));
}

function shadowText(ep) {
  const s = ep.spec && ep.spec.shadow;
  if (!s) return null;
  const r = ep.resolved && ep.resolved.shadow;
  return `${typeof s === 'string' ? s : versionText(s)}${r ? ` → ${versionText(r)}` : ''}`;
}

async function listPage(container, params) {
  const all = await api('/endpoints');
  const q = (params.query.name || '').toLowerCase();
  const rows = all.filter((e) => !q || e.name.toLowerCase().includes(q));
  mount(container, h('h1', null, 'Endpoints'), filters(params, [{ name: 'name', placeholder: 'name contains' }]),
    table(rows, [
      { label: 'Name', render: (e) => link(route('endpoints', e.name), e.name) },
      { label: 'Status', render: (e) => badge(e.status) },
      { label: 'Variants', render: (e) => variantsOf(e).map((v) => `${v.name}: ${v.serves} (${fmt.pct(v.share, 0)})`).join(', ') },
      { label: 'Shadow', render: (e) => shadowText(e) || '–' },
      { label: 'Capture', render: (e) => `${fmt.num(e.spec.capture_percent ?? 0)} %` },
      { label: 'Generation', render: (e) => `${e.served_generation}/${e.generation}` },
      { label: 'Served at', render: (e) => e.url || '–' },
    ], { empty: all.length ? 'no endpoint matches' : 'no endpoints yet: loopml endpoints create NAME --model MODEL@ALIAS' }));
}

function liveCharts(name) {
  const box = h('div', { class: 'cols live-charts' });
  const status = h('p', { class: 'muted live-status' }, 'reading the data plane\'s metrics every 2 s…');
  const totals = h('div', { class: 'live-totals' });
  const live = new LiveStats();
  const charts = {};
  const specs = [['rps', 'Requests / s', 'req/s'], ['latency', 'Latency percentiles (ms, server side)', 'ms'], ['batch', 'Mean batch size (rows)', 'rows'], ['eps', 'Errors / s (HTTP ≥ 400)', 'err/s']];
  const slots = specs.map(([key]) => { const el = h('div', { class: 'chart-slot', 'data-chart': key }); box.append(el); return [key, el]; });
  let left = false;
  onLeave(() => { left = true; });
  const tick = async () => {
    let stats;
    try { stats = await api(`/endpoints/${encodeURIComponent(name)}/stats`); } catch (err) { if (!left) mount(status, errorBox(err)); return; }
    if (left) return;  // an answer that arrives after the page was left
    status.textContent = `data plane metrics at ${new Date(stats.at * 1000).toLocaleTimeString()}`;
    mount(totals, table(Object.entries(stats.variants).map(([v, s]) => ({ v, ...s })), [
      { label: 'Variant', key: 'v' }, { label: 'Requests (total)', key: 'requests' }, { label: 'Errors (total)', key: 'errors' },
      { label: 'Batches', key: 'batches' }, { label: 'Queued rows', key: 'queue_rows' }, { label: 'Rejected', key: 'rejected' },
    ], { empty: 'no requests served yet' }),
    Object.values(stats.variants).some((v) => v.requests > v.errors && !v.batches)
      ? h('p', { class: 'muted' }, 'A variant with requests but no batches shares its batcher with another variant or endpoint serving the same model version (a shadow of the canary\'s version, say): the batches are counted there.') : null,
    stats.shadow.agree + stats.shadow.disagree
      ? h('p', null, `Shadow agreement: ${stats.shadow.agree} agree, ${stats.shadow.disagree} disagree`) : null);
    live.push(stats);
    box.dataset.points = String(Math.max(0, ...Object.values(live.series).map((pts) => pts.length)));
    for (const [key, el] of slots) {
      const series = live.lines(key);
      if (!charts[key]) {
        const [, title, unit] = specs.find((s) => s[0] === key);
        charts[key] = lineChart(el, series, { title, yLabel: unit, time: true, height: 180 });
      } else charts[key].update(series);
    }
  };
  tick().then(() => { if (!left) setTimeout(tick, 700); });  // a first point soon, then every 2 s
  every(POLL_MS, tick);
  return card('Live traffic (from the data plane\'s /metrics)', status, box, totals);
}

async function capturedCard(name, ep) {
  const body = h('div');
  const load = async () => {
    try {
      const rows = await api(`/endpoints/${encodeURIComponent(name)}/captured`, { query: { limit: 20 } });
      mount(body, table(rows, [
        { label: 'Time', render: (r) => fmt.time(r.inferenceTime) },
        { label: 'Variant', render: (r) => `${r.variant}${r.shadow ? ' (shadow)' : ''}` },
        { label: 'Model', render: (r) => `${r.model}:${r.modelVersion}` },
        { label: 'Latency', render: (r) => (r.latencyMs !== undefined ? `${fmt.num(r.latencyMs, 3)} ms` : '–') },
        { label: 'Inference id', render: (r) => r.inferenceId || '–' },
        { label: 'Answer', render: (r) => answerText(r.output) },
        { label: 'Request', render: (r) => h('details', null, h('summary', null, `${r.input.observedContentType} (${r.input.encoding})`), h('pre', { class: 'json small' }, String(r.input.data ?? ''))) },
      ], { empty: (ep.spec.capture_percent ?? 0) > 0 ? 'nothing captured yet' : 'capture is off (capture_percent 0)' }));
    } catch (err) { mount(body, errorBox(err)); }
  };
  await load();
  return card('Recently captured requests', h('p', null, h('button', { type: 'button', onclick: load }, 'Reload')), body);
}

function answerText(output) {
  try {
    const j = JSON.parse(output.data);
    return (j.predictions || []).map((p) => `${p.label} (${fmt.pct(p.confidence)})`).join(', ') || '–';
  } catch { return (output && output.encoding) || '–'; }
}

// ---------------------------------------------------------------- try it

async function inputKind(ep) {
  const v = variantsOf(ep)[0];
  if (!v || !v.model || v.version === undefined) return { kind: null };
  try {
    const version = await api(`/models/${encodeURIComponent(v.model)}/versions/${v.version}`);
    return { kind: version.kind, version };
  } catch { return { kind: null }; }
}

async function tabularFields(version) {
  if (!version || !version.dataset) return [];
  const [ds, dv] = version.dataset.split(':');
  try {
    const rec = await api(`/datasets/${encodeURIComponent(ds)}/versions/${encodeURIComponent(dv || 'latest')}`);
    const schema = rec.schema || {};
    const cols = schema.columns || schema.features || [];
    const label = schema.label_column || schema.label || 'label';
    return cols.map((c) => (typeof c === 'string' ? { name: c } : { name: c.name, hint: fieldHint(c) })).filter((c) => c.name && c.name !== label);
  } catch { return []; }
}

// what a column holds, from the training dataset's schema: its categories or its range
function fieldHint(feature) {
  const values = feature.values || feature.categories;
  if (values && values.length) return values.slice(0, 4).join(' / ') + (values.length > 4 ? ' / …' : '');
  if (typeof feature.min === 'number' && typeof feature.max === 'number') return `${feature.min} – ${feature.max}`;
  return '';
}

async function tryIt(name, ep) {
  if (!can('endpoints:invoke', name)) {
    return card('Try it', h('p', { class: 'muted try-denied' }, `Sending a request needs the permission endpoints:${name}:invoke, which this token lacks.`));
  }
  const { kind, version } = await inputKind(ep);
  const result = h('div', { class: 'try-result', 'aria-live': 'polite' });
  const variantPick = h('select', { name: 'variant' }, h('option', { value: '' }, 'weighted (as clients)'),
    variantsOf(ep).map((v) => h('option', { value: v.name }, v.name)));
  const send = async (body, contentType) => {
    mount(result, h('p', { class: 'muted' }, 'sending…'));
    const t0 = performance.now();
    const headers = variantPick.value ? { 'X-Amzn-SageMaker-Target-Variant': variantPick.value } : {};
    const res = await postRaw(`/endpoints/${encodeURIComponent(name)}/invocations`, body, contentType, headers);
    const took = performance.now() - t0;
    if (!res.ok) { mount(result, errorBox(await answerError(res))); return; }
    const answer = await res.json();
    const p = (answer.predictions || [])[0];
    if (!p) { mount(result, jsonBlock(answer)); return; }
    mount(result, 
      h('p', { class: 'prediction' }, 'Prediction: ', h('strong', { class: 'predicted-label' }, String(p.label)),
        ` (${fmt.pct(p.confidence)}) by variant ${res.headers.get('x-amzn-invoked-production-variant') || '?'}, ${took.toFixed(0)} ms round trip`),
      confidenceBars(p));
  };
  const panel = h('div', { class: 'try-it' });
  if (kind === 'image') {
    const pad = drawPad(28, 10);
    const file = h('input', { type: 'file', accept: 'image/png,image/jpeg', name: 'image' });
    file.addEventListener('change', async () => {
      const f = file.files[0];
      if (f) await send(f, f.type || 'image/png');
    });
    mount(panel, h('div', { class: 'try-draw' }, pad.el, h('div', { class: 'try-side' },
      h('p', { class: 'muted' }, 'Draw a digit (white on black), or upload a PNG/JPEG. The 28×28 image below is sent as a PNG; the data plane resizes it to the model\'s input.'),
      pad.small,
      h('p', null, h('button', { type: 'button', class: 'primary', onclick: async () => send(await pad.png(), 'image/png') }, 'Predict'), ' ',
        h('button', { type: 'button', onclick: () => { pad.clear(); mount(result, ); } }, 'Clear')),
      h('p', null, h('label', null, 'Upload: ', file)))));
  } else if (kind === 'text') {
    const text = h('textarea', { rows: 5, cols: 60, name: 'text', placeholder: 'paste a text' });
    mount(panel, text, h('p', null, h('button', { type: 'button', class: 'primary', onclick: () => send(JSON.stringify({ instances: [text.value] }), 'application/json') }, 'Predict')));
  } else if (kind === 'tabular') {
    const cols = await tabularFields(version);
    const inputs = cols.map((c) => [c.name, h('input', { name: c.name, size: 10, placeholder: c.hint || '' })]);
    const raw = h('textarea', { rows: 3, cols: 60, placeholder: '{"instances": [{"column": value, …}]}' });
    const row = () => Object.fromEntries(inputs.map(([c, el]) => [c, el.value === '' || isNaN(Number(el.value)) ? el.value : Number(el.value)]));
    mount(panel, cols.length ? h('div', { class: 'fields' }, inputs.map(([c, el]) => h('label', null, c, ' ', el))) : h('p', { class: 'muted' }, 'The columns are unknown here: write the JSON body.'),
      cols.length ? null : raw,
      h('p', null, h('button', { type: 'button', class: 'primary', onclick: () => send(cols.length ? JSON.stringify({ instances: [row()] }) : raw.value, 'application/json') }, 'Predict')));
  } else {
    const raw = h('textarea', { rows: 4, cols: 60, placeholder: '{"instances": [...]}' });
    mount(panel, raw, h('p', null, h('button', { type: 'button', onclick: () => send(raw.value, 'application/json') }, 'Predict')));
  }
  return card('Try it', h('p', { class: 'muted' }, 'Sent through the data plane\'s own route (POST /endpoints/NAME/invocations, forwarded unchanged by the control plane), so it is counted and captured like any client\'s request. Variant: ', variantPick), panel, result);
}

// ---------------------------------------------------------------- detail

async function detailPage(container, name) {
  const ep = await api(`/endpoints/${encodeURIComponent(name)}`);
  const variants = variantsOf(ep);
  mount(container, 
    h('p', { class: 'crumbs' }, link('#/endpoints', 'Endpoints'), ' / ', name),
    h('h1', null, name, ' ', badge(ep.status)),
    ep.message ? h('p', { class: 'muted' }, ep.message) : null,
    h('div', { class: 'cols' },
      card('Where it is served', kv({
        'Invocation URL': ep.url || 'no data plane running',
        Ready: ep.ready ? 'yes' : 'no', Generation: `${ep.served_generation} served / ${ep.generation} wanted`,
        Created: fmt.time(ep.created_at), Updated: fmt.time(ep.updated_at),
      })),
      card('Capture and batching', kv({
        'Capture': `${fmt.num(ep.spec.capture_percent ?? 0)} % of requests`,
        'Max batch size': ep.spec.max_batch_size ?? '64 (default)',
        'Max batch delay': `${ep.spec.max_batch_delay_ms ?? 2} ms`,
        'Multi-model': ep.spec.multi_model ? 'yes' : 'no',
        'API keys': ep.spec.key_hashes?.length ? `${ep.spec.key_hashes.length}` : 'none',
      }))),
    card('Variants', table(variants, [
      { label: 'Variant', key: 'name' }, { label: 'Wanted', key: 'wanted' },
      { label: 'Serves', render: (v) => (v.model ? link(route('models', v.model, v.version), v.serves) : v.serves) },
      { label: 'Weight', key: 'weight' }, { label: 'Traffic share', render: (v) => fmt.pct(v.share) },
    ]), shadowText(ep) ? h('p', { class: 'shadow' }, 'Shadow: ', shadowText(ep), ' — gets a copy of every request; its answers are captured, never returned.') : h('p', { class: 'muted' }, 'No shadow variant.')),
    liveCharts(name),
    await tryIt(name, ep),
    await capturedCard(name, ep));
}

registerPage('endpoints', {
  title: 'Endpoints',
  render(container, params) {
    return params.path.length ? detailPage(container, params.path[0]) : listPage(container, params);
  },
});
