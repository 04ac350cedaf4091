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

import { readParams, preferCodec, clusterQuery } from './whip.js';
import { LessonSession } from './session.js';
import { RoomEvents, applyLayers } from './room_events.js';
import { makeT } from './i18n.js';

// Page text (zh-CN by default; the switch or ?lang=en gives English).
const L = makeT({
  'zh-CN': {
    pageTitle: '主讲端 · 同步课堂', title: '同步课堂 · 主讲端', room: '课堂：', elapsed: '已上课',
    myCamera: '我的摄像头', openingCamera: '正在打开摄像头…', courseware: '课件（屏幕共享）',
    start: '开始上课', end: '下课', share: '共享课件', unshare: '停止共享课件', mic: '麦克风', camera: '摄像头',
    layers: '上行分层', cwStat: '课件', online: '在线', hint: '“下课”结束全体课堂的这节课。网络中断时会自动重新连接。',
    hands: '举手', noHands: '暂无举手', attendance: '考勤', classrooms: '听课教室', switch: 'English',
    idle: '未开始', connecting: '连接中…', connected: '已连接 · 正在上课', reconnecting: '重新连接中…',
    ended: '已结束', error: '无法开始上课', noCapture: '此浏览器不支持摄像头采集（需要 HTTPS 或 localhost）',
    someDevices: '部分设备不可用：{why}', noCamera: '没有摄像头', noDevices: '无法打开摄像头和麦克风：{why}',
    cameraDown: '摄像头不可用', badLink: '链接缺少 room 或 token 参数', endFailed: '下课失败：{why}',
    pin: '置顶', unpin: '取消置顶', stageOn: '上台', stageOff: '下台', mute: '静音', unmute: '取消静音',
    stageFailed: '上台失败：{why}', pinFailed: '置顶失败：{why}', muteFailed: '静音失败：{why}',
    attendanceFailed: '考勤：HTTP {status}', present: '在线', left: '已离开', minutes: '{n} 分钟',
    colClass: '教室', colState: '状态', colJoined: '进入', colTime: '时长', classesOnline: '（{n} 个在线）',
    handTag: '【举手】', speak: '请发言', loss: ' 丢{n}%', shareFailed: '无法共享课件：{why}', fps: '{n} 帧/秒',
    paused: '暂停', limited: '（受限：{why}）', preparing: '准备中', notShared: '未共享', terminals: '{n} 个终端',
    unnamed: '（未指定）', cameraPick: '摄像头', micPick: '麦克风', deviceFailed: '无法切换设备：{why}',
  },
  en: {
    pageTitle: 'Teacher · Live lesson', title: 'Live lesson · Teacher', room: 'Room: ', elapsed: 'Teaching for',
    myCamera: 'My camera', openingCamera: 'Opening the camera…', courseware: 'Courseware (screen share)',
    start: 'Start lesson', end: 'End lesson', share: 'Share courseware', unshare: 'Stop sharing', mic: 'Microphone',
    camera: 'Camera', layers: 'Uplink layers', cwStat: 'Courseware', online: 'Online',
    hint: '"End lesson" ends it for every classroom. Lost connections come back by themselves.',
    hands: 'Hands', noHands: 'No hands raised', attendance: 'Attendance', classrooms: 'Classrooms', switch: '中文',
    idle: 'Not started', connecting: 'Connecting…', connected: 'Connected · teaching', reconnecting: 'Reconnecting…',
    ended: 'Ended', error: 'Cannot start the lesson',
    noCapture: 'This browser cannot capture a camera (needs HTTPS or localhost)',
    someDevices: 'Some devices are unavailable: {why}', noCamera: 'No camera',
    noDevices: 'Cannot open the camera and microphone: {why}', cameraDown: 'Camera unavailable',
    badLink: 'The link lacks the room or token parameter', endFailed: 'Ending the lesson failed: {why}',
    pin: 'Pin', unpin: 'Unpin', stageOn: 'On stage', stageOff: 'Off stage', mute: 'Mute', unmute: 'Unmute',
    stageFailed: 'Stage failed: {why}', pinFailed: 'Pin failed: {why}', muteFailed: 'Mute failed: {why}',
    attendanceFailed: 'Attendance: HTTP {status}', present: 'present', left: 'left', minutes: '{n} min',
    colClass: 'Classroom', colState: 'State', colJoined: 'Joined', colTime: 'Time', classesOnline: '({n} online)',
    handTag: '[hand] ', speak: 'Speak', loss: ' loss {n}%', shareFailed: 'Cannot share courseware: {why}',
    fps: '{n} fps', paused: 'paused', limited: ' (limited: {why})', preparing: 'starting', notShared: 'not shared',
    terminals: '{n} viewers', unnamed: '(none)', cameraPick: 'Camera', micPick: 'Microphone',
    deviceFailed: 'Cannot switch the device: {why}',
  },
});

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
  get idle() { return L('idle'); },
  get connecting() { return L('connecting'); },
  get connected() { return L('connected'); },
  get reconnecting() { return L('reconnecting'); },
  get ended() { return L('ended'); },
  get error() { return L('error'); },
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
  cameraSelect: $('camera-select'),
  micSelect: $('mic-select'),
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
  query: clusterQuery(query, 'whip'), // region: in a cluster, the lesson's node is of that region
  setup: setupPeerConnection,
  afterConnect: tuneSenders,
});

