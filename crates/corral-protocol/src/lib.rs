//! `corral-protocol`: the server↔worker wire format, version 1 (see `docs/protocol.md`).
//!
//! Owns the message types, the length-prefixed JSON framing and the sync marker that ties
//! the worker's stdout/stderr pipes to its `done` frame. It knows nothing of processes,
//! sessions or HTTP, and does not depend on any other corral crate but `corral-core`.

mod framing;
mod messages;
mod sync_marker;

pub use framing::{read_frame, write_frame, FrameError, MAX_FRAME_BYTES};
pub use messages::{DoneStatus, WorkerEvent, WorkerRequest, PROTOCOL_VERSION};
pub use sync_marker::{without_markers, Scanned, SyncMarker, SyncScan};
