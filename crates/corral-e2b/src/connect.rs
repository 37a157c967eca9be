//! The Connect protocol as the SDK's envd clients speak it (JSON codec, no compression):
//! error codes and their HTTP statuses, the unary error body, and the streaming envelope
//! (1 flag byte + 4-byte big-endian length + message; flag `0x02` ends the stream with a
//! JSON trailer that may carry the error).
//!
//! It does not route, read bodies from sockets or know any service's messages (`envd`).

use serde::Serialize;

/// Flag of an envelope that ends a stream (its message is the JSON trailer).
pub const END_STREAM_FLAG: u8 = 0x02;
/// Flag of a compressed envelope; the SDK never compresses and corral does not decompress.
pub const COMPRESSED_FLAG: u8 = 0x01;
/// The header a Connect client sends its deadline in, in milliseconds.
pub const TIMEOUT_HEADER: &str = "connect-timeout-ms";
/// Unary JSON requests and replies.
pub const UNARY_JSON: &str = "application/json";
/// Streaming JSON requests and replies.
pub const STREAM_JSON: &str = "application/connect+json";

/// Connect's error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    Canceled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
}

impl Code {
    /// The code as it is written in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Canceled => "canceled",
            Code::Unknown => "unknown",
            Code::InvalidArgument => "invalid_argument",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::Aborted => "aborted",
            Code::OutOfRange => "out_of_range",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::DataLoss => "data_loss",
            Code::Unauthenticated => "unauthenticated",
        }
    }

    /// The HTTP status of a unary reply carrying this error (the Connect specification's
    /// table).
    pub fn http_status(self) -> u16 {
        match self {
            Code::Canceled => 499,
            Code::Unknown | Code::Internal | Code::DataLoss => 500,
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
            Code::DeadlineExceeded => 504,
            Code::NotFound => 404,
            Code::AlreadyExists | Code::Aborted => 409,
            Code::PermissionDenied => 403,
            Code::ResourceExhausted => 429,
            Code::Unimplemented => 501,
            Code::Unavailable => 503,
            Code::Unauthenticated => 401,
        }
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A Connect error: the unary reply body, and the `error` of a stream's trailer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ConnectError {
    pub code: Code,
    pub message: String,
}

impl ConnectError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ConnectError {
            code,
            message: message.into(),
        }
    }
}

/// How a request's body is encoded, from its content type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// `application/json`: one JSON message, a unary call.
    UnaryJson,
    /// `application/connect+json`: enveloped JSON messages, a streaming call.
    StreamJson,
    /// Binary protobuf or anything else.
    Unsupported,
}

impl Encoding {
    pub fn of(content_type: Option<&str>) -> Encoding {
        let essence = content_type
            .and_then(|value| value.split(';').next())
            .map(|value| value.trim().to_ascii_lowercase());
        match essence.as_deref() {
            Some(UNARY_JSON) => Encoding::UnaryJson,
            Some(STREAM_JSON) => Encoding::StreamJson,
            _ => Encoding::Unsupported,
        }
    }
}

/// Why an enveloped request body could not be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("the request body ends inside an envelope")]
    Truncated,
    #[error("compressed messages are not supported")]
    Compressed,
    #[error("the request has no message")]
    Empty,
}

/// The first message of an enveloped body (a server-streaming call has exactly one).
pub fn first_message(body: &[u8]) -> Result<&[u8], FramingError> {
    if body.is_empty() {
        return Err(FramingError::Empty);
    }
    let header = body.get(..5).ok_or(FramingError::Truncated)?;
    if header[0] & COMPRESSED_FLAG != 0 {
        return Err(FramingError::Compressed);
    }
    let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    body.get(5..5 + length).ok_or(FramingError::Truncated)
}

/// One envelope around `payload`.
pub fn envelope(flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 5);
    frame.push(flags);
    let length = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// A message envelope holding `message` as JSON.
pub fn message_frame(message: &impl Serialize) -> Vec<u8> {
    let payload = serde_json::to_vec(message).unwrap_or_else(|_| b"{}".to_vec());
    envelope(0, &payload)
}

/// The envelope that ends a stream: `{}` or `{"error": {...}}`.
pub fn end_stream_frame(error: Option<&ConnectError>) -> Vec<u8> {
    let trailer = match error {
        Some(error) => serde_json::json!({ "error": error }),
        None => serde_json::json!({}),
    };
    let payload = serde_json::to_vec(&trailer).unwrap_or_else(|_| b"{}".to_vec());
    envelope(END_STREAM_FLAG, &payload)
}

/// The client's deadline from `Connect-Timeout-Ms`, when valid (at most 10 digits).
pub fn timeout_ms(header: Option<&str>) -> Option<u64> {
    let value = header?.trim();
    (!value.is_empty() && value.len() <= 10 && value.bytes().all(|b| b.is_ascii_digit()))
        .then(|| value.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip() {
        let frame = message_frame(&serde_json::json!({"a": 1}));
        assert_eq!(&frame[..5], &[0, 0, 0, 0, 7]);
        assert_eq!(first_message(&frame), Ok(&b"{\"a\":1}"[..]));
        assert_eq!(first_message(&frame[..6]), Err(FramingError::Truncated));
        assert_eq!(first_message(&[]), Err(FramingError::Empty));
        assert_eq!(
            first_message(&envelope(COMPRESSED_FLAG, b"x")),
            Err(FramingError::Compressed)
        );
    }

    #[test]
    fn the_trailer_carries_the_error() {
        assert_eq!(end_stream_frame(None), envelope(END_STREAM_FLAG, b"{}"));
        let error = ConnectError::new(Code::NotFound, "gone");
        let frame = end_stream_frame(Some(&error));
        assert_eq!(frame[0], END_STREAM_FLAG);
        let trailer: serde_json::Value = serde_json::from_slice(&frame[5..]).expect("json");
        assert_eq!(
            trailer,
            serde_json::json!({"error": {"code": "not_found", "message": "gone"}})
        );
    }

    #[test]
    fn codes_and_encodings() {
        assert_eq!(Code::Unimplemented.http_status(), 501);
        assert_eq!(Code::AlreadyExists.as_str(), "already_exists");
        assert_eq!(
            Encoding::of(Some("application/json; charset=utf-8")),
            Encoding::UnaryJson
        );
        assert_eq!(
            Encoding::of(Some("application/connect+json")),
            Encoding::StreamJson
        );
        assert_eq!(
            Encoding::of(Some("application/proto")),
            Encoding::Unsupported
        );
        assert_eq!(Encoding::of(None), Encoding::Unsupported);
        assert_eq!(timeout_ms(Some("60000")), Some(60000));
        assert_eq!(timeout_ms(Some("-1")), None);
        assert_eq!(timeout_ms(Some("12345678901")), None);
    }
}
