//! User-space link emulation: the kernel here has no `netem`, so delay, jitter and bursty loss
//! are made in user space.
//!
//! - [`model`]: one direction of a link, sans-IO, on the caller's clock ([`Link`]).
//! - [`profile`]: the named profiles of DESIGN.md, TOML profiles, schedules and `--mix`.
//! - [`relay`]: a UDP relay that runs a profile between clients and a target ([`Relay`]).
//! - [`tap`]: times every datagram into and out of a link from outside it ([`tap::Tap`]).
//! - [`phases`]: a capacity schedule in phases and what a sender did in each (RFC 8867).
//!
//! Putting a 2/1 Mbit/s, 100 ms, 2 % loss link with a capacity dip in front of a server:
//!
//! ```no_run
//! use loadtest::link::{parse_schedule, ProfileSpec, Relay, RelayConfig};
//!
//! # fn main() -> anyhow::Result<()> {
//! let spec = ProfileSpec {
//!     down_kbps: Some(2_000),
//!     up_kbps: Some(1_000),
//!     rtt_ms: 100,
//!     loss_pct: 2.0,
//!     schedule: parse_schedule("10s:down=800,25s:down=2000")?,
//!     ..ProfileSpec::default()
//! };
//! let target = "127.0.0.1:7801".parse()?;
//! let relay = Relay::start(
//!     RelayConfig::new("127.0.0.1:0".parse()?, target)
//!         .with_profile(&spec)?
//!         .with_seed(1),
//! )?;
//! let client_sends_here = relay.local_addr();
//! # let _ = client_sends_here;
//! // ... run the client against `client_sends_here` ...
//! let stats = relay.stop();
//! println!("{} packets reached the target", stats.uplink.delivered_packets);
//! # Ok(())
//! # }
//! ```

pub mod model;
pub mod phases;
pub mod profile;
pub mod relay;
pub mod tap;

pub use model::{
    Link, LinkChange, LinkConfig, LinkError, LinkStats, LossModel, QueueLimit, Verdict,
    UDP_IPV4_OVERHEAD,
};
pub use profile::{
    builtin, parse_duration, parse_schedule, Direction, Mix, ProfileError, ProfileSpec, Profiles,
    ScheduleStep, BUILTIN_NAMES,
};
pub use relay::{
    ClientStats, Relay, RelayConfig, RelayError, RelayHandle, RelayStats, ScheduleOrigin,
};
