// Helpers shared by the endpoints, monitors, workflows, triggers and functions pages (not pages
// themselves: index.js does not import this file; the pages do).
import { BASE, ApiError, h, fmt, token, link, route } from '../app.js';

/** POST raw bytes (an image, JSON text) to an API path; returns the Response (not thrown on 4xx). */
export async function postRaw(path, body, contentType, extra = {}) {
  const headers = { ...extra, 'Content-Type': contentType };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  // bytes, not a Blob: sent the same, and visible to the browser tests' request log
  const bytes = body instanceof Blob ? new Uint8Array(await body.arrayBuffer()) : body;
  return fetch(BASE + path, { method: 'POST', body: bytes, headers });
}

/** The error message of a data-plane (SageMaker: {message}) or API ({code, message}) answer. */
export async function answerError(res) {
  let message = `HTTP ${res.status}`;
  try { const j = await res.json(); message = j.message || message; } catch { /* not JSON */ }
  return new ApiError(res.status, res.headers.get('x-amzn-errortype') || 'error', message);
}

/** A <pre> with pretty JSON (long values scroll). */
export function jsonBlock(value, attrs = {}) {
  return h('pre', { class: 'json', ...attrs }, value === undefined ? '' : fmt.json(value));
}

// ------------------------------------------------------------------ histograms → live numbers

/** Cumulative [[le, count], …] (le null = +Inf) minus an older read of the same buckets. */
export function bucketDelta(now, before) {
  const old = new Map((before || []).map(([le, c]) => [le, c]));
  return (now || []).map(([le, c]) => [le, Math.max(0, c - (old.get(le) || 0))]);
}

/** The q-quantile of cumulative buckets (linear inside a bucket, like PromQL's histogram_quantile). */
export function quantile(buckets, q) {
  if (!buckets || !buckets.length) return null;
  const total = buckets[buckets.length - 1][1];
  if (!total) return null;
  const rank = q * total;
  let lower = 0, below = 0;
  for (const [le, c] of buckets) {
    if (c >= rank) {
      if (le === null) return lower;  // in the +Inf bucket: the highest finite bound
      return lower + (le - lower) * ((rank - below) / Math.max(1, c - below));
    }
    if (le !== null) lower = le;
    below = c;
  }
  return lower;
}

/**
 * Live per-variant series from successive /endpoints/NAME/stats reads: push(stats) → adds one
 * point per variant (req/s, errors/s, p50/p90/p99 ms, mean batch rows) from the difference with
 * the previous read; keeps the last `keep` points.
 */
export class LiveStats {
  constructor(keep = 150) { this.keep = keep; this.prev = null; this.series = {}; }

  push(stats) {
    const prev = this.prev;
    this.prev = stats;
    if (!prev) return false;
    const dt = stats.at - prev.at;
    if (dt <= 0) return false;
    const x = stats.at;
    for (const [variant, now] of Object.entries(stats.variants)) {
      const before = prev.variants[variant] || { requests: 0, errors: 0, batches: 0, batch_rows: 0, latency: { buckets: [] } };
      const lat = bucketDelta(now.latency.buckets, before.latency.buckets);
      const batches = now.batches - (before.batches || 0);
      const point = {
        rps: Math.max(0, now.requests - before.requests) / dt,
        eps: Math.max(0, now.errors - before.errors) / dt,
        p50: ms(quantile(lat, 0.5)), p90: ms(quantile(lat, 0.9)), p99: ms(quantile(lat, 0.99)),
        batch: batches > 0 ? (now.batch_rows - (before.batch_rows || 0)) / batches : null,
      };
      const s = this.series[variant] || (this.series[variant] = []);
      s.push([x, point]);
      if (s.length > this.keep) s.shift();
    }
    return true;
  }

  /** [{label, points}] of one measure for lineChart, one series per variant (or per percentile). */
  lines(measure) {
    const out = [];
    for (const [variant, pts] of Object.entries(this.series)) {
      if (measure === 'latency') {
        for (const p of ['p50', 'p90', 'p99']) out.push({ label: `${variant} ${p}`, points: pts.map(([x, v]) => [x, v[p]]), dash: p === 'p50' ? [4, 4] : undefined });
      } else out.push({ label: variant, points: pts.map(([x, v]) => [x, v[measure]]) });
    }
    return out.length ? out : [{ label: 'no traffic yet', points: [] }];
  }
}

const ms = (s) => (s === null ? null : s * 1000);

// ------------------------------------------------------------------ small widgets

/** Confidence bars of one prediction: the label first, then the other classes by probability. */
export function confidenceBars(prediction, top = 10) {
  const probs = Object.entries(prediction.probabilities || { [prediction.label]: prediction.confidence })
    .sort((a, b) => b[1] - a[1]).slice(0, top);
  return h('div', { class: 'bars conf-bars' }, probs.map(([label, p]) => h('div', { class: `bar-row${label === String(prediction.label) ? ' best' : ''}`, title: `${label}: ${(p * 100).toFixed(2)}%` },
    h('span', { class: 'bar-label' }, label),
    h('span', { class: 'bar-track' }, h('span', { class: 'bar-fill', style: { width: `${Math.max(0, Math.min(100, p * 100))}%` } })),
    h('span', { class: 'bar-value' }, `${(p * 100).toFixed(1)}%`))));
}

