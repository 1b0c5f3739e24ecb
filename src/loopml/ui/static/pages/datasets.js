// Datasets: every dataset, its versions, and one version's schema, class balance, splits, rows and lineage.
import {
  api, badge, barChart, card, filters, fmt, h, kv, link, mount, pager, registerPage, route, setQuery, table,
} from '../app.js';

const ROWS = 24;
const PAGE = 50;

registerPage('datasets', {
  title: 'Datasets',
  async render(el, params) {
    const [name, version] = params.path;
    if (!name) return renderList(el, params);
    const versions = (await api(`/datasets/${encodeURIComponent(name)}`)).versions;
    const chosen = version ? Number(version) : versions.at(-1)?.version;
    return renderVersion(el, params, name, versions, chosen);
  },
});

async function renderList(el, params) {
  // filtered and paged by the server: the page costs the same with 3 datasets or 3000
  const offset = Number(params.query.offset || 0);
  const rows = await api('/datasets', { query: { name: params.query.name, kind: params.query.kind, limit: PAGE, offset } });
  const filtered = params.query.name || params.query.kind || offset;
  el.append(
    h('h1', null, 'Datasets'),
    filters(params, [{ name: 'name', label: 'name', placeholder: 'contains…' }, { name: 'kind', label: 'kind', options: ['image', 'text', 'tabular'] }]),
    card(null, table(rows, [
      { label: 'dataset', render: (d) => link(route('datasets', d.name), d.name) },
      { label: 'kind', render: (d) => d.latest?.kind },
      { label: 'versions', key: 'versions', class: 'num' },
      { label: 'latest', render: (d) => link(route('datasets', d.name, d.latest_version), `v${d.latest_version}`) },
      { label: 'rows', class: 'num', render: (d) => d.latest?.rows },
      { label: 'classes', class: 'num', render: (d) => (d.latest?.schema?.classes || []).length },
      { label: 'source', render: (d) => h('span', { class: 'mono' }, d.latest?.source) },
      { label: 'created', render: (d) => fmt.ago(d.latest?.created_at) },
    ], { empty: filtered ? 'no dataset matches' : 'no datasets yet: `loopml datasets add digits sample:digits`' }),
    pager({ offset, limit: PAGE, count: rows.length, labels: ['‹ previous', 'next ›'] }, (o) => setQuery({ ...params.query, offset: o }))),
  );
}

async function renderVersion(el, params, name, versions, chosen) {
  const record = versions.find((v) => v.version === chosen);
  if (!record) throw new Error(`dataset ${name} has no version ${chosen}`);
  const models = await api(`/datasets/${encodeURIComponent(name)}/versions/${chosen}/models`);
  const schema = record.schema || {};
  const counts = schema.class_counts || {};
  const splitCounts = record.splits?.counts || {};

  const balance = h('div');
  barChart(balance, (schema.classes || Object.keys(counts)).map((c) => ({ label: c, value: counts[c] ?? 0 })),
    { format: (v) => `${fmt.num(v)} (${fmt.pct(v / Math.max(1, record.rows))})` });
  const splitBars = h('div');
  barChart(splitBars, Object.entries(splitCounts).map(([s, n]) => ({ label: s, value: n })), { max: record.rows });

  const samples = h('div', { class: 'sample-area' });
  el.append(
    h('h1', null, link(route('datasets'), 'Datasets'), ' / ', name, ' ', h('span', { class: 'muted' }, `v${chosen}`)),
    h('div', { class: 'cols' },
      card('Version', kv({
        Reference: h('span', { class: 'mono' }, record.ref), Kind: record.kind, Rows: record.rows,
        Source: h('span', { class: 'mono' }, record.source), Format: record.format,
        'Content hash': h('span', { class: 'mono', title: record.content_hash }, record.content_hash?.slice(0, 16)),
        Created: fmt.time(record.created_at), 'Split seed': record.splits?.seed,
      })),
      card('Versions', table([...versions].reverse(), [
        { label: 'version', render: (v) => (v.version === chosen ? h('strong', null, `v${v.version}`) : link(route('datasets', name, v.version), `v${v.version}`)) },
        { label: 'rows', key: 'rows', class: 'num' },
        { label: 'source', render: (v) => h('span', { class: 'mono' }, v.source) },
        { label: 'created', render: (v) => fmt.ago(v.created_at) },
      ], { rowAttrs: (v) => (v.version === chosen ? { class: 'selected' } : null) }))),
    h('div', { class: 'cols' },
      card('Class balance', h('div', { class: 'muted' }, `${(schema.classes || []).length} classes`), balance),
      card('Splits', splitBars, h('p', { class: 'muted' }, `fractions ${(record.splits?.fractions || []).join(' / ')}`))),
    card('Schema', table(schema.features || [], [
      { label: 'feature', key: 'name' }, { label: 'dtype', key: 'dtype' },
      { label: 'shape / values', render: (f) => (f.shape ? f.shape.join('×') : (f.values || f.categories || []).slice(0, 8).join(', ')) },
      { label: 'min', class: 'num', render: (f) => dataValue(f.min) }, { label: 'max', class: 'num', render: (f) => dataValue(f.max) },
      { label: 'missing', class: 'num', render: (f) => f.missing ?? f.nulls },
    ], { empty: 'no schema recorded' })),
    card('Rows', samples),
    card('Lineage: models trained on this version', table(models, [
      { label: 'model version', render: (m) => link(route('models', m.name, m.version), m.ref) },
      { label: 'aliases', render: (m) => h('span', null, (m.aliases || []).map((a) => h('span', { class: 'tag' }, a))) },
      { label: 'job', render: (m) => (m.job_id ? link(route('jobs', m.job_id), m.job_id) : '–') },
      { label: 'test accuracy', class: 'num', render: (m) => fmt.num(m.metrics?.test_accuracy) },
      { label: 'created', render: (m) => fmt.ago(m.created_at) },
    ], { empty: 'no model was trained on this version yet' })),
  );
  await renderSamples(samples, params, name, chosen, schema);
}

