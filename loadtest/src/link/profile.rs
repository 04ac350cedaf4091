//! Named link profiles (the DESIGN.md table), profiles from TOML, `--schedule` strings and
//! `--mix` weighted assignment of profiles to classrooms.
//!
//! A profile describes a classroom's access link in human units: kbit/s down (toward the
//! classroom) and up, round-trip time (split half each way), jitter, loss (the same each way) and
//! changes over time. [`ProfileSpec::downlink`] and [`ProfileSpec::uplink`] turn it into the
//! one-direction [`LinkConfig`]s the model runs.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::model::{LinkChange, LinkConfig, LinkError, LossModel, QueueLimit};

/// Errors in profiles, schedules and mixes.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("unknown profile {name:?} (known: {known})")]
    Unknown { name: String, known: String },
    #[error("bad profile name {0:?}: use letters, digits, '-', '_' and '.'")]
    BadName(String),
    #[error("bad mix {0:?}: expected NAME[:WEIGHT],... with positive integer weights")]
    BadMix(String),
    #[error("bad schedule entry {entry:?}: {why}")]
    BadSchedule { entry: String, why: String },
    #[error("bad duration {0:?}: expected e.g. 10s, 1.5s, 250ms, 2m or a number of seconds")]
    BadDuration(String),
    #[error("profile {name:?}: {source}")]
    Link { name: String, source: LinkError },
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("profiles file: {0}")]
    Toml(#[from] toml::de::Error),
}

/// Default buffer: what a typical access router holds, in milliseconds at the starting rate.
pub const DEFAULT_QUEUE_MS: u64 = 250;

/// A classroom's link in human units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSpec {
    /// Toward the classroom, kbit/s; absent is unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down_kbps: Option<u64>,
    /// From the classroom, kbit/s; absent is unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_kbps: Option<u64>,
    /// Round-trip propagation time; half is applied each way.
    #[serde(default)]
    pub rtt_ms: u64,
    /// Each one-way delay varies uniformly by ± this much (order is kept).
    #[serde(default)]
    pub jitter_ms: u64,
    /// Loss each way, percent.
    #[serde(default)]
    pub loss_pct: f64,
    /// Mean loss burst in packets (Gilbert-Elliott); absent: independent losses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_burst: Option<f64>,
    /// Router buffer, as milliseconds at the first finite rate (a byte limit, so it drains slower
    /// after a capacity drop).
    #[serde(default = "default_queue_ms")]
    pub queue_ms: u64,
    /// Changes over time, at offsets from the start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedule: Vec<ScheduleStep>,
}

fn default_queue_ms() -> u64 {
    DEFAULT_QUEUE_MS
}

impl Default for ProfileSpec {
    /// No impairment at all.
    fn default() -> Self {
        ProfileSpec {
            down_kbps: None,
            up_kbps: None,
            rtt_ms: 0,
            jitter_ms: 0,
            loss_pct: 0.0,
            loss_burst: None,
            queue_ms: DEFAULT_QUEUE_MS,
            schedule: Vec::new(),
        }
    }
}

/// One change in a profile's schedule; absent fields keep their value.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleStep {
    /// Offset from the start: `"10s"`, `"1.5s"`, `"250ms"`, `"2m"` or a number of seconds.
    #[serde(serialize_with = "ser_offset", deserialize_with = "de_offset")]
    pub at: Duration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down_kbps: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_kbps: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_pct: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_burst: Option<f64>,
}

fn ser_offset<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{}ms", d.as_millis()))
}

fn de_offset<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(f64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Secs(s) if s.is_finite() && s >= 0.0 => Ok(Duration::from_secs_f64(s)),
        Raw::Secs(s) => Err(serde::de::Error::custom(format!("bad offset {s}"))),
        Raw::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
    }
}

/// `"10s"`, `"1.5s"`, `"250ms"`, `"2m"`, `"1h"` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, ProfileError> {
    let t = text.trim();
    let bad = || ProfileError::BadDuration(text.to_string());
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

/// Which way a packet travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Toward the classroom (SFU → client).
    Down,
    /// From the classroom (client → SFU).
    Up,
}

impl ProfileSpec {
    /// The link toward the classroom.
    pub fn downlink(&self) -> Result<LinkConfig, LinkError> {
        self.link(Direction::Down)
    }

    /// The link from the classroom.
    pub fn uplink(&self) -> Result<LinkConfig, LinkError> {
        self.link(Direction::Up)
    }

