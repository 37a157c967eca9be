//! envd inside a sandbox (port 49983): the health route, `/files` (download; upload as
//! `multipart/form-data` or a raw body) through the engine's workspace transfers, and the
//! Connect services `filesystem.Filesystem` (Stat, ListDir, MakeDir, Move, Remove) and
//! `process.Process` (Start, Connect, List, SendSignal) in Connect's JSON form.
//!
//! Filesystem calls and commands run as executions of the sandbox's session
//! (`corral_e2b::in_sandbox`): a command is started as a background process, then `poll`
//! executions stream its output until it ends, for as long as the client listens — so a
//! command waits its turn behind a running cell, and a cell behind at most one poll (a
//! quarter of a second); between the polls of a quiet command the session is free.
//! A command started with `stdin` gets a pipe that `SendInput` writes and `CloseStdin` closes.
//! Watching directories, streamed stdin and PTYs answer Connect's `unimplemented`.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use corral_core::{ExecEvent, ExecRequest, StdinMode, StreamName};
use corral_e2b::connect::{self, Code, ConnectError, Encoding};
use corral_e2b::envd::{
    self, data_event, end_event, keepalive_event, start_event, workspace_path, EntryInfo,
    EntryResponse, Exit, InputRequest, ListDirRequest, ListDirResponse, ListResponse, MoveRequest,
    Output, PathRequest, ProcessInfo, SandboxEntry, SelectorRequest, SignalRequest, StartRequest,
    WriteInfo,
};
use corral_e2b::in_sandbox::{self, Operation};
use corral_engine::EngineError;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{
    engine_connect_error, run_operation, sandbox_caller, Failure, OperationError, SandboxCaller,
    Service,
};
use crate::state::ApiState;

/// How long one `poll` execution waits for a command to end before handing the session
/// back to other work (a cell queued behind it waits at most this long).
const POLL_WAIT_SECONDS: f64 = 0.25;
/// The pause between polls of a quiet command, doubling from the first to the last while it
/// prints nothing (the session is free for other work meanwhile).
const QUIET_PAUSES: (Duration, Duration) = (Duration::from_millis(25), Duration::from_millis(500));
/// Silence after which a command's stream gets a keepalive event.
const KEEPALIVE_AFTER: Duration = Duration::from_secs(10);
/// Envelopes buffered for a slow client before a command's output waits for it.
const STREAM_BUFFER: usize = 64;
/// The largest `/files` upload: bodies are read whole (a multipart body is parsed in memory),
/// so this is larger than other routes' limit but bounded; the workspace's own size limit
/// still applies.
const UPLOAD_LIMIT_BYTES: usize = 64 * 1024 * 1024;

pub fn router() -> OpenApiRouter<ApiState> {
    let files = OpenApiRouter::new()
        .routes(routes!(download, upload))
        .layer(DefaultBodyLimit::max(UPLOAD_LIMIT_BYTES));
    OpenApiRouter::new()
        .routes(routes!(health))
        .merge(files)
        .routes(routes!(filesystem))
        .routes(routes!(process))
}

/// Answers 204 while the sandbox runs (502 "was not found" once it has ended).
#[utoipa::path(get, path = "/health", tag = "e2b_sandbox",
    responses(
        (status = 204, description = "The sandbox runs"),
        (status = 400, description = "Missing E2b-Sandbox-Id", body = serde_json::Value),
        (status = 401, description = "No access token", body = serde_json::Value),
        (status = 502, description = "The sandbox was not found", body = serde_json::Value),
    ))]
