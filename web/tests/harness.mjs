// Shared helpers of the browser tests (web/tests/*.test.mjs): free ports, the SFU process, tokens,
// headless Chromium, page watching, the pages' getStats, polling, screenshots and stats dumps.
//
// Not a test file itself (node --test runs only *.test.mjs). Each test file makes its own
// `new Harness({ name })`, so two files can run side by side, each with its own SFU, secret,
// browser and result files in web/test-results/.
//
// Env: SFU_BIN (default <repo>/target/debug/sfu), CHROMIUM_PATH (default /usr/bin/chromium),
// LINK_RELAY_BIN (default <repo>/target/debug/link-relay, built by `cargo build -p loadtest`).

import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const execFileP = promisify(execFile);

export const WEB = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const REPO = path.resolve(WEB, '..');
export const SFU_BIN = process.env.SFU_BIN || path.join(REPO, 'target', 'debug', 'sfu');
export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
export const RESULTS = path.join(WEB, 'test-results');
export const LINK_RELAY_BIN = process.env.LINK_RELAY_BIN || path.join(REPO, 'target', 'debug', 'link-relay');
export const SCHEDULER_BIN = process.env.SCHEDULER_BIN || path.join(REPO, 'target', 'debug', 'scheduler');

/**
 * Starts `scheduler serve` on a free port with a fresh SQLite file in web/test-results/;
 * resolves to { baseUrl, stop(), bin }. Its log goes to test-results/scheduler-NAME.log.
 */
export async function startScheduler(name, { secret = null, sfuUrl = 'http://127.0.0.1:7800' } = {}) {
  if (!fs.existsSync(SCHEDULER_BIN)) {
    throw new Error(`scheduler binary not found at ${SCHEDULER_BIN}: cargo build -p scheduler, or set SCHEDULER_BIN`);
  }
  const port = await freeTcpPort();
  const db = path.join(RESULTS, `scheduler-${name}.db`);
  for (const f of [db, `${db}-wal`, `${db}-shm`]) fs.rmSync(f, { force: true });
  const logPath = path.join(RESULTS, `scheduler-${name}.log`);
  const log = fs.openSync(logPath, 'w');
  const args = ['serve', '--db', `sqlite://${db}`, '--http', `127.0.0.1:${port}`, '--sfu-url', sfuUrl];
  const env = { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' };
  if (secret) env.CLASSROOM_SECRET = secret;
  else delete env.CLASSROOM_SECRET;
  const proc = spawn(SCHEDULER_BIN, args, { env, stdio: ['ignore', log, log] });
  fs.closeSync(log);
  let exited = null;
  const exit = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  exit.then((e) => {
    exited = e;
  });
  const baseUrl = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (exited) throw new Error(`scheduler exited early (${JSON.stringify(exited)}):\n${fs.readFileSync(logPath, 'utf8')}`);
    try {
      if ((await fetch(`${baseUrl}/healthz`)).status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`scheduler /healthz not 200 within 30 s:\n${fs.readFileSync(logPath, 'utf8')}`);
    await sleep(200);
  }
  return {
    baseUrl,
    bin: SCHEDULER_BIN,
    logPath,
    async stop() {
      if (exited) return exited;
      proc.kill('SIGTERM');
      return exit;
    },
  };
}

export const CHROMIUM_ARGS = [
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--disable-background-networking',
  '--no-sandbox',
  '--autoplay-policy=no-user-gesture-required',
  '--disable-gpu',
  '--no-first-run',
  '--disable-component-update',
  '--disable-sync',
  '--allow-loopback-in-peer-connection',
];

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The last `lines` lines of a log file, or '(no log)'. */
export function logTail(logPath, lines = 40) {
  try {
    return fs.readFileSync(logPath, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

// ------------------------------------------------------------------ ports

function listenTcp(port) {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(port, '127.0.0.1', () => resolve(s));
  });
}

function bindUdp(port) {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket('udp4');
    s.once('error', reject);
    s.bind(port, '127.0.0.1', () => resolve(s));
  });
}

