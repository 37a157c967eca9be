//! The sync marker: `\0CORRAL-SYNC:<token>\0`, written by the worker to stdout and stderr
//! right before `done`, so the reader knows it has seen everything a cell printed.
//!
//! [`SyncScan`] finds the marker in a byte stream that arrives in arbitrary chunks, and hands
//! back the bytes around it untouched.

/// The marker for one execution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncMarker {
    bytes: Vec<u8>,
}

impl SyncMarker {
    pub fn new(token: &str) -> Self {
        let mut bytes = b"\0CORRAL-SYNC:".to_vec();
        bytes.extend_from_slice(token.as_bytes());
        bytes.push(0);
        SyncMarker { bytes }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// What a scanned chunk holds, in stream order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scanned {
    /// Bytes the cell printed.
    Output(Vec<u8>),
    /// Fence `n` (`\0CORRAL-SYNC:<token>.<n>\0`): the worker wrote it right before sending
    /// rich output frame `n`, so everything printed before that frame comes before it.
    Fence(u64),
}

/// Longest fence number, in digits.
const MAX_FENCE_DIGITS: usize = 20;

/// Scans one stream for one execution's marker and fences across chunk boundaries.
#[derive(Debug)]
pub struct SyncScan {
    marker: SyncMarker,
    /// Bytes that might be the start of a marker or fence split across chunks.
    held_back: Vec<u8>,
    found: bool,
}

impl SyncScan {
    pub fn new(marker: SyncMarker) -> Self {
        SyncScan {
            marker,
            held_back: Vec::new(),
            found: false,
        }
    }

    pub fn found(&self) -> bool {
        self.found
    }

    /// The marker without its final NUL: what the marker and every fence start with.
    fn stem(&self) -> &[u8] {
        let bytes = self.marker.as_bytes();
        &bytes[..bytes.len() - 1]
    }

    /// Feeds a chunk; returns the output (markers and fences removed) and the fences, in
    /// order. After the marker is found, bytes following it are output too (they belong to
    /// whatever printed after the cell, e.g. a background process).
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Scanned> {
        if self.found {
            return vec![Scanned::Output(chunk.to_vec())];
        }
        let mut data = std::mem::take(&mut self.held_back);
        data.extend_from_slice(chunk);
        let stem = self.stem().to_vec();
        let mut items = Vec::new();
        let mut output = Vec::new();
        let mut rest: &[u8] = &data;
        while let Some(position) = find(rest, &stem) {
            let after = &rest[position + stem.len()..];
            match tail(after) {
                Tail::End => {
                    output.extend_from_slice(&rest[..position]);
                    output.extend_from_slice(&after[1..]);
                    self.found = true;
                    push_output(&mut items, output);
                    return items;
                }
                Tail::Fence(number, length) => {
                    output.extend_from_slice(&rest[..position]);
                    push_output(&mut items, std::mem::take(&mut output));
                    items.push(Scanned::Fence(number));
                    rest = &after[length..];
                }
                Tail::Incomplete => {
                    output.extend_from_slice(&rest[..position]);
                    self.held_back = rest[position..].to_vec();
                    push_output(&mut items, output);
                    return items;
                }
                Tail::NotOurs => {
                    output.extend_from_slice(&rest[..position + 1]);
                    rest = &rest[position + 1..];
                }
            }
        }
        // Hold back the longest suffix that is a prefix of the stem.
        let keep = (1..stem.len().min(rest.len() + 1))
            .rev()
            .find(|&length| rest.ends_with(&stem[..length]))
            .unwrap_or(0);
        output.extend_from_slice(&rest[..rest.len() - keep]);
        self.held_back = rest[rest.len() - keep..].to_vec();
        push_output(&mut items, output);
        items
    }

    /// The end of the stream: whatever was held back is output after all.
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held_back)
    }
}

fn push_output(items: &mut Vec<Scanned>, output: Vec<u8>) {
    if !output.is_empty() {
        items.push(Scanned::Output(output));
    }
}

/// What follows the stem.
enum Tail {
    /// `\0`: the end marker.
    End,
    /// `.<digits>\0`: a fence, and how many bytes it takes after the stem.
    Fence(u64, usize),
    /// Could still become either once more bytes arrive.
    Incomplete,
    /// Neither.
    NotOurs,
}

