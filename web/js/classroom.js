// Classroom (听课端) page: plays the lesson full screen over WHEP, with no
// clicks: teacher camera, courseware (when shared), teacher voice, and the
// classroom on stage (its picture inset, its voice). Publishes this
// classroom's own small camera and mic over WHIP so the teacher sees it, and
// raises its hand. Reconnects by itself; the SFU keeps feeding the same
// receive slots, so nothing is renegotiated.
//
// Query: room, token, sfu (optional base URL), publish=0 (watch only); in a cluster, region=R
// (play from a node of that region) and placed=1 (play from this node, whatever the load).
// A node may redirect the page's WHEP POST to another node; the page then also follows that
// node's room events for its relay state: while the node has lost its link to the lesson's
// origin node, the page says so instead of freezing silently.
// Exposes window.lesson = { pc, state, error, sessions, media, soundBlocked,
//   room, feed, relay, node, hand(raised) }.

import { readParams, preferCodec, clusterQuery } from './whip.js';
import { LessonSession } from './session.js';
import { RoomEvents, applyLayers } from './room_events.js';
import { makeT } from './i18n.js';
import { playoutState, nextPlayout } from './playout.js';

const t = makeT({
  'zh-CN': {
    title: '听课端 · 同步课堂', idle: '未连接', connecting: '连接中…', connected: '已连接',
    reconnecting: '重新连接中…', ended: '已结束', error: '无法进入课堂', timeout: '{what}超时',
    openCamera: '打开摄像头', noCapture: '此浏览器不能采集摄像头', noDevices: '无法打开摄像头和麦克风：{why}',
    handFailed: '举手失败：{why}', speaking: '正在发言', raised: '已举手（点击放下）', hand: '举手',
    onStageMuted: '已上台 · 老师已将你静音', onStage: '已上台 · 全体可以听到你', muted: '老师已将你静音',
    joining: '正在连接课堂…', networkDown: '网络中断，正在重新连接…', lessonOver: '课堂已结束',
    noCamera: '老师未开启摄像头', voiceOnly: '正在播放老师的声音', away: '老师暂时离开，请稍候…',
    waiting: '等待老师开始上课…', teacherEnded: '老师已下课', fps: '{n} 帧/秒', loss: '丢包 {n}%',
    unnamed: '（未指定）', badLink: '链接缺少 room 或 token 参数', room: '课堂', soundTitle: '点击开启声音',
    relayLost: '与主讲课堂服务器的连接中断，正在重新连接…', relayDetail: '本地服务器 {node} 与主讲服务器 {origin} 之间的网络中断',
    relayDown: '主讲服务器连接中断', node: '服务器 {host}',
    soundDetail: '浏览器阻止了自动播放，点一下屏幕任意位置即可听到老师的声音', switch: 'English',
  },
  en: {
    title: 'Classroom · Live lesson', idle: 'Not connected', connecting: 'Connecting…', connected: 'Connected',
    reconnecting: 'Reconnecting…', ended: 'Ended', error: 'Cannot join the lesson', timeout: '{what} timed out',
    openCamera: 'Opening the camera', noCapture: 'This browser cannot capture a camera',
    noDevices: 'Cannot open the camera and microphone: {why}', handFailed: 'Raising the hand failed: {why}',
    speaking: 'On stage', raised: 'Hand raised (tap to lower)', hand: 'Raise hand',
    onStageMuted: 'On stage · the teacher muted you', onStage: 'On stage · everyone hears you',
    muted: 'The teacher muted you', joining: 'Joining the lesson…', networkDown: 'Network lost, reconnecting…',
    lessonOver: 'The lesson has ended', noCamera: 'The teacher\'s camera is off', voiceOnly: 'Playing the teacher\'s voice',
    away: 'The teacher stepped away, please wait…', waiting: 'Waiting for the teacher to start…',
    teacherEnded: 'The teacher ended the lesson', fps: '{n} fps', loss: 'loss {n}%', unnamed: '(none)',
    badLink: 'The link lacks the room or token parameter', room: 'Room', soundTitle: 'Tap to turn on sound',
    relayLost: 'Connection to the lesson server lost — reconnecting…',
    relayDetail: 'The link between this server ({node}) and the lesson\'s server ({origin}) is down',
    relayDown: 'lesson server link lost', node: 'server {host}',
    soundDetail: 'The browser blocked autoplay: tap anywhere to hear the teacher', switch: '中文',
  },
});

