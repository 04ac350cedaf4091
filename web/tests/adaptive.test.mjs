// Acceptance tests of issue 3 in headless Chromium: every classroom gets what its own link can
// carry. Links are emulated by the loadtest's `link-relay` (rate, queue, delay, loss, scheduled
// steps) between a classroom page and the SFU's media port; the classroom is pointed at its relay
// by rewriting the WHEP answer it receives (UDP candidates -> the relay, TCP candidates removed).
//
// Run:  part of `make test`; alone: make test-adaptive
// Env:  SFU_BIN, LINK_RELAY_BIN, CHROMIUM_PATH (see harness.mjs).
// Output: web/test-results/adaptive-stats.json (settings, measured figures, per-second timelines of
// every classroom's getStats and of its /api/rooms subscriber entry, 100 ms detail around the
// capacity steps), sfu-adaptive.log, relay-*.log and relay-*.json, screenshots.
//
// The teacher's camera is a generated clip (harness.mjs busyCameraY4m: a moving pattern under fresh
// noise, 960x540, 20 fps) so that its layers run at their caps; Chromium's built-in fake camera
// compresses so well that its top layer needs only about 0.7 Mbit/s, which would fit the links below.
//
// 1. A teacher page publishes 3-layer simulcast (about 150k/500k/1.5M). Classroom A behind
//    1 Mbit/s down, 100 ms RTT, 2 % loss; classroom B behind 5 Mbit/s, 100 ms RTT, no loss (both
//    1 Mbit/s up). After 15 s of settling (and B on the top layer), over a 30 s window: A plays a
//    layer below the top one, frozen < 1 % of the time (over 30 s: one short freeze at most),
//    with continuous audio (no concealment run over 200 ms, concealed share < 5 %, playout never
//    stalls); B plays the top layer, decodes at
//    least 95 % of its frames and is frozen < 1 % of the time. For A and B alike, the time frozen
//    from upstream does not count (see 2. on D: a freeze while the teacher's layer the classroom
//    plays itself stalls). Chromium 156
//    has no audio interruptionCount, so gap lengths are bracketed from concealedSamples and
//    concealmentEvents sampled every 100 ms in the page (see audioGaps).
// 2. Classroom C's link drops from 5 to 0.8 Mbit/s and comes back (a schedule on its relay):
//    within 2 s of the drop the SFU forwards C a layer that fits (allocated <= 800 kbit/s) and
//    C's picture is smaller within 2 s plus the time the link's queue takes to drain at the new
//    rate (250 ms at 5 Mbit/s = 1.6 s at 0.8); C's audio has no gap over 200 ms; C does not go back to the
//    top layer while the link is low; classroom D on a clean link stays on the top layer, decodes
//    at least 95 % of the frames that layer sent, and is frozen < 1 % of the time (the bar of
//    test 1), not counting freezes from upstream (a freeze while
//    the teacher's top layer itself stalls is upstream: Chromium's VP8 encoder answers a keyframe
//    request with keyframes on all layers and then drops top-layer frames to pay for them, which
//    every viewer of that layer sees); within 8 s of the link's return C plays the top layer
//    again, and stays there.
//
// Measured times (switch down and up, frozen share, audio gaps) are printed and saved in the JSON.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  Harness, RESULTS, SFU_BIN, LINK_RELAY_BIN, CHROMIUM_ARGS, sleep, pollUntil, viewerStats, teacherStats,
  startRelay, routeWhepThroughRelay, busyCameraY4m,
} from './harness.mjs';

const h = new Harness({ name: 'adaptive', logFile: 'sfu-adaptive.log', statsFile: 'adaptive-dumps.json' });
const EVIDENCE = path.join(RESULTS, 'adaptive-stats.json');

const START_TIMEOUT_MS = 45_000;
// Small pages: every frame of every video is scaled and composited in software (no GPU), and at
// full-screen size that took a core's third on its own; the encoder and decoders measured here
// need the CPU more.
const VIEWPORT = { width: 480, height: 300 };
const SAMPLE_MS = 100; // in-page getStats sampling (audio gaps, switch times)
// Audio playout pulls 10 ms at a time: this long without a sample played is a stall.
const MIN_STALL_MS = 75;

// Test 1
const SETTLE_MS = 15_000;
const TOP_GRACE_MS = 30_000; // after settling, B may take this much longer to reach the top layer
// Chromium counts a freeze from about 200 ms at 20 fps: over 20 s a single short freeze was 1 %.
const WINDOW_MS = 30_000;
const MAX_FROZEN_SHARE = 0.01;
const MAX_AUDIO_GAP_MS = 200;
const MAX_CONCEALED_SHARE = 0.05; // 2 % packet loss without FEC/RED conceals about 2 %
const MIN_AUDIO_RATE = 0.95; // samples played per second of wall clock, vs the decoder's rate

// Test 2 (offsets from the relay's start)
const DROP_AT_S = 45;
const RETURN_AT_S = 75;
const AFTER_RETURN_MS = 15_000;
const LOW_KBPS = 800;
const HIGH_KBPS = 5000;
const MAX_DOWN_MS = 2000; // SFU forwards a layer that fits
const MAX_UP_MS = 8000; // the classroom plays the top layer again
const MIN_DECODED_SHARE = 0.95; // of the frames the teacher's top layer sent, decoded by D
const RELAY_QUEUE_MS = 250; // link-relay default: router buffer at the starting rate
// The classroom sees the smaller picture once the bytes queued in the link before the switch have
// drained at the new rate: 250 ms at 5 Mbit/s take 1.56 s at 0.8 Mbit/s.
const MAX_DOWN_VIEWER_MS = MAX_DOWN_MS + Math.ceil((RELAY_QUEUE_MS * HIGH_KBPS) / LOW_KBPS);

const evidence = {
  about: 'issue 3 acceptance (web/tests/adaptive.test.mjs); times in ms; t in timelines = ms since the test\'s t0',
  sfu_bin: SFU_BIN,
  link_relay_bin: LINK_RELAY_BIN,
  started: new Date().toISOString(),
  tests: {},
};
function saveEvidence() {
  fs.writeFileSync(EVIDENCE, JSON.stringify(evidence, null, 1));
}

// ------------------------------------------------------- in-page sampler

