//! One live session: the task that owns its worker and runs its executions in order.
//!
//! The task is the only place a session's worker is touched. Clients reach it through a
//! bounded job queue (executions, in arrival order) and an unbounded control channel (close,
//! restart, drain) that is served even while an execution runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::Utc;
use corral_core::{
    CodeQuery, CodeQueryReply, ExecEvent, ExecutionRecord, ExecutionStatus, SessionRecord,
    SessionState, StdinMode,
};
use corral_store::{ExecutionWrite, GroupCommit, Store};
use corral_worker::{ExecOutcome, ExecSpec, InterruptHandle, QueryError, Worker, WorkerConfig};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::{measurements, EngineError};

/// Grace given to a worker asked to shut down before it is killed.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);
/// Reason recorded for a session closed because it was drained and its queue ran empty.
pub const DRAINED_REASON: &str = "drained";

/// How long the interpreter has to answer a [`CodeQuery`] before it is interrupted.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// What waits in a session's queue, served in arrival order.
pub(crate) enum Job {
    Execute(ExecJob),
    Query(QueryJob),
}

/// An execution waiting in a session's queue.
pub(crate) struct ExecJob {
    pub code: String,
    pub timeout: Duration,
    pub stdin: StdinMode,
    /// Takes a new execution count and is stored (see [`corral_core::ExecRequest`]).
    pub store_history: bool,
    pub events: Option<mpsc::UnboundedSender<ExecEvent>>,
    /// Answers to the execution's input requests (with [`StdinMode::Requested`]).
    pub input: Option<mpsc::UnboundedReceiver<String>>,
    /// Set before the execution starts: it is skipped (answered
    /// [`EngineError::ExecutionCancelled`]) instead of run.
    pub cancelled: Option<Arc<AtomicBool>>,
    pub on_failure: Option<crate::engine::OnFailure>,
    pub reply: oneshot::Sender<Result<ExecutionRecord, EngineError>>,
}

/// A question about code, answered by the interpreter between executions.
pub(crate) struct QueryJob {
    pub query: CodeQuery,
    pub reply: oneshot::Sender<Result<CodeQueryReply, EngineError>>,
}

/// What happens to a live session's interpreter, for whoever follows the session (e.g. a
/// Jupyter client's status). The session's end closes the channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionSignal {
    /// A restart began: the interpreter and its state are going away.
    Restarting,
    /// A fresh interpreter is ready.
    Restarted,
}

/// Signals a follower may miss before it is dropped behind.
pub(crate) const SIGNAL_CAPACITY: usize = 16;

/// Out-of-band requests, served even while an execution runs.
pub(crate) enum Control {
    /// Stop the worker and end the session as `closed` with this reason.
    Close {
        reason: String,
        reply: oneshot::Sender<SessionRecord>,
    },
    /// Replace the worker with a fresh one; the running execution (if any) is killed.
    Restart {
        reply: oneshot::Sender<Result<SessionRecord, EngineError>>,
    },
    /// The server stops without ending the session (`shutdown_mode = "detach"`): the task
    /// lets go of its worker, which waits for the next server, and leaves the record as it
    /// is. A running execution is left to finish first.
    Detach { reply: oneshot::Sender<()> },
    /// [`LiveSession::close_when_drained`] was set: close the session (reason
    /// [`DRAINED_REASON`]) once nothing is running or queued, if it is still set then. The
    /// running execution is not disturbed.
    Drain,
}

/// What the rest of the engine holds of a live session.
pub(crate) struct LiveSession {
    pub record: Mutex<SessionRecord>,
    pub jobs: mpsc::Sender<Job>,
    pub signals: broadcast::Sender<SessionSignal>,
    /// The session's execution count when its interpreter last (re)started.
    pub count_at_restart: std::sync::atomic::AtomicU64,
    pub control: mpsc::UnboundedSender<Control>,
    pub interrupt: Mutex<InterruptHandle>,
    /// The session closes once its queue is empty. Set together with `accepting_executions =
    /// false` and cleared by accepting executions again, both under the record's lock.
    pub close_when_drained: AtomicBool,
}

