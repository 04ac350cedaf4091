// Operations (运维) page: rooms, participants, bitrates and loss over time, server health.
// Reads the SFU's own /api/rooms, /metrics and /healthz every 2 s; nothing from the internet.
// Exposes window.ops = { samples, rooms, healthy } for tests.

import { makeT } from './i18n.js';
import { drawLines } from './chart.js';

const t = makeT({
  'zh-CN': {
    title: '同步课堂 · 运维', switch: 'English', rooms: '课堂', viewers: '听课终端', publishers: '发布端',
    forwarded: '转发码率', pps: '转发包/秒', chartRate: '转发码率（近 5 分钟）', chartLoss: '各听课端丢包率',
    roomList: '课堂列表', room: '课堂', lesson: '状态', teacher: '主讲', classes: '听课', stage: '上台',
    hands: '举手', noRooms: '暂无课堂', viewerList: '听课终端', who: '终端', estimate: '估计带宽',
    bitrate: '码率', loss: '丢包', rtt: '往返时延', layer: '画质层', healthy: '服务正常',
    unhealthy: '服务器无响应', live: '上课中', waiting: '等待上课', ended: '已下课', none: '—',
    total: '总计',
  },
  en: {
    title: 'Classrooms · Operations', switch: '中文', rooms: 'Rooms', viewers: 'Viewers', publishers: 'Publishers',
    forwarded: 'Forwarded', pps: 'Packets/s', chartRate: 'Forwarded bitrate (last 5 min)', chartLoss: 'Loss per viewer',
    roomList: 'Rooms', room: 'Room', lesson: 'Lesson', teacher: 'Teacher', classes: 'Viewers', stage: 'On stage',
    hands: 'Hands', noRooms: 'No rooms', viewerList: 'Viewers', who: 'Viewer', estimate: 'Estimate',
    bitrate: 'Bitrate', loss: 'Loss', rtt: 'RTT', layer: 'Layer', healthy: 'Healthy',
    unhealthy: 'Server not answering', live: 'live', waiting: 'waiting', ended: 'ended', none: '—',
    total: 'total',
  },
});

const $ = (id) => document.getElementById(id);
const COLORS = ['#60a5fa', '#f0b429', '#34d399', '#f87171', '#a78bfa', '#fb923c', '#22d3ee', '#e879f9'];
const KEEP_MS = 300_000;

const state = {
  rooms: [],
  healthy: null,
  samples: [], // [{ t, bytesOut, packetsOut }]
  rate: [], // [[t, bps]]
  pps: [],
  loss: new Map(), // viewer -> [[t, %]]
};

function esc(s) {
  return String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}

function rateText(bps) {
  if (bps == null) return t('none');
  return bps >= 1e6 ? `${(bps / 1e6).toFixed(2)} Mbit/s` : `${Math.round(bps / 1e3)} kbit/s`;
}

/** Sums of the unlabelled (or all-label) samples of `name` in Prometheus text. */
function metric(text, name) {
  let sum = 0;
  let seen = false;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== ' ' && rest[0] !== '{') continue;
    const v = Number(line.trim().split(/\s+/).pop());
    if (Number.isFinite(v)) {
      sum += v;
      seen = true;
    }
  }
  return seen ? sum : null;
}

