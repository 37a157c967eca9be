//! Running one execution on a worker: send `exec`, collect frames and pipe output until
//! `done` plus both sync markers, enforce the timeout (interrupt, then kill), cap output.

use std::sync::atomic::Ordering;
use std::time::Duration;

use corral_core::{
    ErrorInfo, ExecEvent, ExecutionStatus, MimeBundle, OutputItem, StdinMode, StreamName,
};
use corral_protocol::{DoneStatus, Scanned, SyncMarker, SyncScan, WorkerEvent, WorkerRequest};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::stream_text::StreamText;
use crate::worker::{Worker, WorkerExit};

/// How long a rich output frame waits for the output printed before it (its fence) to be
/// read from the pipes; after that it is emitted anyway.
const FENCE_WAIT: Duration = Duration::from_secs(2);
/// How long to keep reading pipes after the worker died, for its last words.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);
/// How often a JavaScript worker is sent a client's interrupt again while its execution runs.
const INTERRUPT_REPEAT: Duration = Duration::from_millis(250);

/// One execution to run.
#[derive(Clone, Debug)]
pub struct ExecSpec {
    pub code: String,
    pub execution_count: u64,
    pub timeout: Duration,
    /// After the timeout's interrupt, how long the code has to stop before the kill.
    pub interrupt_grace: Duration,
    pub output_cap_bytes: usize,
    /// What `input()` does; with [`StdinMode::Requested`] the answers come on the
    /// `input` channel given to [`Worker::execute`].
    pub stdin: StdinMode,
    /// Whether the result is bound to `_` and `_<execution_count>`.
    pub store_history: bool,
}

/// What an execution produced. When `worker_exit` is set the worker is gone and the session
/// must be marked dead with that reason.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecOutcome {
    pub status: ExecutionStatus,
    pub result: Option<MimeBundle>,
    pub stdout: String,
    pub stderr: String,
    pub outputs: Vec<OutputItem>,
    pub error: Option<ErrorInfo>,
    pub truncated: bool,
    pub worker_exit: Option<WorkerExit>,
}

/// Collects outputs in order, merging adjacent chunks of the same stream.
struct Collector {
    outputs: Vec<OutputItem>,
    events: Option<mpsc::UnboundedSender<ExecEvent>>,
    /// Bytes left for display outputs and the result (their JSON size).
    rich_budget: usize,
    rich_truncated: bool,
}

/// Display outputs and the result together may use this many times the per-stream cap.
const RICH_OUTPUT_CAP_FACTOR: usize = 4;

/// Largest `text/plain` kept of a result that does not fit the budget.
const FALLBACK_TEXT_CHARS: usize = 10_000;

impl Collector {
    /// Charges `bundle` to the rich-output budget; false when it does not fit.
    fn charge(&mut self, bundle: &MimeBundle) -> bool {
        let size = serde_json::to_vec(bundle)
            .map(|bytes| bytes.len())
            .unwrap_or(usize::MAX);
        if size <= self.rich_budget {
            self.rich_budget -= size;
            true
        } else {
            self.rich_truncated = true;
            false
        }
    }

    /// A result that fits the budget: the bundle, else its `text/plain` shortened.
    fn fit_result(&mut self, data: MimeBundle) -> MimeBundle {
        if self.charge(&data) {
            return data;
        }
        let text: String = data
            .get("text/plain")
            .and_then(|value| value.as_str())
            .unwrap_or("")
            .chars()
            .take(FALLBACK_TEXT_CHARS)
            .collect();
        let mut fallback = MimeBundle::new();
        fallback.insert("text/plain".to_owned(), serde_json::Value::String(text));
        fallback
    }

    fn stream(&mut self, name: StreamName, text: String) {
        if text.is_empty() {
            return;
        }
        if let Some(events) = &self.events {
            let _ = events.send(ExecEvent::Stream {
                name,
                text: text.clone(),
            });
        }
        if let Some(OutputItem::Stream {
            name: last_name,
            text: last_text,
        }) = self.outputs.last_mut()
        {
            if *last_name == name {
                last_text.push_str(&text);
                return;
            }
        }
        self.outputs.push(OutputItem::Stream { name, text });
    }

    fn emit(&self, event: ExecEvent) {
        if let Some(events) = &self.events {
            let _ = events.send(event);
        }
    }
}

