// Teacher (主讲端) page: publishes mic + camera (3-layer simulcast) and,
// with ?courseware=1, the courseware (screen share) to the SFU over WHIP.
//
// While the lesson runs it also watches the classrooms (WHEP: their small
// camera as tiles, the on-stage classroom's voice), shows raised hands, puts
// a classroom on stage, mutes it, and shows attendance.
//
// Query: room, token, sfu (optional base URL), courseware=1, autostart=1.
// Exposes window.lesson = { pc, state, error, start(), stop(), endLesson(),
//   shareCourseware(), stopCourseware(), room, tiles, stage(), mute(), attendance() }.

import { readParams, preferCodec } from './whip.js';
import { LessonSession } from './session.js';
import { RoomEvents } from './room_events.js';

// Classroom tiles the console shows at once; the SFU rotates the rest through them.
const TILES = 6;

// Camera simulcast layers (rid l/m/h), low to high; the SFU picks one per classroom.
const SIMULCAST = [
  { rid: 'l', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: 'm', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: 'h', maxBitrate: 1_500_000 },
];
const CAMERA = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };
const MIC = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
const COURSEWARE = { width: { max: 1920 }, height: { max: 1080 }, frameRate: { ideal: 15, max: 30 } };
const COURSEWARE_MAX_BITRATE = 1_500_000;

const STATE_TEXT = {
  idle: '未开始',
  connecting: '连接中…',
  connected: '已连接 · 正在上课',
  reconnecting: '重新连接中…',
  ended: '已结束',
  error: '无法开始上课',
};

const $ = (id) => document.getElementById(id);
const { room, token, sfu, query } = readParams();
const coursewareEnabled = query.get('courseware') === '1';

const ui = {
  roomName: $('room-name'),
  status: $('status-text'),
  error: $('error-text'),
  start: $('start-btn'),
  stop: $('stop-btn'),
  courseware: $('courseware-btn'),
  cameraPreview: $('camera-preview'),
  cameraPlaceholder: $('camera-placeholder'),
  coursewareFigure: $('courseware-figure'),
  coursewarePreview: $('courseware-preview'),
  clock: $('lesson-clock'),
  elapsed: $('elapsed'),
  statAudio: $('stat-audio'),
  statCamera: $('stat-camera'),
  statLayers: $('stat-layers'),
  statCourseware: $('stat-courseware'),
  statRoom: $('stat-room'),
  tiles: $('tiles'),
  classCount: $('class-count'),
  handQueue: $('hand-queue'),
  handCount: $('hand-count'),
  handEmpty: $('hand-empty'),
  stageAudio: $('stage-audio'),
  attendanceBtn: $('attendance-btn'),
  attendance: $('attendance'),
};

let camStream = null; // MediaStream with mic and/or camera
let screenTrack = null; // courseware track while sharing
let mediaError = null;
let lessonStartedAt = 0;

const session = new LessonSession({
  kind: 'whip',
  sfu,
  room,
  token,
  setup: setupPeerConnection,
  afterConnect: tuneSenders,
});

// ---------------------------------------------------------------- media

async function openMedia() {
  const md = navigator.mediaDevices;
  if (!md || !md.getUserMedia) {
    throw new Error('此浏览器不支持摄像头采集（需要 HTTPS 或 localhost）');
  }
  try {
    return await md.getUserMedia({ audio: MIC, video: CAMERA });
  } catch (both) {
    // Carry on with whatever device works: a lesson with voice only still beats none.
    for (const c of [{ audio: MIC }, { video: CAMERA }]) {
      try {
        const s = await md.getUserMedia(c);
        mediaError = `部分设备不可用：${both.message || both.name}`;
        return s;
      } catch {
        // try the next one
      }
    }
    throw both;
  }
}

const mediaReady = openMedia().then(
  (stream) => {
    camStream = stream;
    const v = stream.getVideoTracks()[0];
    if (v) {
      v.contentHint = 'motion';
      ui.cameraPreview.srcObject = new MediaStream([v]);
      ui.cameraPreview.play().catch(() => {});
      ui.cameraPlaceholder.hidden = true;
    } else {
      ui.cameraPlaceholder.textContent = '没有摄像头';
    }
    if (mediaError) showError(mediaError);
    return stream;
  },
  (e) => {
    mediaError = `无法打开摄像头和麦克风：${e.message || e.name}`;
    ui.cameraPlaceholder.textContent = '摄像头不可用';
    showError(mediaError);
    return null;
  },
);

