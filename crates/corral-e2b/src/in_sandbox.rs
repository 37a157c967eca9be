//! Operations carried out inside a session, as code for its interpreter: the envd
//! filesystem calls, commands (started as background processes; their output is tailed by
//! `poll` executions), signals, environment variables and code contexts, including contexts
//! of JavaScript and Bash: for those the helper starts corral's own driver of that language
//! inside the sandbox and is its server side of the worker protocol (`docs/protocol.md`; the
//! one place besides `corral-protocol` that frames it, because it runs inside the sandbox,
//! where no Rust runs). The Python is
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
use crate::interpreter::Language;

/// The helper module's source.
const HELPER: &str = include_str!("in_sandbox.py");
/// corral's JavaScript and Bash drivers, run inside the sandbox for contexts of those
/// languages (the same drivers a `javascript` or `bash` session runs).
const JAVASCRIPT_DRIVER: &str = include_str!("../../../drivers/node/driver.js");
const BASH_DRIVER: &str = include_str!("../../../drivers/bash/driver.py");

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

/// The code that runs `code` in context `context` of a language other than Python: the
/// helper starts that language's corral driver inside the sandbox on the context's first use
/// (working directory `cwd`), speaks the worker protocol to it, and passes its output on as
/// the execution's own; its result becomes the execution's result and its error the
/// execution's error. `None` for Python (see [`context_code`]).
pub fn foreign_code(
    language: Language,
    context: &str,
    code: &str,
    cwd: Option<&str>,
) -> Option<String> {
    let (argv, file, source) = match language {
        Language::Python => return None,
        Language::Javascript => (
            r#"["node", "--expose-internals"]"#,
            "driver.js",
            JAVASCRIPT_DRIVER,
        ),
        Language::Bash => (
            "[__import__(\"sys\").executable]",
            "driver-bash.py",
            BASH_DRIVER,
        ),
    };
    let cwd = cwd.map_or_else(|| "None".to_owned(), literal);
    Some(with_helper(&format!(
        "{MODULE}.run_foreign({}, {argv}, {}, {}, {}, {cwd})",
        literal(context),
        literal(file),
        literal(source),
        literal(code),
    )))
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

    #[test]
    fn foreign_contexts_carry_their_driver() {
        assert_eq!(foreign_code(Language::Python, "c", "1", None), None);
        let js = foreign_code(Language::Javascript, "c1", "1 + 1", Some("/tmp")).expect("js");
        assert!(
            js.contains("run_foreign(\"c1\", [\"node\", \"--expose-internals\"], \"driver.js\"")
        );
        assert!(js.contains("corral's JavaScript worker driver"));
        assert!(js.ends_with("\"1 + 1\", \"/tmp\")\n"), "{js}");
        let bash = foreign_code(Language::Bash, "c2", "echo hi", None).expect("bash");
        assert!(bash.contains("\"driver-bash.py\""));
        assert!(bash.ends_with("\"echo hi\", None)\n"), "{bash}");
    }
}
