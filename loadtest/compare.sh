#!/usr/bin/env bash
# Our SFU and Janus side by side, from one run: the same teacher (the VP8 simulcast clip and
# Opus speech), the same classrooms on the same emulated links, one target after the other,
# and a table of both (server CPU per packet, largest load held per core, latency, freezes).
#
#   loadtest/compare.sh [loadtest arguments]
#   loadtest/compare.sh --classrooms 50 --duration 30s --profile clean      (the default)
#   loadtest/compare.sh --ramp --start 20 --step 20 --max-classrooms 200 --profile clean
#
# Everything runs in a network namespace made here and deleted at the end: Janus gathers no
# loopback candidates, so it gets a veth address inside the namespace, and nothing leaves it.
# Needs root (ip netns) and the `janus` package. Builds release binaries unless SFU_BIN and
# LOADTEST_BIN are set. Output (reports, pages, logs, compare.txt) goes to $COMPARE_OUT
# (default target/compare).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${COMPARE_OUT:-$ROOT/target/compare}
args=("$@")
if [ ${#args[@]} -eq 0 ]; then
  args=(--classrooms 50 --duration 30s --profile clean)
fi

die() { echo "compare.sh: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "needs root for its network namespace (ip netns)"
command -v ip >/dev/null || die "iproute2 (ip) is not installed"
command -v "${JANUS_BIN:-janus}" >/dev/null || die "janus is not installed (apt-get install janus)"
if [ -z "${SFU_BIN:-}" ] || [ -z "${LOADTEST_BIN:-}" ]; then
  (cd "$ROOT" && cargo build --release -p sfu -p loadtest)
  SFU_BIN=${SFU_BIN:-$ROOT/target/release/sfu}
  LOADTEST_BIN=${LOADTEST_BIN:-$ROOT/target/release/loadtest}
fi
mkdir -p "$OUT"

NS=lt-compare-$$
JANUS_IP=10.203.0.1
SFU_PID=""
cleanup() {
  if [ -n "$SFU_PID" ]; then kill -TERM "$SFU_PID" 2>/dev/null || true; wait 2>/dev/null || true; fi
  ip netns pids "$NS" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
  ip netns delete "$NS" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$NS"
in_ns() { ip netns exec "$NS" "$@"; }
in_ns ip link set lo up
in_ns ip link add lt0 type veth peer name lt1
in_ns ip addr add "$JANUS_IP/24" dev lt0
in_ns ip link set lt0 up
in_ns ip link set lt1 up

SECRET=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')

echo "== our SFU" >&2
# `ip netns exec` forks: the SFU's own pid comes from the shell it replaces
rm -f "$OUT/sfu.pid"
in_ns env CLASSROOM_SECRET="$SECRET" RUST_LOG=warn SFU_BIN="$SFU_BIN" PIDFILE="$OUT/sfu.pid" \
  bash -c 'echo $$ >"$PIDFILE"; exec "$SFU_BIN" serve --http 127.0.0.1:7800 --media-port 7801' \
  >"$OUT/sfu.log" 2>&1 &
NS_EXEC=$!
for _ in $(seq 100); do
  if [ -s "$OUT/sfu.pid" ] && in_ns bash -c 'exec 3<>/dev/tcp/127.0.0.1/7800' 2>/dev/null; then break; fi
  sleep 0.1
done
SFU_PID=$(cat "$OUT/sfu.pid" 2>/dev/null) || die "the SFU did not start (see $OUT/sfu.log)"
in_ns env CLASSROOM_SECRET="$SECRET" "$LOADTEST_BIN" --target sfu --sfu http://127.0.0.1:7800 \
  --sfu-pid "$SFU_PID" --room compare "${args[@]}" --report "$OUT/sfu.json" --html "$OUT/sfu.html" \
  2>"$OUT/loadtest-sfu.log"
kill -TERM "$SFU_PID"
SFU_PID=""
wait "$NS_EXEC" || die "the SFU did not stop cleanly (see $OUT/sfu.log)"

echo "== Janus" >&2
in_ns "$LOADTEST_BIN" --target janus --janus-bin "${JANUS_BIN:-janus}" --janus-ip "$JANUS_IP" \
  "${args[@]}" --report "$OUT/janus.json" --html "$OUT/janus.html" 2>"$OUT/loadtest-janus.log"

echo "== side by side (reports in $OUT)" >&2
"$LOADTEST_BIN" --compare "$OUT/sfu.json" "$OUT/janus.json" | tee "$OUT/compare.txt"
