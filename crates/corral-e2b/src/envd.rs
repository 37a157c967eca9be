//! The sandbox daemon's messages: the `filesystem.Filesystem` and `process.Process`
//! services in their protobuf-JSON mapping (lowerCamelCase names, enums by name, `int64` as
//! strings, `bytes` as base64), the `/files` reply, how an E2B path names a file of a
//! corral workspace, and a `multipart/form-data` reader for uploads.
//!
//! It does not carry operations out (`in_sandbox` has the Python for that) or speak HTTP.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The SDK's home directory, which corral's sessions have at their workspace.
pub const E2B_HOME: &str = "/home/user";
/// The workspace inside a corral sandbox.
pub const WORKSPACE: &str = "/workspace";

// ---- filesystem ----

/// `StatRequest`, `MakeDirRequest`, `RemoveRequest`.
#[derive(Clone, Debug, Deserialize)]
pub struct PathRequest {
    pub path: String,
}

/// `ListDirRequest`.
#[derive(Clone, Debug, Deserialize)]
pub struct ListDirRequest {
    pub path: String,
    /// 0 (unset) means 1.
    #[serde(default)]
    pub depth: u32,
}

/// `MoveRequest`.
#[derive(Clone, Debug, Deserialize)]
pub struct MoveRequest {
    pub source: String,
    pub destination: String,
}

/// An entry as the Python inside the session reports it (`in_sandbox`).
#[derive(Clone, Debug, Deserialize)]
pub struct SandboxEntry {
    pub name: String,
    /// `file`, `directory`, `symlink` or `other`.
    pub kind: String,
    pub path: String,
    pub size: u64,
    pub mode: u32,
    pub permissions: String,
    pub owner: String,
    pub group: String,
    /// Seconds since the Unix epoch.
    pub modified: f64,
    pub symlink_target: Option<String>,
}

/// `EntryInfo`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub file_type: &'static str,
    pub path: String,
    /// `int64`, a string in JSON.
    pub size: String,
    pub mode: u32,
    pub permissions: String,
    pub owner: String,
    pub group: String,
    pub modified_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symlink_target: Option<String>,
}

impl From<SandboxEntry> for EntryInfo {
    fn from(entry: SandboxEntry) -> Self {
        let file_type = match entry.kind.as_str() {
            "file" => "FILE_TYPE_FILE",
            "directory" => "FILE_TYPE_DIRECTORY",
            "symlink" => "FILE_TYPE_SYMLINK",
            _ => "FILE_TYPE_UNSPECIFIED",
        };
        let seconds = entry.modified.floor();
        let nanos = ((entry.modified - seconds) * 1e9) as u32;
        let modified_time = chrono::DateTime::from_timestamp(seconds as i64, nanos)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        EntryInfo {
            name: entry.name,
            file_type,
            path: entry.path,
            size: entry.size.to_string(),
            mode: entry.mode,
            permissions: entry.permissions,
            owner: entry.owner,
            group: entry.group,
            modified_time,
            symlink_target: entry.symlink_target,
        }
    }
}

/// `StatResponse`, `MakeDirResponse`, `MoveResponse`.
#[derive(Clone, Debug, Serialize)]
pub struct EntryResponse {
    pub entry: EntryInfo,
}

/// `ListDirResponse`.
#[derive(Clone, Debug, Serialize)]
pub struct ListDirResponse {
    pub entries: Vec<EntryInfo>,
}

// ---- process ----

/// `ProcessConfig`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessConfig {
    pub cmd: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub envs: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

/// `StartRequest`.
#[derive(Clone, Debug, Deserialize)]
pub struct StartRequest {
    pub process: ProcessConfig,
    pub pty: Option<Value>,
    pub tag: Option<String>,
    pub stdin: Option<bool>,
}

/// `ProcessSelector`: a pid or a tag.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ProcessSelector {
    pub pid: Option<u32>,
    pub tag: Option<String>,
}

/// `ConnectRequest`, `CloseStdinRequest`, `SendInputRequest` (their `process`).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SelectorRequest {
    #[serde(default)]
    pub process: ProcessSelector,
}

