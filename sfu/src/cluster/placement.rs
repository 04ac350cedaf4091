//! Where a WHIP/WHEP request should be served, decided from the directory's alive nodes.
//! Pure: the HTTP layer reads the nodes, calls these and answers 307 with [`redirect_url`].

use super::directory::{NodeInfo, NodeLoad};

/// The answer to "where should this request be served".
#[derive(Debug, Clone, PartialEq)]
pub enum Place {
    Here,
    Redirect(NodeInfo),
}

/// How much lower (in [`load_score`] units, a fraction of a reference node) another node's
/// score must be before a classroom is sent there rather than kept here: about 50 classrooms'
/// worth. Without it equal nodes bounce requests to each other, and a burst of joins all go to
/// whichever node looked idlest in the last heartbeat.
pub const HYSTERESIS: f64 = 0.05;

/// Classrooms a reference node serves at full load: about 333 classrooms per SFU core
/// (BENCHMARKS.md, the ramp against Janus) on 3 cores.
const REFERENCE_CLASSROOMS: f64 = 1000.0;
/// Forwarded packets per second of a reference node: about 65,000 per SFU core-second
/// (BENCHMARKS.md) on 3 cores.
const REFERENCE_PPS: f64 = 200_000.0;

/// A node's load as a fraction of a reference node (0 idle, about 1 full), from three signals,
/// each normalised to a full node and weighted:
/// * CPU, 0.5: the direct measure of saturation, but sampled over a second and noisy;
/// * classrooms, 0.3: moves as soon as a heartbeat reports new placements, so a burst of joins
///   spreads out before CPU catches up;
/// * forwarded packets/s, 0.2: the forwarding work, smoother than CPU but overlapping it,
///   hence the smaller weight.
///
/// One classroom adds about 0.001 (its share of each term), so scores of nodes are comparable
/// whatever mixes of lessons they serve. Non-finite or negative inputs count as 0.
pub fn load_score(l: &NodeLoad) -> f64 {
    let sane = |v: f64| if v.is_finite() && v > 0.0 { v } else { 0.0 };
    0.5 * sane(l.cpu as f64)
        + 0.3 * f64::from(l.classrooms) / REFERENCE_CLASSROOMS
        + 0.2 * sane(l.forwarded_pps) / REFERENCE_PPS
}

/// Where a classroom (viewer or classroom feed) should be served: the least-loaded alive node
/// of its region (all nodes when none is in the region, or region unknown); stays Here unless
/// another node is clearly less loaded ([`HYSTERESIS`]; ties keep Here). When this node is not
/// among the candidates (another region), the least-loaded candidate is chosen outright.
pub fn place_classroom(nodes: &[NodeInfo], me: &str, region: Option<&str>) -> Place {
    let candidates = region_or_all(nodes, region);
    let Some(best) = least_loaded(&candidates) else {
        return Place::Here;
    };
    if best.id == me {
        return Place::Here;
    }
    match candidates.iter().find(|n| n.id == me) {
        Some(mine) if load_score(&mine.load) - load_score(&best.load) <= HYSTERESIS => Place::Here,
        _ => Place::Redirect(best.clone()),
    }
}

/// Where the teacher publishes: the room's origin node if it is alive and not me; else, when
/// the request's region names a region with nodes and I am not in it, the least-loaded node
/// there; else Here (this node will claim origin).
pub fn place_teacher(
    nodes: &[NodeInfo],
    me: &str,
    origin: Option<&str>,
    region: Option<&str>,
) -> Place {
    if let Some(origin) = origin {
        if origin == me {
            return Place::Here;
        }
        if let Some(n) = nodes.iter().find(|n| n.id == origin) {
            return Place::Redirect(n.clone());
        }
    }
    let Some(region) = region else {
        return Place::Here;
    };
    let there: Vec<&NodeInfo> = nodes.iter().filter(|n| n.region == region).collect();
    if there.iter().any(|n| n.id == me) {
        return Place::Here;
    }
    match least_loaded(&there) {
        Some(best) => Place::Redirect(best.clone()),
        None => Place::Here,
    }
}

/// The target's URL for this request: its base URL, the same path, the same query plus
/// `placed=1` (an earlier `placed` is replaced), so the target serves it without placing it
/// again and two nodes with different views of the load never bounce a request forever.
pub fn redirect_url(target: &NodeInfo, path_and_query: &str) -> String {
    let base = target.http.trim_end_matches('/');
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, q),
        None => (path_and_query, ""),
    };
    let slash = if path.starts_with('/') { "" } else { "/" };
    let mut params: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && *p != "placed" && !p.starts_with("placed="))
        .collect();
    params.push("placed=1");
    format!("{base}{slash}{path}?{}", params.join("&"))
}

