#!/usr/bin/env bash
# One lesson on one SFU node against the same lesson across an origin and edge nodes, on
# loopback: N classrooms on a node alone, then EDGES × N classrooms spread over EDGES edges
# (`loadtest --edge`) while the teacher publishes to the origin; then both side by side
# (`loadtest --compare-cluster`): the origin's egress, the copies each edge gets, the added
# latency per hop, CPU, and what the classrooms saw.
#
#   loadtest/cluster.sh                                     # N = 20, 3 edges, 30 s, clean links
#   loadtest/cluster.sh --classrooms 10 --edges 3 --duration 20s [other loadtest arguments]
#
# Starts its own redis-server (Debian's `redis-server`) on a free loopback port, makes the
# relays' certificates (`sfu cluster-certs`), and stops everything at the end. Builds release
# binaries unless SFU_BIN and LOADTEST_BIN are set. Output (reports, logs, compare.txt) goes
# to $CLUSTER_OUT (default target/cluster).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${CLUSTER_OUT:-$ROOT/target/cluster}
N=20
EDGES=3
DURATION=30s
rest=()
while [ $# -gt 0 ]; do
  case "$1" in
    --classrooms) N=$2; shift 2 ;;
    --edges) EDGES=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    *) rest+=("$1"); shift ;;
  esac
done
if [ ${#rest[@]} -eq 0 ]; then rest=(--profile clean); fi

die() { echo "cluster.sh: $*" >&2; exit 2; }
[[ "$N" =~ ^[0-9]+$ ]] && [ "$N" -ge 1 ] || die "--classrooms must be a number ≥ 1"
[[ "$EDGES" =~ ^[0-9]+$ ]] && [ "$EDGES" -ge 1 ] && [ "$EDGES" -le 9 ] || die "--edges must be 1 to 9"
REDIS_BIN=${REDIS_BIN:-redis-server}
command -v "$REDIS_BIN" >/dev/null || die "redis-server is not installed (apt-get install redis-server)"
if [ -z "${SFU_BIN:-}" ] || [ -z "${LOADTEST_BIN:-}" ]; then
  (cd "$ROOT" && cargo build --release -p sfu -p loadtest)
  SFU_BIN=${SFU_BIN:-$ROOT/target/release/sfu}
  LOADTEST_BIN=${LOADTEST_BIN:-$ROOT/target/release/loadtest}
fi
mkdir -p "$OUT"
rm -rf "$OUT/certs"
rm -f "$OUT"/{one,cluster}.json "$OUT/compare.txt"

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# pick_port: sets PORT to one not handed out yet with no TCP listener (UDP ports, for media
# and relays, are taken on trust). Ports come from below the kernel's ephemeral range: the
# nodes' own outgoing connections (Redis, health checks) take ephemeral ports, and one of them
# could take a port picked here before its node binds it.
used=" "
EPHEMERAL_FROM=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
PICK_SPAN=$((EPHEMERAL_FROM - 20000))
[ "$PICK_SPAN" -gt 1000 ] || die "the ephemeral port range starts at $EPHEMERAL_FROM: no room below it"
pick_port() {
  local p
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % PICK_SPAN))
    case "$used" in *" $p "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      used+="$p "
      PORT=$p
      return
    fi
  done
  die "no free port"
}
wait_http() { # URL LOG
  for _ in $(seq 300); do
    if curl -fs -o /dev/null "$1/healthz"; then return; fi
    sleep 0.1
  done
  die "no answer from $1 (see $2)"
}

SECRET=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
export CLASSROOM_SECRET=$SECRET

# start_sfu NAME HTTP_PORT [serve arguments]: sets SFU_PID
start_sfu() {
  local name=$1 port=$2
  shift 2
  pick_port
  RUST_LOG=${RUST_LOG:-warn} "$SFU_BIN" serve --http "127.0.0.1:$port" --media-port "$PORT" "$@" \
    >"$OUT/sfu-$name.log" 2>&1 &
  SFU_PID=$!
  PIDS+=("$SFU_PID")
  wait_http "http://127.0.0.1:$port" "$OUT/sfu-$name.log"
}
stop() { # PID
  kill -TERM "$1"
  wait "$1" || die "pid $1 did not stop cleanly"
}