/** Installs a 100 ms getStats sampler in a classroom page (audio slot 0, camera slot 1). */
async function installSampler(page, intervalMs = SAMPLE_MS) {
  await page.evaluate((ms) => {
    if (window.__adaptive) return;
    const VK = ['ssrc', 'frameWidth', 'frameHeight', 'framesPerSecond', 'framesDecoded', 'framesReceived',
      'framesDropped', 'keyFramesDecoded', 'freezeCount', 'totalFreezesDuration', 'pauseCount',
      'totalPausesDuration', 'bytesReceived', 'packetsReceived', 'packetsLost', 'nackCount', 'pliCount', 'firCount',
      'jitterBufferDelay', 'jitterBufferEmittedCount'];
    const AK = ['ssrc', 'timestamp', 'totalSamplesReceived', 'concealedSamples', 'silentConcealedSamples', 'concealmentEvents',
      'insertedSamplesForDeceleration', 'removedSamplesForAcceleration', 'totalInterruptionDuration',
      'interruptionCount', 'totalSamplesDuration', 'bytesReceived', 'packetsReceived', 'packetsLost',
      'packetsDiscarded', 'fecPacketsReceived', 'fecPacketsDiscarded', 'jitterBufferDelay',
      'jitterBufferEmittedCount', 'jitterBufferTargetDelay', 'nackCount'];
    const A = { samples: [], errors: 0, pair: null, audioKeys: null, videoKeys: null, codecs: {} };
    window.__adaptive = A;
    const pick = (s, keys) => {
      const o = {};
      for (const k of keys) if (s[k] !== undefined) o[k] = s[k];
      return o;
    };
    const inbound = (report, keys, which) => {
      let best = null;
      report.forEach((s) => {
        if (s.type === 'codec') A.codecs[which] = `${s.mimeType} ${s.sdpFmtpLine || ''}`.trim();
        if (s.type === 'inbound-rtp' && (!best || (s.bytesReceived || 0) > (best.bytesReceived || 0))) best = s;
      });
      if (best && !A[`${which}Keys`]) A[`${which}Keys`] = Object.keys(best).sort();
      return best ? pick(best, keys) : null;
    };
    let busy = false;
    let n = 0;
    A.timer = setInterval(async () => {
      if (busy) return;
      busy = true;
      try {
        const pc = window.lesson && window.lesson.pc;
        const tr = pc ? pc.getTransceivers() : [];
        if (tr.length < 2) return;
        const t = performance.timeOrigin + performance.now();
        const [ra, rv] = await Promise.all([tr[0].receiver.getStats(), tr[1].receiver.getStats()]);
        A.samples.push({ t, sessions: window.lesson.sessions, playout_ms: window.lesson.media.playoutTargetMs, a: inbound(ra, AK, 'audio'), v: inbound(rv, VK, 'video') });
        if (n++ % 10 === 0) {
          const all = await pc.getStats();
          let id = null;
          all.forEach((s) => { if (s.type === 'transport' && s.selectedCandidatePairId) id = s.selectedCandidatePairId; });
          const p = id && all.get(id);
          if (p) {
            const l = all.get(p.localCandidateId);
            const r = all.get(p.remoteCandidateId);
            A.pair = {
              local: l && `${l.protocol} ${l.address}:${l.port} ${l.candidateType}`,
              remote: r && `${r.protocol} ${r.address}:${r.port} ${r.candidateType}`,
              rtt_ms: p.currentRoundTripTime !== undefined ? Math.round(p.currentRoundTripTime * 1000) : null,
            };
          }
        }
      } catch {
        A.errors += 1;
      } finally {
        busy = false;
      }
    }, ms);
  }, intervalMs);
}

function drainSamples(page) {
  return page.evaluate(() => {
    const A = window.__adaptive;
    if (!A) return null;
    return { samples: A.samples.splice(0), pair: A.pair, errors: A.errors, audioKeys: A.audioKeys,
      videoKeys: A.videoKeys, codecs: A.codecs };
  });
}

// --------------------------------------------------------------- recorder

/**
 * Records, while running: each classroom's in-page samples (100 ms), the SFU's subscriber entries
 * (every `apiMs`) and the teacher's layers (every second).
 */
class Recorder {
  constructor({ room, teacher, viewers, apiMs = 200 }) {
    this.room = room;
    this.teacher = teacher;
    this.viewers = viewers; // { name: { page, sub } }
    this.apiMs = apiMs;
    this.samples = Object.fromEntries(Object.keys(viewers).map((n) => [n, []]));
    this.meta = {};
    this.api = []; // { t, subs: { name: entry }, publisher }
    this.teacherLayers = []; // { t, layers: { rid: { w, fps, kbps, limit } } }
    this.running = false;
  }

  async start() {
    for (const { page } of Object.values(this.viewers)) await installSampler(page);
    this.running = true;
    this.loops = [this.apiLoop(), this.slowLoop()];
  }

  async stop() {
    this.running = false;
    await Promise.all(this.loops);
    await this.drain();
  }

  async drain() {
    for (const [name, { page }] of Object.entries(this.viewers)) {
      const d = await drainSamples(page).catch(() => null);
      if (!d) continue;
      this.samples[name].push(...d.samples);
      this.meta[name] = { pair: d.pair, sampler_errors: d.errors, audio_stat_keys: d.audioKeys,
        video_stat_keys: d.videoKeys, codecs: d.codecs };
    }
  }

  async apiLoop() {
    while (this.running) {
      const next = Date.now() + this.apiMs;
      const info = await h.roomInfo(this.room);
      const t = Date.now();
      if (info) {
        const subs = {};
        for (const [name, { sub }] of Object.entries(this.viewers)) {
          const all = (info.subscribers || []).filter((s) => s.sub === sub);
          subs[name] = all.find((s) => s.connected) || all[all.length - 1] || null;
        }
        this.api.push({ t, subs, publisher: info.publishers?.[0] || null });
      }
      await sleep(Math.max(0, next - Date.now()));
    }
  }

  async slowLoop() {
    let last = null;
    while (this.running) {
      const next = Date.now() + 1000;
      await this.drain();
      const ts = await teacherStats(this.teacher).catch(() => null);
      const t = Date.now();
      if (ts) {
        const layers = {};
        for (const o of ts.outbound.filter((x) => x.kind === 'video' && x.rid)) {
          const prev = last && last.stats.outbound.find((x) => x.rid === o.rid && x.kind === 'video');
          const kbps = prev ? Math.round(((o.bytesSent - prev.bytesSent) * 8) / (t - last.t)) : null;
          layers[o.rid] = { w: o.frameWidth || 0, h: o.frameHeight || 0, fps: o.framesPerSecond || 0, kbps,
            frames: o.framesEncoded ?? null,
            limit: o.qualityLimitationReason };
        }
        this.teacherLayers.push({ t, layers });
        last = { t, stats: ts };
      }
      await sleep(Math.max(0, next - Date.now()));
    }
  }

  /** The teacher's layer widths at time t (the last sample at or before t, else the first). */
  widthsAt(t) {
    let best = this.teacherLayers[0];
    for (const x of this.teacherLayers) if (x.t <= t) best = x;
    return best ? Object.fromEntries(Object.entries(best.layers).map(([rid, l]) => [rid, l.w])) : {};
  }

  /** Which teacher layer a classroom frame width is (nearest width among the teacher's layers). */
  layerOfWidth(width, t) {
    if (!width) return null;
    const w = this.widthsAt(t);
    let best = null;
    for (const [rid, lw] of Object.entries(w)) {
      if (!lw) continue;
      if (!best || Math.abs(lw - width) < Math.abs(w[best] - width)) best = rid;
    }
    return best;
  }

  samplesBetween(name, from, to) {
    return this.samples[name].filter((s) => s.t >= from && s.t <= to);
  }

  apiBetween(from, to) {
    return this.api.filter((x) => x.t >= from && x.t <= to);
  }

  /** Per-second timeline (relative to t0) of every classroom's stats and SFU entry. */
  timeline(t0) {
    const end = Math.max(...Object.values(this.samples).map((s) => (s.length ? s[s.length - 1].t : 0)), 0);
    const out = [];
    for (let t = t0; t <= end; t += 1000) {
      const row = { t: t - t0, teacher: (this.teacherLayers.find((x) => x.t >= t) || {}).layers || null, viewers: {} };
      const api = this.api.find((x) => x.t >= t);
      for (const name of Object.keys(this.viewers)) {
        const s = this.samples[name].find((x) => x.t >= t);
        const prev = this.samples[name].filter((x) => x.t <= t - 1000).pop();
        row.viewers[name] = s && {
          frameWidth: s.v?.frameWidth ?? 0,
          frameHeight: s.v?.frameHeight ?? 0,
          fps: s.v?.framesPerSecond ?? 0,
          layer: this.layerOfWidth(s.v?.frameWidth, s.t),
          video_kbps: prev && s.v && prev.v ? Math.round(((s.v.bytesReceived - prev.v.bytesReceived) * 8) / (s.t - prev.t)) : null,
          freezeCount: s.v?.freezeCount ?? null,
          totalFreezesDuration: s.v?.totalFreezesDuration ?? null,
          framesDecoded: s.v?.framesDecoded ?? 0,
          keyFramesDecoded: s.v?.keyFramesDecoded ?? 0,
          packetsLost: s.v?.packetsLost ?? 0,
          nackCount: s.v?.nackCount ?? 0,
          pliCount: s.v?.pliCount ?? 0,
          audio: s.a && {
            totalSamplesReceived: s.a.totalSamplesReceived,
            concealedSamples: s.a.concealedSamples,
            silentConcealedSamples: s.a.silentConcealedSamples,
            concealmentEvents: s.a.concealmentEvents,
            interruptionCount: s.a.interruptionCount,
            totalInterruptionDuration: s.a.totalInterruptionDuration,
            jitterBufferDelay_ms: s.a.jitterBufferEmittedCount
              ? Math.round((s.a.jitterBufferDelay / s.a.jitterBufferEmittedCount) * 1000) : null,
            packetsLost: s.a.packetsLost,
          },
          sessions: s.sessions,
        };
        row.viewers[name] = { ...row.viewers[name], sfu: api ? api.subs[name] : null };
      }
      out.push(row);
    }
    return out;
  }