/**
 * A drawing pad: a big canvas the mouse/finger draws on (white on black, like MNIST), scaled
 * down to size×size for the model. Returns {el, clear(), png() → Promise<Blob>, small canvas}.
 */
export function drawPad(size = 28, scale = 10) {
  const big = h('canvas', { width: size * scale, height: size * scale, class: 'draw-pad', 'aria-label': 'draw a digit here' });
  const small = h('canvas', { width: size, height: size, class: 'draw-preview', title: `what the model gets: ${size}×${size}` });
  const ctx = big.getContext('2d');
  const clear = () => { ctx.fillStyle = '#000'; ctx.fillRect(0, 0, big.width, big.height); shrink(); };
  const shrink = () => {
    const c = small.getContext('2d');
    c.imageSmoothingEnabled = true;
    c.imageSmoothingQuality = 'high';
    c.fillStyle = '#000';
    c.fillRect(0, 0, size, size);
    c.drawImage(big, 0, 0, size, size);
  };
  let last = null;
  const at = (e) => { const r = big.getBoundingClientRect(); return [(e.clientX - r.left) * (big.width / r.width), (e.clientY - r.top) * (big.height / r.height)]; };
  big.addEventListener('pointerdown', (e) => { last = at(e); big.setPointerCapture?.(e.pointerId); e.preventDefault(); });
  big.addEventListener('pointermove', (e) => {
    if (!last) return;
    const p = at(e);
    ctx.strokeStyle = '#fff';
    ctx.lineWidth = scale * 2.2;
    ctx.lineCap = ctx.lineJoin = 'round';
    ctx.beginPath(); ctx.moveTo(...last); ctx.lineTo(...p); ctx.stroke();
    last = p;
  });
  const end = () => { if (last) { last = null; shrink(); } };
  big.addEventListener('pointerup', end);
  big.addEventListener('pointerleave', end);
  clear();
  return { el: big, small, clear, png: () => new Promise((resolve) => small.toBlob(resolve, 'image/png')) };
}

// ------------------------------------------------------------------ state machines → graphs

/**
 * An ASL definition → {nodes: [{id, label, type}], edges: [{from, to, label}]}. Parallel branches and
 * Map iterators are drawn inline: their states get ids "PARENT/i/STATE" and rejoin at the parent's Next.
 */
export function aslGraph(def, prefix = '', exits = null) {
  const nodes = [], edges = [];
  const states = def.States || {};
  const id = (name) => prefix + name;
  if (!prefix) {
    nodes.push({ id: '__start', label: 'Start', type: 'Start' });
    edges.push({ from: '__start', to: id(def.StartAt) });
  }
  const ends = [];
  for (const [name, st] of Object.entries(states)) {
    nodes.push({ id: id(name), label: name, type: st.Type, name });
    const next = (target, label) => edges.push({ from: id(name), to: id(target), label });
    const subsOf = st.Type === 'Parallel' ? (st.Branches || []) : st.Type === 'Map' ? [st.ItemProcessor || st.Iterator].filter(Boolean) : [];
    if (st.Next && !subsOf.length) next(st.Next);  // a Parallel/Map reaches Next through its branches
    if (st.Type === 'Choice') {
      (st.Choices || []).forEach((c, i) => next(c.Next, `rule ${i + 1}`));
      if (st.Default) next(st.Default, 'default');
    }
    for (const c of st.Catch || []) next(c.Next, `catch ${(c.ErrorEquals || []).join(',')}`);
    if (st.End || st.Type === 'Succeed' || st.Type === 'Fail') ends.push(id(name));
    subsOf.forEach((sub, i) => {
      const inner = aslGraph(sub, `${id(name)}/${i}/`, []);
      nodes.push(...inner.nodes);
      edges.push(...inner.edges, { from: id(name), to: `${id(name)}/${i}/${sub.StartAt}`, label: st.Type === 'Map' ? 'each item' : `branch ${i + 1}` });
      const join = st.Next ? id(st.Next) : null;
      for (const end of inner.ends) if (join) edges.push({ from: end, to: join, label: 'joined' });
    });
  }
  if (!prefix) {
    nodes.push({ id: '__end', label: 'End', type: 'End' });
    for (const e of ends) edges.push({ from: e, to: '__end' });
  }
  return { nodes, edges, ends };
}

/** The history events that end an execution, and what they make of a state still open then. */
export const EXECUTION_END = { ExecutionSucceeded: 'succeeded', ExecutionFailed: 'failed', ExecutionAborted: 'failed' };

/**
 * Each state's outcome in an execution, from its history: running | succeeded | failed. A task
 * that failed and then succeeded on a retry succeeded; a state still open when the execution
 * ended (a Fail state, the task an abort cut short) takes the execution's outcome.
 */
