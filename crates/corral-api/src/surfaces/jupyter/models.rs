//! The JSON bodies of the Jupyter surface, field for field as jupyter_server 2.x writes them
//! (`kernelmanager.kernel_model`, `sessionmanager.row_to_model`, the kernelspecs and status
//! handlers, `APIHandler.write_error`), and the conversion of corral session records into
//! kernel models.
//!
//! Request bodies are not modelled here: the handlers read them as loose JSON, because
//! jupyter_server accepts partial and legacy shapes and answers its own messages for them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use corral_core::{SessionRecord, SessionState};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A time as jupyter_server's clients parse it: ISO 8601 UTC with microseconds and a `Z`
/// (the gateway client reads `%Y-%m-%dT%H:%M:%S.%fZ`, so the fraction is always written).
pub fn jupyter_timestamp(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// `Kernel`: one corral session seen as a kernel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct KernelModel {
    /// The corral session id (a UUID).
    pub id: String,
    /// The kernelspec: the session's runtime (`python3`).
    pub name: String,
    /// When the session last ran code or was refreshed (ISO 8601 UTC, `Z`).
    pub last_activity: String,
    /// `starting`, `idle` or `busy`.
    pub execution_state: String,
    /// Open websocket connections to the kernel.
    pub connections: u32,
}

impl KernelModel {
    /// The kernel model of a session record; `connections` is counted by whoever serves the
    /// kernel's websockets.
    pub fn of(record: &SessionRecord, connections: u32) -> KernelModel {
        KernelModel {
            id: record.id.to_string(),
            name: record.runtime.clone(),
            last_activity: jupyter_timestamp(record.last_activity_at),
            execution_state: execution_state(record.state).to_owned(),
            connections,
        }
    }
}

/// Jupyter's `execution_state` for a corral session state (an ended session is `dead`, as
/// jupyter_client calls a kernel whose process is gone).
fn execution_state(state: SessionState) -> &'static str {
    match state {
        SessionState::Starting => "starting",
        SessionState::Idle => "idle",
        SessionState::Busy => "busy",
        SessionState::Closed | SessionState::Dead => "dead",
    }
}

/// `Session`: a path (a notebook, console or file) bound to a kernel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SessionModel {
    /// The Jupyter session id (a UUID of its own, not the kernel's).
    pub id: String,
    pub path: String,
    /// `null` when none was given.
    pub name: Option<String>,
    /// `notebook`, `console`, `file`, ...
    #[serde(rename = "type")]
    pub session_type: String,
    pub kernel: KernelModel,
    /// Only when `type` is `notebook` (the deprecated notebook API).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notebook: Option<NotebookModel>,
}

/// The deprecated `notebook` member of a notebook session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NotebookModel {
    pub path: String,
    pub name: Option<String>,
}

/// `GET /api/kernelspecs`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct KernelSpecs {
    /// The kernelspec a kernel gets when none is named.
    pub default: String,
    pub kernelspecs: BTreeMap<String, KernelSpecModel>,
}

/// One kernelspec as the REST API shows it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct KernelSpecModel {
    pub name: String,
    pub spec: KernelSpec,
    /// Resource files (logos); corral serves none.
    #[schema(value_type = Object)]
    pub resources: serde_json::Map<String, serde_json::Value>,
}

/// The `kernel.json` part of a kernelspec.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct KernelSpec {
    /// Empty: corral starts its interpreters itself, not from a command line.
    pub argv: Vec<String>,
    pub display_name: String,
    pub language: String,
    /// `signal`: an interrupt is SIGINT to the interpreter.
    pub interrupt_mode: String,
    pub env: BTreeMap<String, String>,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// `GET /api/status`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ServerStatus {
    pub connections: u32,
    pub kernels: usize,
    pub last_activity: String,
    pub started: String,
}

/// `GET /api`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ServerVersion {
    /// The jupyter_server version whose API this surface answers.
    pub version: String,
}

/// Every error but a kernel that cannot be had (`APIHandler.write_error`).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct JupyterError {
    pub message: String,
    pub reason: Option<String>,
}

/// 501: the kernel a session asked for is not available or could not be started.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct KernelUnavailable {
    pub message: String,
    pub short_message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn timestamps_always_have_microseconds_and_z() {
        let whole = Utc
            .with_ymd_and_hms(2024, 1, 2, 3, 4, 5)
            .single()
            .expect("time");
        assert_eq!(jupyter_timestamp(whole), "2024-01-02T03:04:05.000000Z");
        let fraction = whole + chrono::Duration::nanoseconds(123_456_789);
        assert_eq!(jupyter_timestamp(fraction), "2024-01-02T03:04:05.123456Z");
    }
}
