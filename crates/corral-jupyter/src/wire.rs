//! The framings of a kernel's websocket, as jupyter_server speaks them.
//!
//! - **JSON** (no subprotocol, what jupyter_server's gateway client and older front-ends
//!   use): each text frame is one message as a JSON object with `header`, `parent_header`,
//!   `metadata`, `content`, `buffers` and `channel` (outgoing messages also carry `msg_id`
//!   and `msg_type` at the top, as jupyter_server writes them).
//! - **v1** (`v1.kernel.websocket.jupyter.org`): each binary frame is a little-endian u64
//!   count of offsets, the offsets (u64 each), then the channel name, the header, the parent
//!   header, the metadata and the content (each JSON) and any binary buffers, each part
//!   running from its offset to the next.
//!
//! Only framing: which channel a message belongs on and what to do with it is decided
//! elsewhere.

use jupyter_protocol::{Channel, JupyterMessage};
use serde_json::Value;

/// The binary subprotocol's name, as offered in `Sec-WebSocket-Protocol`.
pub const V1_SUBPROTOCOL: &str = "v1.kernel.websocket.jupyter.org";

/// Parts of a v1 message before the buffers: channel, header, parent header, metadata,
/// content.
const V1_FIXED_PARTS: usize = 5;
/// Largest number of offsets a v1 frame may declare (a bound against hostile counts).
const V1_MAX_OFFSETS: u64 = 1024;

/// Which framing a connection speaks (chosen by the subprotocol at the upgrade).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Json,
    V1,
}

impl Framing {
    /// The framing for the subprotocol the server accepted (`None`: none was).
    pub fn for_subprotocol(subprotocol: Option<&str>) -> Framing {
        match subprotocol {
            Some(V1_SUBPROTOCOL) => Framing::V1,
            _ => Framing::Json,
        }
    }
}

/// One websocket data frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Text(String),
    Binary(Vec<u8>),
}

/// Why a frame is not a message.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("the frame is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the message's channel is not a string")]
    MissingChannel,
    #[error("unknown channel {0:?}")]
    UnknownChannel(String),
    #[error("the message is not a Jupyter message: {0}")]
    NotAMessage(String),
    #[error("binary frames are only understood with the {V1_SUBPROTOCOL} subprotocol")]
    UnexpectedBinary,
    #[error("text frames are not part of the {V1_SUBPROTOCOL} subprotocol")]
    UnexpectedText,
    #[error("malformed binary frame: {0}")]
    MalformedBinary(&'static str),
}

/// Reads one frame as a message and the channel it came on.
pub fn decode(framing: Framing, frame: Frame) -> Result<(Channel, JupyterMessage), WireError> {
    match (framing, frame) {
        (Framing::Json, Frame::Text(text)) => {
            let mut value: Value = serde_json::from_str(&text)?;
            let object = value
                .as_object_mut()
                .ok_or_else(|| WireError::NotAMessage("not a JSON object".into()))?;
            // Without a channel a message is for shell, as jupyter_server reads it (its own
            // gateway client sends none).
            let channel = match object.remove("channel") {
                Some(Value::String(name)) => parse_channel(&name)?,
                None | Some(Value::Null) => Channel::Shell,
                Some(_) => return Err(WireError::MissingChannel),
            };
            // Top-level copies of header fields are not part of the message.
            object.remove("msg_id");
            object.remove("msg_type");
            object.remove("buffers");
            Ok((channel, message_from(value)?))
        }
        (Framing::V1, Frame::Binary(bytes)) => decode_v1(&bytes),
        (Framing::Json, Frame::Binary(_)) => Err(WireError::UnexpectedBinary),
        (Framing::V1, Frame::Text(_)) => Err(WireError::UnexpectedText),
    }
}

