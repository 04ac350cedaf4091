// Synthetic participants for the demo: headless Chromium pages with fake camera and mic.
// usage: node tools/synthetic.mjs URL [URL...]   (runs until SIGTERM/SIGINT)
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
for (const url of urls) {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  page.on('console', (m) => { if (m.type() === 'error') console.error(`[${url.split('?')[0]}] ${m.text()}`); });
  await page.goto(url);
}
console.log(`synthetic participants running: ${urls.length}`);
const stop = async () => { await browser.close().catch(() => {}); process.exit(0); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