impl LiveSession {
    pub fn record(&self) -> MutexGuard<'_, SessionRecord> {
        // A poisoned lock only means another thread panicked mid-update; the record is
        // still the best we have.
        self.record
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn snapshot(&self) -> SessionRecord {
        self.record().clone()
    }
}

/// Everything the task needs from the engine.
pub(crate) struct TaskContext {
    pub store: Arc<dyn Store>,
    /// Records finished executions (group commit).
    pub executions: GroupCommit,
    pub worker_config: WorkerConfig,
    pub workspace: std::path::PathBuf,
    pub interrupt_grace: Duration,
    pub output_cap_bytes: usize,
    /// Output bytes kept in the stored (and returned) record of an execution.
    pub stored_output_cap_bytes: usize,
    /// Executions kept in the session's history.
    pub executions_kept: u64,
    /// Called once when the session leaves the live set (closed or dead).
    pub on_end: Box<dyn FnOnce() + Send + Sync>,
}

/// Runs a session until it is closed, dies or is abandoned.
pub(crate) async fn run_session(
    live: Arc<LiveSession>,
    mut worker: Worker,
    mut jobs: mpsc::Receiver<Job>,
    mut control: mpsc::UnboundedReceiver<Control>,
    context: TaskContext,
) {
    let end = loop {
        if live.close_when_drained.load(Ordering::SeqCst) && jobs.is_empty() {
            break End::Closed(DRAINED_REASON.to_owned(), None);
        }
        tokio::select! {
            biased;
            request = control.recv() => match request {
                // Only a wake-up: the check above decides.
                Some(Control::Drain) => {}
                Some(request) => match handle_control(request, &live, &mut worker, &context).await {
                    Flow::Continue => {}
                    Flow::End(end) => break end,
                },
                // The engine dropped its handle: treat as abandonment.
                None => break End::Abandoned,
            },
            exit = worker.idle_until_exit() => {
                break End::Died(exit.description);
            }
            job = jobs.recv() => match job {
                Some(Job::Execute(job)) => {
                    match run_job(job, &live, &mut worker, &mut control, &context).await {
                        Flow::Continue => {}
                        Flow::End(end) => break end,
                    }
                }
                Some(Job::Query(job)) => run_query(job, &live, &mut worker).await,
                None => break End::Abandoned,
            },
        }
    };

    if let End::Detached(reply) = end {
        worker.detach();
        jobs.close();
        while let Ok(job) = jobs.try_recv() {
            match job {
                Job::Execute(job) => drop(job.reply.send(Err(EngineError::ShuttingDown))),
                Job::Query(job) => drop(job.reply.send(Err(EngineError::ShuttingDown))),
            }
        }
        (context.on_end)();
        let _ = reply.send(());
        return;
    }
    worker.kill().await;
    worker.remove_workspace();
    let reason = match &end {
        End::Died(reason) => Some((SessionState::Dead, reason.clone())),
        End::Closed(reason, _) => Some((SessionState::Closed, reason.clone())),
        End::Abandoned | End::Detached(_) => None,
    };
    let mut final_record = live.snapshot();
    if let Some((state, reason)) = reason {
        let id = live.snapshot().id;
        match state {
            SessionState::Dead => tracing::warn!(session_id = %id, %reason, "session died"),
            _ => tracing::info!(session_id = %id, %reason, "session closed"),
        }
        measurements::session_ended(state, &reason);
        final_record = finish_record(&live, state, reason);
        if let Err(error) = context.store.update_session(&final_record).await {
            tracing::error!(session_id = %final_record.id, %error, "could not store the session's end");
        }
    }
    // Whatever is still queued will never run.
    jobs.close();
    while let Ok(job) = jobs.try_recv() {
        match job {
            Job::Execute(job) => drop(job.reply.send(Err(not_running(&final_record)))),
            Job::Query(job) => drop(job.reply.send(Err(not_running(&final_record)))),
        }
    }
    (context.on_end)();
    match end {
        End::Closed(_, Some(reply)) => {
            let _ = reply.send(final_record);
        }
        End::Closed(_, None) => {}
        End::Died(_) | End::Abandoned | End::Detached(_) => {}
    }
}