// ------------------------------------------------------------- session

function setupPeerConnection(pc) {
  const streams = camStream ? [camStream] : [];
  const audio = camStream && camStream.getAudioTracks()[0];
  const video = camStream && camStream.getVideoTracks()[0];
  // Fixed m-line order: audio, camera, courseware (the SFU maps by order).
  pc.addTransceiver(audio || 'audio', { direction: 'sendonly', streams });
  const cam = pc.addTransceiver(video || 'video', {
    direction: 'sendonly',
    streams,
    sendEncodings: SIMULCAST.map((e) => ({ ...e })),
  });
  preferCodec(cam, 'video/VP8');
  if (coursewareEnabled) {
    // Always present (possibly without a track) so sharing never needs renegotiation.
    const cw = pc.addTransceiver(screenTrack || 'video', {
      direction: 'sendonly',
      sendEncodings: [{ maxBitrate: COURSEWARE_MAX_BITRATE }],
    });
    preferCodec(cw, 'video/VP8');
  }
}

async function tuneSenders(pc) {
  const cw = coursewareTransceiver(pc);
  if (!cw) return;
  const p = cw.sender.getParameters();
  if (!p.encodings || p.encodings.length === 0) return;
  p.degradationPreference = 'maintain-resolution'; // keep text on slides sharp
  await cw.sender.setParameters(p);
}

function coursewareTransceiver(pc) {
  if (!pc || !coursewareEnabled) return null;
  const t = pc.getTransceivers();
  return t.length >= 3 ? t[2] : null;
}

async function start() {
  if (session.running) return;
  await mediaReady;
  if (!room || !token) {
    session.fail('链接缺少 room 或 token 参数');
    return;
  }
  lessonStartedAt = 0;
  session.start();
}

async function stop({ forget = false } = {}) {
  stopConsole({ forget });
  await session.stop({ forget });
}

/** 下课: ends the lesson for every classroom, then leaves. */
async function endLesson() {
  const r = await events.command({ type: 'end' });
  if (r.type !== 'ok' && r.status !== 404) showError(`下课失败：${r.error}`);
  // Ended: the server has closed our sessions already.
  await stop({ forget: r.type === 'ok' });
  return r;
}

// ------------------------------------------------------- classroom console

const events = new RoomEvents({ sfu, room, token });
let consoleSession = null;
const tileState = []; // per tile: { el, video, name, frames, live, lastProgress }

function buildTiles() {
  for (let i = 0; i < TILES; i++) {
    const el = document.createElement('figure');
    el.className = 'tile';
    el.hidden = true;
    el.innerHTML = `<video autoplay muted playsinline></video>
      <figcaption><span class="tile-name"></span><span class="quality"></span>
      <button type="button" class="pin-btn">置顶</button>
      <button type="button" class="stage-btn">上台</button>
      <button type="button" class="mute-btn">静音</button></figcaption>`;
    ui.tiles.appendChild(el);
    const t = { el, video: el.querySelector('video'), sub: null, frames: 0, live: false, lastProgress: 0 };
    el.querySelector('.stage-btn').addEventListener('click', () => {
      if (t.sub) stage(t.sub, !(events.state?.stage || []).includes(t.sub));
    });
    el.querySelector('.pin-btn').addEventListener('click', () => {
      if (t.sub) pin(t.sub, !(events.state?.pinned || []).includes(t.sub));
    });
    el.querySelector('.mute-btn').addEventListener('click', () => {
      if (t.sub) mute(t.sub, !(events.state?.muted || []).includes(t.sub));
    });
    tileState.push(t);
  }
}

function startConsole() {
  if (consoleSession) return;
  consoleSession = new LessonSession({
    kind: 'whep',
    sfu,
    room,
    token,
    setup: (pc) => {
      // The program's layout (own voice, camera, courseware: never sent back to us), the stage's
      // voice and camera, then the tiles.
      const kinds = ['audio', 'video', 'video', 'audio', 'video'];
      for (let i = 0; i < TILES; i++) kinds.push('video');
      const tr = kinds.map((k) => pc.addTransceiver(k, { direction: 'recvonly' }));
      tr.filter((t) => t.receiver.track.kind === 'video').forEach((t) => preferCodec(t, 'video/VP8'));
      ui.stageAudio.srcObject = new MediaStream([tr[3].receiver.track]);
      ui.stageAudio.play().catch(() => {});
      tileState.forEach((t, i) => {
        t.video.srcObject = new MediaStream([tr[5 + i].receiver.track]);
        t.video.play().catch(() => {});
        t.frames = 0;
        t.live = false;
      });
    },
  });
  consoleSession.start();
}

