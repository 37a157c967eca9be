//! Turning one pipe's bytes into capped UTF-8 text.
//!
//! Invalid UTF-8 is replaced with U+FFFD; a multi-byte character split across reads is
//! carried over; once the cap is reached later bytes are counted and dropped.

/// Decoder + cap for one stream of one execution.
#[derive(Debug)]
pub(crate) struct StreamText {
    cap_bytes: usize,
    kept: String,
    carry: Vec<u8>,
    truncated: bool,
}

impl StreamText {
    pub(crate) fn new(cap_bytes: usize) -> Self {
        StreamText {
            cap_bytes,
            kept: String::new(),
            carry: Vec::new(),
            truncated: false,
        }
    }

    /// Adds bytes; returns the newly kept text (empty once capped).
    pub(crate) fn push(&mut self, bytes: &[u8]) -> String {
        let mut data = std::mem::take(&mut self.carry);
        data.extend_from_slice(bytes);
        let text = decode_keeping_incomplete_tail(&mut data);
        self.carry = data;
        self.keep(text)
    }

    /// End of stream: an incomplete trailing character becomes U+FFFD.
    pub(crate) fn finish(&mut self) -> String {
        let rest = std::mem::take(&mut self.carry);
        if rest.is_empty() {
            return String::new();
        }
        let text = String::from_utf8_lossy(&rest).into_owned();
        self.keep(text)
    }

    fn keep(&mut self, text: String) -> String {
        if self.truncated || text.is_empty() {
            if !text.is_empty() {
                self.truncated = true;
            }
            return String::new();
        }
        let room = self.cap_bytes.saturating_sub(self.kept.len());
        let accepted = if text.len() <= room {
            text
        } else {
            self.truncated = true;
            let mut cut = room;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text[..cut].to_owned()
        };
        self.kept.push_str(&accepted);
        accepted
    }

    pub(crate) fn truncated(&self) -> bool {
        self.truncated
    }

    pub(crate) fn into_text(self) -> String {
        self.kept
    }
}

/// Decodes `data` lossily, leaving in it only an incomplete UTF-8 sequence at its very end.
fn decode_keeping_incomplete_tail(data: &mut Vec<u8>) -> String {
    let mut text = String::with_capacity(data.len());
    let mut rest: &[u8] = data;
    loop {
        match std::str::from_utf8(rest) {
            Ok(valid) => {
                text.push_str(valid);
                rest = &[];
                break;
            }
            Err(error) => {
                let (valid, after) = rest.split_at(error.valid_up_to());
                // `valid_up_to` guarantees this prefix is UTF-8.
                text.push_str(&String::from_utf8_lossy(valid));
                match error.error_len() {
                    Some(bad) => {
                        text.push(char::REPLACEMENT_CHARACTER);
                        rest = &after[bad..];
                    }
                    None => {
                        rest = after;
                        break;
                    }
                }
            }
        }
    }
    let tail = rest.to_vec();
    *data = tail;
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_characters_are_joined() {
        let mut stream = StreamText::new(100);
        let bytes = "é€".as_bytes();
        let mut out = String::new();
        for byte in bytes {
            out.push_str(&stream.push(&[*byte]));
        }
        out.push_str(&stream.finish());
        assert_eq!(out, "é€");
        assert!(!stream.truncated());
    }

    #[test]
    fn invalid_bytes_are_replaced() {
        let mut stream = StreamText::new(100);
        let mut out = stream.push(b"a\xffb");
        out.push_str(&stream.push(b"\xe2\x82"));
        out.push_str(&stream.finish());
        assert_eq!(out, "a\u{fffd}b\u{fffd}");
    }

    #[test]
    fn cap_cuts_at_a_character_boundary() {
        let mut stream = StreamText::new(5);
        let kept = stream.push("abcdé€".as_bytes());
        assert_eq!(kept, "abcd");
        assert!(stream.truncated());
        assert_eq!(stream.push(b"more"), "");
        assert_eq!(stream.into_text(), "abcd");
    }
}
