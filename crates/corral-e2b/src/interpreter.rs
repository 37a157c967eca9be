//! The code interpreter's wire shapes (`e2b_code_interpreter`): the `POST /execute` request
//! and its reply, one JSON object per line (`stdout`, `stderr`, `result` with its MIME
//! formats and `is_main_result`, `error`, `number_of_executions`, `end_of_execution`), and
//! contexts.
//!
//! It does not run code or know where a context's state lives (see `in_sandbox`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A language a context runs: the sandbox's own Python, or JavaScript (Node.js) or Bash run
/// by their corral drivers inside the same sandbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Python,
    Javascript,
    Bash,
}

impl Language {
    /// The language named `name` as E2B's SDKs and templates spell it (any case).
    pub fn parse(name: &str) -> Result<Language, String> {
        match name.to_ascii_lowercase().as_str() {
            "python" | "python3" => Ok(Language::Python),
            "javascript" | "js" | "node" | "nodejs" => Ok(Language::Javascript),
            "bash" | "sh" | "shell" => Ok(Language::Bash),
            _ => Err(format!(
                "language {name:?} is not supported: corral sandboxes run python, javascript and bash"
            )),
        }
    }

    /// `language` when given, else Python.
    pub fn parse_optional(language: Option<&str>) -> Result<Language, String> {
        language.map_or(Ok(Language::Python), Language::parse)
    }

    /// The name a context reports.
    pub fn name(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::Javascript => "javascript",
            Language::Bash => "bash",
        }
    }

    /// The context a request in this language without `context_id` runs in.
    pub fn default_context(self) -> &'static str {
        match self {
            Language::Python => DEFAULT_CONTEXT,
            Language::Javascript => "default-javascript",
            Language::Bash => "default-bash",
        }
    }
}

/// The id of the context a request without `context_id` runs in: the session's own
/// namespace.
pub const DEFAULT_CONTEXT: &str = "default";

/// `POST /execute`.
#[derive(Clone, Debug, Deserialize)]
pub struct ExecuteRequest {
    pub code: String,
    pub context_id: Option<String>,
    pub language: Option<String>,
    pub env_vars: Option<BTreeMap<String, String>>,
}

/// `POST /contexts`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct CreateContext {
    pub language: Option<String>,
    pub cwd: Option<String>,
}

/// A context as the SDK reads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    pub id: String,
    pub language: String,
    pub cwd: String,
}

/// One line of the `/execute` reply.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputLine {
    Stdout {
        text: String,
        /// Unix epoch in nanoseconds.
        timestamp: i64,
    },
    Stderr {
        text: String,
        timestamp: i64,
    },
    Result(ResultFormats),
    Error {
        name: String,
        value: String,
        /// The traceback's lines joined.
        traceback: String,
    },
    NumberOfExecutions {
        execution_count: u64,
    },
    EndOfExecution,
    UnexpectedEndOfExecution,
}

impl OutputLine {
    /// The line as sent: JSON and a newline.
    pub fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned());
        line.push('\n');
        line
    }

    /// An error line from a traceback given as lines.
    pub fn error(name: &str, value: &str, traceback: &[String]) -> OutputLine {
        OutputLine::Error {
            name: name.to_owned(),
            value: value.to_owned(),
            traceback: traceback.join("\n"),
        }
    }
}

/// A `result`: each MIME type under the SDK's name for it, the rest under `extra`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ResultFormats {
    #[serde(flatten)]
    pub formats: Map<String, Value>,
    pub is_main_result: bool,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

/// MIME type → the SDK's `Result` field.
const FORMAT_NAMES: &[(&str, &str)] = &[
    ("text/plain", "text"),
    ("text/html", "html"),
    ("text/markdown", "markdown"),
    ("image/svg+xml", "svg"),
    ("image/png", "png"),
    ("image/jpeg", "jpeg"),
    ("application/pdf", "pdf"),
    ("text/latex", "latex"),
    ("application/json", "json"),
    ("application/javascript", "javascript"),
];

impl ResultFormats {
    /// A result from a MIME bundle; `is_main_result` for the cell's value (not a display).
    pub fn from_bundle(bundle: &Map<String, Value>, is_main_result: bool) -> ResultFormats {
        let mut result = ResultFormats {
            is_main_result,
            ..Default::default()
        };
        for (mime, value) in bundle {
            match FORMAT_NAMES.iter().find(|(known, _)| known == mime) {
                Some((_, name)) => {
                    result.formats.insert((*name).to_owned(), value.clone());
                }
                None => {
                    result.extra.insert(mime.clone(), value.clone());
                }
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_have_the_sdk_s_shapes() {
        let line = OutputLine::Stdout {
            text: "hi\n".into(),
            timestamp: 7,
        };
        assert_eq!(
            line.to_line(),
            "{\"type\":\"stdout\",\"text\":\"hi\\n\",\"timestamp\":7}\n"
        );
        let bundle: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "text/plain": "<Figure>", "image/png": "iVBOR", "application/x-thing": 1
        }))
        .expect("bundle");
        let result = OutputLine::Result(ResultFormats::from_bundle(&bundle, true));
        assert_eq!(
            serde_json::to_value(&result).expect("json"),
            serde_json::json!({"type": "result", "text": "<Figure>", "png": "iVBOR",
                "is_main_result": true, "extra": {"application/x-thing": 1}})
        );
        let error = OutputLine::error("ValueError", "bad", &["a".into(), "b".into()]);
        assert_eq!(
            serde_json::to_value(&error).expect("json"),
            serde_json::json!({"type": "error", "name": "ValueError", "value": "bad",
                "traceback": "a\nb"})
        );
        assert_eq!(
            OutputLine::NumberOfExecutions { execution_count: 3 }.to_line(),
            "{\"type\":\"number_of_executions\",\"execution_count\":3}\n"
        );
        assert_eq!(
            OutputLine::EndOfExecution.to_line(),
            "{\"type\":\"end_of_execution\"}\n"
        );
    }

    #[test]
    fn only_python_runs() {
        assert_eq!(Language::parse_optional(None), Ok(Language::Python));
        assert_eq!(Language::parse("Python"), Ok(Language::Python));
        assert_eq!(Language::parse("js"), Ok(Language::Javascript));
        assert_eq!(Language::parse("JavaScript"), Ok(Language::Javascript));
        assert_eq!(Language::parse("bash"), Ok(Language::Bash));
        let refused = Language::parse("r").expect_err("r is not run");
        assert!(refused.contains("\"r\""), "{refused}");
        assert_eq!(Language::Bash.default_context(), "default-bash");
    }
}