// ---------------------------------------------------------------- media

async function openMedia() {
  const md = navigator.mediaDevices;
  if (!md || !md.getUserMedia) {
    throw new Error(L('noCapture'));
  }
  try {
    return await md.getUserMedia({ audio: MIC, video: CAMERA });
  } catch (both) {
    // Carry on with whatever device works: a lesson with voice only still beats none.
    for (const c of [{ audio: MIC }, { video: CAMERA }]) {
      try {
        const s = await md.getUserMedia(c);
        mediaError = L('someDevices', { why: both.message || both.name });
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
      ui.cameraPlaceholder.textContent = L('noCamera');
    }
    if (mediaError) showError(mediaError);
    listDevices();
    return stream;
  },
  (e) => {
    mediaError = L('noDevices', { why: e.message || e.name });
    ui.cameraPlaceholder.textContent = L('cameraDown');
    showError(mediaError);
    return null;
  },
);

/** Fills the camera and microphone choices (labels are readable once access was granted). */
async function listDevices() {
  const md = navigator.mediaDevices;
  if (!md || !md.enumerateDevices) return;
  const all = await md.enumerateDevices();
  const fill = (sel, kind, current) => {
    const list = all.filter((d) => d.kind === kind);
    sel.innerHTML = list
      .map((d, i) => `<option value="${esc(d.deviceId)}">${esc(d.label || `${kind} ${i + 1}`)}</option>`)
      .join('');
    if (current) sel.value = current;
    sel.disabled = list.length < 2;
  };
  const settings = (k) => camStream && camStream.getTracks().find((x) => x.kind === k)?.getSettings().deviceId;
  fill(ui.cameraSelect, 'videoinput', settings('video'));
  fill(ui.micSelect, 'audioinput', settings('audio'));
}

/** Switches the camera or microphone while teaching: the new track replaces the old one in the
 * running session (no renegotiation). */
async function useDevice(kind, deviceId) {
  const constraints = kind === 'video'
    ? { video: { ...CAMERA, deviceId: { exact: deviceId } } }
    : { audio: { ...MIC, deviceId: { exact: deviceId } } };
  let track;
  try {
    track = (await navigator.mediaDevices.getUserMedia(constraints)).getTracks()[0];
  } catch (e) {
    showError(L('deviceFailed', { why: e.message || e.name }));
    return false;
  }
  if (kind === 'video') track.contentHint = 'motion';
  const old = camStream ? camStream.getTracks().find((x) => x.kind === kind) : null;
  if (!camStream) camStream = new MediaStream();
  if (old) {
    camStream.removeTrack(old);
    old.stop();
  }
  camStream.addTrack(track);
  const pc = session.pc;
  if (pc) {
    const tr = pc.getTransceivers()[kind === 'video' ? 1 : 0];
    if (tr) await tr.sender.replaceTrack(track);
  }
  if (kind === 'video') {
    ui.cameraPreview.srcObject = new MediaStream([track]);
    ui.cameraPreview.play().catch(() => {});
    ui.cameraPlaceholder.hidden = true;
  }
  return true;
}

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
    session.fail(L('badLink'));
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
  if (r.type !== 'ok' && r.status !== 404) showError(L('endFailed', { why: r.error }));
  // Ended: the server has closed our sessions already.
  await stop({ forget: r.type === 'ok' });
  return r;
}