async fn health(State(state): State<ApiState>, headers: HeaderMap) -> Result<StatusCode, Failure> {
    sandbox_caller(&state, &headers, Service::Envd).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Query of `/files`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct FileQuery {
    /// The file: relative to the home directory (the workspace), or under `/home/user` or
    /// `/workspace`.
    path: Option<String>,
    /// Ignored: every operation runs as the session's user.
    #[allow(dead_code)]
    username: Option<String>,
}

fn file_query(query: Result<Query<FileQuery>, QueryRejection>) -> Result<FileQuery, Failure> {
    query
        .map(|Query(query)| query)
        .map_err(|rejection| Failure::bad_request(rejection.body_text()))
}

fn relative(path: &str) -> Result<String, Failure> {
    workspace_path(path).map_err(|error| Failure::bad_request(error.to_string()))
}

/// Downloads a file of the workspace.
#[utoipa::path(get, path = "/files", tag = "e2b_sandbox", params(FileQuery),
    responses(
        (status = 200, description = "The file's bytes", content_type = "application/octet-stream"),
        (status = 400, description = "Path outside the workspace, a directory, or no E2b-Sandbox-Id", body = serde_json::Value),
        (status = 401, description = "No access token", body = serde_json::Value),
        (status = 404, description = "No such file", body = serde_json::Value),
        (status = 502, description = "The sandbox was not found", body = serde_json::Value),
    ))]
async fn download(
    State(state): State<ApiState>,
    headers: HeaderMap,
    query: Result<Query<FileQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    let caller = sandbox_caller(&state, &headers, Service::Envd).await?;
    let query = file_query(query)?;
    let path = relative(query.path.as_deref().unwrap_or(""))?;
    if path.is_empty() {
        return Err(Failure::bad_request(
            "path names the home directory, not a file",
        ));
    }
    let files = state
        .engine
        .workspace_files(&caller.principal, caller.id())
        .await?;
    let download = files.get(&path).await.map_err(EngineError::from)?;
    let size = download.size;
    let mut response = Body::from_stream(download.into_stream()).into_response();
    let response_headers = response.headers_mut();
    response_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    response_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    Ok(response)
}

/// Uploads files: a `multipart/form-data` body (each part's file name is its path unless
/// `path` names the one file) or a raw body written to `path`.
#[utoipa::path(post, path = "/files", tag = "e2b_sandbox", params(FileQuery),
    request_body(content = Vec<u8>, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The written files: [{name, type, path}]", body = serde_json::Value),
        (status = 400, description = "Bad body or path, or no E2b-Sandbox-Id", body = serde_json::Value),
        (status = 401, description = "No access token", body = serde_json::Value),
        (status = 413, description = "Larger than 64 MiB", body = serde_json::Value),
        (status = 507, description = "The workspace is full", body = serde_json::Value),
        (status = 502, description = "The sandbox was not found", body = serde_json::Value),
    ))]
async fn upload(
    State(state): State<ApiState>,
    headers: HeaderMap,
    query: Result<Query<FileQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Vec<WriteInfo>>, Failure> {
    let caller = sandbox_caller(&state, &headers, Service::Envd).await?;
    let body = body.map_err(|rejection| {
        Failure::new(
            rejection.status(),
            format!(
                "the upload could not be read (at most {UPLOAD_LIMIT_BYTES} bytes): {}",
                rejection.body_text()
            ),
        )
    })?;
    let query = file_query(query)?;
    if headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|encoding| encoding.as_bytes() != b"identity")
    {
        return Err(Failure::bad_request(
            "compressed uploads (Content-Encoding) are not supported: upload without gzip",
        ));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let uploads: Vec<(String, Bytes)> = if envd::multipart_boundary(content_type).is_some() {
        let parts = envd::parse_multipart(content_type, &body)
            .map_err(|error| Failure::bad_request(error.to_string()))?;
        let single = parts.len() == 1;
        parts
            .into_iter()
            .map(|part| {
                let target = match (&query.path, single) {
                    (Some(path), true) => path.clone(),
                    _ => part
                        .filename
                        .clone()
                        .or(part.name.clone())
                        .unwrap_or_default(),
                };
                Ok((relative(&target)?, Bytes::from(part.data)))
            })
            .collect::<Result<_, Failure>>()?
    } else {
        let path = query
            .path
            .as_deref()
            .ok_or_else(|| Failure::bad_request("path is required for a raw upload"))?;
        vec![(relative(path)?, body)]
    };
    if uploads.is_empty() {
        return Err(Failure::bad_request("the upload holds no file"));
    }
    let files = state
        .engine
        .workspace_files(&caller.principal, caller.id())
        .await?;
    let mut written = Vec::with_capacity(uploads.len());
    for (path, data) in uploads {
        if path.is_empty() {
            return Err(Failure::bad_request(
                "a file's path names the home directory",
            ));
        }
        let chunk = futures::stream::once(async move { Ok::<Bytes, std::io::Error>(data) });
        files.put(&path, chunk).await.map_err(EngineError::from)?;
        written.push(WriteInfo::file(&path));
    }
    Ok(Json(written))
}

// ---- Connect ----

fn unary(result: Result<serde_json::Value, ConnectError>) -> Response {
    match result {
        Ok(message) => Json(message).into_response(),
        Err(error) => connect_failure(error),
    }
}

fn connect_failure(error: ConnectError) -> Response {
    let status =
        StatusCode::from_u16(error.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(error)).into_response()
}

fn parse_message<T: DeserializeOwned>(encoding: Encoding, body: &[u8]) -> Result<T, ConnectError> {
    let message = match encoding {
        Encoding::UnaryJson => body,
        Encoding::StreamJson => connect::first_message(body)
            .map_err(|error| ConnectError::new(Code::InvalidArgument, error.to_string()))?,
        Encoding::Unsupported => return Err(ConnectError::new(
            Code::Unimplemented,
            "corral speaks Connect's JSON codec only (application/json, application/connect+json)",
        )),
    };
    let message: &[u8] = if message.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        message
    };
    serde_json::from_slice(message).map_err(|error| {
        ConnectError::new(Code::InvalidArgument, format!("invalid message: {error}"))
    })
}

