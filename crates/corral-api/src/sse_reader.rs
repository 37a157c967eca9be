//! Reading a `text/event-stream` body (the client side of server-sent events): bytes in,
//! whole messages (`event` name and joined `data` lines) out, as the HTML standard's
//! event-stream parsing describes. Comments (keep-alives) and `id`/`retry` fields are skipped.
//!
//! No IO and no knowledge of what the events mean: the client decides that.

/// One dispatched message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseMessage {
    /// The `event` field (`message` when absent).
    pub event: String,
    /// The `data` lines, joined with `\n`.
    pub data: String,
}

/// Incremental parser; feed it chunks as they arrive.
#[derive(Debug, Default)]
pub struct SseReader {
    pending: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
}

impl SseReader {
    /// The messages completed by `chunk`.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseMessage> {
        self.pending.extend_from_slice(chunk);
        let mut messages = Vec::new();
        while let Some(end) = self.pending.iter().position(|byte| *byte == b'\n') {
            let mut line: Vec<u8> = self.pending.drain(..=end).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            if line.is_empty() {
                if let Some(data) = self.data.take() {
                    messages.push(SseMessage {
                        event: self.event.take().unwrap_or_else(|| "message".to_owned()),
                        data,
                    });
                }
                self.event = None;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (line.as_str(), ""),
            };
            match field {
                "event" => self.event = Some(value.to_owned()),
                "data" => match &mut self.data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => self.data = Some(value.to_owned()),
                },
                _ => {}
            }
        }
        messages
    }
}

#[cfg(test)]
mod tests {
    use super::{SseMessage, SseReader};

    #[test]
    fn messages_split_across_chunks_and_keepalives() {
        let mut reader = SseReader::default();
        assert!(reader.push(b"event: stream\ndata: {\"a\"").is_empty());
        assert!(reader.push(b":1}\n").is_empty());
        let messages = reader.push(b"\n: keep-alive\n\nevent: done\r\ndata: x\r\ndata: y\r\n\r\n");
        assert_eq!(
            messages,
            vec![
                SseMessage {
                    event: "stream".into(),
                    data: "{\"a\":1}".into()
                },
                SseMessage {
                    event: "done".into(),
                    data: "x\ny".into()
                },
            ]
        );
    }

    #[test]
    fn data_without_event_is_a_message() {
        let mut reader = SseReader::default();
        assert_eq!(
            reader.push(b"data:plain\n\n"),
            vec![SseMessage {
                event: "message".into(),
                data: "plain".into()
            }]
        );
    }
}