// ------------------------------------------------------- classroom console

const events = new RoomEvents({ sfu, room, token });
/** The SFU node the lesson is published on (after a cluster's redirect, not the page's `sfu`). */
const lessonNode = () => {
  const node = session.resource?.node;
  return node && node !== new URL(sfu).origin ? node : sfu; // keep a path prefix of `sfu`
};
let consoleSession = null;
const tileState = []; // per tile: { el, video, name, frames, live, lastProgress }

function buildTiles() {
  for (let i = 0; i < TILES; i++) {
    const el = document.createElement('figure');
    el.className = 'tile';
    el.hidden = true;
    el.innerHTML = `<video autoplay muted playsinline></video>
      <figcaption><span class="tile-name"></span><span class="quality"></span>
      <button type="button" class="pin-btn"></button>
      <button type="button" class="stage-btn"></button>
      <button type="button" class="mute-btn"></button></figcaption>`;
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
    query: clusterQuery(query, 'whip'), // the console watches where the lesson is
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
  if (r.type !== 'ok') showError(L('stageFailed', { why: r.error }));
  return r;
}

async function pin(sub, pinned) {
  const r = await events.command({ type: 'pin', sub, pinned });
  if (r.type !== 'ok') showError(L('pinFailed', { why: r.error }));
  return r;
}

async function mute(sub, muted) {
  const r = await events.command({ type: 'mute', sub, muted });
  if (r.type !== 'ok') showError(L('muteFailed', { why: r.error }));
  return r;
}

async function attendance() {
  const res = await fetch(`${lessonNode()}/api/rooms/${encodeURIComponent(room)}/attendance`, {
    headers: { Authorization: `Bearer ${token}` },
    cache: 'no-store',
  });
  if (!res.ok) throw new Error(L('attendanceFailed', { status: res.status }));
  const a = await res.json();
  renderAttendance(a);
  return a;
}

function renderAttendance(a) {
  const fmt = (ms) => (ms ? new Date(ms).toLocaleTimeString('zh-CN', { hour12: false }) : '—');
  const rows = a.participants
    .filter((p) => p.role !== 'teacher')
    .map((p) => `<tr><td>${esc(p.name || p.sub)}</td><td>${p.present ? L('present') : L('left')}</td>`
      + `<td>${fmt(p.first_joined_unix_ms)}</td><td>${L('minutes', { n: Math.round(p.connected_ms / 60000) })}</td></tr>`)
    .join('');
  ui.attendance.innerHTML = `<table><thead><tr><th>${L('colClass')}</th><th>${L('colState')}</th><th>${L('colJoined')}</th><th>${L('colTime')}</th></tr></thead>`
    + `<tbody>${rows}</tbody></table>`;
}

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}

function renderConsole() {
  const st = events.state;
  const order = st ? st.tiles : [];
  const classes = st ? st.participants.filter((p) => p.role === 'classroom' && p.present).length : 0;
  ui.classCount.textContent = st ? L('classesOnline', { n: classes }) : '';
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
    t.el.querySelector('.tile-name').textContent = (st.hands.includes(sub) ? L('handTag') : '') + events.nameOf(sub);
    t.el.querySelector('.stage-btn').textContent = onStage ? L('stageOff') : L('stageOn');
    t.el.querySelector('.mute-btn').textContent = muted ? L('unmute') : L('mute');
    t.el.querySelector('.pin-btn').textContent = st.pinned.includes(sub) ? L('unpin') : L('pin');
    const q = events.quality.get(sub);
    t.el.querySelector('.quality').textContent = q && q.estimate_bps
      ? `${(q.estimate_bps / 1e6).toFixed(1)}M${q.loss ? L('loss', { n: (q.loss * 100).toFixed(0) }) : ''}`
        + `${q.rtt_ms != null ? ` ${Math.round(q.rtt_ms)}ms` : ''}`
      : '';
  });
  const hands = st ? st.hands : [];
  ui.handCount.textContent = hands.length ? `（${hands.length}）` : '';
  ui.handEmpty.hidden = hands.length > 0;
  ui.handQueue.innerHTML = '';
  for (const sub of hands) {
    const li = document.createElement('li');
    li.innerHTML = `<span>${esc(events.nameOf(sub))}</span><button type="button">${L('speak')}</button>`;
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
// Dynacast: stop encoding camera layers no classroom needs (and resume them when one does).
let layersWanted = null;
events.addEventListener('layers', (e) => {
  if (e.detail.track !== 'teacher_camera') return;
  layersWanted = e.detail.active;
  const cam = session.pc?.getTransceivers()[1];
  applyLayers(cam?.sender, layersWanted).catch((err) => console.warn(`dynacast: ${err.message}`));
});
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
      showError(L('shareFailed', { why: e.message || e.name }));
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
  ui.courseware.textContent = screenTrack ? L('unshare') : L('share');
  ui.clock.hidden = !live || !lessonStartedAt;
}

