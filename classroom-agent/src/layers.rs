//! The encoding plan: which video layers a role sends and at what size and rate.

/// Who the agent is in the lesson.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Publishes the lesson (camera simulcast, voice).
    Teacher,
    /// Plays the lesson; its own feed is two small layers.
    Classroom,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Teacher => "teacher",
            Role::Classroom => "classroom",
        }
    }
}

/// One encoder branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerSpec {
    /// RTP stream id; `None` for a track sent without simulcast.
    pub rid: Option<String>,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bitrate_bps: u32,
}

/// Bits per pixel per frame that give a clean picture for classroom content at realtime
/// encoder settings (720p30 at about 1.7 Mbit/s, the SFU's assumed top layer).
const BITS_PER_PIXEL: f64 = 0.06;
const MIN_LAYER_BPS: u32 = 60_000;
const MAX_LAYER_BPS: u32 = 2_500_000;

/// Rounds down to an even size of at least 16 (encoders want even dimensions).
pub fn even(v: u32) -> u32 {
    (v / 2 * 2).max(16)
}

/// The rate that gives a clean picture at this size and frame rate.
pub fn bitrate_for(width: u32, height: u32, fps: u32) -> u32 {
    let bps = (width as f64 * height as f64 * fps as f64 * BITS_PER_PIXEL) as u32;
    bps.clamp(MIN_LAYER_BPS, MAX_LAYER_BPS)
}

fn layer(rid: Option<&str>, width: u32, height: u32, fps: u32) -> LayerSpec {
    let (width, height) = (even(width), even(height));
    LayerSpec {
        rid: rid.map(str::to_string),
        width,
        height,
        fps,
        bitrate_bps: bitrate_for(width, height, fps),
    }
}

/// Camera layers, lowest first. The teacher sends three (¼, ½, full size; rids l/m/h, as the
/// SFU orders them); a classroom two (½ and full, rids l/h) so the teacher console can take
/// the small one. `simulcast = false` sends the full size alone.
pub fn camera_layers(
    role: Role,
    width: u32,
    height: u32,
    fps: u32,
    simulcast: bool,
) -> Vec<LayerSpec> {
    if !simulcast {
        return vec![layer(None, width, height, fps)];
    }
    match role {
        Role::Teacher => vec![
            layer(Some("l"), width / 4, height / 4, fps),
            layer(Some("m"), width / 2, height / 2, fps),
            layer(Some("h"), width, height, fps),
        ],
        Role::Classroom => vec![
            layer(Some("l"), width / 2, height / 2, fps),
            layer(Some("h"), width, height, fps),
        ],
    }
}

/// Courseware: one layer at a readable size and few frames per second.
pub fn courseware_layer(width: u32, height: u32, fps: u32) -> LayerSpec {
    layer(None, width, height, fps.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn teacher_sends_three_layers_low_first() {
        let l = camera_layers(Role::Teacher, 1280, 720, 30, true);
        let sizes: Vec<_> = l
            .iter()
            .map(|s| (s.rid.as_deref(), s.width, s.height))
            .collect();
        assert_eq!(
            sizes,
            vec![
                (Some("l"), 320, 180),
                (Some("m"), 640, 360),
                (Some("h"), 1280, 720)
            ]
        );
        assert!(l.windows(2).all(|w| w[0].bitrate_bps < w[1].bitrate_bps));
        assert!(
            (1_500_000..=1_800_000).contains(&l[2].bitrate_bps),
            "{}",
            l[2].bitrate_bps
        );
    }

    #[test]
    fn classroom_sends_two_and_single_layer_has_no_rid() {
        let c = camera_layers(Role::Classroom, 640, 360, 15, true);
        assert_eq!(c.len(), 2);
        assert_eq!((c[0].width, c[0].height), (320, 180));
        let one = camera_layers(Role::Teacher, 640, 360, 30, false);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].rid, None);
    }

    #[test]
    fn tiny_sizes_stay_even_and_rates_floor() {
        let l = camera_layers(Role::Teacher, 98, 54, 5, true);
        assert!(l
            .iter()
            .all(|s| s.width % 2 == 0 && s.height % 2 == 0 && s.width >= 16));
        assert!(l.iter().all(|s| s.bitrate_bps >= MIN_LAYER_BPS));
    }
}
