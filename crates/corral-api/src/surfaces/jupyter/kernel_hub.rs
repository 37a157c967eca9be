//! One kernel's websocket side: every open connection to it, the IOPub stream they all see,
//! replies and input requests routed to the connection that asked, messages buffered while
//! no connection is open (replayed to the same client session when it reconnects, as
//! jupyter_server does), and each request of the Jupyter messaging protocol served through
//! the engine.
//!
//! Executions go through the session's one FIFO queue (`Engine::submit_with`), so requests
//! from every connection and every surface run in arrival order; so do the other shell
//! requests (`Engine::submit_query`), as a kernel serves its shell channel one message at a
//! time. Each shell request becomes a [`Step`] queued in the same order as its submission,
//! and one task per kernel turns the steps into messages one after the other: a request's
//! `idle` always comes before the next one's `busy`. Control and stdin messages are served
//! at once. Building and parsing messages is `corral-jupyter`'s job; moving frames is
//! `channels`'.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use corral_core::{
    CodeQuery, CodeQueryReply, ExecEvent, ExecRequest, Principal, SessionId, SessionRecord,
    StdinMode,
};
use corral_engine::{
    Engine, EngineError, ExecIo, PendingExecution, PendingQuery, SessionSignal,
    CLOSED_BY_CLIENT_REASON,
};
use corral_jupyter::protocol::{
    Channel, ExecuteRequest, ExecutionState, Header, InterruptReply, JupyterMessage,
    JupyterMessageContent, ReplyStatus, ShutdownReply,
};
use corral_jupyter::{replies, Kernel, KernelRequest};
use tokio::sync::mpsc;

/// Messages kept for a client while it has no connection open, at most.
const BUFFERED_MESSAGES: usize = 10_000;
/// Executions of the history a `history_request` reads at most.
const HISTORY_LIMIT: u32 = 1000;

/// What a connection's writer is handed.
#[derive(Debug)]
pub enum Outbound {
    Message(Channel, Box<JupyterMessage>),
    /// The kernel is gone: close the websocket.
    Close,
}

/// Every kernel's hub, by kernel id; a hub lives while its session does.
#[derive(Default)]
pub struct KernelHubs {
    hubs: Mutex<HashMap<SessionId, Arc<KernelHub>>>,
}

impl KernelHubs {
    fn map(&self) -> MutexGuard<'_, HashMap<SessionId, Arc<KernelHub>>> {
        self.hubs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Open websocket connections to the kernel.
    pub fn connections(&self, id: SessionId) -> u32 {
        self.map().get(&id).map_or(0, |hub| {
            u32::try_from(hub.state().connections.len()).unwrap_or(u32::MAX)
        })
    }

    /// The kernel's hub, made (and set following the session) on first use.
    pub async fn hub(
        self: &Arc<Self>,
        engine: &Engine,
        principal: &Principal,
        record: &SessionRecord,
    ) -> Result<Arc<KernelHub>, EngineError> {
        if let Some(hub) = self.map().get(&record.id) {
            return Ok(hub.clone());
        }
        let signals = engine.session_signals(principal, record.id).await?;
        let (language, language_version) = engine
            .info()
            .runtimes
            .iter()
            .find(|runtime| runtime.name == record.runtime)
            .map(|runtime| (runtime.language.clone(), runtime.language_version.clone()))
            .unwrap_or_default();
        let (hub, steps) = {
            let mut map = self.map();
            if let Some(hub) = map.get(&record.id) {
                return Ok(hub.clone());
            }
            let (steps, receiver) = mpsc::unbounded_channel();
            let hub = Arc::new(KernelHub {
                id: record.id,
                kernel: Kernel::new(),
                language,
                language_version,
                engine: engine.clone(),
                state: Mutex::new(HubState::default()),
                submitting: tokio::sync::Mutex::new(()),
                steps,
            });
            map.insert(record.id, hub.clone());
            (hub, receiver)
        };
        tokio::spawn(run_steps(Arc::downgrade(&hub), steps));
        tokio::spawn(follow_session(Arc::downgrade(self), hub.clone(), signals));
        Ok(hub)
    }
}

