#!/usr/bin/env bash
# A demo lesson on this machine: the SFU, the scheduler (a generated county, solved), a synthetic
# teacher (headless Chromium with a fake camera and mic) and two synthetic classrooms; prints the
# pages to open. Ctrl-C stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."

HTTP=${SFU_HTTP:-127.0.0.1:7800}
MEDIA_PORT=${SFU_MEDIA_PORT:-7801}
ROOM=${ROOM:-demo}
export CLASSROOM_SECRET=${CLASSROOM_SECRET:-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')}
SFU=${CARGO_TARGET_DIR:-./target}/release/sfu
SCHEDULER=${CARGO_TARGET_DIR:-./target}/release/scheduler
SCHED_HTTP=${SCHEDULER_HTTP:-127.0.0.1:7900}
mkdir -p artifacts

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

"$SFU" serve --http "$HTTP" --media-port "$MEDIA_PORT" >artifacts/demo-sfu.log 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  curl -fsS "http://$HTTP/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://$HTTP/healthz" >/dev/null || { echo "SFU did not start; see artifacts/demo-sfu.log"; exit 1; }

# The scheduler: a generated county, imported and solved, on its timetable page.
rm -f artifacts/demo-scheduler.db
"$SCHEDULER" serve --db "sqlite://artifacts/demo-scheduler.db" --http "$SCHED_HTTP" \
  --sfu-url "http://$HTTP" >artifacts/demo-scheduler.log 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  curl -fsS "http://$SCHED_HTTP/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
"$SCHEDULER" generate --preset county --seed 1 >artifacts/demo-county.json
REGION=$(curl -fsS -X POST -H 'content-type: application/json' --data-binary @artifacts/demo-county.json \
  "http://$SCHED_HTTP/api/regions" | sed -n 's/.*"id":\([0-9]*\).*/\1/p')
if [ -n "$REGION" ]; then
  curl -fsS -X POST -H 'content-type: application/json' -d '{"time_limit_s": 20}' \
    "http://$SCHED_HTTP/api/regions/$REGION/solve" >/dev/null || true
fi

tok() { "$SFU" token --room "$ROOM" --role "$1" --sub "$2" --name "$3" --ttl 4h; }
TEACHER=$(tok teacher central-school-1 "王老师（中心校）")
C1=$(tok classroom point-1 "一号教学点")
C2=$(tok classroom point-2 "二号教学点")
C3=$(tok classroom point-3 "三号教学点")
OBS=$(tok observer bureau "教育局巡课")

BASE="http://$HTTP"
(cd web && node tools/synthetic.mjs \
  "$BASE/teacher.html?room=$ROOM&token=$TEACHER&autostart=1&courseware=1#stage=point-1@40" \
  "$BASE/classroom.html?room=$ROOM&token=$C1#hand=20" \
  "$BASE/classroom.html?room=$ROOM&token=$C2") >artifacts/demo-synthetic.log 2>&1 &
pids+=($!)

cat <<MSG

演示课堂已开始 / The demo lesson is running (room "$ROOM").
  A synthetic teacher publishes a test camera and tone; two synthetic classrooms play it and
  send their own cameras. After 20 s 一号教学点 raises its hand; after 40 s the teacher puts it
  on stage, and every classroom sees and hears it.

  Open a classroom page (plays the lesson, sends your camera if you allow it, raise your hand):
    $BASE/classroom.html?room=$ROOM&token=$C3
  Observer view (巡课, watch only):
    $BASE/classroom.html?room=$ROOM&token=$OBS&publish=0
  Operations dashboard: $BASE/ops.html
  Timetable (scheduler, a generated county being solved): http://$SCHED_HTTP/
  Room state (JSON):  $BASE/api/rooms/$ROOM
  Prometheus metrics: $BASE/metrics
  Logs: artifacts/demo-sfu.log, artifacts/demo-synthetic.log, artifacts/demo-scheduler.log

Press Ctrl-C to stop.
MSG
wait "${pids[0]}"
