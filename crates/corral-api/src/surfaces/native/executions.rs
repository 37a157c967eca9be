//! Execution routes: run code (JSON reply or server-sent events) and read history.

use std::convert::Infallible;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use corral_core::{ExecEvent, ExecRequest, StdinMode};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use utoipa::IntoParams;

use super::views::{ErrorView, ExecuteRequest, ExecutionList, ExecutionView, OutputView};
use super::{parse_seconds, parse_session_id};
use crate::auth::Caller;
use crate::body::NativeJson;
use crate::problem::{Problem, ProblemBody};
use crate::state::ApiState;

/// Events buffered for a slow streaming client before output waits for it.
const SSE_BUFFER: usize = 256;

/// Runs code in the session after whatever is queued before it. With
/// `Accept: text/event-stream` the reply is a stream of server-sent events: `stream`
/// (`{name, text}`), `display` (`{data, metadata}`), `result` (`{execution_count, data}`) and
/// `error` (`{ename, evalue, traceback}`) as they happen, then `done` carrying the whole
/// execution (or `problem` if the session ended under it).
#[utoipa::path(post, path = "/v1/sessions/{id}/executions", tag = "executions",
    params(("id" = String, Path, description = "Session id")),
    request_body = ExecuteRequest,
    responses(
        (status = 401, description = "No valid API key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 200, description = "The finished execution (also when the code raised); with `Accept: text/event-stream`, a stream of events ending in `done`", body = ExecutionView),
        (status = 400, description = "Malformed JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such session", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "The session has ended or is draining", body = ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, NUL in code, timeout out of range", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "The session's queue is full", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn execute(
    State(state): State<ApiState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    NativeJson(request): NativeJson<ExecuteRequest>,
) -> Result<Response, Problem> {
    let id = parse_session_id(&id)?;
    let timeout = parse_seconds("timeout", request.timeout)?;
    let exec_request = ExecRequest {
        code: request.code,
        timeout,
        stdin: StdinMode::Empty,
        store_history: true,
    };
    if !wants_event_stream(&headers) {
        let record = state.engine.execute(&caller, id, exec_request).await?;
        return Ok(Json(ExecutionView::from(record)).into_response());
    }
    let (event_sender, mut event_receiver) = mpsc::unbounded_channel();
    let pending = state
        .engine
        .submit(&caller, id, exec_request, Some(event_sender))
        .await?;
    let (sse_sender, sse_receiver) = mpsc::channel::<Result<Event, Infallible>>(SSE_BUFFER);
    tokio::spawn(async move {
        let mut client_connected = true;
        while let Some(event) = event_receiver.recv().await {
            let Some(event) = sse_event(event) else {
                continue;
            };
            if client_connected && sse_sender.send(Ok(event)).await.is_err() {
                client_connected = false;
            }
        }
        let last = match pending.finish().await {
            Ok(record) => json_event("done", &ExecutionView::from(record)),
            Err(error) => json_event("problem", &Problem::from(error).body),
        };
        if client_connected {
            let _ = sse_sender.send(Ok(last)).await;
        }
    });
    Ok(Sse::new(ReceiverStream::new(sse_receiver))
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn wants_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| {
            item.split(';')
                .next()
                .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

/// The server-sent event for an execution event; `None` for those the native stream does
/// not carry (the start, `clear_output`, input requests: its executions read no input).
fn sse_event(event: ExecEvent) -> Option<Event> {
    Some(match event {
        ExecEvent::Stream { name, text } => json_event(
            "stream",
            &serde_json::json!({"name": name.as_str(), "text": text}),
        ),
        ExecEvent::Display { data, metadata, .. } => {
            json_event("display", &OutputView::Display { data, metadata })
        }
        ExecEvent::Result {
            execution_count,
            data,
        } => json_event(
            "result",
            &serde_json::json!({"execution_count": execution_count, "data": data}),
        ),
        ExecEvent::Error(error) => json_event("error", &ErrorView::from(error)),
        ExecEvent::Started { .. }
        | ExecEvent::ClearOutput { .. }
        | ExecEvent::InputRequest { .. } => return None,
    })
}

fn json_event(name: &str, value: &impl serde::Serialize) -> Event {
    let data = serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned());
    Event::default().event(name).data(data)
}

/// Query of `GET .../executions`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ListExecutionsQuery {
    /// Only executions with a larger `execution_count` (the previous page's `next_after`).
    after: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    limit: Option<String>,
}

/// A session's execution history, oldest first.
#[utoipa::path(get, path = "/v1/sessions/{id}/executions", tag = "executions",
    params(("id" = String, Path, description = "Session id"), ListExecutionsQuery),
    responses(
        (status = 401, description = "No valid API key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 200, description = "One page of executions", body = ExecutionList),
        (status = 400, description = "Bad query parameter", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such session", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn list_executions(
    State(state): State<ApiState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    query: Result<Query<ListExecutionsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ExecutionList>, Problem> {
    let id = parse_session_id(&id)?;
    let bad_query = |detail: String| Problem::new(StatusCode::BAD_REQUEST, "invalid_query", detail);
    let Query(query) = query.map_err(|rejection| bad_query(rejection.body_text()))?;
    let after = match query.after.as_deref() {
        None | Some("") => None,
        Some(text) => Some(text.parse::<u64>().map_err(|_| {
            bad_query(format!(
                "after must be a non-negative integer; got {text:?}"
            ))
        })?),
    };
    let limit = match query.limit.as_deref() {
        None | Some("") => 100,
        Some(text) => match text.parse::<u32>() {
            Ok(limit) if (1..=1000).contains(&limit) => limit,
            _ => {
                return Err(bad_query(format!(
                    "limit must be an integer from 1 to 1000; got {text:?}"
                )))
            }
        },
    };
    let page = state
        .engine
        .list_executions(&caller, id, after, limit)
        .await?;
    Ok(Json(ExecutionList {
        executions: page
            .executions
            .into_iter()
            .map(ExecutionView::from)
            .collect(),
        next_after: page.next_after,
    }))
}

/// One execution by its `execution_count`.
#[utoipa::path(get, path = "/v1/sessions/{id}/executions/{execution_count}", tag = "executions",
    params(("id" = String, Path, description = "Session id"),
           ("execution_count" = u64, Path, description = "The execution's number")),
    responses(
        (status = 401, description = "No valid API key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 200, description = "The execution", body = ExecutionView),
        (status = 404, description = "No such session or execution", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn get_execution(
    State(state): State<ApiState>,
    Caller(caller): Caller,
    Path((id, execution_count)): Path<(String, String)>,
) -> Result<Json<ExecutionView>, Problem> {
    let id = parse_session_id(&id)?;
    let execution_count = execution_count.parse::<u64>().map_err(|_| {
        Problem::new(
            StatusCode::NOT_FOUND,
            "execution_not_found",
            format!("execution {execution_count:?} of session {id} not found"),
        )
    })?;
    Ok(Json(
        state
            .engine
            .get_execution(&caller, id, execution_count)
            .await?
            .into(),
    ))
}
