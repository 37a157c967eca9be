//! The agent sessions API's JSON shapes (seed 004, schema inferred: the seed names the models
//! but not their fields) and how a corral session record and its metadata become them.
//!
//! What this API keeps about a session lives in the session's metadata under `agent`:
//! `identifier` (the claim that makes it "the session called X"), `key_id` (the id of the
//! session key minted with it), and the client's `description` and `metadata`. The client's
//! `name` is the corral session's name. This module validates and converts; it calls no
//! engine function and decides no access.

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use corral_core::SessionRecord;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::errors::AgentError;

type JsonObject = serde_json::Map<String, serde_json::Value>;

/// Metadata key under which this API keeps its fields.
pub const METADATA_KEY: &str = "agent";
/// The field of [`METADATA_KEY`] that holds the identifier (the session's claim).
pub const IDENTIFIER_FIELD: &str = "identifier";
/// The field of [`METADATA_KEY`] that holds the minted key's id.
pub const KEY_ID_FIELD: &str = "key_id";
/// Longest identifier, in characters.
pub const MAX_IDENTIFIER_CHARS: usize = 128;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1024;
/// Largest client `metadata` object, serialised. With the description, identifier and key id
/// it stays well inside the engine's 16 KiB metadata limit, so recording the key id after
/// creation never fails for size.
pub const MAX_CLIENT_METADATA_BYTES: usize = 8 * 1024;

/// `Session` as a `PUT` body: every field optional, `{}` or no body at all is fine, unknown
/// fields (such as the read-only ones of a returned session) are ignored. Used only when the
/// call creates the session.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct AgentSessionRequest {
    /// A label for people; becomes the corral session's name (at most 256 characters).
    #[serde(default)]
    pub name: Option<String>,
    /// What the agent is for (at most 1024 characters).
    #[serde(default)]
    pub description: Option<String>,
    /// Free-form JSON object kept with the session and returned (at most 8 KiB serialised).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<JsonObject>,
}