export async function freeTcpPort() {
  const s = await listenTcp(0);
  const { port } = s.address();
  await new Promise((r) => s.close(r));
  return port;
}

/** A port number free for both UDP and TCP (the SFU's media port serves ICE over both). */
export async function freeMediaPort(avoid) {
  for (let i = 0; i < 50; i++) {
    const u = await bindUdp(0);
    const { port } = u.address();
    if (port === avoid) {
      u.close();
      continue;
    }
    try {
      const t = await listenTcp(port);
      await new Promise((r) => t.close(r));
      u.close();
      return port;
    } catch {
      u.close();
    }
  }
  throw new Error('no free UDP+TCP port found');
}

// ---------------------------------------------------------------- polling

export async function pollUntil(fn, { timeout, interval = 500 }) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) return null;
    await sleep(interval);
  }
}

// ----------------------------------------------------------- page stats

/** Receive-side stats of a classroom page, per transceiver (slot order: audio, camera, courseware). */
export function viewerStats(page) {
  return page.evaluate(async () => {
    const pc = window.lesson && window.lesson.pc;
    if (!pc) return null;
    const slots = [];
    for (const t of pc.getTransceivers()) {
      const agg = {
        mid: t.mid,
        kind: t.receiver.track.kind,
        framesDecoded: 0,
        framesReceived: 0,
        framesDropped: 0,
        keyFramesDecoded: 0,
        bytesReceived: 0,
        packetsReceived: 0,
        packetsLost: 0,
        totalSamplesReceived: 0,
        frameWidth: 0,
        frameHeight: 0,
        framesPerSecond: 0,
        pliCount: 0,
        nackCount: 0,
        ssrcs: [],
        codecs: [],
      };
      const report = await t.receiver.getStats();
      let best = -1;
      report.forEach((s) => {
        if (s.type === 'codec') agg.codecs.push(s.mimeType);
        if (s.type !== 'inbound-rtp') return;
        agg.ssrcs.push(s.ssrc);
        for (const k of ['framesDecoded', 'framesReceived', 'framesDropped', 'keyFramesDecoded', 'bytesReceived',
          'packetsReceived', 'packetsLost', 'totalSamplesReceived', 'pliCount', 'nackCount']) {
          agg[k] += s[k] || 0;
        }
        const score = (s.framesDecoded || 0) + (s.bytesReceived || 0);
        if (score > best) {
          best = score;
          agg.frameWidth = s.frameWidth || 0;
          agg.frameHeight = s.frameHeight || 0;
          agg.framesPerSecond = s.framesPerSecond || 0;
        }
      });
      slots.push(agg);
    }
    return {
      state: window.lesson.state,
      sessions: window.lesson.sessions,
      connectionState: pc.connectionState,
      slots,
    };
  });
}

/** Send-side stats of the teacher page: outbound-rtp entries keyed by kind/rid. */
export function teacherStats(page) {
  return page.evaluate(async () => {
    const pc = window.lesson && window.lesson.pc;
    if (!pc) return null;
    const out = [];
    const report = await pc.getStats();
    report.forEach((s) => {
      if (s.type !== 'outbound-rtp') return;
      out.push({
        kind: s.kind,
        mid: s.mid,
        rid: s.rid || null,
        ssrc: s.ssrc,
        active: s.active,
        bytesSent: s.bytesSent,
        packetsSent: s.packetsSent,
        framesEncoded: s.framesEncoded,
        frameWidth: s.frameWidth,
        frameHeight: s.frameHeight,
        framesPerSecond: s.framesPerSecond,
        qualityLimitationReason: s.qualityLimitationReason,
        encoderImplementation: s.encoderImplementation,
        scalabilityMode: s.scalabilityMode,
        pliCount: s.pliCount,
        firCount: s.firCount,
        nackCount: s.nackCount,
      });
    });
    const cam = window.lesson.stream?.getVideoTracks()[0]?.getSettings() || null;
    return { state: window.lesson.state, connectionState: pc.connectionState, outbound: out, camera: cam };
  });
}

