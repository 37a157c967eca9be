//! The messages of protocol version 1, both directions.

use corral_core::MimeBundle;
use serde::{Deserialize, Serialize};

/// The protocol version this crate speaks; the worker announces its own in `ready`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Server → worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerRequest {
    Exec {
        id: String,
        code: String,
        execution_count: u64,
        sync_token: String,
    },
    Complete {
        id: String,
        code: String,
        cursor_pos: u64,
    },
    Shutdown,
}

/// How a cell finished, as the worker reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DoneStatus {
    Ok,
    Error,
}

/// Worker → server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerEvent {
    Ready {
        protocol: u32,
        #[serde(default)]
        language: String,
        #[serde(default)]
        language_version: String,
        #[serde(default)]
        pid: u32,
    },
    Display {
        id: String,
        data: MimeBundle,
        #[serde(default)]
        metadata: serde_json::Map<String, serde_json::Value>,
        /// The fence the worker wrote to stdout and stderr right before this frame (see
        /// [`crate::Scanned::Fence`]); `None` when it could not write one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fence: Option<u64>,
    },
    Result {
        id: String,
        execution_count: u64,
        data: MimeBundle,
        #[serde(default)]
        metadata: serde_json::Map<String, serde_json::Value>,
        /// The fence the worker wrote to stdout and stderr right before this frame (see
        /// [`crate::Scanned::Fence`]); `None` when it could not write one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fence: Option<u64>,
    },
    Error {
        id: String,
        ename: String,
        evalue: String,
        traceback: Vec<String>,
        /// The fence the worker wrote to stdout and stderr right before this frame (see
        /// [`crate::Scanned::Fence`]); `None` when it could not write one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fence: Option<u64>,
    },
    Done {
        id: String,
        status: DoneStatus,
    },
    CompleteReply {
        id: String,
        matches: Vec<String>,
        cursor_start: u64,
        cursor_end: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_request_has_the_documented_shape() {
        let request = WorkerRequest::Exec {
            id: "a".into(),
            code: "1".into(),
            execution_count: 2,
            sync_token: "ff".into(),
        };
        let json = serde_json::to_value(&request).expect("serialises");
        assert_eq!(
            json,
            serde_json::json!({"type": "exec", "id": "a", "code": "1", "execution_count": 2, "sync_token": "ff"})
        );
    }

    #[test]
    fn events_parse_from_driver_json() {
        let event: WorkerEvent = serde_json::from_str(
            r#"{"type":"error","id":"x","ename":"ZeroDivisionError","evalue":"division by zero","traceback":["a"]}"#,
        )
        .expect("parses");
        assert!(
            matches!(event, WorkerEvent::Error { ref ename, .. } if ename == "ZeroDivisionError")
        );
        let done: WorkerEvent =
            serde_json::from_str(r#"{"type":"done","id":"x","status":"ok"}"#).expect("parses");
        assert_eq!(
            done,
            WorkerEvent::Done {
                id: "x".into(),
                status: DoneStatus::Ok
            }
        );
    }
}