/// Turns the session's restarts into IOPub status messages, and its end into closing every
/// connection.
async fn follow_session(
    hubs: std::sync::Weak<KernelHubs>,
    hub: Arc<KernelHub>,
    mut signals: tokio::sync::broadcast::Receiver<SessionSignal>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match signals.recv().await {
            Ok(SessionSignal::Restarting) => {
                hub.abort_queued();
                hub.publish(hub.kernel.status(None, ExecutionState::Restarting));
            }
            Ok(SessionSignal::Restarted) => {
                hub.state().last_count = 0;
                hub.publish(hub.kernel.status(None, ExecutionState::Starting));
                hub.publish(hub.kernel.status(None, ExecutionState::Idle));
            }
            Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => break,
        }
    }
    hub.publish(hub.kernel.status(None, ExecutionState::Dead));
    let connections: Vec<mpsc::UnboundedSender<Outbound>> = {
        let mut state = hub.state();
        state.buffer = None;
        state
            .connections
            .drain()
            .map(|(_, connection)| connection.outbound)
            .collect()
    };
    for outbound in connections {
        let _ = outbound.send(Outbound::Close);
    }
    if let Some(hubs) = hubs.upgrade() {
        hubs.map().remove(&hub.id);
    }
}

/// One open websocket.
struct Connection {
    outbound: mpsc::UnboundedSender<Outbound>,
    /// The client session it belongs to (`?session_id=`), for buffering.
    session_key: Option<String>,
}

/// Messages for a client whose last connection closed.
struct Buffer {
    session_key: String,
    messages: VecDeque<(Channel, JupyterMessage)>,
    dropped: usize,
}

/// The input request an execution waits on: where its answer goes. Any connection may
/// answer (the asker may have reconnected since).
struct PendingInput {
    answer: mpsc::UnboundedSender<String>,
}

#[derive(Default)]
struct HubState {
    connections: HashMap<u64, Connection>,
    next_connection: u64,
    buffer: Option<Buffer>,
    pending_input: Option<PendingInput>,
    /// Jupyter executions submitted and not started yet: set to skip them.
    queued: Vec<Arc<AtomicBool>>,
    /// The Jupyter execution count of the last cell that started (counted from the
    /// interpreter's last restart), for the replies of cells that never ran.
    last_count: u64,
}

/// One kernel's connections and the requests they make.
pub struct KernelHub {
    id: SessionId,
    kernel: Kernel,
    language: String,
    language_version: String,
    engine: Engine,
    state: Mutex<HubState>,
    /// Held while a shell request is submitted to the engine and its step queued, so the
    /// steps are in the session queue's order.
    submitting: tokio::sync::Mutex<()>,
    steps: mpsc::UnboundedSender<Step>,
}

/// A shell request submitted to the engine, waiting for its turn to be answered.
enum Step {
    Execute(Box<ExecutionStep>),
    Answer(Box<AnswerStep>),
}

/// Any other shell request in the session's queue.
struct AnswerStep {
    principal: Principal,
    connection: u64,
    channel: Channel,
    parent: Header,
    request: KernelRequest,
    pending: Result<PendingQuery, EngineError>,
}

/// An `execute_request` in the session's queue.
struct ExecutionStep {
    connection: u64,
    parent: Header,
    execute: ExecuteRequest,
    cancelled: Arc<AtomicBool>,
    events: mpsc::UnboundedReceiver<ExecEvent>,
    /// Where the answers to its input requests go.
    answers: mpsc::UnboundedSender<String>,
    pending: Result<PendingExecution, EngineError>,
    /// Its `user_expressions`, queued right behind it.
    expressions: Option<Result<PendingQuery, EngineError>>,
}

/// Serves the steps of one kernel in order, until the kernel's hub is gone.
async fn run_steps(hub: std::sync::Weak<KernelHub>, mut steps: mpsc::UnboundedReceiver<Step>) {
    while let Some(step) = steps.recv().await {
        let Some(hub) = hub.upgrade() else { break };
        match step {
            Step::Execute(step) => hub.run_execution(*step).await,
            Step::Answer(step) => hub.answer(*step).await,
        }
    }
}

impl KernelHub {
    fn state(&self) -> MutexGuard<'_, HubState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a connection for client session `session_key`: its id and where its messages
    /// come out (first what was buffered for that client session, if anything).
    pub fn connect(&self, session_key: Option<String>) -> (u64, mpsc::UnboundedReceiver<Outbound>) {
        let (outbound, receiver) = mpsc::unbounded_channel();
        let mut state = self.state();
        if let Some(buffer) = state.buffer.take() {
            if session_key.as_deref() == Some(buffer.session_key.as_str()) {
                if buffer.dropped > 0 {
                    tracing::warn!(kernel_id = %self.id, dropped = buffer.dropped, "jupyter: the oldest buffered messages were dropped");
                }
                for (channel, message) in buffer.messages {
                    let _ = outbound.send(Outbound::Message(channel, Box::new(message)));
                }
            }
        }
        state.next_connection += 1;
        let id = state.next_connection;
        state.connections.insert(
            id,
            Connection {
                outbound,
                session_key,
            },
        );
        (id, receiver)
    }