// ----------------------------------------------------------------- harness

/**
 * One SFU process, one secret, one browser and one set of result files. `name` keeps result files
 * apart: the SFU log goes to `logFile` (default `sfu.log`), dumps to `statsFile` (default `stats.json`).
 */
export class Harness {
  constructor({ name = 'web-test', logFile = 'sfu.log', statsFile = 'stats.json' } = {}) {
    this.secret = `${name}-${randomBytes(12).toString('hex')}`;
    this.room = `${name}-${randomBytes(3).toString('hex')}`;
    this.logPath = path.join(RESULTS, logFile);
    this.statsPath = path.join(RESULTS, statsFile);
    this.sfuProc = null;
    this.sfuExit = null;
    this.sfuPorts = null; // { httpPort, mediaPort }
    this.baseUrl = '';
    this.browser = null;
    this.consoleErrors = [];
    this.pageErrors = [];
    this.dumps = [];
    fs.mkdirSync(RESULTS, { recursive: true });
  }

  // ------------------------------------------------------------------ SFU

  /** Starts `sfu serve` on free ports, or on `ports` (to restart it where the pages expect it). */
  async startSfu(ports = null) {
    if (!fs.existsSync(SFU_BIN)) {
      throw new Error(`SFU binary not found at ${SFU_BIN}: build it (cargo build -p sfu) or set SFU_BIN`);
    }
    const httpPort = ports ? ports.httpPort : await freeTcpPort();
    const mediaPort = ports ? ports.mediaPort : await freeMediaPort(httpPort);
    this.sfuPorts = { httpPort, mediaPort };
    this.baseUrl = `http://127.0.0.1:${httpPort}`;
    const log = fs.openSync(this.logPath, ports ? 'a' : 'w');
    const proc = spawn(
      SFU_BIN,
      ['serve', '--http', `127.0.0.1:${httpPort}`, '--media-port', String(mediaPort)],
      {
        env: { ...process.env, CLASSROOM_SECRET: this.secret, RUST_LOG: process.env.RUST_LOG || 'info' },
        stdio: ['ignore', log, log],
      },
    );
    fs.closeSync(log);
    this.sfuProc = proc;
    this.sfuExit = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
    let exited = null;
    this.sfuExit.then((e) => {
      exited = e;
    });
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (exited) throw new Error(`sfu exited early (${JSON.stringify(exited)}):\n${this.sfuLogTail()}`);
      try {
        const res = await fetch(`${this.baseUrl}/healthz`);
        if (res.status === 200) break;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`sfu /healthz not 200 within 30 s:\n${this.sfuLogTail()}`);
      await sleep(200);
    }
  }

  async stopSfu() {
    const proc = this.sfuProc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    proc.kill('SIGTERM');
    const done = await Promise.race([this.sfuExit, sleep(10_000).then(() => null)]);
    if (!done) proc.kill('SIGKILL');
  }

  sfuLogTail(lines = 40) {
    return logTail(this.logPath, lines);
  }

  /** Lines of the SFU log since byte `from` (see `sfuLogSize`). */
  sfuLogSince(from = 0) {
    try {
      const buf = fs.readFileSync(this.logPath);
      return buf.subarray(Math.min(from, buf.length)).toString('utf8').split('\n').filter(Boolean);
    } catch {
      return [];
    }
  }

  sfuLogSize() {
    try {
      return fs.statSync(this.logPath).size;
    } catch {
      return 0;
    }
  }

  async mintToken(role, sub, name, { secret = this.secret, room = this.room } = {}) {
    const { stdout } = await execFileP(
      SFU_BIN,
      ['token', '--room', room, '--role', role, '--sub', sub, '--name', name, '--ttl', '2h'],
      { env: { ...process.env, CLASSROOM_SECRET: secret } },
    );
    const token = stdout.trim();
    assert.match(token, /^[\w-]+\.[\w-]+\.[\w-]+$/, `sfu token printed no JWT: ${JSON.stringify(stdout)}`);
    return token;
  }

  /** `GET /api/rooms/{room}` as JSON, or null. */
  async roomInfo(room = this.room) {
    try {
      const res = await fetch(`${this.baseUrl}/api/rooms/${encodeURIComponent(room)}`);
      return res.ok ? await res.json() : null;
    } catch {
      return null;
    }
  }

  teacherUrl(room, token, extra = '') {
    return `${this.baseUrl}/teacher.html?room=${room}&token=${encodeURIComponent(token)}${extra}`;
  }

  /** A classroom page; it only watches (publish=0) unless `extra` says otherwise. */
  classroomUrl(room, token, extra = '') {
    const publish = extra.includes('publish=') ? '' : '&publish=0';
    return `${this.baseUrl}/classroom.html?room=${room}&token=${encodeURIComponent(token)}${publish}${extra}`;
  }

  // -------------------------------------------------------------- browser

  async launchBrowser(args = CHROMIUM_ARGS) {
    this.browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args });
    return this.browser;
  }

  async closeBrowser() {
    if (this.browser) await this.browser.close().catch(() => {});
    this.browser = null;
  }

  watchPage(page, name) {
    page.on('console', (msg) => {
      if (msg.type() !== 'error') return;
      const where = msg.location()?.url || '';
      const text = msg.text();
      if (/favicon/i.test(where) || /favicon/i.test(text)) return;
      this.consoleErrors.push(`[${name}] ${text}${where ? ` (${where})` : ''}`);
    });
    page.on('pageerror', (err) => {
      this.pageErrors.push(`[${name}] ${err.message}`);
    });
  }

  /** A new context and page at `url`; `setup(context)` runs first (e.g. to add routes). */
  async openPage(name, url, { media = false, setup = null, viewport = { width: 1366, height: 768 } } = {}) {
    const context = await this.browser.newContext({
      viewport,
      permissions: media ? ['camera', 'microphone'] : [],
    });
    if (setup) await setup(context);
    const page = await context.newPage();
    this.watchPage(page, name);
    await page.goto(url); // waits for 'load': the pages must not hold it while no media flows
    return page;
  }

  async waitState(page, name, state, timeout = 30_000) {
    try {
      await page.waitForFunction((s) => window.lesson && window.lesson.state === s, state, {
        timeout,
        polling: 100,
      });
    } catch {
      const now = await page
        .evaluate(() => window.lesson && { state: window.lesson.state, error: window.lesson.error })
        .catch((e) => `evaluate failed: ${e.message}`);
      throw new Error(`${name}: state did not become '${state}' within ${timeout} ms; now ${JSON.stringify(now)}`
        + `\n--- sfu log tail ---\n${this.sfuLogTail(20)}`);
    }
  }

  // -------------------------------------------------------------- results

  dump(label, data) {
    this.dumps.push({ label, at: new Date().toISOString(), data });
    fs.writeFileSync(this.statsPath, JSON.stringify(this.dumps, null, 2));
  }

  async screenshot(page, name) {
    await page.screenshot({ path: path.join(RESULTS, `${name}.png`) }).catch(() => {});
  }
}

