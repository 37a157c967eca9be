//! The Jupyter kernel channels websocket (`/api/kernels/{id}/channels`) against a real
//! server and real workers: the messaging protocol's requests and IOPub stream, stdin,
//! interrupts, restarts, several connections, reconnects, both framings, and refusals.

mod support;

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::TestServer;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const DEADLINE: Duration = Duration::from_secs(30);
const V1: &str = "v1.kernel.websocket.jupyter.org";

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One client connection to a kernel's channels.
struct Channels {
    socket: Socket,
    session: String,
    binary: bool,
}

fn ws_url(server: &TestServer, kernel_id: &str, query: &str) -> String {
    server
        .url(&format!("/api/kernels/{kernel_id}/channels{query}"))
        .replacen("http://", "ws://", 1)
}

impl Channels {
    async fn open(server: &TestServer, kernel_id: &str) -> Channels {
        Channels::open_as(server, kernel_id, "?session_id=client-1", false).await
    }

    async fn open_as(server: &TestServer, kernel_id: &str, query: &str, binary: bool) -> Channels {
        let mut request = ws_url(server, kernel_id, query)
            .into_client_request()
            .expect("request");
        if binary {
            request
                .headers_mut()
                .insert("sec-websocket-protocol", V1.parse().expect("header"));
        }
        let (socket, response) = tokio_tungstenite::connect_async(request)
            .await
            .expect("websocket opens");
        let accepted = response
            .headers()
            .get("sec-websocket-protocol")
            .map(|value| value.to_str().expect("ascii").to_owned());
        assert_eq!(accepted.as_deref(), binary.then_some(V1));
        let session = query
            .split("session_id=")
            .nth(1)
            .unwrap_or("anonymous")
            .to_owned();
        Channels {
            socket,
            session,
            binary,
        }
    }

    async fn send(&mut self, channel: &str, msg_type: &str, content: Value) -> String {
        let msg_id = uuid::Uuid::new_v4().to_string();
        let header = json!({"msg_id": msg_id, "username": "test", "session": self.session,
            "date": "2026-12-02T00:00:00.000000Z", "msg_type": msg_type, "version": "5.3"});
        let message = if self.binary {
            Message::Binary(v1_frame(channel, &header, &content).into())
        } else {
            Message::Text(
                json!({"header": header, "parent_header": {}, "metadata": {}, "content": content,
                    "buffers": [], "channel": channel})
                .to_string()
                .into(),
            )
        };
        self.socket.send(message).await.expect("sent");
        msg_id
    }

    async fn execute(&mut self, code: &str, allow_stdin: bool) -> String {
        self.send(
            "shell",
            "execute_request",
            json!({"code": code, "silent": false, "store_history": true, "user_expressions": {},
                "allow_stdin": allow_stdin, "stop_on_error": true}),
        )
        .await
    }

    /// The next message, within the deadline.
    async fn next(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(DEADLINE, self.socket.next())
                .await
                .expect("a message within the deadline")
                .expect("the socket is open")
                .expect("a frame");
            match message {
                Message::Text(text) => {
                    assert!(!self.binary, "text frame on a v1 connection");
                    return serde_json::from_str(&text).expect("JSON");
                }
                Message::Binary(bytes) => {
                    assert!(self.binary, "binary frame on a JSON connection");
                    return parse_v1(&bytes);
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// Every message up to and including the `idle` status of request `msg_id`.
    async fn until_idle(&mut self, msg_id: &str) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            let message = self.next().await;
            let done = message["msg_type"] == "status"
                && message["content"]["execution_state"] == "idle"
                && message["parent_header"]["msg_id"] == msg_id;
            seen.push(message);
            if done {
                return seen;
            }
        }
    }

    /// Whether the socket stays quiet for a moment (nothing is sent to this connection).
    async fn quiet_for(&mut self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.socket.next())
            .await
            .is_err()
    }
}

fn v1_frame(channel: &str, header: &Value, content: &Value) -> Vec<u8> {
    let parts: Vec<Vec<u8>> = vec![
        channel.as_bytes().to_vec(),
        header.to_string().into_bytes(),
        b"{}".to_vec(),
        b"{}".to_vec(),
        content.to_string().into_bytes(),
    ];
    let count = parts.len() + 1;
    let mut offset = 8 * (1 + count);
    let mut frame = (count as u64).to_le_bytes().to_vec();
    frame.extend_from_slice(&(offset as u64).to_le_bytes());
    for part in &parts {
        offset += part.len();
        frame.extend_from_slice(&(offset as u64).to_le_bytes());
    }
    for part in parts {
        frame.extend_from_slice(&part);
    }
    frame
}