enum End {
    Died(String),
    /// Left running for the next server.
    Detached(oneshot::Sender<()>),
    /// Closed with this reason; the reply goes to whoever asked, if anyone did.
    Closed(String, Option<oneshot::Sender<SessionRecord>>),
    Abandoned,
}

enum Flow {
    Continue,
    End(End),
}

fn not_running(record: &SessionRecord) -> EngineError {
    EngineError::SessionNotRunning {
        id: record.id,
        state: record.state,
        reason: record.state_reason.clone(),
    }
}

fn finish_record(live: &LiveSession, state: SessionState, reason: String) -> SessionRecord {
    let mut record = live.record();
    if record.state.can_become(state) {
        record.state = state;
        record.state_reason = Some(reason);
        record.last_activity_at = Utc::now();
    }
    if record.state.is_terminal() {
        // Nothing runs without a worker (a restart of a dead session accepts again).
        record.accepting_executions = false;
    }
    record.clone()
}

async fn handle_control(
    request: Control,
    live: &Arc<LiveSession>,
    worker: &mut Worker,
    context: &TaskContext,
) -> Flow {
    match request {
        Control::Close { reason, reply } => Flow::End(End::Closed(reason, Some(reply))),
        Control::Detach { reply } => Flow::End(End::Detached(reply)),
        Control::Restart { reply } => match restart_worker(live, worker, context).await {
            Ok(record) => {
                let _ = reply.send(Ok(record));
                Flow::Continue
            }
            Err(reason) => {
                let record = finish_record(live, SessionState::Dead, reason.clone());
                let _ = reply.send(Err(not_running(&record)));
                Flow::End(End::Died(reason))
            }
        },
        // Checked by `run_session` between executions.
        Control::Drain => Flow::Continue,
    }
}

async fn restart_worker(
    live: &Arc<LiveSession>,
    worker: &mut Worker,
    context: &TaskContext,
) -> Result<SessionRecord, String> {
    {
        let mut record = live.record();
        record.state = SessionState::Starting;
    }
    // Nobody following the session is an error here.
    let _ = live.signals.send(SessionSignal::Restarting);
    let fresh = Worker::start(&context.worker_config, context.workspace.clone())
        .await
        .map_err(|error| format!("restart failed: {error}"))?;
    let old = std::mem::replace(worker, fresh);
    old.shutdown(SHUTDOWN_GRACE).await;
    *live
        .interrupt
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = worker.interrupt_handle();
    let record = {
        let mut record = live.record();
        record.state = SessionState::Idle;
        record.last_activity_at = Utc::now();
        live.count_at_restart
            .store(record.execution_count, Ordering::SeqCst);
        record.clone()
    };
    if let Err(error) = context.store.update_session(&record).await {
        tracing::error!(session_id = %record.id, %error, "could not store the restart");
    }
    let _ = live.signals.send(SessionSignal::Restarted);
    Ok(record)
}

/// Answers a question about code; a worker that does not answer in time is interrupted.
async fn run_query(job: QueryJob, live: &LiveSession, worker: &mut Worker) {
    let answer = worker.query(job.query, QUERY_TIMEOUT).await;
    let reply = answer.map_err(|error| {
        let id = live.snapshot().id;
        match error {
            QueryError::Timeout(_) => EngineError::QueryFailed {
                id,
                reason: "the interpreter did not answer in time".to_owned(),
            },
            QueryError::WorkerGone => EngineError::QueryFailed {
                id,
                reason: "the interpreter stopped".to_owned(),
            },
        }
    });
    let _ = job.reply.send(reply);
}

