//! The interactive lesson with Rust peers (webrtc-rs): classroom feeds, raised hands, on stage,
//! mute, roles, attendance and room events over the WebSocket.
//!
//! Six classrooms publish their small camera and mic and play the lesson with a stage slot;
//! the teacher publishes the lesson and watches the classrooms as tiles. Each classroom's
//! camera has its own width, so a viewer can tell from the VP8 keyframes whose picture it got.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use webrtc::rtp_transceiver::rtp_codec::RTPCodecType::{Audio, Video};

const LIMIT: Duration = Duration::from_secs(240);
const ROOM: &str = "lesson-6";
/// Classroom viewer layout: teacher voice, camera, courseware, stage voice, stage camera.
const STAGE_AUDIO: usize = 3;
const STAGE_VIDEO: usize = 4;
const TILES_FROM: usize = 5;

fn must<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

fn class_width(i: usize) -> u16 {
    160 + 16 * i as u16
}

fn feed_opts(i: usize) -> PublisherOpts {
    PublisherOpts {
        codec: VideoCodec::Vp8,
        layers: vec![Layer {
            rid: "h",
            width: class_width(i),
            height: 96,
            kbps: 120,
        }],
        keyframe_interval: Duration::from_secs(3),
        audio: true,
        fps: 15,
    }
}

/// Widths of the VP8 keyframes a slot received since `since`.
fn key_widths(log: &SlotLog, since: Instant) -> Vec<u16> {
    log.pkts
        .iter()
        .filter(|p| p.at >= since)
        .filter_map(|p| p.key.map(|k| k.width))
        .collect()
}

fn packets_between(log: &SlotLog, from: Instant, to: Instant) -> usize {
    log.pkts
        .iter()
        .filter(|p| p.at >= from && p.at < to && p.len > 0)
        .count()
}

/// Collects the room's events from a WebSocket, and sends commands on it.
struct EventSocket {
    seen: Arc<Mutex<Vec<Value>>>,
    tx: tokio::sync::mpsc::UnboundedSender<String>,
    task: tokio::task::JoinHandle<()>,
}

