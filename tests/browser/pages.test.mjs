// sugang's web pages in a real browser: Playwright (playwright-core, no
// browser download) drives Debian's Chromium headless against a real
// `sugang serve` on a free loopback port. Screenshots go to
// docs/screenshots/ for the README.
//
// Run: `npm install && npm test` here, after `cargo build --bin sugang`.
// SUGANG_BIN picks another binary; CHROMIUM another browser.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..', '..');
const BIN = process.env.SUGANG_BIN || join(root, 'target', 'debug', 'sugang');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SHOTS = join(root, 'docs', 'screenshots');
const SECRET = 'browser-tests-secret-of-at-least-32-bytes!';
const WAIT = 10_000;

let browser;
const servers = [];

/** A free loopback port. */
function freePort() {
  return new Promise((ok, fail) => {
    const probe = createServer();
    probe.once('error', fail);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => ok(port));
    });
  });
}

/** Starts `sugang serve` over a fresh data directory; resolves once ready. */
async function startServer(extra = []) {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'sugang-browser-'));
  const child = spawn(
    BIN,
    ['serve', '--listen', `127.0.0.1:${port}`, '--data-dir', join(dir, 'data'), '--durability', 'relaxed', ...extra],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const server = { url: `http://127.0.0.1:${port}`, child, dir, log: '' };
  child.stdout.on('data', (d) => (server.log += d));
  child.stderr.on('data', (d) => (server.log += d));
  servers.push(server);
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      if ((await fetch(`${server.url}/health/ready`)).ok) return server;
    } catch {
      // not listening yet
    }
    if (child.exitCode !== null || Date.now() > deadline) {
      throw new Error(`sugang did not become ready:\n${server.log}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Calls the API directly (the test's own hands, not the page's). */
async function call(server, method, path, body, token) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(server.url + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

async function course(server, name, teacher, extra = {}, token) {
  const reply = await call(server, 'POST', '/courses', { name, teacher, fee: 10000, textBook: `${name}-book`, ...extra }, token);
  assert.equal(reply.status, 201, JSON.stringify(reply.body));
  return reply.body.id;
}

function token(role, sub) {
  return execFileSync(BIN, ['token', '--role', role, '--sub', sub], { env: { ...process.env, SUGANG_JWT_SECRET: SECRET } })
    .toString()
    .trim();
}

/** A fresh browser context (its own cookies and sessionStorage). */
async function context(server, options = {}) {
  return browser.newContext({ baseURL: server.url, locale: 'en-US', ...options });
}

/** With auth off: pick who you are on the page. */
async function pick(page, role, name) {
  await page.selectOption('#who-role', role);
  await page.fill('#who-name', name);
  await page.click('#who-pick button[type=submit]');
  await page.waitForFunction((n) => document.getElementById('who-current').textContent.includes(n), name);
}

async function shot(page, name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // Playwright gives every launch a fresh temporary --user-data-dir.
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
});

after(async () => {
  if (browser) await browser.close();
  for (const server of servers) {
    server.child.kill('SIGTERM');
    await new Promise((r) => (server.child.exitCode !== null ? r() : server.child.once('exit', r)));
    rmSync(server.dir, { recursive: true, force: true });
  }
});

/** Prints the server log when a test fails. */
async function withLog(server, body) {
  try {
    await body();
  } catch (e) {
    console.error(`--- sugang log (${server.url}) ---\n${server.log.slice(-8000)}\n--- end of log ---`);
    throw e;
  }
}

let open; // the server with auth off, shared by the open-mode tests
const openServer = async () => (open ??= await startServer());

test('a student enrolls and finds it on my page, then cancels', async () => {
  const server = await openServer();
  await withLog(server, async () => {
    const id = await course(server, 'korean', 'Hong-Gil-dong', { capacity: 40 });
    const ctx = await context(server);
    const page = await ctx.newPage();
    await page.goto('/');
    await pick(page, 'student', 'Kim-Soon-hee');
    const row = page.locator(`#catalog tr[data-course-id="${id}"]`);
    await row.getByRole('button', { name: 'Enroll' }).click();
    await page.getByLabel('Textbook delivery address').fill('Seoul');
    await page.getByLabel('Telephone').fill('010-1234-5678');
    await page.getByRole('button', { name: 'Pay and enroll' }).click();
    await page.locator('#enroll-result', { hasText: 'You are enrolled.' }).waitFor({ timeout: WAIT });
    await row.locator('.count', { hasText: '1' }).waitFor({ timeout: WAIT });
    await shot(page, 'student-catalog');

    await page.getByRole('link', { name: 'See it on my page' }).click();
    await page.waitForURL(/\/mypage/);
    const mine = page.locator('#enrollments tbody tr', { hasText: 'korean' });
    await mine.waitFor({ timeout: WAIT });
    assert.equal(await mine.locator('.apply').textContent(), 'Enrolled');
    assert.equal(await mine.locator('.pay').textContent(), 'Paid');
    assert.equal(await mine.locator('.delivery').textContent(), 'Shipping');
    await page.locator('#notifications li').first().waitFor({ timeout: WAIT });
    await shot(page, 'student-mypage');

    page.once('dialog', (dialog) => dialog.accept());
    await mine.getByRole('button', { name: /Cancel/ }).click();
    await page.locator('#enrollments tbody tr[data-status="CANCELED"]', { hasText: 'korean' }).waitFor({ timeout: WAIT });
    const canceled = page.locator('#enrollments tbody tr', { hasText: 'korean' });
    assert.equal(await canceled.locator('.apply').textContent(), 'Canceled');
    await ctx.close();
  });
});