/// The message as JSON, without the `"transient": null` the protocol types write (clients
/// read `content.transient.display_id` when the key is there).
fn message_json(message: &JupyterMessage) -> Value {
    let mut value = serde_json::to_value(message).unwrap_or(Value::Null);
    if let Some(content) = value.get_mut("content").and_then(Value::as_object_mut) {
        if content.get("transient").is_some_and(Value::is_null) {
            content.remove("transient");
        }
    }
    value
}

/// Writes `message` for `channel` in `framing`.
pub fn encode(framing: Framing, channel: &Channel, message: &JupyterMessage) -> Frame {
    match framing {
        Framing::Json => {
            let mut value = message_json(message);
            if let Some(object) = value.as_object_mut() {
                object.insert(
                    "channel".into(),
                    Value::String(channel_name(channel).into()),
                );
                object.insert(
                    "msg_id".into(),
                    Value::String(message.header.msg_id.clone()),
                );
                object.insert(
                    "msg_type".into(),
                    Value::String(message.header.msg_type.clone()),
                );
                object.insert("buffers".into(), Value::Array(Vec::new()));
            }
            Frame::Text(value.to_string())
        }
        Framing::V1 => {
            let value = message_json(message);
            let part = |key: &str| {
                value
                    .get(key)
                    .map(|part| part.to_string().into_bytes())
                    .unwrap_or_else(|| b"{}".to_vec())
            };
            let mut parts = vec![
                channel_name(channel).as_bytes().to_vec(),
                part("header"),
                part("parent_header"),
                part("metadata"),
                part("content"),
            ];
            parts.extend(message.buffers.iter().map(|buffer| buffer.to_vec()));
            Frame::Binary(encode_v1_parts(&parts))
        }
    }
}

/// The channel's name on the wire.
pub fn channel_name(channel: &Channel) -> &'static str {
    match channel {
        Channel::Shell => "shell",
        Channel::Control => "control",
        Channel::Stdin => "stdin",
        Channel::IOPub => "iopub",
        Channel::Heartbeat => "hb",
    }
}

fn parse_channel(name: &str) -> Result<Channel, WireError> {
    match name {
        "shell" => Ok(Channel::Shell),
        "control" => Ok(Channel::Control),
        "stdin" => Ok(Channel::Stdin),
        "iopub" => Ok(Channel::IOPub),
        "hb" | "heartbeat" => Ok(Channel::Heartbeat),
        other => Err(WireError::UnknownChannel(other.to_owned())),
    }
}

fn message_from(value: Value) -> Result<JupyterMessage, WireError> {
    JupyterMessage::from_value(value).map_err(|error| WireError::NotAMessage(error.to_string()))
}

fn encode_v1_parts(parts: &[Vec<u8>]) -> Vec<u8> {
    // One offset where each part starts, and one where the last ends.
    let offsets = parts.len() + 1;
    let mut position = 8 * (1 + offsets);
    let mut out = Vec::with_capacity(position + parts.iter().map(Vec::len).sum::<usize>());
    out.extend_from_slice(&(offsets as u64).to_le_bytes());
    out.extend_from_slice(&(position as u64).to_le_bytes());
    for part in parts {
        position += part.len();
        out.extend_from_slice(&(position as u64).to_le_bytes());
    }
    for part in parts {
        out.extend_from_slice(part);
    }
    out
}

