//! The JavaScript and Bash kernels through the Jupyter kernel channels websocket: kernel
//! info by language, results, streams, errors, state between cells and interrupts.

mod support;

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::TestServer;
use tokio_tungstenite::tungstenite::Message;

const DEADLINE: Duration = Duration::from_secs(30);

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Kernel {
    socket: Socket,
}

impl Kernel {
    async fn start(server: &TestServer, name: &str) -> Kernel {
        let (status, kernel) = server.post("/api/kernels", json!({ "name": name })).await;
        assert_eq!(status, 201, "{kernel}");
        assert_eq!(kernel["name"], name);
        let id = kernel["id"].as_str().expect("id");
        let url = server
            .url(&format!("/api/kernels/{id}/channels?session_id=client"))
            .replacen("http://", "ws://", 1);
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket opens");
        Kernel { socket }
    }

    async fn send(&mut self, channel: &str, msg_type: &str, content: Value) -> String {
        let msg_id = uuid::Uuid::new_v4().to_string();
        let header = json!({"msg_id": msg_id, "username": "test", "session": "client",
            "date": "2026-12-02T00:00:00.000000Z", "msg_type": msg_type, "version": "5.3"});
        let message = json!({"header": header, "parent_header": {}, "metadata": {},
            "content": content, "buffers": [], "channel": channel});
        self.socket
            .send(Message::Text(message.to_string().into()))
            .await
            .expect("sent");
        msg_id
    }

    async fn execute(&mut self, code: &str) -> String {
        self.send(
            "shell",
            "execute_request",
            json!({"code": code, "silent": false, "store_history": true,
                "user_expressions": {}, "allow_stdin": false, "stop_on_error": true}),
        )
        .await
    }

    async fn next(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(DEADLINE, self.socket.next())
                .await
                .expect("a message within the deadline")
                .expect("the socket is open")
                .expect("a frame");
            if let Message::Text(text) = message {
                return serde_json::from_str(&text).expect("JSON");
            }
        }
    }

    /// The messages of request `msg_id` up to its `idle` status (others are skipped).
    async fn until_idle(&mut self, msg_id: &str) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            let message = self.next().await;
            if message["parent_header"]["msg_id"] != msg_id {
                continue;
            }
            let done =
                message["msg_type"] == "status" && message["content"]["execution_state"] == "idle";
            seen.push(message);
            if done {
                return seen;
            }
        }
    }
}

fn of_type<'a>(messages: &'a [Value], msg_type: &str) -> Vec<&'a Value> {
    messages
        .iter()
        .filter(|message| message["msg_type"] == msg_type)
        .collect()
}

fn stdout(messages: &[Value]) -> String {
    of_type(messages, "stream")
        .iter()
        .filter(|message| message["content"]["name"] == "stdout")
        .map(|message| message["content"]["text"].as_str().expect("text"))
        .collect()
}

#[tokio::test]
async fn a_javascript_kernel_runs_cells_with_state_results_and_errors() {
    let server = TestServer::start();
    let mut kernel = Kernel::start(&server, "javascript").await;
    let info = kernel.send("shell", "kernel_info_request", json!({})).await;
    let messages = kernel.until_idle(&info).await;
    let reply = of_type(&messages, "kernel_info_reply")[0];
    assert_eq!(reply["content"]["language_info"]["name"], "javascript");
    assert_eq!(reply["content"]["language_info"]["file_extension"], ".js");

    let first = kernel
        .execute("const base = 40;\nconsole.log('printed');\nbase + 2")
        .await;
    let messages = kernel.until_idle(&first).await;
    assert_eq!(stdout(&messages), "printed\n");
    let result = of_type(&messages, "execute_result")[0];
    assert_eq!(result["content"]["data"]["text/plain"], "42");
    assert_eq!(result["content"]["execution_count"], 1);

    let awaited = kernel
        .execute("await new Promise(r => setTimeout(() => r(base * 2), 5))")
        .await;
    let messages = kernel.until_idle(&awaited).await;
    assert_eq!(
        of_type(&messages, "execute_result")[0]["content"]["data"]["text/plain"],
        "80"
    );

    let failing = kernel.execute("undefinedFunction()").await;
    let messages = kernel.until_idle(&failing).await;
    let error = of_type(&messages, "error")[0];
    assert_eq!(error["content"]["ename"], "ReferenceError");
    assert_eq!(
        error["content"]["evalue"],
        "undefinedFunction is not defined"
    );
    let reply = of_type(&messages, "execute_reply")[0];
    assert_eq!(reply["content"]["status"], "error");

    let complete = kernel
        .send(
            "shell",
            "complete_request",
            json!({"code": "Math.fl", "cursor_pos": 7}),
        )
        .await;
    let messages = kernel.until_idle(&complete).await;
    let matches = &of_type(&messages, "complete_reply")[0]["content"]["matches"];
    assert_eq!(matches, &json!(["floor"]), "{messages:?}");
}

#[tokio::test]
async fn a_bash_kernel_keeps_its_shell_and_can_be_interrupted() {
    let server = TestServer::start();
    let mut kernel = Kernel::start(&server, "bash").await;
    let info = kernel.send("shell", "kernel_info_request", json!({})).await;
    let messages = kernel.until_idle(&info).await;
    assert_eq!(
        of_type(&messages, "kernel_info_reply")[0]["content"]["language_info"]["name"],
        "bash"
    );

    let first = kernel.execute("cd /tmp; NAME=corral; echo hi").await;
    let messages = kernel.until_idle(&first).await;
    assert_eq!(stdout(&messages), "hi\n");
    let second = kernel.execute("echo $NAME $PWD").await;
    let messages = kernel.until_idle(&second).await;
    assert_eq!(stdout(&messages), "corral /tmp\n");
    assert_eq!(
        of_type(&messages, "execute_result")[0]["content"]["data"]["text/plain"],
        "0"
    );

    let failing = kernel.execute("false").await;
    let messages = kernel.until_idle(&failing).await;
    assert_eq!(
        of_type(&messages, "error")[0]["content"]["ename"],
        "ExitStatus"
    );

    let slow = kernel.execute("echo started; sleep 60").await;
    loop {
        let message = kernel.next().await;
        if message["msg_type"] == "stream" && message["parent_header"]["msg_id"] == slow {
            break;
        }
    }
    kernel.send("control", "interrupt_request", json!({})).await;
    let messages = kernel.until_idle(&slow).await;
    let error = of_type(&messages, "error")[0];
    assert_eq!(
        error["content"]["ename"], "KeyboardInterrupt",
        "{messages:?}"
    );
    let after = kernel.execute("echo $NAME").await;
    let messages = kernel.until_idle(&after).await;
    assert_eq!(stdout(&messages), "corral\n");
}
