//! The code interpreter inside a sandbox (port 49999): `POST /execute` streams a cell's
//! output as newline-delimited JSON while it runs, and `/contexts` manages code contexts.
//!
//! The default context is the session's own namespace; every other context is a namespace
//! of its own inside the same interpreter (`corral_e2b::in_sandbox::context_code`), listed
//! in the session's metadata, so all contexts share the sandbox's files and processes as in
//! E2B. It does not serve envd (`envd`) or the control plane (`control`).

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use corral_core::{ExecEvent, ExecRequest, ExecutionStatus, SessionRecord, StdinMode, StreamName};
use corral_e2b::in_sandbox::{self, Operation};
use corral_e2b::interpreter::{
    Context, CreateContext, ExecuteRequest, Language, OutputLine, ResultFormats, DEFAULT_CONTEXT,
};
use corral_engine::SessionUpdate;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{run_operation, sandbox_caller, Failure, SandboxCaller, Service, METADATA_KEY};
use crate::body::parse_json;
use crate::state::ApiState;

/// Lines buffered for a slow client before output waits for it.
const LINE_BUFFER: usize = 256;
/// The working directory reported for contexts created without one (E2B's home, which is
/// the workspace in corral).
const DEFAULT_CWD: &str = "/home/user";

pub fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(execute))
        .routes(routes!(list_contexts, create_context))
        .routes(routes!(remove_context))
        .routes(routes!(restart_context))
}

fn now_nanos() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
}

/// The line an event is shown as; `None` for events E2B has no line for (an execution's
/// start, cleared output, a stdin request, which corral's default stdin never makes).
fn line_of(event: ExecEvent) -> Option<OutputLine> {
    Some(match event {
        ExecEvent::Stream { name, text } => match name {
            StreamName::Stdout => OutputLine::Stdout {
                text,
                timestamp: now_nanos(),
            },
            StreamName::Stderr => OutputLine::Stderr {
                text,
                timestamp: now_nanos(),
            },
        },
        ExecEvent::Display { data, .. } => {
            OutputLine::Result(ResultFormats::from_bundle(&data, false))
        }
        ExecEvent::Result { data, .. } => {
            OutputLine::Result(ResultFormats::from_bundle(&data, true))
        }
        ExecEvent::Error(error) => OutputLine::error(&error.ename, &error.evalue, &error.traceback),
        ExecEvent::Started { .. }
        | ExecEvent::ClearOutput { .. }
        | ExecEvent::InputRequest { .. } => return None,
    })
}

/// The contexts kept on the sandbox's session (besides the default one).
fn stored_contexts(record: &SessionRecord) -> Vec<StoredContext> {
    record
        .metadata
        .get(METADATA_KEY)
        .and_then(|fields| fields.get("contexts"))
        .and_then(|contexts| serde_json::from_value(contexts.clone()).ok())
        .unwrap_or_default()
}

/// A context as kept in the session's metadata.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct StoredContext {
    id: String,
    /// The working directory its code runs in, when one was asked for.
    cwd: Option<String>,
    /// Python when absent (contexts stored before other languages were run).
    #[serde(default = "python")]
    language: Language,
}

fn python() -> Language {
    Language::Python
}

impl StoredContext {
    fn view(&self) -> Context {
        Context {
            id: self.id.clone(),
            language: self.language.name().to_owned(),
            cwd: self.cwd.clone().unwrap_or_else(|| DEFAULT_CWD.to_owned()),
        }
    }
}

fn default_context() -> Context {
    Context {
        id: DEFAULT_CONTEXT.to_owned(),
        language: Language::Python.name().to_owned(),
        cwd: DEFAULT_CWD.to_owned(),
    }
}

fn context_not_found(id: &str) -> Failure {
    Failure::new(StatusCode::NOT_FOUND, format!("context {id} not found"))
}

/// Replaces the contexts kept on the session.
async fn store_contexts(
    state: &ApiState,
    caller: &SandboxCaller,
    contexts: &[StoredContext],
) -> Result<(), Failure> {
    let mut metadata = caller.record.metadata.clone();
    if let Some(fields) = metadata
        .get_mut(METADATA_KEY)
        .and_then(|fields| fields.as_object_mut())
    {
        fields.insert(
            "contexts".to_owned(),
            serde_json::to_value(contexts).unwrap_or_default(),
        );
    }
    state
        .engine
        .update_session(
            &caller.principal,
            caller.id(),
            SessionUpdate {
                metadata: Some(metadata),
                ..Default::default()
            },
        )
        .await?;
    Ok(())
}

