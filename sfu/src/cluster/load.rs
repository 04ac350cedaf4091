//! This process's CPU share, for the heartbeat's load: user + system time from
//! `/proc/self/stat` over wall time, divided by the cores available to the process.

use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read /proc/self/stat: {0}")]
    Read(#[from] std::io::Error),
    #[error("unreadable /proc/self/stat: {0}")]
    Parse(&'static str),
}

/// utime + stime (fields 14 and 15, in clock ticks) from the text of `/proc/<pid>/stat`. The
/// command name (field 2) is in parentheses and may hold spaces or parentheses itself, so the
/// fields are counted from the last `)`.
pub fn parse_cpu_ticks(stat: &str) -> Result<u64, LoadError> {
    let close = stat
        .rfind(')')
        .ok_or(LoadError::Parse("no ')' after the command name"))?;
    // After ')': field 3 (state) is at index 0, so utime (14) is at 11 and stime (15) at 12.
    let mut fields = stat[close + 1..].split_ascii_whitespace().skip(11);
    let mut next = |name| {
        fields
            .next()
            .ok_or(LoadError::Parse(name))?
            .parse::<u64>()
            .map_err(|_| LoadError::Parse(name))
    };
    let utime = next("utime (field 14) missing or not a number")?;
    let stime = next("stime (field 15) missing or not a number")?;
    Ok(utime.saturating_add(stime))
}

/// The share of all cores used between two samples, clamped to 0..=1 (0 when no time passed).
pub fn cpu_share(ticks: u64, seconds: f64, ticks_per_second: f64, cores: f64) -> f32 {
    if seconds <= 0.0 || ticks_per_second <= 0.0 || cores <= 0.0 {
        return 0.0;
    }
    let busy = ticks as f64 / ticks_per_second;
    (busy / seconds / cores).clamp(0.0, 1.0) as f32
}

/// Keeps the previous sample; each [`CpuSampler::sample`] gives the share since the one
/// before (the first, since the sampler was made).
#[derive(Debug)]
pub struct CpuSampler {
    prev: Option<(Instant, u64)>,
    ticks_per_second: f64,
    cores: f64,
}

impl CpuSampler {
    /// A sampler for this process with the system's tick rate and available cores.
    pub fn new() -> CpuSampler {
        // SAFETY: sysconf only reads a system constant.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut s = CpuSampler::with_rates(if hz > 0 { hz as f64 } else { 100.0 }, cores as f64);
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            if let Ok(ticks) = parse_cpu_ticks(&stat) {
                s.prev = Some((Instant::now(), ticks));
            }
        }
        s
    }

    /// A sampler with given rates and no sample yet (for tests and other processes' stats).
    pub fn with_rates(ticks_per_second: f64, cores: f64) -> CpuSampler {
        CpuSampler {
            prev: None,
            ticks_per_second,
            cores,
        }
    }

    /// Reads `/proc/self/stat` now.
    pub fn sample(&mut self) -> Result<f32, LoadError> {
        let stat = std::fs::read_to_string("/proc/self/stat")?;
        Ok(self.record(Instant::now(), parse_cpu_ticks(&stat)?))
    }

    /// Records a reading taken at `now`; returns the share since the previous one (0 for the
    /// first, or if the counter went backwards).
    pub fn record(&mut self, now: Instant, ticks: u64) -> f32 {
        let share = match self.prev {
            Some((at, before)) if ticks >= before => cpu_share(
                ticks - before,
                now.saturating_duration_since(at).as_secs_f64(),
                self.ticks_per_second,
                self.cores,
            ),
            _ => 0.0,
        };
        self.prev = Some((now, ticks));
        share
    }
}

impl Default for CpuSampler {
    fn default() -> Self {
        CpuSampler::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    // A real line from a process named "sfu (worker) 1", fields 14/15 = 250/50.
    const STAT: &str = "4242 (sfu (worker) 1) S 1 4242 4242 0 -1 4194560 5000 0 0 0 250 50 0 0 \
                        20 0 8 0 12345 123456789 2000 18446744073709551615 1 1 0 0 0 0 0 4096 0";

    #[test]
    fn parses_utime_plus_stime_past_a_tricky_command_name() {
        assert_eq!(parse_cpu_ticks(STAT).unwrap(), 300);
    }

    #[test]
    fn refuses_truncated_or_garbled_stat() {
        assert!(parse_cpu_ticks("4242 sfu S 1").is_err());
        assert!(parse_cpu_ticks("4242 (sfu) S 1 2 3").is_err());
        let garbled = STAT.replace(" 250 50 ", " 250 x ");
        let err = parse_cpu_ticks(&garbled).unwrap_err().to_string();
        assert!(err.contains("stime"), "{err}");
    }

    #[test]
    fn share_is_busy_time_over_wall_time_over_cores() {
        // 100 ticks at 100 Hz = 1 s busy over 2 s on 2 cores: a quarter.
        assert!((cpu_share(100, 2.0, 100.0, 2.0) - 0.25).abs() < 1e-6);
        assert_eq!(cpu_share(1000, 1.0, 100.0, 2.0), 1.0);
        assert_eq!(cpu_share(5, 0.0, 100.0, 2.0), 0.0);
    }

    #[test]
    fn sampler_measures_between_samples_on_a_virtual_clock() {
        let t0 = Instant::now();
        let mut s = CpuSampler::with_rates(100.0, 4.0);
        assert_eq!(s.record(t0, 1000), 0.0);
        // 200 ticks = 2 s of CPU in 1 s on 4 cores.
        let share = s.record(t0 + Duration::from_secs(1), 1200);
        assert!((share - 0.5).abs() < 1e-6, "{share}");
        // Idle second.
        assert_eq!(s.record(t0 + Duration::from_secs(2), 1200), 0.0);
        // A counter that went backwards (another process's stat) gives 0, not garbage.
        assert_eq!(s.record(t0 + Duration::from_secs(3), 10), 0.0);
    }

    #[test]
    fn sampler_reads_this_process() {
        let mut s = CpuSampler::new();
        // Burn a little CPU so the reading has something to see.
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let share = s.sample().expect("reads /proc/self/stat");
        assert!(share > 0.0 && share <= 1.0, "{share}");
    }
}