/// Per-pipe state during one execution.
struct PipeState {
    name: StreamName,
    scan: SyncScan,
    text: StreamText,
    /// The marker was found or the pipe closed: the cell's output on this stream is complete.
    synced: bool,
    /// The end of the text (an incomplete character) was emitted.
    finished: bool,
    /// The highest fence seen on this stream.
    fence_passed: u64,
    /// Output read after a fence whose rich frame is not emitted yet, each part with the
    /// fence it follows; emitted once that frame is.
    pending: Vec<(u64, Vec<u8>)>,
}

impl PipeState {
    fn new(name: StreamName, marker: &SyncMarker, cap: usize, open: bool) -> Self {
        PipeState {
            name,
            scan: SyncScan::new(marker.clone()),
            text: StreamText::new(cap),
            synced: !open,
            finished: !open,
            fence_passed: 0,
            pending: Vec::new(),
        }
    }

    /// Whether everything printed before fence `fence` has been read.
    fn passed(&self, fence: u64) -> bool {
        self.synced || self.fence_passed >= fence
    }

    /// Takes a chunk (or the end of the pipe); `emitted` is the highest fence whose frame
    /// has been emitted: output after a later fence waits for that fence's frame.
    fn chunk(
        &mut self,
        chunk: Option<Vec<u8>>,
        open: &mut bool,
        collector: &mut Collector,
        emitted: u64,
    ) {
        match chunk {
            Some(bytes) => {
                if self.synced {
                    // Printed after the cell finished (a background process): not this
                    // execution's output.
                    return;
                }
                for item in self.scan.feed(&bytes) {
                    match item {
                        Scanned::Fence(fence) => self.fence_passed = self.fence_passed.max(fence),
                        Scanned::Output(output) => self.output(output, collector, emitted),
                    }
                }
                self.synced = self.scan.found();
            }
            None => {
                *open = false;
                if !self.synced {
                    let held = self.scan.finish();
                    self.output(held, collector, emitted);
                    self.synced = true;
                }
            }
        }
        self.release(collector, emitted);
    }

    fn output(&mut self, output: Vec<u8>, collector: &mut Collector, emitted: u64) {
        if self.fence_passed > emitted || !self.pending.is_empty() {
            self.pending.push((self.fence_passed, output));
        } else {
            let text = self.text.push(&output);
            collector.stream(self.name, text);
        }
    }

    /// Emits what was kept back for frames up to fence `emitted`, and the end of the text
    /// once the stream is complete and nothing is kept back.
    fn release(&mut self, collector: &mut Collector, emitted: u64) {
        let ready = self
            .pending
            .iter()
            .take_while(|(fence, _)| *fence <= emitted)
            .count();
        let mut text = String::new();
        for (_, output) in self.pending.drain(..ready) {
            text.push_str(&self.text.push(&output));
        }
        if self.synced && !self.finished && self.pending.is_empty() {
            // The cell's output ends here: an incomplete character becomes U+FFFD.
            text.push_str(&self.text.finish());
            self.finished = true;
        }
        collector.stream(self.name, text);
    }
}

impl Worker {
    /// Before a rich output frame is emitted: reads the pipes until both have passed the
    /// frame's fence (or closed, or [`FENCE_WAIT`] ran out), so what the cell printed before
    /// the frame comes before it; what it printed after is kept back (see
    /// [`PipeState::release`]).
    async fn await_fence(
        &mut self,
        fence: Option<u64>,
        emitted: u64,
        stdout: &mut PipeState,
        stderr: &mut PipeState,
        collector: &mut Collector,
    ) {
        let Some(fence) = fence else { return };
        let deadline = Instant::now() + FENCE_WAIT;
        while !(stdout.passed(fence) && stderr.passed(fence)) {
            tokio::select! {
                chunk = self.stdout.recv(), if self.stdout_open => {
                    stdout.chunk(chunk, &mut self.stdout_open, collector, emitted);
                }
                chunk = self.stderr.recv(), if self.stderr_open => {
                    stderr.chunk(chunk, &mut self.stderr_open, collector, emitted);
                }
                _ = tokio::time::sleep_until(deadline) => break,
                else => break,
            }
        }
    }