// A slot counts as live while its decoder made progress within this window.
const LIVE_WINDOW_MS = 2500;

const $ = (id) => document.getElementById(id);
const { room, token, sfu, query } = readParams();
const publishFeed = query.get('publish') !== '0';
// This classroom's feed: small, two layers, so the teacher's tiles take the low one.
const FEED_VIDEO = { width: { ideal: 640 }, height: { ideal: 360 }, frameRate: { ideal: 15 } };
const FEED_LAYERS = [
  { rid: 'l', scaleResolutionDownBy: 2, maxBitrate: 150_000 },
  { rid: 'h', maxBitrate: 600_000 },
];
const MIC = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };

const ui = {
  teacherVideo: $('teacher-video'),
  coursewareVideo: $('courseware-video'),
  audio: $('teacher-audio'),
  stageAudio: $('stage-audio'),
  stageVideo: $('stage-video'),
  stageSlot: $('stage-slot'),
  stageName: $('stage-name'),
  selfView: $('self-view'),
  selfVideo: $('self-video'),
  selfBadge: $('self-badge'),
  hand: $('hand-btn'),
  handText: $('hand-text'),
  notice: $('notice'),
  noticeTitle: $('notice-title'),
  noticeDetail: $('notice-detail'),
  sound: $('sound-overlay'),
  status: $('status-text'),
  roomName: $('room-name'),
  media: $('media-text'),
  node: $('node-text'),
  nodeSep: $('node-sep'),
};

const STATE_TEXT = {
  get idle() { return t('idle'); },
  get connecting() { return t('connecting'); },
  get connected() { return t('connected'); },
  get reconnecting() { return t('reconnecting'); },
  get ended() { return t('ended'); },
  get error() { return t('error'); },
};

const pageLoaded = document.readyState === 'complete'
  ? Promise.resolve()
  : new Promise((resolve) => window.addEventListener('load', resolve, { once: true }));

let soundBlocked = false;
let hadMedia = false; // some media played during this page's life

// Per-slot activity, reset for each new PeerConnection.
const media = {
  pc: null,
  camera: freshSlot(),
  courseware: freshSlot(),
  audio: freshSlot(),
  stageAudio: freshSlot(),
  stageVideo: freshSlot(),
  kbps: 0,
  loss: 0,
  // Video jitter buffer sized for the link (playout.js; it keeps the last round trip measured);
  // `applied` is what the receivers have.
  playout: playoutState(),
  applied: null,
};

function freshSlot() {
  return { frames: 0, bytes: 0, samples: 0, lastProgress: 0, live: false, width: 0, height: 0, fps: 0 };
}

const session = new LessonSession({
  kind: 'whep',
  sfu,
  room,
  token,
  query: clusterQuery(query, 'whep'),
  setup: setupPeerConnection,
});

function setupPeerConnection(pc) {
  // Fixed order, the SFU fills m-lines by position: teacher voice, teacher camera, courseware,
  // then the on-stage classroom's voice and camera.
  const audio = pc.addTransceiver('audio', { direction: 'recvonly' });
  const camera = pc.addTransceiver('video', { direction: 'recvonly' });
  const courseware = pc.addTransceiver('video', { direction: 'recvonly' });
  const stageAudio = pc.addTransceiver('audio', { direction: 'recvonly' });
  const stageVideo = pc.addTransceiver('video', { direction: 'recvonly' });
  preferCodec(camera, 'video/VP8');
  preferCodec(courseware, 'video/VP8');
  preferCodec(stageVideo, 'video/VP8');

  // Media elements fed before 'load' would hold the page's load event until media flows.
  pageLoaded.then(() => {
    attach(ui.audio, audio.receiver.track);
    attach(ui.teacherVideo, camera.receiver.track);
    attach(ui.coursewareVideo, courseware.receiver.track);
    attach(ui.stageAudio, stageAudio.receiver.track);
    attach(ui.stageVideo, stageVideo.receiver.track);
    playAudio();
  });

  media.pc = pc;
  media.camera = freshSlot();
  media.courseware = freshSlot();
  media.audio = freshSlot();
  media.stageAudio = freshSlot();
  media.stageVideo = freshSlot();
  media.applied = null; // new receivers start with the browser's default buffer
}

