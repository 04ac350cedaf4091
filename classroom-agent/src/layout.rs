//! Where the lesson's two pictures go on the classroom's screen (the projector): the
//! teacher's camera alone fills it; with courseware flowing, the courseware takes the larger
//! part and the camera sits beside it, so that nothing of a slide is hidden under the teacher.
//! While neither flows (before the lesson, after the teacher left, through an outage) the
//! screen says that it waits, rather than freezing on the last picture.
//! Pure: the playback pipeline asks it each time a picture starts or stops flowing.

use std::time::{Duration, Instant};

/// A picture that brought no frame for this long counts as stopped (the SFU paused it, or the
/// teacher closed the courseware), and gives its room to the other.
pub const QUIET: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: i32,
    pub y: i32,
    pub width: i32,
    pub height: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Nothing flows: the waiting slate.
    Waiting,
    /// The camera alone, full screen.
    Camera,
    /// The courseware alone, full screen.
    Courseware,
    /// Both: courseware three quarters wide, the camera in the quarter beside it.
    SideBySide,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Waiting => "waiting",
            Mode::Camera => "camera",
            Mode::Courseware => "courseware",
            Mode::SideBySide => "side_by_side",
        }
    }
}

/// Where each picture goes (`None`: hidden).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub mode: Mode,
    pub camera: Option<Rect>,
    pub courseware: Option<Rect>,
}

/// The layout of a `width` x `height` screen for the pictures that flow.
pub fn arrange(width: i32, height: i32, camera: bool, courseware: bool) -> Layout {
    let full = Rect {
        x: 0,
        y: 0,
        width,
        height,
    };
    match (camera, courseware) {
        (true, true) => {
            // Both pictures keep the screen's shape (16:9 for the camera and for slides,
            // which the teacher's agent letterboxes), stacked from the top of the screen's
            // middle band.
            let cw_w = width * 3 / 4;
            let cw_h = height * 3 / 4;
            let top = (height - cw_h) / 2;
            Layout {
                mode: Mode::SideBySide,
                courseware: Some(Rect {
                    x: 0,
                    y: top,
                    width: cw_w,
                    height: cw_h,
                }),
                camera: Some(Rect {
                    x: cw_w,
                    y: top,
                    width: width - cw_w,
                    height: height / 4,
                }),
            }
        }
        (false, true) => Layout {
            mode: Mode::Courseware,
            camera: None,
            courseware: Some(full),
        },
        (true, false) => Layout {
            mode: Mode::Camera,
            camera: Some(full),
            courseware: None,
        },
        (false, false) => Layout {
            mode: Mode::Waiting,
            camera: None,
            courseware: None,
        },
    }
}

/// When each picture last brought a frame, and the layout that follows.
#[derive(Debug, Default)]
pub struct Presence {
    camera: Option<Instant>,
    courseware: Option<Instant>,
}

impl Presence {
    pub fn saw_camera(&mut self, now: Instant) {
        self.camera = Some(now);
    }

    pub fn saw_courseware(&mut self, now: Instant) {
        self.courseware = Some(now);
    }

    /// Which pictures flow at `now`: (camera, courseware).
    pub fn flowing(&self, now: Instant) -> (bool, bool) {
        let recent =
            |t: Option<Instant>| t.is_some_and(|t| now.saturating_duration_since(t) < QUIET);
        (recent(self.camera), recent(self.courseware))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_camera_fills_the_screen_until_courseware_flows() {
        let l = arrange(1280, 720, true, false);
        assert_eq!(l.mode, Mode::Camera);
        assert_eq!(
            l.camera,
            Some(Rect {
                x: 0,
                y: 0,
                width: 1280,
                height: 720
            })
        );
        assert_eq!(l.courseware, None);
        // Nothing flows: neither picture (the last frame would stand still), the slate.
        let waiting = arrange(1280, 720, false, false);
        assert_eq!(waiting.mode, Mode::Waiting);
        assert_eq!((waiting.camera, waiting.courseware), (None, None));
    }

    #[test]
    fn with_courseware_both_show_side_by_side_without_overlap() {
        let l = arrange(1280, 720, true, true);
        assert_eq!(l.mode, Mode::SideBySide);
        let (c, w) = (l.camera.unwrap(), l.courseware.unwrap());
        assert_eq!((w.width, w.height), (960, 540));
        assert_eq!((c.width, c.height), (320, 180));
        // Both 16:9, inside the screen, and the camera starts where the courseware ends.
        assert_eq!(w.width * 9, w.height * 16);
        assert_eq!(c.width * 9, c.height * 16);
        assert_eq!(c.x, w.x + w.width);
        assert!(c.x + c.width <= 1280 && w.y + w.height <= 720);
        let alone = arrange(1280, 720, false, true);
        assert_eq!(alone.mode, Mode::Courseware);
        assert_eq!(alone.camera, None);
    }

    #[test]
    fn a_picture_quiet_for_two_seconds_counts_as_stopped() {
        let t0 = Instant::now();
        let mut p = Presence::default();
        assert_eq!(p.flowing(t0), (false, false));
        p.saw_camera(t0);
        p.saw_courseware(t0);
        assert_eq!(p.flowing(t0 + Duration::from_millis(1900)), (true, true));
        p.saw_camera(t0 + Duration::from_millis(1900));
        assert_eq!(p.flowing(t0 + Duration::from_millis(2100)), (true, false));
    }
}