/// True when a request's query says an earlier node already placed it (`placed=1`).
pub fn already_placed(query: Option<&str>) -> bool {
    query.is_some_and(|q| q.split('&').any(|p| p == "placed=1"))
}

fn region_or_all<'a>(nodes: &'a [NodeInfo], region: Option<&str>) -> Vec<&'a NodeInfo> {
    if let Some(region) = region {
        let there: Vec<&NodeInfo> = nodes.iter().filter(|n| n.region == region).collect();
        if !there.is_empty() {
            return there;
        }
    }
    nodes.iter().collect()
}

/// Lowest score; ties go to the smallest id, so every node picks the same one.
fn least_loaded<'a>(nodes: &[&'a NodeInfo]) -> Option<&'a NodeInfo> {
    nodes.iter().copied().min_by(|a, b| {
        load_score(&a.load)
            .total_cmp(&load_score(&b.load))
            .then_with(|| a.id.cmp(&b.id))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, region: &str, classrooms: u32, cpu: f32) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            region: region.into(),
            http: format!("http://{id}.example:7800"),
            relay: "127.0.0.1:7802".parse().unwrap(),
            load: NodeLoad {
                cpu,
                forwarded_pps: f64::from(classrooms) * 200.0,
                classrooms,
                rooms: 1,
            },
            updated_ms: 0,
        }
    }

    fn target(p: Place) -> Option<String> {
        match p {
            Place::Here => None,
            Place::Redirect(n) => Some(n.id),
        }
    }

    #[test]
    fn score_grows_with_each_signal_and_ignores_garbage() {
        let idle = NodeLoad::default();
        assert_eq!(load_score(&idle), 0.0);
        let full = NodeLoad {
            cpu: 1.0,
            forwarded_pps: REFERENCE_PPS,
            classrooms: REFERENCE_CLASSROOMS as u32,
            rooms: 3,
        };
        assert!((load_score(&full) - 1.0).abs() < 1e-9);
        for l in [
            NodeLoad {
                cpu: 0.1,
                ..idle.clone()
            },
            NodeLoad {
                classrooms: 10,
                ..idle.clone()
            },
            NodeLoad {
                forwarded_pps: 1000.0,
                ..idle.clone()
            },
        ] {
            assert!(load_score(&l) > 0.0, "{l:?}");
        }
        let garbage = NodeLoad {
            cpu: f32::NAN,
            forwarded_pps: f64::INFINITY,
            classrooms: 0,
            rooms: 0,
        };
        assert_eq!(load_score(&garbage), 0.0);
        // One classroom weighs about a thousandth of a node.
        let one = NodeLoad {
            cpu: 0.001,
            forwarded_pps: 200.0,
            classrooms: 1,
            rooms: 1,
        };
        assert!(
            (load_score(&one) - 0.001).abs() < 0.0002,
            "{}",
            load_score(&one)
        );
    }

    #[test]
    fn classroom_stays_here_among_equal_or_slightly_lighter_nodes() {
        let nodes = [node("a", "r1", 100, 0.1), node("b", "r1", 100, 0.1)];
        assert_eq!(target(place_classroom(&nodes, "a", Some("r1"))), None);
        assert_eq!(target(place_classroom(&nodes, "b", Some("r1"))), None);
        // 20 classrooms fewer is within the hysteresis.
        let nodes = [node("a", "r1", 120, 0.12), node("b", "r1", 100, 0.1)];
        assert_eq!(target(place_classroom(&nodes, "a", Some("r1"))), None);
    }

    #[test]
    fn classroom_goes_to_a_clearly_lighter_node_of_its_region() {
        let nodes = [
            node("a", "r1", 300, 0.3),
            node("b", "r1", 50, 0.05),
            node("c", "r1", 80, 0.08),
            node("z", "r2", 0, 0.0),
        ];
        assert_eq!(
            target(place_classroom(&nodes, "a", Some("r1"))).as_deref(),
            Some("b")
        );
        // The idle node of another region is not a candidate.
        assert_eq!(target(place_classroom(&nodes, "b", Some("r1"))), None);
    }

    #[test]
    fn classroom_of_another_region_leaves_this_node_even_when_it_is_lighter() {
        let nodes = [
            node("a", "r1", 0, 0.0),
            node("b", "r2", 200, 0.2),
            node("c", "r2", 100, 0.1),
        ];
        assert_eq!(
            target(place_classroom(&nodes, "a", Some("r2"))).as_deref(),
            Some("c")
        );
    }

    #[test]
    fn classroom_with_unknown_or_no_region_considers_all_nodes() {
        let nodes = [node("a", "r1", 400, 0.4), node("b", "r2", 10, 0.01)];
        assert_eq!(
            target(place_classroom(&nodes, "a", Some("nowhere"))).as_deref(),
            Some("b")
        );
        assert_eq!(
            target(place_classroom(&nodes, "a", None)).as_deref(),
            Some("b")
        );
        assert_eq!(target(place_classroom(&nodes, "b", None)), None);
    }

    #[test]
    fn classroom_with_no_nodes_or_only_me_stays() {
        assert_eq!(target(place_classroom(&[], "a", Some("r1"))), None);
        let nodes = [node("a", "r1", 900, 0.9)];
        assert_eq!(target(place_classroom(&nodes, "a", Some("r1"))), None);
    }

    #[test]
    fn classroom_ties_between_others_go_to_the_smallest_id() {
        // I am not registered (yet): the choice must be the same on every node.
        let nodes = [node("c", "r1", 10, 0.0), node("b", "r1", 10, 0.0)];
        assert_eq!(
            target(place_classroom(&nodes, "a", Some("r1"))).as_deref(),
            Some("b")
        );
    }

    #[test]
    fn teacher_goes_to_the_alive_origin() {
        let nodes = [node("a", "r1", 0, 0.0), node("b", "r2", 500, 0.9)];
        assert_eq!(
            target(place_teacher(&nodes, "a", Some("b"), Some("r1"))).as_deref(),
            Some("b")
        );
        assert_eq!(
            target(place_teacher(&nodes, "b", Some("b"), Some("r1"))),
            None
        );
    }

    #[test]
    fn teacher_with_a_dead_origin_follows_the_region() {
        let nodes = [
            node("a", "r1", 0, 0.0),
            node("b", "r2", 50, 0.0),
            node("c", "r2", 10, 0.0),
        ];
        // "x" is not alive.
        assert_eq!(
            target(place_teacher(&nodes, "a", Some("x"), Some("r2"))).as_deref(),
            Some("c")
        );
        // I am in the region: here, whatever the load of the others.
        assert_eq!(
            target(place_teacher(&nodes, "b", Some("x"), Some("r2"))),
            None
        );
    }

    #[test]
    fn teacher_without_a_usable_region_stays() {
        let nodes = [node("a", "r1", 900, 0.9), node("b", "r2", 0, 0.0)];
        assert_eq!(target(place_teacher(&nodes, "a", None, None)), None);
        assert_eq!(
            target(place_teacher(&nodes, "a", None, Some("nowhere"))),
            None
        );
    }

    #[test]
    fn redirect_url_adds_placed_and_keeps_the_rest() {
        let b = node("b", "r1", 0, 0.0);
        assert_eq!(
            redirect_url(&b, "/whep/math"),
            "http://b.example:7800/whep/math?placed=1"
        );
        assert_eq!(
            redirect_url(&b, "/whep/math?region=r1&x=%20y"),
            "http://b.example:7800/whep/math?region=r1&x=%20y&placed=1"
        );
        assert_eq!(
            redirect_url(&b, "/whip/math?placed=0&region=r1&placed"),
            "http://b.example:7800/whip/math?region=r1&placed=1"
        );
        assert_eq!(
            redirect_url(&b, "/whep/math?"),
            "http://b.example:7800/whep/math?placed=1"
        );
        let mut slash = b.clone();
        slash.http = "http://b.example:7800/".into();
        assert_eq!(
            redirect_url(&slash, "whep/m"),
            "http://b.example:7800/whep/m?placed=1"
        );
    }

    #[test]
    fn already_placed_reads_the_flag() {
        assert!(already_placed(Some("region=r1&placed=1")));
        assert!(!already_placed(Some("region=r1&placed=0")));
        assert!(!already_placed(Some("replaced=1")));
        assert!(!already_placed(None));
        let b = node("b", "r1", 0, 0.0);
        let url = redirect_url(&b, "/whep/m?region=r1");
        assert!(already_placed(url.split_once('?').map(|(_, q)| q)));
    }
}
