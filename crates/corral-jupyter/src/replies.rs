//! corral's executions, questions about code and history, said in Jupyter's terms: the
//! contents of IOPub outputs and of shell replies. Headers are [`crate::Kernel`]'s job.

use std::collections::HashMap;

use corral_core::{
    CodeQueryReply, ErrorInfo, ExecEvent, ExecutionRecord, ExecutionStatus, ExpressionValue,
    MimeBundle, StreamName,
};
use jupyter_protocol::{
    ClearOutput, CodeMirrorMode, CommInfoReply, CompleteReply, DisplayData, ErrorOutput,
    ExecuteInput, ExecuteReply, ExecuteResult, ExecutionCount, ExpressionResult, HistoryEntry,
    HistoryReply, HistoryRequest, InputRequest, InspectReply, IsCompleteReply,
    IsCompleteReplyStatus, JupyterMessageContent, KernelInfoReply, LanguageInfo, Media, MediaType,
    ReplyError, ReplyStatus, Stdio, StreamContent, Transient, UpdateDisplayData,
};

use crate::PROTOCOL_VERSION;

/// A MIME bundle as Jupyter's typed media; a bundle whose well-known types do not have the
/// shape the protocol types expect is passed on as it is.
pub fn media(bundle: &MimeBundle) -> Media {
    serde_json::from_value(serde_json::Value::Object(bundle.clone())).unwrap_or_else(|_| Media {
        content: bundle
            .iter()
            .map(|(mime, value)| MediaType::Other((mime.clone(), value.clone())))
            .collect(),
    })
}

fn count(execution_count: u64) -> ExecutionCount {
    ExecutionCount::new(usize::try_from(execution_count).unwrap_or(usize::MAX))
}

/// The IOPub message for an event of a running execution; `None` for the events that are
/// not outputs (the start, input requests: the caller says those in its own way).
pub fn output(event: &ExecEvent) -> Option<JupyterMessageContent> {
    Some(match event {
        ExecEvent::Stream { name, text } => StreamContent {
            name: match name {
                StreamName::Stdout => Stdio::Stdout,
                StreamName::Stderr => Stdio::Stderr,
            },
            text: text.clone(),
        }
        .into(),
        ExecEvent::Display {
            data,
            metadata,
            display_id: Some(display_id),
            update: true,
        } => UpdateDisplayData {
            data: media(data),
            metadata: metadata.clone(),
            transient: Transient {
                display_id: Some(display_id.clone()),
            },
        }
        .into(),
        ExecEvent::Display {
            data,
            metadata,
            display_id,
            ..
        } => DisplayData {
            data: media(data),
            metadata: metadata.clone(),
            transient: display_id.clone().map(|display_id| Transient {
                display_id: Some(display_id),
            }),
        }
        .into(),
        ExecEvent::Result {
            execution_count,
            data,
        } => ExecuteResult {
            execution_count: count(*execution_count),
            data: media(data),
            metadata: serde_json::Map::new(),
            transient: None,
        }
        .into(),
        ExecEvent::Error(error) => ErrorOutput {
            ename: error.ename.clone(),
            evalue: error.evalue.clone(),
            traceback: traceback_lines(&error.traceback),
        }
        .into(),
        ExecEvent::ClearOutput { wait } => ClearOutput { wait: *wait }.into(),
        ExecEvent::Started { .. } | ExecEvent::InputRequest { .. } => return None,
    })
}

/// `execute_input`: the code about to run, with its execution count.
pub fn execute_input(code: &str, execution_count: u64) -> ExecuteInput {
    ExecuteInput {
        code: code.to_owned(),
        execution_count: count(execution_count),
    }
}

/// `input_request` on the stdin channel.
pub fn input_request(prompt: &str, password: bool) -> InputRequest {
    InputRequest {
        prompt: prompt.to_owned(),
        password,
    }
}