    /// Removes a connection; when it was the last, messages are buffered for its client
    /// session from now on.
    pub fn disconnect(&self, connection: u64) {
        let mut state = self.state();
        let Some(gone) = state.connections.remove(&connection) else {
            return;
        };
        if state.connections.is_empty() {
            state.buffer = gone.session_key.map(|session_key| Buffer {
                session_key,
                messages: VecDeque::new(),
                dropped: 0,
            });
        }
    }

    /// A message for every connection (IOPub).
    fn publish(&self, message: JupyterMessage) {
        let mut state = self.state();
        if state.connections.is_empty() {
            state.keep(Channel::IOPub, message);
            return;
        }
        for connection in state.connections.values() {
            let _ = connection
                .outbound
                .send(Outbound::Message(Channel::IOPub, Box::new(message.clone())));
        }
    }

    /// A message for the connection that asked; kept for its client while it has none.
    fn send_to(&self, connection: u64, channel: Channel, message: JupyterMessage) {
        let mut state = self.state();
        match state.connections.get(&connection) {
            Some(open) => {
                let _ = open
                    .outbound
                    .send(Outbound::Message(channel, Box::new(message)));
            }
            None => state.keep(channel, message),
        }
    }

    fn status(&self, parent: &Header, state: ExecutionState) {
        self.publish(self.kernel.status(Some(parent), state));
    }

    /// Skips every Jupyter execution still waiting in the queue (they answer `aborted`).
    fn abort_queued(&self) {
        for cancelled in self.state().queued.drain(..) {
            cancelled.store(true, Ordering::SeqCst);
        }
    }

    /// Serves one message from `connection` (which acts as `principal`). Long work runs in
    /// tasks of its own, so the connection keeps reading (an interrupt, an input reply).
    pub async fn handle(
        self: &Arc<Self>,
        engine: &Engine,
        principal: &Principal,
        connection: u64,
        channel: Channel,
        message: JupyterMessage,
    ) {
        let request = KernelRequest::of(&channel, &message);
        let parent = message.header;
        match request {
            KernelRequest::Execute(execute) => {
                self.execute(principal, connection, parent, execute).await;
            }
            KernelRequest::InputReply { value } => {
                let pending = self.state().pending_input.take();
                match pending {
                    Some(pending) => {
                        let _ = pending.answer.send(value);
                    }
                    None => {
                        tracing::debug!(kernel_id = %self.id, "jupyter: an input reply nobody waits for");
                    }
                }
            }
            KernelRequest::Interrupt => {
                self.status(&parent, ExecutionState::Busy);
                let reply = match engine.interrupt(principal, self.id).await {
                    Ok(_) => InterruptReply::default(),
                    Err(error) => InterruptReply {
                        status: ReplyStatus::Error,
                        error: Some(Box::new(refused(&error))),
                    },
                };
                self.send_to(connection, channel, self.kernel.child(&parent, reply));
                self.status(&parent, ExecutionState::Idle);
            }
            KernelRequest::Shutdown { restart } => {
                let hub = self.clone();
                let engine = engine.clone();
                let principal = principal.clone();
                tokio::spawn(async move {
                    hub.shutdown(&engine, &principal, connection, channel, parent, restart)
                        .await;
                });
            }
            KernelRequest::Comm => {
                // No comm targets: nothing to open, nothing to answer (as ipykernel does
                // for an unknown target, minus the comm_close it sends).
                tracing::debug!(kernel_id = %self.id, "jupyter: comm message ignored");
            }
            KernelRequest::Unsupported(kind) => {
                tracing::debug!(kernel_id = %self.id, msg_type = %kind, "jupyter: message not served");
            }
            other => {
                self.queue_answer(principal, connection, channel, parent, other)
                    .await
            }
        }
    }

