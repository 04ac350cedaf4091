// The interactive lesson in headless Chromium: one teacher page and two classroom pages.
//
// The teacher publishes a fake camera; both classrooms publish their own fake camera and mic
// and play the lesson. The teacher's console shows both as tiles; classroom A raises its hand;
// the teacher puts it on stage; classroom B then receives A's voice and picture in its stage
// slot (A does not get itself back); the teacher mutes A and B stops receiving A's voice; the
// teacher ends the lesson; both classroom pages show it ended; attendance lists both. No page
// logs a console error. Screenshots go to web/test-results/interactive-*.png.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Harness, pollUntil } from './harness.mjs';

const h = new Harness({ name: 'interactive' });
const ROOM = h.room;
const TIMEOUT = 40_000;

async function waitFor(page, name, what, fn, arg, timeout = TIMEOUT) {
  try {
    await page.waitForFunction(fn, arg, { timeout, polling: 200 });
  } catch {
    const now = await page.evaluate(() => JSON.stringify({
      state: window.lesson?.state,
      room: window.lesson?.room,
      media: window.lesson?.media,
      tiles: window.lesson?.tiles,
      feed: window.lesson?.feed,
    })).catch((e) => e.message);
    throw new Error(`${name}: ${what} not within ${timeout} ms; page: ${now}\n--- sfu log ---\n${h.sfuLogTail(30)}`);
  }
}

