// Synthetic participants for the demo: headless Chromium pages with fake camera and mic.
// usage: node tools/synthetic.mjs URL [URL...]   (runs until SIGTERM/SIGINT)
// A URL fragment scripts the participant: `#hand=20` raises the classroom's hand after 20 s;
// `#stage=point-1@40` has the teacher put classroom point-1 on stage after 40 s.
// `#delay=5` opens the page 5 s after the start.
// `#yield=1` closes the page once its session, after being connected, starts reconnecting (a
// synthetic teacher whose session a real teacher with the same id took over leaves the lesson).
import { chromium } from 'playwright-core';

const urls = process.argv.slice(2);
if (urls.length === 0) {
  console.error('usage: node tools/synthetic.mjs URL [URL...]');
  process.exit(2);
}
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--use-fake-device-for-media-stream',
    '--use-fake-ui-for-media-stream',
    '--autoplay-policy=no-user-gesture-required',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
    '--no-sandbox',
    '--disable-gpu',
    '--allow-loopback-in-peer-connection',
  ],
});
function script(page, url) {
  const frag = new URLSearchParams(new URL(url).hash.slice(1));
  const hand = frag.get('hand');
  if (hand) {
    setTimeout(() => page.evaluate(() => window.lesson.hand(true)).then(
      (r) => console.log(`hand raised: ${JSON.stringify(r)}`),
      (e) => console.error(`hand: ${e.message}`),
    ), Number(hand) * 1000);
  }
  const stage = frag.get('stage');
  if (stage) {
    const [sub, at] = stage.split('@');
    setTimeout(() => page.evaluate((s) => window.lesson.stage(s, true), sub).then(
      (r) => console.log(`on stage ${sub}: ${JSON.stringify(r)}`),
      (e) => console.error(`stage: ${e.message}`),
    ), Number(at || 30) * 1000);
  }
  if (frag.get('yield') === '1') {
    let connected = false;
    const timer = setInterval(async () => {
      const state = await page.evaluate(() => window.lesson && window.lesson.state).catch(() => null);
      if (state === 'connected') connected = true;
      if (connected && state === 'reconnecting') {
        clearInterval(timer);
        console.log(`[${url.split('?')[0]}] replaced by another session of the same participant: leaving`);
        await page.close().catch(() => {});
      }
    }, 1000);
  }
}

async function open(url) {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  page.on('console', (m) => { if (m.type() === 'error') console.error(`[${url.split('?')[0]}] ${m.text()}`); });
  await page.goto(url);
  script(page, url);
}

for (const url of urls) {
  const delay = Number(new URLSearchParams(new URL(url).hash.slice(1)).get('delay') || 0);
  if (delay > 0) {
    setTimeout(() => open(url).catch((e) => console.error(`[${url.split('?')[0]}] ${e.message}`)), delay * 1000);
  } else {
    await open(url);
  }
}
console.log(`synthetic participants running: ${urls.length}`);
const stop = async () => { await browser.close().catch(() => {}); process.exit(0); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