echo "== one node alone: $N classrooms" >&2
pick_port
port=$PORT
start_sfu one "$port"
one_pid=$SFU_PID
"$LOADTEST_BIN" --sfu "http://127.0.0.1:$port" --sfu-pid "$one_pid" --room one \
  --classrooms "$N" --duration "$DURATION" "${rest[@]}" --report "$OUT/one.json" \
  >"$OUT/one.txt" 2>"$OUT/loadtest-one.log" || die "the run on one node failed (see $OUT/loadtest-one.log)"
stop "$one_pid"

echo "== origin + $EDGES edges: $EDGES × $N classrooms" >&2
pick_port
redis_port=$PORT
"$REDIS_BIN" --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$OUT" >"$OUT/redis.log" 2>&1 &
redis_pid=$!
PIDS+=("$redis_pid")
for _ in $(seq 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$redis_port") 2>/dev/null; then break; fi
  sleep 0.1
done
names=(a b c d e f g h i j)
nodes=$(IFS=,; echo "${names[*]:0:$((EDGES + 1))}")
"$SFU_BIN" cluster-certs --out "$OUT/certs" --nodes "$nodes" >/dev/null
node() { # ID REGION HTTP_PORT
  pick_port
  start_sfu "$1" "$3" --cluster "redis://127.0.0.1:$redis_port" --node-id "$1" --region "$2" \
    --relay-port "$PORT" --cluster-certs "$OUT/certs"
}
pick_port
origin_port=$PORT
node a central "$origin_port"
origin_pid=$SFU_PID
edge_args=()
edge_pids=()
for i in $(seq 1 "$EDGES"); do
  pick_port
  p=$PORT
  node "${names[$i]}" county "$p"
  edge_args+=(--edge "http://127.0.0.1:$p" --edge-pid "$SFU_PID")
  edge_pids+=("$SFU_PID")
done
# Redis's load: commands processed over the run (heartbeats, placement, the directory)
redis_commands() {
  { redis-cli -p "$redis_port" INFO stats 2>/dev/null || true; } | tr -d '\r' \
    | awk -F: '$1 == "total_commands_processed" { print $2 }'
}
r0=$(redis_commands)
t0=$(date +%s.%N)
"$LOADTEST_BIN" --sfu "http://127.0.0.1:$origin_port" --sfu-pid "$origin_pid" "${edge_args[@]}" \
  --room cluster --classrooms "$((EDGES * N))" --duration "$DURATION" "${rest[@]}" \
  --report "$OUT/cluster.json" >"$OUT/cluster.txt" 2>"$OUT/loadtest-cluster.log" \
  || die "the cluster run failed (see $OUT/loadtest-cluster.log)"
r1=$(redis_commands)
t1=$(date +%s.%N)
redis-cli -p "$redis_port" INFO commandstats >"$OUT/redis-commandstats.txt" 2>/dev/null || true
for p in "${edge_pids[@]}" "$origin_pid"; do stop "$p"; done
stop "$redis_pid"
PIDS=()

echo "== side by side (reports in $OUT)" >&2
{
  "$LOADTEST_BIN" --compare-cluster "$OUT/one.json" "$OUT/cluster.json"
  if [ -n "$r0" ] && [ -n "$r1" ]; then
    awk -v a="$r0" -v b="$r1" -v t0="$t0" -v t1="$t1" -v n="$((EDGES + 1))" 'BEGIN {
      printf "redis: %d commands in %.0f s, %.1f per second for %d nodes\n", b - a, t1 - t0, (b - a) / (t1 - t0), n }'
  fi
} | tee "$OUT/compare.txt"