function attach(el, track) {
  el.srcObject = new MediaStream([track]);
  if (el.muted) el.play().catch(() => {}); // muted video: autoplay is always allowed
}

function playAudio() {
  ui.stageAudio.play().catch(() => {}); // same autoplay fate as the teacher's voice
  const p = ui.audio.play();
  if (!p) return;
  p.then(
    () => {
      soundBlocked = false;
      ui.sound.hidden = true;
    },
    (e) => {
      if (e && e.name === 'NotAllowedError') {
        soundBlocked = true;
        ui.sound.hidden = false;
      }
      // AbortError: a newer srcObject replaced this one; the next play() decides.
    },
  );
}

function unlockSound() {
  if (!soundBlocked) return;
  playAudio();
  enterFullscreen();
}

function enterFullscreen() {
  const el = document.documentElement;
  if (!document.fullscreenElement && el.requestFullscreen) el.requestFullscreen().catch(() => {});
}

// ------------------------------------------------------------- own feed

let feed = null; // LessonSession publishing this classroom's camera and mic
let feedStream = null;
let feedError = null;

function withTimeout(p, ms, what) {
  return Promise.race([p, new Promise((_, reject) => setTimeout(() => reject(new Error(t('timeout', { what }))), ms))]);
}

async function startFeed() {
  const md = navigator.mediaDevices;
  if (!md || !md.getUserMedia) {
    feedError = t('noCapture');
    return;
  }
  try {
    feedStream = await withTimeout(md.getUserMedia({ audio: MIC, video: FEED_VIDEO }), 10_000, t('openCamera'));
  } catch (e) {
    // No camera or no permission: the classroom still watches and can raise its hand.
    feedError = t('noDevices', { why: e.message || e.name });
    console.warn(feedError);
    return;
  }
  ui.selfVideo.srcObject = feedStream;
  ui.selfVideo.play().catch(() => {});
  ui.selfView.hidden = false;
  feed = new LessonSession({
    kind: 'whip',
    sfu,
    room,
    token,
    query: clusterQuery(query, 'whip'),
    setup: (pc) => {
      const streams = [feedStream];
      const a = feedStream.getAudioTracks()[0];
      const v = feedStream.getVideoTracks()[0];
      pc.addTransceiver(a || 'audio', { direction: 'sendonly', streams });
      const cam = pc.addTransceiver(v || 'video', {
        direction: 'sendonly',
        streams,
        sendEncodings: FEED_LAYERS.map((e) => ({ ...e })),
      });
      preferCodec(cam, 'video/VP8');
    },
  });
  feed.start();
}

// ------------------------------------------------------------- room events

const events = new RoomEvents({ sfu, room, token });
events.addEventListener('change', () => render());
// Dynacast: the teacher's tiles want the small layer; send the big one only when on stage.
events.addEventListener('layers', (e) => {
  if (e.detail.track !== 'class_video' || !feed?.pc) return;
  applyLayers(feed.pc.getTransceivers()[1]?.sender, e.detail.active).catch((err) => console.warn(`dynacast: ${err.message}`));
});
events.addEventListener('ended', async () => {
  render();
  // The server closed our sessions with the lesson: nothing to DELETE.
  if (feed) await feed.stop({ forget: true });
  if (feedStream) feedStream.getTracks().forEach((k) => k.stop());
  ui.selfView.hidden = true;
  if (nodeEvents) nodeEvents.stop();
  await session.stop({ forget: true });
  render();
});

