#!/usr/bin/env bash
# A demo lesson across a three-node SFU cluster on this machine (issue 9): a redis-server (the
# room directory), node A (region central, the teacher's school) and nodes B and C (one county),
# with relay certificates from `sfu cluster-certs`. A synthetic teacher (headless Chromium, fake
# camera and mic) publishes to A; synthetic classrooms watch on B and C, relayed from A over
# QUIC, one of them placed by A's redirect (?region=county). Prints the pages to open.
# Ctrl-C stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."

ROOM=${ROOM:-demo-cluster}
BASE_PORT=${BASE_PORT:-7810} # A: 7810 http, 7811 media, 7812 relay; B: 7820..; C: 7830..
REDIS_PORT=${REDIS_PORT:-7879}
REGION=${REGION:-county}
export CLASSROOM_SECRET=${CLASSROOM_SECRET:-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')}
SFU=${CARGO_TARGET_DIR:-./target}/release/sfu
OUT=artifacts/demo-cluster
[ -x "$SFU" ] || { echo "no $SFU: run 'make demo-cluster' (it builds the release binaries)"; exit 1; }
command -v redis-server >/dev/null || { echo "redis-server missing: ./scripts/install-deps.sh"; exit 1; }
mkdir -p "$OUT"

pids=()
cleanup() {
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_http() { # url log
  for _ in $(seq 1 100); do
    curl -fsS "$1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "$1 did not answer; see $2"
  exit 1
}

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$OUT" \
  >"$OUT/redis.log" 2>&1 &
pids+=($!)
redis_up() { # PING over bash's /dev/tcp (redis-cli may not be installed)
  local reply=
  exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT" || return 1
  printf 'PING\r\n' >&3
  read -r -t 1 reply <&3 || true
  exec 3>&-
  [[ "$reply" == +PONG* ]]
}
for _ in $(seq 1 50); do
  redis_up 2>/dev/null && break
  sleep 0.1
done
redis_up 2>/dev/null || { echo "redis-server did not start; see $OUT/redis.log"; exit 1; }

rm -rf "$OUT/certs"
"$SFU" cluster-certs --out "$OUT/certs" --nodes a,b,c >/dev/null

declare -A HTTP
start_node() { # id region index
  local id=$1 region=$2 port=$((BASE_PORT + $3 * 10))
  HTTP[$id]=127.0.0.1:$port
  "$SFU" serve --http "127.0.0.1:$port" --media-port $((port + 1)) \
    --cluster "redis://127.0.0.1:$REDIS_PORT" --node-id "$id" --region "$region" \
    --relay-port $((port + 2)) --cluster-certs "$OUT/certs" >"$OUT/sfu-$id.log" 2>&1 &
  pids+=($!)
  wait_http "http://127.0.0.1:$port/healthz" "$OUT/sfu-$id.log"
}
start_node a central 0
start_node b "$REGION" 1
start_node c "$REGION" 2
A=http://${HTTP[a]}
B=http://${HTTP[b]}
C=http://${HTTP[c]}

tok() { "$SFU" token --room "$ROOM" --role "$1" --sub "$2" --name "$3" --ttl 4h; }
TEACHER=$(tok teacher central-school-1 "王老师（中心校）")
C1=$(tok classroom point-1 "一号教学点")
C2=$(tok classroom point-2 "二号教学点")
C3=$(tok classroom point-3 "三号教学点")
C4=$(tok classroom point-4 "四号教学点")
OBS=$(tok observer bureau "教育局巡课")

# The synthetic teacher on A (it yields if you open the teacher console below: same teacher id);
# classrooms (a few seconds later, once the lesson is on): one played from B, one from C
# (placed=1 keeps each where it is pointed), one sent
# to A that A places on the county's least-loaded node (a 307 redirect the page follows).
(cd web && node tools/synthetic.mjs \
  "$A/teacher.html?room=$ROOM&token=$TEACHER&autostart=1&courseware=1#yield=1" \
  "$B/classroom.html?room=$ROOM&token=$C1&publish=0&placed=1#delay=6" \
  "$C/classroom.html?room=$ROOM&token=$C2&publish=0&placed=1#delay=6" \
  "$A/classroom.html?room=$ROOM&token=$C3&publish=0&region=$REGION#delay=8") >"$OUT/synthetic.log" 2>&1 &
pids+=($!)

cat <<MSG

集群演示课堂已开始 / The cluster demo lesson is running (room "$ROOM").
  redis-server 127.0.0.1:$REDIS_PORT (the room directory); nodes:
    A $A  region central  (the lesson's origin: the teacher publishes here)
    B $B  region $REGION
    C $C  region $REGION
  A synthetic teacher publishes a test camera, courseware and tone to A; synthetic classrooms
  play it from B and from C (relayed A -> B and A -> C over QUIC, one copy per node), and one
  asked A for region=$REGION and was redirected to a node of that region.

  Classroom page on C (plays the lesson from C):
    $C/classroom.html?room=$ROOM&token=$C4&publish=0&placed=1
  Classroom page placed by A (a 307 to B or C; the status line names the server it plays from):
    $A/classroom.html?room=$ROOM&token=$C4&publish=0&region=$REGION
  Teacher console on A (takes the lesson over from the synthetic teacher, which then leaves):
    $A/teacher.html?room=$ROOM&token=$TEACHER
  Observer view (巡课) on B:  $B/classroom.html?room=$ROOM&token=$OBS&publish=0&placed=1
  The cluster as each node sees it (nodes, rooms with origin and edges, relays, per-hop stats):
    $A/api/cluster
    $B/api/cluster
    $C/api/cluster
  Operations dashboards: $A/ops.html  $B/ops.html  $C/ops.html
  Try a partition: kill -STOP ${pids[1]} (node A), and kill -CONT ${pids[1]} a second or two
  later: the classroom pages on B and C say "与主讲课堂服务器的连接中断，正在重新连接…" while
  their node has lost A, and play again once it is back.
  Logs: $OUT/sfu-{a,b,c}.log, $OUT/synthetic.log, $OUT/redis.log

Press Ctrl-C to stop.
MSG
wait "${pids[1]}"