test('the answer of POST /classes reads as a person would: declined, full (by keyboard)', async () => {
  const server = await openServer();
  await withLog(server, async () => {
    const id = await course(server, 'tiny', 'Hong-Gil-dong', { capacity: 1 });
    const ctx = await context(server);
    const page = await ctx.newPage();
    await page.goto('/');
    await pick(page, 'student', 'Choi');
    const row = page.locator(`#catalog tr[data-course-id="${id}"]`);
    // By keyboard: Enter on Enroll opens the form with the focus in it;
    // Escape closes it and gives the focus back to the button.
    await row.getByRole('button', { name: 'Enroll' }).focus();
    await page.keyboard.press('Enter');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'pay-method');
    await page.keyboard.press('Escape');
    assert.ok(await page.locator('#enroll').isHidden());
    assert.equal(await page.evaluate(() => document.activeElement.dataset.courseId), String(id));
    await page.keyboard.press('Enter');
    await page.getByLabel('Card or account number').fill('4000000000000002');
    await page.getByRole('button', { name: 'Pay and enroll' }).click();
    await page.locator('#enroll-result', { hasText: 'The payment was declined' }).waitFor({ timeout: WAIT });
    // Someone else takes the last seat: the page learns it live and
    // disables the button; a request sent anyway is told the course is full.
    assert.equal((await call(server, 'POST', '/classes', { courseId: id, student: 'Other' })).status, 201);
    await row.locator('.open', { hasText: 'Full' }).waitFor({ timeout: WAIT });
    assert.ok(await row.getByRole('button', { name: 'Enroll' }).isDisabled());
    await page.getByLabel('Card or account number').fill('4242424242424242');
    await page.getByRole('button', { name: 'Pay and enroll' }).click();
    await page.locator('#enroll-result', { hasText: 'The course is full.' }).waitFor({ timeout: WAIT });
    await ctx.close();
  });
});