  /** 100 ms detail of one classroom between from and to (for the JSON around a capacity step). */
  detail(name, from, to, t0) {
    const rows = this.samplesBetween(name, from, to).map((s) => ({
      t: Math.round(s.t - t0),
      w: s.v?.frameWidth ?? 0,
      fps: s.v?.framesPerSecond ?? 0,
      frames: s.v?.framesDecoded ?? 0,
      received: s.v?.framesReceived ?? null,
      dropped: s.v?.framesDropped ?? null,
      freezes: s.v?.freezeCount ?? null,
      frozen_s: s.v?.totalFreezesDuration ?? null,
      v_bytes: s.v?.bytesReceived ?? 0,
      v_packets: s.v?.packetsReceived ?? null,
      keyframes: s.v?.keyFramesDecoded ?? null,
      v_lost: s.v?.packetsLost ?? null,
      nacks: s.v?.nackCount ?? null,
      plis: s.v?.pliCount ?? null,
      v_jb_ms: s.v?.jitterBufferEmittedCount
        ? Math.round((s.v.jitterBufferDelay / s.v.jitterBufferEmittedCount) * 1000) : null,
      a_samples: s.a?.totalSamplesReceived ?? 0,
      a_concealed: s.a?.concealedSamples ?? 0,
      a_events: s.a?.concealmentEvents ?? null,
      a_jb_ms: s.a?.jitterBufferEmittedCount
        ? Math.round((s.a.jitterBufferDelay / s.a.jitterBufferEmittedCount) * 1000) : null,
    }));
    const api = this.apiBetween(from, to).map((x) => {
      const e = x.subs[name];
      const cam = e?.slots?.find((s) => s.slot === 'teacher_camera');
      return { t: x.t - t0, estimate_bps: e?.estimate_bps ?? null, allocated_bps: e?.allocated_bps ?? null,
        probe_bps: e?.probe_bps ?? null, bitrate_bps: e?.bitrate_bps ?? null, loss: e?.loss ?? null,
        rtt_ms: e?.rtt_ms ?? null, layer: cam?.layer ?? null, target_layer: cam?.target_layer ?? null,
        temporal: cam?.temporal ?? null, target_temporal: cam?.target_temporal ?? null,
        paused: cam?.paused ?? null, switches: cam?.switches ?? null, pauses: e?.pauses ?? null,
        dips: e ? [e.dips_refuted, e.dips_confirmed] : null };
    });
    return { getstats: rows, sfu: api };
  }
}

// --------------------------------------------------------------- measures

/** Deltas of video freezes and audio continuity over [from, to] from the 100 ms samples. */
function measure(samples, from, to) {
  const s = samples.filter((x) => x.t >= from && x.t <= to && x.v && x.a);
  if (s.length < 2) return null;
  const a = s[0];
  const b = s[s.length - 1];
  const secs = (b.t - a.t) / 1000;
  const dv = (k) => (b.v[k] ?? 0) - (a.v[k] ?? 0);
  const da = (k) => (b.a[k] ?? 0) - (a.a[k] ?? 0);
  // Audio: the decoder's output rate, from the whole record of this stream.
  const rate = da('totalSamplesReceived') / secs;
  const gaps = audioGaps(s);
  const widths = [...new Set(s.map((x) => x.v.frameWidth || 0))];
  return {
    from: a.t,
    to: b.t,
    seconds: Math.round(secs * 100) / 100,
    frames_decoded: dv('framesDecoded'),
    fps: Math.round((dv('framesDecoded') / secs) * 10) / 10,
    freezes: dv('freezeCount'),
    frozen_s: Math.round(dv('totalFreezesDuration') * 1000) / 1000,
    frozen_share: dv('totalFreezesDuration') / secs,
    pauses: dv('pauseCount'),
    widths,
    video_kbps: Math.round((dv('bytesReceived') * 8) / secs / 1000),
    video_packets_lost: dv('packetsLost'),
    key_frames: dv('keyFramesDecoded'),
    plis: dv('pliCount'),
    nacks: dv('nackCount'),
    audio_samples_per_s: Math.round(rate),
    audio_concealed_share: da('totalSamplesReceived') ? da('concealedSamples') / da('totalSamplesReceived') : null,
    audio_concealment_events: da('concealmentEvents'),
    audio_interruptions: b.a.interruptionCount === undefined ? null : da('interruptionCount'),
    audio_interruption_s: b.a.totalInterruptionDuration === undefined ? null
      : Math.round(da('totalInterruptionDuration') * 1000) / 1000,
    audio_packets_lost: da('packetsLost'),
    audio_fec_packets: b.a.fecPacketsReceived === undefined ? null : da('fecPacketsReceived'),
    audio_gap_certain_ms: gaps.certain_ms,
    audio_gap_certain_at: gaps.certain_at,
    audio_gap_upper_ms: gaps.upper_ms,
    audio_gap_upper_at: gaps.upper_at,
    audio_choppy_ms: gaps.choppy_ms,
    audio_stalls: gaps.stalls,
    audio_stalls_at: gaps.stalls_at,
  };
}

/**
 * Audio gaps (runs of concealed samples) from 100 ms samples of concealedSamples and
 * concealmentEvents (one event per run: a concealed sample after a played one). Chromium 156 has
 * no interruptionCount/totalInterruptionDuration, so:
 * - `certain_ms`: a lower bound of the longest run. Over any span of intervals, the runs touching
 *   it are the events that began in it, plus one carried in if the interval before concealed
 *   anything; so the longest run is at least concealed time / that count.
 * - `upper_ms`: an upper bound. A run that begins in interval i may go on into the next interval,
 *   and past that one only if it is (almost) wholly concealed and began no run; the bound adds up
 *   the concealed time such a run may cover.
 * - `choppy_ms`: time in intervals more than half concealed; `stalls`: intervals of at least
 *   `MIN_STALL_MS` with no sample played at all (the playout itself stopped).
 * Intervals are timed by the stats' own collection times: the page reads its clock before
 * getStats, which may resolve much later on a loaded machine, and Chromium answers calls within
 * 50 ms of each other with one cached report (the same timestamp), which adds nothing and is
 * skipped. Timed by the page's clock, such a pair looked like 29-93 ms without a sample played.
 */