/// `execute_reply` for a finished execution, numbered `execution_count` (the front-end's
/// count, which starts again at a restart): `ok`, or `error` with the error's name, value
/// and traceback (an interrupt, a timeout and a killed worker are errors too, as in
/// ipykernel).
pub fn execute_reply(
    record: &ExecutionRecord,
    execution_count: u64,
    user_expressions: HashMap<String, ExpressionResult>,
) -> ExecuteReply {
    let error = match (record.status, &record.error) {
        (ExecutionStatus::Ok, _) => None,
        (_, Some(error)) => Some(reply_error(error)),
        (status, None) => Some(ReplyError {
            ename: "Error".into(),
            evalue: status.as_str().into(),
            traceback: Vec::new(),
        }),
    };
    ExecuteReply {
        status: if error.is_some() {
            ReplyStatus::Error
        } else {
            ReplyStatus::Ok
        },
        execution_count: count(execution_count),
        payload: Vec::new(),
        user_expressions: Some(user_expressions),
        error: error.map(Box::new),
    }
}

/// `execute_reply` for an execution that did not run: `aborted` (an earlier one failed with
/// `stop_on_error`), or `error` with `ename`/`evalue` when it was refused.
pub fn unrun_execute_reply(execution_count: u64, refusal: Option<(&str, &str)>) -> ExecuteReply {
    ExecuteReply {
        status: if refusal.is_some() {
            ReplyStatus::Error
        } else {
            ReplyStatus::Aborted
        },
        execution_count: count(execution_count),
        payload: Vec::new(),
        user_expressions: Some(HashMap::new()),
        error: refusal.map(|(ename, evalue)| {
            Box::new(ReplyError {
                ename: ename.to_owned(),
                evalue: evalue.to_owned(),
                traceback: Vec::new(),
            })
        }),
    }
}

/// The IOPub `error` for an execution refused before it ran.
pub fn refusal_output(ename: &str, evalue: &str) -> ErrorOutput {
    ErrorOutput {
        ename: ename.to_owned(),
        evalue: evalue.to_owned(),
        traceback: vec![format!("{ename}: {evalue}")],
    }
}

fn reply_error(error: &ErrorInfo) -> ReplyError {
    ReplyError {
        ename: error.ename.clone(),
        evalue: error.evalue.clone(),
        traceback: traceback_lines(&error.traceback),
    }
}

/// A traceback as Jupyter front-ends join it (with newlines between the entries): corral's
/// entries end with their own newline, which would double every line break.
fn traceback_lines(traceback: &[String]) -> Vec<String> {
    traceback
        .iter()
        .map(|entry| entry.strip_suffix('\n').unwrap_or(entry).to_owned())
        .collect()
}

/// One of Jupyter's `user_expressions` results.
pub fn user_expression(value: &ExpressionValue) -> ExpressionResult {
    match value {
        ExpressionValue::Ok { data, metadata } => ExpressionResult::Ok {
            data: media(data),
            metadata: metadata.clone(),
        },
        ExpressionValue::Error {
            ename,
            evalue,
            traceback,
        } => ExpressionResult::Error {
            ename: ename.clone(),
            evalue: evalue.clone(),
            traceback: traceback.clone(),
        },
    }
}

