//! The camera's place in the capture pipeline: a source bin that can fail, be removed and be
//! added again while the pipeline runs. An `input-selector` (`camsel`) chooses between it and
//! a test pattern that always runs; `camera_watch::CameraWatch` decides, this thread acts.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;

use crate::camera_watch::{Action, CameraState, CameraWatch};
use crate::capture::{camera_usable, PipelineError};

/// Prefix of the camera bins' names, so the bus reader knows a camera's errors.
pub const BIN_PREFIX: &str = "camerasrc";
/// The selector between the camera and the test pattern.
pub const SELECTOR: &str = "camsel";

/// What the camera does, for `/status` and `/metrics`.
#[derive(Debug, Default)]
pub struct CameraStats {
    /// `live`, `starting`, `test pattern`; empty without a camera to watch.
    pub state: Mutex<&'static str>,
    /// Times a live camera was lost, and came back.
    pub losses: AtomicU64,
    pub returns: AtomicU64,
}

impl CameraStats {
    pub fn snapshot(&self) -> serde_json::Value {
        let state = *self.state.lock().unwrap_or_else(|p| p.into_inner());
        serde_json::json!({
            "state": if state.is_empty() { None } else { Some(state) },
            "losses": self.losses.load(Ordering::Relaxed),
            "returns": self.returns.load(Ordering::Relaxed),
        })
    }
}

