//! Today's E2B SDKs (`e2b` 2.x, `e2b-code-interpreter` 2.x), unmodified, pointed at corral
//! with `E2B_API_URL`, `E2B_SANDBOX_URL` and `E2B_API_KEY`. Two surfaces of the mount table,
//! both at the root by default:
//!
//! - `e2b_api` (`control`): the control plane — `/sandboxes`, `/v2/sandboxes` and the
//!   sandbox routes under them; the key comes in `X-API-KEY` (either spelling of a corral
//!   key, see `corral_engine::keys::e2b_form`).
//! - `e2b_sandbox` (`interpreter`, `envd`): what the SDK sends to a sandbox at
//!   `E2B_SANDBOX_URL`, naming it with `E2b-Sandbox-Id` and the service with
//!   `E2b-Sandbox-Port` (49999 the code interpreter, 49983 envd), authenticated by the
//!   sandbox's access token (`X-Access-Token` or `E2B-Traffic-Access-Token`): a session key
//!   of the sandbox's session, issued at create and connect.
//!
//! Every sandbox is a corral session whose metadata holds this surface's fields under
//! `e2b_sandbox`. Code contexts are namespaces inside that session, and commands and file
//! operations run as executions of it (`corral_e2b::in_sandbox`), so everything a sandbox
//! does happens in its one corral sandbox. The shapes are `corral_e2b`'s; this module only
//! authenticates, translates and moves bytes. It imports no other surface.

mod control;
mod envd;
mod interpreter;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use corral_core::{
    ExecRequest, ExecutionRecord, OutputItem, Principal, SessionId, SessionRecord, StdinMode,
};
use corral_e2b::connect::{Code, ConnectError};
use corral_e2b::in_sandbox::{self, Operation};
use corral_engine::EngineError;
use utoipa_axum::router::OpenApiRouter;

use crate::body::BodyError;
use crate::state::ApiState;

pub use control::router as control_router;

/// Metadata key under which a sandbox's E2B fields are kept.
pub(crate) const METADATA_KEY: &str = "e2b_sandbox";
/// Header naming the sandbox of an in-sandbox request.
const SANDBOX_ID_HEADER: &str = "e2b-sandbox-id";
/// Header naming the port (service) of an in-sandbox request.
const SANDBOX_PORT_HEADER: &str = "e2b-sandbox-port";
/// The headers a sandbox's access token comes in.
const ACCESS_TOKEN_HEADERS: &[&str] = &["x-access-token", "e2b-traffic-access-token"];

/// The in-sandbox routes: the code interpreter's and envd's.
pub fn sandbox_router() -> OpenApiRouter<ApiState> {
    let routes = interpreter::router().merge(envd::router());
    crate::mounts::answer_wrong_methods(routes, method_not_allowed)
}

async fn method_not_allowed() -> Failure {
    Failure::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "this path does not accept this method",
    )
}

/// An error in E2B's `{code, message}` shape.
#[derive(Debug)]
pub(crate) struct Failure(StatusCode, String);

impl Failure {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Failure {
        Failure(status, message.into())
    }

    fn bad_request(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::BAD_REQUEST, message)
    }

    /// What the E2B proxy answers for a sandbox it cannot reach; the SDK reads "was not
    /// found" as "killed or timed out".
    fn sandbox_gone(id: &str) -> Failure {
        Failure::new(
            StatusCode::BAD_GATEWAY,
            format!("The sandbox {id} was not found"),
        )
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (
            self.0,
            Json(corral_e2b::control::Error {
                code: self.0.as_u16(),
                message: self.1,
            }),
        )
            .into_response()
    }
}

impl From<EngineError> for Failure {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::Unauthorized => {
                Failure::new(StatusCode::UNAUTHORIZED, "invalid or missing API key")
            }
            EngineError::SessionNotFound(id) | EngineError::SessionNotRunning { id, .. } => {
                Failure::new(StatusCode::NOT_FOUND, format!("sandbox {id} not found"))
            }
            EngineError::Forbidden(detail) => Failure::new(StatusCode::FORBIDDEN, detail),
            EngineError::InvalidInput(detail) => Failure::bad_request(detail),
            EngineError::NotAccepting(_) => Failure::new(
                StatusCode::CONFLICT,
                "the sandbox is not accepting work (it is being drained)",
            ),
            EngineError::TooManySessions { .. }
            | EngineError::HostMemoryLow { .. }
            | EngineError::QuotaExceeded { .. }
            | EngineError::QueueFull { .. } => {
                Failure::new(StatusCode::TOO_MANY_REQUESTS, error.to_string())
            }
            EngineError::File(file) => file_failure(file),
            EngineError::ShuttingDown | EngineError::WorkerStart(_) => Failure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the sandbox could not be started",
            ),
            other => {
                tracing::error!(error = %other, "e2b sdk request failed");
                Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
        }
    }
}