fn parse_v1(bytes: &[u8]) -> Value {
    let word =
        |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes")) as usize;
    let count = word(0);
    let offsets: Vec<usize> = (0..count).map(|index| word(8 * (index + 1))).collect();
    let part = |index: usize| &bytes[offsets[index]..offsets[index + 1]];
    let json_part = |index: usize| -> Value { serde_json::from_slice(part(index)).expect("JSON") };
    let header = json_part(1);
    json!({
        "channel": std::str::from_utf8(part(0)).expect("channel"),
        "msg_type": header["msg_type"].clone(),
        "header": header,
        "parent_header": json_part(2),
        "metadata": json_part(3),
        "content": json_part(4),
    })
}

/// Waits (bounded) until the kernel model counts `expected` open connections.
async fn wait_for_connections(server: &TestServer, kernel: &str, expected: u64) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (_, model) = server.get(&format!("/api/kernels/{kernel}")).await;
        if model["connections"] == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the kernel never had {expected} connections: {model}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Closes a connection with the websocket handshake and waits until the server has let it go.
async fn close(server: &TestServer, kernel: &str, mut channels: Channels, remaining: u64) {
    channels.socket.close(None).await.expect("close sent");
    while let Ok(Some(Ok(_))) = tokio::time::timeout(DEADLINE, channels.socket.next()).await {}
    wait_for_connections(server, kernel, remaining).await;
}

/// Lets a cell waiting on `gate_name` (see `wait_for_gate`) go on.
async fn open_gate(server: &TestServer, kernel: &str, gate_name: &str) {
    let response = server
        .http
        .put(server.url(&format!("/v1/sessions/{kernel}/files/{gate_name}")))
        .body("open")
        .send()
        .await
        .expect("gate written");
    assert!(response.status().is_success(), "{}", response.status());
}

/// Code that waits until the file `gate_name` exists in the workspace (bounded).
fn wait_for_gate(gate_name: &str) -> String {
    format!(
        "import os, time\nfor _ in range(3000):\n    if os.path.exists({gate_name:?}):\n        break\n    time.sleep(0.01)\n"
    )
}

fn types(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|message| {
            let kind = message["msg_type"].as_str().expect("msg_type");
            match kind {
                "status" => format!(
                    "status:{}",
                    message["content"]["execution_state"].as_str().unwrap_or("")
                ),
                other => other.to_owned(),
            }
        })
        .collect()
}

fn find<'a>(messages: &'a [Value], msg_type: &str) -> &'a Value {
    messages
        .iter()
        .find(|message| message["msg_type"] == msg_type)
        .unwrap_or_else(|| panic!("no {msg_type} in {messages:#?}"))
}