/// `kernel_info_reply` of a kernel running `language` (`python`, `javascript`, `bash`) at
/// `language_version`.
pub fn kernel_info(language: &str, language_version: &str) -> KernelInfoReply {
    let (name, mimetype, extension, lexer, codemirror, exporter) = match language {
        "javascript" => (
            "javascript",
            "application/javascript",
            ".js",
            "javascript",
            CodeMirrorMode::Simple("javascript".to_owned()),
            "script",
        ),
        "bash" => (
            "bash",
            "text/x-sh",
            ".sh",
            "bash",
            CodeMirrorMode::Simple("shell".to_owned()),
            "script",
        ),
        _ => (
            "python",
            "text/x-python",
            ".py",
            "ipython3",
            CodeMirrorMode::CustomMode {
                name: "ipython".to_owned(),
                version: 3,
            },
            "python",
        ),
    };
    let shown = match name {
        "javascript" => format!("JavaScript (Node.js {language_version})"),
        "bash" => format!("Bash {language_version}"),
        _ => format!("Python {language_version}"),
    };
    KernelInfoReply {
        status: ReplyStatus::Ok,
        protocol_version: PROTOCOL_VERSION.to_owned(),
        implementation: "corral".to_owned(),
        implementation_version: env!("CARGO_PKG_VERSION").to_owned(),
        language_info: LanguageInfo {
            name: name.to_owned(),
            version: language_version.to_owned(),
            mimetype: Some(mimetype.to_owned()),
            file_extension: Some(extension.to_owned()),
            pygments_lexer: Some(lexer.to_owned()),
            codemirror_mode: Some(codemirror),
            nbconvert_exporter: Some(exporter.to_owned()),
        },
        banner: format!("{shown} in a corral session (sandboxed, state kept between cells)"),
        help_links: Vec::new(),
        debugger: false,
        error: None,
    }
}

/// The reply content for the answer to a question about code, or `None` when `reply`
/// answers another kind of question.
pub fn query_reply(reply: &CodeQueryReply) -> Option<JupyterMessageContent> {
    Some(match reply {
        CodeQueryReply::Complete {
            matches,
            cursor_start,
            cursor_end,
        } => CompleteReply {
            matches: matches.clone(),
            cursor_start: usize::try_from(*cursor_start).unwrap_or(0),
            cursor_end: usize::try_from(*cursor_end).unwrap_or(0),
            metadata: serde_json::Map::new(),
            status: ReplyStatus::Ok,
            error: None,
        }
        .into(),
        CodeQueryReply::Inspect { found, data } => InspectReply {
            found: *found,
            data: media(data),
            metadata: serde_json::Map::new(),
            status: ReplyStatus::Ok,
            error: None,
        }
        .into(),
        CodeQueryReply::IsComplete { status, indent } => IsCompleteReply {
            status: match status {
                corral_core::Completeness::Complete => IsCompleteReplyStatus::Complete,
                corral_core::Completeness::Incomplete => IsCompleteReplyStatus::Incomplete,
                corral_core::Completeness::Invalid => IsCompleteReplyStatus::Invalid,
                corral_core::Completeness::Unknown => IsCompleteReplyStatus::Unknown,
            },
            indent: indent.clone(),
        }
        .into(),
        CodeQueryReply::Evaluate { .. } | CodeQueryReply::Barrier => return None,
    })
}

/// How many executions a history request wants at most (`None`: all there are), and
/// whether it wants their outputs.
pub fn history_wants(request: &HistoryRequest) -> (Option<usize>, bool) {
    match request {
        HistoryRequest::Tail { n, output, .. } => (Some(usize::try_from(*n).unwrap_or(0)), *output),
        HistoryRequest::Range { output, .. } => (None, *output),
        HistoryRequest::Search { n, output, .. } => {
            (usize::try_from(*n).ok().filter(|n| *n > 0), *output)
        }
    }
}

/// `history_reply` from a session's executions (oldest first). Every execution is in
/// session 0, the current one, as IPython numbers the running session.
pub fn history_reply(request: &HistoryRequest, executions: &[ExecutionRecord]) -> HistoryReply {
    let (limit, with_output) = history_wants(request);
    let chosen: Vec<&ExecutionRecord> = match request {
        HistoryRequest::Tail { .. } => executions.iter().collect(),
        HistoryRequest::Range { start, stop, .. } => executions
            .iter()
            .filter(|record| {
                let line = i64::try_from(record.execution_count).unwrap_or(i64::MAX);
                line >= i64::from(*start) && (*stop <= 0 || line < i64::from(*stop))
            })
            .collect(),
        HistoryRequest::Search {
            pattern, unique, ..
        } => {
            let mut seen = std::collections::HashSet::new();
            executions
                .iter()
                .filter(|record| glob_matches(pattern, &record.code))
                .filter(|record| !*unique || seen.insert(record.code.clone()))
                .collect()
        }
    };
    let skip = limit.map_or(0, |limit| chosen.len().saturating_sub(limit));
    let history = chosen
        .into_iter()
        .skip(skip)
        .map(|record| {
            let line = usize::try_from(record.execution_count).unwrap_or(usize::MAX);
            if with_output {
                let output = record
                    .result
                    .as_ref()
                    .and_then(|result| result.get("text/plain"))
                    .and_then(|text| text.as_str())
                    .unwrap_or_default()
                    .to_owned();
                HistoryEntry::InputOutput(0, line, (record.code.clone(), output))
            } else {
                HistoryEntry::Input(0, line, record.code.clone())
            }
        })
        .collect();
    HistoryReply {
        history,
        status: ReplyStatus::Ok,
        error: None,
    }
}