fn refused_encoding(encoding: Encoding) -> Option<Response> {
    (encoding == Encoding::Unsupported).then(|| {
        let error = ConnectError::new(
            Code::Unimplemented,
            "corral speaks Connect's JSON codec only (application/json, application/connect+json)",
        );
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, Json(error)).into_response()
    })
}

fn encoding_of(headers: &HeaderMap) -> Encoding {
    Encoding::of(
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok()),
    )
}

fn unimplemented(what: &str) -> ConnectError {
    ConnectError::new(
        Code::Unimplemented,
        format!("{what} is not supported by corral"),
    )
}

async fn operation(
    state: &ApiState,
    caller: &SandboxCaller,
    operation: &Operation,
) -> Result<serde_json::Value, ConnectError> {
    run_operation(state, &caller.principal, caller.id(), operation)
        .await
        .map_err(ConnectError::from)
}

fn entry(value: serde_json::Value) -> Result<EntryInfo, ConnectError> {
    serde_json::from_value::<SandboxEntry>(value)
        .map(EntryInfo::from)
        .map_err(|_| OperationError::NoReply.into())
}

fn as_message(value: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_default()
}

/// The `filesystem.Filesystem` service (unary calls).
#[utoipa::path(post, path = "/filesystem.Filesystem/{method}", tag = "e2b_sandbox",
    params(("method" = String, Path, description = "Stat, ListDir, MakeDir, Move or Remove")),
    request_body(content = serde_json::Value, description = "The method's request message (Connect JSON)"),
    responses(
        (status = 200, description = "The method's response message", body = serde_json::Value),
        (status = 400, description = "Bad message or no E2b-Sandbox-Id", body = serde_json::Value),
        (status = 401, description = "No access token", body = serde_json::Value),
        (status = 404, description = "No such file or method", body = serde_json::Value),
        (status = 415, description = "Not Connect's JSON codec", body = serde_json::Value),
        (status = 503, description = "The sandbox was not found", body = serde_json::Value),
    ))]
