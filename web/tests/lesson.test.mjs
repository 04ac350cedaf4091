// End-to-end test of the browser pages against the real SFU, in headless Chromium.
//
// Run:  cd web && npm ci && node --test tests/
// Env:  SFU_BIN (default <repo>/target/debug/sfu), CHROMIUM_PATH (default /usr/bin/chromium).
// Output: web/test-results/ (screenshots, sfu.log, stats.json with getStats dumps and a timeline).
//
// - The SFU serves every file of web/ASSETS.txt, byte for byte.
// - A teacher page publishes fake camera (3-layer simulcast) and mic over WHIP; three classroom
//   pages play over WHEP (one joins before the teacher). Once everyone is on the top layer, each
//   classroom decodes >= 150 frames in 10 s at the width of the teacher's layer h and receives
//   audio. The teacher leaves (DELETE) and publishes again; the classrooms keep decoding without
//   reloading or reconnecting. No page logs a console error.
// - Courseware: a screen share fills the second video slot, and leaves it when stopped.
// - Blocked autoplay: the classroom shows "点击开启声音" and plays sound after one click.
// - Bad tokens give the pages a clear 401 error state, without crashing or retrying.
// - SFU restart on the same ports: teacher and classroom reconnect by themselves.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import {
  Harness, WEB, CHROMIUM, CHROMIUM_ARGS, sleep, pollUntil, viewerStats, teacherStats,
} from './harness.mjs';

const h = new Harness({ name: 'web-test' });
const SECRET = h.secret;
const ROOM = h.room;
const { consoleErrors, pageErrors } = h;
const mintToken = (...a) => h.mintToken(...a);
const openPage = (...a) => h.openPage(...a);
const watchPage = (...a) => h.watchPage(...a);
const waitState = (...a) => h.waitState(...a);
const dump = (...a) => h.dump(...a);
const screenshot = (...a) => h.screenshot(...a);
const sfuLogTail = (...a) => h.sfuLogTail(...a);

const VIEWERS = 3;
const MIN_FRAMES_IN_WINDOW = 150; // >= 15 fps over the 10 s window
const WINDOW_MS = 10_000;
const START_TIMEOUT_MS = 30_000;
const RESUME_TIMEOUT_MS = 15_000;
const MIN_FRAMES_AFTER_RESUME = 100;

// ---------------------------------------------------------- timeline

/**
 * Samples once a second for `ms`: the teacher's video layers, a viewer's camera slot, and the SFU's
 * room API entry for that viewer (whatever fields it has). For diagnosis only.
 */
async function sampleTimeline(teacher, viewer, roomName, ms) {
  const end = Date.now() + ms;
  const out = [];
  while (Date.now() < end) {
    const next = Date.now() + 1000;
    const [t, v, r] = await Promise.all([
      teacherStats(teacher).catch(() => null),
      viewerStats(viewer).catch(() => null),
      fetch(`${h.baseUrl}/api/rooms/${roomName}`).then((x) => (x.ok ? x.json() : x.status)).catch(() => null),
    ]);
    const sub = r && Array.isArray(r.subscribers) ? r.subscribers.find((x) => x.sub === 'school-1') : r;
    out.push({
      t: Date.now(),
      teacher: t && t.outbound.filter((o) => o.kind === 'video')
        .map((o) => `${o.rid}:${o.frameWidth || 0}w/${o.framesEncoded || 0}f/${o.framesPerSecond || 0}fps/${o.active}`),
      viewer: v && (({ framesDecoded, framesReceived, framesDropped, keyFramesDecoded, frameWidth, pliCount }) => (
        { framesDecoded, framesReceived, framesDropped, keyFramesDecoded, frameWidth, pliCount }))(v.slots[1]),
      sfu: sub && sub.slots ? sub.slots.find((x) => x.slot === 'teacher_camera') || sub.slots : sub,
    });
    await sleep(Math.max(0, Math.min(next, end) - Date.now()));
  }
  return out;
}

