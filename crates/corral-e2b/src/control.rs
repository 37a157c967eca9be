//! E2B's control-plane models as the SDK's generated client reads and writes them
//! (`NewSandbox`/`NewSandboxV2`, `Sandbox`, `ListedSandbox`, `SandboxDetail`, the timeout
//! and refresh requests, `Error`), the options corral cannot honour, template names, and the
//! `metadata`/`state` filters of `GET /v2/sandboxes`.
//!
//! It does not decide statuses, authenticate or call the engine.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The E2B templates that mean "corral's default runtime" (the SDKs' defaults and the
/// documented base image).
pub const DEFAULT_TEMPLATES: &[&str] = &["base", "code-interpreter-v1", "code-interpreter"];
/// The state of every live corral sandbox.
pub const STATE_RUNNING: &str = "running";
/// The only other state E2B lists.
pub const STATE_PAUSED: &str = "paused";

/// `NewSandbox` (`POST /sandboxes`) and `NewSandboxV2` (`POST /v2/sandboxes`): the same
/// fields, v2 without `secure`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewSandbox {
    #[serde(rename = "templateID")]
    pub template_id: String,
    /// Seconds until the sandbox is closed.
    pub timeout: Option<u64>,
    pub auto_pause: Option<bool>,
    pub auto_pause_memory: Option<Value>,
    pub auto_resume: Option<Value>,
    pub secure: Option<bool>,
    #[serde(rename = "allow_internet_access")]
    pub allow_internet_access: Option<bool>,
    pub network: Option<Value>,
    pub metadata: Option<BTreeMap<String, String>>,
    pub env_vars: Option<BTreeMap<String, String>>,
    pub mcp: Option<Value>,
    pub iam: Option<Value>,
    pub volume_mounts: Option<Value>,
}

/// What a new sandbox asks of the network, in E2B's words: `allow_internet_access` and
/// `network.allowOut` / `network.denyOut` (allowOut wins over denyOut, as in E2B).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetworkAsk {
    /// Loopback only (`allow_internet_access: false`, or nothing asked).
    None,
    /// `allow_internet_access: true`: whatever the operator allows.
    OperatorMaximum,
    /// `allowOut`: these destinations (CIDRs, addresses, domain names) only.
    Allow(Vec<String>),
}

/// Whether a JSON option is "not asked for": absent, null, false, `{}` or `[]`.
fn is_unset(value: &Option<Value>) -> bool {
    match value {
        None | Some(Value::Null) | Some(Value::Bool(false)) => true,
        Some(Value::Object(map)) => map.is_empty(),
        Some(Value::Array(items)) => items.is_empty(),
        Some(_) => false,
    }
}

impl NewSandbox {
    /// The network the sandbox asks for; `Err` names what corral's allow-list cannot say
    /// (a `denyOut` other than everything, fields corral does not know).
    pub fn network_ask(&self) -> Result<NetworkAsk, String> {
        let mut allow_out: Option<Vec<String>> = None;
        let mut deny_all = false;
        if let Some(Value::Object(network)) = &self.network {
            for (key, value) in network {
                let list = || -> Result<Vec<String>, String> {
                    match value {
                        Value::Null => Ok(Vec::new()),
                        Value::Array(items) => items
                            .iter()
                            .map(|item| {
                                item.as_str().map(str::to_owned).ok_or_else(|| {
                                    format!("network.{key} must be a list of strings")
                                })
                            })
                            .collect(),
                        _ => Err(format!("network.{key} must be a list of strings")),
                    }
                };
                match key.as_str() {
                    "allowOut" => allow_out = Some(list()?),
                    "denyOut" => {
                        for entry in list()? {
                            if entry == "0.0.0.0/0" {
                                deny_all = true;
                            } else {
                                return Err(format!(
                                    "network.denyOut can only be [\"0.0.0.0/0\"] (corral's policy is an allow-list; list what to allow in allowOut), not {entry:?}"
                                ));
                            }
                        }
                    }
                    _ if is_unset(&Some(value.clone())) => {}
                    other => return Err(format!("network.{other} is not supported")),
                }
            }
        } else if !is_unset(&self.network) {
            return Err("network must be an object".to_owned());
        }
        Ok(match allow_out {
            Some(entries) if !entries.is_empty() => NetworkAsk::Allow(entries),
            _ if deny_all => NetworkAsk::None,
            _ if self.allow_internet_access == Some(true) => NetworkAsk::OperatorMaximum,
            _ => NetworkAsk::None,
        })
    }