// ------------------------------------------------------------ link relay

/**
 * Starts `link-relay` (the loadtest's user-space link emulator) on 127.0.0.1, relaying to
 * `target` (the SFU's media port on 127.0.0.1). Options map to its flags: downKbps, upKbps, rttMs,
 * jitterMs, lossPct, lossBurst, queueMs, schedule ("45s:down=800,70s:down=5000", offsets from the
 * relay's start, which is `startedAt`, a Date.now() value), seed. Its log goes to
 * test-results/relay-NAME.log and its final counters to relay-NAME.json (read by `stop()`).
 */
export async function startRelay(name, target, opts = {}) {
  if (!fs.existsSync(LINK_RELAY_BIN)) {
    throw new Error(`link-relay not found at ${LINK_RELAY_BIN}: build it (cargo build -p loadtest) or set LINK_RELAY_BIN`);
  }
  assert.match(target, /^127\.0\.0\.1:\d+$/, 'relays only ever target 127.0.0.1');
  const flags = {
    downKbps: '--down-kbps', upKbps: '--up-kbps', rttMs: '--rtt-ms', jitterMs: '--jitter-ms', lossPct: '--loss-pct',
    lossBurst: '--loss-burst', queueMs: '--queue-ms', schedule: '--schedule', seed: '--seed',
  };
  const logPath = path.join(RESULTS, `relay-${name}.log`);
  const reportPath = path.join(RESULTS, `relay-${name}.json`);
  fs.rmSync(reportPath, { force: true });
  const args = ['--listen', '127.0.0.1:0', '--target', target, '--report', reportPath];
  for (const [k, flag] of Object.entries(flags)) if (opts[k] !== undefined && opts[k] !== null) args.push(flag, String(opts[k]));
  const log = fs.openSync(logPath, 'w');
  const proc = spawn(LINK_RELAY_BIN, args, {
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' },
    stdio: ['ignore', 'pipe', log],
  });
  fs.closeSync(log);
  const exit = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  const addr = await new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`link-relay ${name} printed no address within 10 s`)), 10_000);
    proc.stdout.on('data', (d) => {
      buf += d.toString();
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        clearTimeout(timer);
        resolve(buf.slice(0, nl).trim());
      }
    });
    exit.then((e) => {
      clearTimeout(timer);
      reject(new Error(`link-relay ${name} exited (${JSON.stringify(e)}): ${fs.readFileSync(logPath, 'utf8')}`));
    });
  });
  const startedAt = Date.now();
  assert.match(addr, /^127\.0\.0\.1:\d+$/, `link-relay ${name} listens on ${addr}`);
  const [host, port] = [addr.split(':')[0], Number(addr.split(':')[1])];
  return {
    name,
    addr,
    host,
    port,
    startedAt,
    args,
    logPath,
    /** Stops the relay (SIGTERM) and returns its final counters (or null). */
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGTERM');
        const done = await Promise.race([exit, sleep(5000).then(() => null)]);
        if (!done) proc.kill('SIGKILL');
      }
      try {
        return JSON.parse(fs.readFileSync(reportPath, 'utf8'));
      } catch {
        return null;
      }
    },
  };
}