function audioGaps(all) {
  const at = (x) => x.a.timestamp ?? x.t;
  const s = all.filter((x, i) => i === 0 || at(x) > at(all[i - 1]));
  const iv = [];
  for (let i = 1; i < s.length; i++) {
    iv.push({
      t: s[i].t,
      d: at(s[i]) - at(s[i - 1]),
      played: s[i].a.totalSamplesReceived - s[i - 1].a.totalSamplesReceived,
      concealed: s[i].a.concealedSamples - s[i - 1].a.concealedSamples,
      events: (s[i].a.concealmentEvents ?? 0) - (s[i - 1].a.concealmentEvents ?? 0),
    });
  }
  const total = iv.reduce((x, y) => x + y.played, 0);
  const totalMs = iv.reduce((x, y) => x + y.d, 0);
  const perMs = total / totalMs || 48; // samples per ms
  const cms = iv.map((x) => x.concealed / perMs);
  // Upper bound.
  let upper = 0;
  let upperAt = null;
  for (let i = 0; i < iv.length; i++) {
    let u = cms[i];
    for (let j = i + 1; j < iv.length; j++) {
      u += cms[j];
      if (iv[j].events > 0 || cms[j] < 0.9 * iv[j].d) break;
    }
    if (u > upper) { upper = u; upperAt = iv[i].t; }
  }
  // Lower bound.
  let certain = 0;
  let certainAt = null;
  for (let i = 0; i < iv.length; i++) {
    let c = 0;
    let e = i > 0 && cms[i - 1] > 0 ? 1 : 0;
    for (let j = i; j < iv.length && j < i + 50; j++) {
      c += cms[j];
      e += iv[j].events;
      if (c > 0 && c / Math.max(1, e) > certain) { certain = c / Math.max(1, e); certainAt = iv[j].t; }
    }
  }
  const choppy = iv.filter((x, i) => cms[i] > 0.5 * x.d).reduce((x, y) => x + y.d, 0);
  const stalled = iv.filter((x) => x.played === 0 && x.d >= MIN_STALL_MS);
  return { certain_ms: Math.round(certain), certain_at: certainAt, upper_ms: Math.round(upper),
    upper_at: upperAt, choppy_ms: Math.round(choppy), stalls: stalled.length,
    stalls_at: stalled.map((x) => ({ t: Math.round(x.t), d: Math.round(x.d) })) };
}

// ------------------------------------------------------------------- setup

async function openTeacher(room, sub, name) {
  const token = await h.mintToken('teacher', sub, name, { room });
  const page = await h.openPage(`teacher-${room}`, h.teacherUrl(room, token, '&autostart=1'), { media: true, viewport: VIEWPORT });
  await h.waitState(page, 'teacher', 'connected', START_TIMEOUT_MS);
  return page;
}

/** A classroom page; behind `relay` unless relay is null (then straight to the SFU). */
async function openClassroom(room, sub, label, relay) {
  const token = await h.mintToken('classroom', sub, label, { room });
  let routed = null;
  const page = await h.openPage(sub, h.classroomUrl(room, token), {
    viewport: VIEWPORT,
    setup: relay ? async (ctx) => { routed = await routeWhepThroughRelay(ctx, relay); } : null,
  });
  await h.waitState(page, sub, 'connected', START_TIMEOUT_MS);
  if (relay) {
    assert.ok(routed.answers >= 1 && routed.udp >= 1, `${sub}: WHEP answer not rewritten: ${JSON.stringify(routed)}`);
  }
  return { page, routed };
}

/** The teacher's top ('h') layer once it is being sent at a real size. */
async function teacherTop(teacher) {
  const t = await pollUntil(async () => {
    const s = await teacherStats(teacher);
    const hl = s && s.outbound.find((o) => o.kind === 'video' && o.rid === 'h');
    const ml = s && s.outbound.find((o) => o.kind === 'video' && o.rid === 'm');
    return hl && hl.frameWidth && ml && ml.frameWidth && hl.frameWidth > ml.frameWidth ? s : null;
  }, { timeout: START_TIMEOUT_MS });
  assert.ok(t, 'the teacher never sent its top layer');
  return t;
}

/** When a classroom first decoded the top layer, in ms since t0 (from the 100 ms samples). */
function firstOnTop(rec, name, t0) {
  const s = rec.samples[name].find((x) => x.v && rec.layerOfWidth(x.v.frameWidth, x.t) === 'h');
  return s ? Math.round(s.t - t0) : null;
}

/** Median send rate (kbit/s) and frame rate of each teacher layer between from and to. */
function teacherSummary(rec, from, to) {
  const med = (a) => { const b = a.filter((x) => x !== null && x !== undefined).sort((x, y) => x - y); return b.length ? b[b.length >> 1] : null; };
  const rows = rec.teacherLayers.filter((x) => x.t >= from && x.t <= to);
  const out = {};
  for (const rid of ['l', 'm', 'h']) {
    out[rid] = { kbps: med(rows.map((r) => r.layers[rid]?.kbps)), fps: med(rows.map((r) => r.layers[rid]?.fps)),
      min_fps: Math.min(...rows.map((r) => r.layers[rid]?.fps ?? 0)), w: med(rows.map((r) => r.layers[rid]?.w)) };
  }
  return out;
}

/**
 * A viewer's freezes that the SFU did not cause: those within 1.5 s of the teacher's layer that
 * the viewer was playing itself running below 75 % of its usual frame rate (Chromium's VP8
 * encoder answers a keyframe request with keyframes on every layer, and then drops frames to pay
 * for them; a loaded machine stalls it too; every viewer of that layer sees it). Also the share
 * of the frames the top layer sent in [from, to] that the viewer decoded: what the SFU forwards
 * it loses nothing of.
 */
function upstreamFreezes(rec, name, from, to) {
  const rowsOf = {};
  const stallsOf = {};
  const usualOf = {};
  for (const rid of ['l', 'm', 'h']) {
    rowsOf[rid] = rec.teacherLayers.filter((x) => x.layers[rid]);
    const fps = rowsOf[rid].map((x) => x.layers[rid].fps).sort((a, b) => a - b);
    usualOf[rid] = fps.length ? fps[fps.length >> 1] : 0;
    stallsOf[rid] = rowsOf[rid].filter((x) => x.layers[rid].fps < 0.75 * usualOf[rid]);
  }
  const rows = rowsOf.h;
  const usual = usualOf.h;
  const s = rec.samplesBetween(name, from, to).filter((x) => x.v);
  let upstream = 0;
  let upstream_s = 0;
  const at = [];
  for (let i = 1; i < s.length; i++) {
    if ((s[i].v.freezeCount ?? 0) > (s[i - 1].v.freezeCount ?? 0)) {
      // The layer shown before the freeze is the one that stopped.
      const rid = rec.layerOfWidth(s[i - 1].v.frameWidth, s[i - 1].t) ?? 'h';
      const near = stallsOf[rid].filter((x) => Math.abs(x.t - s[i].t) <= 1500);
      if (near.length) {
        upstream += 1;
        // Chromium adds a freeze's length when it ends, with the count.
        upstream_s += (s[i].v.totalFreezesDuration ?? 0) - (s[i - 1].v.totalFreezesDuration ?? 0);
        at.push({ layer: rid, fps: Math.min(...near.map((x) => x.layers[rid].fps)), usual: usualOf[rid] });
      }
    }
  }
  // Frames: the teacher's counter between two of its samples; the viewer's over the same span.
  const ts = rows.filter((x) => x.t >= from && x.t <= to && Number.isFinite(x.layers.h.frames));
  let decoded_share = null;
  if (ts.length >= 2 && s.length >= 2) {
    const a = ts[0];
    const b = ts[ts.length - 1];
    const nearest = (t) => s.reduce((best, x) => (Math.abs(x.t - t) < Math.abs(best.t - t) ? x : best), s[0]);
    const sent = b.layers.h.frames - a.layers.h.frames;
    const got = (nearest(b.t).v.framesDecoded ?? 0) - (nearest(a.t).v.framesDecoded ?? 0);
    decoded_share = sent > 0 ? got / sent : null;
  }
  return { upstream, upstream_s, teacher_fps_at: at, usual_fps: usual, decoded_share };
}

/** Share of [from, to] a viewer was frozen, not counting freezes from upstream (see upstreamFreezes). */
function ownFrozenShare(x, up) {
  return Math.max(0, x.frozen_s - up.upstream_s) / x.seconds;
}

function subEntry(info, sub) {
  const all = (info?.subscribers || []).filter((s) => s.sub === sub);
  return all.find((s) => s.connected) || all[all.length - 1] || null;
}

/**
 * NetEq counts an interruption for every concealment of 150 ms or more; if their mean length is
 * over the limit, at least one gap was too long.
 */
function assertNoLongInterruption(name, m) {
  if (!m.audio_interruptions) return;
  assert.ok((m.audio_interruption_s * 1000) / m.audio_interruptions <= MAX_AUDIO_GAP_MS,
    `${name}: ${m.audio_interruptions} audio interruptions lasting ${m.audio_interruption_s} s in all`);
}

