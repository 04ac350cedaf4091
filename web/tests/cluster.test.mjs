// One lesson across a three-node SFU cluster, in headless Chromium (issue 9).
//
// A redis-server of its own (the directory) and three `sfu serve --cluster` nodes on loopback:
// A (region central) and B, C (region county), sharing the token secret and certificates from
// `sfu cluster-certs`. The teacher page publishes (fake camera and mic) to A, the lesson's origin.
// - A classroom page served by C (and playing from C: placed=1) decodes the teacher's video and
//   receives its audio, relayed A -> C; C's /api/cluster shows the room with origin A, C an edge,
//   and a relay from A.
// - A second classroom page served by A asks for region=county: A answers its WHEP POST with 307
//   to B or C; the browser follows it (the token travels in access_token), the page plays from
//   that node, and its session URL (for PATCH/DELETE) is on that node, where a DELETE from the
//   page's origin (CORS, Authorization) ends the session.
// - A partition: node A stopped (SIGSTOP) for about 4 s. Both classroom pages show the relay loss
//   ("与主讲课堂服务器的连接中断，正在重新连接…", from the edge's `relay` room event) instead of
//   freezing silently; after SIGCONT they play again (video and audio) and the line goes. The
//   nodes run with a 10 s directory TTL so that A keeps its origin claim through the stop.
// About 40 s.
// Output: test-results/sfu-cluster-{a,b,c}.log, redis-cluster.log, cluster-stats.json,
// cluster-*.png.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import {
  Harness, sleep, pollUntil, viewerStats, teacherStats, startRedis, clusterCerts, startClusterNode,
} from './harness.mjs';

const h = new Harness({ name: 'cluster', logFile: 'sfu-cluster-a.log', statsFile: 'cluster-stats.json' });
const ROOM = h.room;
const RELAY_LOST = '与主讲课堂服务器的连接中断，正在重新连接…';
const STOP_MS = 4000;
const DIRECTORY_TTL_MS = 10_000;

let redis = null;
let certs = null;
const nodes = {}; // id -> node
let teacher = null;
let onC = null; // classroom page served by C, playing from C
let placed = null; // classroom page served by A, placed on a county node
let placedNode = null;

const cluster = async (node) => {
  const res = await fetch(`${node.baseUrl}/api/cluster`);
  assert.equal(res.status, 200, `GET ${node.id}/api/cluster`);
  return res.json();
};

/** Camera frames decoded and audio bytes/samples received, from the page's getStats. */
async function progress(page) {
  const v = await viewerStats(page);
  if (!v || v.slots.length < 2) return null;
  return {
    frames: v.slots[1].framesDecoded,
    received: v.slots[1].framesReceived,
    packets: v.slots[1].packetsReceived,
    keyFrames: v.slots[1].keyFramesDecoded,
    pli: v.slots[1].pliCount,
    width: v.slots[1].frameWidth,
    audioBytes: v.slots[0].bytesReceived,
    samples: v.slots[0].totalSamplesReceived,
    state: v.state,
  };
}

/**
 * Waits until `page` decodes at least `frames` more camera frames and receives audio (bytes and
 * samples) compared to `from` (a `progress` sample, or null for from zero). Returns the sample.
 */
async function waitPlaying(page, name, from, { frames = 30, timeout = 30_000 } = {}) {
  const base = from || { frames: 0, audioBytes: 0, samples: 0 };
  const got = await pollUntil(async () => {
    const p = await progress(page);
    return p && p.frames - base.frames >= frames && p.audioBytes > base.audioBytes && p.samples > base.samples ? p : null;
  }, { timeout, interval: 250 });
  if (!got) {
    const now = await progress(page).catch(() => null);
    const page_ = await page.evaluate(() => ({ state: window.lesson.state, relay: window.lesson.relay, node: window.lesson.node,
      notice: document.getElementById('notice-title').textContent })).catch((e) => e.message);
    h.dump(`${name} not playing`, { from: base, now, page: page_ });
    assert.fail(`${name}: not playing within ${timeout} ms (from ${JSON.stringify(base)} to ${JSON.stringify(now)}); `
      + `page ${JSON.stringify(page_)}\n--- C log ---\n${nodes.c.logTail(15)}\n--- A log ---\n${nodes.a.logTail(15)}`);
  }
  return got;
}