export function stateOutcomes(history) {
  const out = {};
  for (const ev of history) {
    const s = ev.state;
    if (!s) {
      const end = EXECUTION_END[ev.type];
      if (end) for (const k of Object.keys(out)) if (out[k] === 'running') out[k] = end;
      continue;
    }
    if (ev.type === 'StateEntered') out[s] = out[s] === 'failed' ? 'failed' : 'running';
    else if (ev.type === 'StateExited' && out[s] !== 'failed') out[s] = 'succeeded';
    else if (ev.type === 'TaskSucceeded' && out[s] === 'failed') out[s] = 'running';  // a retry succeeded
    else if (ev.type === 'TaskFailed' || ev.type === 'ErrorCaught') out[s] = 'failed';
  }
  return out;
}

/**
 * Draw an ASL graph as SVG, laid out by dagre (vendored). outcome: {stateName: 'succeeded'|…};
 * states of the path are coloured, the edges it took are thick. onClick(name) selects a state.
 */
export async function drawGraph(container, def, outcome = {}, onClick = null, terminal = null) {
  const { default: dagre } = await import('../vendor/dagre-3.1.3/dagre.esm.js');
  const { nodes, edges } = aslGraph(def);
  const g = new dagre.graphlib.Graph({ multigraph: true });
  g.setGraph({ rankdir: 'TB', nodesep: 28, ranksep: 38, marginx: 8, marginy: 8 });
  g.setDefaultEdgeLabel(() => ({}));
  const known = new Set(nodes.map((n) => n.id));
  for (const n of nodes) g.setNode(n.id, { width: Math.max(90, n.label.length * 7.5 + 26), height: n.type === 'Start' || n.type === 'End' ? 26 : 40, n });
  edges.forEach((e, i) => { if (known.has(e.to)) g.setEdge(e.from, e.to, { label: e.label, width: e.label ? e.label.length * 6 : 0, height: e.label ? 14 : 0 }, `e${i}`); });
  dagre.layout(g);
  const outcomeOf = (n) => {
    if (n.type === 'Start') return Object.keys(outcome).length ? 'succeeded' : null;
    if (n.type === 'End') return terminal;
    return outcome[n.name] || outcome[n.id.split('/').pop()] || null;
  };
  const width = g.graph().width, height = g.graph().height;
  const svg = h('svg', { viewBox: `0 0 ${width} ${height}`, class: 'asl-graph', role: 'img', 'aria-label': 'state machine', width, style: { maxWidth: '100%', height: 'auto' } });
  svg.append(h('svg:defs', null, h('svg:marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
    h('svg:path', { d: 'M 0 0 L 10 5 L 0 10 z', fill: '#94a3b8' }))));
  for (const e of g.edges()) {
    const ed = g.edge(e);
    const taken = outcomeOf(g.node(e.v).n) && outcomeOf(g.node(e.w).n);
    const d = ed.points.map((p, i) => `${i ? 'L' : 'M'}${p.x.toFixed(1)},${p.y.toFixed(1)}`).join(' ');
    svg.append(h('svg:path', { d, class: `edge${taken ? ' taken' : ''}`, 'marker-end': 'url(#arrow)' }));
    if (ed.label) svg.append(h('svg:text', { x: ed.x, y: ed.y + 4, class: 'edge-label', 'text-anchor': 'middle' }, ed.label));
  }
  for (const id of g.nodes()) {
    const { x, y, width: w, height: hh, n } = g.node(id);
    const state = outcomeOf(n);
    const group = h('svg:g', { class: `node node-${(n.type || '').toLowerCase()}${state ? ` state-${state}` : ''}`, 'data-state': n.name || n.type, 'data-outcome': state || 'not-run', transform: `translate(${x - w / 2},${y - hh / 2})`, tabindex: n.name ? 0 : null });
    group.append(h('svg:rect', { width: w, height: hh, rx: n.type === 'Start' || n.type === 'End' ? 13 : 6 }));
    group.append(h('svg:text', { x: w / 2, y: n.type === 'Start' || n.type === 'End' ? 17 : 17, 'text-anchor': 'middle', class: 'node-name' }, n.label));
    if (n.name) group.append(h('svg:text', { x: w / 2, y: 32, 'text-anchor': 'middle', class: 'node-type' }, n.type));
    if (n.name && onClick) group.addEventListener('click', () => onClick(n.name));
    group.append(h('svg:title', null, `${n.label} (${n.type})${state ? `: ${state}` : ''}`));
    svg.append(group);
  }
  container.replaceChildren(svg);
  return svg;
}

/** A link to what a firing started: a workflow execution or a function invocation. */
export function startedLink(target, startedId) {
  if (!startedId || !target) return '–';
  return target.kind === 'workflow'
    ? link(route('workflows', target.name, startedId), startedId)
    : link(`${route('functions', target.name)}?invocation=${encodeURIComponent(startedId)}`, startedId);
}