const camSlot = (entry) => entry?.slots?.find((s) => s.slot === 'teacher_camera') || null;
const fmtMs = (x) => (x === null || x === undefined ? 'never' : `${x} ms`);
const pct = (x) => (x === null || x === undefined ? 'n/a' : `${(x * 100).toFixed(2)} %`);

// ------------------------------------------------------------------- tests

describe('adaptive layers per classroom link (issue 3)', { timeout: 600_000 }, () => {
  before(async () => {
    if (!fs.existsSync(LINK_RELAY_BIN)) {
      throw new Error(`link-relay not found at ${LINK_RELAY_BIN}: cargo build -p loadtest (or set LINK_RELAY_BIN)`);
    }
    await h.startSfu();
    // A camera clip that makes the teacher's layers run at their caps (see busyCameraY4m). At
    // 960x540: at 1280x720, Chromium's encoder on two cores beside four other pages was
    // CPU-limited and scaled itself down to 960x540 mid-test anyway, with stalls and keyframes
    // on every layer at each step; the top layer still needs about 1.5 Mbit/s here.
    const camera = busyCameraY4m({ width: 960, height: 540 });
    evidence.camera = path.basename(camera);
    await h.launchBrowser([...CHROMIUM_ARGS, `--use-file-for-fake-video-capture=${camera}`]);
  });

  after(async () => {
    await h.closeBrowser();
    await h.stopSfu();
    saveEvidence();
  });

  test('1 Mbit/s lossy classroom plays a lower layer without freezes; 5 Mbit/s classroom plays the top', async () => {
    const room = `${h.room}-two`;
    const pageBase = h.pageErrors.length;
    const ev = { settings: { A: '1000/1000 kbit/s, 100 ms RTT, 2 % loss', B: '5000/1000 kbit/s, 100 ms RTT, 0 % loss',
      settle_ms: SETTLE_MS, window_ms: WINDOW_MS }, results: {} };
    evidence.tests.two_links = ev;
    const target = `127.0.0.1:${h.sfuPorts.mediaPort}`;
    const relays = {
      A: await startRelay('A-1mbit', target, { downKbps: 1000, upKbps: 1000, rttMs: 100, lossPct: 2, seed: 11 }),
      B: await startRelay('B-5mbit', target, { downKbps: 5000, upKbps: 1000, rttMs: 100, lossPct: 0, seed: 12 }),
    };
    let rec = null;
    let teacher = null;
    const pages = {};
    try {
      teacher = await openTeacher(room, 'teacher-ad1', '张老师');
      const start = await teacherTop(teacher);
      ev.teacher_at_start = start.outbound.filter((o) => o.kind === 'video')
        .map((o) => ({ rid: o.rid, w: o.frameWidth, fps: o.framesPerSecond }));
      const A = await openClassroom(room, 'school-a', '教学点A', relays.A);
      const B = await openClassroom(room, 'school-b', '教学点B', relays.B);
      pages.A = A.page;
      pages.B = B.page;
      const t0 = Date.now();
      ev.t0 = new Date(t0).toISOString();
      rec = new Recorder({ room, teacher, viewers: { A: { page: A.page, sub: 'school-a' }, B: { page: B.page, sub: 'school-b' } },
        apiMs: 200 });
      await rec.start();
      await sleep(SETTLE_MS);

      // B on the top layer (the SFU's view and B's decoded width), or wait up to TOP_GRACE_MS more.
      const bTop = await pollUntil(async () => {
        const v = await viewerStats(B.page);
        const w = rec.widthsAt(Date.now());
        return v && w.h && v.slots[1].frameWidth === w.h ? Date.now() : null;
      }, { timeout: TOP_GRACE_MS, interval: 250 });
      if (!bTop) {
        await rec.stop();
        ev.timeline = rec.timeline(t0);
        ev.meta = rec.meta;
        saveEvidence();
        const info = await h.roomInfo(room);
        assert.fail(`B (5 Mbit/s) not on the top layer ${SETTLE_MS + TOP_GRACE_MS} ms after joining: `
          + `B width ${(await viewerStats(B.page))?.slots[1].frameWidth}, teacher ${JSON.stringify(rec.widthsAt(Date.now()))}, `
          + `SFU: ${JSON.stringify(subEntry(info, 'school-b'))}`);
      }

      const w0 = Date.now();
      await sleep(WINDOW_MS);
      const w1 = Date.now();
      await rec.stop();

      const m = { A: measure(rec.samples.A, w0, w1), B: measure(rec.samples.B, w0, w1) };
      const upA = upstreamFreezes(rec, 'A', w0, w1);
      const upB = upstreamFreezes(rec, 'B', w0, w1);
      const layersSeen = (name) => [...new Set(rec.samplesBetween(name, w0, w1)
        .map((s) => rec.layerOfWidth(s.v?.frameWidth, s.t)))];
      m.A.layers = layersSeen('A');
      m.B.layers = layersSeen('B');
      m.A.sfu_layers = [...new Set(rec.apiBetween(w0, w1).map((x) => camSlot(x.subs.A)?.layer))];
      m.B.sfu_layers = [...new Set(rec.apiBetween(w0, w1).map((x) => camSlot(x.subs.B)?.layer))];
      const lastApi = rec.api[rec.api.length - 1];
      m.A.sfu = lastApi?.subs.A || null;
      m.B.sfu = lastApi?.subs.B || null;
      ev.results.B_on_top_after_ms = firstOnTop(rec, 'B', t0);
      ev.results.window = { from_ms: w0 - t0, to_ms: w1 - t0, teacher_widths: rec.widthsAt(w1),
        teacher: teacherSummary(rec, w0, w1), A: m.A, B: m.B };
      ev.summary = {
        B_first_on_top_ms: ev.results.B_on_top_after_ms,
        A_layers: m.A.layers, A_frozen_share: m.A.frozen_share, A_freezes: m.A.freezes, A_fps: m.A.fps,
        A_audio_concealed_share: m.A.audio_concealed_share, A_audio_gap_ms: [m.A.audio_gap_certain_ms, m.A.audio_gap_upper_ms],
        A_link_use_kbps: Math.round((m.A.sfu?.bitrate_bps || 0) / 1000), A_estimate_kbps: Math.round((m.A.sfu?.estimate_bps || 0) / 1000),
        B_layers: m.B.layers, B_frozen_share: m.B.frozen_share, B_freezes: m.B.freezes,
        A_freezes_upstream: upA.upstream,
        B_freezes_upstream: upB.upstream,
      };
      ev.meta = rec.meta;
      ev.timeline = rec.timeline(t0);
      // 100 ms detail around every freeze of A or B in the window, to tell what caused it.
      ev.freezes = {};
      for (const n of ['A', 'B']) {
        const s = rec.samplesBetween(n, w0, w1).filter((x) => x.v);
        ev.freezes[n] = s.filter((x, i) => i > 0 && (x.v.freezeCount ?? 0) > (s[i - 1].v.freezeCount ?? 0))
          .map((x) => ({ at: Math.round(x.t - t0), detail: rec.detail(n, x.t - 3000, x.t + 1000, t0) }));
      }
      // And around every time the SFU's estimate for B fell below what B was sent.
      const api = rec.apiBetween(w0, w1);
      ev.estimate_dips = api.filter((x, i) => i > 0 && x.subs.B?.estimate_bps < 0.8 * api[i - 1].subs.B?.estimate_bps)
        .map((x) => ({ at: Math.round(x.t - t0), detail: rec.detail('B', x.t - 3000, x.t + 2000, t0) }));
      ev.relays = { A: await relays.A.stop(), B: await relays.B.stop() };
      saveEvidence();
      await h.screenshot(A.page, 'adaptive-A-1mbit');
      await h.screenshot(B.page, 'adaptive-B-5mbit');

      const line = (n, x) => `${n}: layers ${x.layers.join('/')} (SFU ${x.sfu_layers.join('/')}), widths ${x.widths.join('/')}, `
        + `${x.fps} fps, ${x.video_kbps} kbit/s, frozen ${x.frozen_s} s (${pct(x.frozen_share)}, ${x.freezes} freezes), `
        + `audio concealed ${pct(x.audio_concealed_share)}, longest gap >= ${x.audio_gap_certain_ms} ms `
        + `(at most ${x.audio_gap_upper_ms} ms), choppy ${x.audio_choppy_ms} ms, `
        + `interruptions ${x.audio_interruptions}, estimate ${m[n].sfu?.estimate_bps} allocated ${m[n].sfu?.allocated_bps} `
        + `(dips refuted ${m[n].sfu?.dips_refuted}, confirmed ${m[n].sfu?.dips_confirmed}), `
        + `video jitter buffer target ${JSON.stringify([...new Set(rec.samplesBetween(n, w0, w1).map((s) => s.playout_ms))])} ms`;
      console.log(`[adaptive 1] window ${WINDOW_MS} ms after settling; B first on top ${ev.results.B_on_top_after_ms} ms after joining; `
        + `teacher layers ${JSON.stringify(ev.results.window.teacher)}`);
      console.log(`[adaptive 1] ${line('A', m.A)}`);
      console.log(`[adaptive 1] ${line('B', m.B)}`);
      console.log(`[adaptive 1] A path: ${JSON.stringify(rec.meta.A?.pair)}; B path: ${JSON.stringify(rec.meta.B?.pair)}`);

      // Both classrooms really went through their relays.
      for (const n of ['A', 'B']) {
        assert.equal(rec.meta[n]?.pair?.remote, `udp ${relays[n].addr} host`, `${n} plays through its relay`);
      }
      // The test means something only if the top layer cannot fit A's link.
      const hk = ev.results.window.teacher.h.kbps;
      assert.ok(hk >= 1100, `the teacher's top layer sent ${hk} kbit/s (median), want >= 1100 so that it cannot fit 1 Mbit/s`);
      const top = ev.results.window.teacher_widths.h;
      // A: a lower layer, all window long.
      assert.ok(m.A.layers.every((l) => l === 'l' || l === 'm') && m.A.widths.every((w) => w > 0 && w < top),
        `A (1 Mbit/s) played layers ${JSON.stringify(m.A.layers)}, widths ${JSON.stringify(m.A.widths)} in the window; `
        + `the top layer is ${top} wide`);
      assert.ok(m.A.frames_decoded >= WINDOW_MS / 1000 * 10, `A decoded only ${m.A.frames_decoded} frames in the window`);
      // A: no freeze the SFU caused, by the same rule as B and D (see upstreamFreezes).
      ev.results.window.A.upstream = upA;
      assert.ok(ownFrozenShare(m.A, upA) < MAX_FROZEN_SHARE,
        `A frozen ${m.A.frozen_s} s of ${m.A.seconds} s (${pct(m.A.frozen_share)}, ${m.A.freezes} freezes, `
        + `${upA.upstream} of them, ${upA.upstream_s.toFixed(3)} s, while the teacher's layer it played stalled: `
        + `${JSON.stringify(upA.teacher_fps_at)}; the rest ${pct(ownFrozenShare(m.A, upA))}), `
        + `want < ${pct(MAX_FROZEN_SHARE)} (B: ${m.B.freezes} freezes; the teacher's layer m ran at `
        + `${ev.results.window.teacher.m.min_fps} fps at its slowest)`);
      // A: continuous audio.
      assert.ok(m.A.audio_samples_per_s >= MIN_AUDIO_RATE * m.B.audio_samples_per_s,
        `A played ${m.A.audio_samples_per_s} audio samples/s, B ${m.B.audio_samples_per_s}`);
      assert.equal(m.A.audio_stalls, 0, `A: ${m.A.audio_stalls} intervals of ${MIN_STALL_MS} ms or more without an audio sample played `
        + `(${JSON.stringify(m.A.audio_stalls_at.map((x) => ({ t: x.t - t0, d: x.d })))})`);
      assert.ok(m.A.audio_gap_certain_ms <= MAX_AUDIO_GAP_MS,
        `A: audio concealed for at least ${m.A.audio_gap_certain_ms} ms in a row (at t=${m.A.audio_gap_certain_at - t0} ms)`);
      assertNoLongInterruption('A', m.A);
      assert.ok(m.A.audio_concealed_share < MAX_CONCEALED_SHARE,
        `A: ${pct(m.A.audio_concealed_share)} of audio concealed, want < ${pct(MAX_CONCEALED_SHARE)}`);
      // B: the top layer, all window long.
      assert.deepEqual(m.B.layers, ['h'], `B (5 Mbit/s) played layers ${JSON.stringify(m.B.layers)}, widths `
        + `${JSON.stringify(m.B.widths)} in the window (teacher's layers ${JSON.stringify(ev.results.window.teacher_widths)})`);
      // B: no freeze the SFU caused (see upstreamFreezes), and every frame of the top layer.
      ev.results.window.B.upstream = upB;
      assert.ok(ownFrozenShare(m.B, upB) < MAX_FROZEN_SHARE,
        `B frozen ${m.B.frozen_s} s (${m.B.freezes} freezes, ${upB.upstream} of them, ${upB.upstream_s.toFixed(3)} s, `
        + `while the teacher's top layer stalled; the rest ${pct(ownFrozenShare(m.B, upB))}), want < ${pct(MAX_FROZEN_SHARE)}`);
      assert.ok(upB.decoded_share !== null && upB.decoded_share >= MIN_DECODED_SHARE,
        `B decoded ${pct(upB.decoded_share)} of the frames the teacher's top layer sent, want >= ${pct(MIN_DECODED_SHARE)}`);
      assert.deepEqual(h.pageErrors.slice(pageBase), [], 'uncaught page errors');
    } finally {
      if (rec && rec.running) await rec.stop().catch(() => {});
      for (const r of Object.values(relays)) await r.stop().catch(() => {});
      if (teacher) await teacher.evaluate(() => window.lesson.stop()).catch(() => {});
      for (const p of [teacher, ...Object.values(pages)]) if (p) await p.context().close().catch(() => {});
      saveEvidence();
    }
  });

  test('a classroom link drops from 5 to 0.8 Mbit/s and comes back', async () => {
    const room = `${h.room}-step`;
    const pageBase = h.pageErrors.length;
    const schedule = `${DROP_AT_S}s:down=${LOW_KBPS},${RETURN_AT_S}s:down=${HIGH_KBPS}`;
    const ev = { settings: { C: `${HIGH_KBPS}/1000 kbit/s, 100 ms RTT, 0 % loss, schedule ${schedule} (from the relay's start)`,
      D: 'straight to the SFU (loopback)', max_down_ms: MAX_DOWN_MS, max_down_viewer_ms: MAX_DOWN_VIEWER_MS,
      max_up_ms: MAX_UP_MS }, results: {} };
    evidence.tests.capacity_step = ev;
    const target = `127.0.0.1:${h.sfuPorts.mediaPort}`;
    let relay = null;
    let rec = null;
    let teacher = null;
    const pages = {};
    try {
      teacher = await openTeacher(room, 'teacher-ad2', '王老师');
      await teacherTop(teacher);
      const D = await openClassroom(room, 'school-d', '教学点D', null);
      pages.D = D.page;
      relay = await startRelay('C-step', target, { downKbps: HIGH_KBPS, upKbps: 1000, rttMs: 100, lossPct: 0, schedule, seed: 13 });
      const t0 = relay.startedAt;
      ev.t0 = new Date(t0).toISOString();
      const tDrop = t0 + DROP_AT_S * 1000;
      const tReturn = t0 + RETURN_AT_S * 1000;
      const C = await openClassroom(room, 'school-c', '教学点C', relay);
      pages.C = C.page;
      ev.results.C_connected_ms = Date.now() - t0;
      rec = new Recorder({ room, teacher, viewers: { C: { page: C.page, sub: 'school-c' }, D: { page: D.page, sub: 'school-d' } },
        apiMs: 100 });
      await rec.start();

      // C must be on the top layer before the drop (else the test proves nothing).
      const cTop = await pollUntil(async () => {
        const v = await viewerStats(C.page);
        const w = rec.widthsAt(Date.now());
        return v && w.h && v.slots[1].frameWidth === w.h ? Date.now() : null;
      }, { timeout: Math.max(0, tDrop - 2000 - Date.now()), interval: 250 });
      if (!cTop) {
        await rec.stop();
        ev.timeline = rec.timeline(t0);
        saveEvidence();
        assert.fail(`C (5 Mbit/s) not on the top layer before the drop at ${DROP_AT_S} s: `
          + `${JSON.stringify(subEntry(await h.roomInfo(room), 'school-c'))}`);
      }
      await sleep(Math.max(0, tReturn + AFTER_RETURN_MS - Date.now()));
      await rec.stop();
      ev.relay = await relay.stop();

      // ---- the drop
      const apiAfter = (from, pred) => rec.api.find((x) => x.t >= from && pred(x));
      const camAt = (x) => camSlot(x.subs.C);
      const fitsLayer = (x) => camAt(x)?.layer && camAt(x).layer !== 'h';
      const down = apiAfter(tDrop, (x) => fitsLayer(x) && (x.subs.C.allocated_bps ?? Infinity) <= LOW_KBPS * 1000);
      const targetDown = apiAfter(tDrop, (x) => camAt(x)?.target_layer && camAt(x).target_layer !== 'h');
      const allocDown = apiAfter(tDrop, (x) => (x.subs.C.allocated_bps ?? Infinity) <= LOW_KBPS * 1000);
      const viewerDown = rec.samples.C.find((s) => s.t >= tDrop && s.v && s.v.frameWidth
        && rec.layerOfWidth(s.v.frameWidth, s.t) !== 'h');
      const r = ev.results;
      r.C_on_top_ms = firstOnTop(rec, 'C', t0);
      r.C_link_queue_drops = ev.relay?.downlink?.dropped_queue_packets ?? null;
      r.down_sfu_forwarding_ms = down ? down.t - tDrop : null;
      r.down_sfu_target_ms = targetDown ? targetDown.t - tDrop : null;
      r.down_sfu_allocated_ms = allocDown ? allocDown.t - tDrop : null;
      r.down_viewer_width_ms = viewerDown ? Math.round(viewerDown.t - tDrop) : null;
      // While the link is low: C never forwarded 'h' again after switching down.
      const lowApi = rec.apiBetween((down ? down.t : tDrop) + 1, tReturn);
      r.low_period_sfu_layers = [...new Set(lowApi.map((x) => camAt(x)?.layer))];
      r.low_period_up_attempts = lowApi.filter((x) => camAt(x)?.layer === 'h' || camAt(x)?.target_layer === 'h').length;
      const rtts = lowApi.map((x) => x.subs.C?.rtt_ms).filter((x) => typeof x === 'number').sort((a, b) => a - b);
      r.C_low_rtt_ms = rtts.length ? { median: Math.round(rtts[rtts.length >> 1]), max: Math.round(rtts[rtts.length - 1]) } : null;
      const sent = lowApi.map((x) => x.subs.C?.bitrate_bps).filter((x) => typeof x === 'number').sort((a, b) => a - b);
      r.C_low_sent_kbps = sent.length ? { median: Math.round(sent[sent.length >> 1] / 1000), max: Math.round(sent[sent.length - 1] / 1000) } : null;
      r.C_drop = measure(rec.samples.C, tDrop - 1000, tDrop + 10_000);
      r.C_low = measure(rec.samples.C, tDrop, tReturn);
      // ---- the return
      const upSfu = apiAfter(tReturn, (x) => camAt(x)?.layer === 'h');
      const viewerUp = rec.samples.C.find((s) => s.t >= tReturn && s.v && s.v.frameWidth
        && rec.layerOfWidth(s.v.frameWidth, s.t) === 'h');
      r.up_sfu_forwarding_ms = upSfu ? upSfu.t - tReturn : null;
      r.up_viewer_width_ms = viewerUp ? Math.round(viewerUp.t - tReturn) : null;
      // Once back on the top layer, C stays there (5 Mbit/s carries it).
      const afterUp = upSfu ? rec.apiBetween(upSfu.t, tReturn + AFTER_RETURN_MS) : [];
      r.after_up_sfu_layers = [...new Set(afterUp.map((x) => camAt(x)?.layer))];
      r.after_up_relapses = afterUp.filter((x, i) => i > 0 && camAt(x)?.layer !== 'h' && camAt(afterUp[i - 1])?.layer === 'h').length;
      r.C_return = measure(rec.samples.C, tReturn - 1000, tReturn + AFTER_RETURN_MS);
      r.C_whole = measure(rec.samples.C, tDrop - 2000, tReturn + AFTER_RETURN_MS);
      r.D_whole = measure(rec.samples.D, tDrop - 2000, tReturn + AFTER_RETURN_MS);
      r.D_layers = [...new Set(rec.samplesBetween('D', tDrop - 2000, tReturn + AFTER_RETURN_MS)
        .map((s) => rec.layerOfWidth(s.v?.frameWidth, s.t)))];
      r.D_upstream = upstreamFreezes(rec, 'D', tDrop - 2000, tReturn + AFTER_RETURN_MS);
      r.teacher_widths = rec.widthsAt(tReturn);
      r.teacher = teacherSummary(rec, tDrop - 5000, tReturn + AFTER_RETURN_MS);
      ev.summary = {
        C_first_on_top_ms: r.C_on_top_ms,
        down_sfu_ms: r.down_sfu_forwarding_ms, down_viewer_ms: r.down_viewer_width_ms,
        up_sfu_ms: r.up_sfu_forwarding_ms, up_viewer_ms: r.up_viewer_width_ms,
        C_low_rtt_ms: r.C_low_rtt_ms, C_low_sent_kbps: r.C_low_sent_kbps, C_low_frozen_share: r.C_low.frozen_share, C_low_freezes: r.C_low.freezes, C_low_layers: r.low_period_sfu_layers,
        C_after_up_relapses: r.after_up_relapses, C_link_queue_drops: r.C_link_queue_drops, C_return_freezes: r.C_return.freezes, C_return_frozen_s: r.C_return.frozen_s,
        C_audio_gap_ms: [r.C_whole.audio_gap_certain_ms, r.C_whole.audio_gap_upper_ms], C_audio_choppy_ms: r.C_whole.audio_choppy_ms,
        C_audio_concealed_share: r.C_whole.audio_concealed_share,
        D_layers: r.D_layers, D_freezes: r.D_whole.freezes, D_frozen_s: r.D_whole.frozen_s,
        D_freezes_upstream: r.D_upstream.upstream, D_decoded_share_of_sent: r.D_upstream.decoded_share,
        teacher_h_min_fps: r.teacher.h.min_fps,
      };
      ev.meta = rec.meta;
      ev.detail = {
        drop: { C: rec.detail('C', tDrop - 2000, tDrop + 6000, t0), D: rec.detail('D', tDrop - 2000, tDrop + 6000, t0) },
        return: { C: rec.detail('C', tReturn - 2000, tReturn + 12_000, t0),
          D: rec.detail('D', tReturn - 2000, tReturn + 12_000, t0) },
      };
      ev.timeline = rec.timeline(t0);
      saveEvidence();
      await h.screenshot(C.page, 'adaptive-C-after-return');

      console.log(`[adaptive 2] C first on top ${r.C_on_top_ms} ms after its relay started; drop at ${DROP_AT_S} s, `
        + `return at ${RETURN_AT_S} s; teacher layers ${JSON.stringify(r.teacher)}`);
      console.log(`[adaptive 2] switch down: SFU target ${fmtMs(r.down_sfu_target_ms)}, allocation <= ${LOW_KBPS}k `
        + `${fmtMs(r.down_sfu_allocated_ms)}, forwarding a fitting layer ${fmtMs(r.down_sfu_forwarding_ms)}, `
        + `C's picture smaller ${fmtMs(r.down_viewer_width_ms)}`);
      console.log(`[adaptive 2] low period: SFU layers ${r.low_period_sfu_layers.join('/')}, samples targeting h `
        + `${r.low_period_up_attempts}; C frozen ${r.C_low.frozen_s} s (${pct(r.C_low.frozen_share)}, ${r.C_low.freezes} freezes); `
        + `SFU sends ${JSON.stringify(r.C_low_sent_kbps)} kbit/s, RTT ${JSON.stringify(r.C_low_rtt_ms)} ms`);
      console.log(`[adaptive 2] switch up: SFU forwarding h ${fmtMs(r.up_sfu_forwarding_ms)}, C's picture at the top `
        + `${fmtMs(r.up_viewer_width_ms)}; then down again ${r.after_up_relapses} times; frozen after the return `
        + `${r.C_return.frozen_s} s (${r.C_return.freezes} freezes)`);
      // What the SFU saw of C each second around the return: if C does not climb back, this
      // tells a stuck estimate (no probe, or none that lifted it) from a switch waiting on a
      // keyframe. estimate/allocated/probe goal in kbit/s, target>layer, round trip.
      const kb = (x) => (typeof x === 'number' ? Math.round(x / 1000) : '-');
      const rows = rec.detail('C', tReturn - 1000, tReturn + AFTER_RETURN_MS, tReturn).sfu;
      const trace = [];
      for (let t = -1000; t <= AFTER_RETURN_MS; t += 1000) {
        const x = rows.find((a) => a.t >= t);
        if (!x || x.t > t + 1000) continue;
        trace.push(`${Math.round(x.t / 100) / 10}s ${kb(x.estimate_bps)}/${kb(x.allocated_bps)}/${kb(x.probe_bps)} `
          + `${x.target_layer ?? '-'}>${x.layer ?? '-'} ${x.rtt_ms != null ? Math.round(x.rtt_ms) : '-'}ms`);
      }
      console.log(`[adaptive 2] C at the SFU from the return (est/alloc/probe kbit/s, target>layer, rtt): ${trace.join('; ')}`);
      console.log(`[adaptive 2] C audio: longest gap >= ${r.C_whole.audio_gap_certain_ms} ms, <= `
        + `${r.C_whole.audio_gap_upper_ms} ms (at t=${Math.round(r.C_whole.audio_gap_upper_at - t0)} ms), choppy `
        + `${r.C_whole.audio_choppy_ms} ms (${r.C_drop.audio_choppy_ms} ms around the drop), interruptions ${r.C_whole.audio_interruptions} `
        + `(${r.C_whole.audio_interruption_s} s), concealed ${pct(r.C_whole.audio_concealed_share)}, stalls ${r.C_whole.audio_stalls}`);
      console.log(`[adaptive 2] D (clean): layers ${r.D_layers.join('/')}, widths ${r.D_whole.widths.join('/')}, `
        + `${r.D_whole.freezes} freezes (${r.D_whole.frozen_s} s), of them ${r.D_upstream.upstream} while the teacher's top `
        + `layer itself stalled (its encoder at ${JSON.stringify(r.D_upstream.teacher_fps_at)}); decoded `
        + `${pct(r.D_upstream.decoded_share)} of the frames that layer sent`);
      console.log(`[adaptive 2] C path: ${JSON.stringify(rec.meta.C?.pair)}`);

      assert.equal(rec.meta.C?.pair?.remote, `udp ${relay.addr} host`, 'C plays through its relay');
      assert.ok(r.teacher.h.kbps >= 1000,
        `the teacher's top layer sent ${r.teacher.h.kbps} kbit/s (median), want >= 1000 so that it cannot fit ${LOW_KBPS} kbit/s`);
      assert.ok(r.down_sfu_forwarding_ms !== null && r.down_sfu_forwarding_ms <= MAX_DOWN_MS,
        `C: the SFU forwarded a layer that fits ${LOW_KBPS} kbit/s ${fmtMs(r.down_sfu_forwarding_ms)} after the drop, `
        + `want <= ${MAX_DOWN_MS} ms (target ${fmtMs(r.down_sfu_target_ms)}, allocation ${fmtMs(r.down_sfu_allocated_ms)})`);
      assert.ok(r.down_viewer_width_ms !== null && r.down_viewer_width_ms <= MAX_DOWN_VIEWER_MS,
        `C played a smaller layer ${fmtMs(r.down_viewer_width_ms)} after the drop, want <= ${MAX_DOWN_VIEWER_MS} ms`);
      assert.equal(r.low_period_up_attempts, 0,
        `C: the SFU went back to (or aimed at) the top layer while the link was at ${LOW_KBPS} kbit/s`);
      assert.ok(r.C_whole.audio_gap_certain_ms <= MAX_AUDIO_GAP_MS,
        `C: audio concealed for at least ${r.C_whole.audio_gap_certain_ms} ms in a row (at t=${r.C_whole.audio_gap_certain_at - t0} ms), `
        + `want <= ${MAX_AUDIO_GAP_MS} ms`);
      assert.equal(r.C_whole.audio_stalls, 0, `C: ${r.C_whole.audio_stalls} intervals of ${MIN_STALL_MS} ms or more without an audio sample played `
        + `(${JSON.stringify(r.C_whole.audio_stalls_at)})`);
      assertNoLongInterruption('C', r.C_whole);
      assert.deepEqual(r.D_layers, ['h'], 'D (clean link) stays on the top layer');
      // Untouched: the same bar as the lossy classroom of test 1 (a 2-core machine running five
      // browsers has render hiccups of its own), freezes from upstream not counted.
      assert.ok(ownFrozenShare(r.D_whole, r.D_upstream) < MAX_FROZEN_SHARE,
        `D (clean link) froze ${r.D_whole.freezes} times (${r.D_whole.frozen_s} s, ${pct(r.D_whole.frozen_share)}), `
        + `${r.D_upstream.upstream} of them (${r.D_upstream.upstream_s.toFixed(3)} s) while the teacher's top layer `
        + `stalled, the rest ${pct(ownFrozenShare(r.D_whole, r.D_upstream))}; `
        + `the teacher's top layer ran at ${r.teacher.h.min_fps} fps at its slowest`);
      assert.ok(r.D_upstream.decoded_share !== null && r.D_upstream.decoded_share >= MIN_DECODED_SHARE,
        `D (clean link) decoded ${pct(r.D_upstream.decoded_share)} of the frames the teacher's top layer sent, `
        + `want >= ${pct(MIN_DECODED_SHARE)}`);
      assert.ok(r.up_viewer_width_ms !== null && r.up_viewer_width_ms <= MAX_UP_MS,
        `C back on the top layer ${fmtMs(r.up_viewer_width_ms)} after the link returned, want <= ${MAX_UP_MS} ms `
        + `(SFU forwarding h ${fmtMs(r.up_sfu_forwarding_ms)})`);
      assert.equal(r.after_up_relapses, 0, `C went back to the top layer after the link returned, then down again `
        + `${r.after_up_relapses} times on a ${HIGH_KBPS} kbit/s link (SFU layers ${JSON.stringify(r.after_up_sfu_layers)})`);
      assert.deepEqual(h.pageErrors.slice(pageBase), [], 'uncaught page errors');
    } finally {
      if (rec && rec.running) await rec.stop().catch(() => {});
      if (relay) await relay.stop().catch(() => {});
      if (teacher) await teacher.evaluate(() => window.lesson.stop()).catch(() => {});
      for (const p of [teacher, ...Object.values(pages)]) if (p) await p.context().close().catch(() => {});
      saveEvidence();
    }
  });
});
