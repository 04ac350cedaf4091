// Dynacast in headless Chromium: while no classroom needs the teacher's middle and top camera
// layers, the SFU tells the teacher page to stop encoding them (a `layers` room event the page
// applies with RTCRtpSender.setParameters); a classroom that joins and wants the top layer gets it
// back, at full width. The lowest layer never stops.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Harness, pollUntil, teacherStats, viewerStats } from './harness.mjs';

const h = new Harness({ name: 'dynacast' });
const ROOM = h.room;

const layerState = async (teacher) => {
  const s = await teacherStats(teacher);
  const v = (s?.outbound || []).filter((o) => o.kind === 'video' && o.rid);
  return Object.fromEntries(v.map((o) => [o.rid, o.active]));
};

describe('dynacast', { timeout: 180_000 }, () => {
  before(async () => {
    await h.startSfu();
    await h.launchBrowser();
  });

  after(async () => {
    await h.closeBrowser();
    await h.stopSfu();
  });

  test('unneeded camera layers stop, and come back when a classroom wants them', async () => {
    const tTok = await h.mintToken('teacher', 'teacher-1', '李老师');
    const teacher = await h.openPage('teacher', h.teacherUrl(ROOM, tTok, '&autostart=1'), { media: true });
    await h.waitState(teacher, 'teacher', 'connected');
    const all = await pollUntil(async () => {
      const l = await layerState(teacher);
      return l.l && l.m && l.h ? l : null;
    }, { timeout: 20_000 });
    assert.ok(all, 'the teacher sends three layers at first');

    // Nobody watches: after the SFU's 10 s hold, only the lowest layer is encoded.
    const held = await pollUntil(async () => {
      const l = await layerState(teacher);
      return l.l === true && l.m === false && l.h === false ? l : null;
    }, { timeout: 40_000 });
    assert.ok(held, `layers not held: ${JSON.stringify(await layerState(teacher))}\n${h.sfuLogTail(20)}`);
    assert.deepEqual(await teacher.evaluate(() => window.lesson.layersWanted), ['l']);
    const metrics = await (await fetch(`${h.baseUrl}/metrics`)).text();
    assert.match(metrics, /sfu_dynacast_changes_total [1-9]/);

    // A classroom joins on a clean link: the top layer resumes and reaches it at full width.
    const cTok = await h.mintToken('classroom', 'cls-1', '一号教学点');
    const viewer = await h.openPage('classroom', h.classroomUrl(ROOM, cTok));
    await h.waitState(viewer, 'classroom', 'connected');
    const back = await pollUntil(async () => {
      const l = await layerState(teacher);
      return l.h === true ? l : null;
    }, { timeout: 30_000 });
    assert.ok(back, `the top layer did not resume: ${JSON.stringify(await layerState(teacher))}`);
    const full = await pollUntil(async () => {
      const v = await viewerStats(viewer);
      return v && v.slots[1] && v.slots[1].frameWidth === 1280 ? v : null;
    }, { timeout: 40_000 });
    assert.ok(full, `the classroom did not reach the top layer: ${JSON.stringify((await viewerStats(viewer))?.slots[1])}`);
    await h.screenshot(viewer, 'dynacast-classroom');
    assert.deepEqual(h.pageErrors, [], 'page errors');
    assert.deepEqual(h.consoleErrors, [], 'console errors');
  });
});