function stopConsole({ forget = false } = {}) {
  if (!consoleSession) return;
  consoleSession.stop({ forget });
  consoleSession = null;
}

async function stage(sub, on) {
  const r = await events.command({ type: 'stage', sub, on });
  if (r.type !== 'ok') showError(`上台失败：${r.error}`);
  return r;
}

async function pin(sub, pinned) {
  const r = await events.command({ type: 'pin', sub, pinned });
  if (r.type !== 'ok') showError(`置顶失败：${r.error}`);
  return r;
}

async function mute(sub, muted) {
  const r = await events.command({ type: 'mute', sub, muted });
  if (r.type !== 'ok') showError(`静音失败：${r.error}`);
  return r;
}

async function attendance() {
  const res = await fetch(`${sfu}/api/rooms/${encodeURIComponent(room)}/attendance`, {
    headers: { Authorization: `Bearer ${token}` },
    cache: 'no-store',
  });
  if (!res.ok) throw new Error(`考勤：HTTP ${res.status}`);
  const a = await res.json();
  renderAttendance(a);
  return a;
}

function renderAttendance(a) {
  const fmt = (ms) => (ms ? new Date(ms).toLocaleTimeString('zh-CN', { hour12: false }) : '—');
  const rows = a.participants
    .filter((p) => p.role !== 'teacher')
    .map((p) => `<tr><td>${esc(p.name || p.sub)}</td><td>${p.present ? '在线' : '已离开'}</td>`
      + `<td>${fmt(p.first_joined_unix_ms)}</td><td>${Math.round(p.connected_ms / 60000)} 分钟</td></tr>`)
    .join('');
  ui.attendance.innerHTML = `<table><thead><tr><th>教室</th><th>状态</th><th>进入</th><th>时长</th></tr></thead>`
    + `<tbody>${rows}</tbody></table>`;
}

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}

function renderConsole() {
  const st = events.state;
  const order = st ? st.tiles : [];
  const classes = st ? st.participants.filter((p) => p.role === 'classroom' && p.present).length : 0;
  ui.classCount.textContent = st ? `（${classes} 个在线）` : '';
  tileState.forEach((t, i) => {
    const sub = order[i] || null;
    t.sub = sub;
    t.el.hidden = !sub;
    if (!sub) return;
    const onStage = st.stage.includes(sub);
    const muted = st.muted.includes(sub);
    t.el.dataset.sub = sub;
    t.el.classList.toggle('on-stage', onStage);
    t.el.classList.toggle('hand-up', st.hands.includes(sub));
    t.el.classList.toggle('speaking', st.speaker === sub);
    t.el.querySelector('.tile-name').textContent = (st.hands.includes(sub) ? '【举手】' : '') + events.nameOf(sub);
    t.el.querySelector('.stage-btn').textContent = onStage ? '下台' : '上台';
    t.el.querySelector('.mute-btn').textContent = muted ? '取消静音' : '静音';
    t.el.querySelector('.pin-btn').textContent = st.pinned.includes(sub) ? '取消置顶' : '置顶';
    const q = events.quality.get(sub);
    t.el.querySelector('.quality').textContent = q && q.estimate_bps
      ? `${(q.estimate_bps / 1e6).toFixed(1)}M${q.loss ? ` 丢${(q.loss * 100).toFixed(0)}%` : ''}` : '';
  });
  const hands = st ? st.hands : [];
  ui.handCount.textContent = hands.length ? `（${hands.length}）` : '';
  ui.handEmpty.hidden = hands.length > 0;
  ui.handQueue.innerHTML = '';
  for (const sub of hands) {
    const li = document.createElement('li');
    li.innerHTML = `<span>${esc(events.nameOf(sub))}</span><button type="button">请发言</button>`;
    li.querySelector('button').addEventListener('click', () => stage(sub, true));
    ui.handQueue.appendChild(li);
  }
}

async function sampleTiles() {
  const pc = consoleSession?.pc;
  if (!pc || pc.connectionState !== 'connected') return;
  const tr = pc.getTransceivers();
  const now = performance.now();
  await Promise.all(tileState.map(async (t, i) => {
    const r = tr[5 + i]?.receiver;
    if (!r) return;
    let frames = 0;
    (await r.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp') frames += s.framesDecoded || 0;
    });
    if (frames > t.frames) t.lastProgress = now;
    t.frames = frames;
    t.live = t.lastProgress > 0 && now - t.lastProgress < 2500;
  }));
}