/// A camera source: the element(s) that produce its picture, and its device file if it has
/// one (looked for before each start).
#[derive(Debug, Clone)]
pub struct CameraSpec {
    pub source: String,
    pub device: Option<String>,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

impl CameraSpec {
    /// The bin's description: the source, converted to what the test pattern sends, so the
    /// encoders see one format whichever is on.
    pub fn bin_description(&self) -> String {
        format!(
            "{} ! videoconvert ! videoscale ! videorate ! \
             capsfilter caps=video/x-raw,format=I420,width={},height={},framerate={}/1",
            self.source, self.width, self.height, self.fps
        )
    }
}

/// Tells the watch that a camera element posted an error.
#[derive(Debug, Clone)]
pub struct FailureSender(Sender<String>);

impl FailureSender {
    /// Takes the message if it comes from inside a camera bin.
    pub fn offer(&self, msg: &gst::Message) -> bool {
        let gst::MessageView::Error(e) = msg.view() else {
            return false;
        };
        let mut obj = msg.src().cloned();
        while let Some(o) = obj {
            if o.name().starts_with(BIN_PREFIX) {
                let _ = self.0.send(e.error().to_string());
                return true;
            }
            obj = o.parent();
        }
        false
    }
}

/// The running watch; stops with the pipeline or on drop.
pub struct CameraSwitch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for CameraSwitch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A channel for camera failures: the sender goes to the bus reader, the receiver to `start`.
pub fn failures() -> (FailureSender, Receiver<String>) {
    let (tx, rx) = std::sync::mpsc::channel();
    (FailureSender(tx), rx)
}

/// Starts watching: the camera is tried at once, the test pattern runs until it shows.
pub fn start(
    pipeline: &gst::Pipeline,
    spec: CameraSpec,
    failures: (FailureSender, Receiver<String>),
    stats: Arc<CameraStats>,
) -> Result<CameraSwitch, PipelineError> {
    let selector = pipeline
        .by_name(SELECTOR)
        .ok_or_else(|| PipelineError::Setup(format!("{SELECTOR} missing")))?;
    // The test pattern is the selector's only input so far.
    let fallback = selector
        .sink_pads()
        .into_iter()
        .next()
        .ok_or_else(|| PipelineError::Setup(format!("{SELECTOR} without the test pattern")))?;
    selector.set_property("active-pad", &fallback);
    // A description that cannot be parsed will never work: say so at start.
    gst::parse::bin_from_description(&spec.bin_description(), true)
        .map_err(|e| PipelineError::Setup(format!("camera {:?}: {e}", spec.source)))?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut worker = Worker {
        pipeline: pipeline.downgrade(),
        selector,
        fallback,
        spec,
        failures_tx: failures.0,
        failures: failures.1,
        stats,
        current: None,
        serial: 0,
    };
    let stop2 = stop.clone();
    let thread = std::thread::Builder::new()
        .name("camera-watch".into())
        .spawn(move || worker.run(&stop2))
        .map_err(|e| PipelineError::Setup(e.to_string()))?;
    Ok(CameraSwitch {
        stop,
        thread: Some(thread),
    })
}

struct Running {
    bin: gst::Bin,
    pad: gst::Pad,
    last_picture: Arc<Mutex<Option<Instant>>>,
}

struct Worker {
    pipeline: gst::glib::WeakRef<gst::Pipeline>,
    selector: gst::Element,
    fallback: gst::Pad,
    spec: CameraSpec,
    failures_tx: FailureSender,
    failures: Receiver<String>,
    stats: Arc<CameraStats>,
    current: Option<Running>,
    serial: u64,
}

impl Worker {
    fn run(&mut self, stop: &AtomicBool) {
        let mut watch = CameraWatch::new(Instant::now(), std::process::id() as u64);
        while !stop.load(Ordering::Relaxed) && self.pipeline.upgrade().is_some() {
            let was_live = matches!(watch.state(), CameraState::Live { .. });
            let action = match self.failures.recv_timeout(Duration::from_millis(100)) {
                Ok(why) => {
                    tracing::debug!("camera failed: {why}");
                    watch.on_failure(Instant::now())
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    let last = self
                        .current
                        .as_ref()
                        .and_then(|r| *r.last_picture.lock().unwrap_or_else(|p| p.into_inner()));
                    let present = self.spec.device.as_deref().is_none_or(camera_usable);
                    watch.tick(Instant::now(), last, present)
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            };
            match action {
                Some(Action::Start) => {
                    if let Err(e) = self.add() {
                        tracing::debug!("camera did not start: {e}");
                        self.failures_tx.0.send(e).ok();
                    }
                }
                Some(Action::UseCamera) => {
                    if let Some(r) = &self.current {
                        self.selector.set_property("active-pad", &r.pad);
                        if watch.returns > 0 {
                            tracing::info!("camera back: sending its picture again");
                        } else {
                            tracing::info!("camera live");
                        }
                    }
                }
                Some(Action::Fallback) => {
                    self.selector.set_property("active-pad", &self.fallback);
                    self.remove();
                    if was_live {
                        tracing::warn!("camera lost: sending the test pattern until it is back");
                    }
                }
                None => {}
            }
            *self.stats.state.lock().unwrap_or_else(|p| p.into_inner()) = watch.state().name();
            self.stats.losses.store(watch.losses, Ordering::Relaxed);
            self.stats.returns.store(watch.returns, Ordering::Relaxed);
        }
        self.remove();
    }

    /// Builds the camera bin, links it to a new selector input and starts it.
    fn add(&mut self) -> Result<(), String> {
        self.remove();
        let pipeline = self.pipeline.upgrade().ok_or("pipeline gone")?;
        let bin = gst::parse::bin_from_description(&self.spec.bin_description(), true)
            .map_err(|e| e.to_string())?;
        self.serial += 1;
        bin.set_property("name", format!("{BIN_PREFIX}{}", self.serial));
        let src = bin.static_pad("src").ok_or("camera bin without output")?;
        let last_picture = Arc::new(Mutex::new(None));
        let (seen, failures, weak) = (
            last_picture.clone(),
            self.failures_tx.clone(),
            self.pipeline.clone(),
        );
        let segment_sent = AtomicBool::new(false);
        src.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
            move |_, info| {
                match &mut info.data {
                    Some(gst::PadProbeData::Buffer(buf)) => {
                        // Stamped with the pipeline's running time on arrival, like the test
                        // pattern, whatever clock the source kept.
                        let rt = weak.upgrade().and_then(|p| p.current_running_time());
                        let b = buf.make_mut();
                        b.set_pts(rt);
                        b.set_dts(gst::ClockTime::NONE);
                        *seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                    }
                    Some(gst::PadProbeData::Event(ev)) => match ev.type_() {
                        gst::EventType::Eos => {
                            let _ = failures.0.send("camera stream ended".into());
                            // Kept from the selector, which would end the whole stream.
                            info.data.take();
                            return gst::PadProbeReturn::Handled;
                        }
                        gst::EventType::Segment => {
                            // One plain time segment from 0, to match the stamps above.
                            if segment_sent.swap(true, Ordering::Relaxed) {
                                return gst::PadProbeReturn::Drop;
                            }
                            let seg = gst::FormattedSegment::<gst::ClockTime>::new();
                            *ev = gst::event::Segment::new(&seg);
                        }
                        _ => {}
                    },
                    _ => {}
                }
                gst::PadProbeReturn::Ok
            },
        );
        pipeline.add(&bin).map_err(|e| e.to_string())?;
        let sink = self
            .selector
            .request_pad_simple("sink_%u")
            .ok_or("no selector input")?;
        let running = Running {
            bin: bin.clone(),
            pad: sink.clone(),
            last_picture,
        };
        self.current = Some(running);
        src.link(&sink).map_err(|e| format!("link: {e:?}"))?;
        bin.sync_state_with_parent().map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Stops and removes the camera bin, if any.
    fn remove(&mut self) {
        let Some(r) = self.current.take() else {
            return;
        };
        let _ = r.bin.set_state(gst::State::Null);
        if let Some(src) = r.bin.static_pad("src") {
            let _ = src.unlink(&r.pad);
        }
        self.selector.release_request_pad(&r.pad);
        if let Some(p) = self.pipeline.upgrade() {
            let _ = p.remove(&r.bin);
        }
    }
}
