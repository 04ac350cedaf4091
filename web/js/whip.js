// WHIP (RFC 9725) / WHEP helper shared by the teacher and classroom pages.
//
// One WHIP/WHEP session = one RTCPeerConnection, negotiated with a single
// HTTP POST (SDP offer -> 201 + SDP answer + Location). There is no trickle
// ICE by default: we wait for ICE gathering to finish (or a short timeout)
// and send every candidate in the offer; the SFU is ICE-lite.

/** Error raised for a failed WHIP/WHEP exchange. `status` is the HTTP status (0 = network error). */
export class WhipError extends Error {
  constructor(message, { status = 0, retryable = true, cause } = {}) {
    super(message, cause ? { cause } : undefined);
    this.name = 'WhipError';
    this.status = status;
    this.retryable = retryable;
  }
}

/** HTTP statuses after which retrying with the same token cannot help. */
export function isFatalStatus(status) {
  return status === 401 || status === 403;
}

/**
 * Query parameters shared by the pages: room, token, sfu (base URL, default
 * same origin, no trailing slash) and the raw URLSearchParams.
 */
export function readParams(search = window.location.search) {
  const q = new URLSearchParams(search);
  const sfu = (q.get('sfu') || window.location.origin).replace(/\/+$/, '');
  return { room: q.get('room') || '', token: q.get('token') || '', sfu, query: q };
}

/** Resolves when ICE gathering is complete, or after `timeoutMs` (whatever was gathered is used). */
export function waitForIceGathering(pc, timeoutMs = 2000) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve(true);
  return new Promise((resolve) => {
    let timer;
    const finish = (complete) => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', onState);
      pc.removeEventListener('icecandidate', onCandidate);
      resolve(complete);
    };
    const onState = () => {
      if (pc.iceGatheringState === 'complete') finish(true);
    };
    const onCandidate = (e) => {
      if (!e.candidate) finish(true);
    };
    timer = setTimeout(() => finish(false), timeoutMs);
    pc.addEventListener('icegatheringstatechange', onState);
    pc.addEventListener('icecandidate', onCandidate);
  });
}

/** Reorders a transceiver's codec preferences so that `mimeType` (e.g. 'video/VP8') comes first. */
export function preferCodec(transceiver, mimeType) {
  if (typeof transceiver.setCodecPreferences !== 'function') return false;
  const kind = mimeType.split('/')[0];
  const caps = (window.RTCRtpReceiver && RTCRtpReceiver.getCapabilities)
    ? RTCRtpReceiver.getCapabilities(kind)
    : null;
  if (!caps || !caps.codecs) return false;
  const want = mimeType.toLowerCase();
  const first = caps.codecs.filter((c) => c.mimeType.toLowerCase() === want);
  if (first.length === 0) return false;
  const rest = caps.codecs.filter((c) => c.mimeType.toLowerCase() !== want);
  try {
    transceiver.setCodecPreferences([...first, ...rest]);
    return true;
  } catch (e) {
    console.warn('setCodecPreferences failed', e);
    return false;
  }
}

/** Human-readable (zh-CN) message for an HTTP error response; reads {"error": "..."} bodies. */
async function errorFromResponse(res) {
  let detail = '';
  try {
    const text = await res.text();
    if (text) {
      try {
        const json = JSON.parse(text);
        detail = typeof json.error === 'string' ? json.error : text;
      } catch {
        detail = text;
      }
    }
  } catch {
    // body unreadable: keep the status line only
  }
  detail = detail.trim().slice(0, 300);
  const known = {
    400: '请求无效',
    401: '令牌无效或已过期',
    403: '没有进入该课堂的权限',
    404: '课堂不存在',
    409: '课堂已有主讲老师',
    429: '请求过于频繁',
    503: '服务器繁忙',
  };
  const head = known[res.status] || `服务器错误`;
  const message = `${head}（HTTP ${res.status}${detail ? `：${detail}` : ''}）`;
  return new WhipError(message, { status: res.status, retryable: !isFatalStatus(res.status) });
}

/**
 * The query a page passes on to its WHIP/WHEP POST: `region` (a cluster places the session on a
 * node of that region) and, for WHEP only, `placed=1` (stay on the node the page points at).
 * The classroom's own feed (WHIP) always goes where the cluster puts it: the lesson's origin.
 */
export function clusterQuery(query, kind) {
  const out = new URLSearchParams();
  const region = query.get('region');
  if (region) out.set('region', region);
  if (kind === 'whep' && query.get('placed') === '1') out.set('placed', '1');
  return out.toString();
}

/**
 * Negotiates `pc` with the SFU.
 * kind: 'whip' (publish) or 'whep' (play); `query`: extra query string for the POST (no '?').
 * In a cluster the node may answer 307 to another node: fetch follows it (the offer is sent
 * again; Authorization is dropped across origins, so the node carries the token in
 * `access_token`), and the session lives on the node that answered.
 * Returns { url, location, etag, node }: url is the URL that answered, location the absolute URL
 * of the session resource (resolved against url, not the first node), node url's origin.
 * Throws WhipError.
 */
export async function negotiate(pc, {
  sfu, kind, room, token, query = '', iceTimeoutMs = 2000, signal,
} = {}) {
  if (kind !== 'whip' && kind !== 'whep') throw new Error(`unknown kind ${kind}`);
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  await waitForIceGathering(pc, iceTimeoutMs);

  const first = `${sfu}/${kind}/${encodeURIComponent(room)}${query ? `?${query}` : ''}`;
  let res;
  try {
    res = await fetch(first, {
      method: 'POST',
      redirect: 'follow',
      headers: {
        'Content-Type': 'application/sdp',
        Authorization: `Bearer ${token}`,
      },
      body: pc.localDescription.sdp,
      signal,
      cache: 'no-store',
    });
  } catch (e) {
    throw new WhipError(`无法连接服务器：${e.message || e}`, { status: 0, retryable: true, cause: e });
  }
  if (res.status !== 201 && res.status !== 200) throw await errorFromResponse(res);

  const answer = await res.text();
  const url = res.url || first;
  const loc = res.headers.get('Location');
  const location = loc ? new URL(loc, url).href : null;
  const etag = res.headers.get('ETag');
  if (!answer.startsWith('v=')) {
    throw new WhipError('服务器返回的 SDP 应答无效', { status: res.status, retryable: true });
  }
  if (pc.signalingState === 'closed') {
    // Stopped while the POST was in flight: give the session back.
    deleteSession({ location }, token);
    throw new WhipError('连接已关闭', { status: 0, retryable: false });
  }
  await pc.setRemoteDescription({ type: 'answer', sdp: answer });
  return { url, location, etag, node: new URL(url).origin };
}

/**
 * Ends a WHIP/WHEP session (DELETE on its Location). Never throws; resolves to true on 2xx.
 * `keepalive` lets the request outlive the page (pagehide).
 */
export async function deleteSession(session, token, { keepalive = false } = {}) {
  if (!session || !session.location) return false;
  try {
    const res = await fetch(session.location, {
      method: 'DELETE',
      headers: { Authorization: `Bearer ${token}` },
      keepalive,
      cache: 'no-store',
    });
    return res.ok;
  } catch {
    return false;
  }
}