/// IPython's history search patterns: `*` any run of characters, `?` any one.
fn glob_matches(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    // Classic two-pointer wildcard match with backtracking to the last `*`.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

/// `comm_info_reply`: no comms are open.
pub fn comm_info_reply() -> CommInfoReply {
    CommInfoReply {
        status: ReplyStatus::Ok,
        comms: HashMap::new(),
        error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use corral_core::SessionId;

    fn bundle(pairs: &[(&str, serde_json::Value)]) -> MimeBundle {
        pairs
            .iter()
            .map(|(mime, value)| ((*mime).to_owned(), value.clone()))
            .collect()
    }

    fn record(count: u64, code: &str, status: ExecutionStatus) -> ExecutionRecord {
        let now = Utc::now();
        ExecutionRecord {
            session_id: SessionId::new(),
            execution_count: count,
            code: code.into(),
            status,
            result: Some(bundle(&[(
                "text/plain",
                serde_json::json!(format!("{count}")),
            )])),
            stdout: String::new(),
            stderr: String::new(),
            outputs: Vec::new(),
            error: (status != ExecutionStatus::Ok).then(|| ErrorInfo {
                ename: "KeyboardInterrupt".into(),
                evalue: String::new(),
                traceback: vec!["tb".into()],
            }),
            duration_ms: 1,
            truncated: false,
            started_at: now,
            finished_at: now,
        }
    }

    fn json(content: impl Into<JupyterMessageContent>) -> serde_json::Value {
        let content: JupyterMessageContent = content.into();
        serde_json::to_value(&content).expect("serialises")
    }

    #[test]
    fn outputs_keep_their_bundles() {
        let data = bundle(&[
            ("text/plain", serde_json::json!("<Figure>")),
            ("image/png", serde_json::json!("iVBOR")),
            ("application/x-custom", serde_json::json!({"a": 1})),
        ]);
        let display = output(&ExecEvent::Display {
            data: data.clone(),
            metadata: serde_json::Map::new(),
            display_id: Some("d".into()),
            update: false,
        })
        .expect("an output");
        assert_eq!(display.message_type(), "display_data");
        let value = serde_json::to_value(&display).expect("serialises");
        assert_eq!(value["data"]["image/png"], "iVBOR");
        assert_eq!(
            value["data"]["application/x-custom"],
            serde_json::json!({"a": 1})
        );
        assert_eq!(value["transient"]["display_id"], "d");
        let update = output(&ExecEvent::Display {
            data,
            metadata: serde_json::Map::new(),
            display_id: Some("d".into()),
            update: true,
        })
        .expect("an output");
        assert_eq!(update.message_type(), "update_display_data");
        let stream = output(&ExecEvent::Stream {
            name: StreamName::Stderr,
            text: "oops\n".into(),
        })
        .expect("an output");
        assert_eq!(
            serde_json::to_value(&stream).expect("serialises"),
            serde_json::json!({"name": "stderr", "text": "oops\n"})
        );
        assert!(output(&ExecEvent::Started {
            execution_count: 1,
            since_restart: 1
        })
        .is_none());
        let clear = output(&ExecEvent::ClearOutput { wait: true }).expect("an output");
        assert_eq!(
            serde_json::to_value(&clear).expect("serialises"),
            serde_json::json!({"wait": true})
        );
    }

    #[test]
    fn text_in_a_json_type_falls_back_to_the_bundle_as_it_is() {
        let data = bundle(&[("text/plain", serde_json::json!(3))]);
        let value = serde_json::to_value(media(&data)).expect("serialises");
        assert_eq!(value["text/plain"], 3);
    }

    #[test]
    fn execute_replies_say_ok_or_the_error() {
        let ok = json(execute_reply(
            &record(3, "1", ExecutionStatus::Ok),
            3,
            HashMap::new(),
        ));
        assert_eq!(ok["status"], "ok");
        assert_eq!(ok["execution_count"], 3);
        assert_eq!(ok["user_expressions"], serde_json::json!({}));
        let mut interrupted = record(4, "1", ExecutionStatus::Interrupted);
        if let Some(error) = &mut interrupted.error {
            error.traceback = vec!["Traceback:\n".into(), "  line\n    code\n".into()];
        }
        let failed = json(execute_reply(&interrupted, 4, HashMap::new()));
        assert_eq!(failed["status"], "error");
        assert_eq!(failed["ename"], "KeyboardInterrupt");
        assert_eq!(
            failed["traceback"],
            serde_json::json!(["Traceback:", "  line\n    code"])
        );
        let aborted = json(unrun_execute_reply(4, None));
        assert_eq!(aborted["status"], "aborted");
        let refused = json(unrun_execute_reply(4, Some(("QueueFull", "too many"))));
        assert_eq!(
            (refused["status"].as_str(), refused["ename"].as_str()),
            (Some("error"), Some("QueueFull"))
        );
    }

    #[test]
    fn kernel_info_names_corral_and_python() {
        let info = json(kernel_info("python", "3.11.7"));
        assert_eq!(info["protocol_version"], "5.3");
        assert_eq!(info["implementation"], "corral");
        assert_eq!(info["language_info"]["name"], "python");
        assert_eq!(info["language_info"]["version"], "3.11.7");
        assert_eq!(
            info["language_info"]["codemirror_mode"],
            serde_json::json!({"name": "ipython", "version": 3})
        );
        assert_eq!(info["status"], "ok");
    }

    #[test]
    fn history_tail_range_and_search() {
        let executions: Vec<ExecutionRecord> = ["a = 1", "print(a)", "a = 2", "a"]
            .iter()
            .enumerate()
            .map(|(index, code)| record(index as u64 + 1, code, ExecutionStatus::Ok))
            .collect();
        let tail = json(history_reply(
            &HistoryRequest::Tail {
                n: 2,
                output: false,
                raw: true,
            },
            &executions,
        ));
        assert_eq!(
            tail["history"],
            serde_json::json!([[0, 3, "a = 2"], [0, 4, "a"]])
        );
        let range = json(history_reply(
            &HistoryRequest::Range {
                session: Some(0),
                start: 2,
                stop: 4,
                output: true,
                raw: true,
            },
            &executions,
        ));
        assert_eq!(
            range["history"],
            serde_json::json!([[0, 2, ["print(a)", "2"]], [0, 3, ["a = 2", "3"]]])
        );
        let search = json(history_reply(
            &HistoryRequest::Search {
                pattern: "a = *".into(),
                unique: true,
                output: false,
                raw: true,
                n: 10,
            },
            &executions,
        ));
        assert_eq!(
            search["history"],
            serde_json::json!([[0, 1, "a = 1"], [0, 3, "a = 2"]])
        );
    }

    #[test]
    fn glob_patterns() {
        assert!(glob_matches("*", ""));
        assert!(glob_matches("a*c", "abbbc"));
        assert!(glob_matches("a?c", "abc"));
        assert!(!glob_matches("a?c", "ac"));
        assert!(!glob_matches("abc", "abcd"));
    }
}
