//! `scheduler serve` end to end: the real binary on 127.0.0.1:0 over a real SQLite file.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

use scheduler::generate::{generate, Preset};
use scheduler::model::{load_region, Plan, Region};
use scheduler::token::{Minter, Role};

const SECRET: &str = "api-test-secret";

struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(db: &str, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_scheduler"))
            .args(["serve", "--http", "127.0.0.1:0", "--db", db])
            .args(["--sfu-url", "http://sfu.test:7800/"])
            .args(extra)
            .env("CLASSROOM_SECRET", SECRET)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start scheduler serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("http://127.0.0.1:"), "{line:?}");
        Server {
            child,
            base: line.trim().to_string(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGTERM, and the exit status of a clean shutdown.
    fn stop(mut self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                assert!(st.success(), "exit status {st}");
                return;
            }
            assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn get(c: &Client, url: String) -> (StatusCode, Value) {
    let r = c.get(url).send().await.unwrap();
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

async fn post(c: &Client, url: String, body: Value) -> (StatusCode, Value) {
    let r = c.post(url).json(&body).send().await.unwrap();
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

async fn post_text(c: &Client, url: String, body: String) -> (StatusCode, Value) {
    let r = c
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// Runs the requests at once (each on its own task).
async fn futures_join<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

async fn healthy(c: &Client, s: &Server) {
    let (st, v) = get(c, s.url("/healthz")).await;
    assert_eq!((st, v), (StatusCode::OK, json!({"ok": true})));
}

/// Polls a job to its end; returns the final job.
async fn wait_job(c: &Client, s: &Server, job: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let (st, j) = get(c, s.url(&format!("/api/jobs/{job}"))).await;
        assert_eq!(st, StatusCode::OK, "{j}");
        let p = j["progress"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&p), "{j}");
        match j["state"].as_str().unwrap() {
            "queued" | "running" => {}
            _ => return j,
        }
        assert!(Instant::now() < deadline, "job {job} did not finish: {j}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn solve(c: &Client, s: &Server, path: String, limit: f64) -> i64 {
    let (st, v) = post(c, s.url(&path), json!({"time_limit_s": limit})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let j = wait_job(c, s, v["job"].as_i64().unwrap()).await;
    assert_eq!(j["state"], "done", "{j}");
    assert_eq!(j["progress"], 1.0);
    j["plan_id"].as_i64().unwrap()
}

async fn plan(c: &Client, s: &Server, id: i64) -> Plan {
    let (st, v) = get(c, s.url(&format!("/api/plans/{id}"))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    serde_json::from_value(v).unwrap()
}

async fn valid(c: &Client, s: &Server, id: i64) {
    let (st, v) = get(c, s.url(&format!("/api/plans/{id}/validate"))).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["ok"], true, "{v}");
}

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/region-small.json")
}

fn bundle_form(dir: &Path) -> reqwest::multipart::Form {
    let mut form = reqwest::multipart::Form::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        let part = reqwest::multipart::Part::text(std::fs::read_to_string(&p).unwrap())
            .file_name(name.clone());
        form = form.part(name, part);
    }
    form
}

async fn counts(db: &str) -> [i64; 4] {
    let store = scheduler::store::Store::open(db).await.unwrap();
    let n = store.counts().await.unwrap();
    store.close().await;
    n
}

/// A legal move of some lesson to another time and an illegal one, found with the library.
fn find_moves(region: &Region, plan: &Plan, skip: &str) -> ((String, u8, u8), (String, u8, u8)) {
    let mut legal = None;
    for l in plan.lessons.iter().filter(|l| l.id != skip) {
        for d in 1..=5u8 {
            for p in 1..=7u8 {
                if (d, p) == (l.weekday, l.slots[0].period) {
                    continue;
                }
                if legal.is_none()
                    && scheduler::edit::move_lesson(region, plan, &l.id, d, p).is_ok()
                {
                    legal = Some((l.id.clone(), d, p));
                }
            }
        }
    }
    let legal = legal.expect("some lesson can move");
    // Onto the slot of the locked lesson with the same teacher or class: or simply to a
    // period the host school does not have.
    let illegal = (legal.0.clone(), 3, 40);
    (legal, illegal)
}

/// The round trip runs on a fresh SQLite file; `SCHEDULER_TEST_DB=postgres://...` (an empty
/// database) runs the same test against PostgreSQL instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_over_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = std::env::var("SCHEDULER_TEST_DB")
        .unwrap_or_else(|_| format!("sqlite://{}", dir.path().join("scheduler.db").display()));
    let db = db.as_str();
    let s = Server::start(db, &[]);
    let c = Client::new();
    healthy(&c, &s).await;

    // Import the example: created, then the same id again (also from other formatting and
    // from its CSV bundle), with no new rows.
    let text = std::fs::read_to_string(example_path()).unwrap();
    let (st, a) = post_text(&c, s.url("/api/regions"), text.clone()).await;
    assert_eq!(st, StatusCode::CREATED, "{a}");
    assert_eq!(
        (a["created"].clone(), a["version"].clone()),
        (json!(true), json!(1))
    );
    let example_id = a["id"].as_i64().unwrap();
    let compact = serde_json::to_string(&serde_json::from_str::<Value>(&text).unwrap()).unwrap();
    let (st, b) = post_text(&c, s.url("/api/regions"), compact).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(b["id"].as_i64(), Some(example_id));
    assert_eq!(b["created"], false);
    let csv_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/region-small");
    let r = c
        .post(s.url("/api/regions"))
        .multipart(bundle_form(&csv_dir))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["id"].as_i64(), Some(example_id), "{v}");
    assert_eq!(counts(db).await, [1, 0, 0, 0]);
    let (_, stored) = get(&c, s.url(&format!("/api/regions/{example_id}"))).await;
    let stored: Region = serde_json::from_value(stored).unwrap();
    assert_eq!(stored, load_region(&example_path()).unwrap());

    // A changed region under the same name is its next version.
    let mut changed = stored.clone();
    changed.options.lesson_minutes = 35;
    let (st, v) = post(&c, s.url("/api/regions"), json!(changed)).await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(v["version"], 2);
    assert_ne!(v["id"].as_i64(), Some(example_id));

    // A generated county, twice: one row.
    let county = generate(Preset::County, 7);
    let (st, v) = post(&c, s.url("/api/regions"), json!(county)).await;
    assert_eq!(st, StatusCode::CREATED);
    let county_id = v["id"].as_i64().unwrap();
    let (st, v) = post(&c, s.url("/api/regions"), json!(county)).await;
    assert_eq!((st, v["id"].as_i64()), (StatusCode::OK, Some(county_id)));
    assert_eq!(counts(db).await, [3, 0, 0, 0]);

    // The example solves to its known plan.
    let p = solve(&c, &s, format!("/api/regions/{example_id}/solve"), 10.0).await;
    let ex = plan(&c, &s, p).await;
    assert_eq!((ex.lessons.len(), ex.unmet.len()), (2, 2));
    valid(&c, &s, p).await;

    // A tiny region in coplan mode (dedicated lessons in free periods, so lessons can move):
    // solve, lock, move, re-solve.
    let mut tiny = generate(Preset::Tiny, 2);
    tiny.central_timetable = None;
    let (st, v) = post(&c, s.url("/api/regions"), json!(tiny)).await;
    assert_eq!(st, StatusCode::CREATED);
    let tiny_id = v["id"].as_i64().unwrap();
    let p1 = solve(&c, &s, format!("/api/regions/{tiny_id}/solve"), 5.0).await;
    let plan1 = plan(&c, &s, p1).await;
    assert!(plan1.lessons.len() >= 2);
    valid(&c, &s, p1).await;

    let lock_id = plan1.lessons[0].id.clone();
    let (st, v) = post(
        &c,
        s.url(&format!("/api/plans/{p1}/lessons/{lock_id}/lock")),
        json!({}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let p2 = v["plan"].as_i64().unwrap();
    assert_eq!(v["locked"], json!([lock_id]));
    let plan2 = plan(&c, &s, p2).await;
    assert_eq!(plan2, plan1);

    let (legal, illegal) = find_moves(&tiny, &plan2, &lock_id);
    let (st, v) = post(
        &c,
        s.url(&format!("/api/plans/{p2}/lessons/{}/move", illegal.0)),
        json!({"weekday": illegal.1, "period": illegal.2}),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert!(!v["broken"].as_array().unwrap().is_empty(), "{v}");
    let (st, v) = post(
        &c,
        s.url(&format!("/api/plans/{p2}/lessons/{}/move", legal.0)),
        json!({"weekday": legal.1, "period": legal.2}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let p3 = v["plan"].as_i64().unwrap();
    valid(&c, &s, p3).await;
    let plan3 = plan(&c, &s, p3).await;
    let moved = plan3.lessons.iter().find(|l| l.id == legal.0).unwrap();
    assert_eq!((moved.weekday, moved.slots[0].period), (legal.1, legal.2));

    let (st, v) = get(&c, s.url(&format!("/api/plans/{p3}/info"))).await;
    assert_eq!(st, StatusCode::OK);
    let mut want = vec![lock_id.clone(), legal.0.clone()];
    want.sort();
    assert_eq!(v["locked"], json!(want));

    let p4 = solve(&c, &s, format!("/api/plans/{p3}/resolve"), 5.0).await;
    valid(&c, &s, p4).await;
    let plan4 = plan(&c, &s, p4).await;
    // Never worse than the plan it started from (which already held the locked lessons).
    assert!(plan4.stats.objective <= plan3.stats.objective);
    for id in [&lock_id, &legal.0] {
        let before = plan3.lessons.iter().find(|l| &l.id == id).unwrap();
        let after = plan4.lessons.iter().find(|l| &l.id == id).unwrap();
        assert_eq!(before, after, "locked lesson {id} changed");
    }

    // Versions and edits of the tiny region.
    let (_, list) = get(&c, s.url(&format!("/api/regions/{tiny_id}/plans"))).await;
    let origins: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["origin"].as_str().unwrap())
        .collect();
    assert_eq!(origins, ["solve", "lock", "move", "resolve"]);
    let (_, edits) = get(&c, s.url(&format!("/api/regions/{tiny_id}/edits"))).await;
    assert_eq!(edits.as_array().unwrap().len(), 2, "{edits}");
    assert_eq!(
        edits[1]["payload"],
        json!({"weekday": legal.1, "period": legal.2})
    );

    // Exports of the re-solved plan: iCalendar parses, one event per lesson of the teacher.
    let teacher = plan4.lessons[0].teacher.clone();
    let r = c
        .get(s.url(&format!("/api/plans/{p4}/ics?teacher={teacher}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/calendar"));
    let text = r.text().await.unwrap();
    let unfolded = icalendar::parser::unfold(&text);
    let cal = icalendar::parser::read_calendar(&unfolded).unwrap();
    let events = cal
        .components
        .iter()
        .filter(|c| c.name.as_str() == "VEVENT")
        .count();
    let want = plan4
        .lessons
        .iter()
        .filter(|l| l.teacher == teacher)
        .count();
    assert_eq!(events, want);
    for q in [
        format!("school={}", plan4.lessons[0].slots[0].school),
        format!("class={}", plan4.lessons[0].receivers[0]),
    ] {
        let r = c
            .get(s.url(&format!("/api/plans/{p4}/ics?{q}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{q}");
        let text = r.text().await.unwrap();
        icalendar::parser::read_calendar(&icalendar::parser::unfold(&text)).unwrap();
        assert!(text.contains("BEGIN:VEVENT"), "{q}");
    }
    let (st, _) = get(&c, s.url(&format!("/api/plans/{p4}/ics?teacher=nobody"))).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = get(&c, s.url(&format!("/api/plans/{p4}/ics"))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    let text = c
        .get(s.url(&format!("/api/plans/{p4}/csv")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut rd = csv::Reader::from_reader(text.as_bytes());
    let ids: Vec<String> = rd
        .records()
        .map(|r| r.unwrap().get(0).unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), plan4.lessons.len());
    assert!(ids.contains(&lock_id));
    let text = c
        .get(s.url(&format!("/api/plans/{p4}/csv?table=unmet")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        csv::Reader::from_reader(text.as_bytes()).records().count(),
        plan4.unmet.len()
    );

    // Join tokens verify with the SFU's secret and carry the room and role.
    let l = plan4.lessons.iter().find(|l| l.id == lock_id).unwrap();
    let (st, j) = get(
        &c,
        s.url(&format!("/api/plans/{p4}/lessons/{lock_id}/join")),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{j}");
    let m = Minter::new(SECRET).unwrap();
    let parts = j["participants"].as_array().unwrap();
    assert_eq!(
        parts.len(),
        1 + l.receivers.len() + l.host_class.is_some() as usize
    );
    let mut subs = BTreeMap::new();
    for p in parts {
        let claims = m.verify(p["token"].as_str().unwrap()).unwrap();
        assert_eq!(claims.room, l.room);
        let link = p["link"].as_str().unwrap();
        let page = match claims.role {
            Role::Teacher => "teacher.html",
            _ => "classroom.html",
        };
        assert_eq!(
            link,
            format!(
                "http://sfu.test:7800/{page}?room={}&token={}",
                l.room,
                p["token"].as_str().unwrap()
            )
        );
        subs.insert(claims.sub, claims.role);
    }
    assert_eq!(subs.get(&l.teacher), Some(&Role::Teacher));
    for r in &l.receivers {
        assert_eq!(subs.get(r), Some(&Role::Classroom));
    }
    assert!(Minter::new("wrong")
        .unwrap()
        .verify(parts[0]["token"].as_str().unwrap())
        .is_err());

    // Restart on the same file: everything is still there.
    let before = counts(db).await;
    assert_eq!(before[0], 4);
    assert_eq!(before[2], 2);
    s.stop();
    let s = Server::start(db, &[]);
    healthy(&c, &s).await;
    let (_, regions) = get(&c, s.url("/api/regions")).await;
    assert_eq!(regions.as_array().unwrap().len(), 4);
    assert_eq!(plan(&c, &s, p4).await, plan4);
    assert_eq!(counts(db).await, before);

    // Concurrent requests: the same new region six times is stored once; six edits of one
    // plan make six versions.
    let fresh = generate(Preset::Tiny, 9);
    let uploads = (0..6).map(|_| {
        let (c, url, body) = (c.clone(), s.url("/api/regions"), json!(fresh));
        async move { post(&c, url, body).await }
    });
    let got = futures_join(uploads).await;
    let ids: std::collections::BTreeSet<i64> =
        got.iter().map(|(_, v)| v["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), 1, "{got:?}");
    assert_eq!(
        got.iter()
            .filter(|(st, _)| *st == StatusCode::CREATED)
            .count(),
        1
    );
    let edits = plan4.lessons.iter().take(6).map(|l| {
        let c = c.clone();
        let url = s.url(&format!("/api/plans/{p4}/lessons/{}/lock", l.id));
        async move { post(&c, url, json!({})).await }
    });
    let got = futures_join(edits).await;
    let versions: std::collections::BTreeSet<i64> = got
        .iter()
        .map(|(st, v)| {
            assert_eq!(*st, StatusCode::OK, "{v}");
            v["version"].as_i64().unwrap()
        })
        .collect();
    assert_eq!(versions.len(), got.len());
    let (st, v) = post(
        &c,
        s.url(&format!("/api/plans/{p4}/lessons/{lock_id}/unlock")),
        json!({}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["locked"], json!([legal.0]));
    assert_eq!(counts(db).await[0], before[0] + 1);
    s.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_reported_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("bad.db").display());
    let db = db.as_str();
    let s = Server::start(db, &["--max-body-mb", "1"]);
    let c = Client::new();

    // Malformed JSON: 400 with the line and field.
    let text = std::fs::read_to_string(example_path()).unwrap();
    let broken = text.replacen("\"downlink_kbps\": 4000", "\"downlink_kbps\": \"fast\"", 1);
    let line = broken.lines().position(|l| l.contains("\"fast\"")).unwrap() + 1;
    let (st, v) = post_text(&c, s.url("/api/regions"), broken).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["line"], line);
    assert_eq!(v["field"], "schools[1].downlink_kbps");
    let (st, v) = post_text(&c, s.url("/api/regions"), "{\"schools\": [".into()).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"].as_str().unwrap().starts_with("region.json:1:"),
        "{v}"
    );
    healthy(&c, &s).await;

    // Unknown ids and contradictions: 422 with each problem.
    let unknown = text.replacen("\"school\": \"p2\"", "\"school\": \"p9\"", 1);
    let (st, v) = post_text(&c, s.url("/api/regions"), unknown).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let problems = v["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.as_str().unwrap().contains("unknown school \"p9\"")),
        "{v}"
    );

    // A CSV bundle with a bad cell: file, line and field.
    let csv_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/region-small");
    let bad_dir = dir.path().join("bundle");
    std::fs::create_dir(&bad_dir).unwrap();
    for e in std::fs::read_dir(&csv_dir).unwrap() {
        let p = e.unwrap().path();
        let mut t = std::fs::read_to_string(&p).unwrap();
        if p.ends_with("classes.csv") {
            t = t.replace("p2-g3,p2,3,6", "p2-g3,p2,three,6");
        }
        std::fs::write(bad_dir.join(p.file_name().unwrap()), t).unwrap();
    }
    let r = c
        .post(s.url("/api/regions"))
        .multipart(bundle_form(&bad_dir))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("classes.csv:4:3: field `grade`"),
        "{v}"
    );

    // Too large a body: 413, and the server carries on.
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(2 << 20));
    // The server answers 413 before reading the body and closes that connection: it goes on a
    // client of its own, so the shared pool never hands the closed connection to the next request.
    let (st, v) = post_text(&Client::new(), s.url("/api/regions"), big).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(v["error"].is_string());
    healthy(&c, &s).await;
    assert_eq!(counts(db).await, [0, 0, 0, 0]);

    // Unknown ids in paths.
    for path in [
        "/api/regions/999",
        "/api/regions/abc",
        "/api/plans/5",
        "/api/jobs/77",
        "/api/plans/5/lessons/L00001/join",
        "/api/nothing",
    ] {
        let (st, v) = get(&c, s.url(path)).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{path}");
        assert!(v["error"].is_string(), "{path}: {v}");
    }
    let (st, _) = post(&c, s.url("/api/regions/999/solve"), json!({})).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let r = c.patch(s.url("/api/regions")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());

    // An impossible region: links too thin for any lesson. The plan explains every period.
    let mut region = load_region(&example_path()).unwrap();
    for sc in region.schools.iter_mut().filter(|s| s.id.starts_with('p')) {
        sc.downlink_kbps = 500;
    }
    let (st, v) = post(&c, s.url("/api/regions"), json!(region)).await;
    assert_eq!(st, StatusCode::CREATED);
    let rid = v["id"].as_i64().unwrap();
    let (st, v) = post(
        &c,
        s.url(&format!("/api/regions/{rid}/solve")),
        json!({"time_limit_s": -1}),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let (st, v) = post_text(
        &c,
        s.url(&format!("/api/regions/{rid}/solve")),
        "{\"time_limit\": 3}".into(),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let p = solve(&c, &s, format!("/api/regions/{rid}/solve"), 5.0).await;
    let plan = plan(&c, &s, p).await;
    assert!(plan.lessons.is_empty());
    assert_eq!(plan.unmet.iter().map(|u| u.periods).sum::<u32>(), 6);
    assert!(plan
        .unmet
        .iter()
        .all(|u| u.reasons.contains(&scheduler::model::Reason::Bandwidth)));
    valid(&c, &s, p).await;
    let (st, v) = post(
        &c,
        s.url(&format!("/api/plans/{p}/lessons/L00001/lock")),
        json!({}),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    let (st, v) = post_text(
        &c,
        s.url(&format!("/api/plans/{p}/lessons/L00001/move")),
        "{\"weekday\": 1}".into(),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"].as_str().unwrap().contains("period"), "{v}");
    healthy(&c, &s).await;

    // A job in flight at SIGTERM is marked cancelled and stores no plan.
    let county = generate(Preset::County, 3);
    let (_, v) = post(&c, s.url("/api/regions"), json!(county)).await;
    let cid = v["id"].as_i64().unwrap();
    let (st, v) = post(
        &c,
        s.url(&format!("/api/regions/{cid}/solve")),
        json!({"time_limit_s": 120}),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let job = v["job"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(&c, s.url(&format!("/api/jobs/{job}"))).await.1["state"] != "running" {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = c
        .delete(s.url(&format!("/api/regions/{cid}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    s.stop();
    let s = Server::start(db, &[]);
    let (_, j) = get(&c, s.url(&format!("/api/jobs/{job}"))).await;
    assert_eq!(j["state"], "cancelled", "{j}");
    assert!(j["plan_id"].is_null());
    let (_, plans) = get(&c, s.url(&format!("/api/regions/{cid}/plans"))).await;
    assert_eq!(plans, json!([]));

    // Deleting a region takes its plans, edits and jobs with it.
    assert_eq!(counts(db).await, [2, 1, 0, 2]);
    let r = c
        .delete(s.url(&format!("/api/regions/{rid}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (st, _) = get(&c, s.url(&format!("/api/plans/{p}"))).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(counts(db).await, [1, 0, 0, 1]);
    s.stop();
}