/// `SendInputRequest`: stdin bytes (base64) for a process.
#[derive(Clone, Debug, Deserialize)]
pub struct InputRequest {
    #[serde(default)]
    pub process: ProcessSelector,
    #[serde(default)]
    pub input: ProcessInput,
}

/// `ProcessInput`: `stdin` or `pty` bytes, base64 in JSON.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ProcessInput {
    pub stdin: Option<String>,
    pub pty: Option<String>,
}

impl ProcessInput {
    /// The stdin bytes, still base64 but checked; `None` when the input is not for stdin
    /// or not base64.
    pub fn checked_stdin(&self) -> Option<&str> {
        let data = self.stdin.as_deref()?;
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .ok()
            .map(|_| data)
    }
}

/// `SendSignalRequest`.
#[derive(Clone, Debug, Deserialize)]
pub struct SignalRequest {
    #[serde(default)]
    pub process: ProcessSelector,
    #[serde(default)]
    pub signal: Value,
}

impl SignalRequest {
    /// The signal number, from its enum name or number (SIGTERM and SIGKILL only).
    pub fn signal_number(&self) -> Option<i32> {
        match &self.signal {
            Value::String(name) if name == "SIGNAL_SIGKILL" => Some(9),
            Value::String(name) if name == "SIGNAL_SIGTERM" => Some(15),
            Value::Number(number) => match number.as_i64() {
                Some(9) => Some(9),
                Some(15) => Some(15),
                _ => None,
            },
            _ => None,
        }
    }
}

/// `ProcessInfo`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub config: ProcessConfig,
    pub pid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// `ListResponse`.
#[derive(Clone, Debug, Serialize)]
pub struct ListResponse {
    pub processes: Vec<ProcessInfo>,
}

/// Which stream a chunk of a process's output came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Stdout,
    Stderr,
}

/// How a process ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    /// The exit status, or -1 when a signal ended it.
    pub exit_code: i32,
    /// `exit status N` or `signal: NAME`, as envd (Go's `ProcessState`) writes it.
    pub status: String,
}

impl Exit {
    /// From Python's `Popen.returncode` (negative: the signal that ended it).
    pub fn from_returncode(code: i32) -> Exit {
        if code < 0 {
            let name = match -code {
                9 => "killed".to_owned(),
                15 => "terminated".to_owned(),
                2 => "interrupt".to_owned(),
                other => format!("signal {other}"),
            };
            Exit {
                exit_code: -1,
                status: format!("signal: {name}"),
            }
        } else {
            Exit {
                exit_code: code,
                status: format!("exit status {code}"),
            }
        }
    }
}

/// One `ProcessEvent` as a `StartResponse`/`ConnectResponse` (`{"event": {...}}`).
pub fn start_event(pid: u32) -> Value {
    serde_json::json!({"event": {"start": {"pid": pid}}})
}

/// A data event: the chunk's bytes in base64.
pub fn data_event(output: Output, bytes: &[u8]) -> Value {
    let field = match output {
        Output::Stdout => "stdout",
        Output::Stderr => "stderr",
    };
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    serde_json::json!({"event": {"data": {field: encoded}}})
}

/// The end event.
pub fn end_event(exit: &Exit) -> Value {
    serde_json::json!({"event": {"end": {
        "exitCode": exit.exit_code,
        "exited": exit.exit_code >= 0,
        "status": exit.status,
    }}})
}

/// A keepalive event.
pub fn keepalive_event() -> Value {
    serde_json::json!({"event": {"keepalive": {}}})
}

// ---- /files ----

/// One written file in the `/files` upload reply (`EntryInfo` of the REST API).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WriteInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub file_type: &'static str,
    pub path: String,
}

impl WriteInfo {
    /// The reply entry for a file written at `relative` inside the workspace.
    pub fn file(relative: &str) -> WriteInfo {
        WriteInfo {
            name: relative.rsplit('/').next().unwrap_or(relative).to_owned(),
            file_type: "file",
            path: format!("{WORKSPACE}/{relative}"),
        }
    }
}