async fn filesystem(
    State(state): State<ApiState>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let caller = match sandbox_caller(&state, &headers, Service::Envd).await {
        Ok(caller) => caller,
        Err(refusal) => return connect_failure(refusal.into()),
    };
    let encoding = encoding_of(&headers);
    if let Some(refused) = refused_encoding(encoding) {
        return refused;
    }
    let result = async {
        match method.as_str() {
            "Stat" => {
                let request: PathRequest = parse_message(encoding, &body)?;
                let reply =
                    operation(&state, &caller, &Operation::Stat { path: request.path }).await?;
                Ok(as_message(&EntryResponse {
                    entry: entry(reply)?,
                }))
            }
            "ListDir" => {
                let request: ListDirRequest = parse_message(encoding, &body)?;
                let reply = operation(
                    &state,
                    &caller,
                    &Operation::List {
                        path: request.path,
                        depth: request.depth.max(1),
                    },
                )
                .await?;
                let entries = match reply {
                    serde_json::Value::Array(items) => items
                        .into_iter()
                        .map(entry)
                        .collect::<Result<Vec<_>, _>>()?,
                    _ => return Err(OperationError::NoReply.into()),
                };
                Ok(as_message(&ListDirResponse { entries }))
            }
            "MakeDir" => {
                let request: PathRequest = parse_message(encoding, &body)?;
                let reply =
                    operation(&state, &caller, &Operation::Mkdir { path: request.path }).await?;
                Ok(as_message(&EntryResponse {
                    entry: entry(reply)?,
                }))
            }
            "Move" => {
                let request: MoveRequest = parse_message(encoding, &body)?;
                let reply = operation(
                    &state,
                    &caller,
                    &Operation::Move {
                        source: request.source,
                        destination: request.destination,
                    },
                )
                .await?;
                Ok(as_message(&EntryResponse {
                    entry: entry(reply)?,
                }))
            }
            "Remove" => {
                let request: PathRequest = parse_message(encoding, &body)?;
                operation(&state, &caller, &Operation::Remove { path: request.path }).await?;
                Ok(serde_json::json!({}))
            }
            "WatchDir" | "CreateWatcher" | "GetWatcherEvents" | "RemoveWatcher" => {
                Err(unimplemented("watching directories"))
            }
            other => Err(ConnectError::new(
                Code::NotFound,
                format!("no method filesystem.Filesystem/{other}"),
            )),
        }
    };
    unary(result.await)
}

/// The pid a selector names: its pid, or the running process with its tag.
async fn selected_pid(
    state: &ApiState,
    caller: &SandboxCaller,
    selector: &envd::ProcessSelector,
) -> Result<u32, ConnectError> {
    if let Some(pid) = selector.pid {
        return Ok(pid);
    }
    let Some(tag) = &selector.tag else {
        return Err(ConnectError::new(
            Code::InvalidArgument,
            "the request selects no process (pid or tag)",
        ));
    };
    let listed = operation(state, caller, &Operation::Processes).await?;
    let processes: Vec<ProcessInfo> =
        serde_json::from_value(listed).map_err(|_| ConnectError::from(OperationError::NoReply))?;
    processes
        .into_iter()
        .find(|process| process.tag.as_deref() == Some(tag))
        .map(|process| process.pid)
        .ok_or_else(|| ConnectError::new(Code::NotFound, format!("no process with tag {tag}")))
}

/// The `process.Process` service: `Start` and `Connect` stream, the rest are unary.
#[utoipa::path(post, path = "/process.Process/{method}", tag = "e2b_sandbox",
    params(("method" = String, Path, description = "Start, Connect, List, SendSignal, SendInput or CloseStdin")),
    request_body(content = serde_json::Value, description = "The method's request message (Connect JSON, enveloped for Start and Connect)"),
    responses(
        (status = 200, description = "The response message, or for Start and Connect a stream of ProcessEvent envelopes", body = serde_json::Value),
        (status = 400, description = "Bad message or no E2b-Sandbox-Id", body = serde_json::Value),
        (status = 401, description = "No access token", body = serde_json::Value),
        (status = 404, description = "No such process or method", body = serde_json::Value),
        (status = 415, description = "Not Connect's JSON codec", body = serde_json::Value),
        (status = 503, description = "The sandbox was not found", body = serde_json::Value),
    ))]
