//! The host side of workspace file transfers: runs `corral sandbox-files` for one request
//! and speaks its stdin/stdout format (see `corral-sandbox`'s `files` module).
//!
//! Streams in both directions; never reads a whole file into memory. Knows nothing of HTTP.

use std::path::PathBuf;
use std::process::Stdio;

use bytes::Bytes;
use corral_sandbox::{FileEntry, FileFailure, FileOperation, FILES_COMMAND};
use futures::{Stream, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

/// How much of an upload is still read and dropped after the helper refused it.
const DRAIN_AFTER_FAILURE_BYTES: u64 = 64 * 1024 * 1024;

/// Why a file request failed.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidPath(String),
    #[error("{0}")]
    WrongType(String),
    #[error("the workspace is full: {0}")]
    NoSpace(String),
    #[error("file helper failed: {0}")]
    Failed(String),
}

/// Where a session's workspace is reached.
#[derive(Clone, Debug)]
pub struct WorkspaceFiles {
    pub(crate) helper: PathBuf,
    pub(crate) target: FileTarget,
}

#[derive(Clone, Debug)]
pub(crate) enum FileTarget {
    /// Inside the sandbox whose launcher has this pid.
    Sandbox { launcher_pid: u32 },
    /// An unsandboxed server's workspace directory on the host.
    Host { workspace: PathBuf },
}

/// A download: its size and its bytes, as a stream.
pub struct FileDownload {
    pub size: u64,
    reader: BufReader<ChildStdout>,
    _child: Child,
}

impl FileDownload {
    /// The file's bytes in chunks; an error ends the stream.
    pub fn into_stream(self) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
        futures::stream::unfold(Some(self), |state| async move {
            let mut download = state?;
            let mut buffer = vec![0u8; 64 * 1024];
            match download.reader.read(&mut buffer).await {
                Ok(0) => None,
                Ok(count) => {
                    buffer.truncate(count);
                    Some((Ok(Bytes::from(buffer)), Some(download)))
                }
                Err(error) => Some((Err(error), None)),
            }
        })
    }
}

impl WorkspaceFiles {
    fn command(&self, operation: FileOperation, path: &str) -> Command {
        let mut command = Command::new(&self.helper);
        command.arg(FILES_COMMAND);
        match &self.target {
            FileTarget::Sandbox { launcher_pid } => {
                command.args(["--pid", &launcher_pid.to_string()]);
            }
            FileTarget::Host { workspace } => {
                command.arg("--root").arg(workspace);
            }
        }
        command
            .args([operation.as_str(), path])
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    fn spawn(&self, mut command: Command) -> Result<Child, FileError> {
        command
            .spawn()
            .map_err(|error| FileError::Failed(error.to_string()))
    }

    /// Reads the helper's header line, or its error once it has exited.
    async fn header(
        child: &mut Child,
        reader: &mut BufReader<ChildStdout>,
    ) -> Result<String, FileError> {
        let mut line = String::new();
        let read = reader
            .read_line(&mut line)
            .await
            .map_err(|error| FileError::Failed(error.to_string()))?;
        if read > 0 && line.starts_with("OK") {
            return Ok(line.trim_end().to_owned());
        }
        Err(Self::failure(child).await)
    }

    async fn failure(child: &mut Child) -> FileError {
        let mut message = String::new();
        if let Some(mut stderr) = child.stderr.take() {
            let _ = stderr.read_to_string(&mut message).await;
        }
        let code = child
            .wait()
            .await
            .ok()
            .and_then(|status| status.code())
            .unwrap_or(-1);
        let message = message
            .lines()
            .find_map(|line| line.strip_prefix("ERR "))
            .and_then(|rest| rest.split_once(' '))
            .map(|(_, text)| text.to_owned())
            .unwrap_or_else(|| format!("the file helper exited with {code}"));
        match FileFailure::from_exit_code(code) {
            FileFailure::NotFound => FileError::NotFound(message),
            FileFailure::InvalidPath => FileError::InvalidPath(message),
            FileFailure::WrongType => FileError::WrongType(message),
            FileFailure::NoSpace => FileError::NoSpace(message),
            FileFailure::Other => FileError::Failed(message),
        }
    }

    fn stdout(child: &mut Child) -> Result<BufReader<ChildStdout>, FileError> {
        child
            .stdout
            .take()
            .map(BufReader::new)
            .ok_or_else(|| FileError::Failed("no stdout".to_owned()))
    }

    /// Starts a download of `path`.
    pub async fn get(&self, path: &str) -> Result<FileDownload, FileError> {
        let mut child = self.spawn(self.command(FileOperation::Get, path))?;
        let mut reader = Self::stdout(&mut child)?;
        let header = Self::header(&mut child, &mut reader).await?;
        let size = header
            .strip_prefix("OK ")
            .and_then(|size| size.parse().ok())
            .ok_or_else(|| FileError::Failed(format!("bad header {header:?}")))?;
        Ok(FileDownload {
            size,
            reader,
            _child: child,
        })
    }

    /// Writes `body` to `path` (parents created); returns the bytes written.
    pub async fn put<S, E>(&self, path: &str, body: S) -> Result<u64, FileError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let mut command = self.command(FileOperation::Put, path);
        command.stdin(Stdio::piped());
        let mut child = self.spawn(command)?;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| FileError::Failed("no stdin".to_owned()))?;
        let mut body = std::pin::pin!(body);
        let mut upload_error = None;
        let mut helper_gone = false;
        let mut discarded: u64 = 0;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(bytes) if helper_gone => {
                    // Read (a bounded amount of) the rest so the client sees the answer
                    // instead of a reset connection.
                    discarded += bytes.len() as u64;
                    if discarded > DRAIN_AFTER_FAILURE_BYTES {
                        break;
                    }
                }
                Ok(bytes) => {
                    if stdin.write_all(&bytes).await.is_err() {
                        // The helper stopped reading (full workspace, bad path): its exit says why.
                        helper_gone = true;
                    }
                }
                Err(error) => {
                    upload_error = Some(error.to_string());
                    break;
                }
            }
        }
        drop(stdin);
        if let Some(error) = upload_error {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(FileError::Failed(format!(
                "the upload was interrupted: {error}"
            )));
        }
        let mut reader = Self::stdout(&mut child)?;
        let header = Self::header(&mut child, &mut reader).await?;
        let _ = child.wait().await;
        header
            .strip_prefix("OK ")
            .and_then(|size| size.parse().ok())
            .ok_or_else(|| FileError::Failed(format!("bad header {header:?}")))
    }

    /// Deletes a file or a whole directory.
    pub async fn delete(&self, path: &str) -> Result<(), FileError> {
        let mut child = self.spawn(self.command(FileOperation::Delete, path))?;
        let mut reader = Self::stdout(&mut child)?;
        Self::header(&mut child, &mut reader).await?;
        let _ = child.wait().await;
        Ok(())
    }

    /// Lists a directory (`""` is the workspace).
    pub async fn list(&self, path: &str) -> Result<Vec<FileEntry>, FileError> {
        let mut child = self.spawn(self.command(FileOperation::List, path))?;
        let mut reader = Self::stdout(&mut child)?;
        Self::header(&mut child, &mut reader).await?;
        let mut text = String::new();
        reader
            .read_to_string(&mut text)
            .await
            .map_err(|error| FileError::Failed(error.to_string()))?;
        let _ = child.wait().await;
        serde_json::from_str(&text).map_err(|error| FileError::Failed(error.to_string()))
    }
}