/// Why an E2B path cannot name a file of the workspace.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path {0:?} is outside the sandbox's workspace: file transfers reach /workspace (also called /home/user) and paths relative to it")]
    OutsideWorkspace(String),
    #[error("a path is required")]
    Empty,
}

/// The workspace-relative path an E2B path names: relative paths are relative to the
/// home directory, which is the workspace; `/home/user/...` and `/workspace/...` are
/// inside it; `""` is the workspace itself.
pub fn workspace_path(path: &str) -> Result<String, PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    let relative = if let Some(rest) = path.strip_prefix('/') {
        let rest = rest.trim_end_matches('/');
        let inside = [E2B_HOME, WORKSPACE].iter().find_map(|root| {
            let root = &root[1..];
            if rest == root {
                Some("")
            } else {
                rest.strip_prefix(root)
                    .and_then(|tail| tail.strip_prefix('/'))
            }
        });
        inside.ok_or_else(|| PathError::OutsideWorkspace(path.to_owned()))?
    } else {
        path.trim_end_matches('/')
    };
    let normal: Vec<&str> = relative
        .split('/')
        .filter(|segment| !segment.is_empty() && *segment != ".")
        .collect();
    Ok(normal.join("/"))
}

/// One part of a `multipart/form-data` body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub name: Option<String>,
    pub filename: Option<String>,
    pub data: Vec<u8>,
}

/// Why a multipart body could not be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum MultipartError {
    #[error("the content type is not multipart/form-data with a boundary")]
    NoBoundary,
    #[error("the multipart body is malformed: {0}")]
    Malformed(&'static str),
}

/// The boundary of a `multipart/form-data` content type.
pub fn multipart_boundary(content_type: &str) -> Option<String> {
    let mut fields = content_type.split(';');
    let essence = fields.next()?.trim();
    if !essence.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    fields.find_map(|field| {
        let (key, value) = field.trim().split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"').to_owned())
            .filter(|boundary| !boundary.is_empty())
    })
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|window| window == needle)
        .map(|position| position + from)
}

/// The parts of a whole `multipart/form-data` body.
pub fn parse_multipart(content_type: &str, body: &[u8]) -> Result<Vec<Part>, MultipartError> {
    let boundary = multipart_boundary(content_type).ok_or(MultipartError::NoBoundary)?;
    let delimiter = format!("--{boundary}").into_bytes();
    let mut position =
        find(body, &delimiter, 0).ok_or(MultipartError::Malformed("no first boundary"))?;
    let mut parts = Vec::new();
    loop {
        position += delimiter.len();
        let rest = body.get(position..).unwrap_or_default();
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        if !rest.starts_with(b"\r\n") {
            return Err(MultipartError::Malformed(
                "a boundary is not followed by CRLF",
            ));
        }
        position += 2;
        let headers_end = find(body, b"\r\n\r\n", position)
            .ok_or(MultipartError::Malformed("a part has no end of headers"))?;
        let headers = String::from_utf8_lossy(&body[position..headers_end]).into_owned();
        let data_start = headers_end + 4;
        let mut closing = b"\r\n".to_vec();
        closing.extend_from_slice(&delimiter);
        let data_end = find(body, &closing, data_start)
            .ok_or(MultipartError::Malformed("a part has no closing boundary"))?;
        let (name, filename) = disposition(&headers);
        parts.push(Part {
            name,
            filename,
            data: body[data_start..data_end].to_vec(),
        });
        position = data_end + 2;
    }
}

