//! `classroom-agent`: publishes a classroom PC's camera and voice (WHIP) and plays the lesson
//! (WHEP) through the SFU, reconnecting by itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};
use url::Url;

use classroom_agent::adapt::ladder;
use classroom_agent::camera::CameraStats;
use classroom_agent::capture::{
    camera_usable, first_camera, has_microphone, screen_capturable, AudioSource, Capture,
    CaptureConfig, CoursewareSource, FrameRoute, VideoSource,
};
use classroom_agent::config::AgentFile;
use classroom_agent::frame::VideoCodec;
use classroom_agent::layers::{camera_layers, courseware_layer, Role};
use classroom_agent::peer::supervise;
use classroom_agent::playback::{PlayTarget, Playback};
use classroom_agent::status::{AgentStatus, SessionStats};
use classroom_agent::whip::{Endpoint, WhipClient};
use classroom_agent::{publish, subscribe};

#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Config file (TOML, see deploy/agent.toml); the command line wins over it.
    #[arg(long, env = "CLASSROOM_CONFIG")]
    config: Option<std::path::PathBuf>,
    /// SFU base URL (WHIP at /whip/ROOM, WHEP at /whep/ROOM).
    #[arg(long, env = "CLASSROOM_SFU", default_value = "http://127.0.0.1:7800")]
    sfu: Url,
    /// The lesson's room (also taken from a token URL's answer).
    #[arg(long, env = "CLASSROOM_ROOM")]
    room: Option<String>,
    /// Join token (JWT) for the room.
    #[arg(long, env = "CLASSROOM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Fetch the join token at start from this URL, and again whenever the SFU refuses it
    /// (expired): the scheduler's /api/plans/P/lessons/L/join (with --id), or one answering a
    /// bare token.
    #[arg(long, env = "CLASSROOM_TOKEN_URL", conflicts_with = "token")]
    token_url: Option<String>,
    /// This classroom's class id (a teacher PC: the teacher's id) in the timetable.
    #[arg(long, env = "CLASSROOM_ID")]
    id: Option<String>,
    /// The school's id in the timetable (shown in /status and the logs).
    #[arg(long, env = "CLASSROOM_SCHOOL")]
    school: Option<String>,
    /// teacher publishes the lesson; classroom plays it (and offers its own feed).
    #[arg(long, value_enum, default_value = "classroom")]
    role: Role,
    /// Camera: test, auto (autovideosrc), v4l2:/dev/videoN or none. Default: the first
    /// /dev/video* device, else the test pattern.
    #[arg(long)]
    video: Option<VideoSource>,
    /// Microphone: test, auto, pulse, alsa, alsa:DEVICE or none. Default: autoaudiosrc when
    /// ALSA lists a capture device, else a test tone.
    #[arg(long)]
    audio: Option<AudioSource>,
    /// Courseware as a second video track (teacher): test, screen (the X display),
    /// slides:FOLDER (its PNG/JPEG images in name order, looping) or none.
    #[arg(long, default_value = "none")]
    courseware: CoursewareSource,
    /// With slides:FOLDER, how long each slide shows.
    #[arg(long, default_value_t = 10)]
    slide_seconds: u64,
    /// Courseware frame rate: slides need few frames, and a readable size matters more.
    #[arg(long, default_value_t = 5)]
    courseware_fps: u32,
    #[arg(long, default_value = "vp8")]
    codec: VideoCodec,
    /// Camera size (the top simulcast layer) and frame rate; also the picture size of an
    /// H.264 recording (`--play file:`).
    #[arg(long, default_value_t = 1280)]
    width: u32,
    #[arg(long, default_value_t = 720)]
    height: u32,
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Send the camera as one layer instead of simulcast.
    #[arg(long)]
    no_simulcast: bool,
    /// Where the lesson plays: screen, none or file:PATH (Matroska). Default: screen for a
    /// classroom, none for the teacher.
    #[arg(long)]
    play: Option<PlayTarget>,
    /// Ceiling for everything the agent sends, kbit/s (the school's share of its uplink).
    #[arg(long)]
    max_kbps: Option<u64>,
    /// Send media through this UDP relay (e.g. the loadtest's link emulator) instead of to
    /// the SFU's candidates.
    #[arg(long)]
    media_via: Option<std::net::SocketAddr>,
    /// Local address for /status (JSON) and /metrics (Prometheus); "off" to disable.
    #[arg(long, default_value = "127.0.0.1:7990")]
    status: String,
    /// Jitter allowance of playback, milliseconds.
    #[arg(long, default_value_t = 200)]
    latency_ms: u64,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // journald stamps lines itself; colours would end up as escape codes there.
        .with_ansi(false)
        .init();
    let matches = Args::command().get_matches();
    let mut args = Args::from_arg_matches(&matches)?;
    if let Some(path) = args.config.clone() {
        let file = AgentFile::read(&path)?;
        apply_file(&mut args, &matches, file);
        tracing::info!("config: {}", path.display());
    }
    gstreamer::init().context("GStreamer did not initialise")?;

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone())?;
    }

    let token = match (args.token.clone(), args.token_url.clone()) {
        (Some(t), _) => t,
        (None, Some(url)) => {
            let joined = match classroom_agent::join::fetch(&url, args.id.as_deref(), &stop) {
                Ok(j) => j,
                // SIGTERM while waiting for the scheduler: a clean stop.
                Err(classroom_agent::join::FetchError::Stopped) => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            // The token is good for its own room only.
            if let Some(r) = joined.room {
                if args.room.as_ref().is_some_and(|mine| *mine != r) {
                    tracing::warn!("token: the answer is for room {r:?}; joining that one");
                }
                args.room = Some(r);
            }
            tracing::info!("token: fetched from {url}");
            joined.token
        }
        (None, None) => bail!(
            "no join token: give --token (CLASSROOM_TOKEN) or --token-url, or token or \
             token_url in the config file"
        ),
    };
    let Some(room) = args.room.clone() else {
        bail!("no room: give --room (CLASSROOM_ROOM) or room in the config file");
    };
    tracing::info!(
        school = args.school.as_deref().unwrap_or("-"),
        id = args.id.as_deref().unwrap_or("-"),
        room,
        role = args.role.as_str(),
        "lesson"
    );
    let mut client = WhipClient::new(args.sfu.clone(), token)?;
    if let Some(url) = args.token_url.clone() {
        client = client.renewing_from(url, args.id.clone());
    }
    let video = match args.video.clone().unwrap_or_else(|| match first_camera() {
        Some(dev) => VideoSource::V4l2(dev),
        None => VideoSource::Test,
    }) {
        VideoSource::V4l2(dev) => {
            if !camera_usable(&dev) {
                tracing::warn!(
                    "camera unavailable ({dev} cannot be opened): sending the test pattern \
                     until it can be"
                );
            }
            VideoSource::V4l2(dev)
        }
        v => v,
    };
    let audio = args.audio.clone().unwrap_or_else(|| {
        if has_microphone() {
            AudioSource::Auto
        } else {
            AudioSource::Test
        }
    });
    let play = args.play.clone().unwrap_or(match args.role {
        Role::Teacher => PlayTarget::None,
        Role::Classroom => PlayTarget::Screen,
    });
    let publishing = !(video == VideoSource::None
        && audio == AudioSource::None
        && args.courseware == CoursewareSource::None);
    if !publishing && play == PlayTarget::None {
        bail!("nothing to do: no video, no audio and --play none");
    }

    let via = args.media_via;
    let pub_stats = Arc::new(SessionStats::default());
    let play_stats = Arc::new(SessionStats::default());
    let camera_stats = Arc::new(CameraStats::default());
    if args.status != "off" {
        let addr: std::net::SocketAddr = args
            .status
            .parse()
            .with_context(|| format!("--status {}: expected HOST:PORT or off", args.status))?;
        let status = Arc::new(AgentStatus {
            role: args.role.as_str(),
            room: room.clone(),
            school: args.school.clone(),
            id: args.id.clone(),
            started: std::time::Instant::now(),
            publish: pub_stats.clone(),
            play: play_stats.clone(),
            camera: camera_stats.clone(),
        });
        let local = classroom_agent::status::serve(addr, status, stop.clone())
            .with_context(|| format!("status endpoint on {addr}"))?;
        tracing::info!("status on http://{local}/status and /metrics");
    }

    // Each session thread reports here when it ends; the first failure ends the agent.
    let (done_tx, done_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
    let mut threads = 0;

    if publishing {
        let layers = camera_layers(
            args.role,
            args.width,
            args.height,
            args.fps,
            !args.no_simulcast,
        );
        let mut courseware = args.courseware.clone();
        if courseware == CoursewareSource::Screen {
            if let Err(e) = screen_capturable() {
                let shown = std::env::var("DISPLAY").unwrap_or_default();
                tracing::error!(
                    "courseware: cannot capture the screen (DISPLAY={shown:?}): {e}; \
                     teaching on without courseware"
                );
                pub_stats.set_error(format!("courseware: cannot capture the screen: {e}"));
                courseware = CoursewareSource::None;
            }
        }
        let cfg = CaptureConfig {
            video: video.clone(),
            audio: audio.clone(),
            codec: args.codec,
            layers: layers.clone(),
            courseware: match courseware {
                CoursewareSource::Slides { dir, .. } => CoursewareSource::Slides {
                    dir,
                    every: std::time::Duration::from_secs(args.slide_seconds.max(1)),
                },
                other => other,
            },
            courseware_layer: courseware_layer(1280, 720, args.courseware_fps),
        };
        tracing::info!(?video, ?audio, courseware = ?cfg.courseware, codec = ?args.codec, "capture");
        let route = FrameRoute::default();
        let capture = Arc::new(Capture::start(&cfg, route.clone(), camera_stats.clone())?);
        let (client, room, stop, stats) = (
            client.clone(),
            room.clone(),
            stop.clone(),
            pub_stats.clone(),
        );
        let setup = publish::PublishSetup {
            codec: args.codec,
            capture: capture.clone(),
            route: route.clone(),
            stats: stats.clone(),
            steps: ladder::build(
                if video == VideoSource::None {
                    &[]
                } else {
                    &layers
                },
                (cfg.courseware != CoursewareSource::None).then_some(&cfg.courseware_layer),
            ),
            cap_bps: args.max_kbps.map(|k| k * 1000),
        };
        let role = args.role;
        let done = done_tx.clone();
        threads += 1;
        std::thread::Builder::new()
            .name("whip".into())
            .spawn(move || {
                let res = supervise(
                    &client,
                    Endpoint::Whip,
                    &room,
                    &stop,
                    &stats,
                    via,
                    |socket, now| publish::prepare(socket, &setup, now),
                );
                route.disconnect();
                capture.stop();
                let _ = done.send(match res {
                    Ok(()) => Ok(()),
                    // The SFU takes classroom feeds only once it slots them; until then a
                    // classroom still plays the lesson.
                    Err(e) if role == Role::Classroom => {
                        tracing::warn!("whip: not publishing this classroom's feed: {e}");
                        Ok(())
                    }
                    Err(e) => Err(anyhow::anyhow!("whip: {e}")),
                });
            })?;
    }

    let playback = Playback::start(
        &play,
        args.codec,
        Duration::from_millis(args.latency_ms),
        (args.width, args.height),
        play_stats.clone(),
    )?
    .map(Arc::new);
    if let Some(playback) = playback.clone() {
        let (client, room, stop, stats) = (
            client.clone(),
            room.clone(),
            stop.clone(),
            play_stats.clone(),
        );
        let done = done_tx.clone();
        threads += 1;
        std::thread::Builder::new()
            .name("whep".into())
            .spawn(move || {
                let res = supervise(
                    &client,
                    Endpoint::Whep,
                    &room,
                    &stop,
                    &stats,
                    via,
                    |socket, now| subscribe::prepare(socket, playback.clone(), stats.clone(), now),
                );
                let _ = done.send(res.map_err(|e| anyhow::anyhow!("whep: {e}")));
            })?;
    }

    drop(done_tx);
    let mut result = Ok(());
    for _ in 0..threads {
        // A thread that panicked drops its sender: the channel closes early.
        let Ok(r) = done_rx.recv() else {
            stop.store(true, Ordering::Relaxed);
            result = Err(anyhow::anyhow!("a session thread panicked"));
            break;
        };
        if let Err(e) = r {
            tracing::error!("{e:#}");
            // One side failing for good ends the agent: systemd restarts it.
            stop.store(true, Ordering::Relaxed);
            result = Err(e);
        }
    }
    if let Some(p) = playback {
        p.finish(Duration::from_secs(5));
    }
    tracing::info!(
        publish = %pub_stats.snapshot(),
        play = %play_stats.snapshot(),
        "stopped"
    );
    result
}

/// Takes from the config file what the command line (or its environment variables) did not
/// give. The file's values were parsed and checked when it was read.
fn apply_file(args: &mut Args, m: &ArgMatches, f: AgentFile) {
    let given = |id: &str| {
        matches!(
            m.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    };
    // Options with a default on the command line: the file's value replaces the default.
    fn fill<T>(given: bool, arg: &mut T, file: Option<T>) {
        if let (false, Some(v)) = (given, file) {
            *arg = v;
        }
    }
    fill(given("sfu"), &mut args.sfu, f.sfu);
    fill(given("role"), &mut args.role, f.role);
    fill(given("codec"), &mut args.codec, f.codec);
    fill(given("status"), &mut args.status, f.status);
    fill(
        given("courseware"),
        &mut args.courseware,
        f.devices.courseware,
    );
    fill(
        given("slide_seconds"),
        &mut args.slide_seconds,
        f.devices.slide_seconds,
    );
    // No defaults on the command line for these: the file fills what is missing.
    if args.token.is_none() && args.token_url.is_none() {
        args.token = f.token;
        args.token_url = f.token_url;
    }
    args.room = args.room.take().or(f.room);
    args.id = args.id.take().or(f.id);
    args.school = args.school.take().or(f.school);
    args.max_kbps = args.max_kbps.or(f.max_kbps);
    args.video = args.video.take().or(f.devices.video);
    args.audio = args.audio.take().or(f.devices.audio);
    args.play = args.play.take().or(f.play);
}