async fn process(
    State(state): State<ApiState>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let caller = match sandbox_caller(&state, &headers, Service::Envd).await {
        Ok(caller) => caller,
        Err(refusal) => return connect_failure(refusal.into()),
    };
    let encoding = encoding_of(&headers);
    if let Some(refused) = refused_encoding(encoding) {
        return refused;
    }
    let deadline = connect::timeout_ms(
        headers
            .get(connect::TIMEOUT_HEADER)
            .and_then(|value| value.to_str().ok()),
    )
    .map(|ms| Instant::now() + Duration::from_millis(ms));
    match method.as_str() {
        "Start" => {
            let started = async {
                let request: StartRequest = parse_message(encoding, &body)?;
                if request.pty.as_ref().is_some_and(|pty| !pty.is_null()) {
                    return Err(unimplemented("a pseudo-terminal"));
                }
                let reply = operation(
                    &state,
                    &caller,
                    &Operation::Spawn {
                        config: request.process,
                        tag: request.tag,
                        stdin: request.stdin == Some(true),
                    },
                )
                .await?;
                reply
                    .get("pid")
                    .and_then(serde_json::Value::as_u64)
                    .and_then(|pid| u32::try_from(pid).ok())
                    .ok_or_else(|| OperationError::NoReply.into())
            };
            let pid = started.await;
            stream_process(state, caller, pid, deadline)
        }
        "Connect" => {
            let selected = async {
                let request: SelectorRequest = parse_message(encoding, &body)?;
                selected_pid(&state, &caller, &request.process).await
            };
            let pid = selected.await;
            stream_process(state, caller, pid, deadline)
        }
        "List" => {
            let listed = async {
                let reply = operation(&state, &caller, &Operation::Processes).await?;
                let processes: Vec<ProcessInfo> = serde_json::from_value(reply)
                    .map_err(|_| ConnectError::from(OperationError::NoReply))?;
                Ok(as_message(&ListResponse { processes }))
            };
            unary(listed.await)
        }
        "SendSignal" => {
            let signalled = async {
                let request: SignalRequest = parse_message(encoding, &body)?;
                let signal = request.signal_number().ok_or_else(|| {
                    ConnectError::new(
                        Code::InvalidArgument,
                        "signal must be SIGNAL_SIGKILL or SIGNAL_SIGTERM",
                    )
                })?;
                let pid = selected_pid(&state, &caller, &request.process).await?;
                operation(&state, &caller, &Operation::Signal { pid, signal }).await?;
                Ok(serde_json::json!({}))
            };
            unary(signalled.await)
        }
        "SendInput" => {
            let sent = async {
                let request: InputRequest = parse_message(encoding, &body)?;
                let data = request.input.checked_stdin().ok_or_else(|| {
                    if request.input.pty.is_some() {
                        unimplemented("a pseudo-terminal")
                    } else {
                        ConnectError::new(Code::InvalidArgument, "input.stdin must be base64 bytes")
                    }
                })?;
                let pid = selected_pid(&state, &caller, &request.process).await?;
                let write = Operation::Stdin {
                    pid,
                    data: data.to_owned(),
                };
                operation(&state, &caller, &write).await?;
                Ok(serde_json::json!({}))
            };
            unary(sent.await)
        }
        "CloseStdin" => {
            let closed = async {
                let request: SelectorRequest = parse_message(encoding, &body)?;
                let pid = selected_pid(&state, &caller, &request.process).await?;
                operation(&state, &caller, &Operation::CloseStdin { pid }).await?;
                Ok(serde_json::json!({}))
            };
            unary(closed.await)
        }
        "StreamInput" => unary(Err(unimplemented("streaming a command's stdin"))),
        "Update" => unary(Err(unimplemented("a pseudo-terminal"))),
        other => unary(Err(ConnectError::new(
            Code::NotFound,
            format!("no method process.Process/{other}"),
        ))),
    }
}

