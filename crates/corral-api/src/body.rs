//! Reading request bodies: size limits, content types and JSON parsing, with rejections that
//! say exactly what was wrong.
//!
//! This module only turns bytes into values and classifies failures ([`BodyError`]); each
//! surface renders a [`BodyError`] in its own error shape.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use crate::json_errors;
use crate::problem::Problem;

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the request body could not be read")]
    Unreadable,
    #[error("the content type must be application/json, not {0}")]
    UnsupportedMediaType(String),
    #[error("the request body is not valid JSON: {0}")]
    Syntax(String),
    #[error("{0}")]
    Data(String),
}

/// The largest request body any route accepts (code, limits, metadata and JSON overhead).
pub fn max_body_bytes(max_code_bytes: usize) -> usize {
    max_code_bytes.saturating_mul(2).saturating_add(64 * 1024)
}

/// Reads the raw body, honouring the router's body limit.
pub async fn read_bytes<S: Send + Sync>(
    request: Request,
    state: &S,
    limit: usize,
) -> Result<Bytes, BodyError> {
    match Bytes::from_request(request, state).await {
        Ok(bytes) => Ok(bytes),
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Err(BodyError::TooLarge { limit })
        }
        Err(_) => Err(BodyError::Unreadable),
    }
}

/// Whether a request's content type permits a JSON body: absent, `application/json` or any
/// `+json` type.
pub fn content_type_is_json(request: &Request) -> Result<(), BodyError> {
    let Some(value) = request.headers().get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = value.to_str().unwrap_or("");
    let essence = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json" || essence.ends_with("+json") {
        Ok(())
    } else {
        Err(BodyError::UnsupportedMediaType(text.to_owned()))
    }
}

/// Parses JSON into `T`; an empty body is read as `{}`.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, BodyError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                BodyError::Data(json_errors::describe(&path, &inner.to_string()))
            }
            _ => BodyError::Syntax(inner.to_string()),
        }
    })?;
    deserializer
        .end()
        .map_err(|error| BodyError::Syntax(error.to_string()))?;
    Ok(value)
}

/// The body limit the native router is configured with, shared by the extractor.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit(pub usize);

/// A native JSON body: strict types, errors as problem+json (400 malformed, 413 too large,
/// 415 wrong content type, 422 well-formed but invalid).
pub struct NativeJson<T>(pub T);

impl<S, T> FromRequest<S> for NativeJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = request
            .extensions()
            .get::<BodyLimit>()
            .map(|limit| limit.0)
            .unwrap_or(0);
        content_type_is_json(&request).map_err(Problem::from)?;
        let bytes = read_bytes(request, state, limit).await?;
        Ok(NativeJson(parse_json(&bytes)?))
    }
}

impl From<BodyError> for Problem {
    fn from(error: BodyError) -> Self {
        let (status, code) = match error {
            BodyError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            BodyError::Unreadable => (StatusCode::BAD_REQUEST, "body_unreadable"),
            BodyError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            BodyError::Syntax(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
            BodyError::Data(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        };
        Problem::new(status, code, error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        #[allow(dead_code)]
        code: String,
    }

    #[test]
    fn classifies_syntax_and_data_errors() {
        assert!(matches!(
            parse_json::<Sample>(b"{"),
            Err(BodyError::Syntax(_))
        ));
        assert!(matches!(
            parse_json::<Sample>(b"{\"code\": 1}"),
            Err(BodyError::Data(_))
        ));
        assert!(matches!(
            parse_json::<Sample>(b"  "),
            Err(BodyError::Data(_))
        ));
        assert!(matches!(
            parse_json::<Sample>(b"{\"code\": \"1\", \"x\": 2}"),
            Err(BodyError::Data(message)) if message.contains("unknown field")
        ));
        assert!(parse_json::<Sample>(b"{\"code\": \"1\"}").is_ok());
    }
}