    /// One direction as a model configuration.
    pub fn link(&self, dir: Direction) -> Result<LinkConfig, LinkError> {
        let pick = |down: Option<u64>, up: Option<u64>| match dir {
            Direction::Down => down,
            Direction::Up => up,
        };
        let rate_kbps = pick(self.down_kbps, self.up_kbps);
        let mut loss_pct = self.loss_pct;
        let mut burst = self.loss_burst;
        let base_loss = loss_model(loss_pct, burst)?;

        let mut steps: Vec<&ScheduleStep> = self.schedule.iter().collect();
        steps.sort_by_key(|s| s.at);
        let mut schedule = Vec::new();
        for step in steps {
            let loss = if step.loss_pct.is_some() || step.loss_burst.is_some() {
                loss_pct = step.loss_pct.unwrap_or(loss_pct);
                burst = step.loss_burst.or(burst);
                Some(loss_model(loss_pct, burst)?)
            } else {
                None
            };
            schedule.push(LinkChange {
                at: step.at,
                rate_bps: pick(step.down_kbps, step.up_kbps).map(|k| k * 1000),
                delay: step.rtt_ms.map(one_way),
                jitter: step.jitter_ms.map(Duration::from_millis),
                loss,
            });
        }

        // Size the buffer at the first finite rate; a link never limited needs none.
        let sizing_bps = rate_kbps
            .map(|k| k * 1000)
            .or_else(|| schedule.iter().find_map(|c| c.rate_bps))
            .filter(|r| *r > 0);
        let queue = match sizing_bps {
            Some(bps) => QueueLimit::Bytes(((bps * self.queue_ms / 8000) as usize).max(3000)),
            None => QueueLimit::Unlimited,
        };

        let config = LinkConfig {
            rate_bps: rate_kbps.map(|k| k * 1000),
            delay: one_way(self.rtt_ms),
            jitter: Duration::from_millis(self.jitter_ms),
            loss: base_loss,
            queue,
            schedule,
            ..LinkConfig::default()
        };
        config.validate()?;
        Ok(config)
    }
}

fn one_way(rtt_ms: u64) -> Duration {
    Duration::from_micros(rtt_ms * 500)
}

fn loss_model(pct: f64, burst: Option<f64>) -> Result<LossModel, LinkError> {
    match burst {
        Some(b) if b > 1.0 => LossModel::bursty(pct / 100.0, b),
        Some(b) if b < 1.0 => Err(LinkError::BadBurst(b)),
        _ => LossModel::random(pct / 100.0),
    }
}

/// The built-in profile names, in the DESIGN.md table's order, then `clean`.
pub const BUILTIN_NAMES: &[&str] = &[
    "city-fiber",
    "town-4m",
    "rural-2m",
    "teaching-point-1m",
    "satellite",
    "congested",
    "clean",
];

/// A profile from the DESIGN.md table ("Networks to design for"), or `clean` (no impairment).
///
/// The table gives rate, RTT and loss; jitter is ours (small, realistic for each kind of link).
/// `congested` runs at 3 Mbit/s down, falls to 0.8 Mbit/s at 10 s and comes back at 25 s, with
/// 5 % loss in bursts of 4 packets on average.
pub fn builtin(name: &str) -> Option<ProfileSpec> {
    let p = |down, up, rtt_ms, jitter_ms, loss_pct| ProfileSpec {
        down_kbps: Some(down),
        up_kbps: Some(up),
        rtt_ms,
        jitter_ms,
        loss_pct,
        ..ProfileSpec::default()
    };
    Some(match name {
        "city-fiber" => p(20_000, 10_000, 20, 1, 0.0),
        "town-4m" => p(4_000, 2_000, 60, 3, 0.5),
        "rural-2m" => p(2_000, 1_000, 100, 5, 2.0),
        "teaching-point-1m" => p(1_000, 500, 150, 8, 3.0),
        "satellite" => p(2_000, 500, 650, 10, 1.0),
        "congested" => ProfileSpec {
            loss_burst: Some(4.0),
            schedule: vec![
                ScheduleStep {
                    at: Duration::from_secs(10),
                    down_kbps: Some(800),
                    ..ScheduleStep::default()
                },
                ScheduleStep {
                    at: Duration::from_secs(25),
                    down_kbps: Some(3_000),
                    ..ScheduleStep::default()
                },
            ],
            ..p(3_000, 1_500, 80, 5, 5.0)
        },
        "clean" => ProfileSpec::default(),
        _ => return None,
    })
}

