//! Message headers: every message a kernel sends has a fresh id, the date, the protocol
//! version and — for replies and the outputs of a request — the request's header as its
//! parent and the requesting client's session.

use chrono::{DateTime, SubsecRound, Utc};
use jupyter_protocol::{ExecutionState, Header, JupyterMessage, JupyterMessageContent, Status};

/// The messaging protocol version corral's kernels speak.
pub const PROTOCOL_VERSION: &str = "5.3";

/// The user name in the headers of messages corral's kernels send.
const USERNAME: &str = "corral";

/// One kernel's identity on the wire: the session id it uses for messages that answer
/// nobody in particular (a restart's status).
#[derive(Clone, Debug)]
pub struct Kernel {
    session: String,
}

impl Default for Kernel {
    fn default() -> Self {
        Kernel::new()
    }
}

impl Kernel {
    pub fn new() -> Kernel {
        Kernel {
            session: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// The kernel's own session id.
    pub fn session(&self) -> &str {
        &self.session
    }

    /// A message answering or produced by the request whose header is `parent` (a reply, or
    /// an output on IOPub): the parent's session, the parent as `parent_header`.
    pub fn child(
        &self,
        parent: &Header,
        content: impl Into<JupyterMessageContent>,
    ) -> JupyterMessage {
        let content = content.into();
        JupyterMessage {
            zmq_identities: Vec::new(),
            header: header(&parent.session, content.message_type()),
            parent_header: Some(parent.clone()),
            metadata: serde_json::json!({}),
            content,
            buffers: Vec::new(),
            channel: None,
        }
    }

    /// A message that answers nothing (no parent), in the kernel's own session.
    pub fn unprompted(&self, content: impl Into<JupyterMessageContent>) -> JupyterMessage {
        let content = content.into();
        JupyterMessage {
            zmq_identities: Vec::new(),
            header: header(&self.session, content.message_type()),
            parent_header: None,
            metadata: serde_json::json!({}),
            content,
            buffers: Vec::new(),
            channel: None,
        }
    }

    /// An IOPub `status` message, for `parent` when given.
    pub fn status(&self, parent: Option<&Header>, state: ExecutionState) -> JupyterMessage {
        let content = Status {
            execution_state: state,
        };
        match parent {
            Some(parent) => self.child(parent, content),
            None => self.unprompted(content),
        }
    }
}

fn header(session: &str, msg_type: &str) -> Header {
    Header {
        msg_id: uuid::Uuid::new_v4().to_string(),
        username: USERNAME.to_owned(),
        session: session.to_owned(),
        date: now(),
        msg_type: msg_type.to_owned(),
        version: PROTOCOL_VERSION.to_owned(),
    }
}

/// Now, to the microsecond: ISO 8601 dates with more than six fractional digits are not
/// parsed as dates by jupyter_client.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jupyter_protocol::KernelInfoRequest;

    fn request_header() -> Header {
        Header {
            msg_id: "req-1".into(),
            username: "user".into(),
            session: "client-session".into(),
            date: Utc::now(),
            msg_type: "kernel_info_request".into(),
            version: "5.3".into(),
        }
    }

    #[test]
    fn children_carry_the_parent_and_the_clients_session() {
        let kernel = Kernel::new();
        let parent = request_header();
        let first = kernel.child(&parent, KernelInfoRequest {});
        let second = kernel.status(Some(&parent), ExecutionState::Idle);
        assert_eq!(first.header.session, "client-session");
        assert_eq!(
            first.parent_header.as_ref().map(|h| h.msg_id.as_str()),
            Some("req-1")
        );
        assert_ne!(first.header.msg_id, second.header.msg_id);
        assert_eq!(second.header.msg_type, "status");
        assert_eq!(second.header.version, PROTOCOL_VERSION);
        assert_eq!(first.header.date.timestamp_subsec_nanos() % 1000, 0);
    }

    #[test]
    fn unprompted_messages_use_the_kernels_session() {
        let kernel = Kernel::new();
        let message = kernel.status(None, ExecutionState::Restarting);
        assert_eq!(message.header.session, kernel.session());
        assert!(message.parent_header.is_none());
    }
}