impl EventSocket {
    async fn open(sfu: &Sfu, token: &str) -> EventSocket {
        let url = format!(
            "ws://127.0.0.1:{}/rooms/{ROOM}/events?token={token}",
            sfu.http_port
        );
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("open the events WebSocket");
        let (mut sink, mut stream) = ws.split();
        let seen = Arc::new(Mutex::new(vec![]));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let seen2 = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    out = rx.recv() => match out {
                        Some(text) => {
                            if sink.send(tokio_tungstenite::tungstenite::Message::Text(text.into())).await.is_err() {
                                return;
                            }
                        }
                        None => return,
                    },
                    msg = stream.next() => match msg {
                        Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
                            if let Ok(v) = serde_json::from_str::<Value>(&t) {
                                seen2.lock().unwrap().push(v);
                            }
                        }
                        Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))) | None | Some(Err(_)) => {
                            seen2.lock().unwrap().push(serde_json::json!({"type": "closed"}));
                            return;
                        }
                        _ => {}
                    }
                }
            }
        });
        EventSocket { seen, tx, task }
    }

    fn events(&self) -> Vec<Value> {
        self.seen.lock().unwrap().clone()
    }

    fn send(&self, v: Value) {
        let _ = self.tx.send(v.to_string());
    }

    async fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(v) = self.events().into_iter().find(|v| pred(v)) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} event within 20 s; saw {:?}",
                self.events()
            );
            sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for EventSocket {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn state(sfu: &Sfu, token: &str) -> Value {
    let (st, body) = sfu
        .get_auth(&format!("/api/rooms/{ROOM}/state"), token)
        .await;
    assert_eq!(st, 200, "state: {body}");
    serde_json::from_str(&body).expect("state JSON")
}

fn subs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn six_classrooms_hands_stage_mute_and_attendance() {
    run("interactive", LIMIT, async {
        let sfu = Sfu::start().await;
        let teacher_tok = sfu.token(ROOM, "teacher", "t");
        let teacher = must(
            Publisher::connect(&sfu, ROOM, &teacher_tok, PublisherOpts::vp8_simulcast()).await,
        );
        let teacher_events = EventSocket::open(&sfu, &teacher_tok).await;
        let hello = teacher_events
            .wait_for("state", |v| v["type"] == "state")
            .await;
        assert_eq!(hello["you"]["role"], "teacher");

        // Six classrooms: each publishes its feed and plays the lesson with a stage slot.
        let mut feeds = vec![];
        let mut viewers = vec![];
        let mut toks = vec![];
        for i in 0..6 {
            let sub = format!("c{i}");
            let tok = sfu.token(ROOM, "classroom", &sub);
            feeds.push(must(
                Publisher::connect(&sfu, ROOM, &tok, feed_opts(i)).await,
            ));
            viewers.push(must(
                Subscriber::connect_layout(
                    &sfu,
                    ROOM,
                    &tok,
                    "",
                    &[VideoCodec::Vp8],
                    &sub,
                    &[Audio, Video, Video, Audio, Video],
                )
                .await,
            ));
            toks.push(tok);
        }
        // The teacher console: the program layout plus six tiles.
        let mut layout = vec![Audio, Video, Video, Audio, Video];
        layout.extend([Video; 6]);
        let console = must(
            Subscriber::connect_layout(
                &sfu,
                ROOM,
                &teacher_tok,
                "",
                &[VideoCodec::Vp8],
                "console",
                &layout,
            )
            .await,
        );
        let t_joined = Instant::now();
        let class_events = EventSocket::open(&sfu, &toks[0]).await;
        sleep(secs(5.0)).await;
        // Link quality reaches the teacher for every classroom in one message.
        teacher_events
            .wait_for("quality", |v| {
                v["type"] == "quality" && v["links"].as_array().is_some_and(|a| a.len() == 6)
            })
            .await;

        // Every classroom plays the teacher; the console shows all six classrooms as tiles
        // and never gets the teacher's own media back.
        for v in &viewers {
            let cam = analyze(&v.slot(SLOT_CAMERA).pkts, v.connected_at);
            assert!(cam.frames > 20, "{}: teacher camera {}", v.name, cam.line());
            assert!(
                v.slot(SLOT_AUDIO).pkts.len() > 50,
                "{}: teacher audio missing",
                v.name
            );
            assert_eq!(
                v.slot(STAGE_AUDIO).pkts.len(),
                0,
                "{}: stage audio before anyone is on stage",
                v.name
            );
        }
        let mut tile_widths: Vec<u16> = (0..6)
            .filter_map(|k| {
                key_widths(&console.slot(TILES_FROM + k), t_joined)
                    .first()
                    .copied()
            })
            .collect();
        tile_widths.sort();
        let mut expected: Vec<u16> = (0..6).map(class_width).collect();
        expected.sort();
        assert_eq!(tile_widths, expected, "the tiles show every classroom once");
        assert_eq!(
            console.slot(SLOT_AUDIO).pkts.len(),
            0,
            "teacher hears itself"
        );
        assert_eq!(
            console.slot(SLOT_CAMERA).pkts.len(),
            0,
            "teacher sees itself"
        );

        // Two hands go up.
        for i in [1, 4] {
            let (st, body) = sfu
                .post_json(
                    &format!("/api/rooms/{ROOM}/hand"),
                    &toks[i],
                    r#"{"raised":true}"#,
                )
                .await;
            assert_eq!(st, 200, "c{i} raises its hand: {body}");
        }
        let s = state(&sfu, &teacher_tok).await;
        assert_eq!(subs(&s["hands"]), ["c1", "c4"]);
        teacher_events
            .wait_for("hand", |v| v["type"] == "hand" && v["sub"] == "c4")
            .await;
        // Raised hands come first among the tiles.
        assert_eq!(&subs(&s["tiles"])[..2], ["c1", "c4"]);

        // What nobody may do: a classroom puts itself on stage or mutes another, an observer
        // commands or publishes, a token from another room is used here.
        let observer = sfu.token(ROOM, "observer", "inspector");
        let elsewhere = sfu.token("another-room", "teacher", "t2");
        let stage_c2 = r#"{"sub":"c2","on":true}"#;
        for (who, tok, path, body) in [
            ("classroom", &toks[2], "stage", stage_c2),
            (
                "classroom",
                &toks[2],
                "mute",
                r#"{"sub":"c1","muted":true}"#,
            ),
            (
                "classroom",
                &toks[2],
                "hand",
                r#"{"raised":true,"sub":"c3"}"#,
            ),
            ("observer", &observer, "stage", stage_c2),
            ("observer", &observer, "end", "{}"),
            ("other room", &elsewhere, "stage", stage_c2),
        ] {
            let (st, resp) = sfu
                .post_json(&format!("/api/rooms/{ROOM}/{path}"), tok, body)
                .await;
            assert_eq!(st, 403, "{who} {path}: {resp}");
        }
        let offer = throwaway_offer().await;
        let r = sfu
            .post_sdp(&format!("/whip/{ROOM}"), Some(&observer), &offer)
            .await;
        assert_eq!(r.status, 403, "observer publishes: {}", r.body);
        let s = state(&sfu, &teacher_tok).await;
        assert!(subs(&s["stage"]).is_empty(), "stage changed: {s}");
        assert!(subs(&s["muted"]).is_empty(), "mutes changed: {s}");
        assert_eq!(subs(&s["hands"]), ["c1", "c4"]);
        assert_eq!(s["lesson"], "live");

        // The teacher brings c4 on stage (over the WebSocket, as the console does).
        teacher_events.send(serde_json::json!({"type": "stage", "sub": "c4", "on": true}));
        teacher_events
            .wait_for("ok", |v| v["type"] == "ok" && v["command"] == "stage")
            .await;
        let t_stage = Instant::now();
        let s = state(&sfu, &teacher_tok).await;
        assert_eq!(subs(&s["stage"]), ["c4"]);
        assert_eq!(subs(&s["hands"]), ["c1"], "going on stage lowers the hand");
        sleep(secs(4.0)).await;
        let t_check = Instant::now();
        for (i, v) in viewers.iter().enumerate() {
            let audio = packets_between(&v.slot(STAGE_AUDIO), t_stage, t_check);
            let widths = key_widths(&v.slot(STAGE_VIDEO), t_stage);
            if i == 4 {
                assert_eq!(audio, 0, "c4 hears itself");
                assert!(widths.is_empty(), "c4 sees itself on stage");
            } else {
                assert!(audio > 50, "{}: only {audio} stage audio packets", v.name);
                assert!(
                    widths.contains(&class_width(4)),
                    "{}: stage camera keyframes {widths:?}, want c4's width {}",
                    v.name,
                    class_width(4)
                );
            }
        }

        // Classrooms follow the room too, but get no link reports.
        class_events
            .wait_for("stage", |v| v["type"] == "stage" && v["sub"] == "c4")
            .await;
        assert!(
            class_events.events().iter().all(|v| v["type"] != "quality"),
            "a classroom got link reports"
        );

        // Muted: c4's voice stops reaching the others, its picture stays.
        let (st, body) = sfu
            .post_json(
                &format!("/api/rooms/{ROOM}/mute"),
                &teacher_tok,
                r#"{"sub":"c4","muted":true}"#,
            )
            .await;
        assert_eq!(st, 200, "mute: {body}");
        let t_mute = Instant::now();
        sleep(secs(3.0)).await;
        let t_end = Instant::now();
        let settle = t_mute + Duration::from_millis(500);
        for (i, v) in viewers.iter().enumerate() {
            if i == 4 {
                continue;
            }
            let audio = packets_between(&v.slot(STAGE_AUDIO), settle, t_end);
            assert_eq!(audio, 0, "{}: c4's audio still arrives after mute", v.name);
            let video = packets_between(&v.slot(STAGE_VIDEO), settle, t_end);
            assert!(video > 10, "{}: stage camera stopped after mute", v.name);
        }
        teacher_events
            .wait_for("mute", |v| v["type"] == "mute" && v["sub"] == "c4")
            .await;

        // The teacher's connection drops and comes back: stage, hands and mutes are kept.
        let _ = sfu.delete(&teacher.location, Some(&teacher_tok)).await;
        drop(teacher);
        sleep(secs(1.0)).await;
        let teacher = must(
            Publisher::connect(&sfu, ROOM, &teacher_tok, PublisherOpts::vp8_simulcast()).await,
        );
        let s = state(&sfu, &teacher_tok).await;
        assert_eq!(
            subs(&s["stage"]),
            ["c4"],
            "stage lost over a teacher reconnect"
        );
        assert_eq!(subs(&s["muted"]), ["c4"]);
        assert_eq!(subs(&s["hands"]), ["c1"]);
        assert_eq!(s["lesson"], "live");

        // Attendance: everyone is here, the classroom may not read it.
        let (st, body) = sfu
            .get_auth(&format!("/api/rooms/{ROOM}/attendance"), &teacher_tok)
            .await;
        assert_eq!(st, 200, "{body}");
        let a: Value = serde_json::from_str(&body).unwrap();
        let rows = a["participants"].as_array().unwrap();
        assert_eq!(rows.len(), 7, "teacher and six classrooms: {body}");
        assert!(rows.iter().all(|r| r["present"] == true), "{body}");
        assert!(rows
            .iter()
            .all(|r| r["connected_ms"].as_u64().unwrap() >= 5_000));
        let (st, _) = sfu
            .get_auth(&format!("/api/rooms/{ROOM}/attendance"), &toks[0])
            .await;
        assert_eq!(st, 403);

        // One classroom leaves; the teacher ends the lesson.
        let leaver = viewers.remove(0);
        leaver.leave(&sfu).await;
        let f0 = feeds.remove(0);
        let _ = sfu.delete(&f0.location, Some(&toks[0])).await;
        teacher_events
            .wait_for("leave", |v| v["type"] == "leave" && v["sub"] == "c0")
            .await;
        let (st, body) = sfu
            .post_json(&format!("/api/rooms/{ROOM}/end"), &teacher_tok, "")
            .await;
        assert_eq!(st, 200, "end: {body}");
        teacher_events
            .wait_for("lesson ended", |v| {
                v["type"] == "lesson" && v["state"] == "ended"
            })
            .await;
        teacher_events
            .wait_for("close", |v| v["type"] == "closed")
            .await;
        let (st, csv) = sfu
            .get_auth(
                &format!("/api/rooms/{ROOM}/attendance?format=csv"),
                &teacher_tok,
            )
            .await;
        assert_eq!(st, 200);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 8, "{csv}");
        assert!(lines[1..].iter().all(|l| l.ends_with(",false")), "{csv}");
        let c0 = lines.iter().find(|l| l.starts_with("c0,")).unwrap();
        assert!(!c0.split(',').nth(4).unwrap().is_empty(), "c0 left: {c0}");
        // The lesson is over: its sessions are gone.
        let (st, _) = sfu.get(&format!("/api/rooms/{ROOM}")).await;
        assert_eq!(st, 404);
        drop(teacher);
        drop(console);
    });
}