async fn restore_env(state: &ApiState, caller: &SandboxCaller) {
    if let Err(error) = run_operation(
        state,
        &caller.principal,
        caller.id(),
        &Operation::RestoreEnv,
    )
    .await
    {
        tracing::warn!(
            ?error,
            "could not restore a sandbox's environment after a cell"
        );
    }
}

/// Runs code in a context and streams its output, one JSON object per line.
#[utoipa::path(post, path = "/execute", tag = "e2b_sandbox",
    request_body(content = serde_json::Value, description = "{code, context_id?, language?, env_vars?}"),
    responses(
        (status = 200, description = "Lines of stdout, stderr, result, error, number_of_executions, end_of_execution", content_type = "application/x-ndjson"),
        (status = 400, description = "Bad body, missing E2b-Sandbox-Id, unsupported language or one the context does not run", body = serde_json::Value),
        (status = 401, description = "No access token", body = serde_json::Value),
        (status = 404, description = "Unknown context, or a port without this path", body = serde_json::Value),
        (status = 502, description = "The sandbox was not found", body = serde_json::Value),
    ))]
async fn execute(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Failure> {
    let caller = sandbox_caller(&state, &headers, Service::CodeInterpreter).await?;
    let request: ExecuteRequest = parse_json(&body)?;
    let asked = request
        .language
        .as_deref()
        .map(Language::parse)
        .transpose()
        .map_err(Failure::bad_request)?;
    let code = match request.context_id.as_deref() {
        None | Some(DEFAULT_CONTEXT) => {
            let language = asked.unwrap_or(Language::Python);
            match in_sandbox::foreign_code(
                language,
                language.default_context(),
                &request.code,
                None,
            ) {
                Some(code) => code,
                None => request.code,
            }
        }
        Some(id) => {
            let context = stored_contexts(&caller.record)
                .into_iter()
                .find(|context| context.id == id)
                .ok_or_else(|| context_not_found(id))?;
            if asked.is_some_and(|language| language != context.language) {
                return Err(Failure::bad_request(format!(
                    "context {id} runs {}, not {}",
                    context.language.name(),
                    asked.map_or("", Language::name)
                )));
            }
            in_sandbox::foreign_code(context.language, id, &request.code, context.cwd.as_deref())
                .unwrap_or_else(|| {
                    in_sandbox::context_code(id, &request.code, context.cwd.as_deref())
                })
        }
    };
    let envs = request.env_vars.unwrap_or_default();
    let restore = !envs.is_empty();
    if restore {
        run_operation(
            &state,
            &caller.principal,
            caller.id(),
            &Operation::Setenv { envs, save: true },
        )
        .await?;
    }
    let (event_sender, mut events) = mpsc::unbounded_channel();
    let submitted = state
        .engine
        .submit(
            &caller.principal,
            caller.id(),
            ExecRequest {
                code,
                timeout: None,
                stdin: StdinMode::default(),
                store_history: true,
            },
            Some(event_sender),
        )
        .await;
    let pending = match submitted {
        Ok(pending) => pending,
        Err(error) => {
            if restore {
                restore_env(&state, &caller).await;
            }
            return Err(error.into());
        }
    };
    let (lines, body) = mpsc::channel::<Result<Bytes, Infallible>>(LINE_BUFFER);
    tokio::spawn(async move {
        let mut connected = true;
        let mut saw_error = false;
        loop {
            let event = tokio::select! {
                event = events.recv() => event,
                () = lines.closed(), if connected => {
                    // The client went away (the SDK's own timeout, or a cancelled call):
                    // like E2B's server, stop the cell.
                    connected = false;
                    if let Err(error) = state.engine.interrupt(&caller.principal, caller.id()).await {
                        tracing::debug!(%error, "could not interrupt an abandoned cell");
                    }
                    continue;
                }
            };
            let Some(event) = event else { break };
            saw_error |= matches!(event, ExecEvent::Error(_));
            let Some(line) = line_of(event) else {
                continue;
            };
            let line = line.to_line();
            if connected && lines.send(Ok(Bytes::from(line))).await.is_err() {
                connected = false;
            }
        }
        let mut tail = Vec::new();
        match pending.finish().await {
            Ok(record) => {
                if !saw_error && record.status != ExecutionStatus::Ok {
                    tail.push(OutputLine::error(
                        "ExecutionError",
                        &format!("the cell ended: {}", record.status.as_str()),
                        &[],
                    ));
                }
                tail.push(OutputLine::NumberOfExecutions {
                    execution_count: record.execution_count,
                });
                tail.push(OutputLine::EndOfExecution);
            }
            Err(error) => {
                tail.push(OutputLine::error("SandboxError", &error.to_string(), &[]));
                tail.push(OutputLine::UnexpectedEndOfExecution);
            }
        }
        if restore {
            restore_env(&state, &caller).await;
        }
        for line in tail {
            if !connected || lines.send(Ok(Bytes::from(line.to_line()))).await.is_err() {
                break;
            }
        }
    });
    let mut response = Body::from_stream(ReceiverStream::new(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}

/// The sandbox's contexts: the default one first.
#[utoipa::path(get, path = "/contexts", tag = "e2b_sandbox",
    responses(
        (status = 200, description = "Contexts: {id, language, cwd}", body = serde_json::Value),
        (status = 400, description = "Missing E2b-Sandbox-Id", body = serde_json::Value),
        (status = 401, description = "No access token", body = serde_json::Value),
        (status = 502, description = "The sandbox was not found", body = serde_json::Value),
    ))]
async fn list_contexts(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<Vec<Context>>, Failure> {
    let caller = sandbox_caller(&state, &headers, Service::CodeInterpreter).await?;
    let mut contexts = vec![default_context()];
    contexts.extend(
        stored_contexts(&caller.record)
            .iter()
            .map(StoredContext::view),
    );
    Ok(Json(contexts))
}

/// Creates a context: a fresh namespace in the sandbox's interpreter, or for JavaScript and
/// Bash a driver of that language started in the sandbox on the context's first use.
#[utoipa::path(post, path = "/contexts", tag = "e2b_sandbox",
    request_body(content = serde_json::Value, description = "{language?, cwd?}"),
    responses(
        (status = 200, description = "The context", body = serde_json::Value),
        (status = 400, description = "Bad body or unsupported language", body = serde_json::Value),
        (status = 401, description = "No access token", body = serde_json::Value),
        (status = 502, description = "The sandbox was not found", body = serde_json::Value),
    ))]