    /// `shutdown_request`: a restart keeps the kernel (same id, fresh interpreter), else the
    /// kernel is shut down after the reply.
    async fn shutdown(
        &self,
        engine: &Engine,
        principal: &Principal,
        connection: u64,
        channel: Channel,
        parent: Header,
        restart: bool,
    ) {
        self.status(&parent, ExecutionState::Busy);
        let outcome = if restart {
            engine.restart(principal, self.id).await.map(drop)
        } else {
            Ok(())
        };
        let reply = match &outcome {
            Ok(()) => ShutdownReply {
                restart,
                status: ReplyStatus::Ok,
                error: None,
            },
            Err(error) => ShutdownReply {
                restart,
                status: ReplyStatus::Error,
                error: Some(Box::new(refused(error))),
            },
        };
        self.send_to(connection, channel, self.kernel.child(&parent, reply));
        self.status(&parent, ExecutionState::Idle);
        if !restart {
            if let Err(error) = engine
                .close_session(principal, self.id, CLOSED_BY_CLIENT_REASON)
                .await
            {
                tracing::warn!(kernel_id = %self.id, %error, "jupyter: shutdown_request could not close the kernel");
            }
        }
    }

    /// The shell requests other than executions: queued in the session like an execution
    /// (a question for the interpreter, or a barrier), answered in turn.
    async fn queue_answer(
        &self,
        principal: &Principal,
        connection: u64,
        channel: Channel,
        parent: Header,
        request: KernelRequest,
    ) {
        let query = match &request {
            KernelRequest::Complete { code, cursor_pos } => CodeQuery::Complete {
                code: code.clone(),
                cursor_pos: *cursor_pos,
            },
            KernelRequest::Inspect {
                code,
                cursor_pos,
                detail_level,
            } => CodeQuery::Inspect {
                code: code.clone(),
                cursor_pos: *cursor_pos,
                detail_level: *detail_level,
            },
            KernelRequest::IsComplete { code } => CodeQuery::IsComplete { code: code.clone() },
            _ => CodeQuery::Barrier,
        };
        let _turn = self.submitting.lock().await;
        let pending = self.engine.submit_query(principal, self.id, query).await;
        let _ = self.steps.send(Step::Answer(Box::new(AnswerStep {
            principal: principal.clone(),
            connection,
            channel,
            parent,
            request,
            pending,
        })));
    }

    async fn answer(&self, step: AnswerStep) {
        let AnswerStep {
            principal,
            connection,
            channel,
            parent,
            request,
            pending,
        } = step;
        let principal = &principal;
        let answer = match pending {
            Ok(pending) => pending.answer().await,
            Err(error) => Err(error),
        };
        self.status(&parent, ExecutionState::Busy);
        let engine = &self.engine;
        let content: Result<JupyterMessageContent, EngineError> = match (request, answer) {
            (_, Err(error)) => Err(error),
            (KernelRequest::KernelInfo, Ok(_)) => {
                Ok(replies::kernel_info(&self.language, &self.language_version).into())
            }
            (KernelRequest::CommInfo, Ok(_)) => Ok(replies::comm_info_reply().into()),
            (KernelRequest::History(history), Ok(_)) => self
                .history(engine, principal, &history)
                .await
                .map(Into::into),
            (_, Ok(reply)) => replies::query_reply(&reply).ok_or_else(|| {
                EngineError::InvalidInput("the interpreter answered another question".into())
            }),
        };
        let content = content.unwrap_or_else(|error| {
            // A reply of the right type with status error, as a kernel that failed would send.
            error_reply(&parent.msg_type, &error)
        });
        self.send_to(connection, channel, self.kernel.child(&parent, content));
        self.status(&parent, ExecutionState::Idle);
    }

    async fn history(
        &self,
        engine: &Engine,
        principal: &Principal,
        request: &corral_jupyter::protocol::HistoryRequest,
    ) -> Result<corral_jupyter::protocol::HistoryReply, EngineError> {
        let record = engine.get_session(principal, self.id).await?;
        let (wanted, _) = replies::history_wants(request);
        let reach = wanted.map_or(HISTORY_LIMIT, |wanted| {
            u32::try_from(wanted)
                .unwrap_or(HISTORY_LIMIT)
                .min(HISTORY_LIMIT)
        });
        let after = match request {
            corral_jupyter::protocol::HistoryRequest::Tail { .. } => {
                record.execution_count.saturating_sub(u64::from(reach))
            }
            _ => record
                .execution_count
                .saturating_sub(u64::from(HISTORY_LIMIT)),
        };
        let page = engine
            .list_executions(principal, self.id, Some(after), HISTORY_LIMIT)
            .await?;
        Ok(replies::history_reply(request, &page.executions))
    }

