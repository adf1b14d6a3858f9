// sugang pages, shared by every page: the strings, who you are, and the
// JSON API client. Plain JavaScript, no framework, no build step.
//
// Who you are lives in this tab's sessionStorage: with auth off (loopback
// only) a role and a name picked on the page; with auth on the bearer
// token `sugang token` printed, sent as Authorization on every API call.
// The server checks every call: the page never decides what you may see.
'use strict';

const sugang = (() => {
  const strings = JSON.parse(document.getElementById('strings').textContent);
  const open = document.body.dataset.auth === 'open';
  const WHO = 'sugang.who';

  /** The text of `key`, with `{name}` placeholders filled from `vars`. */
  function t(key, vars) {
    let text = strings[key] || key;
    for (const [name, value] of Object.entries(vars || {})) text = text.replace(`{${name}}`, value);
    return text;
  }

  /** The claims of a JWT, unverified (the server verifies). */
  function claims(token) {
    const part = token.split('.')[1];
    if (!part) throw new Error('not a JWT');
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(part.length / 4) * 4, '=');
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  }

  /** `{role, name, token?}` or null. */
  function who() {
    try {
      return JSON.parse(sessionStorage.getItem(WHO));
    } catch {
      return null;
    }
  }

  function setWho(person) {
    if (person) sessionStorage.setItem(WHO, JSON.stringify(person));
    else sessionStorage.removeItem(WHO);
    showWho();
    document.dispatchEvent(new CustomEvent('sugang:who', { detail: person }));
  }

  function showWho() {
    const person = who();
    const current = document.getElementById('who-current');
    const signout = document.getElementById('who-signout');
    current.textContent = person ? `${t('who.as')}: ${t('role.' + person.role)} ${person.name}` : t('who.none');
    signout.hidden = !person;
    if (open) {
      const role = document.getElementById('who-role');
      const name = document.getElementById('who-name');
      role.value = person ? person.role : document.body.dataset.role;
      if (person) name.value = person.name;
    }
  }

  /** Who you are if you are in `role` (an admin may act as anyone). */
  function as(role) {
    const person = who();
    if (!person || (person.role !== role && person.role !== 'admin')) return null;
    return person;
  }

  /** Calls the JSON API: `{status, headers, body}`; status 0 when the server cannot be reached. */
  async function api(method, path, body, extraHeaders) {
    const headers = { Accept: 'application/json', ...extraHeaders };
    const person = who();
    if (person && person.token) headers.Authorization = `Bearer ${person.token}`;
    const init = { method, headers };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch {
      return { status: 0, headers: new Headers(), body: { detail: t('error.network') } };
    }
    const text = await response.text();
    let parsed = null;
    if (text) {
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = text;
      }
    }
    return { status: response.status, headers: response.headers, body: parsed };
  }

  /** What a failed call says, for a person. */
  function problem(reply) {
    if (reply.status === 401) return t('error.auth');
    if (reply.status === 403) return t('enroll.denied');
    return (reply.body && reply.body.detail) || `HTTP ${reply.status}`;
  }

  /** A table cell with text. */
  function cell(text, className) {
    const td = document.createElement('td');
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  function button(text, onClick, className) {
    const b = document.createElement('button');
    b.type = 'button';
    b.textContent = text;
    if (className) b.className = className;
    b.addEventListener('click', onClick);
    return b;
  }

  /** The items of a HAL collection. */
  function items(body) {
    const embedded = body && body._embedded;
    return (embedded && Object.values(embedded)[0]) || [];
  }

  /** Gives each cell its column's header as `data-label`, for the card layout on phones. */
  function labelCells(table) {
    const headers = [...table.querySelectorAll('thead th')].map((th) => th.textContent);
    for (const row of table.querySelectorAll('tbody tr')) {
      [...row.children].forEach((td, i) => {
        if (headers[i] && td.colSpan === 1) td.dataset.label = headers[i];
      });
    }
  }

  function won(amount) {
    return `${Number(amount).toLocaleString('en-US')}${t('won')}`;
  }

  function wireWho() {
    const signout = document.getElementById('who-signout');
    signout.addEventListener('click', () => setWho(null));
    if (open) {
      document.getElementById('who-pick').addEventListener('submit', (e) => {
        e.preventDefault();
        const name = document.getElementById('who-name').value.trim();
        if (!name) {
          document.getElementById('who-name').focus();
          return;
        }
        setWho({ role: document.getElementById('who-role').value, name });
      });
    } else {
      document.getElementById('who-token').addEventListener('submit', (e) => {
        e.preventDefault();
        const input = document.getElementById('who-token-input');
        const token = input.value.trim();
        try {
          const c = claims(token);
          if (!c.sub || !c.role) throw new Error('no sub or role');
          input.value = '';
          setWho({ role: c.role, name: c.sub, token });
        } catch {
          document.getElementById('who-current').textContent = t('who.badtoken');
        }
      });
    }
    showWho();
  }

  /** Follows the seat counts after event seq `after` (the page's render), or from now; `onCounts` gets each batch. */
  function followSeats(onCounts, status, after) {
    const source = new EventSource(after ? `/events/courses?after=${encodeURIComponent(after)}` : '/events/courses');
    source.addEventListener('open', () => status && status(true));
    source.addEventListener('error', () => status && status(false));
    source.addEventListener('courses', (e) => onCounts(JSON.parse(e.data)));
    return source;
  }

  wireWho();
  return { t, who, as, api, problem, items, cell, button, labelCells, won, followSeats, open };
})();
