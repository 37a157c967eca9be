//! Taking over the workers a previous server left running (see `corral_sandbox`'s keeper):
//! connecting to each launcher, bringing the worker's channel back in step, and noticing an
//! execution the previous server did not see finish.
//!
//! Knows nothing of sessions or the store: the engine decides which workers it wants and
//! records what this module reports.

use std::path::{Path, PathBuf};
use std::time::Duration;

use corral_protocol::{WorkerEvent, WorkerRequest};
use tokio::time::Instant;

use crate::execution::ExecSpec;
use crate::worker::{Worker, WorkerConfig, WorkerInfo};

/// How long an idle worker has to answer the first question before it is presumed busy
/// with an execution the previous server left running (and interrupted).
const IDLE_ANSWER: Duration = Duration::from_millis(500);
/// Id of the question that brings the channel back in step.
const RESYNC_ID: &str = "adoption";

/// A worker left by a previous server, found by its launcher's keeper socket.
#[derive(Debug)]
pub struct LeftWorker {
    /// The socket's name: the session id for a session's worker, anything else for a
    /// worker no session owned (a warm pool's).
    pub label: String,
    pub socket: PathBuf,
}

/// The keeper sockets under `directory`.
pub fn left_workers(directory: &Path) -> Vec<LeftWorker> {
    corral_sandbox::keeper_sockets(directory)
        .into_iter()
        .map(|(label, socket)| LeftWorker { label, socket })
        .collect()
}

/// What taking over a worker found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resumed {
    /// The execution (by its execution count) that was running when the previous server
    /// stopped, or had finished without that server seeing it: it was interrupted if still
    /// running, and what it printed before the takeover is lost.
    pub unfinished_execution: Option<u64>,
    /// Whether the worker was interrupted to bring it back (it was busy).
    pub interrupted: bool,
    /// What the unfinished execution printed that the stopped server never read (what it had
    /// read is gone with it), markers removed, each at most `UNREAD_OUTPUT_CAP` bytes.
    pub unread_stdout: String,
    pub unread_stderr: String,
    /// The error the unfinished execution ended with, if it ended before the takeover's
    /// fence (e.g. the `KeyboardInterrupt` of the takeover's interrupt).
    pub error: Option<UnfinishedError>,
}

/// The error an unfinished execution reported while it was taken over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnfinishedError {
    pub ename: String,
    pub evalue: String,
    pub traceback: Vec<String>,
}

/// The most unread output kept per stream from an unfinished execution.
pub const UNREAD_OUTPUT_CAP: usize = 64 * 1024;

/// Bytes kept from one stream, up to [`UNREAD_OUTPUT_CAP`].
#[derive(Default)]
struct Unread(Vec<u8>);

impl Unread {
    fn keep(&mut self, chunk: &[u8]) {
        let room = (UNREAD_OUTPUT_CAP + MARKER_SLACK).saturating_sub(self.0.len());
        self.0.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }

    fn text(&self) -> String {
        let mut text = corral_protocol::without_markers(&self.0);
        text.truncate(UNREAD_OUTPUT_CAP);
        String::from_utf8_lossy(&text).into_owned()
    }
}

/// Room for the markers kept with the output (removed before the cap applies).
const MARKER_SLACK: usize = 1024;

/// Why a worker could not be taken over.
#[derive(Debug, thiserror::Error)]
pub enum AdoptionError {
    #[error("its launcher is gone")]
    Gone,
    #[error("its keeper channel failed: {0}")]
    Keeper(String),
    #[error("it did not come back in step: {0}")]
    OutOfStep(String),
}

impl LeftWorker {
    /// Connects to the launcher and takes the worker's channels (without resuming it).
    pub fn connect(
        &self,
        config: &WorkerConfig,
        workspace: PathBuf,
        info: WorkerInfo,
    ) -> Result<Worker, AdoptionError> {
        if config.sandbox.is_none() {
            return Err(AdoptionError::Keeper(
                "this server runs workers without a sandbox".to_owned(),
            ));
        }
        let channels = corral_sandbox::adopt(&self.socket, Duration::from_secs(5)).map_err(
            |error| match error {
                corral_sandbox::KeeperError::Gone => AdoptionError::Gone,
                other => AdoptionError::Keeper(other.to_string()),
            },
        )?;
        Ok(Worker::from_adopted(
            config,
            channels,
            self.socket.clone(),
            workspace,
            info,
        ))
    }

    /// Ends a worker no session wants (a previous server's warm-pool worker): its launcher
    /// ends it and releases what it held, and `workspace` is removed. A launcher that is
    /// already gone only leaves its socket, which is removed.
    pub async fn end(
        &self,
        config: &WorkerConfig,
        workspace: PathBuf,
    ) -> Result<(), AdoptionError> {
        // Nobody reads what an unowned worker would say about itself.
        match self.connect(config, workspace, WorkerInfo::default()) {
            Ok(worker) => {
                worker.terminate().await;
                Ok(())
            }
            Err(error) => {
                self.forget();
                Err(error)
            }
        }
    }