fn file_failure(error: corral_engine::FileError) -> Failure {
    use corral_engine::FileError;
    match error {
        FileError::NotFound(detail) => Failure::new(StatusCode::NOT_FOUND, detail),
        FileError::InvalidPath(detail) | FileError::WrongType(detail) => {
            Failure::bad_request(detail)
        }
        FileError::NoSpace(detail) => Failure::new(
            StatusCode::INSUFFICIENT_STORAGE,
            format!("not enough space in the sandbox: {detail}"),
        ),
        FileError::Failed(detail) => {
            tracing::error!(error = %detail, "e2b sdk file transfer failed");
            Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

impl From<BodyError> for Failure {
    fn from(error: BodyError) -> Self {
        match error {
            BodyError::TooLarge { .. } => {
                Failure::new(StatusCode::PAYLOAD_TOO_LARGE, error.to_string())
            }
            other => Failure::bad_request(other.to_string()),
        }
    }
}

/// The caller of a control-plane route: its `X-API-KEY` (or bearer) key. While the server
/// is in open mode a refused key acts as no key, since the SDK must send one.
async fn api_caller(state: &ApiState, headers: &HeaderMap) -> Result<Principal, Failure> {
    let presented = crate::auth::presented_key(headers);
    match state.engine.authenticate(presented).await {
        Ok(principal) => Ok(principal),
        Err(EngineError::Unauthorized) if presented.is_some() => {
            Ok(state.engine.authenticate(None).await?)
        }
        Err(error) => Err(error.into()),
    }
}

/// Which service of a sandbox a route belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Service {
    Envd,
    CodeInterpreter,
}

impl Service {
    fn port(self) -> u16 {
        match self {
            Service::Envd => corral_e2b::ENVD_PORT,
            Service::CodeInterpreter => corral_e2b::CODE_INTERPRETER_PORT,
        }
    }
}

/// Why an in-sandbox request reaches no sandbox.
#[derive(Debug)]
enum SandboxRefusal {
    /// No usable credentials: 401.
    Unauthorized,
    /// The request names no sandbox, or a port that is not this route's service: 400/404.
    BadRequest(Failure),
    /// Unknown, ended, another tenant's, or a wrong access token: what E2B's proxy answers.
    Gone(String),
    /// Anything else, already mapped.
    Other(Failure),
}

impl From<SandboxRefusal> for Failure {
    fn from(refusal: SandboxRefusal) -> Self {
        match refusal {
            SandboxRefusal::Unauthorized => Failure::new(
                StatusCode::UNAUTHORIZED,
                "the sandbox's access token (X-Access-Token) is required",
            ),
            SandboxRefusal::BadRequest(failure) | SandboxRefusal::Other(failure) => failure,
            SandboxRefusal::Gone(id) => Failure::sandbox_gone(&id),
        }
    }
}

impl From<SandboxRefusal> for ConnectError {
    fn from(refusal: SandboxRefusal) -> Self {
        match refusal {
            SandboxRefusal::Unauthorized => ConnectError::new(
                Code::Unauthenticated,
                "the sandbox's access token (X-Access-Token) is required",
            ),
            SandboxRefusal::BadRequest(Failure(status, message)) => {
                let code = if status == StatusCode::NOT_FOUND {
                    Code::NotFound
                } else {
                    Code::InvalidArgument
                };
                ConnectError::new(code, message)
            }
            SandboxRefusal::Gone(id) => {
                ConnectError::new(Code::Unavailable, format!("The sandbox {id} was not found"))
            }
            SandboxRefusal::Other(Failure(status, message)) => {
                let code = match status.as_u16() {
                    401 => Code::Unauthenticated,
                    403 => Code::PermissionDenied,
                    429 => Code::ResourceExhausted,
                    400..=499 => Code::InvalidArgument,
                    _ => Code::Internal,
                };
                ConnectError::new(code, message)
            }
        }
    }
}

/// The sandbox an in-sandbox request is for, and who acts on it.
struct SandboxCaller {
    principal: Principal,
    record: SessionRecord,
}

impl SandboxCaller {
    fn id(&self) -> SessionId {
        self.record.id
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
}

/// Authenticates an in-sandbox request and finds its sandbox. A refused access token is
/// treated exactly like an unknown sandbox; a refused API key (bearer or `X-API-Key`) is
/// 401, as on every other route.
async fn sandbox_caller(
    state: &ApiState,
    headers: &HeaderMap,
    service: Service,
) -> Result<SandboxCaller, SandboxRefusal> {
    let token = ACCESS_TOKEN_HEADERS
        .iter()
        .find_map(|name| header(headers, name));
    let principal = match token {
        Some(token) => state.engine.authenticate(Some(token)).await.ok(),
        None => match state
            .engine
            .authenticate(crate::auth::presented_key(headers))
            .await
        {
            Ok(principal) => Some(principal),
            Err(EngineError::Unauthorized) => return Err(SandboxRefusal::Unauthorized),
            Err(error) => return Err(SandboxRefusal::Other(error.into())),
        },
    };
    let Some(id_text) = header(headers, SANDBOX_ID_HEADER).filter(|id| !id.is_empty()) else {
        return Err(SandboxRefusal::BadRequest(Failure::bad_request(
            "the E2b-Sandbox-Id header is required: it names the sandbox",
        )));
    };
    if let Some(port) = header(headers, SANDBOX_PORT_HEADER) {
        if port != service.port().to_string() {
            return Err(SandboxRefusal::BadRequest(Failure::new(
                StatusCode::NOT_FOUND,
                format!(
                    "port {port} of a corral sandbox does not serve this path (it is served on port {})",
                    service.port()
                ),
            )));
        }
    }
    let gone = || SandboxRefusal::Gone(id_text.to_owned());
    let principal = principal.ok_or_else(gone)?;
    let id: SessionId = id_text.parse().map_err(|_| gone())?;
    match state.engine.get_session(&principal, id).await {
        Ok(record) if is_live_sandbox(&record) => Ok(SandboxCaller { principal, record }),
        Ok(_) | Err(EngineError::SessionNotFound(_)) => Err(gone()),
        Err(error) => Err(SandboxRefusal::Other(error.into())),
    }
}

/// Whether a session is a live sandbox of this surface.
fn is_live_sandbox(record: &SessionRecord) -> bool {
    !record.state.is_terminal() && record.metadata.contains_key(METADATA_KEY)
}

/// An operation that failed inside the sandbox, or could not be run there.
#[derive(Debug)]
enum OperationError {
    /// The Python raised: its exception name and message.
    Raised { name: String, message: String },
    /// The engine refused or lost the execution.
    Engine(EngineError),
    /// The execution finished without a reply.
    NoReply,
}

impl From<OperationError> for ConnectError {
    fn from(error: OperationError) -> Self {
        match error {
            OperationError::Raised { name, message } => {
                ConnectError::new(in_sandbox::failure_code(&name), message)
            }
            OperationError::Engine(error) => engine_connect_error(error),
            OperationError::NoReply => {
                tracing::error!("an e2b sandbox operation finished without a reply");
                ConnectError::new(Code::Internal, "internal error")
            }
        }
    }
}

impl From<OperationError> for Failure {
    fn from(error: OperationError) -> Self {
        match error {
            OperationError::Raised { name, message } => {
                let status = match in_sandbox::failure_code(&name) {
                    Code::NotFound => StatusCode::NOT_FOUND,
                    Code::AlreadyExists => StatusCode::CONFLICT,
                    Code::PermissionDenied => StatusCode::FORBIDDEN,
                    _ => StatusCode::BAD_REQUEST,
                };
                Failure::new(status, message)
            }
            OperationError::Engine(error) => error.into(),
            OperationError::NoReply => {
                tracing::error!("an e2b sandbox operation finished without a reply");
                Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
        }
    }
}

fn engine_connect_error(error: EngineError) -> ConnectError {
    match error {
        EngineError::SessionNotFound(id) | EngineError::SessionNotRunning { id, .. } => {
            ConnectError::new(Code::Unavailable, format!("The sandbox {id} was not found"))
        }
        EngineError::InvalidInput(detail) => ConnectError::new(Code::InvalidArgument, detail),
        EngineError::QueueFull { .. }
        | EngineError::QuotaExceeded { .. }
        | EngineError::TooManySessions { .. }
        | EngineError::HostMemoryLow { .. } => {
            ConnectError::new(Code::ResourceExhausted, error.to_string())
        }
        EngineError::NotAccepting(_) | EngineError::ShuttingDown => ConnectError::new(
            Code::Unavailable,
            "the sandbox is not accepting work".to_owned(),
        ),
        other => {
            tracing::error!(error = %other, "e2b sandbox operation failed");
            ConnectError::new(Code::Internal, "internal error")
        }
    }
}

/// The reply (or the raised exception) of an operation's execution.
fn operation_outcome(record: ExecutionRecord) -> Result<serde_json::Value, OperationError> {
    if let Some(error) = record.error {
        return Err(OperationError::Raised {
            name: error.ename,
            message: error.evalue,
        });
    }
    record
        .outputs
        .iter()
        .find_map(|item| match item {
            OutputItem::Display { data, .. } => in_sandbox::reply(data).cloned(),
            OutputItem::Stream { .. } => None,
        })
        .ok_or(OperationError::NoReply)
}

/// Runs `operation` in the sandbox's session and returns its reply.
async fn run_operation(
    state: &ApiState,
    principal: &Principal,
    id: SessionId,
    operation: &Operation,
) -> Result<serde_json::Value, OperationError> {
    let record = state
        .engine
        .execute(
            principal,
            id,
            ExecRequest {
                code: in_sandbox::operation_code(operation),
                timeout: None,
                stdin: StdinMode::default(),
                // Not a cell: no execution count, no history, `_` left alone.
                store_history: false,
            },
        )
        .await
        .map_err(OperationError::Engine)?;
    operation_outcome(record)
}
