//! `corral-core`: the shared vocabulary of corral.
//!
//! Owns the plain data types every other crate speaks in: session ids and states (with their
//! legal transitions), execution requests and outcomes, MIME bundles, limits, network policies, session TTL rules, tenants, API
//! key records, which sessions a principal may see, and the nodes of a fleet.
//!
//! Deliberately does no IO, knows nothing of tokio, HTTP, SQL or processes, and holds no
//! client-facing JSON shapes (each API surface in `corral-api` owns its own).

mod access;
mod execution;
mod introspection;
mod limits;
mod network;
mod node;
mod session;

pub use access::{
    is_valid_tenant, ApiKeyRecord, KeyScope, Principal, DEFAULT_TENANT, MAX_TENANT_CHARS,
};
pub use execution::{
    ErrorInfo, ExecEvent, ExecRequest, ExecutionRecord, ExecutionStatus, ExecutionTiming,
    MimeBundle, OutputItem, StdinMode, StreamName,
};
pub use introspection::{CodeQuery, CodeQueryReply, Completeness, ExpressionValue};
pub use limits::{Limits, MemoryUsage, ResourceLimits};
pub use network::{
    AllowEntry, Ipv4Cidr, NetworkPolicy, NetworkPolicyError, HOST_LOOPBACK_NAME, MAX_ALLOW_ENTRIES,
    METADATA_ADDRESS,
};
pub use node::{is_valid_node_id, NodeLoad, NodeRecord, MAX_NODE_ID_CHARS, NODE_LOST_REASON};
pub use session::{
    Expiry, InvalidTransition, ParseSessionIdError, ParseSessionStateError, SessionId,
    SessionRecord, SessionState, SessionTtl,
};
