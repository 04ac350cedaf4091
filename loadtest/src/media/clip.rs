//! The teacher's camera: a test clip encoded once per layer with GStreamer (`vp8enc`), cached as
//! IVF files keyed by the encoding parameters, and read back as VP8 frames to loop.
//!
//! GStreamer writes one file per encoded frame (`multifilesink`, a core element, so only
//! gstreamer1.0-plugins-good is needed for `vp8enc`); we pack them into one IVF file, the
//! simplest container for VP8 (32-byte file header, then 12-byte frame headers).

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Errors reading or making a clip.
#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    #[error("not an IVF file: {0}")]
    BadIvf(String),
    #[error("IVF file holds {0}, not VP8")]
    NotVp8(String),
    #[error("the clip has no keyframe")]
    NoKeyframe,
    #[error("gst-launch-1.0 failed ({status}): {stderr} (install gstreamer1.0-tools and gstreamer1.0-plugins-good)")]
    Gstreamer { status: String, stderr: String },
    #[error(
        "cannot run gst-launch-1.0: {0} (install gstreamer1.0-tools and gstreamer1.0-plugins-good)"
    )]
    NoGstreamer(io::Error),
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ClipError + '_ {
    move |err| ClipError::Io {
        path: path.to_path_buf(),
        err,
    }
}

/// One encoded VP8 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub data: Vec<u8>,
    pub keyframe: bool,
}

/// A VP8 frame is a keyframe when bit 0 of its frame tag is 0 (RFC 6386 §9.1).
pub fn is_vp8_keyframe(data: &[u8]) -> bool {
    data.len() >= 10 && data[0] & 1 == 0 && data[3..6] == [0x9d, 0x01, 0x2a]
}

/// Width and height from a VP8 keyframe header.
pub fn vp8_keyframe_size(data: &[u8]) -> Option<(u16, u16)> {
    is_vp8_keyframe(data).then(|| {
        (
            u16::from_le_bytes([data[6], data[7]]) & 0x3fff,
            u16::from_le_bytes([data[8], data[9]]) & 0x3fff,
        )
    })
}

/// Serializes frames as IVF (VP80, timebase 1/fps).
pub fn write_ivf(width: u16, height: u16, fps: u32, frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + frames.iter().map(|f| f.len() + 12).sum::<usize>());
    out.extend_from_slice(b"DKIF");
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&32u16.to_le_bytes());
    out.extend_from_slice(b"VP80");
    out.extend_from_slice(&width.to_le_bytes());
    out.extend_from_slice(&height.to_le_bytes());
    out.extend_from_slice(&fps.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&(frames.len() as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    for (i, f) in frames.iter().enumerate() {
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(&(i as u64).to_le_bytes());
        out.extend_from_slice(f);
    }
    out
}

/// Parses an IVF file holding VP8.
pub fn read_ivf(bytes: &[u8]) -> Result<Vec<Frame>, ClipError> {
    if bytes.len() < 32 || &bytes[0..4] != b"DKIF" {
        return Err(ClipError::BadIvf("no DKIF signature".into()));
    }
    let header_len = u16::from_le_bytes([bytes[6], bytes[7]]) as usize;
    if &bytes[8..12] != b"VP80" {
        return Err(ClipError::NotVp8(
            String::from_utf8_lossy(&bytes[8..12]).into_owned(),
        ));
    }
    if header_len < 32 || header_len > bytes.len() {
        return Err(ClipError::BadIvf(format!("header length {header_len}")));
    }
    let mut frames = Vec::new();
    let mut at = header_len;
    while at < bytes.len() {
        let hdr = bytes
            .get(at..at + 12)
            .ok_or_else(|| ClipError::BadIvf(format!("truncated frame header at {at}")))?;
        let len = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
        let data = bytes
            .get(at + 12..at + 12 + len)
            .ok_or_else(|| ClipError::BadIvf(format!("truncated frame at {at}")))?;
        frames.push(Frame {
            keyframe: is_vp8_keyframe(data),
            data: data.to_vec(),
        });
        at += 12 + len;
    }
    if !frames.first().is_some_and(|f| f.keyframe) {
        return Err(ClipError::NoKeyframe);
    }
    Ok(frames)
}

/// How one layer of the clip is encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClipSpec {
    pub width: u16,
    pub height: u16,
    pub kbps: u32,
    pub fps: u32,
    pub seconds: u32,
    /// Frames between keyframes.
    pub keyframe_every: u32,
}

impl ClipSpec {
    /// The cache file name: every parameter that changes the bytes is in it.
    pub fn cache_name(&self) -> String {
        format!(
            "bars-noise-{}x{}-{}k-{}fps-{}s-k{}-v3.ivf",
            self.width, self.height, self.kbps, self.fps, self.seconds, self.keyframe_every
        )
    }

