//! Questions about code asked of a session's interpreter without running it: completion,
//! inspection (help on a name) and whether a piece of code is complete — and their answers.
//!
//! Only the shapes; asking is the engine's job (in the session's queue, after what runs
//! before it) and answering the worker's.

use serde::{Deserialize, Serialize};

use crate::MimeBundle;

/// One question for a session's interpreter. Cursor positions count Unicode code points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CodeQuery {
    /// Names that could complete the code at the cursor.
    Complete { code: String, cursor_pos: u64 },
    /// Help on the name at the cursor; `detail_level` 0 or 1 (1 adds the source).
    Inspect {
        code: String,
        cursor_pos: u64,
        detail_level: u8,
    },
    /// Whether the code is complete as it is, needs more lines, or cannot be valid.
    IsComplete { code: String },
    /// The values of named expressions in the session's namespace (Jupyter's
    /// `user_expressions`), in order.
    Evaluate { expressions: Vec<(String, String)> },
    /// Nothing: answered once everything queued before it has run.
    Barrier,
}

/// The answer to a [`CodeQuery`], variant for variant.
#[derive(Clone, Debug, PartialEq)]
pub enum CodeQueryReply {
    Complete {
        matches: Vec<String>,
        cursor_start: u64,
        cursor_end: u64,
    },
    Inspect {
        found: bool,
        data: MimeBundle,
    },
    IsComplete {
        status: Completeness,
        /// The indentation of the next line, when `Incomplete`.
        indent: String,
    },
    /// Each expression's name and value, in the order asked.
    Evaluate {
        results: Vec<(String, ExpressionValue)>,
    },
    Barrier,
}

/// The value of one evaluated expression, or why it has none.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ExpressionValue {
    Ok {
        data: MimeBundle,
        #[serde(default)]
        metadata: serde_json::Map<String, serde_json::Value>,
    },
    Error {
        ename: String,
        evalue: String,
        #[serde(default)]
        traceback: Vec<String>,
    },
}

/// Whether a piece of code is ready to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Completeness {
    Complete,
    Incomplete,
    Invalid,
    Unknown,
}

impl Completeness {
    pub fn as_str(self) -> &'static str {
        match self {
            Completeness::Complete => "complete",
            Completeness::Incomplete => "incomplete",
            Completeness::Invalid => "invalid",
            Completeness::Unknown => "unknown",
        }
    }
}
