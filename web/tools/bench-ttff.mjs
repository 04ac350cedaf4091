// Time to first frame for a WHEP viewer on loopback, in headless Chromium: a teacher page
// publishes (fake camera, simulcast); 20 classroom pages open one after another, and each
// reports the time from navigation start to its first rendered teacher frame
// (requestVideoFrameCallback). Prints the median, p90 and max.
// usage: node tools/bench-ttff.mjs [SFU_BIN]   (default ../target/release/sfu)
import { spawn, execFileSync } from 'node:child_process';
import { chromium } from 'playwright-core';

const SFU = process.argv[2] || new URL('../../target/release/sfu', import.meta.url).pathname;
const N = Number(process.env.VIEWERS || 20);
const HTTP = '127.0.0.1:17900';
const env = { ...process.env, CLASSROOM_SECRET: 'bench-ttff-secret' };
const sfu = spawn(SFU, ['serve', '--http', HTTP, '--media-port', '17901'], { env, stdio: 'ignore' });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const token = (role, sub) => execFileSync(SFU, ['token', '--room', 'ttff', '--role', role, '--sub', sub], { env }).toString().trim();

try {
  for (let i = 0; i < 100; i++) {
    try { if ((await fetch(`http://${HTTP}/healthz`)).ok) break; } catch { /* not yet */ }
    await sleep(100);
  }
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream', '--no-sandbox',
      '--autoplay-policy=no-user-gesture-required', '--disable-background-networking', '--disable-gpu',
      '--allow-loopback-in-peer-connection', '--no-first-run', '--disable-component-update', '--disable-sync'],
  });
  const teacher = await (await browser.newContext()).newPage();
  await teacher.goto(`http://${HTTP}/teacher.html?room=ttff&token=${token('teacher', 't1')}&autostart=1`);
  await teacher.waitForFunction(() => window.lesson && window.lesson.state === 'connected', null, { timeout: 30000 });
  await sleep(8000); // let the teacher's simulcast ramp up to all layers
  const results = [];
  for (let i = 0; i < N; i++) {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    await page.addInitScript(() => {
      window.__firstFrame = new Promise((resolve) => {
        const hook = () => {
          const v = document.getElementById('teacher-video');
          if (!v) return setTimeout(hook, 5);
          v.requestVideoFrameCallback(() => resolve(performance.now()));
        };
        hook();
      });
    });
    await page.goto(`http://${HTTP}/classroom.html?room=ttff&token=${token('classroom', `c${i}`)}`);
    const ms = await page.evaluate(() => window.__firstFrame);
    results.push(ms);
    await ctx.close();
  }
  await browser.close();
  results.sort((a, b) => a - b);
  const q = (p) => results[Math.min(results.length - 1, Math.floor(results.length * p))];
  console.log(`time to first frame over ${N} Chromium WHEP viewers: median ${q(0.5).toFixed(0)} ms, p90 ${q(0.9).toFixed(0)} ms, max ${results[results.length - 1].toFixed(0)} ms (from navigation start)`);
} finally {
  sfu.kill('SIGTERM');
}