session.addEventListener('state', () => {
  if (session.state === 'connected' && !lessonStartedAt) lessonStartedAt = Date.now();
  if (session.state === 'connected') {
    // The lesson is on: follow the room and watch the classrooms.
    // In a cluster the lesson may have been placed on another node (a 307 the POST followed):
    // the room's state lives there.
    const node = lessonNode();
    if (events.sfu !== node) {
      events.sfu = node;
      events.restart();
    } else if (events.ended || !events.running) {
      events.restart();
    }
    startConsole();
  }
  if (session.state === 'ended' || session.state === 'error') resetStats();
  render();
});

ui.start.addEventListener('click', () => start());
ui.stop.addEventListener('click', () => endLesson());
ui.cameraSelect.addEventListener('change', (e) => useDevice('video', e.target.value));
ui.micSelect.addEventListener('change', (e) => useDevice('audio', e.target.value));
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
    ? `${top.s.frameWidth}×${top.s.frameHeight} · ${L('fps', { n: Math.round(top.s.framesPerSecond || 0) })}`
    : '—';
  ui.statLayers.textContent = layers.length
    ? layers
      .map(({ s, rate }) => `${s.rid || '-'} ${s.frameHeight ? `${s.frameHeight}p` : L('paused')} ${fmtRate(rate)}`)
      .join('，')
      + (top && top.s.qualityLimitationReason && top.s.qualityLimitationReason !== 'none'
        ? L('limited', { why: top.s.qualityLimitationReason }) : '')
    : '—';
  ui.statCourseware.textContent = cw && screenTrack && cw.s.frameWidth
    ? `${cw.s.frameWidth}×${cw.s.frameHeight} · ${fmtRate(cw.rate)}`
    : (screenTrack ? L('preparing') : L('notShared'));
}

// Room status (display only; field names are not relied upon).
let roomApiOk = true;
async function pollRoom() {
  if (!roomApiOk || session.state !== 'connected') return;
  try {
    const res = await fetch(`${lessonNode()}/api/rooms/${encodeURIComponent(room)}`, {
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
  return L('terminals', { n: viewers });
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

ui.roomName.textContent = room || L('unnamed');
L.apply();
document.title = L('pageTitle');
document.getElementById('lang-btn').addEventListener('click', () => {
  L.toggle();
  document.title = L('pageTitle');
  render();
  renderConsole();
});
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
  useDevice,
  get devices() {
    return {
      cameras: [...ui.cameraSelect.options].map((o) => o.textContent),
      mics: [...ui.micSelect.options].map((o) => o.textContent),
    };
  },
  get room() {
    return events.state ? { ...events.state, ended: events.ended } : null;
  },
  get tiles() {
    return tileState.map((t) => ({ sub: t.sub, frames: t.frames, live: t.live }));
  },
  get layersWanted() {
    return layersWanted;
  },
  get console() {
    return consoleSession ? consoleSession.state : 'off';
  },
  shareCourseware,
  stopCourseware,
};

if (!room || !token) {
  session.fail(L('badLink'));
} else if (query.get('autostart') === '1') {
  start();
}