/// Parses `--schedule "10s:down=800,25s:down=5000"`. An entry is `TIME:key=value`; further
/// `key=value` tokens without a time belong to the entry before (`10s:down=800,loss=5`). Keys:
/// `down`, `up` (kbit/s), `rtt`, `jitter` (ms), `loss` (%), `burst` (packets).
pub fn parse_schedule(text: &str) -> Result<Vec<ScheduleStep>, ProfileError> {
    let mut steps: Vec<ScheduleStep> = Vec::new();
    for token in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let bad = |why: &str| ProfileError::BadSchedule {
            entry: token.to_string(),
            why: why.to_string(),
        };
        let setting = match token.split_once(':') {
            Some((at, rest)) => {
                steps.push(ScheduleStep {
                    at: parse_duration(at)?,
                    ..ScheduleStep::default()
                });
                rest
            }
            None => token,
        };
        let step = steps
            .last_mut()
            .ok_or_else(|| bad("starts without a time (e.g. 10s:down=800)"))?;
        let (key, value) = setting
            .split_once('=')
            .ok_or_else(|| bad("expected key=value"))?;
        let int = || {
            value
                .trim()
                .parse::<u64>()
                .map_err(|_| bad("expected a whole number"))
        };
        let float = || {
            value
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| bad("expected a number"))
        };
        match key.trim() {
            "down" => step.down_kbps = Some(int()?),
            "up" => step.up_kbps = Some(int()?),
            "rtt" => step.rtt_ms = Some(int()?),
            "jitter" => step.jitter_ms = Some(int()?),
            "loss" => step.loss_pct = Some(float()?),
            "burst" => step.loss_burst = Some(float()?),
            _ => return Err(bad("keys are down, up, rtt, jitter, loss, burst")),
        }
    }
    Ok(steps)
}

/// Built-in profiles plus any loaded from TOML (which may replace a built-in of the same name).
#[derive(Debug, Clone)]
pub struct Profiles {
    by_name: BTreeMap<String, ProfileSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfilesFile {
    #[serde(default)]
    profiles: BTreeMap<String, ProfileSpec>,
}

impl Default for Profiles {
    fn default() -> Self {
        Self::builtin()
    }
}

impl Profiles {
    pub fn builtin() -> Self {
        let by_name = BUILTIN_NAMES
            .iter()
            .map(|n| (n.to_string(), builtin(n).expect("listed")))
            .collect();
        Profiles { by_name }
    }

    /// Adds the `[profiles.NAME]` tables of a TOML document; each is checked.
    pub fn add_toml(&mut self, text: &str) -> Result<(), ProfileError> {
        let file: ProfilesFile = toml::from_str(text)?;
        for (name, spec) in file.profiles {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(ProfileError::BadName(name));
            }
            let check = |r: Result<LinkConfig, LinkError>| {
                r.map_err(|source| ProfileError::Link {
                    name: name.clone(),
                    source,
                })
            };
            check(spec.downlink())?;
            check(spec.uplink())?;
            self.by_name.insert(name, spec);
        }
        Ok(())
    }

    /// Built-ins plus the profiles in a TOML file.
    pub fn with_file(path: &Path) -> Result<Self, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let mut profiles = Self::builtin();
        profiles.add_toml(&text)?;
        Ok(profiles)
    }

    pub fn get(&self, name: &str) -> Result<&ProfileSpec, ProfileError> {
        self.by_name.get(name).ok_or_else(|| ProfileError::Unknown {
            name: name.to_string(),
            known: self.names().collect::<Vec<_>>().join(", "),
        })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}

/// `--mix rural-2m:60,teaching-point-1m:30,satellite:10`: profiles with integer weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix {
    entries: Vec<(String, u64)>,
}

impl FromStr for Mix {
    type Err = ProfileError;

