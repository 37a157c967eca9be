//! Length-prefixed JSON frames: a 4-byte big-endian length, then that many bytes of JSON.

use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame either side accepts.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("the peer closed the channel")]
    Closed,
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("malformed frame: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("channel io: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one frame; `Err(FrameError::Closed)` on a clean end of stream between frames.
pub async fn read_frame<R, T>(reader: &mut R) -> Result<T, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let mut length_bytes = [0u8; 4];
    match reader.read_exact(&mut length_bytes).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(FrameError::Closed)
        }
        Err(error) => return Err(error.into()),
    }
    let length = u32::from_be_bytes(length_bytes) as usize;
    if length > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(length));
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).await.map_err(|error| {
        if error.kind() == std::io::ErrorKind::UnexpectedEof {
            FrameError::Closed
        } else {
            FrameError::Io(error)
        }
    })?;
    Ok(serde_json::from_slice(&body)?)
}

/// Writes one frame and flushes it.
pub async fn write_frame<W, T>(writer: &mut W, message: &T) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let body = serde_json::to_vec(message)?;
    if body.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(body.len()));
    }
    let length = (body.len() as u32).to_be_bytes();
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&length);
    frame.extend_from_slice(&body);
    writer.write_all(&frame).await?;
    writer.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WorkerRequest;

    #[tokio::test]
    async fn frames_round_trip() {
        let (mut left, mut right) = tokio::io::duplex(1024);
        let request = WorkerRequest::Shutdown;
        write_frame(&mut left, &request).await.expect("write");
        let back: WorkerRequest = read_frame(&mut right).await.expect("read");
        assert_eq!(back, request);
        drop(left);
        let end: Result<WorkerRequest, _> = read_frame(&mut right).await;
        assert!(matches!(end, Err(FrameError::Closed)));
    }

    #[tokio::test]
    async fn oversized_frames_are_refused() {
        let (mut left, mut right) = tokio::io::duplex(1024);
        left.write_all(&u32::MAX.to_be_bytes())
            .await
            .expect("write");
        let result: Result<WorkerRequest, _> = read_frame(&mut right).await;
        assert!(matches!(result, Err(FrameError::TooLarge(_))));
    }
}
