//! A client's message read as what the kernel must do. Pure mapping: serving the request
//! (running code, asking the interpreter) is the caller's job.

use jupyter_protocol::{
    Channel, ExecuteRequest, HistoryRequest, JupyterMessage, JupyterMessageContent,
};

/// What a message from a client asks of the kernel.
#[derive(Debug, Clone)]
pub enum KernelRequest {
    Execute(ExecuteRequest),
    KernelInfo,
    Complete {
        code: String,
        cursor_pos: u64,
    },
    Inspect {
        code: String,
        cursor_pos: u64,
        detail_level: u8,
    },
    IsComplete {
        code: String,
    },
    History(HistoryRequest),
    CommInfo,
    /// `comm_open`, `comm_msg`, `comm_close`: corral's kernels have no comm targets.
    Comm,
    Shutdown {
        restart: bool,
    },
    Interrupt,
    /// The answer to an `input_request` (on the stdin channel).
    InputReply {
        value: String,
    },
    /// A request corral's kernels do not serve (e.g. `debug_request`), or a message that
    /// is not a request (e.g. a client echoing IOPub).
    Unsupported(String),
}

impl KernelRequest {
    /// The request `message` makes on `channel`.
    pub fn of(channel: &Channel, message: &JupyterMessage) -> KernelRequest {
        use JupyterMessageContent as C;
        match (channel, &message.content) {
            (Channel::Shell, C::ExecuteRequest(request)) => KernelRequest::Execute(request.clone()),
            (Channel::Shell | Channel::Control, C::KernelInfoRequest(_)) => {
                KernelRequest::KernelInfo
            }
            (Channel::Shell, C::CompleteRequest(request)) => KernelRequest::Complete {
                code: request.code.clone(),
                cursor_pos: request.cursor_pos as u64,
            },
            (Channel::Shell, C::InspectRequest(request)) => KernelRequest::Inspect {
                code: request.code.clone(),
                cursor_pos: request.cursor_pos as u64,
                detail_level: request.detail_level.unwrap_or(0).min(1) as u8,
            },
            (Channel::Shell, C::IsCompleteRequest(request)) => KernelRequest::IsComplete {
                code: request.code.clone(),
            },
            (Channel::Shell, C::HistoryRequest(request)) => KernelRequest::History(request.clone()),
            (Channel::Shell, C::CommInfoRequest(_)) => KernelRequest::CommInfo,
            (Channel::Shell, C::CommOpen(_) | C::CommMsg(_) | C::CommClose(_)) => {
                KernelRequest::Comm
            }
            (Channel::Shell | Channel::Control, C::ShutdownRequest(request)) => {
                KernelRequest::Shutdown {
                    restart: request.restart,
                }
            }
            (Channel::Control, C::InterruptRequest(_)) => KernelRequest::Interrupt,
            (Channel::Stdin, C::InputReply(reply)) => KernelRequest::InputReply {
                value: reply.value.clone(),
            },
            _ => KernelRequest::Unsupported(message.header.msg_type.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{decode, Frame, Framing};

    fn message(
        channel: &str,
        msg_type: &str,
        content: serde_json::Value,
    ) -> (Channel, JupyterMessage) {
        let frame = serde_json::json!({
            "header": {"msg_id": "m", "username": "u", "session": "s", "date": "2026-12-02T00:00:00Z",
                       "msg_type": msg_type, "version": "5.3"},
            "parent_header": {}, "metadata": {}, "content": content, "channel": channel,
        });
        decode(Framing::Json, Frame::Text(frame.to_string())).expect("decodes")
    }

    fn request(channel: &str, msg_type: &str, content: serde_json::Value) -> KernelRequest {
        let (channel, message) = message(channel, msg_type, content);
        KernelRequest::of(&channel, &message)
    }

    #[test]
    fn requests_are_read_per_channel() {
        assert!(matches!(
            request("shell", "kernel_info_request", serde_json::json!({})),
            KernelRequest::KernelInfo
        ));
        assert!(matches!(
            request("control", "kernel_info_request", serde_json::json!({})),
            KernelRequest::KernelInfo
        ));
        assert!(matches!(
            request("control", "interrupt_request", serde_json::json!({})),
            KernelRequest::Interrupt
        ));
        assert!(matches!(
            request(
                "shell",
                "shutdown_request",
                serde_json::json!({"restart": true})
            ),
            KernelRequest::Shutdown { restart: true }
        ));
        assert!(matches!(
            request("stdin", "input_reply", serde_json::json!({"value": "ada", "status": "ok"})),
            KernelRequest::InputReply { ref value } if value == "ada"
        ));
        assert!(matches!(
            request(
                "shell",
                "inspect_request",
                serde_json::json!({"code": "len", "cursor_pos": 3, "detail_level": 1})
            ),
            KernelRequest::Inspect {
                detail_level: 1,
                cursor_pos: 3,
                ..
            }
        ));
        assert!(matches!(
            request(
                "shell",
                "history_request",
                serde_json::json!({"hist_access_type": "tail", "n": 3, "output": false, "raw": true})
            ),
            KernelRequest::History(HistoryRequest::Tail { n: 3, .. })
        ));
        assert!(matches!(
            request("shell", "comm_info_request", serde_json::json!({})),
            KernelRequest::CommInfo
        ));
        assert!(matches!(
            request(
                "shell",
                "comm_open",
                serde_json::json!({"comm_id": "c", "target_name": "t", "data": {}})
            ),
            KernelRequest::Comm
        ));
    }

    #[test]
    fn messages_on_the_wrong_channel_or_unknown_are_unsupported() {
        assert!(matches!(
            request("stdin", "execute_request", serde_json::json!({"code": "1", "silent": false, "store_history": true})),
            KernelRequest::Unsupported(ref kind) if kind == "execute_request"
        ));
        assert!(matches!(
            request("shell", "debug_request", serde_json::json!({})),
            KernelRequest::Unsupported(_)
        ));
    }
}
