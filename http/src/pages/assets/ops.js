// The operator console: /admin/actors, /admin/breaker, /admin/faults/payment
// and /metrics (and /admin/cluster on a cluster node, when the page has its
// section), read about once a second with the operator's token; the
// enrollment rate and latency drawn as SVG lines over the last five
// minutes; fault injection as buttons.
'use strict';

(() => {
  const { t, as, api, problem, cell, button, labelCells } = sugang;
  const PERIOD_MS = 1000;
  const WINDOW_S = 300;
  const faultResult = document.getElementById('fault-result');
  let gateway = { latencyMs: 0, failureRate: 0, down: false };
  let previous = null; // the last metrics sample
  const rates = []; // [{at, value}]: completed enrollments per second
  const latencies = []; // [{at, value}]: mean POST /classes latency, ms

  const text = (id, value) => {
    document.getElementById(id).textContent = value;
  };

  /** Prometheus text: name (with labels) → value. */
  function parseMetrics(body) {
    const out = new Map();
    for (const line of String(body).split('\n')) {
      if (!line || line.startsWith('#')) continue;
      const at = line.lastIndexOf(' ');
      out.set(line.slice(0, at), Number(line.slice(at + 1)));
    }
    return out;
  }

  /** Sum of every series of `name` whose labels include each of `matches`. */
  function sum(metrics, name, ...matches) {
    let total = 0;
    for (const [key, value] of metrics) {
      if ((key === name || key.startsWith(name + '{')) && matches.every((m) => key.includes(m))) total += value;
    }
    return total;
  }

  function renderTree(actors) {
    const tbody = document.querySelector('#tree tbody');
    tbody.replaceChildren();
    const root = document.createElement('tr');
    root.append(cell(actors.root, 'name'), cell(t('ops.up')), cell('-'), cell('-'), cell('-'));
    tbody.append(root);
    for (const node of actors.children) {
      const tr = document.createElement('tr');
      tr.dataset.node = node.name;
      const sup = node.supervisor;
      const held = sup && sup.heldDown.length
        ? sup.heldDown.map((h) => `#${h.id} (${Math.ceil(h.retryAfterMs / 1000)} s)`).join(', ')
        : '-';
      tr.append(
        cell(`└ ${node.name}`, 'name'),
        cell(node.alive ? t('ops.up') : t('ops.down'), node.alive ? 'ok' : 'bad'),
        cell(sup ? String(sup.live) : '-', 'num'),
        cell(String(sup ? sup.restartsTotal : node.restarts), 'num'),
        cell(held),
      );
      tbody.append(tr);
    }
    const subs = document.querySelector('#subscribers tbody');
    subs.replaceChildren();
    for (const s of actors.subscribers) {
      const tr = document.createElement('tr');
      tr.dataset.subscriber = s.name;
      tr.append(
        cell(s.name, 'name'),
        cell(s.down ? t('ops.down') : t('ops.up'), s.down ? 'bad' : 'ok'),
        cell(String(s.lag), 'num lag'),
        cell(String(s.offset), 'num'),
        cell(String(s.workers), 'num'),
        cell(String(s.restarts), 'num'),
      );
      const action = document.createElement('td');
      const toggle = button(s.down ? t('ops.subUp') : t('ops.subDown'), () => setSubscriber(s.name, !s.down));
      toggle.setAttribute('aria-label', `${s.down ? t('ops.subUp') : t('ops.subDown')}: ${s.name}`);
      action.append(toggle);
      tr.append(action);
      subs.append(tr);
    }
    labelCells(document.getElementById('tree'));
    labelCells(document.getElementById('subscribers'));
  }

  function renderBreaker(b) {
    const badge = document.getElementById('breaker-state');
    badge.dataset.state = b.state;
    badge.textContent = t('breaker.' + b.state);
    text('breaker-failures', String(b.failures));
    text('breaker-transitions', String(b.transitions));
    text('breaker-in-flight', `${b.inFlight} / ${b.bulkhead}`);
    text('breaker-retry', b.retryAfterMs == null ? '-' : `${(b.retryAfterMs / 1000).toFixed(1)} s`);
  }

  function renderGateway() {
    text('gateway-state', `${gateway.down ? t('ops.down') : t('ops.up')} · ${gateway.latencyMs} ms`);
    const latency = document.getElementById('gateway-latency');
    if (document.activeElement !== latency) latency.value = gateway.latencyMs;
  }

  function renderMetrics(metrics, now) {
    const sample = {
      at: now,
      enrolled: sum(metrics, 'sugang_enrollments_total', 'outcome="completed"'),
      groupSum: sum(metrics, 'sugang_journal_group_size_sum'),
      groupCount: sum(metrics, 'sugang_journal_group_size_count'),
      commitSum: sum(metrics, 'sugang_journal_commit_seconds_sum'),
      commitCount: sum(metrics, 'sugang_journal_commit_seconds_count'),
      enrollSum: sum(metrics, 'sugang_http_request_duration_seconds_sum', 'method="POST"', 'route="/classes"'),
      enrollCount: sum(metrics, 'sugang_http_request_duration_seconds_count', 'method="POST"', 'route="/classes"'),
    };
    text('journal-seq', String(sum(metrics, 'sugang_journal_last_seq')));
    if (previous) {
      const seconds = (sample.at - previous.at) / 1000;
      const groups = sample.groupCount - previous.groupCount;
      const commits = sample.commitCount - previous.commitCount;
      text('journal-group', groups > 0 ? ((sample.groupSum - previous.groupSum) / groups).toFixed(1) : '-');
      text('journal-commit', commits > 0 ? ((1000 * (sample.commitSum - previous.commitSum)) / commits).toFixed(2) : '-');
      if (seconds > 0) rates.push({ at: sample.at, value: Math.max(0, sample.enrolled - previous.enrolled) / seconds });
      const requests = sample.enrollCount - previous.enrollCount;
      const ms = requests > 0 ? (1000 * (sample.enrollSum - previous.enrollSum)) / requests : 0;
      latencies.push({ at: sample.at, value: ms });
      for (const series of [rates, latencies]) {
        while (series.length && series[0].at < now - WINDOW_S * 1000) series.shift();
      }
      drawChart('rate-chart', 'rate-now', rates, now, '/s');
      drawChart('latency-chart', 'latency-now', latencies, now, 'ms');
    }
    previous = sample;
  }

  /** Draws `series` ([{at, value}]) over the last WINDOW_S seconds as an SVG line. */
  function drawChart(svgId, nowId, series, now, unit) {
    const svg = document.getElementById(svgId);
    const ns = 'http://www.w3.org/2000/svg';
    const max = Math.max(1, ...series.map((r) => r.value));
    const points = series
      .map((r) => `${(300 - ((now - r.at) / 1000 / WINDOW_S) * 300).toFixed(1)},${(76 - (r.value / max) * 70).toFixed(1)}`)
      .join(' ');
    const axis = document.createElementNS(ns, 'line');
    Object.entries({ x1: 0, y1: 76, x2: 300, y2: 76, class: 'axis' }).forEach(([k, v]) => axis.setAttribute(k, v));
    const line = document.createElementNS(ns, 'polyline');
    line.setAttribute('points', points);
    line.setAttribute('class', 'rate');
    svg.replaceChildren(axis, line);
    const last = series.length ? series[series.length - 1].value : 0;
    text(nowId, `${last.toFixed(1)} ${unit} (max ${max.toFixed(1)} ${unit})`);
  }

  /** The cluster as the node that served the page sees it (GET /admin/cluster). */
  function renderCluster(c) {
    const seconds = (ms) => (ms == null ? '-' : `${(ms / 1000).toFixed(1)} s`);
    const role = (r) => t(r === 'primary' ? 'ops.rolePrimary' : 'ops.roleReplica');
    text('cluster-here', `${c.node} (${role(c.role)})`);
    text('cluster-primary', c.primary == null ? t('ops.clusterNoPrimary') : c.primary);
    text('cluster-lease', `${seconds(c.leaseAgeMs)} / ${seconds(c.leaseTtlMs)}`);
    text('cluster-stream', `${c.stream.name}: R${c.stream.replicas}, ${c.stream.lastPosition}`);
    const tbody = document.querySelector('#cluster-nodes tbody');
    tbody.replaceChildren();
    for (const n of c.nodes) {
      const tr = document.createElement('tr');
      tr.dataset.node = n.name;
      tr.append(
        cell(n.name, 'name'),
        cell(role(n.role), n.role === 'primary' ? 'ok' : ''),
        cell(String(n.appliedPosition), 'num'),
        cell(String(n.lag), 'num lag'),
        cell(seconds(n.heartbeatAgeMs), 'num'),
        cell((n.units || []).map((u) => `${u.name} (${u.lag})`).join(', ') || '-', 'units'),
      );
      tbody.append(tr);
    }
    labelCells(document.getElementById('cluster-nodes'));
  }

  async function refresh() {
    const hint = document.getElementById('need-who');
    if (!as('admin')) {
      hint.textContent = sugang.open ? t('who.none') : t('ops.needAdmin');
      return;
    }
    const now = Date.now();
    const [actors, breaker, faults, metrics] = await Promise.all([
      api('GET', '/admin/actors'),
      api('GET', '/admin/breaker'),
      api('GET', '/admin/faults/payment'),
      api('GET', '/metrics'),
    ]);
    if (actors.status !== 200) {
      hint.textContent = problem(actors);
      return;
    }
    hint.textContent = '';
    renderTree(actors.body);
    if (breaker.status === 200) renderBreaker(breaker.body);
    if (faults.status === 200) {
      gateway = faults.body;
      renderGateway();
    }
    if (metrics.status === 200) renderMetrics(parseMetrics(metrics.body), now);
    // Only a cluster node's page has the section.
    if (document.getElementById('cluster-nodes')) {
      const cluster = await api('GET', '/admin/cluster');
      if (cluster.status === 200) renderCluster(cluster.body);
      else text('cluster-here', problem(cluster));
    }
  }

  async function setGateway(change) {
    const reply = await api('PUT', '/admin/faults/payment', { ...gateway, ...change });
    if (reply.status === 200) {
      gateway = reply.body;
      renderGateway();
      faultResult.textContent = t('ops.done');
    } else {
      faultResult.textContent = problem(reply);
    }
  }

  async function setSubscriber(name, down) {
    const reply = await api('PUT', `/admin/faults/subscribers/${encodeURIComponent(name)}`, { down });
    faultResult.textContent = reply.status === 200 ? `${t('ops.done')} ${name}` : problem(reply);
    await refresh();
  }

  document.getElementById('gateway-down').addEventListener('click', () => setGateway({ down: true }));
  document.getElementById('gateway-up').addEventListener('click', () => setGateway({ down: false }));
  document.getElementById('gateway-latency-set').addEventListener('click', () => {
    setGateway({ latencyMs: Number(document.getElementById('gateway-latency').value) || 0 });
  });
  document.getElementById('panic-button').addEventListener('click', async () => {
    const id = document.getElementById('panic-course').value;
    const reply = await api('POST', `/admin/faults/courses/${encodeURIComponent(id)}/panic`);
    faultResult.textContent = reply.status === 204 ? `${t('ops.done')} #${id}` : problem(reply);
  });
  document.addEventListener('sugang:who', refresh);

  // One refresh at a time, about once a second.
  (async function loop() {
    await refresh();
    setTimeout(loop, PERIOD_MS);
  })();
})();
