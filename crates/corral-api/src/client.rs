//! A client of the native API, for the CLI and the benchmark.
//!
//! It speaks the same JSON as the server (the `views` types) and turns problem+json replies
//! into [`ClientError::Api`]. It knows nothing about the engine.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::problem::ProblemBody;
use crate::sse_reader::{SseMessage, SseReader};
use crate::views::{
    ErrorView, ExecutionList, ExecutionView, FileList, FileWritten, InfoView, IssuedKeyView,
    KeyList, KeyView, NodeList, SessionList, SessionView,
};

/// Percent-encodes a workspace path for a URL, keeping `/` between segments.
fn encode_path(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            segment
                .bytes()
                .map(|byte| match byte {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                        (byte as char).to_string()
                    }
                    _ => format!("%{byte:02X}"),
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// How far a download is.
#[derive(Clone, Copy, Debug)]
pub enum FileProgress {
    /// The announced size, when the server sent one.
    Length(Option<u64>),
    /// Bytes received.
    Chunk(u64),
}

/// One event of a streamed execution.
#[derive(Debug)]
pub enum ExecutionEvent {
    Stream {
        name: String,
        text: String,
    },
    Display {
        data: serde_json::Map<String, serde_json::Value>,
    },
    Result {
        data: serde_json::Map<String, serde_json::Value>,
    },
    Error(ErrorView),
    Done(Box<ExecutionView>),
    Problem(Box<ProblemBody>),
}

impl ExecutionEvent {
    /// The event a server-sent message carries; `None` for events this client ignores.
    fn parse(message: &SseMessage) -> Result<Option<ExecutionEvent>, ClientError> {
        let decode = |error: serde_json::Error| {
            ClientError::Decode(format!("the `{}` event: {error}", message.event))
        };
        #[derive(serde::Deserialize)]
        struct Stream {
            name: String,
            text: String,
        }
        #[derive(serde::Deserialize)]
        struct Data {
            data: serde_json::Map<String, serde_json::Value>,
        }
        let data = message.data.as_str();
        Ok(Some(match message.event.as_str() {
            "stream" => {
                let Stream { name, text } = serde_json::from_str(data).map_err(decode)?;
                ExecutionEvent::Stream { name, text }
            }
            "display" => ExecutionEvent::Display {
                data: serde_json::from_str::<Data>(data).map_err(decode)?.data,
            },
            "result" => ExecutionEvent::Result {
                data: serde_json::from_str::<Data>(data).map_err(decode)?.data,
            },
            "error" => ExecutionEvent::Error(serde_json::from_str(data).map_err(decode)?),
            "done" => ExecutionEvent::Done(serde_json::from_str(data).map_err(decode)?),
            "problem" => ExecutionEvent::Problem(serde_json::from_str(data).map_err(decode)?),
            _ => return Ok(None),
        }))
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach a corral server at {url} ({reason}); start one with `corral serve`, or \
         point elsewhere with --server URL or CORRAL_SERVER"
    )]
    Unreachable { url: String, reason: String },
    #[error("the connection to {url} failed: {reason}")]
    Transport { url: String, reason: String },
    #[error("{0}")]
    InvalidUrl(String),
    #[error("workspace path `{path}`: {why}")]
    InvalidPath { path: String, why: &'static str },
    #[error("{} (HTTP {})", .problem.as_ref().map(|problem| problem.detail.as_str()).unwrap_or(.body.as_str()), .status)]
    Api {
        status: u16,
        problem: Option<Box<ProblemBody>>,
        body: String,
    },
    #[error("the server's reply could not be understood: {0}")]
    Decode(String),
}

impl ClientError {
    /// A failed request to `url`, in one line: refused connections and unknown hosts say how
    /// to point elsewhere; the reason is the innermost cause, said once.
    pub fn transport(url: &str, error: reqwest::Error) -> ClientError {
        let mut reason = error.to_string();
        let mut cause: Option<&(dyn std::error::Error + 'static)> =
            std::error::Error::source(&error);
        while let Some(inner) = cause {
            reason = inner.to_string();
            cause = inner.source();
        }
        // "Connection refused (os error 111)": the errno number says nothing to a person.
        if let Some(index) = reason.find(" (os error ") {
            reason.truncate(index);
        }
        let reason = reason.to_lowercase();
        if error.is_connect() {
            ClientError::Unreachable {
                url: url.to_owned(),
                reason,
            }
        } else if error.is_timeout() {
            ClientError::Transport {
                url: url.to_owned(),
                reason: "timed out".to_owned(),
            }
        } else {
            ClientError::Transport {
                url: url.to_owned(),
                reason,
            }
        }
    }
}

/// `http://` in front of a server address given without a scheme (`127.0.0.1:8000`).
pub fn server_url(address: &str) -> Result<String, ClientError> {
    let address = address.trim();
    let url = if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    };
    match reqwest::Url::parse(&url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() => {
            Ok(url.trim_end_matches('/').to_owned())
        }
        Ok(parsed) => Err(ClientError::InvalidUrl(format!(
            "--server {address}: expected an http:// or https:// URL, not {}://",
            parsed.scheme()
        ))),
        Err(error) => Err(ClientError::InvalidUrl(format!(
            "--server {address} is not a URL ({error}); expected e.g. http://127.0.0.1:8000"
        ))),
    }
}

/// Checks a workspace path before it goes into a URL (where `..` would be resolved away and
/// the request reach another route): relative, no `..`, no NUL.
pub fn check_workspace_path(path: &str) -> Result<(), ClientError> {
    let refuse = |why| {
        Err(ClientError::InvalidPath {
            path: path.to_owned(),
            why,
        })
    };
    if path.starts_with('/') {
        return refuse("is absolute; workspace paths are relative to the workspace (e.g. data.csv or in/data.csv)");
    }
    if path.split('/').any(|segment| segment == "..") {
        return refuse("contains `..`; paths may not leave the workspace");
    }
    if path.contains('\0') {
        return refuse("contains a NUL byte");
    }
    Ok(())
}

/// Native API client; cheap to clone.
#[derive(Clone, Debug)]
pub struct CorralClient {
    base_url: String,
    http: reqwest::Client,
    api_key: Option<String>,
}

impl CorralClient {
    /// `base_url` like `http://127.0.0.1:8000` (a trailing slash is fine).
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        let base_url = server_url(base_url)?;
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|error| ClientError::transport(&base_url, error))?;
        Ok(CorralClient {
            base_url,
            http,
            api_key: None,
        })
    }

    /// Presents `api_key` (as `Authorization: Bearer`) on every request.
    pub fn with_api_key(mut self, api_key: Option<String>) -> Self {
        self.api_key = api_key;
        self
    }

    /// `POST /v1/keys`.
    pub async fn create_key(
        &self,
        request: &serde_json::Value,
    ) -> Result<IssuedKeyView, ClientError> {
        self.send(self.http.post(self.url("/v1/keys")).json(request))
            .await
    }

    pub async fn list_nodes(&self) -> Result<NodeList, ClientError> {
        self.send(self.http.get(self.url("/v1/nodes"))).await
    }

    pub async fn list_keys(&self) -> Result<KeyList, ClientError> {
        self.send(self.http.get(self.url("/v1/keys"))).await
    }

    pub async fn revoke_key(&self, id: &str) -> Result<KeyView, ClientError> {
        self.send(self.http.delete(self.url(&format!("/v1/keys/{id}"))))
            .await
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub async fn health(&self) -> Result<(), ClientError> {
        self.send::<serde_json::Value>(self.http.get(self.url("/healthz")))
            .await
            .map(|_| ())
    }

    pub async fn info(&self) -> Result<InfoView, ClientError> {
        self.send(self.http.get(self.url("/v1/info"))).await
    }

    pub async fn create_session(&self, name: Option<&str>) -> Result<SessionView, ClientError> {
        let body = serde_json::json!({ "name": name });
        self.send(self.http.post(self.url("/v1/sessions")).json(&body))
            .await
    }

    /// Creates a session from a whole `POST /v1/sessions` body (limits, TTLs, metadata).
    pub async fn create_session_with(
        &self,
        body: &serde_json::Value,
    ) -> Result<SessionView, ClientError> {
        self.send(self.http.post(self.url("/v1/sessions")).json(body))
            .await
    }

    pub async fn get_session(&self, id: &str) -> Result<SessionView, ClientError> {
        self.send(self.http.get(self.url(&format!("/v1/sessions/{id}"))))
            .await
    }

    pub async fn list_sessions(
        &self,
        state: Option<&str>,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<SessionList, ClientError> {
        let mut query = vec![("limit", limit.to_string())];
        if let Some(state) = state {
            query.push(("state", state.to_owned()));
        }
        if let Some(cursor) = cursor {
            query.push(("cursor", cursor.to_owned()));
        }
        self.send(self.http.get(self.url("/v1/sessions")).query(&query))
            .await
    }

    pub async fn close_session(&self, id: &str) -> Result<SessionView, ClientError> {
        self.send(self.http.delete(self.url(&format!("/v1/sessions/{id}"))))
            .await
    }

    pub async fn execute(
        &self,
        id: &str,
        code: &str,
        timeout_seconds: Option<f64>,
    ) -> Result<ExecutionView, ClientError> {
        #[derive(Serialize)]
        struct Body<'a> {
            code: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            timeout: Option<f64>,
        }
        let body = Body {
            code,
            timeout: timeout_seconds,
        };
        self.send(
            self.http
                .post(self.url(&format!("/v1/sessions/{id}/executions")))
                .json(&body),
        )
        .await
    }

    /// `POST /v1/sessions/{id}/interrupt`.
    pub async fn interrupt_session(&self, id: &str) -> Result<SessionView, ClientError> {
        self.send(
            self.http
                .post(self.url(&format!("/v1/sessions/{id}/interrupt"))),
        )
        .await
    }

    /// Runs code with `Accept: text/event-stream`, handing each event to `on_event` as it
    /// arrives; returns the finished execution (the `done` event).
    pub async fn execute_streaming(
        &self,
        id: &str,
        code: &str,
        timeout_seconds: Option<f64>,
        mut on_event: impl FnMut(ExecutionEvent),
    ) -> Result<ExecutionView, ClientError> {
        use futures::StreamExt;
        let mut body = serde_json::json!({ "code": code });
        if let Some(timeout) = timeout_seconds {
            body["timeout"] = serde_json::json!(timeout);
        }
        let response = self
            .authorized(
                self.http
                    .post(self.url(&format!("/v1/sessions/{id}/executions")))
                    .header("accept", "text/event-stream")
                    .json(&body),
            )
            .send()
            .await
            .map_err(|error| ClientError::transport(&self.base_url, error))?;
        let status = response.status();
        if !status.is_success() {
            let bytes = response
                .bytes()
                .await
                .map_err(|error| ClientError::transport(&self.base_url, error))?;
            return Err(ClientError::Api {
                status: status.as_u16(),
                problem: serde_json::from_slice(&bytes).ok(),
                body: String::from_utf8_lossy(&bytes).into_owned(),
            });
        }
        let mut reader = SseReader::default();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|error| ClientError::transport(&self.base_url, error))?;
            for message in reader.push(&chunk) {
                match ExecutionEvent::parse(&message)? {
                    Some(ExecutionEvent::Done(execution)) => return Ok(*execution),
                    Some(ExecutionEvent::Problem(problem)) => {
                        return Err(ClientError::Api {
                            status: problem.status,
                            body: problem.detail.clone(),
                            problem: Some(problem),
                        })
                    }
                    Some(event) => on_event(event),
                    None => {}
                }
            }
        }
        Err(ClientError::Transport {
            url: self.base_url.clone(),
            reason: "the event stream ended before the execution finished".to_owned(),
        })
    }

    pub async fn list_executions(
        &self,
        id: &str,
        limit: u32,
    ) -> Result<ExecutionList, ClientError> {
        self.send(
            self.http
                .get(self.url(&format!("/v1/sessions/{id}/executions")))
                .query(&[("limit", limit)]),
        )
        .await
    }

    /// Uploads `file` to `path` in the session's workspace, streaming it; `progress` hears
    /// the size of each chunk sent.
    pub async fn put_file(
        &self,
        id: &str,
        path: &str,
        file: tokio::fs::File,
        progress: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<FileWritten, ClientError> {
        use futures::StreamExt;
        check_workspace_path(path)?;
        let length = file.metadata().await.map(|metadata| metadata.len()).ok();
        let stream = tokio_util::io::ReaderStream::new(file).inspect(move |chunk| {
            if let Ok(chunk) = chunk {
                progress(chunk.len() as u64);
            }
        });
        let mut request = self
            .http
            .put(self.url(&format!("/v1/sessions/{id}/files/{}", encode_path(path))))
            .header("content-type", "application/octet-stream")
            .body(reqwest::Body::wrap_stream(stream));
        if let Some(length) = length {
            request = request.header("content-length", length);
        }
        self.send(request).await
    }

    /// Downloads `path` from the session's workspace into `writer`; returns the bytes copied.
    /// `progress` hears the announced length (if any) first, then each chunk's size.
    pub async fn get_file(
        &self,
        id: &str,
        path: &str,
        writer: &mut (impl tokio::io::AsyncWrite + Unpin),
        mut progress: impl FnMut(FileProgress),
    ) -> Result<u64, ClientError> {
        check_workspace_path(path)?;
        use futures::StreamExt;
        use tokio::io::AsyncWriteExt;
        let transport = |error| ClientError::transport(&self.base_url, error);
        let response = self
            .authorized(
                self.http
                    .get(self.url(&format!("/v1/sessions/{id}/files/{}", encode_path(path)))),
            )
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        if !status.is_success() {
            let bytes = response.bytes().await.map_err(transport)?;
            return Err(ClientError::Api {
                status: status.as_u16(),
                problem: serde_json::from_slice(&bytes).ok(),
                body: String::from_utf8_lossy(&bytes).into_owned(),
            });
        }
        progress(FileProgress::Length(response.content_length()));
        let mut copied = 0u64;
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(transport)?;
            writer
                .write_all(&chunk)
                .await
                .map_err(|error| ClientError::Decode(error.to_string()))?;
            copied += chunk.len() as u64;
            progress(FileProgress::Chunk(chunk.len() as u64));
        }
        writer
            .flush()
            .await
            .map_err(|error| ClientError::Decode(error.to_string()))?;
        Ok(copied)
    }

    /// Lists a directory of the session's workspace (`""` for the workspace itself).
    pub async fn list_files(&self, id: &str, dir: &str) -> Result<FileList, ClientError> {
        if !dir.is_empty() {
            check_workspace_path(dir)?;
        }
        self.send(
            self.http
                .get(self.url(&format!("/v1/sessions/{id}/files")))
                .query(&[("dir", dir)]),
        )
        .await
    }

    /// Deletes a file or directory of the session's workspace.
    pub async fn delete_file(&self, id: &str, path: &str) -> Result<(), ClientError> {
        check_workspace_path(path)?;
        let transport = |error| ClientError::transport(&self.base_url, error);
        let response = self
            .authorized(
                self.http
                    .delete(self.url(&format!("/v1/sessions/{id}/files/{}", encode_path(path)))),
            )
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let bytes = response.bytes().await.map_err(transport)?;
        Err(ClientError::Api {
            status: status.as_u16(),
            problem: serde_json::from_slice(&bytes).ok(),
            body: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let request = self.authorized(request);
        let response = request
            .send()
            .await
            .map_err(|error| ClientError::transport(&self.base_url, error))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|error| ClientError::transport(&self.base_url, error))?;
        if !status.is_success() {
            return Err(ClientError::Api {
                status: status.as_u16(),
                problem: serde_json::from_slice(&bytes).ok(),
                body: String::from_utf8_lossy(&bytes).into_owned(),
            });
        }
        serde_json::from_slice(&bytes).map_err(|error| ClientError::Decode(error.to_string()))
    }
}
