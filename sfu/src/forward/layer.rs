//! Simulcast layers: which rid is low, mid or high, and which layer a subscriber gets.

use std::str::FromStr;

/// What a subscriber asks for. This rule: the highest layer, or a named one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayerPref {
    Low,
    Mid,
    #[default]
    High,
}

impl LayerPref {
    /// Index into a list of layers ordered low to high.
    pub fn index(self, layer_count: usize) -> usize {
        let top = layer_count.saturating_sub(1);
        match self {
            LayerPref::Low => 0,
            LayerPref::Mid => top.min(1),
            LayerPref::High => top,
        }
    }
}

impl FromStr for LayerPref {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "low" | "l" | "q" => Ok(LayerPref::Low),
            "mid" | "m" | "medium" => Ok(LayerPref::Mid),
            "high" | "h" | "f" | "full" => Ok(LayerPref::High),
            other => Err(format!("unknown layer {other:?} (low, mid or high)")),
        }
    }
}

/// Orders a publisher's rids from lowest to highest quality.
///
/// Chromium, GStreamer and str0m publishers use one of a few naming schemes; `q/h/f` (quarter,
/// half, full) and `l/m/h` share the letter `h` with opposite meanings, so the scheme is chosen
/// from the whole set. Unknown names keep their SDP order, which browsers send low to high.
pub fn order_rids(rids: &[String]) -> Vec<usize> {
    let has = |name: &str| rids.iter().any(|r| r == name);
    let qhf = has("q") || has("f");
    let rank = |rid: &str| -> Option<u8> {
        let r = rid.to_ascii_lowercase();
        match r.as_str() {
            "q" | "low" | "l" | "0" | "lo" => Some(0),
            "h" if qhf => Some(1),
            "m" | "mid" | "medium" | "1" => Some(1),
            "f" | "high" | "hi" | "2" | "full" | "h" => Some(2),
            _ => None,
        }
    };
    let mut idx: Vec<usize> = (0..rids.len()).collect();
    if rids.iter().all(|r| rank(r).is_some()) {
        idx.sort_by_key(|&i| rank(&rids[i]));
    }
    idx
}

/// The layer to forward: the preferred one if it is flowing, else the nearest flowing one below
/// it, else the nearest above. `active[i]` says whether layer `i` (low to high) is flowing.
pub fn choose_layer(active: &[bool], pref: LayerPref) -> Option<usize> {
    if active.is_empty() {
        return None;
    }
    let want = pref.index(active.len());
    (0..=want)
        .rev()
        .find(|&i| active[i])
        .or_else(|| (want + 1..active.len()).find(|&i| active[i]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn rid_schemes() {
        assert_eq!(order_rids(&s(&["h", "m", "l"])), vec![2, 1, 0]);
        assert_eq!(order_rids(&s(&["f", "h", "q"])), vec![2, 1, 0]);
        assert_eq!(order_rids(&s(&["q", "h", "f"])), vec![0, 1, 2]);
        assert_eq!(order_rids(&s(&["a", "b", "c"])), vec![0, 1, 2]);
        assert_eq!(order_rids(&s(&["0", "2", "1"])), vec![0, 2, 1]);
    }

    #[test]
    fn layer_choice() {
        assert_eq!(choose_layer(&[true, true, true], LayerPref::High), Some(2));
        assert_eq!(choose_layer(&[true, true, false], LayerPref::High), Some(1));
        assert_eq!(choose_layer(&[true, true, true], LayerPref::Low), Some(0));
        assert_eq!(choose_layer(&[false, true, true], LayerPref::Low), Some(1));
        assert_eq!(choose_layer(&[true, false, true], LayerPref::Mid), Some(0));
        assert_eq!(choose_layer(&[false, false, false], LayerPref::High), None);
        assert_eq!(choose_layer(&[true], LayerPref::Low), Some(0));
        assert_eq!(choose_layer(&[], LayerPref::Low), None);
        assert_eq!("mid".parse::<LayerPref>(), Ok(LayerPref::Mid));
        assert!("ultra".parse::<LayerPref>().is_err());
    }
}
