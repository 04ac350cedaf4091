// The timetable page, served by `scheduler serve` (a real SQLite file), in headless Chromium.
//
// A generated county is imported; the page solves it (a job with progress), shows the week per
// school and per teacher, lists unmet demand with its reasons, locks a lesson (a new plan
// version), hands out the lesson's join links, and its iCalendar export downloads and parses
// with ical.js. English at a click. No console errors; screenshots in web/test-results/.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import fs from 'node:fs';
import path from 'node:path';
import ICAL from 'ical.js';
import { Harness, RESULTS, SCHEDULER_BIN, startScheduler } from './harness.mjs';

const execFileP = promisify(execFile);
const h = new Harness({ name: 'timetable', logFile: 'timetable-sfu.log', statsFile: 'timetable-stats.json' });
let sched = null;

async function waitFor(page, what, fn, arg, timeout = 60_000) {
  try {
    await page.waitForFunction(fn, arg, { timeout, polling: 250 });
  } catch {
    const now = await page.evaluate(() => JSON.stringify(window.timetable?.state)).catch((e) => e.message);
    throw new Error(`${what} not within ${timeout} ms; page state ${now}\n${fs.readFileSync(sched.logPath, 'utf8').slice(-2000)}`);
  }
}

describe('timetable page', { timeout: 300_000 }, () => {
  before(async () => {
    sched = await startScheduler('page', { secret: h.secret, sfuUrl: 'http://127.0.0.1:7800' });
    await h.launchBrowser();
  });

  after(async () => {
    await h.closeBrowser();
    if (sched) await sched.stop();
  });

  test('a solved county on the timetable page, with edits, join links and an iCalendar export', async () => {
    const { stdout } = await execFileP(SCHEDULER_BIN, ['generate', '--preset', 'county', '--seed', '3'], { maxBuffer: 64 << 20 });
    const imported = await fetch(`${sched.baseUrl}/api/regions`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: stdout,
    });
    assert.ok(imported.ok, `import: ${imported.status} ${await imported.text()}`);

    const page = await h.openPage('timetable', `${sched.baseUrl}/`);
    await waitFor(page, 'the region listed', () => window.timetable.state.region != null);
    await page.fill('#limit', '5');
    await page.click('#solve');
    await waitFor(page, 'a solved plan', () => window.timetable.plan && window.timetable.plan.lessons.length > 0, null, 180_000);
    const plan = await page.evaluate(() => window.timetable.plan);
    assert.ok(plan.stats.coverage > 0.5, `coverage ${plan.stats.coverage}`);
    assert.ok(await page.locator('#grid .tt-cell').count() > 0, 'lessons in the school week');
    assert.match(await page.locator('#coverage').textContent(), /%$/);
    await h.screenshot(page, 'timetable-school');

    // Unmet demand with reasons in words.
    if (plan.unmet.length > 0) {
      assert.equal(await page.locator('#unmet tbody tr').count(), plan.unmet.length);
      const reasons = await page.locator('#unmet tbody tr td:nth-child(4)').first().textContent();
      assert.ok(reasons.length > 0 && !/_/.test(reasons), `reasons shown as words: ${reasons}`);
    }

    // A teacher's week.
    const teacher = plan.lessons[0].teacher;
    await page.evaluate((t) => window.timetable.setView('teacher', t), teacher);
    const mine = plan.lessons.filter((l) => l.teacher === teacher).length;
    assert.equal(await page.locator('#grid .tt-cell').count(), mine, `lessons of ${teacher}`);
    await h.screenshot(page, 'timetable-teacher');

    // Lock a lesson: a new plan version that keeps it.
    const lesson = plan.lessons.find((l) => l.teacher === teacher);
    const before = await page.evaluate(() => window.timetable.state.plan);
    await page.click(`#grid .tt-cell[data-lesson="${lesson.id}"]`);
    await waitFor(page, 'the lesson panel', () => !document.getElementById('lesson').hidden);
    await page.click('#lock');
    await waitFor(page, 'the lock', (id) => window.timetable.locked.includes(id), lesson.id);
    const after = await page.evaluate(() => window.timetable.state.plan);
    assert.ok(after > before, `a new plan version (${before} -> ${after})`);

    // Move it one period later: either the plan takes it (a new version with the lesson there,
    // locked) or the page shows why not (409 with the broken rules).
    const target = { weekday: lesson.weekday, period: lesson.slots[0].period + 1 };
    await page.selectOption('#move-day', String(target.weekday));
    await page.selectOption('#move-period', String(target.period));
    const moved = await page.evaluate(({ weekday, period }) => window.timetable.move(weekday, period), target);
    if (moved.ok) {
      const p = await page.evaluate(() => window.timetable.plan);
      const l = p.lessons.find((x) => x.id === lesson.id);
      assert.equal(l.weekday, target.weekday);
      assert.equal(l.slots[0].period, target.period);
      assert.ok(await page.evaluate((id) => window.timetable.locked.includes(id), lesson.id), 'a moved lesson is locked');
    } else {
      assert.equal(moved.status, 409, JSON.stringify(moved));
      assert.match(await page.locator('#lesson-msg').textContent(), /不能移动/);
      // Chromium logs every 4xx answer as a console error; this refusal is the expected one.
      const expected = (e) => /status of 409 .*\/lessons\/[^/]+\/move/.test(e);
      assert.equal(h.consoleErrors.filter(expected).length, 1);
      h.consoleErrors.splice(0, h.consoleErrors.length, ...h.consoleErrors.filter((e) => !expected(e)));
    }
    await h.screenshot(page, 'timetable-move');

    // Join links for the lesson's room: the teacher's and each receiver's page.
    await page.click('#join');
    await waitFor(page, 'join links', () => document.querySelectorAll('#links li').length > 0);
    const links = await page.locator('#links a').evaluateAll((as) => as.map((a) => a.href));
    assert.ok(links.some((l) => l.includes('/teacher.html?room=')), links.join('\n'));
    // The host class (where the teacher stands) has a classroom link too, for its own screen.
    const classes = lesson.receivers.length + (lesson.host_class ? 1 : 0);
    assert.equal(links.filter((l) => l.includes('/classroom.html?room=')).length, classes);

    // The teacher's iCalendar: downloads and parses, one event per lesson.
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#ics')]);
    const file = path.join(RESULTS, 'timetable-teacher.ics');
    await download.saveAs(file);
    const cal = new ICAL.Component(ICAL.parse(fs.readFileSync(file, 'utf8')));
    const events = cal.getAllSubcomponents('vevent');
    assert.equal(events.length, mine, 'one event per lesson of the teacher');
    for (const ev of events) {
      const e = new ICAL.Event(ev);
      assert.ok(e.summary && e.startDate && e.endDate, 'summary, start and end');
      assert.ok(e.endDate.compare(e.startDate) > 0, 'ends after it starts');
    }

    // English at a click.
    await page.click('#lang-btn');
    assert.equal(await page.locator('h1').textContent(), 'Live lessons · Timetable');
    await h.screenshot(page, 'timetable-english');
    assert.deepEqual(h.pageErrors, [], 'page errors');
    assert.deepEqual(h.consoleErrors, [], 'console errors');
  });
});
