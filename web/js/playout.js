// How long the classroom page lets its video jitter buffer wait, sized for the link.
//
// On a lossy link every lost video packet is repaired by retransmission (NACK then RTX), which
// takes one round trip; when the NACK or the retransmission is itself lost, the repair takes a
// second round trip. Chromium's own video jitter buffer covers about one round trip, so each
// twice-lost packet stalls the picture for a frame interval plus two round trips: a visible
// freeze every few seconds at 2 % loss. A classroom would rather watch the lesson a few hundred
// milliseconds later than watch it stutter, so once loss is seen the page asks for a buffer that
// covers two repairs and a margin, and lets it go again after a quiet minute. Pure: the page
// feeds it one-second samples and applies the target to its video receivers (jitterBufferTarget).

/** Loss share in one sample that counts as a lossy link. */
export const LOSSY_SHARE = 0.005;
/** How long the larger buffer stays after the last lossy sample. */
export const HOLD_MS = 60_000;
/** Round trip assumed before the page has measured one. */
export const DEFAULT_RTT_MS = 200;
/** Added to the two round trips: a frame interval, the receiver's NACK timer (20 ms), and on a
 *  slow link the rest of a keyframe queued ahead of the repair (20 kB take 160 ms at 1 Mbit/s).
 *  With 100 ms a brief hiccup anywhere on the path still froze a 1 Mbit/s classroom now and then. */
export const MARGIN_MS = 200;
/** Bounds of the target: below the floor Chromium's own estimate is as good; above the cap a
 *  satellite link's double repair costs more delay than a rare freeze. */
export const MIN_TARGET_MS = 150;
export const MAX_TARGET_MS = 1000;
/** Each change moves the playout point, so the target rises only by more than `RISE_MS` and
 *  falls only by more than `FALL_MS`: round-trip noise leaves it where it is. */
export const RISE_MS = 25;
export const FALL_MS = 100;

/** A fresh state: no target (the browser's default buffer). */
export function playoutState() {
  return { target: null, lossyAt: null, rtt: null };
}

/** The buffer that covers two retransmission rounds at `rttMs`, plus the margin. */
export function targetForRtt(rttMs) {
  const rtt = Number.isFinite(rttMs) && rttMs > 0 ? rttMs : DEFAULT_RTT_MS;
  return Math.round(Math.min(MAX_TARGET_MS, Math.max(MIN_TARGET_MS, 2 * rtt + MARGIN_MS)));
}

/**
 * One sample: `loss` is the share of packets lost since the previous sample (0..1), `rttMs` the
 * current round trip (null when unknown), `now` in ms. Returns the new state; `state.target` is
 * the jitter buffer target in ms, or null for the browser's default.
 */
export function nextPlayout(state, { now, loss, rttMs }) {
  const rtt = Number.isFinite(rttMs) && rttMs > 0 ? rttMs : state.rtt;
  let lossyAt = state.lossyAt;
  if (Number.isFinite(loss) && loss >= LOSSY_SHARE) lossyAt = now;
  if (lossyAt === null || now - lossyAt > HOLD_MS) return { target: null, lossyAt: null, rtt };
  const want = targetForRtt(rtt);
  const t = state.target;
  const target = t === null || want > t + RISE_MS || want < t - FALL_MS ? want : t;
  return { target, lossyAt, rtt };
}