    /// `execute_request`: queued in the session now (with its `user_expressions` right
    /// behind it), answered in turn by [`KernelHub::run_execution`].
    async fn execute(
        self: &Arc<Self>,
        principal: &Principal,
        connection: u64,
        parent: Header,
        execute: ExecuteRequest,
    ) {
        let cancelled = Arc::new(AtomicBool::new(false));
        let (events, event_receiver) = mpsc::unbounded_channel();
        let (answers, input) = mpsc::unbounded_channel();
        let request = ExecRequest {
            code: execute.code.clone(),
            timeout: None,
            stdin: if execute.allow_stdin {
                StdinMode::Requested
            } else {
                StdinMode::Refused
            },
            // As in IPython: only a cell stored in the history takes an execution count.
            store_history: execute.store_history && !execute.silent,
        };
        // stop_on_error: what this client queued behind a failing cell is skipped, decided
        // before the next cell can start.
        let on_failure: Option<corral_engine::OnFailure> = execute.stop_on_error.then(|| {
            let hub = Arc::downgrade(self);
            Box::new(move || {
                if let Some(hub) = hub.upgrade() {
                    hub.abort_queued();
                }
            }) as corral_engine::OnFailure
        });
        let io = ExecIo {
            events: Some(events),
            input: execute.allow_stdin.then_some(input),
            cancelled: Some(cancelled.clone()),
            on_failure,
        };
        let _turn = self.submitting.lock().await;
        self.state().queued.push(cancelled.clone());
        let pending = self
            .engine
            .submit_with(principal, self.id, request, io)
            .await;
        let expressions = match (&pending, &execute.user_expressions) {
            (Ok(_), Some(expressions)) if !expressions.is_empty() => {
                let query = CodeQuery::Evaluate {
                    expressions: expressions
                        .iter()
                        .map(|(name, expression)| (name.clone(), expression.clone()))
                        .collect(),
                };
                Some(self.engine.submit_query(principal, self.id, query).await)
            }
            _ => None,
        };
        let _ = self.steps.send(Step::Execute(Box::new(ExecutionStep {
            connection,
            parent,
            execute,
            cancelled,
            events: event_receiver,
            answers,
            pending,
            expressions,
        })));
    }

    /// Turns an execution's events into IOPub messages as they come, then its record into
    /// the `execute_reply`.
    async fn run_execution(&self, step: ExecutionStep) {
        let ExecutionStep {
            connection,
            parent,
            execute,
            cancelled,
            mut events,
            answers,
            pending,
            expressions,
        } = step;
        let pending = match pending {
            Ok(pending) => pending,
            Err(error) => {
                self.forget_queued(&cancelled);
                let count = self.state().last_count;
                self.unrun(connection, &parent, count, Some(&error));
                return;
            }
        };
        let mut started = None;
        while let Some(event) = events.recv().await {
            match event {
                // Jupyter numbers cells from the interpreter's (re)start.
                ExecEvent::Started { since_restart, .. } => {
                    self.forget_queued(&cancelled);
                    started = Some(since_restart);
                    self.state().last_count = since_restart;
                    self.status(&parent, ExecutionState::Busy);
                    if !execute.silent {
                        self.publish(self.kernel.child(
                            &parent,
                            replies::execute_input(&execute.code, since_restart),
                        ));
                    }
                }
                ExecEvent::InputRequest { prompt, password } => {
                    self.state().pending_input = Some(PendingInput {
                        answer: answers.clone(),
                    });
                    self.send_to(
                        connection,
                        Channel::Stdin,
                        self.kernel
                            .child(&parent, replies::input_request(&prompt, password)),
                    );
                }
                ExecEvent::Result { .. } if execute.silent => {}
                ExecEvent::Result { data, .. } => {
                    let result = ExecEvent::Result {
                        execution_count: started.unwrap_or_default(),
                        data,
                    };
                    if let Some(content) = replies::output(&result) {
                        self.publish(self.kernel.child(&parent, content));
                    }
                }
                other => {
                    if let Some(content) = replies::output(&other) {
                        self.publish(self.kernel.child(&parent, content));
                    }
                }
            }
        }
        self.state().pending_input = None;
        let outcome = pending.finish().await;
        self.forget_queued(&cancelled);
        let evaluated = match expressions {
            Some(Ok(pending)) => pending.answer().await.ok(),
            Some(Err(_)) | None => None,
        };
        match outcome {
            Ok(record) => {
                let expressions = match evaluated {
                    Some(CodeQueryReply::Evaluate { results })
                        if record.status == corral_core::ExecutionStatus::Ok =>
                    {
                        results
                            .iter()
                            .map(|(name, value)| (name.clone(), replies::user_expression(value)))
                            .collect()
                    }
                    _ => HashMap::new(),
                };
                self.send_to(
                    connection,
                    Channel::Shell,
                    self.kernel.child(
                        &parent,
                        replies::execute_reply(&record, started.unwrap_or_default(), expressions),
                    ),
                );
                self.status(&parent, ExecutionState::Idle);
            }
            Err(error) => {
                let count = started.unwrap_or_else(|| self.state().last_count);
                let refusal = match error {
                    EngineError::ExecutionCancelled(_) => None,
                    other => Some(other),
                };
                self.unrun(connection, &parent, count, refusal.as_ref());
            }
        }
    }

