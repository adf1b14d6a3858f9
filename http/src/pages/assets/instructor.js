// The instructor page: my courses (GET /courses?teacher=), register, change
// and delete them, and each course's roster (GET /classes?courseId=), with
// the instructor's own token. Student counts follow /events/courses.
'use strict';

(() => {
  const { t, as, api, problem, items, cell, button, labelCells, won } = sugang;
  const tbody = document.querySelector('#my-courses tbody');
  const form = document.getElementById('course-form');
  const result = document.getElementById('course-result');
  const title = document.getElementById('course-form-title');
  const save = document.getElementById('course-save');
  const stopEditing = document.getElementById('course-cancel-edit');
  const field = (name) => form.elements.namedItem(name);
  let courses = [];

  function seats(c) {
    return `${c.studentCount} / ${c.capacity == null ? t('course.unlimited') : c.capacity}`;
  }

  function openText(c) {
    if (c.capacity != null && c.studentCount >= c.capacity) return t('course.full');
    return c.openYn ? t('course.opened') : t('course.notOpened');
  }

  function render() {
    tbody.replaceChildren();
    if (courses.length === 0) {
      const tr = document.createElement('tr');
      const td = cell(t('instructor.empty'));
      td.colSpan = 7;
      tr.append(td);
      tbody.append(tr);
    }
    for (const c of courses) {
      const tr = document.createElement('tr');
      tr.dataset.courseId = c.id;
      tr.append(cell(String(c.id)), cell(c.name, 'name'), cell(won(c.fee), 'num fee'));
      const waiting = c.waitlistCapacity ? `${c.waitlistLength} / ${c.waitlistCapacity}` : '-';
      tr.append(cell(seats(c), 'num seats'), cell(waiting, 'num waitlist'), cell(openText(c), 'open'));
      const actions = document.createElement('td');
      actions.className = 'actions';
      const label = (key) => `${t(key)}: ${c.name}`;
      const change = button(t('instructor.change'), () => edit(c));
      change.setAttribute('aria-label', label('instructor.change'));
      const roster = button(t('instructor.roster'), () => showRoster(c));
      roster.setAttribute('aria-label', label('instructor.roster'));
      const remove = button(t('instructor.delete'), () => removeCourse(c), 'danger');
      remove.setAttribute('aria-label', label('instructor.delete'));
      actions.append(change, roster, remove);
      tr.append(actions);
      tbody.append(tr);
    }
    labelCells(document.getElementById('my-courses'));
  }

  async function load() {
    const person = as('instructor');
    const hint = document.getElementById('need-who');
    if (!person) {
      hint.textContent = t('who.none');
      courses = [];
      render();
      return;
    }
    hint.textContent = '';
    const reply = await api('GET', `/courses?teacher=${encodeURIComponent(person.name)}&size=1000`);
    if (reply.status !== 200) {
      result.textContent = problem(reply);
      return;
    }
    courses = items(reply.body);
    render();
  }

  function edit(c) {
    field('id').value = c.id;
    field('name').value = c.name;
    field('fee').value = c.fee;
    field('textBook').value = c.textBook || '';
    field('capacity').value = c.capacity == null ? '' : c.capacity;
    field('minStudents').value = c.minStudents;
    field('waitlistCapacity').value = c.waitlistCapacity;
    title.textContent = t('instructor.edit');
    save.textContent = t('instructor.save');
    stopEditing.hidden = false;
    result.textContent = '';
    field('name').focus();
  }

  function reset() {
    form.reset();
    field('id').value = '';
    title.textContent = t('instructor.new');
    save.textContent = t('instructor.register');
    stopEditing.hidden = true;
  }

  async function submit(e) {
    e.preventDefault();
    const person = as('instructor');
    if (!person) {
      result.textContent = t('who.none');
      return;
    }
    const body = { name: field('name').value.trim(), fee: Number(field('fee').value) };
    const textBook = field('textBook').value.trim();
    if (textBook) body.textBook = textBook;
    for (const key of ['capacity', 'minStudents', 'waitlistCapacity']) {
      if (field(key).value !== '') body[key] = Number(field(key).value);
    }
    const id = field('id').value;
    let reply;
    if (id) {
      reply = await api('PATCH', `/courses/${id}`, body);
    } else {
      body.teacher = person.name;
      reply = await api('POST', '/courses', body);
    }
    if (reply.status === 200 || reply.status === 201) {
      result.textContent = `${t('instructor.saved')} ${reply.body.name} (${reply.body.id})`;
      reset();
      await load();
    } else {
      result.textContent = problem(reply);
    }
  }

  async function removeCourse(c) {
    if (!window.confirm(`${t('instructor.confirmDelete')} ${c.name}`)) return;
    const reply = await api('DELETE', `/courses/${c.id}`);
    result.textContent = reply.status === 204 ? t('instructor.deleted') : problem(reply);
    await load();
  }

  async function showRoster(c) {
    const section = document.getElementById('roster-section');
    const list = document.getElementById('roster');
    const heading = document.getElementById('roster-title');
    heading.textContent = `${t('instructor.rosterOf')} ${c.name}`;
    list.replaceChildren();
    section.hidden = false;
    const reply = await api('GET', `/classes?courseId=${c.id}&status=COMPLETED&size=1000`);
    if (reply.status !== 200) {
      const li = document.createElement('li');
      li.textContent = problem(reply);
      list.append(li);
    } else {
      const students = items(reply.body);
      if (students.length === 0) {
        const li = document.createElement('li');
        li.textContent = t('instructor.noStudents');
        list.append(li);
      }
      for (const s of students) {
        const li = document.createElement('li');
        li.textContent = `${s.student} · ${new Date(s.createdAt).toLocaleString(document.documentElement.lang)}`;
        list.append(li);
      }
    }
    heading.tabIndex = -1;
    heading.focus();
  }

  sugang.followSeats((counts) => {
    let changed = false;
    for (const update of counts) {
      const c = courses.find((course) => course.id === update.id);
      if (!c) continue;
      Object.assign(c, {
        studentCount: update.studentCount,
        capacity: update.capacity,
        openYn: update.openYn,
        waitlistCapacity: update.waitlistCapacity,
        waitlistLength: update.waitlistLength,
      });
      changed = true;
    }
    if (changed) render();
  });
  form.addEventListener('submit', submit);
  stopEditing.addEventListener('click', reset);
  document.addEventListener('sugang:who', load);
  load();
})();