// ------------------------------------------------------------- cluster relay

// The node that serves this page's lesson (the WHEP session's node) and what it last said about
// its relay from the lesson's origin. Its room events are `events` when it is the page's SFU,
// else a second socket opened on it (only its relay events are used).
const sfuOrigin = new URL(sfu).origin;
let mediaNode = sfuOrigin;
let relay = null; // { origin, connected, at }
let nodeEvents = null;

function onRelay(source) {
  return (e) => {
    if ((source === events) !== (mediaNode === sfuOrigin)) return; // another node's link
    relay = { ...e.detail, at: Date.now() };
    if (!relay.connected) console.warn(`relay to the lesson's origin ${relay.origin} lost`);
    render();
  };
}
events.addEventListener('relay', onRelay(events));

/** Follows the relay state of the node the WHEP session landed on (after a redirect, another one). */
function followMediaNode() {
  const node = session.resource?.node || sfuOrigin;
  if (node === mediaNode) return;
  mediaNode = node;
  relay = null;
  if (nodeEvents) nodeEvents.stop();
  nodeEvents = null;
  if (node === sfuOrigin) {
    relay = events.relay ? { ...events.relay, at: Date.now() } : null;
    return;
  }
  const ne = new RoomEvents({ sfu: node, room, token });
  ne.addEventListener('relay', onRelay(ne));
  nodeEvents = ne;
  ne.start();
}

/** Raise (true) or lower (false) this classroom's hand; toggles without an argument. */
async function hand(raised) {
  const me = events.you?.sub;
  const up = raised ?? !(events.state && events.state.hands.includes(me));
  const r = await events.command({ type: 'hand', raised: up });
  if (r.type !== 'ok') console.warn(t('handFailed', { why: r.error }));
  return r;
}

ui.hand.addEventListener('click', (e) => {
  e.stopPropagation();
  hand();
});

// ------------------------------------------------------------ monitoring

async function sampleSlot(receiver, slot, now) {
  const report = await receiver.getStats();
  let frames = 0;
  let bytes = 0;
  let samples = 0;
  let lost = 0;
  let received = 0;
  let best = null;
  let rttMs = null;
  report.forEach((s) => {
    if (s.type === 'candidate-pair' && s.nominated && Number.isFinite(s.currentRoundTripTime)) {
      rttMs = s.currentRoundTripTime * 1000;
    }
    if (s.type !== 'inbound-rtp') return;
    frames += s.framesDecoded || 0;
    bytes += s.bytesReceived || 0;
    samples += s.totalSamplesReceived || 0;
    lost += s.packetsLost || 0;
    received += s.packetsReceived || 0;
    if (!best || (s.framesDecoded || 0) + (s.bytesReceived || 0) > (best.framesDecoded || 0) + (best.bytesReceived || 0)) best = s;
  });
  const progressed = receiver.track.kind === 'video' ? frames > slot.frames : bytes > slot.bytes;
  if (progressed) slot.lastProgress = now;
  const deltaBytes = Math.max(0, bytes - slot.bytes);
  slot.frames = frames;
  slot.bytes = bytes;
  slot.samples = samples;
  slot.live = slot.lastProgress > 0 && now - slot.lastProgress < LIVE_WINDOW_MS;
  slot.width = best?.frameWidth || 0;
  slot.height = best?.frameHeight || 0;
  slot.fps = best?.framesPerSecond || 0;
  return { deltaBytes, lost, received, rttMs };
}

let lastSample = { ts: 0, lost: 0, received: 0 };

