// A self-healing WHIP/WHEP session: one RTCPeerConnection at a time, replaced
// by a brand-new session (new POST) when the connection fails, or stays
// disconnected for longer than `disconnectGraceMs`, or cannot be set up.
//
// States: 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'ended' | 'error'
// ('error' = the server refused us for good, e.g. 401/403: no retry).

import { negotiate, deleteSession, isFatalStatus } from './whip.js';

const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 10000];

export class LessonSession extends EventTarget {
  /**
   * @param {object} o
   * @param {'whip'|'whep'} o.kind
   * @param {string} o.sfu base URL
   * @param {string} o.room
   * @param {string} o.token
   * @param {string} [o.query] extra query string for the POST (e.g. `region=r1`; see clusterQuery)
   * @param {(pc: RTCPeerConnection) => (void|Promise<void>)} o.setup adds the transceivers
   * @param {(pc: RTCPeerConnection) => (void|Promise<void>)} [o.afterConnect] called once negotiated
   * @param {number} [o.disconnectGraceMs]
   * @param {number} [o.connectTimeoutMs] time allowed from POST answer to 'connected'
   */
  constructor(o) {
    super();
    this.kind = o.kind;
    this.sfu = o.sfu;
    this.room = o.room;
    this.token = o.token;
    this.query = o.query || '';
    this.setup = o.setup;
    this.afterConnect = o.afterConnect || null;
    this.disconnectGraceMs = o.disconnectGraceMs ?? 3000;
    this.connectTimeoutMs = o.connectTimeoutMs ?? 15000;

    this.state = 'idle';
    this.pc = null;
    this.error = null; // { status, message } of the last failure
    this.resource = null; // { url, location, etag, node } (node: origin of the SFU that serves it)
    this.sessions = 0; // sessions that reached 'connected'
    this.attempts = 0;

    this._running = false;
    this._gen = 0; // bumps on each attempt; stale callbacks compare against it
    this._failures = 0; // consecutive failures, for the backoff
    this._retryTimer = null;
    this._graceTimer = null;
    this._connectTimer = null;
  }

  get running() {
    return this._running;
  }

  _setState(state, error) {
    if (error !== undefined) this.error = error;
    if (state === this.state && error === undefined) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent('state', { detail: { state, error: this.error } }));
  }

  _clearTimers() {
    clearTimeout(this._retryTimer);
    clearTimeout(this._graceTimer);
    clearTimeout(this._connectTimer);
    this._retryTimer = this._graceTimer = this._connectTimer = null;
  }

  /** Starts (or restarts after stop/error) the session. Resolves once the first attempt is under way. */
  start() {
    if (this._running) return;
    this._running = true;
    this._failures = 0;
    this.error = null;
    this._setState('connecting', null);
    this._connect();
  }

  /** Puts the session in the 'error' state without contacting the server (e.g. bad page link). */
  fail(message, status = 0) {
    this._running = false;
    this._gen++;
    this._clearTimers();
    this._setState('error', { status, message });
  }

  /**
   * Leaves: closes the PeerConnection and DELETEs the session resource (`forget`: the server
   * already ended it, e.g. the lesson is over, so there is nothing to delete).
   */
  async stop({ keepalive = false, finalState = 'ended', forget = false } = {}) {
    this._running = false;
    this._gen++;
    this._clearTimers();
    const pc = this.pc;
    const resource = forget ? null : this.resource;
    this.resource = null;
    this._setState(finalState);
    // DELETE first, then close: closing first lets the server see the transport drop and end
    // the session on its own, and the DELETE that follows would get a 404.
    if (resource && !keepalive) {
      await Promise.race([
        deleteSession(resource, this.token),
        new Promise((r) => setTimeout(r, 2000)),
      ]);
    } else if (resource) {
      deleteSession(resource, this.token, { keepalive }); // page going away: no time to wait
    }
    if (pc) pc.close();
  }

  _connect() {
    const gen = ++this._gen;
    this.attempts++;
    const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' });
    this.pc = pc;
    pc.addEventListener('connectionstatechange', () => this._onPcState(pc, gen));
    this.dispatchEvent(new CustomEvent('pc', { detail: { pc } }));

    (async () => {
      await this.setup(pc);
      const resource = await negotiate(pc, {
        sfu: this.sfu,
        kind: this.kind,
        room: this.room,
        token: this.token,
        query: this.query,
      });
      if (gen !== this._gen) {
        // Superseded (stop() or a newer attempt) while negotiating.
        deleteSession(resource, this.token);
        return;
      }
      this.resource = resource;
      this._connectTimer = setTimeout(() => {
        if (gen === this._gen && pc.connectionState !== 'connected') {
          this._fail(gen, { status: 0, message: '媒体连接超时' });
        }
      }, this.connectTimeoutMs);
      if (pc.connectionState === 'connected') this._onPcState(pc, gen);
      if (this.afterConnect) {
        try {
          await this.afterConnect(pc);
        } catch (e) {
          console.warn('afterConnect failed', e);
        }
      }
    })().catch((e) => {
      if (gen !== this._gen) return;
      const status = e && typeof e.status === 'number' ? e.status : 0;
      const message = (e && e.message) || String(e);
      if (isFatalStatus(status) || (e && e.retryable === false && status !== 0)) {
        // The server said no for good: stay down and show why.
        this._running = false;
        this._gen++;
        this._clearTimers();
        pc.close();
        this._setState('error', { status, message });
        return;
      }
      this._fail(gen, { status, message });
    });
  }

  _onPcState(pc, gen) {
    if (gen !== this._gen) return;
    const s = pc.connectionState;
    if (s === 'connected') {
      clearTimeout(this._graceTimer);
      clearTimeout(this._connectTimer);
      this._graceTimer = this._connectTimer = null;
      if (this.state !== 'connected') {
        this._failures = 0;
        this.sessions++;
        this._setState('connected', null);
      }
    } else if (s === 'disconnected') {
      if (!this._graceTimer) {
        this._graceTimer = setTimeout(() => {
          this._graceTimer = null;
          if (gen === this._gen && pc.connectionState !== 'connected') {
            this._fail(gen, { status: 0, message: '网络中断' });
          }
        }, this.disconnectGraceMs);
      }
    } else if (s === 'failed') {
      this._fail(gen, { status: 0, message: '连接失败' });
    }
  }

  /** Drops the current attempt and schedules a new session. */
  _fail(gen, error) {
    if (gen !== this._gen || !this._running) return;
    this._gen++;
    this._clearTimers();
    const pc = this.pc;
    const old = this.resource;
    this.resource = null;
    if (pc) pc.close();
    if (old) deleteSession(old, this.token); // best effort: the server may have dropped it already
    const delay = BACKOFF_MS[Math.min(this._failures, BACKOFF_MS.length - 1)];
    this._failures++;
    this._setState('reconnecting', error);
    this._retryTimer = setTimeout(() => {
      this._retryTimer = null;
      if (this._running) this._connect();
    }, delay);
  }
}