async function renderSamples(box, params, name, version, schema) {
  const split = params.query.split || 'train';
  const offset = Number(params.query.offset || 0);
  const page = await api(`/datasets/${encodeURIComponent(name)}/versions/${version}/rows`, { query: { split, offset, limit: ROWS } });
  const pick = h('select', { name: 'split', onchange: () => setQuery({ ...params.query, split: pick.value, offset: 0 }) },
    ['train', 'validation', 'test'].map((s) => h('option', { value: s, selected: s === split }, s)));
  let body;
  if (page.kind === 'image') body = h('div', { class: 'samples' }, page.rows.map((r) => imageSample(r, schema)));
  else if (page.kind === 'text') body = h('div', null, page.rows.map((r) => h('div', { class: 'text-sample' }, badge(r.label), ' ', h('span', { class: 'muted' }, `#${r.index}`), h('p', null, r.text, r.truncated ? '…' : ''))));
  else body = table(page.rows, [{ label: '#', key: 'index', class: 'num' }, { label: 'label', render: (r) => badge(r.label) },
    ...(page.columns || []).map((c) => ({ label: c, render: (r) => dataValue(r.values?.[c]) }))]);
  mount(box,
    h('div', { class: 'toolbar' }, h('label', null, 'split ', pick), h('span', { class: 'muted' }, `${fmt.num(page.total)} rows`)),
    body,
    pager({ offset, limit: ROWS, count: page.rows.length }, (o) => setQuery({ ...params.query, split, offset: o })));
}

/** A value of the data as it is (a year 2007 stays 2007, not 2,007; long fractions are cut to 6 digits). */
function dataValue(v) {
  if (typeof v !== 'number') return v;
  return Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(6)));
}

/** A digit (any image) drawn from its pixel values on a canvas, scaled up without smoothing. */
function imageSample(row, schema) {
  const img = row.image;
  const H = img.length, W = img[0].length;
  const feature = (schema.features || [])[0] || {};
  let lo = feature.min, hi = feature.max;
  if (lo === undefined || hi === undefined) {
    const flat = img.flat(2);
    lo = Math.min(...flat); hi = Math.max(...flat);
  }
  const canvas = h('canvas', { width: W, height: H, title: `row ${row.index}: ${row.label}` });
  const scale = Math.max(1, Math.round(64 / Math.max(W, H)));
  canvas.style.width = `${W * scale}px`;
  canvas.style.height = `${H * scale}px`;
  const ctx = canvas.getContext('2d');
  const data = ctx.createImageData(W, H);
  const span = hi - lo || 1;
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const px = img[y][x];
      const c = Array.isArray(px) ? px : [px];
      const v = (ch) => Math.round(255 * ((c[ch] ?? c[0]) - lo) / span);
      const o = (y * W + x) * 4;
      data.data[o] = v(0); data.data[o + 1] = v(c.length >= 3 ? 1 : 0); data.data[o + 2] = v(c.length >= 3 ? 2 : 0); data.data[o + 3] = 255;
    }
  }
  ctx.putImageData(data, 0, 0);
  return h('div', { class: 'sample', dataset: { label: row.label } }, canvas, h('span', null, row.label));
}