/// `name` and `filename` of a part's `Content-Disposition`.
fn disposition(headers: &str) -> (Option<String>, Option<String>) {
    let mut name = None;
    let mut filename = None;
    for line in headers.split("\r\n") {
        let Some((header, value)) = line.split_once(':') else {
            continue;
        };
        if !header.trim().eq_ignore_ascii_case("content-disposition") {
            continue;
        }
        for field in value.split(';').skip(1) {
            if let Some((key, value)) = field.trim().split_once('=') {
                let value = value.trim().trim_matches('"').to_owned();
                match key.trim().to_ascii_lowercase().as_str() {
                    "name" => name = Some(value),
                    "filename" => filename = Some(value),
                    _ => {}
                }
            }
        }
    }
    (name, filename)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_onto_the_workspace() {
        assert_eq!(workspace_path("a/b.txt"), Ok("a/b.txt".into()));
        assert_eq!(workspace_path("/home/user/a.txt"), Ok("a.txt".into()));
        assert_eq!(workspace_path("/workspace/x/./y/"), Ok("x/y".into()));
        assert_eq!(workspace_path("/home/user"), Ok(String::new()));
        assert!(matches!(
            workspace_path("/etc/passwd"),
            Err(PathError::OutsideWorkspace(_))
        ));
        assert!(matches!(
            workspace_path("/home/username/x"),
            Err(PathError::OutsideWorkspace(_))
        ));
        assert_eq!(workspace_path(""), Err(PathError::Empty));
    }

    #[test]
    fn multipart_bodies_are_read() {
        let body = b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"/home/user/a.txt\"\r\nContent-Type: application/octet-stream\r\n\r\nhello\r\n--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b\"\r\n\r\n\r\n--x\r\n--xyz--\r\n";
        let parts = parse_multipart("multipart/form-data; boundary=xyz", body).expect("parts");
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].filename.as_deref(), Some("/home/user/a.txt"));
        assert_eq!(parts[0].data, b"hello");
        assert_eq!(parts[1].data, b"\r\n--x");
        assert_eq!(
            parse_multipart("text/plain", body),
            Err(MultipartError::NoBoundary)
        );
        assert!(parse_multipart("multipart/form-data; boundary=xyz", b"--xyz\r\nbad").is_err());
    }

    #[test]
    fn process_events_and_signals() {
        assert_eq!(
            data_event(Output::Stdout, b"hi"),
            serde_json::json!({"event": {"data": {"stdout": "aGk="}}})
        );
        assert_eq!(
            end_event(&Exit::from_returncode(-9)),
            serde_json::json!({"event": {"end": {"exitCode": -1, "exited": false, "status": "signal: killed"}}})
        );
        assert_eq!(Exit::from_returncode(2).status, "exit status 2");
        let request: SignalRequest =
            serde_json::from_str(r#"{"process": {"pid": 5}, "signal": "SIGNAL_SIGKILL"}"#)
                .expect("parse");
        assert_eq!(request.signal_number(), Some(9));
        assert_eq!(request.process.pid, Some(5));
        let input: InputRequest =
            serde_json::from_str(r#"{"process": {"pid": 3}, "input": {"stdin": "aGk="}}"#)
                .expect("parse");
        assert_eq!(input.input.checked_stdin(), Some("aGk="));
        let bad: ProcessInput = serde_json::from_str(r#"{"stdin": "***"}"#).expect("parse");
        assert_eq!(bad.checked_stdin(), None);
        let start: StartRequest = serde_json::from_str(
            r#"{"process": {"cmd": "/bin/bash", "args": ["-l", "-c", "ls"], "envs": {}}, "stdin": false}"#,
        )
        .expect("parse");
        assert_eq!(start.process.args.len(), 3);
    }

    #[test]
    fn entries_are_mapped() {
        let entry: SandboxEntry = serde_json::from_value(serde_json::json!({
            "name": "a", "kind": "directory", "path": "/workspace/a", "size": 4096,
            "mode": 493, "permissions": "drwxr-xr-x", "owner": "root", "group": "root",
            "modified": 1.5, "symlink_target": null
        }))
        .expect("entry");
        let info = EntryInfo::from(entry);
        assert_eq!(info.file_type, "FILE_TYPE_DIRECTORY");
        assert_eq!(info.size, "4096");
        assert_eq!(info.modified_time, "1970-01-01T00:00:01.500Z");
        assert_eq!(
            WriteInfo::file("d/x.txt"),
            WriteInfo {
                name: "x.txt".into(),
                file_type: "file",
                path: "/workspace/d/x.txt".into()
            }
        );
    }
}