    /// The first option asked for that corral cannot honour, as a sentence for the client.
    pub fn unsupported_option(&self) -> Option<&'static str> {
        if self.auto_pause == Some(true) || !is_unset(&self.auto_resume) {
            return Some("corral cannot pause or resume sandboxes: autoPause and autoResume are not supported");
        }
        if !is_unset(&self.mcp) {
            return Some("corral sandboxes do not run MCP servers: mcp is not supported");
        }
        if !is_unset(&self.iam) {
            return Some("corral has no workload identity: iam is not supported");
        }
        if !is_unset(&self.volume_mounts) {
            return Some("corral has no volumes: volumeMounts is not supported");
        }
        None
    }

    /// The corral runtime for the template: `None` for the default one.
    pub fn runtime(&self) -> Option<String> {
        runtime_for_template(&self.template_id)
    }
}

/// The corral runtime an E2B template id names: `None` (the default runtime) for E2B's
/// default templates, otherwise the id itself (the engine refuses unknown runtimes).
pub fn runtime_for_template(template: &str) -> Option<String> {
    let name = template.split(':').next().unwrap_or(template);
    (!DEFAULT_TEMPLATES.contains(&name)).then(|| template.to_owned())
}

/// `Sandbox`: the reply of create and connect.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sandbox {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "clientID")]
    pub client_id: String,
    pub envd_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envd_access_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic_access_token: Option<String>,
    /// Always null: the SDK then uses `E2B_SANDBOX_URL` (or its own domain).
    pub domain: Option<String>,
}

/// `ListedSandbox` (list items) and, with the extra fields, `SandboxDetail` (`GET
/// /sandboxes/{id}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListedSandbox {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "clientID")]
    pub client_id: String,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339: when the sandbox closes if nothing happens before.
    pub end_at: String,
    #[serde(rename = "cpuCount")]
    pub cpu_count: u32,
    #[serde(rename = "memoryMB")]
    pub memory_mb: u64,
    #[serde(rename = "diskSizeMB")]
    pub disk_size_mb: u64,
    pub metadata: BTreeMap<String, String>,
    pub state: String,
    pub envd_version: String,
}

/// `SandboxDetail`: a listed sandbox plus `domain` and `allowInternetAccess`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxDetail {
    #[serde(flatten)]
    pub listed: ListedSandbox,
    pub domain: Option<String>,
    pub allow_internet_access: bool,
}

/// `POST /sandboxes/{id}/timeout`.
#[derive(Clone, Debug, Deserialize)]
pub struct TimeoutRequest {
    /// Seconds from now.
    pub timeout: u64,
}

/// `POST /sandboxes/{id}/refreshes` (the body is optional).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RefreshRequest {
    /// Seconds from now.
    pub duration: Option<u64>,
}

/// `ConnectSandbox`/`ConnectSandboxV2`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ConnectRequest {
    /// Seconds from now.
    pub timeout: Option<u64>,
    /// What a paused sandbox should resume with; meaningless for a live one.
    pub memory: Option<Value>,
}

/// E2B's `Error`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Error {
    pub code: u16,
    pub message: String,
}

/// Why a list filter could not be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("metadata filter {0:?} is not key=value pairs joined by '&'")]
    Metadata(String),
    #[error("unknown sandbox state {0:?} (known: running, paused)")]
    State(String),
}

/// The `metadata` query parameter: `k=v` pairs joined by `&`, each key and value
/// percent-encoded (the SDK quotes them, then the whole string is encoded once more as the
/// parameter's value, which the HTTP layer has already decoded).
pub fn parse_metadata_filter(text: &str) -> Result<BTreeMap<String, String>, FilterError> {
    let mut filter = BTreeMap::new();
    for pair in text.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| FilterError::Metadata(text.to_owned()))?;
        let key = percent_decode(key).ok_or_else(|| FilterError::Metadata(text.to_owned()))?;
        let value = percent_decode(value).ok_or_else(|| FilterError::Metadata(text.to_owned()))?;
        filter.insert(key, value);
    }
    Ok(filter)
}

/// Whether a sandbox's metadata holds every pair of `filter`.
pub fn metadata_matches(
    metadata: &BTreeMap<String, String>,
    filter: &BTreeMap<String, String>,
) -> bool {
    filter
        .iter()
        .all(|(key, value)| metadata.get(key) == Some(value))
}