/**
 * Rewrites an SDP answer so that ICE can only reach the SFU through `relay`: every UDP candidate's
 * address and port become the relay's (duplicates dropped), TCP candidates are removed. Returns
 * { sdp, udp, tcp } with the numbers of candidates rewritten and removed.
 */
export function sdpThroughRelay(sdp, relay) {
  const out = [];
  let seen = new Set();
  let udp = 0;
  let tcp = 0;
  for (const line of sdp.split('\r\n')) {
    if (line.startsWith('m=')) seen = new Set();
    if (!line.startsWith('a=candidate')) {
      out.push(line);
      continue;
    }
    // a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type> ...
    const f = line.split(' ');
    if (f[2].toLowerCase() !== 'udp') {
      tcp += 1;
      continue;
    }
    f[4] = relay.host;
    f[5] = String(relay.port);
    const key = `${f[1]} ${f[4]} ${f[5]}`;
    if (seen.has(key)) continue;
    seen.add(key);
    udp += 1;
    out.push(f.join(' '));
  }
  return { sdp: out.join('\r\n'), udp, tcp };
}

/**
 * Routes the WHEP answers a browser context receives through `relay` (see `sdpThroughRelay`).
 * Returns a live record { answers, udp, tcp } of what was rewritten.
 */
export async function routeWhepThroughRelay(context, relay) {
  const seen = { answers: 0, udp: 0, tcp: 0 };
  await context.route('**/whep/**', async (route) => {
    if (route.request().method() !== 'POST') return route.continue();
    const response = await route.fetch();
    const body = await response.text();
    if (response.status() !== 201) return route.fulfill({ response, body });
    const r = sdpThroughRelay(body, relay);
    seen.answers += 1;
    seen.udp += r.udp;
    seen.tcp += r.tcp;
    return route.fulfill({ response, body: r.sdp });
  });
  return seen;
}