/// A command's stream: its start event, then its output and end as `poll` executions see
/// them, then the end-of-stream trailer (with the error, if any).
fn stream_process(
    state: ApiState,
    caller: SandboxCaller,
    pid: Result<u32, ConnectError>,
    deadline: Option<Instant>,
) -> Response {
    let (frames, body) = mpsc::channel::<Result<Bytes, Infallible>>(STREAM_BUFFER);
    tokio::spawn(async move {
        let outcome = match pid {
            Ok(pid) => follow(&state, &caller, pid, deadline, &frames).await,
            Err(error) => Err(error),
        };
        if let Some(outcome) = Followed::trailer(outcome) {
            let _ = frames
                .send(Ok(Bytes::from(connect::end_stream_frame(outcome.as_ref()))))
                .await;
        }
    });
    let mut response = Body::from_stream(ReceiverStream::new(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(connect::STREAM_JSON),
    );
    response
}

/// How following a command ended.
enum Followed {
    /// It exited and its end event was sent.
    Ended,
    /// The client went away (the command keeps running; `Connect` finds it again).
    Left,
}

impl Followed {
    /// The trailer to send: `None` when the client is gone.
    fn trailer(outcome: Result<Followed, ConnectError>) -> Option<Option<ConnectError>> {
        match outcome {
            Ok(Followed::Ended) => Some(None),
            Ok(Followed::Left) => None,
            Err(error) => Some(Some(error)),
        }
    }
}

async fn send(
    frames: &mpsc::Sender<Result<Bytes, Infallible>>,
    message: &serde_json::Value,
) -> bool {
    frames
        .send(Ok(Bytes::from(connect::message_frame(message))))
        .await
        .is_ok()
}

async fn follow(
    state: &ApiState,
    caller: &SandboxCaller,
    pid: u32,
    deadline: Option<Instant>,
    frames: &mpsc::Sender<Result<Bytes, Infallible>>,
) -> Result<Followed, ConnectError> {
    if !send(frames, &start_event(pid)).await {
        return Ok(Followed::Left);
    }
    let mut last_sent = Instant::now();
    let mut pause = QUIET_PAUSES.0;
    loop {
        if frames.is_closed() {
            return Ok(Followed::Left);
        }
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            let kill = Operation::Signal { pid, signal: 9 };
            if let Err(error) = operation(state, caller, &kill).await {
                tracing::debug!(?error, "a command past its deadline could not be killed");
            }
            return Err(ConnectError::new(
                Code::DeadlineExceeded,
                "the command ran past its timeout and was killed",
            ));
        }
        let (events, mut received) = mpsc::unbounded_channel();
        let pending = state
            .engine
            .submit(
                &caller.principal,
                caller.id(),
                ExecRequest {
                    code: in_sandbox::operation_code(&Operation::Poll {
                        pid,
                        wait: POLL_WAIT_SECONDS,
                    }),
                    timeout: None,
                    stdin: StdinMode::default(),
                    // Not a cell: no execution count, no history, `_` left alone.
                    store_history: false,
                },
                Some(events),
            )
            .await
            .map_err(engine_connect_error)?;
        let mut exit = None;
        let mut raised = None;
        let mut connected = true;
        let mut printed = false;
        while let Some(event) = received.recv().await {
            match event {
                ExecEvent::Stream { name, text } if connected => {
                    let output = match name {
                        StreamName::Stdout => Output::Stdout,
                        StreamName::Stderr => Output::Stderr,
                    };
                    connected = send(frames, &data_event(output, text.as_bytes())).await;
                    last_sent = Instant::now();
                    printed = true;
                }
                ExecEvent::Display { data, .. } => {
                    if let Some(reply) = in_sandbox::reply(&data) {
                        exit = Some(reply.get("exit").cloned().unwrap_or_default());
                    }
                }
                ExecEvent::Error(error) => raised = Some(error),
                _ => {}
            }
        }
        pending.finish().await.map_err(engine_connect_error)?;
        if let Some(error) = raised {
            return Err(OperationError::Raised {
                name: error.ename,
                message: error.evalue,
            }
            .into());
        }
        if !connected || frames.is_closed() {
            return Ok(Followed::Left);
        }
        match exit {
            Some(serde_json::Value::Null) => {}
            Some(code) => {
                let code = code.as_i64().and_then(|code| i32::try_from(code).ok());
                let Some(code) = code else {
                    return Err(OperationError::NoReply.into());
                };
                if !send(frames, &end_event(&Exit::from_returncode(code))).await {
                    return Ok(Followed::Left);
                }
                return Ok(Followed::Ended);
            }
            None => return Err(OperationError::NoReply.into()),
        }
        if last_sent.elapsed() >= KEEPALIVE_AFTER {
            if !send(frames, &keepalive_event()).await {
                return Ok(Followed::Left);
            }
            last_sent = Instant::now();
        }
        if printed {
            pause = QUIET_PAUSES.0;
        } else {
            // Wait without holding the session, until the pause is over or the client leaves.
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = frames.closed() => return Ok(Followed::Left),
            }
            pause = (pause * 2).min(QUIET_PAUSES.1);
        }
    }
}
