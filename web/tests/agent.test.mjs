// Issue 5's first acceptance, browser side: the classroom agent (Rust, GStreamer encoders, str0m
// WHIP) publishes as the teacher with its test sources, and the classroom page in headless
// Chromium plays it over WHEP through the SFU. Chromium must decode the agent's VP8 camera at the
// size and rate the agent sends, and its Opus voice; then the agent leaves on SIGTERM, exit 0.
//
// Env: AGENT_BIN (default <repo>/target/debug/classroom-agent, built on demand), SFU_BIN,
// CHROMIUM_PATH. Output: web/test-results/agent-*.log, sfu-agent.log, stats-agent.json.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Harness, REPO, RESULTS, sleep, pollUntil, viewerStats, logTail } from './harness.mjs';

const AGENT_BIN = process.env.AGENT_BIN || path.join(REPO, 'target', 'debug', 'classroom-agent');
const WIDTH = 640;
const HEIGHT = 360;
const FPS = 15;
const WINDOW_MS = 10_000;

const h = new Harness({ name: 'agent', logFile: 'sfu-agent.log', statsFile: 'stats-agent.json' });

/** Starts the agent as the room's teacher with test sources; resolves to { proc, logPath, exit }. */
function startAgent(token) {
  if (!fs.existsSync(AGENT_BIN)) {
    execFileSync(process.env.CARGO || 'cargo', ['build', '-p', 'classroom-agent'], { cwd: REPO, stdio: 'inherit' });
  }
  const logPath = path.join(RESULTS, 'agent-teacher.log');
  const log = fs.openSync(logPath, 'w');
  const proc = spawn(AGENT_BIN, [
    '--sfu', h.baseUrl, '--room', h.room, '--token', token, '--status', '127.0.0.1:0',
    '--role', 'teacher', '--video', 'test', '--audio', 'test',
    '--width', String(WIDTH), '--height', String(HEIGHT), '--fps', String(FPS),
  ], { env: { ...process.env, RUST_LOG: 'info' }, stdio: ['ignore', log, log] });
  fs.closeSync(log);
  const exit = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  return { proc, logPath, exit };
}

before(async () => {
  await h.startSfu();
  await h.launchBrowser();
});

after(async () => {
  await h.closeBrowser();
  await h.stopSfu();
});

test('the classroom page decodes the agent\'s camera and voice', async () => {
  const agent = startAgent(await h.mintToken('teacher', 'agent-teacher', '主讲课堂'));
  try {
    const viewerToken = await h.mintToken('classroom', 'school-1', '教学点1');
    const page = await h.openPage('classroom-agent', h.classroomUrl(h.room, viewerToken));
    await h.waitState(page, 'classroom', 'connected', 60_000);

    const started = await pollUntil(async () => {
      const v = await viewerStats(page);
      return v && v.slots[1]?.framesDecoded > 0 && v.slots[0]?.totalSamplesReceived > 0 ? v : null;
    }, { timeout: 45_000 });
    if (!started) {
      h.dump('no media from the agent', { viewer: await viewerStats(page), room: await h.roomInfo() });
      assert.fail(`the classroom page decoded nothing from the agent within 45 s\n--- agent ---\n${logTail(agent.logPath, 30)}`
        + `\n--- sfu ---\n${h.sfuLogTail(20)}`);
    }

    // The SFU may start a new viewer on a lower layer while it measures the link: let it settle,
    // then measure a window.
    await sleep(4000);
    const a = await viewerStats(page);
    await sleep(WINDOW_MS);
    const b = await viewerStats(page);
    h.dump('agent window', { a, b, room: await h.roomInfo() });
    const [camA, camB, audA, audB] = [a.slots[1], b.slots[1], a.slots[0], b.slots[0]];
    const frames = camB.framesDecoded - camA.framesDecoded;
    const samples = audB.totalSamplesReceived - audA.totalSamplesReceived;
    console.log(`agent -> Chromium: ${frames} frames decoded in ${WINDOW_MS} ms at ${camB.frameWidth}x${camB.frameHeight}`
      + ` (${camB.codecs.join(',')}), ${samples} audio samples (${audB.codecs.join(',')}), keyframes ${camB.keyFramesDecoded}`);

    assert.ok(camB.codecs.some((c) => /vp8/i.test(c)), `camera codecs ${camB.codecs}`);
    assert.ok(audB.codecs.some((c) => /opus/i.test(c)), `audio codecs ${audB.codecs}`);
    assert.ok(camB.keyFramesDecoded >= 1, 'no keyframe decoded');
    // The agent sends 15 fps; over 10 s a steady viewer decodes well over half of them.
    assert.ok(frames >= (FPS * WINDOW_MS) / 1000 / 2, `only ${frames} camera frames decoded in ${WINDOW_MS} ms`);
    // One of the agent's simulcast layers (its top is the capture size; each below is half).
    assert.ok([WIDTH, WIDTH / 2, WIDTH / 4].includes(camB.frameWidth), `decoded width ${camB.frameWidth}`);
    assert.equal(camB.frameHeight * WIDTH, camB.frameWidth * HEIGHT, 'the aspect ratio is kept');
    // 48 kHz Opus: at least half of the window's voice played out.
    assert.ok(samples >= (48_000 * WINDOW_MS) / 1000 / 2, `only ${samples} audio samples in ${WINDOW_MS} ms`);
    assert.equal(camB.packetsLost, 0, 'camera packets lost on loopback');

    await page.context().close();
    assert.deepEqual(h.pageErrors, [], 'uncaught page errors');
    assert.deepEqual(h.consoleErrors, [], 'console errors');
  } finally {
    agent.proc.kill('SIGTERM');
  }
  const done = await Promise.race([agent.exit, sleep(15_000).then(() => null)]);
  if (!done) agent.proc.kill('SIGKILL');
  assert.deepEqual(done, { code: 0, signal: null }, `the agent did not exit 0 on SIGTERM\n${logTail(agent.logPath, 30)}`);
});
