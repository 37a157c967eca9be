//! Reading Jupyter request bodies as jupyter_server does (`APIHandler.get_json_body`): an
//! empty body or `null` is "no JSON data", anything unparsable is 400 `Invalid JSON in body of
//! request`; fields are then read one by one, so partial and legacy bodies work.
//!
//! Where jupyter_server would crash on a wrong type (a 500), this answers a 400 naming the
//! field. It knows nothing about what the fields mean.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use serde_json::{Map, Value};

use super::failure::Failure;

/// The body as JSON: `None` when empty or `null`.
pub fn json_body(body: Result<Bytes, BytesRejection>) -> Result<Option<Value>, Failure> {
    let bytes = body.map_err(Failure::from_body)?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Null) => Ok(None),
        Ok(value) => Ok(Some(value)),
        Err(_) => Err(Failure::bad_request("Invalid JSON in body of request")),
    }
}

/// A body that must be a JSON object.
pub fn json_object(value: Value) -> Result<Map<String, Value>, Failure> {
    match value {
        Value::Object(object) => Ok(object),
        _ => Err(Failure::bad_request(
            "The request body must be a JSON object",
        )),
    }
}

/// `object[field]` as a string; missing and `null` are `None`.
pub fn optional_string(
    object: &Map<String, Value>,
    field: &str,
) -> Result<Option<String>, Failure> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(wrong_type(field, "a string")),
    }
}

/// `object[field]` as an object; missing and `null` are `None`.
pub fn optional_object<'a>(
    object: &'a Map<String, Value>,
    field: &str,
) -> Result<Option<&'a Map<String, Value>>, Failure> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(inner)) => Ok(Some(inner)),
        Some(_) => Err(wrong_type(field, "an object")),
    }
}

/// A required string field: missing is jupyter_server's `Missing field in JSON data: <field>`.
pub fn required_string(object: &Map<String, Value>, field: &str) -> Result<String, Failure> {
    match object.get(field) {
        None => Err(Failure::bad_request(format!(
            "Missing field in JSON data: {field}"
        ))),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(_) => Err(wrong_type(field, "a string")),
    }
}

fn wrong_type(field: &str, expected: &str) -> Failure {
    Failure::bad_request(format!("Invalid value for {field}: expected {expected}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_null_bodies_are_no_data() {
        assert!(matches!(json_body(Ok(Bytes::from_static(b""))), Ok(None)));
        assert!(matches!(
            json_body(Ok(Bytes::from_static(b" \n"))),
            Ok(None)
        ));
        assert!(matches!(
            json_body(Ok(Bytes::from_static(b"null"))),
            Ok(None)
        ));
        assert!(matches!(
            json_body(Ok(Bytes::from_static(b"{}"))),
            Ok(Some(_))
        ));
        assert!(json_body(Ok(Bytes::from_static(b"{nope"))).is_err());
    }

    #[test]
    fn fields_are_typed() {
        let object = json_object(serde_json::json!({"a": "x", "b": 5, "c": null})).expect("object");
        assert_eq!(
            optional_string(&object, "a").ok(),
            Some(Some("x".to_owned()))
        );
        assert!(optional_string(&object, "b").is_err());
        assert_eq!(optional_string(&object, "c").ok(), Some(None));
        assert!(required_string(&object, "c").is_err());
        assert!(required_string(&object, "missing").is_err());
        assert!(optional_object(&object, "b").is_err());
        assert!(json_object(serde_json::json!([])).is_err());
    }
}
