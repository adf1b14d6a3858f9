// The student pages: the catalog's live seat counts and the enroll form
// (`/`), and my page (`/mypage`): enrollments with payment and delivery
// status, notifications, cancel. Everything personal comes from the API
// with the student's own token.
'use strict';

(() => {
  const { t, as, api, problem, items, cell, button, labelCells } = sugang;

  // ---- the catalog: live seats ------------------------------------------

  function showSeats(counts) {
    for (const c of counts) {
      const row = document.querySelector(`#catalog tr[data-course-id="${c.id}"]`);
      if (!row) continue;
      if (c.deleted) {
        row.remove();
        continue;
      }
      const full = c.capacity != null && c.studentCount >= c.capacity;
      // A full course with room on its waitlist offers it instead.
      const join = full && c.waitlistLength < c.waitlistCapacity;
      row.querySelector('.count').textContent = String(c.studentCount);
      row.querySelector('.open').textContent = full
        ? t('course.full')
        : c.openYn ? t('course.opened') : t('course.notOpened');
      const waitlist = row.querySelector('.waitlist');
      waitlist.hidden = !c.waitlistCapacity;
      waitlist.querySelector('.waiting').textContent = String(c.waitlistLength);
      const b = row.querySelector('button.enroll');
      b.disabled = full && !join;
      b.dataset.join = join ? '1' : '';
      b.textContent = join ? t('course.join') : t('course.enroll');
      if (waiting && waiting.courseId === c.id) followPlace();
      row.classList.remove('changed');
      void row.offsetWidth; // restart the highlight
      row.classList.add('changed');
    }
  }

  function liveStatus(connected) {
    const status = document.getElementById('live-status');
    status.dataset.live = connected ? 'on' : 'off';
    status.textContent = connected ? t('catalog.live') : t('catalog.offline');
  }

  // ---- the catalog: enroll ----------------------------------------------

  const enroll = document.getElementById('enroll');
  const result = document.getElementById('enroll-result');
  const place = document.getElementById('waitlist-place');
  let opener = null;
  // The waitlist entry this page follows: { id, courseId }.
  let waiting = null;

  /** Shows where the student's waitlist entry stands; read again whenever
   * the seats of its course change (the live stream), never on a timer. */
  async function followPlace() {
    if (!waiting) return;
    const reply = await api('GET', `/waitlists/${waiting.id}`);
    if (reply.status !== 200) return;
    const entry = reply.body;
    place.hidden = false;
    place.dataset.status = entry.status;
    if (entry.status === 'WAITING') {
      place.textContent = t('enroll.waitlisted', { n: String(entry.position) });
    } else if (entry.status === 'ENROLLED') {
      place.textContent = t('enroll.waitlistEnrolled');
      waiting = null;
    } else {
      place.textContent = t('enroll.waitlistFailed');
      waiting = null;
    }
  }

  function openEnroll(e) {
    opener = e.currentTarget;
    document.getElementById('enroll-course-id').value = opener.dataset.courseId;
    document.getElementById('enroll-course').textContent = opener.dataset.courseName;
    document.getElementById('enroll-waitlist').value = opener.dataset.join || '';
    // Joining is consent to be charged when a seat frees: the button says so.
    document.getElementById('enroll-submit').textContent = opener.dataset.join ? t('enroll.join') : t('enroll.submit');
    result.textContent = '';
    enroll.hidden = false;
    document.getElementById('pay-method').focus();
  }

  function closeEnroll() {
    enroll.hidden = true;
    if (opener) opener.focus();
  }

  /** The answer of POST /classes as a person reads it. */
  function explain(reply) {
    switch (reply.status) {
      case 201:
        return t('enroll.ok');
      case 402:
        return t('enroll.declined');
      case 404:
        return t('enroll.notfound');
      case 200:
      case 202:
        return t('enroll.waitlisted', { n: String(reply.body.position) });
      case 409: {
        const detail = (reply.body && reply.body.detail) || '';
        if (/already/i.test(detail)) return t('enroll.already');
        return /waitlist/i.test(detail) ? t('enroll.waitlistFull') : t('enroll.full');
      }
      case 428:
        return t('enroll.gate');
      case 503:
        return t('enroll.retry', { s: reply.headers.get('Retry-After') || '1' });
      default:
        return `${t('enroll.error')}: ${problem(reply)}`;
    }
  }

  async function submitEnroll(e) {
    e.preventDefault();
    const person = as('student');
    if (!person) {
      result.textContent = t('who.none');
      const field = document.getElementById('who-name') || document.getElementById('who-token-input');
      field.focus();
      return;
    }
    const form = new FormData(e.target);
    const body = { courseId: Number(form.get('courseId')), student: person.name, payMethod: form.get('payMethod') };
    for (const key of ['payAccount', 'addr', 'telephoneInfo']) {
      const value = String(form.get(key) || '').trim();
      if (value) body[key] = value;
    }
    if (form.get('waitlist') === '1') body.waitlist = true;
    const submit = document.getElementById('enroll-submit');
    submit.disabled = true;
    result.dataset.outcome = 'busy';
    result.textContent = t('enroll.busy');
    const reply = await api('POST', '/classes', body);
    submit.disabled = false;
    result.dataset.outcome = String(reply.status);
    result.textContent = explain(reply);
    if ((reply.status === 202 || reply.status === 200) && reply.body && reply.body.id) {
      waiting = { id: reply.body.id, courseId: reply.body.courseId };
      place.hidden = true;
    }
    if (reply.status === 428) {
      // The waiting room (gate.js) takes it from here.
      const courseName = document.getElementById('enroll-course').textContent;
      document.dispatchEvent(new CustomEvent('sugang:gate', { detail: { enroll: body, courseName } }));
    }
    if (reply.status === 201) {
      const link = document.createElement('a');
      link.href = `/mypage?after=${reply.headers.get('X-Sugang-Seq') || ''}`;
      link.textContent = t('enroll.seeMypage');
      result.append(' ', link);
    }
  }

  if (document.getElementById('catalog')) {
    sugang.followSeats(showSeats, liveStatus, document.getElementById('catalog').dataset.seq);
    labelCells(document.getElementById('catalog'));
    for (const b of document.querySelectorAll('button.enroll')) b.addEventListener('click', openEnroll);
    document.getElementById('enroll-form').addEventListener('submit', submitEnroll);
    document.getElementById('enroll-close').addEventListener('click', closeEnroll);
    enroll.addEventListener('keydown', (e) => {
      if (e.key === 'Escape') closeEnroll();
    });
  }

  // ---- my page --------------------------------------------------------------

  const table = document.getElementById('enrollments');
  if (!table) return;
  const tbody = table.querySelector('tbody');
  const notifications = document.getElementById('notifications');
  const mypageResult = document.getElementById('mypage-result');
  // Read-your-writes: the read models answer once they reflect this seq.
  let after = new URLSearchParams(location.search).get('after') || '';

  function status(value) {
    return value ? t('status.' + value) : t('status.none');
  }

  async function load() {
    const person = as('student');
    const hint = document.getElementById('need-who');
    tbody.replaceChildren();
    notifications.replaceChildren();
    if (!person) {
      hint.textContent = t('who.none');
      return;
    }
    hint.textContent = '';
    const name = encodeURIComponent(person.name);
    const wait = /^\d+$/.test(after) ? `&after=${after}` : '';
    const [views, notes] = await Promise.all([
      api('GET', `/inquiryMypages?student=${name}&size=1000${wait}`),
      api('GET', `/notifications?recipient=${name}&size=100${wait}`),
    ]);
    if (views.status !== 200) {
      mypageResult.textContent = problem(views);
    } else {
      const rows = items(views.body);
      if (rows.length === 0) {
        const tr = document.createElement('tr');
        const td = cell(t('mypage.empty'));
        td.colSpan = 6;
        tr.append(td);
        tbody.append(tr);
      }
      for (const v of rows) {
        const tr = document.createElement('tr');
        tr.dataset.applyId = v.applyId;
        tr.dataset.status = v.applyStatus;
        tr.append(
          cell(String(v.applyId)),
          cell(v.courseName, 'name'),
          cell(status(v.applyStatus), 'apply'),
          cell(status(v.payStatus), 'pay'),
          cell(status(v.deliveryStatus), 'delivery'),
        );
        const action = document.createElement('td');
        if (v.applyStatus === 'COMPLETED') {
          const b = button(t('mypage.cancel'), () => cancel(v), 'danger');
          b.setAttribute('aria-label', `${t('mypage.cancel')}: ${v.courseName}`);
          action.append(b);
        }
        tr.append(action);
        tbody.append(tr);
      }
      labelCells(table);
    }
    if (notes.status === 200) {
      const list = items(notes.body);
      if (list.length === 0) {
        const li = document.createElement('li');
        li.textContent = t('mypage.noNotifications');
        notifications.append(li);
      }
      for (const n of list.slice().reverse()) {
        const li = document.createElement('li');
        const when = document.createElement('time');
        when.dateTime = n.createdAt;
        when.textContent = new Date(n.createdAt).toLocaleString(document.documentElement.lang);
        li.append(when, ' ', n.message);
        notifications.append(li);
      }
    }
  }

  async function cancel(view) {
    if (!window.confirm(`${t('mypage.confirmCancel')} ${view.courseName}`)) return;
    const reply = await api('DELETE', `/classes/${view.applyId}`);
    if (reply.status === 204) {
      after = reply.headers.get('X-Sugang-Seq') || after;
      mypageResult.textContent = t('mypage.canceled');
    } else {
      mypageResult.textContent = problem(reply);
    }
    await load();
  }

  document.getElementById('mypage-refresh').addEventListener('click', load);
  document.addEventListener('sugang:who', () => {
    after = '';
    load();
  });
  load();
})();