    /// Removes the socket of a launcher that is gone.
    pub fn forget(&self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Worker {
    /// Brings an adopted worker's channel back in step: asks a question only an idle
    /// interpreter answers, interrupting the execution it may still be running, discards
    /// what the previous server left unread, and passes a fence on both pipes with a silent
    /// execution. Fails (and the worker should be killed) when the worker cannot be brought
    /// back within `grace` after the interrupt.
    pub async fn resume(&mut self, grace: Duration) -> Result<Resumed, AdoptionError> {
        let question = WorkerRequest::IsComplete {
            id: RESYNC_ID.to_owned(),
            code: String::new(),
        };
        self.send(&question)
            .await
            .map_err(|error| AdoptionError::OutOfStep(error.to_string()))?;
        let mut unfinished: Option<u64> = None;
        let mut interrupted = false;
        let (mut unread_stdout, mut unread_stderr) = (Unread::default(), Unread::default());
        let mut error = None;
        let mut deadline = Instant::now() + IDLE_ANSWER;
        loop {
            tokio::select! {
                event = self.events.recv() => match event {
                    Some(Ok(WorkerEvent::IsCompleteReply { id, .. })) if id == RESYNC_ID => break,
                    Some(Ok(event)) => {
                        if let WorkerEvent::Error { ename, evalue, traceback, .. } = &event {
                            error = Some(UnfinishedError {
                                ename: ename.clone(),
                                evalue: evalue.clone(),
                                traceback: traceback.clone(),
                            });
                        }
                        if let Some(count) = exec_frame_count(&event) {
                            unfinished = unfinished.max(Some(count));
                            if !interrupted && !matches!(event, WorkerEvent::Done { .. }) {
                                self.interrupt_now();
                                interrupted = true;
                                deadline = Instant::now() + grace;
                            }
                        }
                    }
                    Some(Err(error)) => return Err(AdoptionError::OutOfStep(error)),
                    None => return Err(AdoptionError::Gone),
                },
                chunk = self.stdout.recv(), if self.stdout_open => match chunk {
                    Some(chunk) => unread_stdout.keep(&chunk),
                    None => self.stdout_open = false,
                },
                chunk = self.stderr.recv(), if self.stderr_open => match chunk {
                    Some(chunk) => unread_stderr.keep(&chunk),
                    None => self.stderr_open = false,
                },
                _ = tokio::time::sleep_until(deadline) => {
                    if interrupted {
                        return Err(AdoptionError::OutOfStep(
                            "the execution it was running did not stop when interrupted".to_owned(),
                        ));
                    }
                    // Silent and still busy: an execution is running.
                    self.interrupt_now();
                    interrupted = true;
                    deadline = Instant::now() + grace;
                }
            }
        }
        let fence = ExecSpec {
            code: String::new(),
            execution_count: unfinished.unwrap_or(0),
            timeout: grace.max(Duration::from_secs(1)),
            interrupt_grace: grace,
            // What the fence reads before its own marker is the unfinished execution's tail.
            output_cap_bytes: UNREAD_OUTPUT_CAP,
            stdin: corral_core::StdinMode::Empty,
            store_history: false,
        };
        let outcome = self.execute(fence, None, None).await;
        if let Some(exit) = outcome.worker_exit {
            return Err(AdoptionError::OutOfStep(exit.description));
        }
        unread_stdout.keep(outcome.stdout.as_bytes());
        unread_stderr.keep(outcome.stderr.as_bytes());
        Ok(Resumed {
            unfinished_execution: unfinished,
            interrupted,
            unread_stdout: unread_stdout.text(),
            unread_stderr: unread_stderr.text(),
            error,
        })
    }

    /// SIGINT now, whatever the server believes the worker is doing.
    fn interrupt_now(&self) {
        if let Err(error) = corral_sandbox::interrupt(self.info.pid) {
            tracing::debug!(%error, "interrupt of an adopted worker failed");
        }
    }
}

/// The execution count an execution's frame belongs to (its id is the count).
fn exec_frame_count(event: &WorkerEvent) -> Option<u64> {
    let id = match event {
        WorkerEvent::Display { id, .. }
        | WorkerEvent::Result { id, .. }
        | WorkerEvent::Error { id, .. }
        | WorkerEvent::ClearOutput { id, .. }
        | WorkerEvent::InputRequest { id, .. }
        | WorkerEvent::Done { id, .. } => id,
        _ => return None,
    };
    id.parse().ok()
}
