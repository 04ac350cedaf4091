#!/usr/bin/env bash
# RFC 8867 section 5.1 (variable available capacity, one flow) scaled by two: the uplink of one
# teacher goes 2 -> 5 -> 1.2 -> 2 Mbit/s at 0, 40, 60 and 80 s (100 s), 50 ms one-way delay,
# through the loadtest's link emulator with a measuring tap on each side (the loadtest's
# `link-meter`). Run once with the classroom agent as the teacher and once with Chromium (same
# 1280x720 3-layer VP8 simulcast, same most per layer), each against a fresh SFU.
#
# usage: classroom-agent/bench/rfc8867.sh [agent|chromium|both]   (default both; PROFILE=debug
#        for debug builds, release by default, as a school runs them)
# Output: Markdown tables on stdout; series and logs in $OUT (default target/rfc8867).
set -euo pipefail
cd "$(dirname "$0")/../.."
WHICH=${1:-both}
OUT=${OUT:-target/rfc8867}
PHASES=${PHASES:-0:2000,40:5000,60:1200,80:2000}
END=${END:-100}
mkdir -p "$OUT"
PROFILE=${PROFILE:-release}
case "$PROFILE" in
  release) cargo build -q --release -p sfu -p loadtest -p classroom-agent ;;
  debug) cargo build -q -p sfu -p loadtest -p classroom-agent ;;
  *) echo "PROFILE must be debug or release, not '$PROFILE'" >&2; exit 2 ;;
esac
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/$PROFILE}
export CLASSROOM_SECRET=rfc8867-bench

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

run() {
  local who=$1 http media room=rfc8867 token meter_pid sender_pid
  http=$(free_port); media=$(free_port)
  RUST_LOG=warn "$BIN/sfu" serve --http "127.0.0.1:$http" --media-port "$media" >"$OUT/sfu-$who.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$http/healthz" >/dev/null && break; sleep 0.1; done
  token=$("$BIN/sfu" token --room "$room" --role teacher --sub "bench-$who")
  rm -f "$OUT/via-$who"
  if [ "$who" = chromium ]; then
    # The browser and camera start first; it publishes once the link exists.
    (cd web && node tools/rfc8867-publisher.mjs --sfu "http://127.0.0.1:$http" --room "$room" \
      --token "$token" --via-file "../$OUT/via-$who" --duration "$END" \
      --stats "../$OUT/chromium-stats.json") >"$OUT/sender-$who.log" 2>&1 &
    sender_pid=$!; PIDS+=($sender_pid)
    for _ in $(seq 600); do grep -q ready "$OUT/sender-$who.log" 2>/dev/null && break; sleep 0.1; done
  fi
  "$BIN/link-meter" --target "127.0.0.1:$media" \
    --phases "$PHASES" --end "$END" --owd-ms 50 --label "$who" --out "$OUT/series-$who.json" \
    >"$OUT/table-$who.md" 2>"$OUT/meter-$who.log" &
  meter_pid=$!; PIDS+=($meter_pid)
  for _ in $(seq 100); do [ -s "$OUT/table-$who.md" ] && break; sleep 0.05; done
  head -1 "$OUT/table-$who.md" >"$OUT/via-$who"
  if [ "$who" = agent ]; then
    RUST_LOG=${AGENT_LOG:-info} "$BIN/classroom-agent" --sfu "http://127.0.0.1:$http" --room "$room" --token "$token" \
      --role teacher --video test --audio test --width 1280 --height 720 --fps 30 \
      --status off --media-via "$(cat "$OUT/via-$who")" >"$OUT/sender-$who.log" 2>&1 &
    sender_pid=$!; PIDS+=($sender_pid)
  fi
  wait "$meter_pid"
  kill -TERM "$sender_pid" 2>/dev/null || true
  wait "$sender_pid" 2>/dev/null || true
  tail -n +2 "$OUT/table-$who.md"
}

echo "RFC 8867 5.1 x2: $PHASES kbit/s, ${END} s, 50 ms one-way; $PROFILE builds; $(date -u +%FT%TZ); $(nproc) cores; load: $(uptime | sed 's/.*load average: //')"
case $WHICH in
  agent|chromium) run "$WHICH" ;;
  both) run agent; run chromium ;;
  *) echo "usage: $0 [agent|chromium|both]" >&2; exit 2 ;;
esac
