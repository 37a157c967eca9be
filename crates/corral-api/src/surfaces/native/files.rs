//! Workspace file routes: upload, download, delete and list files of a live session. The
//! transfer runs inside the session's sandbox (see `corral-sandbox`'s files helper); bodies
//! stream through without being held whole.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::parse_session_id;
use crate::auth::Caller;
use crate::problem::{Problem, ProblemBody};
use crate::state::ApiState;

/// Largest refused upload whose body is still read before answering.
const DRAIN_BEFORE_REFUSAL_BYTES: u64 = 64 * 1024 * 1024;

/// One entry of a directory listing.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct FileEntryView {
    pub name: String,
    /// `file`, `directory`, `symlink` or `other`.
    #[serde(rename = "type")]
    pub kind: String,
    pub size: u64,
    /// Last modification (RFC 3339, UTC, like every other time in the API).
    pub modified: chrono::DateTime<chrono::Utc>,
}

/// A directory's entries, sorted by name.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct FileList {
    /// The listed directory, relative to the workspace.
    pub dir: String,
    pub entries: Vec<FileEntryView>,
}

/// The result of an upload.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct FileWritten {
    pub path: String,
    pub size: u64,
}

/// Query of `GET .../files`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ListFilesQuery {
    /// Directory relative to the workspace (default: the workspace itself).
    dir: Option<String>,
}

/// Lists a directory of the session's workspace.
#[utoipa::path(get, path = "/v1/sessions/{id}/files", tag = "files",
    params(("id" = String, Path, description = "Session id"), ListFilesQuery),
    responses(
        (status = 401, description = "No valid API key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 200, description = "The directory's entries", body = FileList),
        (status = 400, description = "Path outside the workspace", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such session or directory", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "The session has ended, or the path is not a directory", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn list_files(
    State(state): State<ApiState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    Query(query): Query<ListFilesQuery>,
) -> Result<Json<FileList>, Problem> {
    let id = parse_session_id(&id)?;
    let dir = query.dir.unwrap_or_default();
    let files = state.engine.workspace_files(&caller, id).await?;
    let entries = files
        .list(&dir)
        .await
        .map_err(|error| Problem::from(corral_engine::EngineError::from(error)))?;
    Ok(Json(FileList {
        dir,
        entries: entries
            .into_iter()
            .map(|entry| FileEntryView {
                name: entry.name,
                kind: entry.kind,
                size: entry.size,
                modified: chrono::DateTime::from_timestamp(entry.modified, 0).unwrap_or_default(),
            })
            .collect(),
    }))
}

/// Uploads a file (the raw request body), creating parent directories; replaces an existing
/// file. Capped by the workspace size.
#[utoipa::path(put, path = "/v1/sessions/{id}/files/{*path}", tag = "files",
    params(("id" = String, Path, description = "Session id"),
           ("path" = String, Path, description = "File path relative to the workspace")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 401, description = "No valid API key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 201, description = "Written", body = FileWritten),
        (status = 400, description = "Path outside the workspace", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such session", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "The session has ended, or the path is a directory", body = ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "Larger than the workspace allows", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn put_file(
    State(state): State<ApiState>,
    Caller(caller): Caller,
    Path((id, path)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let id = parse_session_id(&id)?;
    let limit = state.engine.info().session_limits.workspace_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if let Some(length) = declared.filter(|length| *length > limit) {
        // Read a bounded amount of the body first, so the client sees the answer instead of
        // a connection reset halfway through its upload.
        if length <= DRAIN_BEFORE_REFUSAL_BYTES {
            let mut stream = body.into_data_stream();
            while let Some(Ok(_)) = futures::StreamExt::next(&mut stream).await {}
        }
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "workspace_full",
            format!("the file is larger than the workspace ({limit} bytes)"),
        ));
    }
    let files = state.engine.workspace_files(&caller, id).await?;
    let size = files
        .put(&path, body.into_data_stream())
        .await
        .map_err(|error| Problem::from(corral_engine::EngineError::from(error)))?;
    Ok((StatusCode::CREATED, Json(FileWritten { path, size })).into_response())
}

/// Downloads a file.
#[utoipa::path(get, path = "/v1/sessions/{id}/files/{*path}", tag = "files",
    params(("id" = String, Path, description = "Session id"),
           ("path" = String, Path, description = "File path relative to the workspace")),
    responses(
        (status = 401, description = "No valid API key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 200, description = "The file's bytes", content_type = "application/octet-stream"),
        (status = 400, description = "Path outside the workspace", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such session or file", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "The session has ended, or the path is a directory", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn get_file(
    State(state): State<ApiState>,
    Caller(caller): Caller,
    Path((id, path)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let id = parse_session_id(&id)?;
    let files = state.engine.workspace_files(&caller, id).await?;
    let download = files
        .get(&path)
        .await
        .map_err(|error| Problem::from(corral_engine::EngineError::from(error)))?;
    let size = download.size;
    let mut response = Body::from_stream(download.into_stream()).into_response();
    let response_headers = response.headers_mut();
    response_headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    response_headers.insert(header::CONTENT_LENGTH, header::HeaderValue::from(size));
    Ok(response)
}

/// Deletes a file, or a directory with everything in it.
#[utoipa::path(delete, path = "/v1/sessions/{id}/files/{*path}", tag = "files",
    params(("id" = String, Path, description = "Session id"),
           ("path" = String, Path, description = "Path relative to the workspace")),
    responses(
        (status = 401, description = "No valid API key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 204, description = "Deleted"),
        (status = 400, description = "Path outside the workspace", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such session or file", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "The session has ended", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn delete_file(
    State(state): State<ApiState>,
    Caller(caller): Caller,
    Path((id, path)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    let id = parse_session_id(&id)?;
    let files = state.engine.workspace_files(&caller, id).await?;
    files
        .delete(&path)
        .await
        .map_err(|error| Problem::from(corral_engine::EngineError::from(error)))?;
    Ok(StatusCode::NO_CONTENT)
}
