// The waiting room. On the catalog: when POST /classes answers 428 the
// student takes a ticket (POST /queue/tickets: the same ticket again on a
// retry), sees the position and the ETA move (the ticket's Server-Sent
// Events with auth off; with a token, which an EventSource cannot send, a
// look every second), and once admitted the enrollment is sent on with
// the admission (X-Sugang-Admission). The ticket and the
// enrollment wait in this tab's sessionStorage, so a reload keeps the
// place. On /ops: the live queue (GET /admin/gate) and its settings (PUT).
'use strict';

(() => {
  const { t, as, api, problem } = sugang;
  const KEY = 'sugang.queue';
  const POLL_MS = 1000;

  // ---- the student's waiting room ----------------------------------------

  const room = document.getElementById('waiting-room');
  const status = document.getElementById('queue-status');
  let timer = null;
  let source = null; // the ticket's event stream, while following it

  const text = (id, value) => {
    document.getElementById(id).textContent = value;
  };

  /** `{ticket, student, courseName, enroll}` of this tab, or null. */
  function waiting() {
    try {
      return JSON.parse(sessionStorage.getItem(KEY));
    } catch {
      return null;
    }
  }

  function stopFollowing() {
    clearTimeout(timer);
    if (source) source.close();
    source = null;
  }

  function forget() {
    sessionStorage.removeItem(KEY);
    stopFollowing();
  }

  /** Waits for the ticket's next move: its stream with auth off, else a look in a second. */
  function follow(mine) {
    if (!sugang.open) {
      timer = setTimeout(poll, POLL_MS);
      return;
    }
    if (source) return;
    source = new EventSource(`/queue/tickets/${mine.ticket}/events`);
    source.addEventListener('ticket', (e) => show(JSON.parse(e.data)));
    source.addEventListener('error', () => {
      // Refused (too many streams) or cut: look instead.
      stopFollowing();
      timer = setTimeout(poll, POLL_MS);
    });
  }

  function say(key, outcome, vars) {
    status.dataset.status = outcome;
    status.textContent = t(key, vars);
  }

  async function join(enroll, courseName) {
    const person = as('student');
    if (!person) return;
    const reply = await api('POST', '/queue/tickets', { student: enroll.student });
    if (reply.status !== 201 && reply.status !== 200) {
      room.hidden = false;
      say('gate.failed', 'error');
      status.textContent += ` ${problem(reply)}`;
      return;
    }
    sessionStorage.setItem(KEY, JSON.stringify({ ticket: reply.body.id, student: enroll.student, courseName, enroll }));
    await show(reply.body);
    // Where the student now waits: the keyboard and the screen reader go there too.
    document.getElementById('waiting-title').focus();
  }

  /** Shows a ticket; enrolls once admitted; looks again in a second otherwise. */
  async function show(ticket) {
    const mine = waiting();
    if (!mine) return;
    room.hidden = false;
    text('queue-course', mine.courseName || String(mine.enroll.courseId));
    clearTimeout(timer);
    if (ticket.status === 'WAITING') {
      text('queue-position', ticket.position == null ? t('gate.notOpen') : String(ticket.position));
      text('queue-eta', ticket.etaSecs == null ? '-' : t('gate.seconds', { s: ticket.etaSecs }));
      say('gate.waiting', 'waiting');
      follow(mine);
    } else if (ticket.status === 'ADMITTED') {
      stopFollowing();
      text('queue-position', '-');
      text('queue-eta', '-');
      say('gate.admitted', 'admitted');
      await enroll(mine, ticket.admission);
    } else {
      forget();
      say('gate.expired', 'expired');
    }
  }

  async function poll() {
    const mine = waiting();
    if (!mine) return;
    const reply = await api('GET', `/queue/tickets/${mine.ticket}`);
    if (reply.status === 200) {
      await show(reply.body);
    } else if (reply.status === 404 || reply.status === 403 || reply.status === 401) {
      forget();
      room.hidden = true;
    } else {
      timer = setTimeout(poll, POLL_MS);
    }
  }

  async function enroll(mine, admission) {
    const reply = await api('POST', '/classes', mine.enroll, { 'X-Sugang-Admission': admission });
    if (reply.status === 503) {
      say('enroll.retry', 'retry', { s: reply.headers.get('Retry-After') || '1' });
      timer = setTimeout(() => enroll(mine, admission), 1000 * Number(reply.headers.get('Retry-After') || 1));
      return;
    }
    forget();
    const outcome = { 201: 'enroll.ok', 402: 'enroll.declined', 409: 'enroll.full', 428: 'gate.expired' }[reply.status];
    status.dataset.status = String(reply.status);
    status.textContent = outcome ? t(outcome) : `${t('enroll.error')}: ${problem(reply)}`;
    if (reply.status === 201) {
      const link = document.createElement('a');
      link.href = `/mypage?after=${reply.headers.get('X-Sugang-Seq') || ''}`;
      link.textContent = t('enroll.seeMypage');
      status.append(' ', link);
    }
  }

  if (room) {
    document.addEventListener('sugang:gate', (e) => join(e.detail.enroll, e.detail.courseName));
    document.getElementById('queue-leave').addEventListener('click', () => {
      forget();
      room.hidden = true;
    });
    document.addEventListener('sugang:who', () => {
      const mine = waiting();
      const person = as('student');
      if (mine && (!person || person.name !== mine.student)) {
        forget();
        room.hidden = true;
      }
    });
    // A reload keeps the place: the ticket waits in this tab.
    const mine = waiting();
    const person = as('student');
    if (mine && person && person.name === mine.student) poll();
  }

  // ---- the operator's gate ------------------------------------------------

  const form = document.getElementById('gate-form');
  if (!form) return;
  const result = document.getElementById('gate-result');
  let filled = false;

  /** An RFC 3339 time as the datetime-local input's local time. */
  function localInput(iso) {
    if (!iso) return '';
    const d = new Date(iso);
    const pad = (n) => String(n).padStart(2, '0');
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  async function refresh() {
    if (as('admin')) {
      const reply = await api('GET', '/admin/gate');
      if (reply.status === 200) {
        const g = reply.body;
        const state = document.getElementById('gate-state');
        state.textContent = g.enabled ? t('gate.on') : t('gate.off');
        state.dataset.enabled = String(g.enabled);
        text('gate-waiting', String(g.waiting));
        text('gate-admitted', String(g.admittedTotal));
        text('gate-rate-now', String(g.admittedPerSecond));
        text('gate-oldest', t('gate.seconds', { s: Math.round(g.oldestWaitMs / 1000) }));
        if (!filled) {
          document.getElementById('gate-enabled').checked = g.enabled;
          document.getElementById('gate-rate').value = g.admitPerSecond;
          document.getElementById('gate-opens').value = localInput(g.opensAt);
          document.getElementById('gate-ttl').value = g.admissionTtlSecs;
          filled = true;
        }
      }
    }
    setTimeout(refresh, POLL_MS);
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const opens = document.getElementById('gate-opens').value;
    const body = {
      enabled: document.getElementById('gate-enabled').checked,
      admitPerSecond: Number(document.getElementById('gate-rate').value),
      opensAt: opens ? new Date(opens).toISOString() : null,
      admissionTtlSecs: Number(document.getElementById('gate-ttl').value),
    };
    const reply = await api('PUT', '/admin/gate', body);
    result.textContent = reply.status === 200 ? t('ops.done') : problem(reply);
  });
  document.addEventListener('sugang:who', () => {
    filled = false;
  });
  refresh();
})();