    /// A missing weight is 1; a name may appear once.
    fn from_str(text: &str) -> Result<Self, ProfileError> {
        let bad = || ProfileError::BadMix(text.to_string());
        let mut entries: Vec<(String, u64)> = Vec::new();
        for part in text.split(',').map(str::trim) {
            let (name, weight) = match part.split_once(':') {
                Some((n, w)) => (n.trim(), w.trim().parse::<u64>().map_err(|_| bad())?),
                None => (part, 1),
            };
            if name.is_empty() || weight == 0 || entries.iter().any(|(n, _)| n == name) {
                return Err(bad());
            }
            entries.push((name.to_string(), weight));
        }
        Ok(Mix { entries })
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .entries
            .iter()
            .map(|(n, w)| format!("{n}:{w}"))
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl Mix {
    /// A mix of one profile.
    pub fn single(name: &str) -> Self {
        Mix {
            entries: vec![(name.to_string(), 1)],
        }
    }

    pub fn entries(&self) -> &[(String, u64)] {
        &self.entries
    }

    /// Fails on the first name `profiles` does not know.
    pub fn check(&self, profiles: &Profiles) -> Result<(), ProfileError> {
        self.entries
            .iter()
            .try_for_each(|(n, _)| profiles.get(n).map(|_| ()))
    }

    /// The profile name of classrooms `0..n`, deterministic. Smooth weighted round-robin: every
    /// prefix (the first k classrooms, as a ramp adds them) is within one classroom of the
    /// weights, and n a multiple of the reduced weights' sum is exact.
    pub fn assign(&self, n: usize) -> Vec<&str> {
        let g = self.entries.iter().fold(0, |g, (_, w)| gcd(g, *w));
        let weights: Vec<i128> = self.entries.iter().map(|(_, w)| (w / g) as i128).collect();
        let total: i128 = weights.iter().sum();
        let mut current = vec![0i128; weights.len()];
        (0..n)
            .map(|_| {
                for (c, w) in current.iter_mut().zip(&weights) {
                    *c += w;
                }
                // Highest current wins; ties go to the earlier entry.
                let best = (0..current.len())
                    .max_by_key(|&i| (current[i], std::cmp::Reverse(i)))
                    .expect("a mix has at least one entry");
                current[best] -= total;
                self.entries[best].0.as_str()
            })
            .collect()
    }

    /// How many of `n` classrooms get each profile, in the mix's order.
    pub fn counts(&self, n: usize) -> Vec<(&str, usize)> {
        let assigned = self.assign(n);
        self.entries
            .iter()
            .map(|(name, _)| {
                (
                    name.as_str(),
                    assigned.iter().filter(|a| *a == name).count(),
                )
            })
            .collect()
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_match_the_design_table() {
        let table = [
            ("city-fiber", 20_000_000, 10_000_000, 20, 0.0),
            ("town-4m", 4_000_000, 2_000_000, 60, 0.005),
            ("rural-2m", 2_000_000, 1_000_000, 100, 0.02),
            ("teaching-point-1m", 1_000_000, 500_000, 150, 0.03),
            ("satellite", 2_000_000, 500_000, 650, 0.01),
            ("congested", 3_000_000, 1_500_000, 80, 0.05),
        ];
        let profiles = Profiles::builtin();
        for (name, down, up, rtt_ms, loss) in table {
            let spec = profiles.get(name).unwrap();
            let (d, u) = (spec.downlink().unwrap(), spec.uplink().unwrap());
            assert_eq!((d.rate_bps, u.rate_bps), (Some(down), Some(up)), "{name}");
            assert_eq!(d.delay + u.delay, Duration::from_millis(rtt_ms), "{name}");
            assert_eq!(d.delay, u.delay, "{name}");
            assert!((d.loss.mean_loss() - loss).abs() < 1e-9, "{name}");
            assert!((u.loss.mean_loss() - loss).abs() < 1e-9, "{name}");
            assert!(matches!(d.queue, QueueLimit::Bytes(_)), "{name}");
        }
        let congested = profiles.get("congested").unwrap().downlink().unwrap();
        assert!(matches!(congested.loss, LossModel::GilbertElliott { .. }));
        let at = |s| congested.rate_bps_at(Duration::from_secs(s));
        assert_eq!(
            (at(5), at(12), at(30)),
            (Some(3_000_000), Some(800_000), Some(3_000_000))
        );
        let clean = profiles.get("clean").unwrap().downlink().unwrap();
        assert_eq!(clean, LinkConfig::default());
        let err = profiles.get("dial-up").unwrap_err().to_string();
        assert!(err.contains("rural-2m"), "{err}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        for bad in ["", "s", "10x", "-1s", "1e999"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn schedule_strings() {
        let steps = parse_schedule("10s:down=800,loss=5, 25s:down=5000,up=900").unwrap();
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0].at, Duration::from_secs(10));
        assert_eq!(
            (steps[0].down_kbps, steps[0].loss_pct),
            (Some(800), Some(5.0))
        );
        assert_eq!(
            (steps[1].down_kbps, steps[1].up_kbps),
            (Some(5000), Some(900))
        );
        for bad in [
            "down=800",
            "10s:speed=3",
            "10s:down=fast",
            "10s",
            "x:down=1",
        ] {
            assert!(parse_schedule(bad).is_err(), "{bad:?}");
        }
        // Loss changes build on what is already in force.
        let spec = ProfileSpec {
            down_kbps: Some(5000),
            loss_pct: 2.0,
            schedule: parse_schedule("10s:burst=3,20s:loss=10").unwrap(),
            ..ProfileSpec::default()
        };
        let down = spec.downlink().unwrap();
        let loss = |i: usize| down.schedule[i].loss.unwrap();
        assert!(matches!(loss(0), LossModel::GilbertElliott { .. }));
        assert!((loss(0).mean_loss() - 0.02).abs() < 1e-9);
        assert!((loss(1).mean_loss() - 0.10).abs() < 1e-9);
        assert_eq!(down.schedule[0].rate_bps, None);
    }

    #[test]
    fn toml_profiles() {
        let mut profiles = Profiles::builtin();
        profiles
            .add_toml(
                r#"
                [profiles.hill-school]
                down_kbps = 1500
                up_kbps = 600
                rtt_ms = 120
                jitter_ms = 10
                loss_pct = 4
                loss_burst = 3
                queue_ms = 400

                [[profiles.hill-school.schedule]]
                at = "30s"
                down_kbps = 300

                [[profiles.hill-school.schedule]]
                at = 45
                down_kbps = 1500
                rtt_ms = 200
                "#,
            )
            .unwrap();
        let spec = profiles.get("hill-school").unwrap().clone();
        let down = spec.downlink().unwrap();
        assert_eq!(down.rate_bps, Some(1_500_000));
        assert_eq!(down.delay, Duration::from_millis(60));
        assert_eq!(down.queue, QueueLimit::Bytes(75_000));
        assert_eq!(down.rate_bps_at(Duration::from_secs(31)), Some(300_000));
        assert_eq!(down.schedule[1].delay, Some(Duration::from_millis(100)));
        assert_eq!(spec.uplink().unwrap().schedule[0].rate_bps, None);
        // Round trip through TOML keeps it.
        let text = toml::to_string(&BTreeMap::from([("profiles", {
            BTreeMap::from([("again", spec.clone())])
        })]))
        .unwrap();
        profiles.add_toml(&text).unwrap();
        assert_eq!(profiles.get("again").unwrap(), &spec);
        assert!(profiles.get("rural-2m").is_ok());

        for bad in [
            "[profiles.x]\ndown_kbps = -1",
            "[profiles.x]\nspeed = 3",
            "[profiles.x]\nloss_pct = 150",
            "[profiles.x]\nloss_pct = 5\nloss_burst = 0.5",
            "[profiles.\"a:b\"]\nrtt_ms = 1",
            "[[profiles.x.schedule]]\nat = \"soon\"",
        ] {
            assert!(Profiles::builtin().add_toml(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mix_parsing_and_assignment() {
        let mix: Mix = "rural-2m:60,teaching-point-1m:30,satellite:10"
            .parse()
            .unwrap();
        mix.check(&Profiles::builtin()).unwrap();
        assert_eq!(
            mix.to_string(),
            "rural-2m:60,teaching-point-1m:30,satellite:10"
        );
        assert_eq!(
            mix.counts(10),
            vec![("rural-2m", 6), ("teaching-point-1m", 3), ("satellite", 1)]
        );
        assert_eq!(
            mix.counts(300),
            vec![
                ("rural-2m", 180),
                ("teaching-point-1m", 90),
                ("satellite", 30)
            ]
        );
        assert_eq!(mix.assign(57), mix.assign(57), "deterministic");
        // Every prefix stays within one classroom of the weights.
        let order = mix.assign(200);
        for k in 1..=order.len() {
            for (name, w) in mix.entries() {
                let have = order[..k].iter().filter(|a| *a == name).count() as f64;
                let want = k as f64 * *w as f64 / 100.0;
                assert!(
                    (have - want).abs() <= 1.0,
                    "{name} after {k}: {have} vs {want}"
                );
            }
        }
        assert_eq!(Mix::single("satellite").assign(3), vec!["satellite"; 3]);
        let plain: Mix = "a,b".parse().unwrap();
        assert_eq!(plain.assign(4), vec!["a", "b", "a", "b"]);

        for bad in ["", "a:0", "a:x", "a:1,a:2", ":3", "a:-1"] {
            assert!(bad.parse::<Mix>().is_err(), "{bad:?}");
        }
        let unknown: Mix = "rural-2m:1,moon-base:1".parse().unwrap();
        assert!(unknown.check(&Profiles::builtin()).is_err());
    }
}
