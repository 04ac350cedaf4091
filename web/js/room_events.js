// The room's events (hands, stage, mutes, tiles, attendance...) over the SFU's WebSocket
// `GET /rooms/{room}/events?token=T`, kept as one state object; reconnects by itself.
// Commands go over the same socket; `command()` resolves with the server's answer.
//
// Events: 'change' (detail: the event, or {type:'state'}), 'ended', 'open', 'close',
// 'layers' (dynacast: which simulcast layers this participant's track should send),
// 'relay' (in a cluster, this node's link to the lesson's origin node: {origin, connected}).
// Relay events are this node's own: on the node that relays the lesson to this page.

const BACKOFF_MS = [500, 1000, 2000, 4000, 8000];

export class RoomEvents extends EventTarget {
  constructor({ sfu, room, token }) {
    super();
    this.sfu = sfu;
    this.room = room;
    this.token = token;
    this.state = null; // the server's snapshot, updated by events
    this.you = null; // { sub, role, name }
    this.quality = new Map(); // sub -> { estimate_bps, loss, rtt_ms }
    this.relay = null; // { origin, connected }: the last relay event of this node
    this.connected = false;
    this.ended = false;
    this._ws = null;
    this._pending = []; // [{ name, resolve }]
    this._failures = 0;
    this._stopped = false;
  }

  url() {
    const base = this.sfu || window.location.origin;
    const u = new URL(`/rooms/${encodeURIComponent(this.room)}/events`, base);
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    u.searchParams.set('token', this.token);
    return u.toString();
  }

  get running() {
    return !this._stopped && !!this._ws;
  }

  start() {
    this._stopped = false;
    this._open();
  }

  /** Follows the room afresh (a new lesson after the last one ended). */
  restart() {
    this.stop();
    this.ended = false;
    this.state = null;
    this.quality.clear();
    this.relay = null;
    this.start();
  }

  stop() {
    this._stopped = true;
    clearTimeout(this._retry);
    if (this._ws) this._ws.close();
    this._ws = null;
  }

  _open() {
    let ws;
    try {
      ws = new WebSocket(this.url());
    } catch {
      this._scheduleRetry();
      return;
    }
    this._ws = ws;
    ws.addEventListener('open', () => {
      this.connected = true;
      this._failures = 0;
      this.dispatchEvent(new CustomEvent('open'));
    });
    ws.addEventListener('message', (m) => {
      if (this._ws !== ws) return;
      let ev;
      try {
        ev = JSON.parse(m.data);
      } catch {
        return;
      }
      this._apply(ev);
    });
    ws.addEventListener('close', () => {
      if (this._ws !== ws) return; // replaced by restart()
      this.connected = false;
      for (const p of this._pending.splice(0)) p.resolve({ type: 'error', status: 0, error: '连接已断开' });
      this.dispatchEvent(new CustomEvent('close'));
      if (!this._stopped && !this.ended) this._scheduleRetry();
    });
    ws.addEventListener('error', () => {
      // 'close' follows and schedules the retry.
    });
  }

  _scheduleRetry() {
    const delay = BACKOFF_MS[Math.min(this._failures, BACKOFF_MS.length - 1)];
    this._failures++;
    clearTimeout(this._retry);
    this._retry = setTimeout(() => this._open(), delay);
  }

  _apply(ev) {
    const s = this.state;
    switch (ev.type) {
      case 'state':
        this.state = ev;
        if (ev.you) this.you = ev.you;
        if (ev.lesson === 'ended') this._end();
        break;
      case 'ok':
      case 'error': {
        const i = this._pending.findIndex((p) => p.name === ev.command);
        const p = i >= 0 ? this._pending.splice(i, 1)[0] : this._pending.shift();
        if (p) p.resolve(ev);
        return;
      }
      case 'join':
        if (s) {
          const old = s.participants.find((p) => p.sub === ev.sub);
          if (old) Object.assign(old, { present: true, name: ev.name, role: ev.role });
          else s.participants.push({ sub: ev.sub, name: ev.name, role: ev.role, present: true, publishing: false });
        }
        break;
      case 'leave':
        if (s) {
          const p = s.participants.find((x) => x.sub === ev.sub);
          if (p) Object.assign(p, { present: false, publishing: false });
        }
        break;
      case 'hand':
        if (s) s.hands = ev.queue;
        break;
      case 'stage':
        if (s) s.stage = ev.stage;
        break;
      case 'mute':
        if (s) s.muted = ev.muted ? [...new Set([...s.muted, ev.sub])] : s.muted.filter((x) => x !== ev.sub);
        break;
      case 'pin':
        if (s) s.pinned = ev.pinned ? [...s.pinned, ev.sub] : s.pinned.filter((x) => x !== ev.sub);
        break;
      case 'tiles':
        if (s) s.tiles = ev.order;
        break;
      case 'speaker':
        if (s) s.speaker = ev.sub;
        break;
      case 'removed':
        if (s) {
          s.hands = s.hands.filter((x) => x !== ev.sub);
          s.stage = s.stage.filter((x) => x !== ev.sub);
        }
        break;
      case 'lesson':
        if (s) s.lesson = ev.state;
        if (ev.state === 'ended') this._end();
        break;
      case 'layers':
        // Dynacast: this participant's publisher should send only these simulcast layers.
        this.dispatchEvent(new CustomEvent('layers', { detail: ev }));
        return;
      case 'relay':
        this.relay = { origin: ev.origin, connected: !!ev.connected };
        this.dispatchEvent(new CustomEvent('relay', { detail: this.relay }));
        return;
      case 'quality':
        for (const q of ev.links || []) this.quality.set(q.sub, q);
        break;
      default:
        return;
    }
    this.dispatchEvent(new CustomEvent('change', { detail: ev }));
  }

  _end() {
    if (this.ended) return;
    this.ended = true;
    this.dispatchEvent(new CustomEvent('ended'));
  }

  /** Sends a command; resolves with {type:'ok'} or {type:'error', status, error}. */
  command(cmd) {
    if (!this._ws || this._ws.readyState !== WebSocket.OPEN) return this.post(cmd);
    return new Promise((resolve) => {
      this._pending.push({ name: cmd.type, resolve });
      this._ws.send(JSON.stringify(cmd));
    });
  }

  /** The same command over REST (used while the socket is down). */
  async post(cmd) {
    try {
      const res = await fetch(`${this.sfu}/api/rooms/${encodeURIComponent(this.room)}/commands`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${this.token}`, 'Content-Type': 'application/json' },
        body: JSON.stringify(cmd),
      });
      if (res.ok) return { type: 'ok', command: cmd.type };
      const body = await res.json().catch(() => ({}));
      return { type: 'error', command: cmd.type, status: res.status, error: body.error || res.statusText };
    } catch (e) {
      return { type: 'error', command: cmd.type, status: 0, error: e.message || String(e) };
    }
  }

  nameOf(sub) {
    const p = this.state?.participants.find((x) => x.sub === sub);
    return (p && p.name) || sub;
  }
}

/** Turns a sender's simulcast encodings on or off by rid (dynacast); resolves to what changed. */
export async function applyLayers(sender, active) {
  if (!sender) return false;
  const p = sender.getParameters();
  if (!p.encodings || p.encodings.length < 2) return false;
  let changed = false;
  for (const e of p.encodings) {
    const on = active.includes(e.rid);
    if (e.active !== on) {
      e.active = on;
      changed = true;
    }
  }
  if (changed) await sender.setParameters(p);
  return changed;
}