test('a second browser sees the seat count change without reloading', async () => {
  const server = await openServer();
  await withLog(server, async () => {
    const id = await course(server, '한국사', '박교수', { capacity: 30 });
    // A Korean browser: the page speaks Korean by Accept-Language.
    const watcher = await context(server, { locale: 'ko-KR' });
    const page = await watcher.newPage();
    await page.goto('/');
    assert.equal(await page.getAttribute('html', 'lang'), 'ko');
    await page.locator('#live-status[data-live="on"]').waitFor({ timeout: WAIT });
    const count = page.locator(`#catalog tr[data-course-id="${id}"] .count`);
    assert.equal(await count.textContent(), '0');
    await page.evaluate(() => (window.notReloaded = true));

    const ctx = await context(server);
    const other = await ctx.newPage();
    await other.goto('/');
    await pick(other, 'student', 'Lee');
    await other.locator(`#catalog tr[data-course-id="${id}"] button.enroll`).click();
    await other.getByRole('button', { name: 'Pay and enroll' }).click();
    await other.locator('#enroll-result', { hasText: 'You are enrolled.' }).waitFor({ timeout: WAIT });

    const started = Date.now();
    await count.filter({ hasText: '1' }).waitFor({ timeout: WAIT });
    const ms = Date.now() - started;
    assert.ok(ms < 1000, `the seat count reached the open page ${ms} ms after the enrollment answered`);
    assert.equal(await page.evaluate(() => window.notReloaded), true, 'the page was not reloaded');
    await shot(page, 'student-catalog-ko');

    // Readable on a phone.
    const phone = await context(server, { locale: 'ko-KR', viewport: { width: 390, height: 844 }, isMobile: true });
    const small = await phone.newPage();
    await small.goto('/');
    const overflow = await small.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the phone page scrolls sideways by ${overflow}px`);
    await shot(small, 'student-catalog-phone');
    await Promise.all([watcher.close(), ctx.close(), phone.close()]);
  });
});

test('a full course offers the waitlist and the position updates when someone cancels', async () => {
  const server = await openServer();
  await withLog(server, async () => {
    const id = await course(server, 'popular', 'Hong-Gil-dong', { capacity: 1, waitlistCapacity: 3 });
    const kim = await call(server, 'POST', '/classes', { courseId: id, student: 'Kim' });
    assert.equal(kim.status, 201);
    const lee = await call(server, 'POST', '/classes', { courseId: id, student: 'Lee', waitlist: true });
    assert.equal(lee.status, 202, JSON.stringify(lee.body));

    const ctx = await context(server);
    const page = await ctx.newPage();
    await page.goto('/');
    await pick(page, 'student', 'Park');
    await page.locator('#live-status[data-live="on"]').waitFor({ timeout: WAIT });
    const row = page.locator(`#catalog tr[data-course-id="${id}"]`);
    // Full, so the row offers the waitlist (and shows how many wait).
    assert.equal(await row.locator('.open').textContent(), 'Full');
    assert.equal(await row.locator('.waiting').textContent(), '1');
    await row.getByRole('button', { name: 'Join the waitlist' }).click();
    await page.getByRole('button', { name: 'Join the waitlist (pay when a seat frees)' }).click();
    await page.locator('#enroll-result', { hasText: 'you are on its waitlist. Your place: 2' }).waitFor({ timeout: WAIT });
    await row.locator('.waiting', { hasText: '2' }).waitFor({ timeout: WAIT });
    await shot(page, 'student-waitlist');

    // Kim cancels: Lee gets the seat, and Park's place moves up, live.
    await page.evaluate(() => (window.notReloaded = true));
    assert.equal((await call(server, 'DELETE', `/classes/${kim.body.id}`)).status, 204);
    const place = page.locator('#waitlist-place');
    await place.filter({ hasText: 'Your place: 1' }).waitFor({ timeout: WAIT });
    // Lee's seat frees in turn: Park is enrolled from the waitlist.
    const lees = await call(server, 'GET', `/waitlists/${lee.body.id}`);
    assert.equal(lees.body.status, 'ENROLLED', JSON.stringify(lees.body));
    assert.equal((await call(server, 'DELETE', `/classes/${lees.body.classId}`)).status, 204);
    await place.filter({ hasText: 'you are enrolled from the waitlist' }).waitFor({ timeout: WAIT });
    assert.equal(await page.evaluate(() => window.notReloaded), true, 'the page was not reloaded');
    await ctx.close();
  });
});

test('an instructor registers and edits a course and sees its roster', async () => {
  const server = await openServer();
  await withLog(server, async () => {
    const ctx = await context(server);
    const page = await ctx.newPage();
    await page.goto('/instructor');
    await pick(page, 'instructor', 'Park');
    await page.getByLabel('Course', { exact: true }).fill('Linear algebra');
    await page.getByLabel('Fee').fill('30000');
    await page.getByLabel('Textbook').fill('Strang');
    await page.getByLabel('Capacity').fill('20');
    await page.getByRole('button', { name: 'Register' }).click();
    const row = page.locator('#my-courses tbody tr', { hasText: 'Linear algebra' });
    await row.waitFor({ timeout: WAIT });
    assert.equal(await row.locator('.fee').textContent(), '30,000 won');
    const id = Number(await row.getAttribute('data-course-id'));

    await row.getByRole('button', { name: /^Change/ }).click();
    await page.getByLabel('Fee').fill('25000');
    await page.getByLabel('Capacity').fill('25');
    await page.getByRole('button', { name: 'Save' }).click();
    await row.locator('.fee', { hasText: '25,000 won' }).waitFor({ timeout: WAIT });
    await row.locator('.seats', { hasText: '0 / 25' }).waitFor({ timeout: WAIT });
    const stored = await call(server, 'GET', `/courses/${id}`);
    assert.equal(stored.body.fee, 25000);
    assert.equal(stored.body.teacher, 'Park');

    assert.equal((await call(server, 'POST', '/classes', { courseId: id, student: 'Jung' })).status, 201);
    await row.locator('.seats', { hasText: '1 / 25' }).waitFor({ timeout: WAIT });
    await row.getByRole('button', { name: /^Roster/ }).click();
    await page.locator('#roster li', { hasText: 'Jung' }).waitFor({ timeout: WAIT });
    await shot(page, 'instructor');
    await ctx.close();
  });
});

