// Workflows: the state machine drawn from its ASL definition (dagre layout), executions, and one
// execution's path coloured by state outcome, its event history and each step's input/output;
// start and stop buttons (the API decides who may).
import { api, h, mount, registerPage, table, badge, fmt, card, kv, link, route, filters, errorBox, actionButton, refresh, every, pager, setQuery } from '../app.js';
import { drawGraph, stateOutcomes, jsonBlock, EXECUTION_END } from './_ops.js';

const TERMINAL = new Set(['SUCCEEDED', 'FAILED', 'TIMED_OUT', 'ABORTED']);
const PAGE = 50;  // executions a page (the server pages: a cron trigger adds one a minute)
const wf = (name) => `/workflows/${encodeURIComponent(name)}`;

function executionsTable(rows, { withWorkflow = true } = {}) {
  return table(rows, [
    { label: 'Execution', render: (e) => link(route('workflows', e.workflow, e.id), e.id) },
    withWorkflow ? { label: 'Workflow', render: (e) => link(route('workflows', e.workflow), e.workflow) } : null,
    { label: 'Status', render: (e) => badge(e.status) },
    { label: 'State', render: (e) => e.current_state || e.failed_state || '–' },
    { label: 'Source', render: (e) => e.source || '–' },
    { label: 'Started', render: (e) => fmt.time(e.started_at || e.created_at) },
    { label: 'Took', render: (e) => (e.started_at ? fmt.duration(e.started_at, e.ended_at) : '–') },
    { label: 'Error', render: (e) => (e.error ? `${e.error}${e.cause ? `: ${e.cause}` : ''}` : '–') },
  ].filter(Boolean), { empty: 'no executions' });
}

async function listPage(container, params) {
  const [workflows, executions] = await Promise.all([
    api('/workflows'),
    api('/executions', { query: { status: params.query.status, workflow: params.query.workflow, limit: PAGE, offset: offsetOf(params) } }),
  ]);
  mount(container, h('h1', null, 'Workflows'),
    card('Workflows', table(workflows, [
      { label: 'Workflow', render: (w) => link(route('workflows', w.name), w.name) },
      { label: 'States', render: (w) => Object.keys(w.definition.States || {}).length },
      { label: 'Starts at', render: (w) => w.definition.StartAt },
      { label: 'Description', render: (w) => w.description || w.definition.Comment || '–' },
      { label: 'Updated', render: (w) => fmt.time(w.updated_at) },
    ], { empty: 'no workflows yet: loopml workflows create NAME --template retrain' })),
    card('Recent executions', filters(params, [
      { name: 'workflow', options: workflows.map((w) => w.name) },
      { name: 'status', options: ['PENDING', 'RUNNING', 'SUCCEEDED', 'FAILED', 'TIMED_OUT', 'ABORTED'] },
    ]), executionsTable(executions), executionsPager(params, executions)));
}

const offsetOf = (params) => Math.max(0, Number(params.query.offset) || 0);

function executionsPager(params, rows) {
  return pager({ offset: offsetOf(params), limit: PAGE, count: rows.length }, (o) => setQuery({ ...params.query, offset: o }));
}

async function workflowPage(container, name, params) {
  const [workflow, executions] = await Promise.all([api(wf(name)), api('/executions', { query: { workflow: name, limit: PAGE, offset: offsetOf(params) } })]);
  const graph = h('div', { class: 'graph-box' });
  const input = h('textarea', { rows: 4, cols: 50, name: 'input', placeholder: '{}' }, '{}');
  mount(container, 
    h('p', { class: 'crumbs' }, link('#/workflows', 'Workflows'), ' / ', name),
    h('h1', null, name),
    workflow.description ? h('p', null, workflow.description) : null,
    card('State machine', graph),
    card('Start an execution', h('label', null, 'Input (JSON) ', input), h('p', null, actionButton('Start', async () => {
      let body;
      try { body = JSON.parse(input.value || '{}'); } catch (err) { throw new Error(`input: not JSON (${err.message})`); }
      const ex = await api(`${wf(name)}/executions`, { method: 'POST', body: { input: body } });
      location.hash = route('workflows', name, ex.id);
    }, { class: 'primary', need: ['workflows:start', name] }))),
    card('Executions', executionsTable(executions, { withWorkflow: false }), executionsPager(params, executions)),
    card('Definition (Amazon States Language)', h('details', null, h('summary', null, 'show'), h('pre', { class: 'json' }, workflow.source || fmt.json(workflow.definition)))));
  await drawGraph(graph, workflow.definition, {}, null);
}

