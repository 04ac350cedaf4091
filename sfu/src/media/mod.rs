//! The media side: one event loop owns the media port (UDP and ICE-TCP) and every session.
//! The HTTP side talks to it through [`MediaHandle`].

pub mod batch_io;
pub mod demux;
pub mod event_loop;
pub mod session;
pub mod snapshot;
pub mod tcp_framing;

#[cfg(test)]
mod repair_tests;

use std::sync::mpsc;
use std::sync::Arc;

use tokio::sync::{broadcast, oneshot};

use crate::auth::Claims;
use crate::cluster::wire::{Control, RelayPacket, TrackInfo};
use session::{NewSession, SdpFrag};
use snapshot::{AttendanceReport, RelayInfo, RoomInfo, RoomPresence};

use crate::room::state::RoomSnapshot;
use crate::room::RoomCommand;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum LoopError {
    #[error("no such session")]
    NotFound,
    #[error("the ETag does not match the current ICE session")]
    PreconditionFailed,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("ICE restart failed: {0}")]
    Restart(String),
    #[error("the media loop has stopped")]
    Stopped,
    #[error(transparent)]
    Rejected(#[from] crate::room::CommandError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatchOutcome {
    /// Remote candidates were added.
    Trickled,
    /// New ICE credentials: the answer fragment and the new ETag.
    Restarted { etag: String, frag: String },
}

pub enum Command {
    Add(Box<NewSession>, oneshot::Sender<Result<String, LoopError>>),
    Patch {
        room: String,
        id: String,
        if_match: Option<String>,
        frag: SdpFrag,
        reply: oneshot::Sender<Result<PatchOutcome, LoopError>>,
    },
    Remove {
        room: String,
        id: String,
        who: Claims,
        reply: oneshot::Sender<Result<(), LoopError>>,
    },
    Rooms(oneshot::Sender<Vec<RoomInfo>>),
    /// A participant's command to its room (raise hand, stage, mute, ...).
    RoomCommand {
        room: String,
        who: Claims,
        cmd: RoomCommand,
        reply: oneshot::Sender<Result<RoomSnapshot, LoopError>>,
    },
    /// Subscribe to a room's events: the state now and the stream of what changes.
    Events {
        room: String,
        reply: oneshot::Sender<(RoomSnapshot, broadcast::Receiver<Arc<str>>)>,
    },
    /// The lesson's state (live, or the last ended lesson of that room).
    State(String, oneshot::Sender<Option<RoomSnapshot>>),
    Attendance(String, oneshot::Sender<Option<AttendanceReport>>),
    Room(String, oneshot::Sender<Option<RoomInfo>>),
    /// Origin: an edge node subscribed to a room's program over relay connection `link`.
    RelayAttach {
        link: u64,
        peer: String,
        room: String,
        tx: RelayTx,
    },
    /// Origin: the edge left `room` (None: the whole connection is gone).
    RelayDetach {
        link: u64,
        room: Option<String>,
    },
    /// Origin: an edge's demand, keyframe request, NACK or unsubscribe.
    RelayControl {
        link: u64,
        msg: Control,
    },
    /// The tracks another node announces for `room` on connection `link`: on an edge, the
    /// origin's program; on the origin (`from_edge`), the classroom feeds published at an edge.
    UpstreamTracks {
        link: u64,
        peer: String,
        room: String,
        tracks: Vec<TrackInfo>,
        tx: RelayTx,
        from_edge: bool,
    },
    /// Edge: who is on stage and muted in a relayed room.
    UpstreamStage {
        link: u64,
        room: String,
        stage: Vec<String>,
        muted: Vec<String>,
    },
    /// Edge: a packet from the origin.
    UpstreamPacket {
        link: u64,
        pkt: RelayPacket,
    },
    /// Edge: stop relaying this room (nobody here watches it any more).
    UpstreamDrop {
        room: String,
    },
    /// Edge: the connection to the origin is gone.
    UpstreamLost {
        link: u64,
        why: String,
    },
    /// Edge: the rooms relayed from another node (the glue asks to drop those nobody watches).
    Relays(oneshot::Sender<Vec<RelayInfo>>),
    /// Per room, what the cluster glue checks every heartbeat: is its teacher publishing here,
    /// does anyone watch here (cheaper than `Rooms`, which reports every session).
    Presence(oneshot::Sender<Vec<RoomPresence>>),
    Shutdown,
}

/// What the media loop sends toward another node over a relay connection.
#[derive(Debug)]
pub enum RelaySend {
    Packet(RelayPacket),
    Control(Control),
}

pub type RelayTx = tokio::sync::mpsc::UnboundedSender<RelaySend>;

/// Sends commands to the media loop and waits for the answer.
#[derive(Clone)]
pub struct MediaHandle {
    tx: mpsc::Sender<Command>,
    waker: Arc<mio::Waker>,
}

impl MediaHandle {
    pub(crate) fn new(tx: mpsc::Sender<Command>, waker: Arc<mio::Waker>) -> Self {
        MediaHandle { tx, waker }
    }

    pub fn send(&self, cmd: Command) -> Result<(), LoopError> {
        self.tx.send(cmd).map_err(|_| LoopError::Stopped)?;
        self.waker.wake().map_err(|_| LoopError::Stopped)
    }

    pub async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, LoopError> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx))?;
        rx.await.map_err(|_| LoopError::Stopped)
    }
}