describe('interactive lesson pages', { timeout: 240_000 }, () => {
  before(async () => {
    await h.startSfu();
    await h.launchBrowser();
  });

  after(async () => {
    await h.closeBrowser();
    await h.stopSfu();
  });

  test('hand, stage, mute, end and attendance through the pages', async () => {
    const tTok = await h.mintToken('teacher', 'teacher-1', '张老师');
    const aTok = await h.mintToken('classroom', 'cls-a', '一小三年级');
    const bTok = await h.mintToken('classroom', 'cls-b', '二小三年级');

    const teacher = await h.openPage('teacher', h.teacherUrl(ROOM, tTok, '&autostart=1&courseware=1'), { media: true });
    await h.waitState(teacher, 'teacher', 'connected');
    const devices = await teacher.evaluate(() => window.lesson.devices);
    assert.ok(devices.cameras.length >= 1 && devices.mics.length >= 1, `device choices: ${JSON.stringify(devices)}`);
    // The courseware: a screen share.
    await teacher.click('#courseware-btn');
    await teacher.waitForFunction(() => !document.getElementById('courseware-figure').hidden, null, { timeout: 10_000 });
    const a = await h.openPage('classroom-a', h.classroomUrl(ROOM, aTok, '&publish=1'), { media: true });
    const b = await h.openPage('classroom-b', h.classroomUrl(ROOM, bTok, '&publish=1'), { media: true });
    for (const [p, n] of [[a, 'classroom-a'], [b, 'classroom-b']]) {
      await h.waitState(p, n, 'connected');
      await waitFor(p, n, 'its own feed publishing', () => window.lesson.feed.state === 'connected');
      await waitFor(p, n, 'the teacher camera', () => window.lesson.media.camera.live);
      await waitFor(p, n, 'the courseware', () => window.lesson.media.courseware.live);
    }

    // The console shows both classrooms as live tiles.
    await waitFor(teacher, 'teacher', 'two live classroom tiles', () => {
      const t = window.lesson.tiles.filter((x) => x.sub && x.live);
      return t.length === 2 && new Set(t.map((x) => x.sub)).size === 2;
    });
    await h.screenshot(teacher, 'interactive-teacher-tiles');
    // Someone's voice (the fake devices beep) makes an active speaker, from RFC 6464 levels.
    await waitFor(teacher, 'teacher', 'an active speaker', () => window.lesson.room?.speaker != null);

    // Chinese by default, English at a click (and back).
    assert.equal(await b.locator('#hand-text').textContent(), '举手');
    await b.click('#lang-btn');
    await waitFor(b, 'classroom-b', 'English text', () => document.getElementById('hand-text').textContent === 'Raise hand'
      && document.documentElement.lang === 'en');
    await h.screenshot(b, 'interactive-classroom-b-english');
    await b.click('#lang-btn');
    await waitFor(b, 'classroom-b', 'Chinese text again', () => document.getElementById('hand-text').textContent === '举手');
    assert.equal(await teacher.locator('#start-btn').textContent(), '开始上课');

    // A raises its hand; the teacher sees it first in the queue.
    const r = await a.evaluate(() => window.lesson.hand(true));
    assert.equal(r.type, 'ok', JSON.stringify(r));
    await waitFor(teacher, 'teacher', 'the raised hand', () => window.lesson.room?.hands[0] === 'cls-a');
    await waitFor(a, 'classroom-a', 'its hand shown raised', () => document.getElementById('hand-btn').classList.contains('raised'));
    // A classroom cannot put itself on stage.
    const denied = (await fetch(`${h.baseUrl}/api/rooms/${ROOM}/stage`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${bTok}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ sub: 'cls-b', on: true }),
    })).status;
    assert.equal(denied, 403);

    // The teacher brings A on stage: B hears and sees A; A does not get itself back.
    const s = await teacher.evaluate(() => window.lesson.stage('cls-a', true));
    assert.equal(s.type, 'ok', JSON.stringify(s));
    await waitFor(b, 'classroom-b', "A's voice in the stage slot", () => window.lesson.media.stageAudio.live);
    await waitFor(b, 'classroom-b', "A's picture in the stage slot", () => window.lesson.media.stageVideo.live);
    await waitFor(a, 'classroom-a', 'its on-stage badge', () => window.lesson.room?.stage.includes('cls-a'));
    const aStage = await a.evaluate(() => window.lesson.media);
    assert.equal(aStage.stageAudio.bytes, 0, 'A receives its own voice');
    assert.equal(aStage.stageVideo.frames, 0, 'A receives its own picture');
    await h.screenshot(b, 'interactive-classroom-b-stage');
    await h.screenshot(a, 'interactive-classroom-a-on-stage');

    // Muted: A's voice stops reaching B; its picture stays.
    const m = await teacher.evaluate(() => window.lesson.mute('cls-a', true));
    assert.equal(m.type, 'ok', JSON.stringify(m));
    await waitFor(b, 'classroom-b', "A's voice gone after mute", () => !window.lesson.media.stageAudio.live);
    const before = await b.evaluate(() => window.lesson.media.stageAudio.bytes);
    await new Promise((res) => setTimeout(res, 3000));
    const afterMute = await b.evaluate(() => window.lesson.media);
    assert.equal(afterMute.stageAudio.bytes, before, 'stage audio bytes still growing after mute');
    assert.ok(afterMute.stageVideo.live, "A's picture stopped after mute");

    // The operations page shows the room, its viewers and the forwarded bitrate.
    const ops = await h.openPage('ops', `${h.baseUrl}/ops.html`);
    await waitFor(ops, 'ops', 'the room with its viewers and a bitrate', (room) => {
      const r = window.ops.rooms.find((x) => x.room === room);
      const rate = window.ops.rate;
      return r && r.subscribers.length >= 3 && rate.length >= 2 && rate[rate.length - 1][1] > 100_000;
    }, ROOM);
    assert.equal(await ops.evaluate(() => window.ops.healthy), true);
    assert.ok(await ops.locator(`tr[data-room="${ROOM}"]`).count() === 1, 'room row');
    await h.screenshot(ops, 'interactive-ops');
    await ops.click('#lang-btn');
    assert.equal(await ops.evaluate(() => window.ops.lang), 'en');
    assert.equal(await ops.locator('h1').textContent(), 'Classrooms · Operations');
    await ops.close();

    // Attendance while the lesson runs, then the end.
    const live = await teacher.evaluate(() => window.lesson.attendance());
    const subs = live.participants.map((p) => p.sub).sort();
    assert.deepEqual(subs, ['cls-a', 'cls-b', 'teacher-1']);
    await h.screenshot(teacher, 'interactive-teacher-attendance');
    const end = await teacher.evaluate(() => window.lesson.endLesson());
    assert.equal(end.type, 'ok', JSON.stringify(end));
    for (const [p, n] of [[a, 'classroom-a'], [b, 'classroom-b']]) {
      await waitFor(p, n, 'the lesson ended', () => window.lesson.state === 'ended' && window.lesson.room?.ended);
    }
    await h.screenshot(b, 'interactive-classroom-ended');
    const report = await pollUntil(async () => {
      const res = await fetch(`${h.baseUrl}/api/rooms/${ROOM}/attendance`, { headers: { Authorization: `Bearer ${tTok}` } });
      const j = res.ok ? await res.json() : null;
      return j && j.lesson === 'ended' ? j : null;
    }, { timeout: 10_000 });
    assert.ok(report, 'attendance after the end');
    for (const sub of ['cls-a', 'cls-b']) {
      const row = report.participants.find((p) => p.sub === sub);
      assert.ok(row, `${sub} in the attendance`);
      assert.equal(row.present, false);
      assert.ok(row.connected_ms > 5000, `${sub} connected ${row.connected_ms} ms`);
      assert.ok(row.last_left_unix_ms >= row.first_joined_unix_ms);
    }
    const index = await h.openPage('index', `${h.baseUrl}/`);
    await h.screenshot(index, 'interactive-index');
    await index.click('#lang-btn');
    assert.equal(await index.locator('h1:visible').textContent(), 'Live classroom SFU');
    await index.close();
    assert.deepEqual(h.pageErrors, [], 'page errors');
    assert.deepEqual(h.consoleErrors, [], 'console errors');
  });
});
