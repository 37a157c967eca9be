//! `corral-jupyter`: the Jupyter messaging protocol (5.3) as corral's kernels speak it.
//!
//! Owns the two websocket framings jupyter_server uses for a kernel's channels (JSON text
//! with a `channel` field, and the binary `v1.kernel.websocket.jupyter.org` subprotocol)
//! in [`wire`]; building replies and IOPub messages with the right headers ([`Kernel`]);
//! reading a client's message as the request a kernel must serve ([`requests`]); and saying
//! corral's executions, questions about code and history in Jupyter's terms ([`replies`]).
//!
//! The message model itself is the `jupyter-protocol` crate's (the runtimed project's typed
//! messages), re-exported as [`protocol`]. This crate does no IO and knows no HTTP, no
//! websocket library and no engine: the API crate moves frames and calls the engine.

mod kernel;
pub mod replies;
pub mod requests;
pub mod wire;

pub use jupyter_protocol as protocol;
pub use kernel::{Kernel, PROTOCOL_VERSION};
pub use requests::KernelRequest;
pub use wire::{Frame, Framing, WireError, V1_SUBPROTOCOL};
