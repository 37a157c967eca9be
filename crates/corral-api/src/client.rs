//! A client of the native API, for the CLI and the benchmark.
//!
//! It speaks the same JSON as the server (the `views` types) and turns problem+json replies
//! into [`ClientError::Api`]. It knows nothing about the engine.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::problem::ProblemBody;
use crate::views::{
    ExecutionList, ExecutionView, FileList, FileWritten, InfoView, IssuedKeyView, KeyList, KeyView,
    NodeList, SessionList, SessionView,
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

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("could not reach the server at {url}: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{}: {}", .status, .problem.as_ref().map(|problem| problem.detail.as_str()).unwrap_or(.body.as_str()))]
    Api {
        status: u16,
        problem: Option<Box<ProblemBody>>,
        body: String,
    },
    #[error("the server's reply could not be understood: {0}")]
    Decode(String),
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
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|source| ClientError::Transport {
                url: base_url.to_owned(),
                source,
            })?;
        Ok(CorralClient {
            base_url: base_url.trim_end_matches('/').to_owned(),
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

    /// Uploads `file` to `path` in the session's workspace, streaming it.
    pub async fn put_file(
        &self,
        id: &str,
        path: &str,
        file: tokio::fs::File,
    ) -> Result<FileWritten, ClientError> {
        let length = file.metadata().await.map(|metadata| metadata.len()).ok();
        let stream = tokio_util::io::ReaderStream::new(file);
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
    pub async fn get_file(
        &self,
        id: &str,
        path: &str,
        writer: &mut (impl tokio::io::AsyncWrite + Unpin),
    ) -> Result<u64, ClientError> {
        use futures::StreamExt;
        use tokio::io::AsyncWriteExt;
        let transport = |source| ClientError::Transport {
            url: self.base_url.clone(),
            source,
        };
        let response = self
            .http
            .get(self.url(&format!("/v1/sessions/{id}/files/{}", encode_path(path))))
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
        let mut copied = 0u64;
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(transport)?;
            writer
                .write_all(&chunk)
                .await
                .map_err(|error| ClientError::Decode(error.to_string()))?;
            copied += chunk.len() as u64;
        }
        writer
            .flush()
            .await
            .map_err(|error| ClientError::Decode(error.to_string()))?;
        Ok(copied)
    }

    /// Lists a directory of the session's workspace (`""` for the workspace itself).
    pub async fn list_files(&self, id: &str, dir: &str) -> Result<FileList, ClientError> {
        self.send(
            self.http
                .get(self.url(&format!("/v1/sessions/{id}/files")))
                .query(&[("dir", dir)]),
        )
        .await
    }

    /// Deletes a file or directory of the session's workspace.
    pub async fn delete_file(&self, id: &str, path: &str) -> Result<(), ClientError> {
        let transport = |source| ClientError::Transport {
            url: self.base_url.clone(),
            source,
        };
        let response = self
            .http
            .delete(self.url(&format!("/v1/sessions/{id}/files/{}", encode_path(path))))
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

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let request = match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        };
        let response = request
            .send()
            .await
            .map_err(|source| ClientError::Transport {
                url: self.base_url.clone(),
                source,
            })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|source| ClientError::Transport {
                url: self.base_url.clone(),
                source,
            })?;
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