async function monitor() {
  const pc = session.pc;
  if (!pc || pc !== media.pc || pc.connectionState === 'closed') return;
  const trs = pc.getTransceivers();
  if (trs.length < 5) return;
  const now = performance.now();
  const [a, c, w] = await Promise.all([
    sampleSlot(trs[0].receiver, media.audio, now),
    sampleSlot(trs[1].receiver, media.camera, now),
    sampleSlot(trs[2].receiver, media.courseware, now),
    sampleSlot(trs[3].receiver, media.stageAudio, now),
    sampleSlot(trs[4].receiver, media.stageVideo, now),
  ]);
  if (pc !== media.pc) return;
  const bytes = a.deltaBytes + c.deltaBytes + w.deltaBytes;
  const lost = a.lost + c.lost + w.lost;
  const received = a.received + c.received + w.received;
  if (lastSample.ts && now > lastSample.ts) {
    media.kbps = (bytes * 8) / (now - lastSample.ts);
    const dl = lost - lastSample.lost;
    const dr = received - lastSample.received;
    media.loss = dl > 0 && dl + dr > 0 ? dl / (dl + dr) : 0;
  }
  lastSample = { ts: now, lost, received };
  sizePlayout(trs, now, a.rttMs ?? c.rttMs);
  if (media.camera.live || media.courseware.live || media.audio.live) hadMedia = true;
  // The audio element may have been paused by the browser (e.g. device change): nudge it.
  if (!soundBlocked && ui.audio.paused && media.audio.live) playAudio();
  render();
}

/** Gives the video receivers a jitter buffer that rides out retransmissions on a lossy link. */
function sizePlayout(trs, now, rttMs) {
  media.playout = nextPlayout(media.playout, { now, loss: media.loss, rttMs });
  const target = media.playout.target;
  if (target === media.applied) return;
  for (const i of [1, 2, 4]) {
    const r = trs[i].receiver;
    if ('jitterBufferTarget' in r) r.jitterBufferTarget = target;
  }
  media.applied = target;
}

// ------------------------------------------------------------------ UI

function renderRoom() {
  const st = events.state;
  const me = events.you?.sub;
  const live = st && !events.ended;
  const onStage = !!(st && st.stage.includes(me));
  const raised = !!(st && st.hands.includes(me));
  const muted = !!(st && st.muted.includes(me));
  ui.hand.hidden = !live || !publishFeed;
  ui.hand.classList.toggle('raised', raised);
  ui.hand.disabled = onStage;
  ui.handText.textContent = onStage ? t('speaking') : raised ? t('raised') : t('hand');
  const guest = st ? st.stage.find((x) => x !== me) : null;
  ui.stageSlot.hidden = !(guest && media.stageVideo.live);
  ui.stageName.textContent = guest ? events.nameOf(guest) : '';
  let badge = '';
  if (onStage) badge = muted ? t('onStageMuted') : t('onStage');
  else if (muted) badge = t('muted');
  ui.selfBadge.textContent = badge;
  ui.selfBadge.hidden = !badge;
}