    fn pipeline(&self, out_pattern: &Path) -> Vec<String> {
        // A scrolling colour-bar pattern with 3 % sensor-like noise blended in: motion in
        // every frame and detail the encoder must spend bits on, so CBR reaches its target
        // (plain bars undershoot tenfold; full SMPTE bars hit a quantizer floor at ~1.9 Mbit/s).
        let caps = format!(
            "video/x-raw,format=I420,width={},height={},framerate={}/1",
            self.width, self.height, self.fps
        );
        let n = self.fps * self.seconds;
        let mut args: Vec<String> = format!(
            "compositor name=mix sink_1::alpha=0.03 ! {caps} ! \
             vp8enc target-bitrate={bps} end-usage=cbr deadline=1 cpu-used=8 threads=2 \
             keyframe-max-dist={k} ! multifilesink",
            // vp8enc lands ~10 % under its target on this content
            bps = self.kbps * 1100,
            k = self.keyframe_every,
        )
        .split_whitespace()
        .map(str::to_string)
        .collect();
        args.push(format!("location={}", out_pattern.display()));
        args.extend(
            format!(
                "videotestsrc pattern=smpte75 horizontal-speed=4 num-buffers={n} ! {caps} ! mix. \
                 videotestsrc pattern=snow num-buffers={n} ! {caps} ! mix."
            )
            .split_whitespace()
            .map(str::to_string),
        );
        args
    }
}

/// The cache directory: `$LOADTEST_CACHE`, else `$XDG_CACHE_HOME/loadtest`, else
/// `~/.cache/loadtest`, else the system temp dir.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LOADTEST_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("loadtest");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".cache").join("loadtest");
    }
    std::env::temp_dir().join("loadtest-cache")
}

/// Reads the cached clip for `spec`, encoding it first with GStreamer if it is not there.
pub fn load_or_encode(spec: &ClipSpec, dir: &Path) -> Result<Vec<Frame>, ClipError> {
    let path = dir.join(spec.cache_name());
    if let Ok(bytes) = std::fs::read(&path) {
        match read_ivf(&bytes) {
            Ok(frames) => return Ok(frames),
            Err(e) => tracing::warn!(
                "cached clip {} unreadable ({e}); encoding again",
                path.display()
            ),
        }
    }
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let work = dir.join(format!(
        "tmp-{}-{}",
        std::process::id(),
        spec.cache_name().trim_end_matches(".ivf")
    ));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(io_err(&work))?;
    tracing::info!(
        "encoding {} with GStreamer (once; cached)",
        spec.cache_name()
    );
    let out = Command::new("gst-launch-1.0")
        .arg("-q")
        .args(spec.pipeline(&work.join("f%06d.vp8")))
        .stdin(Stdio::null())
        .output()
        .map_err(ClipError::NoGstreamer)?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&work);
        return Err(ClipError::Gstreamer {
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let mut names: Vec<PathBuf> = std::fs::read_dir(&work)
        .map_err(io_err(&work))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort();
    let mut frames = Vec::with_capacity(names.len());
    for n in &names {
        frames.push(std::fs::read(n).map_err(io_err(n))?);
    }
    let _ = std::fs::remove_dir_all(&work);
    let ivf = write_ivf(spec.width, spec.height, spec.fps, &frames);
    // write then rename, so a concurrent reader never sees half a file
    let tmp = path.with_extension(format!("ivf.{}", std::process::id()));
    std::fs::write(&tmp, &ivf).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
    read_ivf(&ivf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(w: u16, h: u16) -> Vec<u8> {
        let mut f = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
        f.extend_from_slice(&w.to_le_bytes());
        f.extend_from_slice(&h.to_le_bytes());
        f.extend_from_slice(&[7; 20]);
        f
    }

    #[test]
    fn ivf_round_trip_and_keyframes() {
        let frames = vec![
            key(320, 180),
            vec![0x31, 0x00, 0x00, 1, 2, 3],
            key(320, 180),
        ];
        let ivf = write_ivf(320, 180, 30, &frames);
        let back = read_ivf(&ivf).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back[1].data, frames[1]);
        assert_eq!(
            back.iter().map(|f| f.keyframe).collect::<Vec<_>>(),
            [true, false, true]
        );
        assert_eq!(vp8_keyframe_size(&back[0].data), Some((320, 180)));
        assert_eq!(vp8_keyframe_size(&back[1].data), None);
    }

    #[test]
    fn bad_ivf_is_an_error() {
        assert!(matches!(read_ivf(b"nope"), Err(ClipError::BadIvf(_))));
        let mut ivf = write_ivf(320, 180, 30, &[key(320, 180)]);
        ivf.truncate(ivf.len() - 3);
        assert!(matches!(read_ivf(&ivf), Err(ClipError::BadIvf(_))));
        let ivf = write_ivf(320, 180, 30, &[vec![0x31, 0, 0, 1, 2, 3]]);
        assert!(matches!(read_ivf(&ivf), Err(ClipError::NoKeyframe)));
    }

    #[test]
    fn cache_name_holds_every_parameter() {
        let a = ClipSpec {
            width: 640,
            height: 360,
            kbps: 500,
            fps: 30,
            seconds: 8,
            keyframe_every: 60,
        };
        let mut b = a.clone();
        b.kbps = 501;
        assert_ne!(a.cache_name(), b.cache_name());
    }
}