fn decode_v1(bytes: &[u8]) -> Result<(Channel, JupyterMessage), WireError> {
    let read_u64 = |at: usize| -> Result<u64, WireError> {
        let slice = bytes
            .get(at..at + 8)
            .ok_or(WireError::MalformedBinary("shorter than its offsets"))?;
        let mut word = [0u8; 8];
        word.copy_from_slice(slice);
        Ok(u64::from_le_bytes(word))
    };
    let count = read_u64(0)?;
    if count < (V1_FIXED_PARTS as u64 + 1) || count > V1_MAX_OFFSETS {
        return Err(WireError::MalformedBinary("wrong number of offsets"));
    }
    let count = count as usize;
    let mut offsets = Vec::with_capacity(count);
    for index in 0..count {
        let offset = usize::try_from(read_u64(8 * (index + 1))?)
            .map_err(|_| WireError::MalformedBinary("offset out of range"))?;
        offsets.push(offset);
    }
    if offsets.windows(2).any(|pair| pair[0] > pair[1])
        || offsets.last().is_some_and(|last| *last > bytes.len())
        || offsets
            .first()
            .is_some_and(|first| *first < 8 * (1 + count))
    {
        return Err(WireError::MalformedBinary("offsets out of order or range"));
    }
    let part = |index: usize| &bytes[offsets[index]..offsets[index + 1]];
    let channel = std::str::from_utf8(part(0))
        .map_err(|_| WireError::MalformedBinary("channel is not UTF-8"))?;
    let channel = parse_channel(channel)?;
    let json =
        |index: usize| -> Result<Value, WireError> { Ok(serde_json::from_slice(part(index))?) };
    let value = serde_json::json!({
        "header": json(1)?,
        "parent_header": json(2)?,
        "metadata": json(3)?,
        "content": json(4)?,
    });
    let mut message = message_from(value)?;
    message.buffers = (V1_FIXED_PARTS..count - 1)
        .map(|index| part(index).to_vec().into())
        .collect();
    Ok((channel, message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jupyter_protocol::JupyterMessageContent;

    const EXECUTE_REQUEST: &str = r#"{
        "header": {"msg_id": "m1", "username": "u", "session": "s1", "date": "2026-12-02T00:00:00.000000Z",
                   "msg_type": "execute_request", "version": "5.3"},
        "parent_header": {}, "metadata": {}, "buffers": [], "channel": "shell",
        "content": {"code": "1 + 1", "silent": false, "store_history": true,
                    "user_expressions": {}, "allow_stdin": true, "stop_on_error": true}
    }"#;

    #[test]
    fn json_frames_round_trip_with_their_channel() {
        let (channel, message) =
            decode(Framing::Json, Frame::Text(EXECUTE_REQUEST.into())).expect("decodes");
        assert!(matches!(channel, Channel::Shell));
        let JupyterMessageContent::ExecuteRequest(request) = &message.content else {
            panic!("not an execute request: {:?}", message.content);
        };
        assert_eq!(request.code, "1 + 1");
        assert!(request.allow_stdin);
        let Frame::Text(text) = encode(Framing::Json, &Channel::IOPub, &message) else {
            panic!("JSON framing writes text");
        };
        let written: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(written["channel"], "iopub");
        assert_eq!(written["msg_id"], "m1");
        assert_eq!(written["msg_type"], "execute_request");
        assert_eq!(written["header"]["session"], "s1");
        assert_eq!(written["parent_header"], serde_json::json!({}));
        assert_eq!(written["buffers"], serde_json::json!([]));
    }

    #[test]
    fn a_message_without_a_channel_is_for_shell() {
        // As jupyter_server's gateway client sends them: no channel, a float date, 5.4.
        let frame = r#"{"header": {"msg_id": "m2", "username": "u", "session": "s", "date": 1764633600.5,
            "msg_type": "kernel_info_request", "version": "5.4"}, "parent_header": {}, "metadata": {},
            "content": {}}"#;
        let (channel, message) = decode(Framing::Json, Frame::Text(frame.into())).expect("decodes");
        assert!(matches!(channel, Channel::Shell));
        assert_eq!(message.header.msg_type, "kernel_info_request");
    }

    #[test]
    fn v1_frames_round_trip_with_buffers() {
        let (_, mut message) =
            decode(Framing::Json, Frame::Text(EXECUTE_REQUEST.into())).expect("decodes");
        message.buffers = vec![b"\x00\x01binary".to_vec().into()];
        let Frame::Binary(bytes) = encode(Framing::V1, &Channel::Control, &message) else {
            panic!("v1 framing writes binary");
        };
        // Offsets: channel, header, parent, metadata, content, one buffer, and the end.
        assert_eq!(
            u64::from_le_bytes(bytes[0..8].try_into().expect("8 bytes")),
            7
        );
        assert_eq!(
            u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")),
            64
        );
        assert_eq!(&bytes[64..71], b"control");
        let (channel, decoded) = decode(Framing::V1, Frame::Binary(bytes)).expect("decodes");
        assert!(matches!(channel, Channel::Control));
        assert_eq!(decoded.header.msg_id, "m1");
        assert_eq!(decoded.buffers.len(), 1);
        assert_eq!(&decoded.buffers[0][..], b"\x00\x01binary");
    }

    #[test]
    fn bad_frames_are_refused_not_panicked_on() {
        let cases: Vec<(Framing, Frame)> = vec![
            (Framing::Json, Frame::Text("not json".into())),
            (Framing::Json, Frame::Text("[1]".into())),
            (Framing::Json, Frame::Text(r#"{"header": {}}"#.into())),
            (Framing::Json, Frame::Text(r#"{"channel": "nope"}"#.into())),
            (Framing::Json, Frame::Text(r#"{"channel": 1}"#.into())),
            (
                Framing::Json,
                Frame::Text(r#"{"channel": "shell", "header": 1}"#.into()),
            ),
            (Framing::Json, Frame::Binary(vec![1, 2, 3])),
            (Framing::V1, Frame::Text("{}".into())),
            (Framing::V1, Frame::Binary(vec![])),
            (Framing::V1, Frame::Binary(u64::MAX.to_le_bytes().to_vec())),
            (
                Framing::V1,
                Frame::Binary([6u64.to_le_bytes(), 0u64.to_le_bytes()].concat()),
            ),
            (
                Framing::V1,
                Frame::Binary(encode_v1_parts(&[
                    b"shell".to_vec(),
                    b"{".to_vec(),
                    b"{}".to_vec(),
                    b"{}".to_vec(),
                    b"{}".to_vec(),
                ])),
            ),
            (
                Framing::V1,
                Frame::Binary(encode_v1_parts(&[
                    vec![0xff],
                    b"{}".to_vec(),
                    b"{}".to_vec(),
                    b"{}".to_vec(),
                    b"{}".to_vec(),
                ])),
            ),
        ];
        for (framing, frame) in cases {
            assert!(decode(framing, frame.clone()).is_err(), "{frame:?} decoded");
        }
    }

    #[test]
    fn offsets_pointing_outside_the_frame_are_refused() {
        let mut bytes = encode_v1_parts(&[
            b"shell".to_vec(),
            b"{}".to_vec(),
            b"{}".to_vec(),
            b"{}".to_vec(),
            b"{}".to_vec(),
        ]);
        let end = bytes.len() as u64 + 10;
        bytes[48..56].copy_from_slice(&end.to_le_bytes());
        assert!(matches!(
            decode(Framing::V1, Frame::Binary(bytes)),
            Err(WireError::MalformedBinary(_))
        ));
    }

    #[test]
    fn no_null_transient_is_written() {
        let kernel = crate::Kernel::new();
        let result = crate::replies::output(&corral_core::ExecEvent::Result {
            execution_count: 1,
            data: serde_json::Map::from_iter([("text/plain".to_owned(), Value::from("2"))]),
        })
        .expect("an output");
        let message = kernel.unprompted(result);
        let Frame::Text(text) = encode(Framing::Json, &Channel::IOPub, &message) else {
            panic!("text");
        };
        let written: Value = serde_json::from_str(&text).expect("JSON");
        assert!(written["content"].get("transient").is_none(), "{written}");
        assert_eq!(written["content"]["execution_count"], 1);
    }

    #[test]
    fn the_subprotocol_chooses_the_framing() {
        assert_eq!(Framing::for_subprotocol(Some(V1_SUBPROTOCOL)), Framing::V1);
        assert_eq!(Framing::for_subprotocol(None), Framing::Json);
    }
}