// ------------------------------------------------------------------ tests

describe('teacher and classroom pages against the SFU', { timeout: 300_000 }, () => {
  before(async () => {
    await h.startSfu();
    await h.launchBrowser();
  });

  after(async () => {
    await h.closeBrowser();
    await h.stopSfu();
  });

  test('the SFU serves every file listed in ASSETS.txt', async () => {
    const assets = fs.readFileSync(path.join(WEB, 'ASSETS.txt'), 'utf8').split('\n').map((l) => l.trim())
      .filter((l) => l && !l.startsWith('#'));
    for (const a of assets) {
      const res = await fetch(`${h.baseUrl}/${a}`);
      assert.equal(res.status, 200, `GET /${a}`);
      const served = Buffer.from(await res.arrayBuffer());
      assert.ok(served.equals(fs.readFileSync(path.join(WEB, a))), `/${a} differs from web/${a} (rebuild the sfu?)`);
    }
  });

  test('teacher publishes simulcast; three classrooms play it, across a teacher reconnect', async () => {
    const [consoleBase, pageBase] = [consoleErrors.length, pageErrors.length];
    const teacherToken = await mintToken('teacher', 'teacher-1', '张老师');
    const viewerTokens = [];
    for (let i = 1; i <= VIEWERS; i++) viewerTokens.push(await mintToken('classroom', `school-${i}`, `教学点${i}`));
    const classroomUrl = (t) => `${h.baseUrl}/classroom.html?publish=0&room=${ROOM}&token=${encodeURIComponent(t)}`;

    // Viewer 1 joins before the teacher: its slots must fill when the teacher starts.
    const viewers = [];
    viewers.push(await openPage('classroom-1', classroomUrl(viewerTokens[0])));
    // (If the SFU refused an early viewer, the page retries by itself; the console check reports the refusal.)
    await viewers[0].waitForFunction(() => window.lesson && (window.lesson.state === 'connected' || window.lesson.error),
      null, { timeout: START_TIMEOUT_MS, polling: 100 });

    const teacher = await openPage(
      'teacher',
      `${h.baseUrl}/teacher.html?room=${ROOM}&token=${encodeURIComponent(teacherToken)}&autostart=1`,
      { media: true },
    );
    await waitState(teacher, 'teacher', 'connected');

    for (let i = 2; i <= VIEWERS; i++) viewers.push(await openPage(`classroom-${i}`, classroomUrl(viewerTokens[i - 1])));
    for (let i = 0; i < VIEWERS; i++) await waitState(viewers[i], `classroom-${i + 1}`, 'connected');

    // Everyone decodes something within START_TIMEOUT_MS.
    const started = await pollUntil(async () => {
      const s = await Promise.all(viewers.map(viewerStats));
      return s.every((v) => v && v.slots[1] && v.slots[1].framesDecoded > 0) ? s : null;
    }, { timeout: START_TIMEOUT_MS });
    if (!started) {
      dump('no video at start: viewers', await Promise.all(viewers.map(viewerStats)));
      dump('no video at start: teacher', await teacherStats(teacher));
      assert.fail(`not every classroom decoded video within ${START_TIMEOUT_MS} ms (see test-results/stats.json)`
        + `\n--- sfu log tail ---\n${sfuLogTail(20)}`);
    }

    // Chromium starts its simulcast with the low layers and adds 'h' as its bandwidth estimate
    // grows; the SFU moves each classroom up when 'h' arrives. Measure once everyone is there.
    const topLayer = async () => {
      const t = await teacherStats(teacher);
      const h = t && t.outbound.find((o) => o.kind === 'video' && o.rid === 'h');
      const v = await Promise.all(viewers.map(viewerStats));
      return { t, h, v, widths: v.map((x) => x.slots[1].frameWidth) };
    };
    const atTop = await pollUntil(async () => {
      const x = await topLayer();
      return x.h && x.h.frameWidth && x.widths.every((w) => w === x.h.frameWidth) ? x : null;
    }, { timeout: START_TIMEOUT_MS });
    if (!atTop) {
      const x = await topLayer();
      dump('top layer not reached: teacher', x.t);
      dump('top layer not reached: viewers', x.v);
      assert.fail(`classroom frameWidth ${JSON.stringify(x.widths)} != teacher layer h frameWidth `
        + `${x.h?.frameWidth} within ${START_TIMEOUT_MS} ms (teacher video layers: `
        + `${JSON.stringify(x.t?.outbound.filter((o) => o.kind === 'video')
          .map((o) => [o.rid, o.frameWidth, o.framesPerSecond, o.qualityLimitationReason]))})`);
    }
    const rids = atTop.t.outbound.filter((o) => o.kind === 'video' && o.rid).map((o) => o.rid).sort();
    assert.deepEqual(rids, ['h', 'l', 'm'], 'teacher should send three simulcast layers');

    // 10 s measuring window.
    const ta = await teacherStats(teacher);
    const a = await Promise.all(viewers.map(viewerStats));
    const timeline = await sampleTimeline(teacher, viewers[0], ROOM, WINDOW_MS);
    const b = await Promise.all(viewers.map(viewerStats));
    const tb = await teacherStats(teacher);
    dump('window timeline (teacher layers, classroom-1 camera slot, SFU view of classroom-1)', timeline);
    dump('window start', a);
    dump('window end', b);
    dump('teacher at window start', ta);
    dump('teacher at window end', tb);
    const hEncoded = (tb.outbound.find((o) => o.rid === 'h')?.framesEncoded || 0)
      - (ta.outbound.find((o) => o.rid === 'h')?.framesEncoded || 0);
    for (let i = 0; i < VIEWERS; i++) {
      const name = `classroom-${i + 1}`;
      assert.equal(b[i].sessions, a[i].sessions, `${name} reconnected during the window`);
      const d = (k) => b[i].slots[1][k] - a[i].slots[1][k];
      assert.ok(d('framesDecoded') >= MIN_FRAMES_IN_WINDOW,
        `${name} decoded ${d('framesDecoded')} camera frames in ${WINDOW_MS} ms, want >= ${MIN_FRAMES_IN_WINDOW} `
        + `(teacher encoded ${hEncoded} 'h' frames; ${name} received ${d('framesReceived')}, dropped `
        + `${d('framesDropped')}, key frames ${d('keyFramesDecoded')}, PLIs sent ${d('pliCount')}, `
        + `width ${a[i].slots[1].frameWidth}->${b[i].slots[1].frameWidth})`);
      const audioBytes = b[i].slots[0].bytesReceived - a[i].slots[0].bytesReceived;
      const audioSamples = b[i].slots[0].totalSamplesReceived - a[i].slots[0].totalSamplesReceived;
      assert.ok(audioBytes > 0, `${name}: audio bytesReceived did not grow`);
      assert.ok(audioSamples > 0, `${name}: audio totalSamplesReceived did not grow`);
      const hNow = tb.outbound.find((o) => o.rid === 'h')?.frameWidth;
      assert.equal(b[i].slots[1].frameWidth, hNow, `${name}: frameWidth vs the teacher's layer h`);
    }

    for (let i = 0; i < VIEWERS; i++) {
      const sound = await viewers[i].evaluate(() => window.lesson.soundBlocked);
      assert.equal(sound, false, `classroom-${i + 1}: audio autoplay was blocked`);
    }
    await screenshot(teacher, 'teacher');
    for (let i = 0; i < VIEWERS; i++) await screenshot(viewers[i], `classroom-${i + 1}`);

    // The teacher leaves (DELETE) and publishes again; viewers keep their sessions.
    await teacher.evaluate(() => window.lesson.stop());
    assert.equal(await teacher.evaluate(() => window.lesson.state), 'ended');
    await sleep(2000);
    const paused = await Promise.all(viewers.map(viewerStats));
    dump('teacher away', paused);
    await teacher.evaluate(() => window.lesson.start());
    await waitState(teacher, 'teacher', 'connected');
    const resumed = await pollUntil(async () => {
      const v = await Promise.all(viewers.map(viewerStats));
      const ok = v.every((x, i) => x.sessions === paused[i].sessions
        && x.slots[1].framesDecoded - paused[i].slots[1].framesDecoded >= MIN_FRAMES_AFTER_RESUME
        && x.slots[0].bytesReceived > paused[i].slots[0].bytesReceived);
      return ok ? v : null;
    }, { timeout: RESUME_TIMEOUT_MS });
    if (!resumed) {
      const v = await Promise.all(viewers.map(viewerStats));
      dump('after teacher reconnect: viewers', v);
      dump('after teacher reconnect: teacher', await teacherStats(teacher));
      assert.fail('classrooms did not resume after the teacher reconnected: '
        + JSON.stringify(v.map((x, i) => ({
          sessions: [paused[i].sessions, x.sessions],
          framesDecoded: [paused[i].slots[1].framesDecoded, x.slots[1].framesDecoded],
          audioBytes: [paused[i].slots[0].bytesReceived, x.slots[0].bytesReceived],
          ssrcs: x.slots[1].ssrcs,
        })))
        + `\n--- sfu log tail ---\n${sfuLogTail(20)}`);
    }
    dump('after teacher reconnect', resumed);
    for (let i = 0; i < VIEWERS; i++) await screenshot(viewers[i], `classroom-${i + 1}-after-reconnect`);

    // Room API answers (display only; fields not checked).
    const roomRes = await fetch(`${h.baseUrl}/api/rooms/${ROOM}`, {
      headers: { Authorization: `Bearer ${teacherToken}` },
    });
    dump('GET /api/rooms/{room}', { status: roomRes.status, body: await roomRes.text() });

    await teacher.evaluate(() => window.lesson.stop());
    for (const p of [teacher, ...viewers]) await p.context().close();

    assert.deepEqual(pageErrors.slice(pageBase), [], 'uncaught page errors');
    assert.deepEqual(consoleErrors.slice(consoleBase), [], 'console errors');
  });

  test('courseware: screen share fills the second video slot and leaves it again', async () => {
    const [consoleBase, pageBase] = [consoleErrors.length, pageErrors.length];
    const room = `${ROOM}-cw`;
    const teacherToken = await mintToken('teacher', 'teacher-cw', '李老师', { room });
    const viewerToken = await mintToken('classroom', 'school-cw', '教学点', { room });
    const teacher = await openPage(
      'teacher-cw',
      `${h.baseUrl}/teacher.html?room=${room}&token=${encodeURIComponent(teacherToken)}&courseware=1&autostart=1`,
      { media: true },
    );
    await waitState(teacher, 'teacher-cw', 'connected');
    const viewer = await openPage('classroom-cw', `${h.baseUrl}/classroom.html?publish=0&room=${room}&token=${encodeURIComponent(viewerToken)}`);
    await waitState(viewer, 'classroom-cw', 'connected');
    assert.ok(await pollUntil(async () => (await viewerStats(viewer)).slots[1].framesDecoded > 20,
      { timeout: START_TIMEOUT_MS }), 'classroom-cw: no camera video');
    assert.equal(await viewer.evaluate(() => document.body.classList.contains('has-courseware')), false);

    // A click gives the page the user activation getDisplayMedia needs.
    await teacher.click('#courseware-btn');
    await teacher.waitForFunction(() => !document.getElementById('courseware-figure').hidden, null, { timeout: 10_000 });
    const shared = await pollUntil(async () => {
      const v = await viewerStats(viewer);
      return v.slots[2].framesDecoded > 30 ? v : null;
    }, { timeout: 15_000 });
    if (!shared) {
      dump('courseware: viewer', await viewerStats(viewer));
      dump('courseware: teacher', await teacherStats(teacher));
      assert.fail('classroom-cw decoded no courseware frames within 15 s (see test-results/stats.json)');
    }
    const a = await viewerStats(viewer);
    await sleep(3000);
    const b = await viewerStats(viewer);
    dump('courseware shared', { teacher: await teacherStats(teacher), viewer: b });
    assert.ok(b.slots[2].framesDecoded > a.slots[2].framesDecoded, 'courseware slot stopped decoding');
    const camFrames = b.slots[1].framesDecoded - a.slots[1].framesDecoded;
    assert.ok(camFrames >= 30, `camera slot decoded only ${camFrames} frames in 3 s while sharing `
      + `(received ${b.slots[1].framesReceived - a.slots[1].framesReceived}, width ${b.slots[1].frameWidth}, `
      + `key frames ${b.slots[1].keyFramesDecoded - a.slots[1].keyFramesDecoded})`);
    const screen = await teacher.evaluate(() => {
      const s = document.getElementById('courseware-preview').srcObject.getVideoTracks()[0].getSettings();
      return { width: s.width, height: s.height };
    });
    assert.equal(b.slots[2].frameWidth, screen.width, 'courseware arrives at the shared screen width');
    await viewer.waitForFunction(() => document.body.classList.contains('has-courseware'), null, { timeout: 5000 });
    await screenshot(teacher, 'teacher-courseware');
    await screenshot(viewer, 'classroom-courseware');

    await teacher.click('#courseware-btn'); // 停止共享课件
    await viewer.waitForFunction(() => !document.body.classList.contains('has-courseware'), null, { timeout: 10_000 });
    const c = await viewerStats(viewer);
    await sleep(2000);
    const d = await viewerStats(viewer);
    assert.ok(d.slots[1].framesDecoded > c.slots[1].framesDecoded, 'camera slot stalled after sharing stopped');
    assert.equal(d.sessions, a.sessions, 'classroom-cw reconnected');

    await teacher.evaluate(() => window.lesson.stop());
    for (const p of [teacher, viewer]) await p.context().close();
    assert.deepEqual(pageErrors.slice(pageBase), [], 'uncaught page errors');
    assert.deepEqual(consoleErrors.slice(consoleBase), [], 'console errors');
  });

  test('ICE-TCP: a classroom whose firewall blocks UDP plays over TCP on the media port', async () => {
    const [consoleBase, pageBase] = [consoleErrors.length, pageErrors.length];
    const room = `${ROOM}-tcp`;
    const teacherToken = await mintToken('teacher', 'teacher-tcp', '赵老师', { room });
    const viewerToken = await mintToken('classroom', 'school-tcp', '教学点', { room });
    const teacher = await openPage(
      'teacher-tcp',
      `${h.baseUrl}/teacher.html?room=${room}&token=${encodeURIComponent(teacherToken)}&autostart=1`,
      { media: true },
    );
    await waitState(teacher, 'teacher-tcp', 'connected');
    // The "firewall": the classroom only ever learns the SFU's TCP candidate.
    const context = await h.browser.newContext({ viewport: { width: 1366, height: 768 } });
    let rewritten = 0;
    await context.route('**/whep/**', async (route) => {
      if (route.request().method() !== 'POST') return route.continue();
      const response = await route.fetch();
      const sdp = (await response.text())
        .split('\r\n')
        .filter((l) => !(l.startsWith('a=candidate') && / udp /i.test(l)))
        .join('\r\n');
      rewritten += 1;
      await route.fulfill({ response, body: sdp });
    });
    const viewer = await context.newPage();
    watchPage(viewer, 'classroom-tcp');
    await viewer.goto(`${h.baseUrl}/classroom.html?publish=0&room=${room}&token=${encodeURIComponent(viewerToken)}`);
    await waitState(viewer, 'classroom-tcp', 'connected');
    assert.ok(rewritten >= 1, 'the WHEP answer passed through the firewall rewrite');
    const ok = await pollUntil(async () => (await viewerStats(viewer)).slots[1].framesDecoded > 60, { timeout: START_TIMEOUT_MS });
    const pair = await viewer.evaluate(async () => {
      const stats = await window.lesson.pc.getStats();
      let selected = null;
      stats.forEach((s) => { if (s.type === 'transport') selected = s.selectedCandidatePairId; });
      const p = selected && stats.get(selected);
      const remote = p && stats.get(p.remoteCandidateId);
      return remote ? { protocol: remote.protocol, port: remote.port } : null;
    });
    assert.ok(ok, 'classroom-tcp decoded the teacher over ICE-TCP');
    assert.deepEqual(pair, { protocol: 'tcp', port: h.sfuPorts.mediaPort }, 'the selected pair is TCP to the media port');
    await teacher.evaluate(() => window.lesson.stop());
    await teacher.context().close();
    await context.close();
    assert.deepEqual(pageErrors.slice(pageBase), [], 'uncaught page errors');
    assert.deepEqual(consoleErrors.slice(consoleBase), [], 'console errors');
  });

  test('blocked autoplay: the classroom asks for one click, then plays sound', async () => {
    const pageBase = pageErrors.length;
    const consoleBase = consoleErrors.length;
    const room = `${ROOM}-ap`;
    const teacherToken = await mintToken('teacher', 'teacher-ap', '赵老师', { room });
    const viewerToken = await mintToken('classroom', 'school-ap', '教学点', { room });
    const teacher = await openPage(
      'teacher-ap',
      `${h.baseUrl}/teacher.html?room=${room}&token=${encodeURIComponent(teacherToken)}&autostart=1`,
      { media: true },
    );
    await waitState(teacher, 'teacher-ap', 'connected');
    // A browser with the default autoplay policy: no sound without a user gesture.
    const strict = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS.filter((a) => !a.startsWith('--autoplay-policy')),
    });
    try {
      const context = await strict.newContext({ viewport: { width: 1366, height: 768 } });
      const viewer = await context.newPage();
      watchPage(viewer, 'classroom-ap');
      await viewer.goto(`${h.baseUrl}/classroom.html?publish=0&room=${room}&token=${encodeURIComponent(viewerToken)}`);
      await waitState(viewer, 'classroom-ap', 'connected');
      await viewer.waitForFunction(() => window.lesson.soundBlocked, null, { timeout: 10_000 });
      await viewer.locator('#sound-overlay').waitFor({ state: 'visible', timeout: 5000 });
      assert.match(await viewer.locator('#sound-overlay').innerText(), /点击开启声音/);
      // Video plays muted meanwhile.
      assert.ok(await pollUntil(async () => (await viewerStats(viewer)).slots[1].framesDecoded > 20,
        { timeout: START_TIMEOUT_MS }), 'classroom-ap: no video while sound is blocked');
      await screenshot(viewer, 'classroom-sound-blocked');
      await viewer.mouse.click(683, 384);
      await viewer.locator('#sound-overlay').waitFor({ state: 'hidden', timeout: 5000 });
      assert.equal(await viewer.evaluate(() => window.lesson.soundBlocked), false);
      assert.equal(await viewer.evaluate(() => document.getElementById('teacher-audio').paused), false);
    } finally {
      await strict.close();
    }
    await teacher.evaluate(() => window.lesson.stop());
    await teacher.context().close();
    assert.deepEqual(pageErrors.slice(pageBase), [], 'uncaught page errors');
    assert.deepEqual(consoleErrors.slice(consoleBase), [], 'console errors');
  });

  test('a bad token gives a clear 401 error state, without crashing', async () => {
    const errorsBefore = pageErrors.length;
    const wrongSecret = await mintToken('classroom', 'school-x', '冒名', { secret: `${SECRET}-wrong` });
    const cases = [
      ['classroom-garbage-token', `${h.baseUrl}/classroom.html?publish=0&room=${ROOM}&token=not-a-jwt`],
      ['classroom-wrong-secret', `${h.baseUrl}/classroom.html?publish=0&room=${ROOM}&token=${encodeURIComponent(wrongSecret)}`],
      ['teacher-wrong-secret',
        `${h.baseUrl}/teacher.html?room=${ROOM}&token=${encodeURIComponent(wrongSecret)}&autostart=1`],
    ];
    for (const [name, url] of cases) {
      const page = await openPage(name, url, { media: name.startsWith('teacher') });
      await waitState(page, name, 'error', 15_000);
      const err = await page.evaluate(() => window.lesson.error);
      assert.equal(err.status, 401, `${name}: error ${JSON.stringify(err)}`);
      assert.match(err.message, /401/);
      // The page says so in words, and does not retry.
      const shown = name.startsWith('teacher')
        ? await page.locator('#error-text').innerText()
        : await page.locator('#notice').innerText();
      assert.match(shown, /令牌无效|401/, `${name}: page text ${JSON.stringify(shown)}`);
      await sleep(1500);
      assert.equal(await page.evaluate(() => window.lesson.state), 'error', `${name}: left the error state`);
      await screenshot(page, name);
      await page.context().close();
    }
    assert.deepEqual(pageErrors.slice(errorsBefore), [], 'uncaught page errors');
  });

  test('SFU restart: teacher and classroom reconnect by themselves', async () => {
    const pageBase = pageErrors.length; // console errors are expected here (refused connections)
    const room = `${ROOM}-rs`;
    const teacherToken = await mintToken('teacher', 'teacher-rs', '王老师', { room });
    const viewerToken = await mintToken('classroom', 'school-rs', '教学点', { room });
    const teacher = await openPage(
      'teacher-rs',
      `${h.baseUrl}/teacher.html?room=${room}&token=${encodeURIComponent(teacherToken)}&autostart=1`,
      { media: true },
    );
    const viewer = await openPage('classroom-rs', `${h.baseUrl}/classroom.html?publish=0&room=${room}&token=${encodeURIComponent(viewerToken)}`);
    await waitState(teacher, 'teacher-rs', 'connected');
    await waitState(viewer, 'classroom-rs', 'connected');
    assert.ok(await pollUntil(async () => (await viewerStats(viewer)).slots[1].framesDecoded > 20,
      { timeout: START_TIMEOUT_MS }), 'classroom-rs: no video before the restart');

    await h.stopSfu();
    await waitState(teacher, 'teacher-rs', 'reconnecting', 20_000);
    await waitState(viewer, 'classroom-rs', 'reconnecting', 20_000);
    await screenshot(viewer, 'classroom-reconnecting');
    await h.startSfu(h.sfuPorts);

    await waitState(teacher, 'teacher-rs', 'connected', 45_000);
    await waitState(viewer, 'classroom-rs', 'connected', 45_000);
    const resumed = await pollUntil(async () => {
      const v = await viewerStats(viewer);
      return v.sessions >= 2 && v.slots[1].framesDecoded > 50 ? v : null;
    }, { timeout: 30_000 });
    if (!resumed) {
      dump('after SFU restart: viewer', await viewerStats(viewer));
      dump('after SFU restart: teacher', await teacherStats(teacher));
      assert.fail('classroom-rs did not play again after the SFU restarted');
    }
    assert.equal(await teacher.evaluate(() => window.lesson.sessions), 2);
    await teacher.evaluate(() => window.lesson.stop());
    for (const p of [teacher, viewer]) await p.context().close();
    assert.deepEqual(pageErrors.slice(pageBase), [], 'uncaught page errors');
  });
});
