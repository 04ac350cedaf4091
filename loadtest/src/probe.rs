//! The SFU seen from outside: CPU time and resident memory of its process from `/proc`, the
//! machine's per-core busy time from `/proc/stat`, and the forwarded-packet counter from its
//! Prometheus `/metrics`. Also the load generator's own CPU time, to read figures honestly.

use std::path::Path;
use std::time::Duration;

/// Clock ticks per second for /proc times.
fn ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// CPU time (user + system) of a process from the text of `/proc/<pid>/stat`.
pub fn parse_proc_stat_cpu(text: &str) -> Option<Duration> {
    // the command name is in parentheses and may hold spaces: fields count from the last ')'
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // after ')' come: state(3) ppid(4) ... utime(14) stime(15), i.e. index 11 and 12 here
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) / ticks_per_s()))
}

/// Resident set size in bytes from the text of `/proc/<pid>/status`.
pub fn parse_status_rss(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Per-core (busy, total) jiffies from the text of `/proc/stat`.
pub fn parse_cores(text: &str) -> Vec<(u64, u64)> {
    text.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            let total: u64 = v.iter().take(8).sum();
            // idle + iowait are not busy
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            (total.saturating_sub(idle), total)
        })
        .collect()
}

/// The value of a Prometheus counter without labels (or the sum over its label sets).
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let v: f64 = rest.rsplit(' ').next()?.parse().ok()?;
        *found.get_or_insert(0.0) += v;
    }
    found
}

/// CPU time of a process, None if it is gone.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    parse_proc_stat_cpu(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

pub fn process_rss(pid: u32) -> Option<u64> {
    parse_status_rss(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// This process's CPU time.
pub fn own_cpu() -> Option<Duration> {
    parse_proc_stat_cpu(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

pub fn cores() -> Vec<(u64, u64)> {
    std::fs::read_to_string("/proc/stat")
        .map(|t| parse_cores(&t))
        .unwrap_or_default()
}

/// The one process named `sfu`, when `--sfu-pid` is not given and exactly one runs here.
pub fn find_sfu_pid() -> Option<u32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("comm"))
            .unwrap_or_default();
        if comm.trim() == "sfu" {
            found.push(pid);
        }
    }
    (found.len() == 1).then(|| found[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_texts() {
        let stat = "1234 (sfu worker) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 100 1000 200";
        let cpu = parse_proc_stat_cpu(stat).unwrap();
        assert!((cpu.as_secs_f64() - 300.0 / ticks_per_s()).abs() < 1e-9);
        assert_eq!(
            parse_status_rss("Name:\tsfu\nVmRSS:\t  2048 kB\n"),
            Some(2048 * 1024)
        );
        let cores = parse_cores(
            "cpu  10 0 10 80 0 0 0 0 0 0\ncpu0 5 0 5 40 0 0 0 0 0 0\ncpu1 5 0 5 30 10 0 0 0 0 0\n",
        );
        assert_eq!(cores, vec![(10, 50), (10, 50)]);
    }

    #[test]
    fn prometheus_counter() {
        let text = "# HELP sfu_rtp_packets_forwarded_total x\n# TYPE sfu_rtp_packets_forwarded_total counter\nsfu_rtp_packets_forwarded_total 1234\nsfu_rtp_packets_forwarded_total_other 9\nsfu_layer{sub=\"a\"} 2\nsfu_layer{sub=\"b\"} 1\n";
        assert_eq!(
            metric_value(text, "sfu_rtp_packets_forwarded_total"),
            Some(1234.0)
        );
        assert_eq!(metric_value(text, "sfu_layer"), Some(3.0));
        assert_eq!(metric_value(text, "sfu_missing"), None);
    }
}
