//! Operations carried out inside a session, as code for its interpreter: the envd
//! filesystem calls, commands (started as background processes; their output is tailed by
//! `poll` executions), signals, environment variables and code contexts. The Python is
//! `in_sandbox.py`, executed into the module `_corral_e2b` on every call (so a restarted
//! interpreter gets it again); replies come back as a display of `application/json`.
//!
//! Running the code this way keeps every shell command and file operation inside the
//! session's own sandbox, with the same user, namespaces and limits as its code, without a
//! second channel into the sandbox. It does not submit anything (the API surface does) and
//! it does not know E2B's wire shapes (`envd`).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::connect::Code;
use crate::envd::ProcessConfig;

/// The helper module's source.
const HELPER: &str = include_str!("in_sandbox.py");

/// One operation; serialised as the `args` of the helper's `op`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Operation {
    Stat {
        path: String,
    },
    List {
        path: String,
        depth: u32,
    },
    Mkdir {
        path: String,
    },
    Move {
        source: String,
        destination: String,
    },
    Remove {
        path: String,
    },
    /// Starts a command in a new session (process group), with a pipe for its stdin when
    /// `stdin`; replies `{"pid"}`.
    Spawn {
        #[serde(flatten)]
        config: ProcessConfig,
        tag: Option<String>,
        stdin: bool,
    },
    /// Writes `data` (base64) to the process's stdin.
    Stdin {
        pid: u32,
        data: String,
    },
    CloseStdin {
        pid: u32,
    },
    /// Writes the process's new output to the execution's stdout and stderr, waiting up to
    /// `wait` seconds for it to end; replies `{"exit": code | null}`.
    Poll {
        pid: u32,
        wait: f64,
    },
    Signal {
        pid: u32,
        signal: i32,
    },
    /// Replies the running processes: `[{"pid", "config", "tag"}]`.
    Processes,
    /// Sets environment variables; with `save`, `restore_env` undoes it.
    Setenv {
        envs: BTreeMap<String, String>,
        save: bool,
    },
    RestoreEnv,
    /// Forgets a code context's namespace.
    ResetContext {
        id: String,
    },
}

/// A Python string literal holding `text` (a JSON string literal is one).
fn literal(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned())
}

/// Code that (re)installs the helper module, then evaluates `expression` on it (`M`).
fn with_helper(expression: &str) -> String {
    format!(
        "__import__(\"builtins\").exec({helper}, __import__(\"sys\").modules.setdefault(\"_corral_e2b\", __import__(\"types\").ModuleType(\"_corral_e2b\")).__dict__)\n{expression}\n",
        helper = literal(HELPER),
    )
}

const MODULE: &str = "__import__(\"sys\").modules[\"_corral_e2b\"]";

/// The code that carries out `operation`; its reply is a display of `application/json`.
pub fn operation_code(operation: &Operation) -> String {
    let args = serde_json::to_string(operation).unwrap_or_else(|_| "{}".to_owned());
    with_helper(&format!(
        "{MODULE}.op(__import__(\"json\").loads({}))",
        literal(&args)
    ))
}

/// The code that runs `code` in the namespace of context `context` (working directory
/// `cwd` while it runs); the value of its last expression is the execution's result.
pub fn context_code(context: &str, code: &str, cwd: Option<&str>) -> String {
    let cwd = cwd.map_or_else(|| "None".to_owned(), literal);
    with_helper(&format!(
        "{MODULE}.run_in_context({}, {}, {cwd})",
        literal(context),
        literal(code)
    ))
}

/// The reply of an operation, from a display's MIME bundle.
pub fn reply(data: &Map<String, Value>) -> Option<&Value> {
    data.get("application/json")
}

/// The Connect code for a Python exception raised by an operation.
pub fn failure_code(exception: &str) -> Code {
    match exception {
        "FileNotFoundError" | "ProcessLookupError" => Code::NotFound,
        "FileExistsError" => Code::AlreadyExists,
        "BrokenPipeError" => Code::FailedPrecondition,
        "NotADirectoryError" | "IsADirectoryError" => Code::InvalidArgument,
        "PermissionError" => Code::PermissionDenied,
        _ => Code::FailedPrecondition,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_serialised_for_the_helper() {
        let spawn = Operation::Spawn {
            config: ProcessConfig {
                cmd: "/bin/bash".into(),
                args: vec!["-c".into(), "echo \"hi\"\n".into()],
                envs: BTreeMap::new(),
                cwd: None,
            },
            tag: None,
            stdin: true,
        };
        assert_eq!(
            serde_json::to_value(&spawn).expect("json"),
            serde_json::json!({"op": "spawn", "cmd": "/bin/bash", "args": ["-c", "echo \"hi\"\n"],
                "envs": {}, "tag": null, "stdin": true})
        );
        let code = operation_code(&Operation::Processes);
        assert!(
            code.ends_with(".op(__import__(\"json\").loads(\"{\\\"op\\\":\\\"processes\\\"}\"))\n")
        );
        assert_eq!(code.lines().count(), 2, "the helper is one line of code");
        assert!(context_code("c1", "x = 1\nx", Some("/tmp"))
            .contains("run_in_context(\"c1\", \"x = 1\\nx\", \"/tmp\")"));
    }

    #[test]
    fn exceptions_map_to_codes() {
        assert_eq!(failure_code("FileNotFoundError"), Code::NotFound);
        assert_eq!(failure_code("FileExistsError"), Code::AlreadyExists);
        assert_eq!(failure_code("OSError"), Code::FailedPrecondition);
    }
}
