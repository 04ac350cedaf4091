//! Courseware from a folder of slide images (PNG or JPEG): each slide is decoded once at start,
//! scaled into the courseware size (letterboxed, never stretched), and shown for a fixed time
//! in name order, over and over. Frames go into the courseware branch through an `appsrc` at
//! the courseware frame rate, so the encoder, adaptation and keyframe requests work exactly as
//! for a screen.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

#[derive(Debug, thiserror::Error)]
pub enum SlidesError {
    #[error("cannot read the slide folder {0}: {1}")]
    Folder(PathBuf, std::io::Error),
    #[error("no slides (.png, .jpg, .jpeg) in {0}")]
    Empty(PathBuf),
    #[error("slide {0}: {1}")]
    Decode(PathBuf, String),
}

/// The slide images in `dir`, in name order.
pub fn list(dir: &Path) -> Result<Vec<PathBuf>, SlidesError> {
    let rd = std::fs::read_dir(dir).map_err(|e| SlidesError::Folder(dir.into(), e))?;
    let mut out: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.extension().and_then(|x| x.to_str()).is_some_and(|x| {
                    matches!(x.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg")
                })
        })
        .collect();
    out.sort();
    if out.is_empty() {
        return Err(SlidesError::Empty(dir.into()));
    }
    Ok(out)
}

/// Which slide shows `elapsed` into the lesson when each shows for `every`.
pub fn index_at(elapsed: Duration, every: Duration, count: usize) -> usize {
    if count == 0 {
        return 0;
    }
    let every = every.as_millis().max(1);
    ((elapsed.as_millis() / every) % count as u128) as usize
}

/// Raw I420 caps of the courseware size.
pub fn caps(width: u32, height: u32, fps: u32) -> String {
    format!(
        "video/x-raw,format=I420,width={width},height={height},framerate={}/1,pixel-aspect-ratio=1/1",
        fps.max(1)
    )
}

/// Decodes one image into a raw frame of exactly `width` x `height` (letterboxed).
pub fn decode(path: &Path, width: u32, height: u32) -> Result<gst::Buffer, SlidesError> {
    let err = |e: String| SlidesError::Decode(path.into(), e);
    let desc = format!(
        "filesrc name=src ! decodebin ! videoconvert ! videoscale add-borders=true ! \
         video/x-raw,format=I420,width={width},height={height},pixel-aspect-ratio=1/1 ! \
         appsink name=sink sync=false max-buffers=1"
    );
    let pipeline = gst::parse::launch(&desc)
        .map_err(|e| err(e.to_string()))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| err("not a pipeline".into()))?;
    let src = pipeline
        .by_name("src")
        .ok_or_else(|| err("no filesrc".into()))?;
    src.set_property("location", path.to_string_lossy().to_string());
    let sink = pipeline
        .by_name("sink")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| err("no appsink".into()))?;
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| err(e.to_string()))?;
    // A picture, or the decoder's error as soon as it says so (a file that is not an image).
    let bus = pipeline.bus();
    let began = Instant::now();
    let outcome = loop {
        if let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_mseconds(50)) {
            break Ok(sample);
        }
        let error = bus.as_ref().and_then(|b| {
            b.pop_filtered(&[gst::MessageType::Error])
                .map(|m| match m.view() {
                    gst::MessageView::Error(e) => e.error().to_string(),
                    _ => String::new(),
                })
        });
        if let Some(e) = error {
            break Err(e);
        }
        if sink.is_eos() || began.elapsed() > Duration::from_secs(10) {
            break Err("no picture decoded".into());
        }
    };
    let _ = pipeline.set_state(gst::State::Null);
    let sample = outcome.map_err(err)?;
    sample
        .buffer_owned()
        .ok_or_else(|| err("empty picture".into()))
}

/// Pushes the slides into an `appsrc` until dropped.
pub struct Feeder {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Feeder {
    /// Starts pushing `slides` (decoded frames) at `fps`, each shown for `every`.
    pub fn start(
        src: gst_app::AppSrc,
        slides: Vec<gst::Buffer>,
        fps: u32,
        every: Duration,
    ) -> Feeder {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let frame = Duration::from_secs(1) / fps.max(1);
        let thread = std::thread::Builder::new()
            .name("slides".into())
            .spawn(move || {
                let began = Instant::now();
                let mut next = began;
                let mut shown = usize::MAX;
                while !flag.load(Ordering::Relaxed) {
                    let i = index_at(began.elapsed(), every, slides.len());
                    if i != shown {
                        tracing::info!("courseware: slide {} of {}", i + 1, slides.len());
                        shown = i;
                    }
                    // Stamped with the pipeline's running time: the decoded picture carries
                    // the timestamp of its own little pipeline.
                    let mut buf = slides[i].copy();
                    {
                        let b = buf.make_mut();
                        b.set_pts(src.current_running_time());
                        b.set_dts(gst::ClockTime::NONE);
                        b.set_duration(gst::ClockTime::from_nseconds(frame.as_nanos() as u64));
                    }
                    if src.push_buffer(buf).is_err() {
                        break;
                    }
                    next += frame;
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    } else {
                        next = now;
                    }
                }
            })
            .ok();
        Feeder { stop, thread }
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slides_advance_in_order_and_loop() {
        let every = Duration::from_secs(10);
        let at = |s: u64| index_at(Duration::from_secs(s), every, 3);
        assert_eq!(
            [at(0), at(9), at(10), at(25), at(30), at(41)],
            [0, 0, 1, 2, 0, 1]
        );
        assert_eq!(index_at(Duration::from_secs(5), every, 0), 0);
        assert!(index_at(Duration::from_secs(5), Duration::ZERO, 2) < 2);
    }

    #[test]
    fn a_folder_lists_its_images_by_name() {
        let dir = std::env::temp_dir().join(format!("slides-list-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        assert!(matches!(list(&dir), Err(SlidesError::Empty(_))));
        for f in ["b.PNG", "a.jpg", "notes.txt", "c.jpeg"] {
            std::fs::write(dir.join(f), b"x").unwrap();
        }
        let names: Vec<String> = list(&dir)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.jpg", "b.PNG", "c.jpeg"]);
        // A file that is not an image fails with its name.
        gst::init().unwrap();
        match decode(&dir.join("a.jpg"), 320, 180) {
            Err(SlidesError::Decode(p, _)) => assert!(p.ends_with("a.jpg")),
            other => panic!("decoding garbage: {other:?}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(list(&dir), Err(SlidesError::Folder(..))));
    }

    #[test]
    fn an_image_becomes_a_frame_of_the_courseware_size() {
        gst::init().unwrap();
        let dir = std::env::temp_dir().join(format!("slides-decode-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let png = dir.join("s1.png");
        // A 4:3 picture made by GStreamer itself.
        let p = gst::parse::launch(&format!(
            "videotestsrc num-buffers=1 ! video/x-raw,width=640,height=480 ! pngenc ! filesink location={}",
            png.display()
        ))
        .unwrap();
        p.set_state(gst::State::Playing).unwrap();
        let done = p
            .bus()
            .unwrap()
            .timed_pop_filtered(gst::ClockTime::from_seconds(10), &[gst::MessageType::Eos]);
        p.set_state(gst::State::Null).unwrap();
        assert!(done.is_some(), "writing the test slide");
        let buf = decode(&png, 1280, 720).expect("decode");
        // I420: width x height luma plus two quarter-size chroma planes.
        assert_eq!(buf.size(), 1280 * 720 * 3 / 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
