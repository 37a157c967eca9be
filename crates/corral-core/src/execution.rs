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
    /// What `input()` and `getpass()` do in the code.
    pub stdin: StdinMode,
    /// The execution takes the next execution count and is kept in the session's history
    /// (and binds `_`, `_N`); without, it runs with the current count and is not stored —
    /// Jupyter's `store_history: false` (and `silent`).
    pub store_history: bool,
}

/// What reading standard input (`input()`, `getpass()`) does during an execution.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StdinMode {
    /// Standard input is empty: `input()` raises `EOFError` (what a plain script sees with
    /// `< /dev/null`; the native API and most surfaces).
    #[default]
    Empty,
    /// The client cannot answer: `input()` raises an error at once saying so (Jupyter's
    /// `allow_stdin: false`).
    Refused,
    /// The client answers: each read becomes an [`ExecEvent::InputRequest`] and waits for
    /// the client's reply (Jupyter's `allow_stdin: true`).
    Requested,
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
        /// The display id the code gave this output (`display(x, display_id=...)`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        display_id: Option<String>,
        /// This output replaces the earlier ones with the same `display_id` (an
        /// `update_display`), rather than adding one.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        update: bool,
    },
}

/// What happens during an execution, in order, for streaming to a client.
#[derive(Clone, Debug, PartialEq)]
pub enum ExecEvent {
    /// The execution left the queue and began, with this execution count; always the first
    /// event.
    Started {
        execution_count: u64,
        /// Executions counted since the session's interpreter last (re)started, this one
        /// included: what a Jupyter front-end numbers cells by.
        since_restart: u64,
    },
    Stream {
        name: StreamName,
        text: String,
    },
    Display {
        data: MimeBundle,
        metadata: serde_json::Map<String, serde_json::Value>,
        /// See [`OutputItem::Display`].
        display_id: Option<String>,
        /// See [`OutputItem::Display`].
        update: bool,
    },
    /// The code cleared its output so far (`clear_output`); with `wait`, only once new
    /// output arrives.
    ClearOutput {
        wait: bool,
    },
    /// The code reads standard input (with [`StdinMode::Requested`]): the execution waits
    /// until the client's answer is sent on the execution's input channel.
    InputRequest {
        prompt: String,
        /// The answer should not be echoed (`getpass`).
        password: bool,
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

/// When an execution ran and how it ended, without its code or output: what a session's
/// timeline needs (e.g. the Qiskit surface's job times).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecutionTiming {
    pub execution_count: u64,
    pub status: ExecutionStatus,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_ms: u64,
}

impl ExecutionRecord {
    /// Cuts what is kept of the output to `cap` bytes: stdout and stderr together, and the
    /// ordered outputs (stream text, then whole display items) likewise; `truncated` is set
    /// when anything was cut. The result and error are kept whole.
    pub fn cap_stored_output(&mut self, cap: usize) {
        let mut streams_left = cap;
        let mut cut = false;
        for text in [&mut self.stdout, &mut self.stderr] {
            cut |= truncate_to(text, streams_left);
            streams_left -= text.len();
        }
        let mut outputs_left = cap;
        let mut kept = Vec::with_capacity(self.outputs.len());
        for mut item in std::mem::take(&mut self.outputs) {
            if outputs_left == 0 {
                cut = true;
                break;
            }
            match &mut item {
                OutputItem::Stream { text, .. } => {
                    cut |= truncate_to(text, outputs_left);
                    outputs_left -= text.len();
                }
                OutputItem::Display { .. } => {
                    let size = serde_json::to_vec(&item).map_or(usize::MAX, |bytes| bytes.len());
                    if size > outputs_left {
                        cut = true;
                        continue;
                    }
                    outputs_left -= size;
                }
            }
            kept.push(item);
        }
        self.outputs = kept;
        self.truncated |= cut;
    }
}

/// Shortens `text` to at most `limit` bytes at a character boundary; whether it was cut.
fn truncate_to(text: &mut String, limit: usize) -> bool {
    if text.len() <= limit {
        return false;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_output_is_cut_at_character_boundaries() {
        let now = Utc::now();
        let mut record = ExecutionRecord {
            session_id: SessionId::new(),
            execution_count: 1,
            code: String::new(),
            status: ExecutionStatus::Ok,
            result: None,
            stdout: "ééé".into(),
            stderr: "err".into(),
            outputs: vec![OutputItem::Stream {
                name: StreamName::Stdout,
                text: "ééé".into(),
            }],
            error: None,
            duration_ms: 0,
            truncated: false,
            started_at: now,
            finished_at: now,
        };
        let untouched = record.clone();
        record.cap_stored_output(100);
        assert_eq!(record, untouched);
        record.cap_stored_output(3);
        assert_eq!((record.stdout.as_str(), record.stderr.as_str()), ("é", "e"));
        assert!(record.truncated);
        assert!(matches!(&record.outputs[..], [OutputItem::Stream { text, .. }] if text == "é"));
    }
}