fn tail(after: &[u8]) -> Tail {
    match after.first() {
        None => Tail::Incomplete,
        Some(0) => Tail::End,
        Some(b'.') => {
            let digits = after[1..]
                .iter()
                .take_while(|byte| byte.is_ascii_digit())
                .count();
            match after.get(1 + digits) {
                None if digits <= MAX_FENCE_DIGITS => Tail::Incomplete,
                Some(0) if (1..=MAX_FENCE_DIGITS).contains(&digits) => {
                    match std::str::from_utf8(&after[1..1 + digits])
                        .ok()
                        .and_then(|text| text.parse().ok())
                    {
                        Some(number) => Tail::Fence(number, digits + 2),
                        None => Tail::NotOurs,
                    }
                }
                _ => Tail::NotOurs,
            }
        }
        Some(_) => Tail::NotOurs,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// The bytes every marker and fence begins with.
const MARKER_PREFIX: &[u8] = b"\0CORRAL-SYNC:";
/// Longest token (with a fence number) a marker carries.
const MAX_TOKEN_BYTES: usize = 128;

/// `bytes` without any marker or fence, whatever its token: for output read without knowing
/// which execution wrote it (a worker taken over from a server that stopped). A prefix with no
/// terminating NUL within a token's length is kept as it is.
pub fn without_markers(bytes: &[u8]) -> Vec<u8> {
    let mut kept = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some(start) = find(rest, MARKER_PREFIX) {
        let after = &rest[start + MARKER_PREFIX.len()..];
        match after
            .iter()
            .take(MAX_TOKEN_BYTES)
            .position(|byte| *byte == 0)
        {
            Some(end) => {
                kept.extend_from_slice(&rest[..start]);
                rest = &after[end + 1..];
            }
            None => {
                kept.extend_from_slice(&rest[..start + MARKER_PREFIX.len()]);
                rest = after;
            }
        }
    }
    kept.extend_from_slice(rest);
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_with_fences(input: &[u8], chunk_size: usize) -> (Vec<Scanned>, bool) {
        let mut scan = SyncScan::new(SyncMarker::new("abc123"));
        let mut items: Vec<Scanned> = Vec::new();
        for chunk in input.chunks(chunk_size) {
            for item in scan.feed(chunk) {
                match (items.last_mut(), item) {
                    (Some(Scanned::Output(last)), Scanned::Output(more)) => last.extend(more),
                    (_, item) => items.push(item),
                }
            }
        }
        let held = scan.finish();
        if !held.is_empty() {
            match items.last_mut() {
                Some(Scanned::Output(last)) => last.extend(held),
                _ => items.push(Scanned::Output(held)),
            }
        }
        (items, scan.found())
    }

    fn scan_in_chunks(input: &[u8], chunk_size: usize) -> (Vec<u8>, bool) {
        let (items, found) = scan_with_fences(input, chunk_size);
        let mut output = Vec::new();
        for item in items {
            if let Scanned::Output(bytes) = item {
                output.extend(bytes);
            }
        }
        (output, found)
    }

    #[test]
    fn fences_are_found_in_order_at_any_split() {
        let marker = SyncMarker::new("abc123");
        let stem = &marker.as_bytes()[..marker.as_bytes().len() - 1];
        let mut input = b"a\n".to_vec();
        input.extend_from_slice(stem);
        input.extend_from_slice(b".1\0b\n");
        input.extend_from_slice(stem);
        input.extend_from_slice(b".12\0");
        input.extend_from_slice(marker.as_bytes());
        input.extend_from_slice(b"late");
        for chunk_size in 1..input.len() + 1 {
            let (items, found) = scan_with_fences(&input, chunk_size);
            assert!(found, "chunk size {chunk_size}");
            assert_eq!(
                items,
                vec![
                    Scanned::Output(b"a\n".to_vec()),
                    Scanned::Fence(1),
                    Scanned::Output(b"b\n".to_vec()),
                    Scanned::Fence(12),
                    Scanned::Output(b"late".to_vec()),
                ],
                "chunk size {chunk_size}"
            );
        }
    }

    #[test]
    fn malformed_fences_are_output() {
        let marker = SyncMarker::new("abc123");
        let stem = &marker.as_bytes()[..marker.as_bytes().len() - 1];
        let mut input = stem.to_vec();
        input.extend_from_slice(b".x\0 and ");
        input.extend_from_slice(stem);
        input.extend_from_slice(b".\0");
        let (output, found) = scan_in_chunks(&input, 5);
        assert!(!found);
        assert_eq!(output, input);
    }

    #[test]
    fn marker_is_found_and_removed_at_any_split() {
        let mut input = b"hello\n".to_vec();
        input.extend_from_slice(SyncMarker::new("abc123").as_bytes());
        for chunk_size in 1..input.len() + 1 {
            let (output, found) = scan_in_chunks(&input, chunk_size);
            assert!(found, "chunk size {chunk_size}");
            assert_eq!(output, b"hello\n", "chunk size {chunk_size}");
        }
    }

    #[test]
    fn near_misses_are_passed_through() {
        let input = b"\0CORRAL-SYNC:abc12\0 and \0CORRAL";
        let (output, found) = scan_in_chunks(input, 3);
        assert!(!found);
        assert_eq!(output, input);
    }

    #[test]
    fn another_token_does_not_match() {
        let mut input = b"x".to_vec();
        input.extend_from_slice(SyncMarker::new("zzz").as_bytes());
        let (output, found) = scan_in_chunks(&input, 4);
        assert!(!found);
        assert_eq!(output, input);
    }

    #[test]
    fn markers_of_any_token_are_removed_and_the_rest_kept() {
        let mut stream = b"before ".to_vec();
        stream.extend_from_slice(SyncMarker::new("abc.1").as_bytes());
        stream.extend_from_slice(b"middle ");
        stream.extend_from_slice(SyncMarker::new("abc").as_bytes());
        stream.extend_from_slice(b"after\0CORRAL-SYNC:unterminated");
        assert_eq!(
            super::without_markers(&stream),
            b"before middle after\0CORRAL-SYNC:unterminated".to_vec()
        );
        assert_eq!(super::without_markers(b"plain"), b"plain".to_vec());
    }
}