function render() {
  renderRoom();
  const s = session.state;
  document.body.dataset.state = s;
  let status = STATE_TEXT[s] || s;
  if (s === 'reconnecting' && session.error?.message) status += `（${session.error.message}）`;
  ui.status.textContent = status;

  const connected = s === 'connected';
  const cam = connected && media.camera.live;
  const cw = connected && media.courseware.live;
  const voice = connected && media.audio.live;
  document.body.classList.toggle('has-camera', cam);
  document.body.classList.toggle('has-courseware', cw);

  // Placed on another node by the cluster: say which (support asks).
  const elsewhere = mediaNode !== sfuOrigin;
  ui.node.hidden = !elsewhere;
  ui.nodeSep.hidden = !elsewhere;
  ui.node.textContent = elsewhere ? t('node', { host: new URL(mediaNode).host }) : '';

  const relayLost = connected && relay && !relay.connected;
  document.body.classList.toggle('relay-lost', !!relayLost);
  if (relayLost) ui.status.textContent = `${status} · ${t('relayDown')}`;

  let title = '';
  let detail = '';
  if (s === 'error') {
    title = t('error');
    detail = session.error?.message || '';
  } else if (s === 'connecting' || s === 'idle') {
    title = t('joining');
  } else if (s === 'reconnecting') {
    title = t('networkDown');
    // Only a server's answer adds anything to the title (e.g. HTTP 503).
    detail = session.error?.status ? session.error.message : '';
  } else if (s === 'ended') {
    title = t('lessonOver');
  } else if (relayLost) {
    // Before "the teacher stepped away": the teacher is there, the link to its node is not.
    title = t('relayLost');
    detail = t('relayDetail', { node: new URL(mediaNode).host, origin: relay.origin });
  } else if (!cam && !cw) {
    if (voice) {
      title = t('noCamera');
      detail = t('voiceOnly');
    } else {
      title = hadMedia ? t('away') : t('waiting');
    }
  }
  if (events.ended) {
    title = t('lessonOver');
    detail = t('teacherEnded');
  }
  ui.notice.hidden = !title;
  ui.noticeTitle.textContent = title;
  ui.noticeDetail.textContent = detail;
  ui.noticeDetail.hidden = !detail;

  const main = cw ? media.courseware : media.camera;
  if (connected && (cam || cw)) {
    const parts = [];
    if (main.width) parts.push(`${main.width}×${main.height}`);
    if (main.fps) parts.push(t('fps', { n: Math.round(main.fps) }));
    parts.push(media.kbps >= 1000 ? `${(media.kbps / 1000).toFixed(2)} Mbit/s` : `${Math.round(media.kbps)} kbit/s`);
    parts.push(t('loss', { n: (media.loss * 100).toFixed(1) }));
    ui.media.textContent = parts.join(' · ');
  } else {
    ui.media.textContent = '—';
  }
}

session.addEventListener('state', () => {
  if (session.state !== 'connected') lastSample = { ts: 0, lost: 0, received: 0 };
  if (session.state === 'connected') followMediaNode();
  render();
});

ui.sound.addEventListener('click', (e) => {
  e.stopPropagation();
  unlockSound();
});
document.addEventListener('click', () => unlockSound());
document.addEventListener('keydown', () => unlockSound());
document.addEventListener('dblclick', () => {
  if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
  else enterFullscreen();
});
window.addEventListener('pagehide', () => {
  if (feed && feed.running) feed.stop({ keepalive: true });
  if (session.running) session.stop({ keepalive: true });
});

setInterval(() => {
  monitor().catch(() => {});
}, 1000);

// ---------------------------------------------------------------- boot

ui.roomName.textContent = room || t('unnamed');
t.apply();
document.title = t('title');
document.getElementById('lang-btn').addEventListener('click', (e) => {
  e.stopPropagation();
  t.toggle();
  document.title = t('title');
  render();
});

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
  get media() {
    const { camera, courseware, audio, stageAudio, stageVideo, kbps, loss } = media;
    return {
      camera: { ...camera },
      courseware: { ...courseware },
      audio: { ...audio },
      stageAudio: { ...stageAudio },
      stageVideo: { ...stageVideo },
      kbps,
      loss,
      rttMs: media.playout.rtt,
      /** Video jitter buffer target in ms (null: the browser's default). */
      playoutTargetMs: media.applied,
    };
  },
  get room() {
    return events.state ? { ...events.state, ended: events.ended, you: events.you } : null;
  },
  get feed() {
    return { state: feed ? feed.state : 'off', error: feed ? feed.error : feedError, sessions: feed ? feed.sessions : 0 };
  },
  /** The relay state of the node serving the lesson: { origin, connected, at } or null (alone). */
  get relay() {
    return relay ? { ...relay } : null;
  },
  /** Origin (scheme://host:port) of the SFU node this page plays the lesson from. */
  get node() {
    return session.resource?.node || null;
  },
  /** The WHEP session's resource URL (for PATCH/DELETE), on that node. */
  get sessionUrl() {
    return session.resource?.location || null;
  },
  hand,
  get soundBlocked() {
    return soundBlocked;
  },
};

if (!room || !token) {
  session.fail(t('badLink'));
} else {
  session.start();
  events.start();
  if (publishFeed) startFeed();
}
render();