async fn run_job(
    job: ExecJob,
    live: &Arc<LiveSession>,
    worker: &mut Worker,
    control: &mut mpsc::UnboundedReceiver<Control>,
    context: &TaskContext,
) -> Flow {
    if job
        .cancelled
        .as_ref()
        .is_some_and(|cancelled| cancelled.load(Ordering::SeqCst))
    {
        let _ = job
            .reply
            .send(Err(EngineError::ExecutionCancelled(live.snapshot().id)));
        return Flow::Continue;
    }
    let started_at = Utc::now();
    let execution_count = {
        let mut record = live.record();
        if job.store_history {
            record.execution_count += 1;
        }
        record.state = SessionState::Busy;
        record.last_activity_at = started_at;
        record.execution_count
    };
    let clock = std::time::Instant::now();
    let spec = ExecSpec {
        code: job.code.clone(),
        execution_count,
        timeout: job.timeout,
        interrupt_grace: context.interrupt_grace,
        output_cap_bytes: context.output_cap_bytes,
        stdin: job.stdin,
        store_history: job.store_history,
    };
    if let Some(events) = &job.events {
        let since_restart =
            execution_count.saturating_sub(live.count_at_restart.load(Ordering::SeqCst));
        let _ = events.send(ExecEvent::Started {
            execution_count,
            since_restart,
        });
    }

    // Close and restart pre-empt a running execution; the execution is then recorded as
    // killed. A drain lets it run on.
    let mut pending_control = None;
    let mut pending_detach = None;
    let outcome = {
        let execution = worker.execute(spec, job.events, job.input);
        tokio::pin!(execution);
        loop {
            tokio::select! {
                outcome = &mut execution => break outcome,
                request = control.recv(), if pending_detach.is_none() => match request {
                    Some(Control::Drain) => {}
                    Some(Control::Detach { reply }) => pending_detach = Some(reply),
                    Some(request) => {
                        pending_control = Some(request);
                        break killed_outcome(
                            "the session was closed or restarted during the execution",
                        );
                    }
                    None => break killed_outcome("the server is shutting down"),
                },
            }
        }
    };
    if pending_control.is_some() {
        worker.kill().await;
    }

    let finished_at = Utc::now();
    let worker_died = outcome.worker_exit.clone();
    let mut execution = ExecutionRecord {
        session_id: live.snapshot().id,
        execution_count,
        code: job.code,
        status: outcome.status,
        result: outcome.result,
        stdout: outcome.stdout,
        stderr: outcome.stderr,
        outputs: outcome.outputs,
        error: outcome.error,
        duration_ms: u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX),
        truncated: outcome.truncated,
        started_at,
        finished_at,
    };
    let session = {
        let mut record = live.record();
        record.last_activity_at = finished_at;
        match (&worker_died, &pending_control) {
            (_, Some(_)) => {}
            (Some(exit), None) => {
                record.state = SessionState::Dead;
                record.state_reason = Some(exit.description.clone());
            }
            (None, None) => record.state = SessionState::Idle,
        }
        record.clone()
    };
    measurements::execution_finished(execution.status, clock.elapsed());
    if execution.status != ExecutionStatus::Ok {
        if let Some(on_failure) = job.on_failure {
            on_failure();
        }
    }
    execution.cap_stored_output(context.stored_output_cap_bytes);
    let session_id = session.id;
    let stored = if job.store_history {
        let write = ExecutionWrite {
            execution,
            session,
            keep_last: context.executions_kept,
        };
        context
            .executions
            .record(write)
            .await
            .map(|write| write.execution)
            .map_err(|error| (error, session_id))
    } else {
        // Not kept in the history: only the session's own change is written.
        context
            .store
            .update_session(&session)
            .await
            .map(|()| execution)
            .map_err(|error| (error, session_id))
    };
    let reply = match stored {
        Ok(execution) => Ok(execution),
        Err((error, session_id)) => {
            tracing::error!(%session_id, %error, "could not store an execution");
            Err(EngineError::Store(error))
        }
    };
    let _ = job.reply.send(reply);

    if let Some(request) = pending_control {
        return handle_control(request, live, worker, context).await;
    }
    if let Some(reply) = pending_detach {
        if worker_died.is_none() {
            return Flow::End(End::Detached(reply));
        }
    }
    match worker_died {
        Some(exit) => Flow::End(End::Died(exit.description)),
        None => Flow::Continue,
    }
}

fn killed_outcome(reason: &str) -> ExecOutcome {
    ExecOutcome {
        status: ExecutionStatus::Killed,
        result: None,
        stdout: String::new(),
        stderr: String::new(),
        outputs: Vec::new(),
        error: Some(corral_core::ErrorInfo {
            ename: "ExecutionKilled".into(),
            evalue: reason.into(),
            traceback: Vec::new(),
        }),
        truncated: false,
        worker_exit: None,
    }
}