test('the operator downs the gateway, watches the breaker open, heals it and sees it close', async () => {
  const server = await openServer();
  await withLog(server, async () => {
    const id = await course(server, 'breaker-drill', 'Hong-Gil-dong');
    const ctx = await context(server);
    const page = await ctx.newPage();
    await page.goto('/ops');
    await pick(page, 'admin', 'root');
    const badge = page.locator('#breaker-state');
    await page.locator('#breaker-state[data-state="closed"]').waitFor({ timeout: WAIT });
    await page.locator('#tree tbody tr[data-node="courses"]').waitFor({ timeout: WAIT });

    await page.getByRole('button', { name: 'Gateway down' }).click();
    await page.locator('#gateway-state', { hasText: 'down' }).waitFor({ timeout: WAIT });
    let student = 0;
    const enrollUntil = async (state) => {
      const deadline = Date.now() + 30_000;
      while ((await badge.getAttribute('data-state')) !== state) {
        assert.ok(Date.now() < deadline, `the breaker did not turn ${state}`);
        await call(server, 'POST', '/classes', { courseId: id, student: `s${++student}` });
        await new Promise((r) => setTimeout(r, 250));
      }
    };
    await enrollUntil('open');
    assert.match(await badge.textContent(), /open/);
    await page.locator('#rate-chart polyline').waitFor({ state: 'attached', timeout: WAIT });
    await page.locator('#latency-chart polyline').waitFor({ state: 'attached', timeout: WAIT });
    await shot(page, 'ops-breaker-open');

    await page.getByRole('button', { name: 'Gateway up' }).click();
    await page.locator('#gateway-state', { hasText: 'up' }).waitFor({ timeout: WAIT });
    await enrollUntil('closed');
    await shot(page, 'ops-breaker-closed');

    // A subscriber stopped from the console shows down, and starts again.
    const notifier = page.locator('#subscribers tr[data-subscriber="notifier"]');
    await notifier.getByRole('button', { name: /^Stop/ }).click();
    await notifier.locator('td.bad').waitFor({ timeout: WAIT });
    await notifier.getByRole('button', { name: /^Start/ }).click();
    await notifier.locator('td.ok').waitFor({ timeout: WAIT });
    await ctx.close();
  });
});

test('with auth on, a student cannot see another student\'s data', async () => {
  const server = await startServer(['--jwt-secret', SECRET]);
  await withLog(server, async () => {
    const id = await course(server, 'secret-course', 'Hong', {}, token('instructor', 'Hong'));
    const kim = token('student', 'Kim');
    assert.equal((await call(server, 'POST', '/classes', { courseId: id, student: 'Kim', addr: 'Seoul' }, kim)).status, 201);

    const ctx = await context(server);
    const page = await ctx.newPage();
    await page.goto('/mypage');
    await page.getByLabel('Access token (sugang token)').fill('not-a-token');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('#who-current', { hasText: 'That token cannot be read.' }).waitFor({ timeout: WAIT });
    await page.getByLabel('Access token (sugang token)').fill(token('student', 'Lee'));
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('#who-current', { hasText: 'Lee' }).waitFor({ timeout: WAIT });
    await page.locator('#enrollments tbody tr', { hasText: 'No enrollments yet.' }).waitFor({ timeout: WAIT });
    assert.equal(await page.locator('#enrollments', { hasText: 'secret-course' }).count(), 0);
    // Even asking the API from the page as Lee for Kim's data is refused.
    const peek = await page.evaluate(async () => {
      const views = await sugang.api('GET', '/inquiryMypages?student=Kim');
      const notes = await sugang.api('GET', '/notifications?recipient=Kim');
      const ops = await sugang.api('GET', '/admin/actors');
      return [views.status, notes.status, ops.status];
    });
    assert.deepEqual(peek, [403, 403, 403]);
    await shot(page, 'auth-other-student');

    // Kim, signed in with Kim's token, sees Kim's enrollment.
    const kimCtx = await context(server);
    const kimPage = await kimCtx.newPage();
    await kimPage.goto('/mypage');
    await kimPage.getByLabel('Access token (sugang token)').fill(kim);
    await kimPage.getByRole('button', { name: 'Sign in' }).click();
    await kimPage.locator('#enrollments tbody tr', { hasText: 'secret-course' }).waitFor({ timeout: WAIT });
    // The token stays for the tab (sessionStorage) across a reload.
    await kimPage.reload();
    await kimPage.locator('#enrollments tbody tr', { hasText: 'secret-course' }).waitFor({ timeout: WAIT });
    // The operator console refuses a student.
    await kimPage.goto('/ops');
    await kimPage.locator('#need-who', { hasText: 'Operators only.' }).waitFor({ timeout: WAIT });
    await Promise.all([ctx.close(), kimCtx.close()]);
  });
});

