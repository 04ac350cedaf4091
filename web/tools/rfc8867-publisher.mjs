// Chromium as the teacher for the RFC 8867 benchmark (classroom-agent/bench/rfc8867.sh): headless
// Chromium publishes a 1280x720 camera as 3-layer VP8 simulcast (the agent's layer sizes and its
// most per layer: 103k / 414k / 3.48M, the top layer stretched on its top step) plus the fake
// microphone over WHIP, with every UDP candidate of the
// SDP answer pointed at VIA (the measuring tap in front of link-relay), so Chrome's own
// congestion control drives it over the emulated link.
//
// usage: node tools/rfc8867-publisher.mjs --sfu URL --room R --token T --via-file FILE
//          --duration SECONDS [--stats OUT.json] [--camera y4m|fake]
// It launches the browser and opens the camera, prints "ready", waits for VIA (host:port) to
// appear in --via-file, publishes for --duration seconds, then DELETEs the session and exits.
// --camera y4m (default) uses a noisy moving clip so the encoder can reach its caps.
import fs from 'node:fs';
import { chromium } from 'playwright-core';
import { busyCameraY4m, sdpThroughRelay } from '../tests/harness.mjs';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
for (const k of ['sfu', 'room', 'token', 'via-file', 'duration']) {
  if (!args[k]) {
    console.error(`missing --${k}\nusage: node tools/rfc8867-publisher.mjs --sfu URL --room R --token T --via-file FILE --duration S [--stats OUT.json] [--camera y4m|fake]`);
    process.exit(2);
  }
}
const sfu = args.sfu.replace(/\/+$/, '');
const camera = args.camera || 'y4m';
const launchArgs = [
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--disable-background-networking',
  '--disable-component-update',
  '--no-first-run',
  '--no-sandbox',
  '--disable-gpu',
  '--allow-loopback-in-peer-connection',
];
if (camera === 'y4m') launchArgs.push(`--use-file-for-fake-video-capture=${busyCameraY4m({ fps: 30 })}`);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: launchArgs,
});
const page = await browser.newPage();
page.on('console', (m) => { if (m.type() === 'error') console.error(`[page] ${m.text()}`); });
// Any page of the SFU's origin: 127.0.0.1 is a secure context, so getUserMedia works.
await page.goto(`${sfu}/healthz`);
const offer = await page.evaluate(async () => {
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: true,
    video: { width: 1280, height: 720, frameRate: 30 },
  });
  const pc = new RTCPeerConnection();
  window.pc = pc;
  pc.addTransceiver(stream.getAudioTracks()[0], { direction: 'sendonly' });
  const video = pc.addTransceiver(stream.getVideoTracks()[0], {
    direction: 'sendonly',
    sendEncodings: [
      { rid: 'l', scaleResolutionDownBy: 4, maxBitrate: 103_000 },
      { rid: 'm', scaleResolutionDownBy: 2, maxBitrate: 414_000 },
      { rid: 'h', maxBitrate: 3_483_000 },
    ],
  });
  const vp8 = RTCRtpSender.getCapabilities('video').codecs.filter((c) => /vp8|rtx/i.test(c.mimeType));
  video.setCodecPreferences(vp8);
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') return resolve();
    pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && resolve());
    setTimeout(resolve, 3000);
  });
  return pc.localDescription.sdp;
});
console.log('ready');

// The measuring tap's entry address, written by the bench script once the link is up.
let via = '';
for (let i = 0; i < 600 && !via; i++) {
  if (fs.existsSync(args['via-file'])) via = fs.readFileSync(args['via-file'], 'utf8').trim();
  if (!via) await new Promise((r) => setTimeout(r, 100));
}
if (!via) throw new Error(`no address in ${args['via-file']}`);
const [host, port] = via.split(':');

const res = await fetch(`${sfu}/whip/${encodeURIComponent(args.room)}`, {
  method: 'POST',
  headers: { 'Content-Type': 'application/sdp', Authorization: `Bearer ${args.token}` },
  body: offer,
});
if (res.status !== 201) throw new Error(`WHIP POST: ${res.status} ${await res.text()}`);
const location = new URL(res.headers.get('Location'), `${sfu}/whip/`).href;
const answer = sdpThroughRelay(await res.text(), { host, port: Number(port) });
await page.evaluate((sdp) => window.pc.setRemoteDescription({ type: 'answer', sdp }), answer.sdp);
console.log(`publishing through ${via} (${answer.udp} candidates rewritten)`);

// Once a second: what Chrome sends per layer, why it limits quality, and its estimate.
const samples = [];
const t0 = Date.now();
const timer = setInterval(async () => {
  const s = await page.evaluate(async () => {
    const out = { layers: {}, estimate: null };
    (await window.pc.getStats()).forEach((r) => {
      if (r.type === 'outbound-rtp' && r.kind === 'video') {
        out.layers[r.rid || '-'] = { bytes: r.bytesSent, height: r.frameHeight || 0, fps: r.framesPerSecond || 0, limit: r.qualityLimitationReason };
      }
      if (r.type === 'candidate-pair' && r.nominated && r.availableOutgoingBitrate) out.estimate = r.availableOutgoingBitrate;
    });
    return out;
  }).catch(() => null);
  if (s) samples.push({ at_s: (Date.now() - t0) / 1000, ...s });
}, 1000);

await new Promise((r) => setTimeout(r, Number(args.duration) * 1000));
clearInterval(timer);
if (args.stats) fs.writeFileSync(args.stats, JSON.stringify(samples, null, 1));
const limits = {};
for (const s of samples) for (const l of Object.values(s.layers)) limits[l.limit] = (limits[l.limit] || 0) + 1;
console.log(`quality limitation (layer-seconds): ${JSON.stringify(limits)}`);
await fetch(location, { method: 'DELETE', headers: { Authorization: `Bearer ${args.token}` } }).catch(() => {});
await browser.close();