    /// Runs one execution. Stream/display/result/error events are sent to `events` as they
    /// happen (when given); the full outcome is returned at the end. With
    /// [`StdinMode::Requested`], each [`ExecEvent::InputRequest`] is answered by the next
    /// value on `input`; should `input` close (or be missing) while the code waits, the
    /// code is interrupted.
    pub async fn execute(
        &mut self,
        spec: ExecSpec,
        events: Option<mpsc::UnboundedSender<ExecEvent>>,
        mut input: Option<mpsc::UnboundedReceiver<String>>,
    ) -> ExecOutcome {
        let request_id = format!("{}", spec.execution_count);
        let sync_token = sync_token();
        let marker = SyncMarker::new(&sync_token);
        let mut collector = Collector {
            outputs: Vec::new(),
            events,
            rich_budget: spec.output_cap_bytes.saturating_mul(RICH_OUTPUT_CAP_FACTOR),
            rich_truncated: false,
        };
        let mut stdout = PipeState::new(
            StreamName::Stdout,
            &marker,
            spec.output_cap_bytes,
            self.stdout_open,
        );
        let mut stderr = PipeState::new(
            StreamName::Stderr,
            &marker,
            spec.output_cap_bytes,
            self.stderr_open,
        );
        let mut result = None;
        let mut error = None;
        let mut done = false;
        // The highest fence whose rich frame has been emitted.
        let mut emitted_fence = 0u64;
        let mut worker_exit = self.exited.clone();
        let mut timed_out = false;
        let mut killed_for_timeout = false;
        // An input request is outstanding.
        let mut awaiting_input = false;
        self.interrupt_requested.store(false, Ordering::SeqCst);
        // Without a way to answer, reading input is refused rather than left waiting.
        let stdin = match (spec.stdin, &input) {
            (StdinMode::Requested, None) => StdinMode::Refused,
            (mode, _) => mode,
        };

        let request = WorkerRequest::Exec {
            id: request_id.clone(),
            code: spec.code,
            execution_count: spec.execution_count,
            sync_token,
            stdin,
            store_history: spec.store_history,
        };
        // From here until `done`, client interrupts are for this execution; one that comes
        // before the frame is written is sent right after it.
        self.exec_sent.store(false, Ordering::SeqCst);
        self.interrupt_deferred.store(false, Ordering::SeqCst);
        self.executing.store(true, Ordering::SeqCst);
        if worker_exit.is_none() {
            if let Err(send_error) = self.send(&request).await {
                tracing::debug!(%send_error, "could not send exec; waiting for the worker to exit");
                self.kill().await;
                worker_exit = Some(self.mark_exited(WorkerExit {
                    description: "worker stopped answering on its control channel".to_owned(),
                }));
            }
        }
        self.exec_sent.store(true, Ordering::SeqCst);
        if worker_exit.is_none() && self.interrupt_deferred.swap(false, Ordering::SeqCst) {
            if let Err(error) = corral_sandbox::interrupt(self.info.pid) {
                tracing::warn!(pid = self.info.pid, %error, "could not interrupt worker");
            }
        }

        let interrupt_at = Instant::now() + spec.timeout;
        // One timer each for the whole execution (not one per turn of the loop).
        let interrupt_timer = tokio::time::sleep_until(interrupt_at);
        tokio::pin!(interrupt_timer);
        let kill_timer = tokio::time::sleep_until(interrupt_at + spec.interrupt_grace);
        tokio::pin!(kill_timer);
        let mut drain_until: Option<Instant> = worker_exit.as_ref().map(|_| Instant::now());
        // Node.js drops a SIGINT that lands while `vm` swaps its SIGINT listeners (around the
        // synchronous part of every cell): a JavaScript worker is sent a client's interrupt
        // again until the execution ends. Its driver ignores one that finds no cell running.
        let repeats_interrupts = self.info.language == "javascript";
        let mut repeat = tokio::time::interval(INTERRUPT_REPEAT);
        repeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        loop {
            let finished = done && stdout.synced && stderr.synced;
            if finished {
                break;
            }
            if let Some(until) = drain_until {
                if (stdout.synced && stderr.synced) || Instant::now() >= until {
                    break;
                }
            }
            tokio::select! {
                event = self.events.recv(), if self.events_open && worker_exit.is_none() => match event {
                    Some(Ok(event)) => match event {
                        WorkerEvent::Display { id, data, metadata, display_id, update, fence } if id == request_id => {
                            self.await_fence(fence, emitted_fence, &mut stdout, &mut stderr, &mut collector).await;
                            if collector.charge(&data) {
                                collector.outputs.push(OutputItem::Display { data: data.clone(), metadata: metadata.clone(), display_id: display_id.clone(), update });
                                collector.emit(ExecEvent::Display { data, metadata, display_id, update });
                            }
                            emitted_fence = emitted_fence.max(fence.unwrap_or(0));
                            stdout.release(&mut collector, emitted_fence);
                            stderr.release(&mut collector, emitted_fence);
                        }
                        WorkerEvent::Result { id, execution_count, data, fence, .. } if id == request_id => {
                            self.await_fence(fence, emitted_fence, &mut stdout, &mut stderr, &mut collector).await;
                            let data = collector.fit_result(data);
                            collector.emit(ExecEvent::Result { execution_count, data: data.clone() });
                            result = Some(data);
                            emitted_fence = emitted_fence.max(fence.unwrap_or(0));
                            stdout.release(&mut collector, emitted_fence);
                            stderr.release(&mut collector, emitted_fence);
                        }
                        WorkerEvent::Error { id, ename, evalue, traceback, fence } if id == request_id => {
                            self.await_fence(fence, emitted_fence, &mut stdout, &mut stderr, &mut collector).await;
                            let info = ErrorInfo { ename, evalue, traceback };
                            collector.emit(ExecEvent::Error(info.clone()));
                            error = Some(info);
                            emitted_fence = emitted_fence.max(fence.unwrap_or(0));
                            stdout.release(&mut collector, emitted_fence);
                            stderr.release(&mut collector, emitted_fence);
                        }
                        WorkerEvent::ClearOutput { id, wait, fence } if id == request_id => {
                            self.await_fence(fence, emitted_fence, &mut stdout, &mut stderr, &mut collector).await;
                            collector.emit(ExecEvent::ClearOutput { wait });
                            emitted_fence = emitted_fence.max(fence.unwrap_or(0));
                            stdout.release(&mut collector, emitted_fence);
                            stderr.release(&mut collector, emitted_fence);
                        }
                        WorkerEvent::InputRequest { id, prompt, password, fence } if id == request_id => {
                            self.await_fence(fence, emitted_fence, &mut stdout, &mut stderr, &mut collector).await;
                            collector.emit(ExecEvent::InputRequest { prompt, password });
                            awaiting_input = true;
                            emitted_fence = emitted_fence.max(fence.unwrap_or(0));
                            stdout.release(&mut collector, emitted_fence);
                            stderr.release(&mut collector, emitted_fence);
                        }
                        WorkerEvent::Done { id, status } if id == request_id => {
                            done = true;
                            awaiting_input = false;
                            self.executing.store(false, Ordering::SeqCst);
                            if status == DoneStatus::Error && error.is_none() {
                                error = Some(ErrorInfo { ename: "Error".into(), evalue: String::new(), traceback: Vec::new() });
                            }
                        }
                        other => tracing::debug!(?other, "unexpected frame during exec ignored"),
                    },
                    Some(Err(frame_error)) => {
                        tracing::warn!(%frame_error, "worker sent a malformed frame; killing it");
                        self.kill().await;
                        worker_exit = Some(self.mark_exited(WorkerExit { description: "worker broke the protocol".to_owned() }));
                        drain_until = Some(Instant::now() + DRAIN_AFTER_EXIT);
                    }
                    None => self.events_open = false,
                },
                answer = receive_input(&mut input), if awaiting_input && worker_exit.is_none() => {
                    awaiting_input = false;
                    match answer {
                        Some(value) => {
                            let reply = WorkerRequest::InputReply { id: request_id.clone(), value };
                            if let Err(send_error) = self.send(&reply).await {
                                tracing::debug!(%send_error, "could not send an input reply");
                            }
                        }
                        // Nobody can answer any more: stop waiting.
                        None => {
                            input = None;
                            if let Err(signal_error) = corral_sandbox::interrupt(self.info.pid) {
                                tracing::debug!(%signal_error, "interrupt of an unanswerable input failed");
                            }
                        }
                    }
                }
                chunk = self.stdout.recv(), if self.stdout_open => stdout.chunk(chunk, &mut self.stdout_open, &mut collector, emitted_fence),
                chunk = self.stderr.recv(), if self.stderr_open => stderr.chunk(chunk, &mut self.stderr_open, &mut collector, emitted_fence),
                end = self.process.ended(), if worker_exit.is_none() => {
                    let exit = if killed_for_timeout {
                        WorkerExit { description: format!("execution exceeded its {}s timeout and ignored the interrupt; worker killed", spec.timeout.as_secs_f64()) }
                    } else {
                        self.describe_exit(end)
                    };
                    worker_exit = Some(self.mark_exited(exit));
                    drain_until = Some(Instant::now() + DRAIN_AFTER_EXIT);
                }
                _ = repeat.tick(), if repeats_interrupts && !done && worker_exit.is_none() => {
                    if self.interrupt_requested.load(Ordering::SeqCst) && self.exec_sent.load(Ordering::SeqCst) {
                        if let Err(signal_error) = corral_sandbox::interrupt(self.info.pid) {
                            tracing::debug!(%signal_error, "repeated interrupt failed");
                        }
                    }
                }
                _ = &mut interrupt_timer, if !timed_out && worker_exit.is_none() => {
                    timed_out = true;
                    kill_timer.as_mut().reset(Instant::now() + spec.interrupt_grace);
                    if let Err(signal_error) = corral_sandbox::interrupt(self.info.pid) {
                        tracing::debug!(%signal_error, "timeout interrupt failed");
                    }
                }
                _ = &mut kill_timer, if timed_out && !killed_for_timeout && worker_exit.is_none() => {
                    killed_for_timeout = true;
                    if let Err(kill_error) = corral_sandbox::kill_process_group(self.info.pid) {
                        tracing::warn!(%kill_error, "could not kill a timed-out worker");
                    }
                }
            }
        }

        self.executing.store(false, Ordering::SeqCst);
        // Frames that never came (the worker died) hold nothing back any more.
        stdout.release(&mut collector, u64::MAX);
        stderr.release(&mut collector, u64::MAX);
        let truncated =
            stdout.text.truncated() || stderr.text.truncated() || collector.rich_truncated;
        let interrupted_by_client = self.interrupt_requested.swap(false, Ordering::SeqCst);
        let status = if worker_exit.is_some() {
            ExecutionStatus::Killed
        } else if timed_out && error.is_some() {
            ExecutionStatus::Timeout
        } else if interrupted_by_client
            && error
                .as_ref()
                .is_some_and(|info| info.ename == "KeyboardInterrupt")
        {
            ExecutionStatus::Interrupted
        } else if error.is_some() {
            ExecutionStatus::Error
        } else {
            ExecutionStatus::Ok
        };
        let timeout_message = || {
            format!(
                "execution exceeded its {}s timeout",
                spec.timeout.as_secs_f64()
            )
        };
        match (status, &worker_exit) {
            (ExecutionStatus::Timeout, _) => {
                let traceback = error.take().map(|info| info.traceback).unwrap_or_default();
                error = Some(ErrorInfo {
                    ename: "TimeoutError".into(),
                    evalue: timeout_message(),
                    traceback,
                });
            }
            (ExecutionStatus::Killed, Some(exit)) if killed_for_timeout => {
                error = Some(ErrorInfo {
                    ename: "TimeoutError".into(),
                    evalue: exit.description.clone(),
                    traceback: Vec::new(),
                });
            }
            (ExecutionStatus::Killed, Some(exit)) if error.is_none() => {
                error = Some(ErrorInfo {
                    ename: "WorkerDied".into(),
                    evalue: exit.description.clone(),
                    traceback: Vec::new(),
                });
            }
            _ => {}
        }
        ExecOutcome {
            status,
            result,
            stdout: stdout.text.into_text(),
            stderr: stderr.text.into_text(),
            outputs: collector.outputs,
            error,
            truncated,
            worker_exit,
        }
    }
}

/// The next answer on `input`; `None` when it closed or there is none.
async fn receive_input(input: &mut Option<mpsc::UnboundedReceiver<String>>) -> Option<String> {
    match input {
        Some(receiver) => receiver.recv().await,
        None => None,
    }
}

/// A fresh token for the sync marker; unpredictable enough that cell output does not contain
/// it by accident.
fn sync_token() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or_default(),
    );
    format!(
        "{:016x}{:016x}",
        hasher.finish(),
        RandomState::new().build_hasher().finish()
    )
}