events.addEventListener('change', () => renderConsole());
events.addEventListener('ended', () => {
  // The lesson is over (ended here, by an admin, or in another tab): the server closed our sessions.
  if (session.running) stop({ forget: true });
});

// ----------------------------------------------------------- courseware

async function shareCourseware() {
  if (!coursewareEnabled || screenTrack) return;
  let stream;
  try {
    stream = await navigator.mediaDevices.getDisplayMedia({ video: COURSEWARE, audio: false });
  } catch (e) {
    if (e && e.name !== 'NotAllowedError' && e.name !== 'AbortError') {
      showError(`无法共享课件：${e.message || e.name}`);
    }
    return;
  }
  screenTrack = stream.getVideoTracks()[0];
  screenTrack.contentHint = 'detail';
  screenTrack.addEventListener('ended', () => stopCourseware());
  ui.coursewarePreview.srcObject = new MediaStream([screenTrack]);
  ui.coursewarePreview.play().catch(() => {});
  ui.coursewareFigure.hidden = false;
  const t = coursewareTransceiver(session.pc);
  if (t) await t.sender.replaceTrack(screenTrack);
  render();
}

async function stopCourseware() {
  if (!screenTrack) return;
  const track = screenTrack;
  screenTrack = null;
  track.stop();
  ui.coursewarePreview.srcObject = null;
  ui.coursewareFigure.hidden = true;
  const t = coursewareTransceiver(session.pc);
  if (t) await t.sender.replaceTrack(null).catch(() => {});
  render();
}

// ------------------------------------------------------------------ UI

function showError(msg) {
  ui.error.textContent = msg;
  ui.error.hidden = false;
}

function hideError() {
  ui.error.hidden = true;
  ui.error.textContent = '';
}

function render() {
  const s = session.state;
  document.body.dataset.state = s;
  ui.status.textContent = STATE_TEXT[s] || s;
  // One message box: the session's trouble first, then a device problem.
  if ((s === 'reconnecting' || s === 'error') && session.error && session.error.message) {
    showError(session.error.message);
  } else if (mediaError) {
    showError(mediaError);
  } else {
    hideError();
  }
  const live = s === 'connecting' || s === 'connected' || s === 'reconnecting';
  ui.start.disabled = live;
  ui.stop.disabled = !live;
  ui.courseware.hidden = !coursewareEnabled;
  ui.courseware.textContent = screenTrack ? '停止共享课件' : '共享课件';
  ui.clock.hidden = !live || !lessonStartedAt;
}

session.addEventListener('state', () => {
  if (session.state === 'connected' && !lessonStartedAt) lessonStartedAt = Date.now();
  if (session.state === 'connected') {
    // The lesson is on: follow the room and watch the classrooms.
    if (events.ended || !events.running) events.restart();
    startConsole();
  }
  if (session.state === 'ended' || session.state === 'error') resetStats();
  render();
});

ui.start.addEventListener('click', () => start());
ui.stop.addEventListener('click', () => endLesson());
ui.attendanceBtn.addEventListener('click', () => attendance().catch((e) => showError(e.message)));
ui.courseware.addEventListener('click', () => (screenTrack ? stopCourseware() : shareCourseware()));
window.addEventListener('pagehide', () => {
  if (consoleSession && consoleSession.running) consoleSession.stop({ keepalive: true });
  if (session.running) session.stop({ keepalive: true });
});

// --------------------------------------------------------------- stats

let lastBytes = new Map(); // key -> { bytes, ts }

function kbps(key, bytes, ts) {
  const prev = lastBytes.get(key);
  lastBytes.set(key, { bytes, ts });
  if (!prev || ts <= prev.ts) return null;
  return ((bytes - prev.bytes) * 8) / (ts - prev.ts); // bytes per ms * 8 = kbit/s
}

function fmtRate(k) {
  if (k == null) return '';
  return k >= 1000 ? `${(k / 1000).toFixed(2)} Mbit/s` : `${Math.round(k)} kbit/s`;
}

function resetStats() {
  lastBytes = new Map();
  for (const el of [ui.statAudio, ui.statCamera, ui.statLayers, ui.statCourseware]) el.textContent = '—';
}