impl AgentSessionRequest {
    /// Checks the limits this API sets (the engine checks the name).
    pub fn validate(&self) -> Result<(), AgentError> {
        if let Some(description) = &self.description {
            if description.chars().count() > MAX_DESCRIPTION_CHARS {
                return Err(AgentError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_body",
                    format!("description is longer than {MAX_DESCRIPTION_CHARS} characters"),
                ));
            }
        }
        if let Some(metadata) = &self.metadata {
            let size = serde_json::to_vec(metadata)
                .map(|bytes| bytes.len())
                .unwrap_or(usize::MAX);
            if size > MAX_CLIENT_METADATA_BYTES {
                return Err(AgentError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_body",
                    format!(
                        "metadata is {size} bytes serialised; the limit is {MAX_CLIENT_METADATA_BYTES}"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The corral metadata of a new session with this identifier (no key id yet).
    pub fn session_metadata(&self, identifier: &str) -> JsonObject {
        let mut fields = JsonObject::new();
        fields.insert(IDENTIFIER_FIELD.to_owned(), identifier.into());
        if let Some(description) = &self.description {
            fields.insert("description".to_owned(), description.as_str().into());
        }
        fields.insert(
            "metadata".to_owned(),
            serde_json::Value::Object(self.metadata.clone().unwrap_or_default()),
        );
        let mut metadata = JsonObject::new();
        metadata.insert(METADATA_KEY.to_owned(), serde_json::Value::Object(fields));
        metadata
    }
}

/// `metadata` with `key_id` recorded under [`METADATA_KEY`].
pub fn with_key_id(metadata: &JsonObject, key_id: &str) -> JsonObject {
    let mut metadata = metadata.clone();
    if let Some(serde_json::Value::Object(fields)) = metadata.get_mut(METADATA_KEY) {
        fields.insert(KEY_ID_FIELD.to_owned(), key_id.into());
    }
    metadata
}

/// The id of the key minted with the session, if recorded.
pub fn key_id(record: &SessionRecord) -> Option<&str> {
    record
        .metadata
        .get(METADATA_KEY)?
        .get(KEY_ID_FIELD)?
        .as_str()
}

/// Whether `identifier` is one this API accepts: 1 to 128 characters, no control characters
/// and no `/` (it is one path segment). Invalid ones are 422 `invalid_identifier`.
pub fn validate_identifier(identifier: &str) -> Result<(), AgentError> {
    let count = identifier.chars().count();
    let problem = if count == 0 {
        Some("the identifier is empty".to_owned())
    } else if count > MAX_IDENTIFIER_CHARS {
        Some(format!(
            "the identifier is longer than {MAX_IDENTIFIER_CHARS} characters"
        ))
    } else if identifier.chars().any(char::is_control) {
        Some("the identifier contains control characters".to_owned())
    } else if identifier.contains('/') {
        Some("the identifier contains '/'".to_owned())
    } else {
        None
    };
    match problem {
        Some(message) => Err(AgentError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_identifier",
            message,
        )),
        None => Ok(()),
    }
}

/// `Session` as returned.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AgentSession {
    /// The caller-chosen unique name of the session (unique among the tenant's live sessions).
    pub identifier: String,
    /// The corral session id: the same session is `/v1/sessions/{agent_id}`.
    pub agent_id: String,
    /// `starting`, `idle`, `busy`, `closed` or `dead`.
    pub state: String,
    pub created_at: DateTime<Utc>,
    /// The last execution or refresh.
    pub last_activity_at: DateTime<Utc>,
    /// When the session will be closed if nothing happens (the earlier of its idle and max
    /// TTL deadlines); `null` once it has ended.
    pub expires_at: Option<DateTime<Utc>>,
    /// The client's `name`, when one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The client's `description`, when one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The client's metadata (`{}` when none was given).
    #[schema(value_type = Object)]
    pub metadata: JsonObject,
    /// The session-scoped API key minted with the session: only in the reply that created
    /// it, never again. It reaches this one session on the native API (`/v1/sessions/{id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
}

impl AgentSession {
    /// The view of `record`, if it is an agent session.
    pub fn of(record: &SessionRecord) -> Option<AgentSession> {
        let fields = record.metadata.get(METADATA_KEY)?;
        let identifier = fields.get(IDENTIFIER_FIELD)?.as_str()?.to_owned();
        Some(AgentSession {
            identifier,
            agent_id: record.id.to_string(),
            state: record.state.as_str().to_owned(),
            created_at: record.created_at,
            last_activity_at: record.last_activity_at,
            expires_at: record.expires_at(),
            name: record.name.clone(),
            description: fields
                .get("description")
                .and_then(|value| value.as_str())
                .map(str::to_owned),
            metadata: fields
                .get("metadata")
                .and_then(|value| value.as_object())
                .cloned()
                .unwrap_or_default(),
            api_key: None,
        })
    }
}

/// `SessionContainer`: one session.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionContainer {
    pub session: AgentSession,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_one_path_segment_of_printable_characters() {
        for good in ["a", "agent|1", "with space", "ünï", &"x".repeat(128)] {
            assert!(validate_identifier(good).is_ok(), "{good}");
        }
        for bad in ["", "a/b", "tab\there", "nl\n", &"x".repeat(129)] {
            assert!(validate_identifier(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn client_fields_are_kept_under_the_agent_key() {
        let request: AgentSessionRequest =
            serde_json::from_str(r#"{"description": "d", "metadata": {"k": 1}, "state": "x"}"#)
                .expect("parse");
        let metadata = with_key_id(&request.session_metadata("id-1"), "abc");
        assert_eq!(
            serde_json::Value::Object(metadata),
            serde_json::json!({"agent": {"identifier": "id-1", "description": "d",
                "metadata": {"k": 1}, "key_id": "abc"}})
        );
    }
}