#[test]
fn a_lesson_without_its_teacher_ends_after_the_timeout() {
    run("teacher-timeout", LIMIT, async {
        let sfu = Sfu::start_with(&["--teacher-timeout", "3s", "--max-stage", "2"]).await;
        let room = "lesson-timeout";
        let teacher_tok = sfu.token(room, "teacher", "t");
        let teacher = must(
            Publisher::connect(&sfu, room, &teacher_tok, PublisherOpts::vp8_simulcast()).await,
        );
        let c_tok = sfu.token(room, "classroom", "c0");
        let viewer =
            must(Subscriber::connect(&sfu, room, &c_tok, "", &[VideoCodec::Vp8], "c0").await);
        sleep(secs(1.0)).await;
        let (st, body) = sfu
            .get_auth(&format!("/api/rooms/{room}/state"), &teacher_tok)
            .await;
        assert_eq!(st, 200, "{body}");
        let s: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(s["lesson"], "live");
        assert_eq!(s["max_stage"], 2);
        let _ = sfu.delete(&teacher.location, Some(&teacher_tok)).await;
        drop(teacher);
        // Not yet: the teacher may be reconnecting.
        sleep(secs(1.0)).await;
        let (_, body) = sfu.get(&format!("/api/rooms/{room}")).await;
        let info: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(info["lesson"], "live", "{body}");
        // After the timeout the lesson ends and the classroom is let go.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (st, body) = sfu
                .get_auth(&format!("/api/rooms/{room}/attendance"), &teacher_tok)
                .await;
            let a: Value = serde_json::from_str(&body).unwrap_or_default();
            if st == 200 && a["lesson"] == "ended" {
                let rows = a["participants"].as_array().unwrap();
                assert_eq!(rows.len(), 2, "{body}");
                assert!(rows.iter().all(|r| r["present"] == false), "{body}");
                break;
            }
            assert!(Instant::now() < deadline, "the lesson did not end: {body}");
            sleep(secs(0.5)).await;
        }
        let (st, _) = sfu.get(&format!("/api/rooms/{room}")).await;
        assert_eq!(st, 404, "the ended lesson's sessions are gone");
        drop(viewer);
    });
}