async function poll() {
  const now = Date.now();
  try {
    const [health, rooms, metrics] = await Promise.all([
      fetch('healthz', { cache: 'no-store' }),
      fetch('api/rooms', { cache: 'no-store' }).then((r) => r.json()),
      fetch('metrics', { cache: 'no-store' }).then((r) => r.text()),
    ]);
    state.healthy = health.ok;
    state.rooms = rooms.rooms || [];
    const sample = {
      t: now,
      bytesOut: metric(metrics, 'sfu_rtp_bytes_forwarded_total') ?? 0,
      packetsOut: metric(metrics, 'sfu_rtp_packets_forwarded_total') ?? 0,
    };
    const prev = state.samples[state.samples.length - 1];
    state.samples.push(sample);
    if (prev && now > prev.t) {
      const dt = (now - prev.t) / 1000;
      state.rate.push([now, Math.max(0, ((sample.bytesOut - prev.bytesOut) * 8) / dt)]);
      state.pps.push([now, Math.max(0, (sample.packetsOut - prev.packetsOut) / dt)]);
    }
    for (const r of state.rooms) {
      for (const s of r.subscribers) {
        const key = `${r.room}/${s.name || s.sub}`;
        if (!state.loss.has(key)) state.loss.set(key, []);
        state.loss.get(key).push([now, (s.loss || 0) * 100]);
      }
    }
  } catch {
    state.healthy = false;
  }
  const cut = now - KEEP_MS;
  state.samples = state.samples.filter((s) => s.t >= cut);
  state.rate = state.rate.filter(([x]) => x >= cut);
  state.pps = state.pps.filter(([x]) => x >= cut);
  for (const [k, v] of state.loss) {
    const kept = v.filter(([x]) => x >= cut);
    if (kept.length) state.loss.set(k, kept);
    else state.loss.delete(k);
  }
  render();
}

function render() {
  const health = $('health');
  health.textContent = state.healthy == null ? '' : state.healthy ? t('healthy') : t('unhealthy');
  health.className = `health ${state.healthy ? 'ok' : 'bad'}`;
  const rooms = state.rooms;
  const viewers = rooms.flatMap((r) => r.subscribers.map((s) => ({ room: r.room, ...s })));
  $('c-rooms').textContent = rooms.length;
  $('c-viewers').textContent = viewers.filter((v) => v.connected).length;
  $('c-publishers').textContent = rooms.reduce((n, r) => n + r.publishers.length, 0);
  const lastRate = state.rate[state.rate.length - 1];
  const lastPps = state.pps[state.pps.length - 1];
  $('c-rate').textContent = lastRate ? rateText(lastRate[1]) : t('none');
  $('c-pps').textContent = lastPps ? Math.round(lastPps[1]) : t('none');

  $('no-rooms').hidden = rooms.length > 0;
  $('rooms').innerHTML = rooms.map((r) => {
    const teacher = r.publishers.find((p) => p.role === 'teacher' || p.role === 'admin');
    const subs = r.subscribers.filter((s) => s.role !== 'teacher').length;
    return `<tr data-room="${esc(r.room)}"><td>${esc(r.room)}</td><td>${esc(t(r.lesson))}</td>`
      + `<td>${esc(teacher ? teacher.name || teacher.sub : t('none'))}</td><td>${subs}</td>`
      + `<td>${esc(r.stage.join('、') || t('none'))}</td><td>${r.hands.length}</td></tr>`;
  }).join('');
  $('viewers').innerHTML = viewers.map((v) => {
    const cam = v.slots.find((s) => s.slot === 'teacher_camera');
    return `<tr><td>${esc(v.room)}</td><td>${esc(v.name || v.sub)}</td><td>${rateText(v.estimate_bps)}</td>`
      + `<td>${rateText(v.bitrate_bps)}</td><td>${v.loss == null ? t('none') : `${(v.loss * 100).toFixed(1)}%`}</td>`
      + `<td>${v.rtt_ms == null ? t('none') : `${Math.round(v.rtt_ms)} ms`}</td>`
      + `<td>${esc(cam && cam.layer ? cam.layer : t('none'))}</td></tr>`;
  }).join('');

  drawLines($('chart-rate'), [{ name: t('total'), color: COLORS[0], points: state.rate }], { unit: 'bps' });
  const loss = [...state.loss.entries()].slice(0, COLORS.length)
    .map(([name, points], i) => ({ name, color: COLORS[i], points }));
  drawLines($('chart-loss'), loss, { unit: '%' });
}

$('lang-btn').addEventListener('click', () => {
  t.toggle();
  render();
});

window.ops = {
  get rooms() {
    return state.rooms;
  },
  get samples() {
    return state.samples.length;
  },
  get rate() {
    return state.rate.slice();
  },
  get healthy() {
    return state.healthy;
  },
  get lang() {
    return t.lang();
  },
};

t.apply();
poll();
setInterval(poll, 2000);