async function pollStats() {
  const pc = session.pc;
  if (!pc || session.state !== 'connected') return;
  const report = await pc.getStats();
  const layers = [];
  let audio = null;
  let cw = null;
  const cwMid = coursewareTransceiver(pc)?.mid;
  report.forEach((s) => {
    if (s.type !== 'outbound-rtp') return;
    const key = `${s.kind}-${s.mid}-${s.rid || ''}`;
    const rate = kbps(key, s.bytesSent || 0, s.timestamp);
    if (s.kind === 'audio') audio = rate;
    else if (cwMid != null && s.mid === cwMid) cw = { s, rate };
    else layers.push({ s, rate });
  });
  ui.statAudio.textContent = audio == null ? '—' : fmtRate(audio);
  layers.sort((a, b) => (a.s.rid || '').localeCompare(b.s.rid || ''));
  const order = { h: 0, m: 1, l: 2 };
  layers.sort((a, b) => (order[a.s.rid] ?? 9) - (order[b.s.rid] ?? 9));
  const top = layers[0];
  ui.statCamera.textContent = top && top.s.frameWidth
    ? `${top.s.frameWidth}×${top.s.frameHeight} · ${Math.round(top.s.framesPerSecond || 0)} 帧/秒`
    : '—';
  ui.statLayers.textContent = layers.length
    ? layers
      .map(({ s, rate }) => `${s.rid || '-'} ${s.frameHeight ? `${s.frameHeight}p` : '暂停'} ${fmtRate(rate)}`)
      .join('，')
      + (top && top.s.qualityLimitationReason && top.s.qualityLimitationReason !== 'none'
        ? `（受限：${top.s.qualityLimitationReason}）` : '')
    : '—';
  ui.statCourseware.textContent = cw && screenTrack && cw.s.frameWidth
    ? `${cw.s.frameWidth}×${cw.s.frameHeight} · ${fmtRate(cw.rate)}`
    : (screenTrack ? '准备中' : '未共享');
}

// Room status (display only; field names are not relied upon).
let roomApiOk = true;
async function pollRoom() {
  if (!roomApiOk || session.state !== 'connected') return;
  try {
    const res = await fetch(`${sfu}/api/rooms/${encodeURIComponent(room)}`, {
      headers: { Authorization: `Bearer ${token}` },
      cache: 'no-store',
    });
    if (!res.ok) {
      roomApiOk = false; // not available to this token: stop asking
      ui.statRoom.textContent = '—';
      return;
    }
    const info = await res.json();
    ui.statRoom.textContent = describeRoom(info);
  } catch {
    // transient; keep the last value
  }
}

function describeRoom(info) {
  const list = Array.isArray(info?.participants) ? info.participants
    : Array.isArray(info?.subscribers) ? info.subscribers : null;
  if (!list) return '—';
  const viewers = list.filter((p) => !p || p.role !== 'teacher').length;
  return `${viewers} 个终端`;
}

function tickClock() {
  if (!lessonStartedAt) return;
  const sec = Math.floor((Date.now() - lessonStartedAt) / 1000);
  const h = Math.floor(sec / 3600);
  const m = String(Math.floor(sec / 60) % 60).padStart(2, '0');
  const ss = String(sec % 60).padStart(2, '0');
  ui.elapsed.textContent = h ? `${h}:${m}:${ss}` : `${m}:${ss}`;
}

setInterval(() => {
  pollStats().catch(() => {});
  sampleTiles().catch(() => {});
  tickClock();
}, 1000);
setInterval(() => pollRoom(), 5000);

// ---------------------------------------------------------------- boot

ui.roomName.textContent = room || '（未指定）';
buildTiles();
render();

window.lesson = {
  get pc() {
    return session.pc;
  },
  get state() {
    return session.state;
  },
  get error() {
    return session.error;
  },
  get sessions() {
    return session.sessions;
  },
  get stream() {
    return camStream;
  },
  start,
  stop,
  endLesson,
  stage,
  mute,
  pin,
  attendance,
  get room() {
    return events.state ? { ...events.state, ended: events.ended } : null;
  },
  get tiles() {
    return tileState.map((t) => ({ sub: t.sub, frames: t.frames, live: t.live }));
  },
  get console() {
    return consoleSession ? consoleSession.state : 'off';
  },
  shareCourseware,
  stopCourseware,
};

if (!room || !token) {
  session.fail('链接缺少 room 或 token 参数');
} else if (query.get('autostart') === '1') {
  start();
}