test('with the gate on, a student waits, is admitted and enrolls', async () => {
  const server = await startServer();
  await withLog(server, async () => {
    const id = await course(server, 'rush-hour', 'Hong-Gil-dong', { capacity: 10 });
    // The operator turns the waiting room on from the console, at one admission a second.
    const opsCtx = await context(server);
    const ops = await opsCtx.newPage();
    await ops.goto('/ops');
    await pick(ops, 'admin', 'root');
    await ops.locator('#gate-state[data-enabled="false"]').waitFor({ timeout: WAIT });
    await ops.getByLabel('Waiting room on').check();
    await ops.getByLabel('Admissions per second').fill('1');
    await ops.getByRole('button', { name: 'Apply' }).click();
    await ops.locator('#gate-result', { hasText: 'Done.' }).waitFor({ timeout: WAIT });
    await ops.locator('#gate-state[data-enabled="true"]').waitFor({ timeout: WAIT });
    // Five students are in the queue first.
    for (const s of ['q1', 'q2', 'q3', 'q4', 'q5']) {
      assert.equal((await call(server, 'POST', '/queue/tickets', { student: s })).status, 201);
    }

    const ctx = await context(server);
    const page = await ctx.newPage();
    await page.goto('/');
    await pick(page, 'student', 'Kim-Soon-hee');
    const row = page.locator(`#catalog tr[data-course-id="${id}"]`);
    await row.getByRole('button', { name: 'Enroll' }).click();
    await page.getByLabel('Textbook delivery address').fill('Seoul');
    await page.getByRole('button', { name: 'Pay and enroll' }).click();
    await page.locator('#enroll-result', { hasText: 'The waiting room is on' }).waitFor({ timeout: WAIT });
    await page.locator('#queue-status[data-status="waiting"]').waitFor({ timeout: WAIT });
    await page.waitForFunction(() => document.activeElement.id === 'waiting-title');
    const before = Number(await page.locator('#queue-position').textContent());
    assert.ok(before >= 1, `a position: ${before}`);
    assert.match(await page.locator('#queue-eta').textContent(), /^\d+ s$/);
    assert.equal(await page.locator('#queue-course').textContent(), 'rush-hour');
    await shot(page, 'waiting-room');
    // The place moves on screen as others are admitted (its event stream).
    await page.waitForFunction(
      (b) => Number(document.getElementById('queue-position').textContent) < b || document.getElementById('queue-status').dataset.status !== 'waiting',
      before,
      { timeout: WAIT },
    );

    // A reload keeps the place: the same ticket, a position no worse.
    const ticket = await page.evaluate(() => JSON.parse(sessionStorage.getItem('sugang.queue')).ticket);
    await page.reload();
    await page.locator('#waiting-room').waitFor({ state: 'visible', timeout: WAIT });
    await page.waitForFunction(() => /^\d+$/.test(document.getElementById('queue-position').textContent) || document.getElementById('queue-status').dataset.status !== 'waiting');
    const kept = await page.evaluate(() => JSON.parse(sessionStorage.getItem('sugang.queue'))?.ticket ?? null);
    // (null only if the admission came while reloading and the page went straight on.)
    if (kept !== null) assert.equal(kept, ticket, 'the same ticket after the reload');
    const mine = await call(server, 'POST', '/queue/tickets', { student: 'Kim-Soon-hee' });
    assert.equal(mine.status, 200, 'the page took one ticket, and asking again is that ticket');
    assert.equal(mine.body.id, ticket);

    // Admitted, and straight on to the enrollment.
    await page.locator('#queue-status[data-status="201"]', { hasText: 'You are enrolled.' }).waitFor({ timeout: 20_000 });
    await row.locator('.count', { hasText: '1' }).waitFor({ timeout: WAIT });
    const classes = await call(server, 'GET', '/classes?student=Kim-Soon-hee');
    assert.equal(classes.body.page.totalElements, 1);
    // The console shows the queue drained.
    await ops.locator('#gate-waiting', { hasText: /^0$/ }).waitFor({ timeout: WAIT });
    await ops.locator('#gate-admitted', { hasText: /^6$/ }).waitFor({ timeout: WAIT });
    await shot(ops, 'ops-gate');
    await Promise.all([ctx.close(), opsCtx.close()]);
  });
});