function stepsOf(history) {
  const steps = [];
  const open = new Map();
  for (const ev of history) {
    if (!ev.state) {
      const end = EXECUTION_END[ev.type];  // the execution ended: a state still open (a Fail state) ends with it
      if (end) for (const step of open.values()) { step.exited = ev.at; if (step.outcome === 'running') step.outcome = end; }
      if (end) open.clear();
      continue;
    }
    const d = ev.details || {};
    const key = `${d.branch || ''}/${ev.state}`;
    if (ev.type === 'StateEntered') {
      const step = { state: ev.state, branch: d.branch, input: d.input, entered: ev.at, outcome: 'running' };
      steps.push(step);
      open.set(key, step);
    } else if (open.has(key)) {
      const step = open.get(key);
      if (ev.type === 'StateExited') { step.output = d.output; step.exited = ev.at; if (step.outcome === 'running') step.outcome = 'succeeded'; open.delete(key); }
      else if (ev.type === 'TaskFailed' || ev.type === 'ErrorCaught') { step.outcome = 'failed'; step.error = `${d.error || ''}${d.cause ? `: ${d.cause}` : ''}`; }
      else if (ev.type === 'TaskScheduled') step.resource = d.resource;
      else if (ev.type === 'TaskSucceeded') { step.result = d.output; if (step.outcome === 'failed') { step.outcome = 'running'; step.error = undefined; } }  // a retry succeeded
    }
  }
  return steps;
}

async function executionPage(container, name, id) {
  const graph = h('div', { class: 'graph-box' });
  const summary = h('div');
  const steps = h('div');
  const events = h('div');
  const selected = { state: null };
  let last = null;
  const load = async () => {
    const [workflow, ex, history] = await Promise.all([api(wf(name)), api(`/executions/${encodeURIComponent(id)}`), api(`/executions/${encodeURIComponent(id)}/history`)]);
    const done = TERMINAL.has(ex.status);
    mount(summary, kv({
      Status: badge(ex.status), 'Current state': ex.current_state, 'Failed in': ex.failed_state,
      Started: fmt.time(ex.started_at || ex.created_at), Ended: fmt.time(ex.ended_at), Took: ex.started_at ? fmt.duration(ex.started_at, ex.ended_at) : null,
      Source: ex.source, Error: ex.error ? `${ex.error}${ex.cause ? `: ${ex.cause}` : ''}` : null,
    }), h('div', { class: 'cols' }, h('div', null, h('h3', null, 'Input'), jsonBlock(ex.input)), h('div', null, h('h3', null, 'Output'), jsonBlock(ex.output))),
    done ? null : h('p', null, actionButton('Stop', async () => { await api(`/executions/${encodeURIComponent(id)}/stop`, { method: 'POST' }); await load(); return 'stop requested'; }, { class: 'danger', need: ['workflows:write'] })));
    const outcome = stateOutcomes(history);
    const terminal = ex.status === 'SUCCEEDED' ? 'succeeded' : done ? 'failed' : null;
    const shape = JSON.stringify([outcome, terminal]);
    if (shape !== last) {
      last = shape;
      await drawGraph(graph, workflow.definition, outcome, (state) => { selected.state = state; renderSteps(); }, terminal);
      graph.dataset.status = ex.status;
    }
    const list = stepsOf(history);
    const renderSteps = () => mount(steps, table(list.filter((s) => !selected.state || s.state === selected.state), [
      { label: 'State', render: (s) => `${s.branch ? `${s.branch} › ` : ''}${s.state}` },
      { label: 'Outcome', render: (s) => badge(s.outcome) },
      { label: 'Resource', render: (s) => s.resource || '–' },
      { label: 'Entered', render: (s) => fmt.time(s.entered) },
      { label: 'Took', render: (s) => (s.entered ? fmt.duration(s.entered, s.exited) : '–') },
      { label: 'Input', render: (s) => h('details', null, h('summary', null, 'input'), jsonBlock(s.input)) },
      { label: 'Output', render: (s) => (s.error ? h('span', { class: 'error-text' }, s.error) : h('details', null, h('summary', null, 'output'), jsonBlock(s.output))) },
    ], { empty: selected.state ? `state ${selected.state} did not run` : 'no step yet' }),
    selected.state ? h('p', null, h('button', { type: 'button', onclick: () => { selected.state = null; renderSteps(); } }, 'Show every step')) : null);
    renderSteps();
    mount(events, table(history, [
      { label: '#', key: 'seq' }, { label: 'Event', key: 'type' }, { label: 'State', render: (e) => e.state || '–' },
      { label: 'At', render: (e) => fmt.time(e.at) },
      { label: 'Details', render: (e) => (e.details ? h('details', null, h('summary', null, Object.keys(e.details).join(', ')), jsonBlock(e.details)) : '–') },
    ], { empty: 'no events yet' }));
    return done;
  };
  mount(container, 
    h('p', { class: 'crumbs' }, link('#/workflows', 'Workflows'), ' / ', link(route('workflows', name), name), ' / ', id),
    h('h1', null, `Execution ${id}`),
    card('Execution', summary),
    card('Path (click a state for its steps)', h('p', { class: 'legend' }, ['succeeded', 'running', 'failed', 'not-run'].map((s) => h('span', { class: `legend-item state-${s}` }, s))), graph),
    card('Steps: input and output', steps),
    card('Event history', events));
  const done = await load();
  if (!done) {
    const id_ = every(2000, async () => { try { if (await load()) clearInterval(id_); } catch (err) { summary.append(errorBox(err)); clearInterval(id_); } });
  }
}

registerPage('workflows', {
  title: 'Workflows',
  render(container, params) {
    const [name, execution] = params.path;
    if (execution) return executionPage(container, name, execution);
    return name ? workflowPage(container, name, params) : listPage(container, params);
  },
});
