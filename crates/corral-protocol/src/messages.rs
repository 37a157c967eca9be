//! The messages of protocol version 1, both directions.

use corral_core::{Completeness, ExpressionValue, MimeBundle, StdinMode};
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
        /// What `input()` does; absent means [`StdinMode::Empty`].
        #[serde(default, skip_serializing_if = "is_empty_stdin")]
        stdin: StdinMode,
        /// Whether the result is bound to `_` and `_<execution_count>`; absent means yes.
        #[serde(default = "yes", skip_serializing_if = "is_yes")]
        store_history: bool,
    },
    /// The answer to the running exec's `input_request`.
    InputReply {
        id: String,
        value: String,
    },
    Complete {
        id: String,
        code: String,
        cursor_pos: u64,
    },
    Inspect {
        id: String,
        code: String,
        cursor_pos: u64,
        detail_level: u8,
    },
    IsComplete {
        id: String,
        code: String,
    },
    /// Evaluates each `(name, expression)` in the session's namespace.
    Evaluate {
        id: String,
        expressions: Vec<(String, String)>,
    },
    Shutdown,
}

fn is_empty_stdin(mode: &StdinMode) -> bool {
    *mode == StdinMode::Empty
}

fn yes() -> bool {
    true
}

fn is_yes(value: &bool) -> bool {
    *value
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
        #[serde(default, skip_serializing_if = "Option::is_none")]
        display_id: Option<String>,
        /// Replaces the outputs with the same `display_id`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        update: bool,
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
    ClearOutput {
        id: String,
        #[serde(default)]
        wait: bool,
        /// See `Display::fence`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fence: Option<u64>,
    },
    /// The running cell reads standard input; it waits for an `input_reply`.
    InputRequest {
        id: String,
        #[serde(default)]
        prompt: String,
        #[serde(default)]
        password: bool,
        /// See `Display::fence`.
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
    InspectReply {
        id: String,
        found: bool,
        #[serde(default)]
        data: MimeBundle,
    },
    IsCompleteReply {
        id: String,
        status: Completeness,
        #[serde(default)]
        indent: String,
    },
    /// Each expression's name and value, in the order asked.
    EvaluateReply {
        id: String,
        results: Vec<(String, ExpressionValue)>,
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
            stdin: StdinMode::Empty,
            store_history: true,
        };
        let json = serde_json::to_value(&request).expect("serialises");
        assert_eq!(
            json,
            serde_json::json!({"type": "exec", "id": "a", "code": "1", "execution_count": 2, "sync_token": "ff"})
        );
    }

    #[test]
    fn exec_request_names_stdin_only_when_not_empty() {
        let request = WorkerRequest::Exec {
            id: "a".into(),
            code: "input()".into(),
            execution_count: 1,
            sync_token: "ff".into(),
            stdin: StdinMode::Requested,
            store_history: false,
        };
        let json = serde_json::to_value(&request).expect("serialises");
        assert_eq!(json["stdin"], "requested");
        assert_eq!(json["store_history"], false);
        let reply = serde_json::to_value(WorkerRequest::InputReply {
            id: "a".into(),
            value: "x".into(),
        })
        .expect("serialises");
        assert_eq!(
            reply,
            serde_json::json!({"type": "input_reply", "id": "a", "value": "x"})
        );
    }

    #[test]
    fn introspection_frames_parse() {
        let event: WorkerEvent = serde_json::from_str(
            r#"{"type":"is_complete_reply","id":"q","status":"incomplete","indent":"    "}"#,
        )
        .expect("parses");
        assert_eq!(
            event,
            WorkerEvent::IsCompleteReply {
                id: "q".into(),
                status: Completeness::Incomplete,
                indent: "    ".into()
            }
        );
        let event: WorkerEvent = serde_json::from_str(
            r#"{"type":"input_request","id":"1","prompt":"name? ","password":true,"fence":2}"#,
        )
        .expect("parses");
        assert!(matches!(
            event,
            WorkerEvent::InputRequest {
                password: true,
                fence: Some(2),
                ..
            }
        ));
        let event: WorkerEvent = serde_json::from_str(
            r#"{"type":"display","id":"1","data":{"text/plain":"a"},"display_id":"d","update":true}"#,
        )
        .expect("parses");
        assert!(
            matches!(event, WorkerEvent::Display { update: true, display_id: Some(ref d), .. } if d == "d")
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