async fn start_kernel(server: &TestServer) -> String {
    let (status, kernel) = server.post("/api/kernels", json!({})).await;
    assert_eq!(status, 201, "{kernel}");
    kernel["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn execute_request_gives_the_messages_a_notebook_renders() {
    let server = TestServer::start();
    let kernel = start_kernel(&server).await;
    let mut channels = Channels::open(&server, &kernel).await;

    let info = channels
        .send("shell", "kernel_info_request", json!({}))
        .await;
    let messages = channels.until_idle(&info).await;
    assert_eq!(
        types(&messages),
        ["status:busy", "kernel_info_reply", "status:idle"]
    );
    let reply = find(&messages, "kernel_info_reply");
    assert_eq!(reply["channel"], "shell");
    assert_eq!(reply["content"]["protocol_version"], "5.3");
    assert_eq!(reply["content"]["implementation"], "corral");
    assert_eq!(reply["content"]["language_info"]["name"], "python");

    let run = channels
        .execute(
            "x = 20\nprint('to stdout')\ndisplay({'a': 1}, display_id='d')\nx * 2 + 2",
            false,
        )
        .await;
    let messages = channels.until_idle(&run).await;
    assert_eq!(
        types(&messages),
        [
            "status:busy",
            "execute_input",
            "stream",
            "display_data",
            "execute_result",
            "execute_reply",
            "status:idle"
        ],
        "{messages:#?}"
    );
    for message in &messages {
        assert_eq!(message["parent_header"]["msg_id"], run.as_str());
        assert_eq!(message["header"]["session"], "client-1");
        assert_eq!(message["header"]["version"], "5.3");
        let expected_channel = if message["msg_type"] == "execute_reply" {
            "shell"
        } else {
            "iopub"
        };
        assert_eq!(message["channel"], expected_channel, "{message}");
    }
    let ids: std::collections::HashSet<&str> = messages
        .iter()
        .map(|message| message["header"]["msg_id"].as_str().expect("msg_id"))
        .collect();
    assert_eq!(ids.len(), messages.len(), "message ids are fresh");
    assert_eq!(
        messages[2]["content"],
        json!({"name": "stdout", "text": "to stdout\n"})
    );
    assert_eq!(messages[3]["content"]["transient"]["display_id"], "d");
    assert_eq!(messages[3]["content"]["data"]["text/plain"], "{'a': 1}");
    assert_eq!(
        find(&messages, "execute_result")["content"]["data"]["text/plain"],
        "42"
    );
    let reply = find(&messages, "execute_reply");
    assert_eq!(reply["content"]["status"], "ok");
    let count = reply["content"]["execution_count"].as_u64().expect("count");
    assert_eq!(
        find(&messages, "execute_input")["content"]["execution_count"],
        count
    );
    assert_eq!(
        find(&messages, "execute_result")["content"]["execution_count"],
        count
    );
    let (_, session) = server.get(&format!("/v1/sessions/{kernel}")).await;
    assert_eq!(session["execution_count"], count);

    // State is kept, and an error is an error.
    let failing = channels.execute("x / 0", false).await;
    let messages = channels.until_idle(&failing).await;
    assert_eq!(
        types(&messages),
        [
            "status:busy",
            "execute_input",
            "error",
            "execute_reply",
            "status:idle"
        ]
    );
    let error = find(&messages, "error");
    assert_eq!(error["content"]["ename"], "ZeroDivisionError");
    assert!(error["content"]["traceback"]
        .as_array()
        .expect("traceback")
        .iter()
        .any(|line| line.as_str().is_some_and(|line| line.contains("x / 0"))));
    let reply = find(&messages, "execute_reply");
    assert_eq!(reply["content"]["status"], "error");
    assert_eq!(reply["content"]["ename"], "ZeroDivisionError");
    assert_eq!(reply["content"]["execution_count"], count + 1);

    let to_stderr = channels
        .execute("import sys\nprint('to stderr', file=sys.stderr)", false)
        .await;
    let messages = channels.until_idle(&to_stderr).await;
    assert_eq!(
        find(&messages, "stream")["content"],
        json!({"name": "stderr", "text": "to stderr\n"})
    );
    let count = count + 1;

    // A native execution in between shares the count.
    let native = server.execute(&kernel, "x").await;
    assert_eq!(native["execution_count"], count + 2);
    let next = channels.execute("x", false).await;
    let messages = channels.until_idle(&next).await;
    assert_eq!(
        find(&messages, "execute_reply")["content"]["execution_count"],
        count + 3
    );
}

#[tokio::test]
async fn questions_about_code_and_history() {
    let server = TestServer::start();
    let kernel = start_kernel(&server).await;
    let mut channels = Channels::open(&server, &kernel).await;
    let run = channels
        .send(
            "shell",
            "execute_request",
            json!({"code": "def area(w, h=2):\n    'Area of a rectangle.'\n    return w * h\nvalue = 7",
                "silent": false, "store_history": true, "user_expressions": {"twice": "value * 2", "bad": "nope"},
                "allow_stdin": false, "stop_on_error": true}),
        )
        .await;
    let messages = channels.until_idle(&run).await;
    let reply = find(&messages, "execute_reply");
    assert_eq!(
        reply["content"]["user_expressions"]["twice"]["data"]["text/plain"],
        "14"
    );
    assert_eq!(
        reply["content"]["user_expressions"]["bad"]["status"],
        "error"
    );
    assert_eq!(
        reply["content"]["user_expressions"]["bad"]["ename"],
        "NameError"
    );

    let asked = channels
        .send(
            "shell",
            "complete_request",
            json!({"code": "val", "cursor_pos": 3}),
        )
        .await;
    let messages = channels.until_idle(&asked).await;
    assert_eq!(
        types(&messages),
        ["status:busy", "complete_reply", "status:idle"]
    );
    let complete = find(&messages, "complete_reply");
    assert_eq!(complete["content"]["matches"], json!(["value"]));
    assert_eq!(
        (
            complete["content"]["cursor_start"].as_u64(),
            complete["content"]["cursor_end"].as_u64()
        ),
        (Some(0), Some(3))
    );

    let asked = channels
        .send(
            "shell",
            "inspect_request",
            json!({"code": "area(3", "cursor_pos": 6, "detail_level": 0}),
        )
        .await;
    let messages = channels.until_idle(&asked).await;
    let inspect = find(&messages, "inspect_reply");
    assert_eq!(inspect["content"]["found"], true);
    let text = inspect["content"]["data"]["text/plain"]
        .as_str()
        .expect("text");
    assert!(
        text.contains("area(w, h=2)") && text.contains("Area of a rectangle."),
        "{text}"
    );

    for (code, status, indent) in [
        ("x = 1", "complete", ""),
        ("for i in range(3):", "incomplete", "    "),
        ("def f(:", "invalid", ""),
    ] {
        let asked = channels
            .send("shell", "is_complete_request", json!({"code": code}))
            .await;
        let messages = channels.until_idle(&asked).await;
        let reply = find(&messages, "is_complete_reply");
        assert_eq!(reply["content"]["status"], status, "{code}");
        assert_eq!(
            reply["content"]["indent"].as_str().unwrap_or(""),
            indent,
            "{code}"
        );
    }

    let asked = channels
        .send(
            "shell",
            "history_request",
            json!({"hist_access_type": "tail", "n": 1, "output": false, "raw": true}),
        )
        .await;
    let messages = channels.until_idle(&asked).await;
    let history = &find(&messages, "history_reply")["content"]["history"];
    assert_eq!(history.as_array().map(Vec::len), Some(1), "{history}");
    assert_eq!(history[0][1], 1);
    assert!(history[0][2]
        .as_str()
        .expect("code")
        .starts_with("def area"));

    let asked = channels.send("shell", "comm_info_request", json!({})).await;
    let messages = channels.until_idle(&asked).await;
    assert_eq!(
        find(&messages, "comm_info_reply")["content"]["comms"],
        json!({})
    );
}

#[tokio::test]
async fn input_is_asked_for_on_stdin_or_refused_at_once() {
    let server = TestServer::start();
    let kernel = start_kernel(&server).await;
    let mut channels = Channels::open(&server, &kernel).await;
    let run = channels
        .execute("name = input('Name? ')\nprint('hello', name)", true)
        .await;
    let request = loop {
        let message = channels.next().await;
        if message["msg_type"] == "input_request" {
            break message;
        }
    };
    assert_eq!(request["channel"], "stdin");
    assert_eq!(request["parent_header"]["msg_id"], run.as_str());
    assert_eq!(
        request["content"],
        json!({"prompt": "Name? ", "password": false})
    );
    channels
        .send(
            "stdin",
            "input_reply",
            json!({"value": "Ada", "status": "ok"}),
        )
        .await;
    let messages = channels.until_idle(&run).await;
    assert_eq!(find(&messages, "stream")["content"]["text"], "hello Ada\n");
    assert_eq!(find(&messages, "execute_reply")["content"]["status"], "ok");

    let refused = channels.execute("input('never')", false).await;
    let messages = channels.until_idle(&refused).await;
    assert_eq!(
        find(&messages, "error")["content"]["ename"],
        "StdinNotImplementedError"
    );
    assert!(!messages
        .iter()
        .any(|message| message["msg_type"] == "input_request"));
}

#[tokio::test]
async fn several_connections_share_iopub_and_replies_go_to_the_asker() {
    let server = TestServer::start();
    let kernel = start_kernel(&server).await;
    let mut first = Channels::open(&server, &kernel).await;
    let mut second = Channels::open_as(&server, &kernel, "?session_id=client-2", false).await;
    wait_for_connections(&server, &kernel, 2).await;

    let run = first.execute("print('seen by both')", false).await;
    let mine = first.until_idle(&run).await;
    let theirs = second.until_idle(&run).await;
    assert!(mine
        .iter()
        .any(|message| message["msg_type"] == "execute_reply"));
    assert!(!theirs
        .iter()
        .any(|message| message["msg_type"] == "execute_reply"));
    assert_eq!(find(&theirs, "stream")["content"]["text"], "seen by both\n");
    assert_eq!(
        types(&theirs),
        ["status:busy", "execute_input", "stream", "status:idle"]
    );

    close(&server, &kernel, second, 1).await;
    assert!(first.quiet_for(Duration::from_millis(200)).await);
}

#[tokio::test]
async fn a_client_that_reconnects_gets_what_it_missed() {
    let server = TestServer::start();
    let kernel = start_kernel(&server).await;
    let mut channels = Channels::open(&server, &kernel).await;
    wait_for_connections(&server, &kernel, 1).await;
    let code = format!(
        "{}print('finished while away')\n6 * 7",
        wait_for_gate("gate-1")
    );
    let run = channels.execute(&code, false).await;
    loop {
        let message = channels.next().await;
        if message["msg_type"] == "execute_input" {
            break;
        }
    }
    // Gone while the cell runs; it finishes meanwhile.
    close(&server, &kernel, channels, 0).await;
    open_gate(&server, &kernel, "gate-1").await;
    server.wait_for_state(&kernel, "idle").await;
    let mut again = Channels::open(&server, &kernel).await;
    let messages = again.until_idle(&run).await;
    assert_eq!(
        find(&messages, "stream")["content"]["text"],
        "finished while away\n"
    );
    assert_eq!(
        find(&messages, "execute_result")["content"]["data"]["text/plain"],
        "42"
    );
    assert_eq!(find(&messages, "execute_reply")["content"]["status"], "ok");

    // What is kept for one client session is not given to another.
    let code = format!("{}print('for client-1 only')", wait_for_gate("gate-2"));
    let run = again.execute(&code, false).await;
    loop {
        let message = again.next().await;
        if message["msg_type"] == "execute_input" && message["parent_header"]["msg_id"] == run {
            break;
        }
    }
    close(&server, &kernel, again, 0).await;
    open_gate(&server, &kernel, "gate-2").await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (status, _) = server
            .get(&format!("/v1/sessions/{kernel}/executions/2"))
            .await;
        if status == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cell never finished"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut stranger = Channels::open_as(&server, &kernel, "?session_id=someone-else", false).await;
    // Only what IOPub still publishes live may reach it, never the other client's reply.
    while let Ok(Some(Ok(Message::Text(text)))) =
        tokio::time::timeout(Duration::from_millis(300), stranger.socket.next()).await
    {
        let message: Value = serde_json::from_str(&text).expect("JSON");
        assert_ne!(message["msg_type"], "execute_reply", "{message}");
        assert_ne!(message["channel"], "shell", "{message}");
    }
}

#[tokio::test]
async fn interrupts_stop_on_error_and_restarts() {
    let server = TestServer::start();
    let kernel = start_kernel(&server).await;
    let mut channels = Channels::open(&server, &kernel).await;
    channels.execute("state = 'kept'", false).await;
    let looping = channels
        .execute("import time\nwhile True:\n    time.sleep(0.01)", false)
        .await;
    let queued = channels.execute("print('never runs')", false).await;
    loop {
        let message = channels.next().await;
        if message["msg_type"] == "execute_input" && message["parent_header"]["msg_id"] == looping {
            break;
        }
    }
    let interrupt = channels
        .send("control", "interrupt_request", json!({}))
        .await;
    let mut replies = Vec::new();
    let mut seen = Vec::new();
    while replies.len() < 3 {
        let message = channels.next().await;
        let parent = message["parent_header"]["msg_id"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let reply = matches!(
            message["msg_type"].as_str(),
            Some("interrupt_reply" | "execute_reply")
        ) && [&interrupt, &looping, &queued].contains(&&parent);
        if reply {
            replies.push((parent.clone(), message.clone()));
        }
        seen.push(message);
    }
    let reply_to = |id: &str| {
        replies
            .iter()
            .find(|(parent, _)| parent == id)
            .map(|(_, message)| message.clone())
            .unwrap_or_else(|| panic!("no reply to {id}: {seen:#?}"))
    };
    assert_eq!(reply_to(&interrupt)["channel"], "control");
    assert_eq!(reply_to(&interrupt)["content"]["status"], "ok");
    let interrupted = reply_to(&looping);
    assert_eq!(interrupted["content"]["status"], "error");
    assert_eq!(interrupted["content"]["ename"], "KeyboardInterrupt");
    // stop_on_error: the cell queued behind the failed one is aborted, not run.
    assert_eq!(reply_to(&queued)["content"]["status"], "aborted");
    assert!(!seen
        .iter()
        .any(|message| message["content"]["text"] == "never runs\n"));

    // Restart through the shell: restarting, then starting and idle; state is gone.
    let restart = channels
        .send("shell", "shutdown_request", json!({"restart": true}))
        .await;
    // The kernel's own statuses (no parent) and the request's may interleave.
    let mut messages = Vec::new();
    let (mut kernel_states, mut replied, mut request_idle) = (Vec::new(), false, false);
    while !(replied && request_idle && kernel_states.len() == 3) {
        let message = channels.next().await;
        let state = message["content"]["execution_state"]
            .as_str()
            .map(str::to_owned);
        if message["msg_type"] == "status" && message["parent_header"] == json!({}) {
            kernel_states.extend(state);
        } else if message["msg_type"] == "status" && state.as_deref() == Some("idle") {
            request_idle = message["parent_header"]["msg_id"] == restart;
        }
        replied |= message["msg_type"] == "shutdown_reply";
        messages.push(message);
    }
    assert_eq!(
        kernel_states,
        ["restarting", "starting", "idle"],
        "{messages:#?}"
    );
    assert_eq!(
        find(&messages, "shutdown_reply")["content"]["restart"],
        true
    );
    let run = channels.execute("state", false).await;
    let messages = channels.until_idle(&run).await;
    assert_eq!(find(&messages, "error")["content"]["ename"], "NameError");
    // Cells are numbered from the restart on, corral's own count goes on.
    assert_eq!(
        find(&messages, "execute_input")["content"]["execution_count"],
        1
    );
    assert_eq!(
        find(&messages, "execute_reply")["content"]["execution_count"],
        1
    );
    let (_, session) = server.get(&format!("/v1/sessions/{kernel}")).await;
    assert_eq!(session["execution_count"], 3);

    // Restart through REST shows on the websocket too.
    let (status, _) = server
        .post(&format!("/api/kernels/{kernel}/restart"), json!({}))
        .await;
    assert_eq!(status, 200);
    let mut states = Vec::new();
    while states.len() < 3 {
        let message = channels.next().await;
        if message["msg_type"] == "status" {
            states.push(
                message["content"]["execution_state"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            );
        }
    }
    assert_eq!(states, ["restarting", "starting", "idle"]);
    let (_, model) = server.get(&format!("/api/kernels/{kernel}")).await;
    assert_eq!(model["execution_state"], "idle");
}

#[tokio::test]
async fn the_binary_subprotocol_carries_the_same_messages() {
    let server = TestServer::start();
    let kernel = start_kernel(&server).await;
    let mut channels = Channels::open_as(&server, &kernel, "?session_id=binary-client", true).await;
    let run = channels.execute("print('over v1')\n1 + 1", false).await;
    let messages = channels.until_idle(&run).await;
    assert_eq!(
        types(&messages),
        [
            "status:busy",
            "execute_input",
            "stream",
            "execute_result",
            "execute_reply",
            "status:idle"
        ]
    );
    assert_eq!(find(&messages, "execute_reply")["channel"], "shell");
    assert_eq!(find(&messages, "stream")["channel"], "iopub");
    assert_eq!(
        find(&messages, "execute_result")["content"]["data"]["text/plain"],
        "2"
    );
}

#[tokio::test]
async fn shutdown_request_closes_the_kernel_and_its_sockets() {
    let server = TestServer::start();
    let kernel = start_kernel(&server).await;
    let mut channels = Channels::open(&server, &kernel).await;
    // Garbage frames are dropped; the connection goes on.
    channels
        .socket
        .send(Message::Text("not json".into()))
        .await
        .expect("sent");
    channels
        .socket
        .send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .expect("sent");
    let shutdown = channels
        .send("control", "shutdown_request", json!({"restart": false}))
        .await;
    let messages = channels.until_idle(&shutdown).await;
    let reply = find(&messages, "shutdown_reply");
    assert_eq!(
        (
            reply["channel"].as_str(),
            reply["content"]["status"].as_str()
        ),
        (Some("control"), Some("ok"))
    );
    let dead = channels.next().await;
    assert_eq!(dead["content"]["execution_state"], "dead");
    let closed = tokio::time::timeout(DEADLINE, channels.socket.next())
        .await
        .expect("closed within the deadline");
    assert!(
        matches!(closed, None | Some(Ok(Message::Close(_))) | Some(Err(_))),
        "{closed:?}"
    );
    let (_, session) = server.get(&format!("/v1/sessions/{kernel}")).await;
    assert_eq!(session["state"], "closed");
    let (status, _) = server.get(&format!("/api/kernels/{kernel}")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn refusals_come_before_the_upgrade() {
    let server = TestServer::start();
    let kernel = start_kernel(&server).await;
    // Not a websocket request.
    let (status, body) = server.get(&format!("/api/kernels/{kernel}/channels")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"]
        .as_str()
        .expect("message")
        .contains("websocket"));
    // Unknown kernel.
    let unknown = uuid::Uuid::new_v4();
    let error = tokio_tungstenite::connect_async(ws_url(&server, &unknown.to_string(), ""))
        .await
        .expect_err("refused");
    assert!(error.to_string().contains("404"), "{error}");

    // With keys: no key or a wrong one is 403, another tenant's kernel is 404.
    let alice = server.corral_key(&["--scope", "tenant", "--tenant", "alice"]);
    let bob = server.corral_key(&["--scope", "tenant", "--tenant", "bob"]);
    let (status, kernel) = server
        .send("POST", "/api/kernels", Some(&alice), Some("{}"))
        .await;
    assert_eq!(status, 201);
    let kernel = kernel["id"].as_str().expect("id").to_owned();
    for query in ["", "?token=wrong"] {
        let error = tokio_tungstenite::connect_async(ws_url(&server, &kernel, query))
            .await
            .expect_err("refused");
        assert!(error.to_string().contains("403"), "{query}: {error}");
    }
    let error =
        tokio_tungstenite::connect_async(ws_url(&server, &kernel, &format!("?token={bob}")))
            .await
            .expect_err("refused");
    assert!(error.to_string().contains("404"), "{error}");
    let mut request = ws_url(&server, &kernel, "")
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "authorization",
        format!("token {alice}").parse().expect("header"),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("alice's own kernel opens");
    socket.close(None).await.expect("closed");
}

#[tokio::test]
async fn limits_on_code_and_frames() {
    let server = TestServer::start_with_config("[limits]\nmax_code_bytes = 1000\n");
    let kernel = start_kernel(&server).await;
    let mut channels = Channels::open(&server, &kernel).await;
    // Code over the limit is refused with an error reply; the kernel goes on.
    let big = format!("x = '{}'", "a".repeat(1200));
    let refused = channels.execute(&big, false).await;
    let messages = channels.until_idle(&refused).await;
    assert_eq!(
        types(&messages),
        ["status:busy", "error", "execute_reply", "status:idle"]
    );
    let reply = find(&messages, "execute_reply");
    assert_eq!(reply["content"]["status"], "error");
    assert!(reply["content"]["evalue"]
        .as_str()
        .expect("evalue")
        .contains("the limit is 1000"));
    let fine = channels.execute("1 + 1", false).await;
    let messages = channels.until_idle(&fine).await;
    assert_eq!(find(&messages, "execute_reply")["content"]["status"], "ok");

    // A frame over the message limit (twice the code limit plus 64 KiB) ends the connection.
    let oversized = "y".repeat(2 * 1000 + 64 * 1024 + 1);
    channels
        .socket
        .send(Message::Text(oversized.into()))
        .await
        .expect("sent");
    let ended = tokio::time::timeout(DEADLINE, channels.socket.next())
        .await
        .expect("the server answers within the deadline");
    assert!(
        matches!(ended, None | Some(Err(_)) | Some(Ok(Message::Close(_)))),
        "{ended:?}"
    );
    wait_for_connections(&server, &kernel, 0).await;
}

#[tokio::test]
async fn silent_cells_and_cells_outside_the_history_take_no_count() {
    let server = TestServer::start();
    let kernel = start_kernel(&server).await;
    let mut channels = Channels::open(&server, &kernel).await;
    let first = channels.execute("a = 1\na", false).await;
    channels.until_idle(&first).await;
    let silent = channels
        .send(
            "shell",
            "execute_request",
            json!({"code": "print('quiet')\n99", "silent": true, "store_history": false,
                "user_expressions": {}, "allow_stdin": false, "stop_on_error": true}),
        )
        .await;
    let messages = channels.until_idle(&silent).await;
    assert_eq!(
        types(&messages),
        ["status:busy", "stream", "execute_reply", "status:idle"]
    );
    assert_eq!(
        find(&messages, "execute_reply")["content"]["execution_count"],
        1
    );
    let unstored = channels
        .send(
            "shell",
            "execute_request",
            json!({"code": "'not kept'", "silent": false, "store_history": false,
                "user_expressions": {}, "allow_stdin": false, "stop_on_error": true}),
        )
        .await;
    let messages = channels.until_idle(&unstored).await;
    assert_eq!(
        find(&messages, "execute_result")["content"]["data"]["text/plain"],
        "'not kept'"
    );
    assert_eq!(
        find(&messages, "execute_reply")["content"]["execution_count"],
        1
    );
    // Neither took a count or a place in the history, nor rebound `_`.
    let next = channels.execute("_", false).await;
    let messages = channels.until_idle(&next).await;
    assert_eq!(
        find(&messages, "execute_reply")["content"]["execution_count"],
        2
    );
    assert_eq!(
        find(&messages, "execute_result")["content"]["data"]["text/plain"],
        "1"
    );
    let (_, history) = server
        .get(&format!("/v1/sessions/{kernel}/executions"))
        .await;
    let codes: Vec<&str> = history["executions"]
        .as_array()
        .expect("executions")
        .iter()
        .map(|execution| execution["code"].as_str().expect("code"))
        .collect();
    assert_eq!(codes, ["a = 1\na", "_"]);
}

#[tokio::test]
async fn messages_without_a_channel_are_for_shell() {
    // As jupyter_server's own gateway client sends them.
    let server = TestServer::start();
    let kernel = start_kernel(&server).await;
    let mut channels = Channels::open(&server, &kernel).await;
    let frame = json!({
        "header": {"msg_id": "no-channel", "username": "u", "session": "client-1",
            "date": 1764633600.5, "msg_type": "kernel_info_request", "version": "5.4"},
        "parent_header": {}, "metadata": {}, "content": {}, "buffers": [],
    });
    channels
        .socket
        .send(Message::Text(frame.to_string().into()))
        .await
        .expect("sent");
    let messages = channels.until_idle("no-channel").await;
    assert_eq!(find(&messages, "kernel_info_reply")["channel"], "shell");
}

#[tokio::test]
async fn the_reconnect_buffer_keeps_the_newest_ten_thousand_messages() {
    let server = TestServer::start();
    let kernel = start_kernel(&server).await;
    let mut channels = Channels::open(&server, &kernel).await;
    wait_for_connections(&server, &kernel, 1).await;
    // 10,050 displays, then the reply and idle: more than the buffer holds.
    let code = format!(
        "{}for i in range(10050):\n    display(i)",
        wait_for_gate("gate-many")
    );
    let run = channels.execute(&code, false).await;
    loop {
        let message = channels.next().await;
        if message["msg_type"] == "execute_input" {
            break;
        }
    }
    close(&server, &kernel, channels, 0).await;
    open_gate(&server, &kernel, "gate-many").await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (status, _) = server
            .get(&format!("/v1/sessions/{kernel}/executions/1"))
            .await;
        if status == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cell never finished"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.wait_for_state(&kernel, "idle").await;
    let mut again = Channels::open(&server, &kernel).await;
    let messages = again.until_idle(&run).await;
    let displays: Vec<&Value> = messages
        .iter()
        .filter(|message| message["msg_type"] == "display_data")
        .collect();
    // What was dropped is the oldest: the last display and the reply are there.
    assert!(displays.len() < 10050, "{} displays", displays.len());
    assert_eq!(
        displays.last().expect("displays")["content"]["data"]["text/plain"],
        "10049"
    );
    assert!(messages.len() <= 10_000 + 2, "{} messages", messages.len());
    assert_eq!(find(&messages, "execute_reply")["content"]["status"], "ok");
}

#[tokio::test]
async fn a_question_stuck_in_user_code_is_interrupted_after_ten_seconds() {
    let server = TestServer::start();
    let kernel = start_kernel(&server).await;
    let mut channels = Channels::open(&server, &kernel).await;
    let setup = channels
        .execute(
            "import time\nclass Slow:\n    def __repr__(self):\n        time.sleep(600)\n        return 'slow'\nslow = Slow()",
            false,
        )
        .await;
    channels.until_idle(&setup).await;
    let asked = channels
        .send(
            "shell",
            "inspect_request",
            json!({"code": "slow", "cursor_pos": 4, "detail_level": 0}),
        )
        .await;
    let messages = channels.until_idle(&asked).await;
    let reply = find(&messages, "inspect_reply");
    assert_eq!(reply["content"]["status"], "error", "{reply}");
    assert!(reply["content"]["evalue"]
        .as_str()
        .expect("evalue")
        .contains("did not answer in time"));
    // The interpreter was interrupted, not killed: its state is there.
    let next = channels.execute("type(slow).__name__", false).await;
    let messages = channels.until_idle(&next).await;
    assert_eq!(
        find(&messages, "execute_result")["content"]["data"]["text/plain"],
        "'Slow'"
    );
}