/** The page's visible relay-loss line, or null. */
const relayLine = (page) => page.evaluate(() => {
  const n = document.getElementById('notice');
  const title = document.getElementById('notice-title').textContent;
  return !n.hidden && document.body.classList.contains('relay-lost') ? title : null;
});

describe('one lesson across a three-node cluster', { timeout: 240_000 }, () => {
  before(async () => {
    redis = await startRedis('cluster');
    certs = await clusterCerts(['a', 'b', 'c']);
    // The directory's TTL outlasts the partition (a real edge-origin partition leaves the origin
    // heartbeating; a stopped A cannot): A keeps the room, as it would behind a cut link.
    const config = `${certs}/cluster-test.toml`;
    fs.writeFileSync(config, `[cluster]\nttl_ms = ${DIRECTORY_TTL_MS}\nheartbeat_ms = 500\n`);
    const common = { name: 'cluster', secret: h.secret, redis, certs, config };
    nodes.a = await startClusterNode({ ...common, id: 'a', region: 'central' });
    nodes.b = await startClusterNode({ ...common, id: 'b', region: 'county' });
    nodes.c = await startClusterNode({ ...common, id: 'c', region: 'county' });
    const all = await pollUntil(async () => {
      const c = await cluster(nodes.a);
      return c.nodes.length === 3 ? c : null;
    }, { timeout: 15_000, interval: 200 });
    assert.ok(all, `A does not see three nodes: ${JSON.stringify(await cluster(nodes.a))}`);
    await h.launchBrowser();
  });

  after(async () => {
    await h.closeBrowser();
    for (const n of Object.values(nodes)) await n.stop();
    if (redis) await redis.stop();
    if (certs) fs.rmSync(certs, { recursive: true, force: true });
  });

  test('a classroom page on edge C plays the lesson the teacher publishes to A', async () => {
    const t0 = Date.now();
    const tTok = await h.mintToken('teacher', 'teacher-1', '王老师');
    teacher = await h.openPage('teacher', `${nodes.a.baseUrl}/teacher.html?room=${ROOM}&token=${encodeURIComponent(tTok)}&autostart=1`,
      { media: true });
    await h.waitState(teacher, 'teacher', 'connected');

    const cTok = await h.mintToken('classroom', 'cls-c', '城关教学点');
    onC = await h.openPage('classroom-c', `${nodes.c.baseUrl}/classroom.html?room=${ROOM}&token=${encodeURIComponent(cTok)}`
      + '&publish=0&placed=1');
    await h.waitState(onC, 'classroom-c', 'connected');
    const p = await waitPlaying(onC, 'classroom on C', null);
    console.log(`classroom on C playing ${Date.now() - t0} ms after the teacher page opened: ${JSON.stringify(p)}`);
    assert.equal(await onC.evaluate(() => window.lesson.node), nodes.c.baseUrl, 'the page plays from C');

    // C's view of the cluster: the room's origin is A, C is its edge, C relays it from A.
    const seen = await pollUntil(async () => {
      const c = await cluster(nodes.c);
      const room = c.rooms.find((r) => r.room === ROOM);
      const hop = c.relays.find((r) => r.room === ROOM && r.direction === 'from_origin');
      return room && room.origin === 'a' && room.edges.includes('c') && hop && hop.peer === 'a' && hop.packets > 0
        ? { room, hop } : null;
    }, { timeout: 15_000 });
    assert.ok(seen, `C's /api/cluster does not show the room relayed from A: ${JSON.stringify(await cluster(nodes.c))}`);
    const onA = (await cluster(nodes.a)).relays.find((r) => r.room === ROOM && r.direction === 'to_edge' && r.peer === 'c');
    assert.ok(onA && onA.packets > 0, `A relays the room to C: ${JSON.stringify(onA)}`);
    h.dump('C relay hop', seen);
    assert.equal(await relayLine(onC), null, 'no relay loss shown while the relay works');
    await h.screenshot(onC, 'cluster-classroom-c');
  });

  test('a WHEP POST to A with ?region=county is redirected to a county node and plays there', async () => {
    const t0 = Date.now();
    const tok = await h.mintToken('classroom', 'cls-placed', '乡镇教学点');
    placed = await h.openPage('classroom-placed', `${nodes.a.baseUrl}/classroom.html?room=${ROOM}&token=${encodeURIComponent(tok)}`
      + '&publish=0&region=county');
    await h.waitState(placed, 'classroom-placed', 'connected');
    const where = await placed.evaluate(() => ({ node: window.lesson.node, url: window.lesson.sessionUrl }));
    placedNode = [nodes.b, nodes.c].find((n) => n.baseUrl === where.node);
    assert.ok(placedNode, `placed on a county node (B ${nodes.b.baseUrl} or C ${nodes.c.baseUrl}), not ${where.node}`);
    // The session resource lives on the node that answered, not on A.
    assert.ok(where.url.startsWith(`${placedNode.baseUrl}/whep/${ROOM}/`), `session URL ${where.url}`);
    await waitPlaying(placed, 'placed classroom', null);
    // The status line names the server the page plays from.
    assert.equal(await placed.locator('#node-text').textContent(), `服务器 ${new URL(placedNode.baseUrl).host}`);
    assert.equal(await placed.locator('#node-text').isVisible(), true);
    assert.equal(await onC.locator('#node-text').isVisible(), false, 'the page on C plays from C itself');
    console.log(`classroom placed on ${placedNode.id} and playing after ${Date.now() - t0} ms`);
    const info = await (await fetch(`${placedNode.baseUrl}/api/rooms/${ROOM}`)).json();
    assert.ok(info.subscribers.some((s) => s.sub === 'cls-placed'), `${placedNode.id} serves cls-placed: ${JSON.stringify(info.subscribers)}`);
    const onA = await (await fetch(`${nodes.a.baseUrl}/api/rooms/${ROOM}`)).json();
    assert.ok(!onA.subscribers.some((s) => s.sub === 'cls-placed'), 'A does not serve the placed classroom');
    await h.screenshot(placed, 'cluster-classroom-placed');
  });

  test('a partition between the edges and A shows on the pages, which play again after it', async () => {
    const pages = [[onC, 'classroom on C'], [placed, `placed classroom (on ${placedNode.id})`]];
    // Both pages past their start (the placed one joined moments ago) and playing now.
    await Promise.all(pages.map(async ([page, name]) => {
      const p = await progress(page);
      await waitPlaying(page, `${name} before the partition`, p, { frames: Math.max(60, 150 - p.frames) });
    }));
    // For the record (cluster-stats.json): every 500 ms from the stop until both play again,
    // each page's progress and what its node says of it (estimate, allocation, probe, layer).
    const down = async (node, sub) => {
      const info = await fetch(`${node.baseUrl}/api/rooms/${ROOM}`).then((r) => r.json()).catch(() => null);
      const s = info?.subscribers?.find((x) => x.sub === sub);
      const cam = s?.slots?.find((x) => x.slot === 'teacher_camera');
      return s && { est: s.estimate_bps, alloc: s.allocated_bps, probe: s.probe_bps, layer: cam?.layer, paused: cam?.paused };
    };
    let stopAt = Date.now();
    const timeline = [];
    let sampling = true;
    const sampleUntil = Date.now() + 90_000; // ends by itself if an assertion below fails first
    const sampler = (async () => {
      while (sampling && Date.now() < sampleUntil) {
        const [p0, p1] = await Promise.all(pages.map(([page]) => progress(page).catch(() => null)));
        const [d0, d1] = await Promise.all([down(nodes.c, 'cls-c'), down(placedNode, 'cls-placed')]);
        timeline.push({ ms: Date.now() - stopAt, onC: p0, placed: p1, onCNode: d0, placedNode: d1,
          line: await relayLine(onC).catch(() => null) });
        await sleep(500);
      }
    })();
    stopAt = Date.now();
    nodes.a.signal('SIGSTOP');
    let shown;
    try {
      shown = await Promise.all(pages.map(async ([page, name]) => {
        const line = await pollUntil(() => relayLine(page), { timeout: 15_000, interval: 100 });
        assert.equal(line, RELAY_LOST, `${name} shows the relay loss`);
        return Date.now() - stopAt;
      }));
      const relay = await onC.evaluate(() => window.lesson.relay);
      assert.equal(relay.origin, 'a');
      assert.equal(relay.connected, false);
      await h.screenshot(onC, 'cluster-classroom-c-relay-lost');
      await sleep(Math.max(0, stopAt + STOP_MS - Date.now()));
    } finally {
      nodes.a.signal('SIGCONT');
    }
    const contAt = Date.now();
    console.log(`A stopped ${contAt - stopAt} ms; relay loss shown after ${shown.join(', ')} ms`);
    const before = await Promise.all(pages.map(([page]) => progress(page)));
    let back;
    try {
      back = await Promise.all(pages.map(async ([page, name], i) => {
        await waitPlaying(page, `${name} after the partition`, before[i], { frames: 30, timeout: 40_000 });
        const gone = await pollUntil(async () => (await relayLine(page)) === null, { timeout: 10_000, interval: 100 });
        assert.ok(gone, `${name} still shows the relay loss`);
        return Date.now() - contAt;
      }));
    } finally {
      sampling = false;
      await sampler;
      h.dump('recovery timeline', timeline);
      const rooms = {};
      for (const n of Object.values(nodes)) {
        rooms[n.id] = await fetch(`${n.baseUrl}/api/rooms/${ROOM}`).then((r) => r.json()).catch((e) => e.message);
      }
      h.dump('rooms after the partition', { rooms, teacher: await teacherStats(teacher).catch(() => null),
        cluster: { a: await cluster(nodes.a), c: await cluster(nodes.c) } });
    }
    // When audio and video came back on each page (from the 500 ms timeline).
    const contMs = contAt - stopAt;
    const firstAt = (key, test) => {
      const x = timeline.find((e) => e.ms >= contMs && e[key] && test(e[key]));
      return x ? x.ms - contMs : null;
    };
    const resumed = ['onC', 'placed'].map((key, i) => ({
      page: key,
      audioMs: firstAt(key, (p) => p.audioBytes > before[i].audioBytes),
      videoMs: firstAt(key, (p) => p.frames > before[i].frames),
    }));
    console.log(`playing again ${back.join(', ')} ms after SIGCONT; resumed: ${JSON.stringify(resumed)}`);
    assert.equal((await onC.evaluate(() => window.lesson.relay)).connected, true);
    h.dump('partition', { stoppedMs: contAt - stopAt, shownMs: shown, backMs: back, resumed });
    await h.screenshot(onC, 'cluster-classroom-c-after');

    // The placed page's session URL is on its node: a DELETE from the page's origin (A) ends it.
    const url = await placed.evaluate(() => window.lesson.sessionUrl);
    const tok = new URL(placed.url()).searchParams.get('token');
    const status = await placed.evaluate(async ({ u, t }) => (await fetch(u, {
      method: 'DELETE', headers: { Authorization: `Bearer ${t}` },
    })).status, { u: url, t: tok });
    assert.equal(status, 200, `DELETE ${url}`);
    const left = await pollUntil(async () => {
      const info = await (await fetch(`${placedNode.baseUrl}/api/rooms/${ROOM}`)).json();
      return !info.subscribers.some((s) => s.session === url.split('/').pop()) ? info : null;
    }, { timeout: 5_000, interval: 100 });
    assert.ok(left, 'the session is gone from its node after the DELETE');
    assert.deepEqual(h.pageErrors, [], 'page errors');
    assert.deepEqual(h.consoleErrors, [], 'console errors');
  });
});
