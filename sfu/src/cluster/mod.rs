//! One lesson across many SFU nodes: a Redis directory of nodes and rooms, and QUIC relays
//! that carry a room's program from its origin node to the edges that serve classrooms.
//!
//! Without `--cluster` none of this runs and a node serves alone.

pub mod certs;
pub mod directory;
pub mod link;
pub mod load;
pub mod node;
pub mod placement;
pub mod wire;
