//! Executions: what a client asks a session to run, what comes out while it runs, and the
//! record kept afterwards.
//!
//! Running code, capping output and timing are not done here (see `corral-worker` and
//! `corral-engine`); these are only the shapes.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::SessionId;

/// A MIME bundle: MIME type → value (text, base64 for binary types, JSON for `application/json`).
pub type MimeBundle = serde_json::Map<String, serde_json::Value>;

/// One request to run code in a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecRequest {
    pub code: String,
    /// `None` uses the operator's default.
    pub timeout: Option<Duration>,
}

/// How an execution ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionStatus {
    /// Ran to the end.
    Ok,
    /// The code raised.
    Error,
    /// Stopped by its time limit (the interpreter survived the interrupt).
    Timeout,
    /// Stopped by a client's interrupt.
    Interrupted,
    /// The worker died or was killed; the session is dead.
    Killed,
}

impl ExecutionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionStatus::Ok => "ok",
            ExecutionStatus::Error => "error",
            ExecutionStatus::Timeout => "timeout",
            ExecutionStatus::Interrupted => "interrupted",
            ExecutionStatus::Killed => "killed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            ExecutionStatus::Ok,
            ExecutionStatus::Error,
            ExecutionStatus::Timeout,
            ExecutionStatus::Interrupted,
            ExecutionStatus::Killed,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
    }
}

/// Which output stream a chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamName {
    Stdout,
    Stderr,
}

impl StreamName {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamName::Stdout => "stdout",
            StreamName::Stderr => "stderr",
        }
    }
}

/// An error raised by executed code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub ename: String,
    pub evalue: String,
    pub traceback: Vec<String>,
}

/// One ordered output of an execution (streams are merged chunks in arrival order).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum OutputItem {
    Stream {
        name: StreamName,
        text: String,
    },
    Display {
        data: MimeBundle,
        #[serde(default)]
        metadata: serde_json::Map<String, serde_json::Value>,
    },
}

/// What happens during an execution, in order, for streaming to a client.
#[derive(Clone, Debug, PartialEq)]
pub enum ExecEvent {
    Stream {
        name: StreamName,
        text: String,
    },
    Display {
        data: MimeBundle,
        metadata: serde_json::Map<String, serde_json::Value>,
    },
    Result {
        execution_count: u64,
        data: MimeBundle,
    },
    Error(ErrorInfo),
}

/// The complete record of one execution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecutionRecord {
    pub session_id: SessionId,
    pub execution_count: u64,
    pub code: String,
    pub status: ExecutionStatus,
    pub result: Option<MimeBundle>,
    pub stdout: String,
    pub stderr: String,
    pub outputs: Vec<OutputItem>,
    pub error: Option<ErrorInfo>,
    pub duration_ms: u64,
    /// A stream hit the output cap and later output was dropped.
    pub truncated: bool,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}
