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
use session::{NewSession, SdpFrag};
use snapshot::{AttendanceReport, RoomInfo};

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
    Shutdown,
}

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