// ------------------------------------------------------------ test camera

/**
 * A Y4M clip for Chromium's fake camera (`--use-file-for-fake-video-capture=FILE`) that costs a
 * video encoder its full bitrate: a moving pattern under fresh noise in every frame. Chromium's
 * built-in fake camera compresses so well that a 1280x720 layer capped at 1.5 Mbit/s needs only
 * about 0.7; with this clip the teacher page's layers run at their caps (about 150k/500k/1.5M).
 * The clip loops every `frames` frames (a prime, so no reference frame ever repeats it exactly).
 * Cached in the OS temp dir (51 MB at 1280x720, 37 frames); returns its path.
 */
export function busyCameraY4m({ width = 1280, height = 720, fps = 20, frames = 37, noise = 24 } = {}) {
  const file = path.join(os.tmpdir(), `classroom-test-camera-${width}x${height}-${fps}fps-${frames}f-n${noise}.y4m`);
  const frameBytes = (width * height * 3) / 2;
  const header = `YUV4MPEG2 W${width} H${height} F${fps}:1 Ip A1:1 C420jpeg\n`;
  const size = header.length + frames * (6 + frameBytes);
  if (fs.existsSync(file) && fs.statSync(file).size === size) return file;
  const tmp = `${file}.${process.pid}.tmp`;
  const fd = fs.openSync(tmp, 'w');
  fs.writeSync(fd, header);
  const frame = Buffer.alloc(frameBytes);
  let x = 123456789; // xorshift32
  const c = width * height;
  for (let f = 0; f < frames; f++) {
    for (let y = 0; y < height; y++) {
      for (let i = 0; i < width; i++) {
        x ^= x << 13;
        x ^= x >>> 17;
        x ^= x << 5;
        const base = 128 + 60 * Math.sin((i + 8 * f) / 40) * Math.cos((y - 5 * f) / 30);
        const n = ((x >>> 0) % (2 * noise + 1)) - noise;
        frame[y * width + i] = Math.max(0, Math.min(255, base + n));
      }
    }
    for (let y = 0; y < height / 2; y++) {
      for (let i = 0; i < width / 2; i++) {
        frame[c + (y * width) / 2 + i] = 128 + 40 * Math.sin((i + f * 3) / 50);
        frame[c + c / 4 + (y * width) / 2 + i] = 128 + 40 * Math.cos((y + f * 2) / 35);
      }
    }
    fs.writeSync(fd, 'FRAME\n');
    fs.writeSync(fd, frame);
  }
  fs.closeSync(fd);
  fs.renameSync(tmp, file);
  return file;
}

// ----------------------------------------------------------------- cluster

export const REDIS_BIN = process.env.REDIS_BIN || '/usr/bin/redis-server';