async fn create_context(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Context>, Failure> {
    let caller = sandbox_caller(&state, &headers, Service::CodeInterpreter).await?;
    let request: CreateContext = parse_json(&body)?;
    let language =
        Language::parse_optional(request.language.as_deref()).map_err(Failure::bad_request)?;
    let context = StoredContext {
        id: uuid::Uuid::new_v4().simple().to_string(),
        cwd: request.cwd.filter(|cwd| !cwd.is_empty()),
        language,
    };
    let mut contexts = stored_contexts(&caller.record);
    contexts.push(context.clone());
    store_contexts(&state, &caller, &contexts).await?;
    Ok(Json(context.view()))
}

/// Removes a context and its namespace.
#[utoipa::path(delete, path = "/contexts/{contextID}", tag = "e2b_sandbox",
    params(("contextID" = String, Path, description = "Context id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "The default context, or a missing E2b-Sandbox-Id", body = serde_json::Value),
        (status = 401, description = "No access token", body = serde_json::Value),
        (status = 404, description = "No such context", body = serde_json::Value),
        (status = 502, description = "The sandbox was not found", body = serde_json::Value),
    ))]
async fn remove_context(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, Failure> {
    let caller = sandbox_caller(&state, &headers, Service::CodeInterpreter).await?;
    if id == DEFAULT_CONTEXT {
        return Err(Failure::bad_request(
            "the default context cannot be removed",
        ));
    }
    let mut contexts = stored_contexts(&caller.record);
    let before = contexts.len();
    contexts.retain(|context| context.id != id);
    if contexts.len() == before {
        return Err(context_not_found(&id));
    }
    store_contexts(&state, &caller, &contexts).await?;
    run_operation(
        &state,
        &caller.principal,
        caller.id(),
        &Operation::ResetContext { id },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Restarts a context: a fresh namespace, or for the default one a fresh interpreter.
#[utoipa::path(post, path = "/contexts/{contextID}/restart", tag = "e2b_sandbox",
    params(("contextID" = String, Path, description = "Context id")),
    responses(
        (status = 204, description = "Restarted"),
        (status = 400, description = "Missing E2b-Sandbox-Id", body = serde_json::Value),
        (status = 401, description = "No access token", body = serde_json::Value),
        (status = 404, description = "No such context", body = serde_json::Value),
        (status = 502, description = "The sandbox was not found", body = serde_json::Value),
    ))]
async fn restart_context(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, Failure> {
    let caller = sandbox_caller(&state, &headers, Service::CodeInterpreter).await?;
    if id == DEFAULT_CONTEXT {
        state.engine.restart(&caller.principal, caller.id()).await?;
        return Ok(StatusCode::NO_CONTENT);
    }
    if !stored_contexts(&caller.record)
        .iter()
        .any(|context| context.id == id)
    {
        return Err(context_not_found(&id));
    }
    run_operation(
        &state,
        &caller.principal,
        caller.id(),
        &Operation::ResetContext { id },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
