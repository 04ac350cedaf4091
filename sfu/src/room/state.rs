//! The interactive lesson's state: who is here, raised hands, who is on stage, muted
//! classrooms, pinned tiles, the lesson's start and end, and attendance.
//!
//! Pure and deterministic: the media loop feeds it session ups and downs and participants'
//! commands with the time, and gets back the events to publish. The server enforces roles
//! here, so a page can never do what its token does not allow.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::auth::{Claims, Role};

/// A moment on both clocks: monotonic for durations, Unix milliseconds for people.
#[derive(Debug, Clone, Copy)]
pub struct At {
    pub mono: Instant,
    pub unix_ms: u64,
}

/// What participants ask of the room (WebSocket messages and REST bodies).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RoomCommand {
    /// A classroom raises or lowers its own hand; the teacher may lower anyone's.
    Hand {
        raised: bool,
        #[serde(default)]
        sub: Option<String>,
    },
    Stage {
        sub: String,
        on: bool,
    },
    Mute {
        sub: String,
        muted: bool,
    },
    Pin {
        sub: String,
        pinned: bool,
    },
    Remove {
        sub: String,
    },
    Start,
    End,
}

impl RoomCommand {
    pub fn name(&self) -> &'static str {
        match self {
            RoomCommand::Hand { .. } => "hand",
            RoomCommand::Stage { .. } => "stage",
            RoomCommand::Mute { .. } => "mute",
            RoomCommand::Pin { .. } => "pin",
            RoomCommand::Remove { .. } => "remove",
            RoomCommand::Start => "start",
            RoomCommand::End => "end",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("role {role} may not {action}")]
    Forbidden { role: Role, action: &'static str },
    #[error("{0} is not in this lesson")]
    NotPresent(String),
    #[error("{0}")]
    Conflict(String),
}

/// Events every participant's page receives.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RoomEvent {
    Join {
        sub: String,
        name: String,
        role: Role,
    },
    Leave {
        sub: String,
    },
    Hand {
        sub: String,
        raised: bool,
        queue: Vec<String>,
    },
    Stage {
        sub: String,
        on: bool,
        stage: Vec<String>,
    },
    Mute {
        sub: String,
        muted: bool,
    },
    Pin {
        sub: String,
        pinned: bool,
    },
    Removed {
        sub: String,
    },
    Lesson {
        state: LessonState,
    },
    Speaker {
        sub: Option<String>,
    },
    Tiles {
        order: Vec<String>,
    },
    /// Dynacast: the simulcast layers (rids) a publisher's track should send now; meant for
    /// that publisher's page only.
    Layers {
        sub: String,
        track: String,
        active: Vec<String>,
    },
    /// This node relays the lesson from another node (`origin`); `connected: false` when that
    /// relay is lost (a partition shows up on the classroom pages, not as a silent freeze).
    Relay {
        origin: String,
        connected: bool,
    },
    /// Every classroom's downlink, in one message every few seconds (for the teacher's tiles
    /// and the observers; classroom pages do not get it).
    Quality {
        links: Vec<LinkQuality>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LinkQuality {
    pub sub: String,
    pub estimate_bps: Option<u64>,
    pub loss: Option<f32>,
    pub rtt_ms: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LessonState {
    Waiting,
    Live,
    Ended,
}

/// One participant (a token `sub`) across all its sessions.
#[derive(Debug, Clone, Serialize)]
pub struct Participant {
    pub sub: String,
    pub name: String,
    pub role: Role,
    pub present: bool,
    /// Whether it publishes a feed (a classroom's camera and mic).
    pub publishing: bool,
    #[serde(skip)]
    sessions: u32,
    #[serde(skip)]
    since: Option<Instant>,
}

/// One line of attendance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attendance {
    pub sub: String,
    pub name: String,
    pub role: Role,
    pub first_joined_unix_ms: u64,
    pub last_left_unix_ms: Option<u64>,
    pub joins: u32,
    /// Time connected, summed over every stretch (reconnects are not double counted).
    pub connected_ms: u64,
    pub present: bool,
}

/// What a page sees when it connects: everything the events change.
#[derive(Debug, Clone, Serialize)]
pub struct RoomSnapshot {
    pub room: String,
    pub lesson: LessonState,
    pub started_unix_ms: Option<u64>,
    pub ended_unix_ms: Option<u64>,
    pub participants: Vec<Participant>,
    pub hands: Vec<String>,
    pub stage: Vec<String>,
    pub muted: Vec<String>,
    pub pinned: Vec<String>,
    pub tiles: Vec<String>,
    pub speaker: Option<String>,
    pub max_stage: usize,
}

#[derive(Debug, Clone)]
pub struct RoomRules {
    /// Classrooms on stage at once (default 1, at most 6).
    pub max_stage: usize,
    /// A live lesson with no teacher for this long ends by itself.
    pub teacher_timeout: Duration,
    /// Tiles of classrooms that are not pinned, raising a hand or on stage rotate this often
    /// when there are more classrooms than tiles.
    pub rotate_every: Duration,
}

impl Default for RoomRules {
    fn default() -> Self {
        RoomRules {
            max_stage: 1,
            teacher_timeout: Duration::from_secs(600),
            rotate_every: Duration::from_secs(15),
        }
    }
}

pub const MAX_STAGE: usize = 6;

#[derive(Debug, Clone)]
struct Record {
    first: u64,
    last_left: Option<u64>,
    joins: u32,
    connected: Duration,
}

#[derive(Debug)]
pub struct RoomState {
    pub name: String,
    rules: RoomRules,
    lesson: LessonState,
    started: Option<u64>,
    ended: Option<u64>,
    participants: BTreeMap<String, Participant>,
    records: BTreeMap<String, Record>,
    hands: Vec<String>,
    stage: Vec<String>,
    muted: BTreeSet<String>,
    pinned: Vec<String>,
    removed: BTreeSet<String>,
    speaker: Option<String>,
    teacher_gone_since: Option<Instant>,
    rotation: usize,
    rotated_at: Option<Instant>,
    tiles: Vec<String>,
}

fn is_controller(role: Role) -> bool {
    matches!(role, Role::Teacher | Role::Admin)
}

/// Puts `item` in the ordered list `list` (at the end) or takes it out; true if that changed it.
fn set_member(list: &mut Vec<String>, item: &str, on: bool) -> bool {
    match (on, list.iter().position(|x| x == item)) {
        (true, None) => list.push(item.to_string()),
        (false, Some(i)) => {
            list.remove(i);
        }
        _ => return false,
    }
    true
}

/// Ends `p`'s current stretch of presence at `at`, adding it to its attendance record.
fn close_stretch(p: &mut Participant, record: Option<&mut Record>, at: At) {
    if let (Some(since), Some(r)) = (p.since.take(), record) {
        r.connected += at.mono.saturating_duration_since(since);
        r.last_left = Some(at.unix_ms);
    }
}

impl RoomState {
    pub fn new(name: &str, rules: RoomRules) -> Self {
        let mut rules = rules;
        rules.max_stage = rules.max_stage.clamp(1, MAX_STAGE);
        RoomState {
            name: name.to_string(),
            rules,
            lesson: LessonState::Waiting,
            started: None,
            ended: None,
            participants: BTreeMap::new(),
            records: BTreeMap::new(),
            hands: vec![],
            stage: vec![],
            muted: BTreeSet::new(),
            pinned: vec![],
            removed: BTreeSet::new(),
            speaker: None,
            teacher_gone_since: None,
            rotation: 0,
            rotated_at: None,
            tiles: vec![],
        }
    }

    pub fn lesson(&self) -> LessonState {
        self.lesson
    }

    pub fn stage(&self) -> &[String] {
        &self.stage
    }

    pub fn is_muted(&self, sub: &str) -> bool {
        self.muted.contains(sub)
    }

    pub fn muted(&self) -> impl Iterator<Item = &String> {
        self.muted.iter()
    }

    pub fn tiles(&self) -> &[String] {
        &self.tiles
    }

    pub fn is_removed(&self, sub: &str) -> bool {
        self.removed.contains(sub)
    }

    pub fn participant(&self, sub: &str) -> Option<&Participant> {
        self.participants.get(sub)
    }

    /// Nobody is here and nothing is worth keeping: the room may be forgotten.
    pub fn is_idle(&self) -> bool {
        self.lesson == LessonState::Waiting && !self.participants.values().any(|p| p.present)
    }

    /// A session of `who` connected. `publishing`: it is a WHIP session (a feed or the lesson).
    pub fn session_up(&mut self, who: &Claims, publishing: bool, at: At) -> Vec<RoomEvent> {
        let mut ev = vec![];
        let p = self
            .participants
            .entry(who.sub.clone())
            .or_insert_with(|| Participant {
                sub: who.sub.clone(),
                name: who.name.clone(),
                role: who.role,
                present: false,
                publishing: false,
                sessions: 0,
                since: None,
            });
        p.sessions += 1;
        if !who.name.is_empty() {
            p.name = who.name.clone();
        }
        let newly_publishing = publishing && !p.publishing && who.role == Role::Classroom;
        p.publishing |= publishing;
        if !p.present {
            p.present = true;
            p.since = Some(at.mono);
            let r = self.records.entry(who.sub.clone()).or_insert(Record {
                first: at.unix_ms,
                last_left: None,
                joins: 0,
                connected: Duration::ZERO,
            });
            r.joins += 1;
            ev.push(RoomEvent::Join {
                sub: who.sub.clone(),
                name: p.name.clone(),
                role: p.role,
            });
        }
        if who.role == Role::Teacher {
            self.teacher_gone_since = None;
            if publishing && self.lesson == LessonState::Waiting {
                ev.extend(self.start(at));
            }
        }
        if newly_publishing {
            ev.extend(self.refresh_tiles(at.mono, true));
        }
        ev
    }

    /// A session of `sub` ended. `publishing`: it was a WHIP session.
    pub fn session_down(
        &mut self,
        sub: &str,
        role: Role,
        publishing: bool,
        at: At,
    ) -> Vec<RoomEvent> {
        let mut ev = vec![];
        let Some(p) = self.participants.get_mut(sub) else {
            return ev;
        };
        p.sessions = p.sessions.saturating_sub(1);
        if publishing && p.role == Role::Classroom {
            // One feed per classroom: its WHIP session ending ends the feed.
            p.publishing = false;
        }
        if p.sessions == 0 && p.present {
            p.present = false;
            p.publishing = false;
            close_stretch(p, self.records.get_mut(sub), at);
            ev.push(RoomEvent::Leave {
                sub: sub.to_string(),
            });
            if set_member(&mut self.hands, sub, false) {
                ev.push(RoomEvent::Hand {
                    sub: sub.to_string(),
                    raised: false,
                    queue: self.hands.clone(),
                });
            }
            if role == Role::Teacher && self.lesson == LessonState::Live {
                self.teacher_gone_since = Some(at.mono);
            }
        }
        ev.extend(self.refresh_tiles(at.mono, true));
        ev
    }

    /// Applies `cmd` from `who`, or says why not (and changes nothing).
    pub fn command(
        &mut self,
        who: &Claims,
        cmd: RoomCommand,
        at: At,
    ) -> Result<Vec<RoomEvent>, CommandError> {
        let forbid = |action| CommandError::Forbidden {
            role: who.role,
            action,
        };
        if self.lesson == LessonState::Ended {
            return Err(CommandError::Conflict("the lesson has ended".into()));
        }
        let mut ev = vec![];
        match cmd {
            RoomCommand::Hand { raised, sub } => {
                let target = sub.unwrap_or_else(|| who.sub.clone());
                let own = target == who.sub;
                let allowed = if raised {
                    own && who.role == Role::Classroom
                } else {
                    (own && who.role == Role::Classroom) || is_controller(who.role)
                };
                if !allowed {
                    return Err(forbid(if raised {
                        "raise a hand (classrooms raise their own)"
                    } else {
                        "lower this hand"
                    }));
                }
                if raised && !self.participants.get(&target).is_some_and(|p| p.present) {
                    return Err(CommandError::NotPresent(target));
                }
                if !set_member(&mut self.hands, &target, raised) {
                    return Ok(ev);
                }
                ev.push(RoomEvent::Hand {
                    sub: target,
                    raised,
                    queue: self.hands.clone(),
                });
                ev.extend(self.refresh_tiles(at.mono, false));
            }
            RoomCommand::Stage { sub, on } => {
                if !is_controller(who.role) {
                    return Err(forbid("put classrooms on stage"));
                }
                let on_stage = self.stage.contains(&sub);
                if on && !on_stage {
                    let ok = self
                        .participants
                        .get(&sub)
                        .is_some_and(|p| p.present && p.role == Role::Classroom);
                    if !ok {
                        return Err(CommandError::NotPresent(sub));
                    }
                    if self.stage.len() >= self.rules.max_stage {
                        return Err(CommandError::Conflict(format!(
                            "the stage is full ({} at most): take someone off first",
                            self.rules.max_stage
                        )));
                    }
                    self.stage.push(sub.clone());
                    // Answering is what the hand was for.
                    if set_member(&mut self.hands, &sub, false) {
                        ev.push(RoomEvent::Hand {
                            sub: sub.clone(),
                            raised: false,
                            queue: self.hands.clone(),
                        });
                    }
                } else if !on && on_stage {
                    self.stage.retain(|s| *s != sub);
                } else {
                    return Ok(ev);
                }
                ev.push(RoomEvent::Stage {
                    sub,
                    on,
                    stage: self.stage.clone(),
                });
                ev.extend(self.refresh_tiles(at.mono, false));
            }
            RoomCommand::Mute { sub, muted } => {
                if !is_controller(who.role) {
                    return Err(forbid("mute classrooms"));
                }
                if !self.participants.contains_key(&sub) {
                    return Err(CommandError::NotPresent(sub));
                }
                let changed = if muted {
                    self.muted.insert(sub.clone())
                } else {
                    self.muted.remove(&sub)
                };
                if changed {
                    ev.push(RoomEvent::Mute { sub, muted });
                }
            }
            RoomCommand::Pin { sub, pinned } => {
                if !is_controller(who.role) {
                    return Err(forbid("pin tiles"));
                }
                if !self.participants.contains_key(&sub) {
                    return Err(CommandError::NotPresent(sub));
                }
                if !set_member(&mut self.pinned, &sub, pinned) {
                    return Ok(ev);
                }
                ev.push(RoomEvent::Pin { sub, pinned });
                ev.extend(self.refresh_tiles(at.mono, false));
            }
            RoomCommand::Remove { sub } => {
                if !is_controller(who.role) {
                    return Err(forbid("remove participants"));
                }
                if sub == who.sub {
                    return Err(CommandError::Conflict("end the lesson to leave it".into()));
                }
                if !self.participants.contains_key(&sub) {
                    return Err(CommandError::NotPresent(sub));
                }
                if who.role == Role::Teacher
                    && self
                        .participants
                        .get(&sub)
                        .is_some_and(|p| p.role == Role::Admin)
                {
                    return Err(forbid("remove an administrator"));
                }
                self.removed.insert(sub.clone());
                self.hands.retain(|h| *h != sub);
                self.stage.retain(|h| *h != sub);
                self.pinned.retain(|h| *h != sub);
                ev.push(RoomEvent::Removed { sub });
                ev.extend(self.refresh_tiles(at.mono, false));
            }
            RoomCommand::Start => {
                if !is_controller(who.role) {
                    return Err(forbid("start the lesson"));
                }
                ev.extend(self.start(at));
            }
            RoomCommand::End => {
                if !is_controller(who.role) {
                    return Err(forbid("end the lesson"));
                }
                ev.extend(self.end(at));
            }
        }
        Ok(ev)
    }

    fn start(&mut self, at: At) -> Vec<RoomEvent> {
        if self.lesson != LessonState::Waiting {
            return vec![];
        }
        self.lesson = LessonState::Live;
        self.started = Some(at.unix_ms);
        vec![RoomEvent::Lesson {
            state: LessonState::Live,
        }]
    }

    /// Ends the lesson: everyone present is counted out now.
    pub fn end(&mut self, at: At) -> Vec<RoomEvent> {
        if self.lesson == LessonState::Ended {
            return vec![];
        }
        for (sub, p) in self.participants.iter_mut() {
            close_stretch(p, self.records.get_mut(sub), at);
            p.present = false;
            p.sessions = 0;
        }
        self.lesson = LessonState::Ended;
        self.ended = Some(at.unix_ms);
        self.hands.clear();
        self.stage.clear();
        vec![RoomEvent::Lesson {
            state: LessonState::Ended,
        }]
    }

    /// Time passing: the teacher's absence ends a lesson; tiles rotate.
    pub fn tick(&mut self, at: At) -> Vec<RoomEvent> {
        if let Some(t) = self.teacher_gone_since {
            if self.lesson == LessonState::Live
                && at.mono.saturating_duration_since(t) >= self.rules.teacher_timeout
            {
                self.teacher_gone_since = None;
                return self.end(at);
            }
        }
        self.refresh_tiles(at.mono, false)
    }

    pub fn set_speaker(&mut self, sub: Option<String>) -> Vec<RoomEvent> {
        if self.speaker == sub {
            return vec![];
        }
        self.speaker = sub.clone();
        vec![RoomEvent::Speaker { sub }]
    }

    /// Order of classroom feeds for the teacher's tiles: pinned, raised hands (in queue order),
    /// on stage, then the rest, rotating so every classroom is seen in turn. A page with N
    /// tiles shows the first N.
    fn tile_order(&self) -> Vec<String> {
        let feeds: Vec<&String> = self
            .participants
            .values()
            .filter(|p| p.present && p.publishing && p.role == Role::Classroom)
            .map(|p| &p.sub)
            .collect();
        let mut out: Vec<String> = vec![];
        let push = |s: &String, out: &mut Vec<String>| {
            if feeds.contains(&s) && !out.contains(s) {
                out.push(s.clone());
            }
        };
        for s in self.pinned.iter().chain(&self.hands).chain(&self.stage) {
            push(s, &mut out);
        }
        let rest: Vec<&String> = feeds.iter().copied().filter(|s| !out.contains(s)).collect();
        if !rest.is_empty() {
            let k = self.rotation % rest.len();
            for s in rest[k..].iter().chain(&rest[..k]) {
                out.push((*s).clone());
            }
        }
        out
    }

    fn refresh_tiles(&mut self, now: Instant, membership_changed: bool) -> Vec<RoomEvent> {
        let due = self
            .rotated_at
            .is_none_or(|t| now.saturating_duration_since(t) >= self.rules.rotate_every);
        if due && !membership_changed {
            self.rotated_at = Some(now);
            self.rotation = self.rotation.wrapping_add(1);
        }
        let order = self.tile_order();
        if order == self.tiles {
            return vec![];
        }
        self.tiles = order.clone();
        vec![RoomEvent::Tiles { order }]
    }

    pub fn snapshot(&self) -> RoomSnapshot {
        RoomSnapshot {
            room: self.name.clone(),
            lesson: self.lesson,
            started_unix_ms: self.started,
            ended_unix_ms: self.ended,
            participants: self.participants.values().cloned().collect(),
            hands: self.hands.clone(),
            stage: self.stage.clone(),
            muted: self.muted.iter().cloned().collect(),
            pinned: self.pinned.clone(),
            tiles: self.tiles.clone(),
            speaker: self.speaker.clone(),
            max_stage: self.rules.max_stage,
        }
    }

    /// Who attended and for how long, as of `at`.
    pub fn attendance(&self, at: At) -> Vec<Attendance> {
        let mut out: Vec<Attendance> = self
            .records
            .iter()
            .filter_map(|(sub, r)| {
                let p = self.participants.get(sub)?;
                let live = p
                    .since
                    .map(|s| at.mono.saturating_duration_since(s))
                    .unwrap_or_default();
                Some(Attendance {
                    sub: sub.clone(),
                    name: p.name.clone(),
                    role: p.role,
                    first_joined_unix_ms: r.first,
                    last_left_unix_ms: if p.present { None } else { r.last_left },
                    joins: r.joins,
                    connected_ms: (r.connected + live).as_millis() as u64,
                    present: p.present,
                })
            })
            .collect();
        out.sort_by(|a, b| {
            a.first_joined_unix_ms
                .cmp(&b.first_joined_unix_ms)
                .then(a.sub.cmp(&b.sub))
        });
        out
    }
}

/// Attendance as CSV (for the school office's spreadsheet).
pub fn attendance_csv(rows: &[Attendance]) -> String {
    let mut s = String::from(
        "sub,name,role,first_joined_unix_ms,last_left_unix_ms,joins,connected_seconds,present\n",
    );
    for r in rows {
        let esc = |v: &str| {
            if v.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", v.replace('"', "\"\""))
            } else {
                v.to_string()
            }
        };
        s.push_str(&format!(
            "{},{},{},{},{},{},{:.1},{}\n",
            esc(&r.sub),
            esc(&r.name),
            r.role,
            r.first_joined_unix_ms,
            r.last_left_unix_ms
                .map(|v| v.to_string())
                .unwrap_or_default(),
            r.joins,
            r.connected_ms as f64 / 1000.0,
            r.present
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sub: &str, role: Role) -> Claims {
        Claims {
            sub: sub.into(),
            name: format!("{sub}-name"),
            room: "r".into(),
            role,
            exp: 0,
            origin: None,
        }
    }

    struct Clock {
        t0: Instant,
        ms: u64,
    }
    impl Clock {
        fn new() -> Self {
            Clock {
                t0: Instant::now(),
                ms: 0,
            }
        }
        fn at(&self) -> At {
            At {
                mono: self.t0 + Duration::from_millis(self.ms),
                unix_ms: 1_700_000_000_000 + self.ms,
            }
        }
        fn advance(&mut self, ms: u64) -> At {
            self.ms += ms;
            self.at()
        }
    }

    fn lesson_with(n: usize) -> (RoomState, Clock, Claims, Vec<Claims>) {
        let mut st = RoomState::new("r", RoomRules::default());
        let c = Clock::new();
        let teacher = claims("t", Role::Teacher);
        st.session_up(&teacher, true, c.at());
        let classes: Vec<Claims> = (0..n)
            .map(|i| claims(&format!("c{i}"), Role::Classroom))
            .collect();
        for cl in &classes {
            st.session_up(cl, true, c.at());
            st.session_up(cl, false, c.at());
        }
        (st, c, teacher, classes)
    }

    #[test]
    fn teacher_publishing_starts_the_lesson() {
        let mut st = RoomState::new("r", RoomRules::default());
        let c = Clock::new();
        let ev = st.session_up(&claims("c0", Role::Classroom), false, c.at());
        assert_eq!(st.lesson(), LessonState::Waiting);
        assert!(matches!(ev[0], RoomEvent::Join { .. }));
        let ev = st.session_up(&claims("t", Role::Teacher), true, c.at());
        assert!(ev.contains(&RoomEvent::Lesson {
            state: LessonState::Live
        }));
    }

    #[test]
    fn hands_queue_and_stage() {
        let (mut st, mut c, teacher, cl) = lesson_with(3);
        let at = c.advance(1000);
        st.command(
            &cl[2],
            RoomCommand::Hand {
                raised: true,
                sub: None,
            },
            at,
        )
        .unwrap();
        st.command(
            &cl[0],
            RoomCommand::Hand {
                raised: true,
                sub: None,
            },
            at,
        )
        .unwrap();
        assert_eq!(st.snapshot().hands, vec!["c2", "c0"]);
        // Raising twice changes nothing and says nothing.
        assert!(st
            .command(
                &cl[0],
                RoomCommand::Hand {
                    raised: true,
                    sub: None
                },
                at
            )
            .unwrap()
            .is_empty());
        // A classroom may not raise another's hand, nor put itself on stage.
        assert!(matches!(
            st.command(
                &cl[1],
                RoomCommand::Hand {
                    raised: true,
                    sub: Some("c2".into())
                },
                at
            ),
            Err(CommandError::Forbidden { .. })
        ));
        assert!(matches!(
            st.command(
                &cl[1],
                RoomCommand::Stage {
                    sub: "c1".into(),
                    on: true
                },
                at
            ),
            Err(CommandError::Forbidden { .. })
        ));
        let ev = st
            .command(
                &teacher,
                RoomCommand::Stage {
                    sub: "c2".into(),
                    on: true,
                },
                at,
            )
            .unwrap();
        assert!(ev
            .iter()
            .any(|e| matches!(e, RoomEvent::Stage { on: true, .. })));
        assert_eq!(st.stage(), ["c2"]);
        // Going on stage answers the hand.
        assert_eq!(st.snapshot().hands, vec!["c0"]);
        // One on stage by default.
        assert!(matches!(
            st.command(
                &teacher,
                RoomCommand::Stage {
                    sub: "c0".into(),
                    on: true
                },
                at
            ),
            Err(CommandError::Conflict(_))
        ));
        st.command(
            &teacher,
            RoomCommand::Stage {
                sub: "c2".into(),
                on: false,
            },
            at,
        )
        .unwrap();
        assert!(st.stage().is_empty());
        // Nobody absent goes on stage.
        assert_eq!(
            st.command(
                &teacher,
                RoomCommand::Stage {
                    sub: "ghost".into(),
                    on: true
                },
                at
            ),
            Err(CommandError::NotPresent("ghost".into()))
        );
    }

    #[test]
    fn observers_control_nothing() {
        let (mut st, c, _t, _cl) = lesson_with(2);
        let obs = claims("o", Role::Observer);
        st.session_up(&obs, false, c.at());
        let before = st.snapshot();
        for cmd in [
            RoomCommand::Hand {
                raised: true,
                sub: None,
            },
            RoomCommand::Stage {
                sub: "c0".into(),
                on: true,
            },
            RoomCommand::Mute {
                sub: "c0".into(),
                muted: true,
            },
            RoomCommand::Remove { sub: "c0".into() },
            RoomCommand::End,
        ] {
            assert!(matches!(
                st.command(&obs, cmd, c.at()),
                Err(CommandError::Forbidden { .. })
            ));
        }
        let after = st.snapshot();
        assert_eq!(before.stage, after.stage);
        assert_eq!(before.muted, after.muted);
        assert_eq!(after.lesson, LessonState::Live);
    }

    #[test]
    fn mute_and_remove() {
        let (mut st, c, teacher, cl) = lesson_with(2);
        st.command(
            &teacher,
            RoomCommand::Mute {
                sub: "c1".into(),
                muted: true,
            },
            c.at(),
        )
        .unwrap();
        assert!(st.is_muted("c1"));
        assert!(matches!(
            st.command(
                &cl[1],
                RoomCommand::Mute {
                    sub: "c1".into(),
                    muted: false
                },
                c.at()
            ),
            Err(CommandError::Forbidden { .. })
        ));
        st.command(&teacher, RoomCommand::Remove { sub: "c0".into() }, c.at())
            .unwrap();
        assert!(st.is_removed("c0"));
        assert!(st
            .command(&teacher, RoomCommand::Remove { sub: "t".into() }, c.at())
            .is_err());
    }

    #[test]
    fn attendance_counts_stretches_not_sessions() {
        let mut st = RoomState::new("r", RoomRules::default());
        let mut c = Clock::new();
        let t = claims("t", Role::Teacher);
        let a = claims("a", Role::Classroom);
        st.session_up(&t, true, c.at());
        st.session_up(&a, true, c.at());
        st.session_up(&a, false, c.at());
        let at = c.advance(10_000);
        // Both of a's sessions end: one stretch of 10 s.
        st.session_down("a", Role::Classroom, true, at);
        st.session_down("a", Role::Classroom, false, at);
        c.advance(5_000);
        st.session_up(&a, false, c.at());
        let at = c.advance(2_000);
        let rows = st.attendance(at);
        let ra = rows.iter().find(|r| r.sub == "a").unwrap();
        assert_eq!(ra.joins, 2);
        assert_eq!(ra.connected_ms, 12_000);
        assert!(ra.present);
        let rt = rows.iter().find(|r| r.sub == "t").unwrap();
        assert_eq!(rt.connected_ms, 17_000);
        st.end(at);
        let rows = st.attendance(c.advance(60_000));
        assert!(rows
            .iter()
            .all(|r| !r.present && r.last_left_unix_ms.is_some()));
        assert_eq!(
            rows.iter().find(|r| r.sub == "a").unwrap().connected_ms,
            12_000
        );
        let csv = attendance_csv(&rows);
        assert_eq!(csv.lines().count(), 3);
        assert!(csv.contains("a,a-name,classroom,"));
    }

    #[test]
    fn lesson_ends_after_teacher_timeout_not_before() {
        let rules = RoomRules {
            teacher_timeout: Duration::from_secs(60),
            ..RoomRules::default()
        };
        let mut st = RoomState::new("r", rules);
        let mut c = Clock::new();
        let t = claims("t", Role::Teacher);
        st.session_up(&t, true, c.at());
        st.session_down("t", Role::Teacher, true, c.advance(1000));
        assert!(st
            .tick(c.advance(59_000))
            .iter()
            .all(|e| !matches!(e, RoomEvent::Lesson { .. })));
        // The teacher comes back in time: the lesson and its state go on.
        st.session_up(&t, true, c.advance(500));
        st.session_down("t", Role::Teacher, true, c.advance(500));
        assert_eq!(st.lesson(), LessonState::Live);
        let ev = st.tick(c.advance(60_000));
        assert!(ev.contains(&RoomEvent::Lesson {
            state: LessonState::Ended
        }));
        assert!(st.command(&t, RoomCommand::Start, c.at()).is_err());
    }

    #[test]
    fn tiles_put_hands_first_and_rotate_the_rest() {
        let (mut st, mut c, teacher, cl) = lesson_with(4);
        let at = c.advance(100);
        st.command(
            &cl[3],
            RoomCommand::Hand {
                raised: true,
                sub: None,
            },
            at,
        )
        .unwrap();
        assert_eq!(st.tiles()[0], "c3");
        st.command(
            &teacher,
            RoomCommand::Pin {
                sub: "c1".into(),
                pinned: true,
            },
            at,
        )
        .unwrap();
        assert_eq!(&st.tiles()[..2], ["c1", "c3"]);
        let rest_before: Vec<String> = st.tiles()[2..].to_vec();
        st.tick(c.advance(16_000));
        let rest_after: Vec<String> = st.tiles()[2..].to_vec();
        assert_eq!(&st.tiles()[..2], ["c1", "c3"]);
        assert_ne!(rest_before, rest_after);
        let mut a = rest_after.clone();
        a.sort();
        let mut b = rest_before.clone();
        b.sort();
        assert_eq!(a, b);
        // Only publishing classrooms have tiles.
        assert_eq!(st.tiles().len(), 4);
    }

    #[test]
    fn commands_parse_from_json() {
        let c: RoomCommand =
            serde_json::from_str(r#"{"type":"stage","sub":"c1","on":true}"#).unwrap();
        assert_eq!(
            c,
            RoomCommand::Stage {
                sub: "c1".into(),
                on: true
            }
        );
        let c: RoomCommand = serde_json::from_str(r#"{"type":"hand","raised":true}"#).unwrap();
        assert_eq!(
            c,
            RoomCommand::Hand {
                raised: true,
                sub: None
            }
        );
        assert!(serde_json::from_str::<RoomCommand>(r#"{"type":"explode"}"#).is_err());
        let e = serde_json::to_value(RoomEvent::Mute {
            sub: "c".into(),
            muted: true,
        })
        .unwrap();
        assert_eq!(e["type"], "mute");
    }
}