/** Resolves once `url` answers 200, or throws after `timeout` ms (or when `exited()` says so). */
async function waitHealthy(url, what, { timeout = 30_000, exited = () => null, log = () => '' } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const e = exited();
    if (e) throw new Error(`${what} exited early (${JSON.stringify(e)}):\n${log()}`);
    try {
      if ((await fetch(url)).status === 200) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${what}: ${url} not 200 within ${timeout} ms:\n${log()}`);
    await sleep(200);
  }
}

/**
 * A `redis-server` of its own for a cluster test: 127.0.0.1 on a free port, a temp dir, nothing
 * saved. Resolves to { port, url, stop() }.
 */
export async function startRedis(name) {
  if (!fs.existsSync(REDIS_BIN)) throw new Error(`redis-server not found at ${REDIS_BIN} (scripts/install-deps.sh)`);
  const port = await freeTcpPort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `classroom-redis-${name}-`));
  const logPath = path.join(RESULTS, `redis-${name}.log`);
  const log = fs.openSync(logPath, 'w');
  const proc = spawn(REDIS_BIN, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
    '--dir', dir, '--daemonize', 'no'], { stdio: ['ignore', log, log] });
  fs.closeSync(log);
  const exit = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  let exited = null;
  exit.then((e) => {
    exited = e;
  });
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (exited) throw new Error(`redis-server exited early: ${fs.readFileSync(logPath, 'utf8')}`);
    const up = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => s.write('PING\r\n'));
      s.once('data', (d) => {
        s.destroy();
        resolve(d.toString().startsWith('+PONG'));
      });
      s.once('error', () => resolve(false));
    });
    if (up) break;
    if (Date.now() > deadline) throw new Error(`redis-server did not answer PING within 15 s: ${fs.readFileSync(logPath, 'utf8')}`);
    await sleep(100);
  }
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    async stop() {
      if (!exited) {
        proc.kill('SIGTERM');
        if (!(await Promise.race([exit, sleep(5000).then(() => null)]))) proc.kill('SIGKILL');
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** `sfu cluster-certs`: a CA and a certificate per node id in a fresh temp dir; returns the dir. */
export async function clusterCerts(nodes) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'classroom-certs-'));
  await execFileP(SFU_BIN, ['cluster-certs', '--out', dir, '--nodes', nodes.join(',')]);
  for (const f of ['ca.pem', `${nodes[0]}.pem`, `${nodes[0]}.key`]) {
    assert.ok(fs.existsSync(path.join(dir, f)), `sfu cluster-certs wrote no ${f}`);
  }
  return dir;
}

/**
 * One SFU node of a cluster: `sfu serve --cluster ... --node-id ID --region R` on free ports,
 * with the shared token secret (and `config`, a TOML file, if given); log in
 * test-results/sfu-NAME-ID.log. Resolves to
 * { id, region, pid, baseUrl, httpPort, mediaPort, relayPort, logPath, signal(sig), stop(), logTail() }.
 */
export async function startClusterNode({ name, id, region, secret, redis, certs, config = null }) {
  if (!fs.existsSync(SFU_BIN)) throw new Error(`SFU binary not found at ${SFU_BIN}: cargo build -p sfu`);
  const httpPort = await freeTcpPort();
  const mediaPort = await freeMediaPort(httpPort);
  let relayPort = await freeMediaPort(mediaPort);
  if (relayPort === httpPort) relayPort = await freeMediaPort(mediaPort);
  const logPath = path.join(RESULTS, `sfu-${name}-${id}.log`);
  const log = fs.openSync(logPath, 'w');
  const proc = spawn(SFU_BIN, ['serve', '--http', `127.0.0.1:${httpPort}`, '--media-port', String(mediaPort),
    '--cluster', redis.url, '--node-id', id, '--region', region, '--relay-port', String(relayPort),
    '--cluster-certs', certs, ...(config ? ['--config', config] : [])], {
    env: { ...process.env, CLASSROOM_SECRET: secret, RUST_LOG: process.env.RUST_LOG || 'info' },
    stdio: ['ignore', log, log],
  });
  fs.closeSync(log);
  const exit = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  let exited = null;
  exit.then((e) => {
    exited = e;
  });
  const nodeLogTail = (lines = 30) => logTail(logPath, lines);
  const baseUrl = `http://127.0.0.1:${httpPort}`;
  await waitHealthy(`${baseUrl}/healthz`, `sfu node ${id}`, { exited: () => exited, log: nodeLogTail });
  return {
    id,
    region,
    pid: proc.pid,
    baseUrl,
    httpPort,
    mediaPort,
    relayPort,
    logPath,
    logTail: nodeLogTail,
    get exited() {
      return exited;
    },
    signal(sig) {
      if (!exited) proc.kill(sig);
    },
    async stop() {
      if (exited) return exited;
      proc.kill('SIGCONT'); // a stopped process cannot act on SIGTERM
      proc.kill('SIGTERM');
      const done = await Promise.race([exit, sleep(10_000).then(() => null)]);
      if (!done) proc.kill('SIGKILL');
      return exit;
    },
  };
}