/// The `state` query parameter (comma-separated, possibly repeated): whether running
/// sandboxes are asked for (corral has no paused ones). No parameter means every state.
pub fn wants_running<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<bool, FilterError> {
    let mut any = false;
    let mut running = false;
    for state in values
        .into_iter()
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|state| !state.is_empty())
    {
        any = true;
        match state {
            STATE_RUNNING => running = true,
            STATE_PAUSED => {}
            other => return Err(FilterError::State(other.to_owned())),
        }
    }
    Ok(running || !any)
}

/// `%XX` and `+` decoding of one component; `None` when it is not valid UTF-8 or a `%` is
/// not followed by two hex digits.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' => {
                let hex = text.get(index + 1..index + 3)?;
                decoded.push(u8::from_str_radix(hex, 16).ok()?);
                index += 3;
            }
            b'+' => {
                decoded.push(b' ');
                index += 1;
            }
            byte => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8(decoded).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sdk_s_create_body_is_read() {
        let body = r#"{"templateID":"code-interpreter-v1","metadata":{"a":"1"},"timeout":300,"envVars":{"X":"y"},"autoPause":false}"#;
        let new: NewSandbox = serde_json::from_str(body).expect("parse");
        assert_eq!(new.timeout, Some(300));
        assert_eq!(new.runtime(), None);
        assert_eq!(new.unsupported_option(), None);
        assert_eq!(new.env_vars.expect("env")["X"], "y");
        let networked: NewSandbox =
            serde_json::from_str(r#"{"templateID":"base","allow_internet_access":true}"#)
                .expect("parse");
        assert_eq!(networked.network_ask(), Ok(NetworkAsk::OperatorMaximum));
        let no_network: NewSandbox =
            serde_json::from_str(r#"{"templateID":"base","allow_internet_access":false}"#)
                .expect("parse");
        assert_eq!(no_network.unsupported_option(), None);
        assert_eq!(no_network.network_ask(), Ok(NetworkAsk::None));
        let ask = |network: &str| {
            serde_json::from_str::<NewSandbox>(&format!(
                r#"{{"templateID":"base","network":{network}}}"#
            ))
            .expect("parse")
            .network_ask()
        };
        assert_eq!(
            ask(r#"{"allowOut":["pypi.org"],"denyOut":["0.0.0.0/0"]}"#),
            Ok(NetworkAsk::Allow(vec!["pypi.org".into()]))
        );
        assert_eq!(ask(r#"{"denyOut":["0.0.0.0/0"]}"#), Ok(NetworkAsk::None));
        assert!(ask(r#"{"denyOut":["10.0.0.0/8"]}"#)
            .unwrap_err()
            .contains("allow-list"));
        assert!(ask(r#"{"allowOut":[1]}"#).is_err());
        assert!(ask(r#"{"maskRequestHost":"x"}"#).is_err());
        assert_eq!(runtime_for_template("python3"), Some("python3".to_owned()));
        assert_eq!(runtime_for_template("base:latest"), None);
    }

    #[test]
    fn replies_have_the_sdk_s_field_names() {
        let sandbox = Sandbox {
            template_id: "base".into(),
            sandbox_id: "s".into(),
            client_id: "c".into(),
            envd_version: crate::ENVD_VERSION.into(),
            envd_access_token: Some("t".into()),
            traffic_access_token: None,
            domain: None,
        };
        assert_eq!(
            serde_json::to_value(&sandbox).expect("json"),
            serde_json::json!({"templateID": "base", "sandboxID": "s", "clientID": "c",
                "envdVersion": "0.5.7", "envdAccessToken": "t", "domain": null})
        );
    }

    #[test]
    fn filters() {
        let filter = parse_metadata_filter("user%20name=a%26b&k=v").expect("filter");
        assert_eq!(filter["user name"], "a&b");
        assert_eq!(filter["k"], "v");
        assert!(parse_metadata_filter("novalue").is_err());
        assert!(parse_metadata_filter("k=%zz").is_err());
        let metadata = BTreeMap::from([("k".to_owned(), "v".to_owned())]);
        assert!(metadata_matches(
            &metadata,
            &parse_metadata_filter("k=v").expect("f")
        ));
        assert!(!metadata_matches(&metadata, &filter));
        assert_eq!(wants_running([]), Ok(true));
        assert_eq!(wants_running(["running,paused"]), Ok(true));
        assert_eq!(wants_running(["paused"]), Ok(false));
        assert!(wants_running(["sleeping"]).is_err());
    }
}