    fn forget_queued(&self, cancelled: &Arc<AtomicBool>) {
        self.state()
            .queued
            .retain(|queued| !Arc::ptr_eq(queued, cancelled));
    }

    /// The messages for an execution that did not run: aborted (no error), or refused.
    fn unrun(&self, connection: u64, parent: &Header, count: u64, error: Option<&EngineError>) {
        self.status(parent, ExecutionState::Busy);
        let refusal = error.map(|error| {
            let refusal = refused(error);
            self.publish(self.kernel.child(
                parent,
                replies::refusal_output(&refusal.ename, &refusal.evalue),
            ));
            refusal
        });
        let reply = replies::unrun_execute_reply(
            count,
            refusal
                .as_ref()
                .map(|refusal| (refusal.ename.as_str(), refusal.evalue.as_str())),
        );
        self.send_to(connection, Channel::Shell, self.kernel.child(parent, reply));
        self.status(parent, ExecutionState::Idle);
    }
}

impl HubState {
    /// Keeps a message for the client whose connection closed (none kept when nobody
    /// will reconnect for it).
    fn keep(&mut self, channel: Channel, message: JupyterMessage) {
        if let Some(buffer) = &mut self.buffer {
            if buffer.messages.len() >= BUFFERED_MESSAGES {
                buffer.messages.pop_front();
                buffer.dropped += 1;
            }
            buffer.messages.push_back((channel, message));
        }
    }
}

/// An engine refusal as a Jupyter error: a name a person reads, and the engine's sentence
/// (never internal detail for server-side failures).
fn refused(error: &EngineError) -> corral_jupyter::protocol::ReplyError {
    let (ename, evalue) = match error {
        EngineError::QueueFull { .. } => ("QueueFull", error.to_string()),
        EngineError::NotAccepting(_) => ("NotAccepting", error.to_string()),
        EngineError::ShuttingDown => ("ShuttingDown", error.to_string()),
        EngineError::QuotaExceeded { .. } => ("QuotaExceeded", error.to_string()),
        EngineError::InvalidInput(detail) => ("ValueError", detail.clone()),
        EngineError::SessionNotRunning { .. } | EngineError::SessionNotFound(_) => {
            ("KernelDead", "the kernel is not running".to_owned())
        }
        EngineError::QueryFailed { .. } => ("TimeoutError", error.to_string()),
        other => {
            tracing::error!(error = %other, "jupyter: a kernel request failed");
            (
                "KernelError",
                "the kernel could not serve this request".to_owned(),
            )
        }
    };
    corral_jupyter::protocol::ReplyError {
        ename: ename.to_owned(),
        evalue,
        traceback: Vec::new(),
    }
}

/// A reply of the type `request_type` asks for, with status `error`.
fn error_reply(request_type: &str, error: &EngineError) -> JupyterMessageContent {
    let refusal = refused(error);
    let reply_type = request_type.replace("_request", "_reply");
    let content = serde_json::json!({
        "status": "error",
        "ename": refusal.ename,
        "evalue": refusal.evalue,
        "traceback": refusal.traceback,
    });
    match JupyterMessageContent::from_type_and_content(&reply_type, content.clone()) {
        Ok(typed) => typed,
        Err(_) => JupyterMessageContent::UnknownMessage(corral_jupyter::protocol::UnknownMessage {
            msg_type: reply_type,
            content,
        }),
    }
}
