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

/// Scans one stream for one marker across chunk boundaries.
#[derive(Debug)]
pub struct SyncScan {
    marker: SyncMarker,
    /// Bytes that might be the start of a marker split across chunks.
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

    /// Feeds a chunk; returns the bytes that are certainly output (marker removed).
    /// After the marker is found, bytes following it in the chunk are returned too (they
    /// belong to whatever printed after the cell, e.g. a background process).
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.found {
            return chunk.to_vec();
        }
        let mut data = std::mem::take(&mut self.held_back);
        data.extend_from_slice(chunk);
        let marker = self.marker.as_bytes();
        if let Some(position) = find(&data, marker) {
            self.found = true;
            let mut output = data[..position].to_vec();
            output.extend_from_slice(&data[position + marker.len()..]);
            return output;
        }
        // Hold back the longest suffix that is a prefix of the marker.
        let keep = (1..marker.len().min(data.len() + 1))
            .rev()
            .find(|&length| data.ends_with(&marker[..length]))
            .unwrap_or(0);
        self.held_back = data.split_off(data.len() - keep);
        data
    }

    /// The end of the stream: whatever was held back is output after all.
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held_back)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_in_chunks(input: &[u8], chunk_size: usize) -> (Vec<u8>, bool) {
        let mut scan = SyncScan::new(SyncMarker::new("abc123"));
        let mut output = Vec::new();
        for chunk in input.chunks(chunk_size) {
            output.extend(scan.feed(chunk));
        }
        output.extend(scan.finish());
        (output, scan.found())
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
}
