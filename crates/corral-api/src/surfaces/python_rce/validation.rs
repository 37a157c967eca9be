//! Request validation with FastAPI/pydantic v2 error items, so python_rce clients see the
//! same 422 bodies the original server sent.
//!
//! Only the checks this surface needs (required string fields of a JSON object); extra fields
//! are ignored, as pydantic does by default.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::RceError;

/// One item of FastAPI's `detail` list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ValidationError {
    /// Where: `["body", "<field>"]` (strings and list indexes: any JSON value in the schema).
    pub loc: Vec<Value>,
    pub msg: String,
    #[serde(rename = "type")]
    pub error_type: String,
    #[serde(default)]
    /// The offending input, any JSON value (`null` when it is missing).
    pub input: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctx: Option<Value>,
}

fn location(path: &[&str]) -> Vec<Value> {
    path.iter()
        .map(|part| Value::String((*part).to_owned()))
        .collect()
}

impl ValidationError {
    pub fn missing(path: &[&str], input: Value) -> Self {
        ValidationError {
            loc: location(path),
            msg: "Field required".to_owned(),
            error_type: "missing".to_owned(),
            input,
            ctx: None,
        }
    }

    pub fn json_invalid(error: &serde_json::Error) -> Self {
        ValidationError {
            loc: vec![
                Value::from("body"),
                Value::from(error.column().saturating_sub(1)),
            ],
            msg: "JSON decode error".to_owned(),
            error_type: "json_invalid".to_owned(),
            input: Value::Object(Default::default()),
            ctx: Some(serde_json::json!({ "error": error.to_string() })),
        }
    }

    pub fn value_error(path: &[&str], message: &str) -> Self {
        ValidationError {
            loc: location(path),
            msg: format!("Value error, {message}"),
            error_type: "value_error".to_owned(),
            input: Value::Null,
            ctx: Some(serde_json::json!({ "error": message })),
        }
    }
}

/// Collects every problem with a body before answering, as pydantic does.
pub struct Validator<'a> {
    body: &'a Value,
    errors: Vec<ValidationError>,
}

impl<'a> Validator<'a> {
    pub fn new(body: &'a Value) -> Self {
        let mut errors = Vec::new();
        if !body.is_object() {
            errors.push(ValidationError {
                loc: location(&["body"]),
                msg: "Input should be a valid dictionary or object to extract fields from"
                    .to_owned(),
                error_type: "model_attributes_type".to_owned(),
                input: body.clone(),
                ctx: None,
            });
        }
        Validator { body, errors }
    }

    /// A required string field.
    pub fn string(&mut self, field: &str) -> Option<String> {
        let object = self.body.as_object()?;
        match object.get(field) {
            Some(Value::String(text)) => Some(text.clone()),
            Some(other) => {
                self.errors.push(ValidationError {
                    loc: location(&["body", field]),
                    msg: "Input should be a valid string".to_owned(),
                    error_type: "string_type".to_owned(),
                    input: other.clone(),
                    ctx: None,
                });
                None
            }
            None => {
                self.errors.push(ValidationError::missing(
                    &["body", field],
                    self.body.clone(),
                ));
                None
            }
        }
    }

    pub fn finish(self) -> Result<(), RceError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(RceError::Validation(self.errors))
        }
    }
}
