//! The surfaces today's E2B SDKs talk to, through the real server: the control plane
//! (`e2b_api`: statuses, shapes, filters, pagination, what is refused and what is not
//! supported) and the routes inside a sandbox (`e2b_sandbox`: health, `/execute`, contexts,
//! `/files`, and the Connect filesystem and process services), with other tenants and wrong
//! access tokens answered exactly like unknown sandboxes.

mod support;

use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use support::TestServer;

const ENVD: &str = "49983";
const INTERPRETER: &str = "49999";

/// `method path` on the control plane with `X-API-KEY`.
async fn api(
    server: &TestServer,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, HeaderMap, Value) {
    let mut request = server
        .http
        .request(method.parse().expect("method"), server.url(path));
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    read(request.send().await.expect("request")).await
}

async fn read(response: reqwest::Response) -> (u16, HeaderMap, Value) {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, body)
}

/// A sandbox: its id and access token.
struct Sandbox {
    id: String,
    token: String,
}

async fn create(server: &TestServer, key: Option<&str>, body: Value) -> Sandbox {
    let (status, _, created) = api(server, "POST", "/v2/sandboxes", key, Some(body)).await;
    assert_eq!(status, 201, "{created}");
    Sandbox {
        id: created["sandboxID"].as_str().expect("id").to_owned(),
        token: created["envdAccessToken"]
            .as_str()
            .expect("token")
            .to_owned(),
    }
}

/// A request inside a sandbox: its id and port in headers, its token in `X-Access-Token`.
fn inside(
    server: &TestServer,
    method: &str,
    path: &str,
    sandbox: &str,
    port: &str,
    token: Option<&str>,
) -> reqwest::RequestBuilder {
    let mut request = server
        .http
        .request(method.parse().expect("method"), server.url(path))
        .header("e2b-sandbox-id", sandbox)
        .header("e2b-sandbox-port", port);
    if let Some(token) = token {
        request = request.header("x-access-token", token);
    }
    request
}

/// A unary Connect call.
async fn unary(server: &TestServer, sandbox: &Sandbox, method: &str, body: Value) -> (u16, Value) {
    let (status, _, reply) = read(
        inside(
            server,
            "POST",
            method,
            &sandbox.id,
            ENVD,
            Some(&sandbox.token),
        )
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("request"),
    )
    .await;
    (status, reply)
}

fn envelope(message: &Value) -> Vec<u8> {
    let payload = message.to_string().into_bytes();
    let mut frame = vec![0];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    frame
}

/// The (flags, message) envelopes of a streamed Connect reply.
fn envelopes(mut body: &[u8]) -> Vec<(u8, Value)> {
    let mut frames = Vec::new();
    while body.len() >= 5 {
        let length = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let message = serde_json::from_slice(&body[5..5 + length]).expect("json message");
        frames.push((body[0], message));
        body = &body[5 + length..];
    }
    assert!(body.is_empty(), "trailing bytes");
    frames
}

/// A server-streaming `process.Process` call; its envelopes.
async fn stream(
    server: &TestServer,
    sandbox: &Sandbox,
    method: &str,
    message: Value,
    timeout_ms: Option<u64>,
) -> Vec<(u8, Value)> {
    let mut request = inside(
        server,
        "POST",
        method,
        &sandbox.id,
        ENVD,
        Some(&sandbox.token),
    )
    .header("content-type", "application/connect+json")
    .body(envelope(&message));
    if let Some(timeout) = timeout_ms {
        request = request.header("connect-timeout-ms", timeout.to_string());
    }
    let response = request.send().await.expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/connect+json"
    );
    envelopes(&response.bytes().await.expect("body"))
}

fn decoded(text: &Value) -> String {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.as_str().expect("base64"))
        .expect("base64");
    String::from_utf8(bytes).expect("utf-8")
}

fn assert_error(status: u16, body: &Value, expected: u16, words: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["code"], expected, "E2B's error shape: {body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|message| message.contains(words)),
        "{body} should say {words:?}"
    );
}

#[tokio::test]
async fn the_control_plane_creates_lists_times_out_connects_and_kills() {
    let server = TestServer::start();
    let (status, _, created) = api(
        &server,
        "POST",
        "/v2/sandboxes",
        Some("e2b_anything"),
        Some(json!({"templateID": "base", "timeout": 60, "metadata": {"team": "a b&c"}, "envVars": {"GREETING": "hello"}})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let mut keys: Vec<&str> = created
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "clientID",
            "domain",
            "envdAccessToken",
            "envdVersion",
            "sandboxID",
            "templateID",
            "trafficAccessToken"
        ]
    );
    assert_eq!(
        (
            &created["templateID"],
            &created["clientID"],
            &created["envdVersion"],
            &created["domain"]
        ),
        (
            &json!("base"),
            &json!("default"),
            &json!("0.5.7"),
            &json!(null)
        )
    );
    let id = created["sandboxID"].as_str().expect("id").to_owned();
    let token = created["envdAccessToken"]
        .as_str()
        .expect("token")
        .to_owned();

    // A corral session, with the E2B fields in its metadata and envVars set inside.
    let (_, session) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(session["state"], "idle");
    assert_eq!(session["idle_ttl"].as_f64(), Some(60.0));
    assert_eq!(session["metadata"]["e2b_sandbox"]["templateID"], "base");
    assert_eq!(
        server
            .execute(&id, "import os; os.environ['GREETING']")
            .await["result"]["text/plain"],
        "'hello'"
    );

    let (status, _, detail) = api(&server, "GET", &format!("/sandboxes/{id}"), None, None).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["sandboxID"], id.as_str());
    assert_eq!(detail["state"], "running");
    assert_eq!(detail["metadata"], json!({"team": "a b&c"}));
    assert_eq!(detail["allowInternetAccess"], false);
    for field in ["startedAt", "endAt"] {
        assert!(
            chrono::DateTime::parse_from_rfc3339(detail[field].as_str().expect(field)).is_ok(),
            "{detail}"
        );
    }
    assert!(detail["cpuCount"].as_u64() >= Some(1) && detail["memoryMB"].as_u64() > Some(0));

    let (status, _, second) = api(
        &server,
        "POST",
        "/sandboxes",
        None,
        Some(json!({"templateID": "code-interpreter-v1", "secure": true})),
    )
    .await;
    assert_eq!(status, 201, "{second}");
    let second_id = second["sandboxID"].as_str().expect("id").to_owned();

    // Lists, filters and pages.
    let (status, _, listed) = api(&server, "GET", "/sandboxes", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");
    // The SDK quotes each key and value, then the whole filter is one query parameter.
    let (_, _, filtered) = api(
        &server,
        "GET",
        "/v2/sandboxes?metadata=team%3Da%2520b%2526c",
        None,
        None,
    )
    .await;
    assert_eq!(filtered.as_array().map(Vec::len), Some(1), "{filtered}");
    assert_eq!(filtered[0]["sandboxID"], id.as_str());
    let (_, headers, page) = api(&server, "GET", "/v2/sandboxes?limit=1", None, None).await;
    assert_eq!(page.as_array().map(Vec::len), Some(1));
    let next = headers["x-next-token"].to_str().expect("token").to_owned();
    let (_, headers, rest) = api(
        &server,
        "GET",
        &format!("/v2/sandboxes?limit=1&nextToken={next}"),
        None,
        None,
    )
    .await;
    assert_eq!(rest.as_array().map(Vec::len), Some(1));
    assert_ne!(rest[0]["sandboxID"], page[0]["sandboxID"]);
    assert!(headers.get("x-next-token").is_none(), "the last page");
    let (_, _, paused) = api(&server, "GET", "/v2/sandboxes?state=paused", None, None).await;
    assert_eq!(paused, json!([]));
    let (_, _, running) = api(
        &server,
        "GET",
        "/v2/sandboxes?state=running,paused&template=base",
        None,
        None,
    )
    .await;
    assert_eq!(running.as_array().map(Vec::len), Some(1));
    for (query, words) in [
        ("state=sleeping", "unknown sandbox state"),
        ("limit=0", "limit"),
        ("nextToken=nowhere", "nextToken"),
        ("metadata=novalue", "metadata"),
        ("order=sideways", "order"),
        ("startedAfter=yesterday", "startedAfter"),
    ] {
        let (status, _, body) = api(
            &server,
            "GET",
            &format!("/v2/sandboxes?{query}"),
            None,
            None,
        )
        .await;
        assert_error(status, &body, 400, words);
    }

    // Timeouts and refreshes move the idle TTL.
    let (status, _, _) = api(
        &server,
        "POST",
        &format!("/sandboxes/{id}/timeout"),
        None,
        Some(json!({"timeout": 120})),
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(
        server.get(&format!("/v1/sessions/{id}")).await.1["idle_ttl"].as_f64(),
        Some(120.0)
    );
    for body in [json!({}), json!({"timeout": "soon"}), json!({"timeout": 0})] {
        let (status, _, error) = api(
            &server,
            "POST",
            &format!("/sandboxes/{id}/timeout"),
            None,
            Some(body),
        )
        .await;
        assert_eq!(
            (status, error["code"].clone()),
            (400, json!(400)),
            "{error}"
        );
    }
    let (status, _, _) = api(
        &server,
        "POST",
        &format!("/sandboxes/{id}/refreshes"),
        None,
        Some(json!({"duration": 90})),
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(
        server.get(&format!("/v1/sessions/{id}")).await.1["idle_ttl"].as_f64(),
        Some(90.0)
    );

    // Connecting gives a fresh token; both reach the sandbox.
    let (status, _, connected) = api(
        &server,
        "POST",
        &format!("/v2/sandboxes/{id}/connect"),
        None,
        Some(json!({"timeout": 100})),
    )
    .await;
    assert_eq!(status, 200, "{connected}");
    let fresh = connected["envdAccessToken"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_ne!(fresh, token);
    for token in [&token, &fresh] {
        let health = inside(&server, "GET", "/health", &id, ENVD, Some(token))
            .send()
            .await
            .expect("health");
        assert_eq!(health.status(), 204);
    }
    let (status, _, _) = api(
        &server,
        "POST",
        &format!("/sandboxes/{id}/connect"),
        None,
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200);

    // Killing closes the session and revokes its access tokens; afterwards the sandbox is
    // unknown everywhere.
    let (status, _, _) = api(&server, "DELETE", &format!("/sandboxes/{id}"), None, None).await;
    assert_eq!(status, 204);
    let (_, keys) = server.get("/v1/keys").await;
    let tokens: Vec<&Value> = keys["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter(|key| key["session_id"] == id.as_str())
        .collect();
    assert_eq!(
        tokens.len(),
        3,
        "one from create, two from connects: {keys}"
    );
    assert!(
        tokens.iter().all(|key| key["revoked_at"].is_string()),
        "{keys}"
    );
    assert_eq!(
        server.get(&format!("/v1/sessions/{id}")).await.1["state"],
        "closed"
    );
    for (method, path) in [
        ("DELETE", format!("/sandboxes/{id}")),
        ("GET", format!("/sandboxes/{id}")),
        ("POST", format!("/v2/sandboxes/{id}/connect")),
    ] {
        let (status, _, body) = api(&server, method, &path, None, Some(json!({}))).await;
        assert_error(status, &body, 404, "not found");
    }
    let (status, _, gone) = read(
        inside(&server, "GET", "/health", &id, ENVD, Some(&token))
            .send()
            .await
            .expect("health"),
    )
    .await;
    assert_error(status, &gone, 502, "was not found");

    // A sandbox closed on another surface is gone here too.
    let (status, _) = server.delete(&format!("/v1/sessions/{second_id}")).await;
    assert_eq!(status, 200);
    let (status, _, body) = api(
        &server,
        "GET",
        &format!("/sandboxes/{second_id}"),
        None,
        None,
    )
    .await;
    assert_error(status, &body, 404, "not found");
    let (_, _, listed) = api(&server, "GET", "/sandboxes", None, None).await;
    assert_eq!(listed, json!([]));
}

#[tokio::test]
async fn what_corral_cannot_do_is_refused_clearly() {
    let server = TestServer::start();
    for (body, words) in [
        (
            json!({"templateID": "base", "allow_internet_access": true}),
            "network",
        ),
        (
            json!({"templateID": "base", "network": {"denyOut": ["1.1.1.1"]}}),
            "network",
        ),
        (json!({"templateID": "base", "autoPause": true}), "pause"),
        (
            json!({"templateID": "base", "volumeMounts": [{"name": "v", "path": "/v"}]}),
            "volume",
        ),
        (json!({"templateID": "base", "mcp": {"server": {}}}), "MCP"),
        (json!({"templateID": "no-such-template"}), "unknown runtime"),
        (
            json!({"templateID": "base", "timeout": 0}),
            "timeout must be a positive",
        ),
        (json!({"timeout": 10}), "templateID"),
        (
            json!({"templateID": 7}),
            "expected a string, got the number 7",
        ),
    ] {
        let (status, _, error) = api(&server, "POST", "/v2/sandboxes", None, Some(body)).await;
        assert_error(status, &error, 400, words);
    }
    let response = server
        .http
        .post(server.url("/v2/sandboxes"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("post");
    let (status, _, error) = read(response).await;
    assert_error(status, &error, 400, "JSON");
    // Nothing was left behind, and no network is a fine request.
    let (_, sessions) = server.get("/v1/sessions").await;
    assert_eq!(sessions["sessions"], json!([]));
    let sandbox = create(
        &server,
        None,
        json!({"templateID": "base", "allow_internet_access": false}),
    )
    .await;

    for (method, path) in [
        ("POST", "pause"),
        ("POST", "resume"),
        ("POST", "snapshots"),
        ("POST", "fork"),
        ("GET", "metrics"),
        ("GET", "logs"),
        ("PUT", "network"),
    ] {
        let (status, _, body) = api(
            &server,
            method,
            &format!("/sandboxes/{}/{path}", sandbox.id),
            None,
            Some(json!({})),
        )
        .await;
        assert_error(status, &body, 400, "not supported");
        let (status, _, body) = api(
            &server,
            method,
            &format!("/sandboxes/0190b6a1-7a6e-7cc2-8c4e-0123456789ab/{path}"),
            None,
            Some(json!({})),
        )
        .await;
        assert_error(status, &body, 404, "not found");
    }
    let (status, _, body) = api(
        &server,
        "GET",
        &format!("/v2/sandboxes/{}/logs", sandbox.id),
        None,
        None,
    )
    .await;
    assert_error(status, &body, 400, "not supported");
    let (status, _, body) = api(&server, "GET", "/sandboxes/metrics", None, None).await;
    assert_error(status, &body, 400, "not supported");
    let (status, _, body) = api(&server, "PATCH", "/v2/sandboxes", None, None).await;
    assert_error(status, &body, 405, "method");
}

/// `corral_<id>_<secret>` → `e2b_<id><secret>`, the spelling `corral keys create --format e2b`
/// prints.
fn e2b_spelling(key: &str) -> String {
    let rest = key.strip_prefix("corral_").expect("corral key");
    let (id, secret) = rest.split_once('_').expect("id and secret");
    format!("e2b_{id}{secret}")
}

#[tokio::test]
async fn other_tenants_and_wrong_tokens_find_no_sandbox() {
    let server = TestServer::start();
    let (status, admin) = server.post("/v1/keys", json!({"scope": "admin"})).await;
    assert_eq!(status, 201);
    let admin = admin["key"].as_str().expect("key").to_owned();
    let mut tenants = Vec::new();
    for tenant in ["alice", "bob"] {
        let (status, issued) = server
            .send(
                "POST",
                "/v1/keys",
                Some(&admin),
                Some(&json!({"scope": "tenant", "tenant": tenant}).to_string()),
            )
            .await;
        assert_eq!(status, 201, "{issued}");
        tenants.push(e2b_spelling(issued["key"].as_str().expect("key")));
    }
    let (alice, bob) = (&tenants[0], &tenants[1]);
    assert!(alice.starts_with("e2b_") && alice[4..].bytes().all(|b| b.is_ascii_hexdigit()));

    // Keys are required now, in either spelling; a forged one is refused.
    let (status, _, body) = api(&server, "GET", "/v2/sandboxes", None, None).await;
    assert_error(status, &body, 401, "API key");
    let forged = format!(
        "{}{}",
        &alice[..alice.len() - 1],
        if alice.ends_with('0') { '1' } else { '0' }
    );
    let (status, _, body) = api(&server, "GET", "/v2/sandboxes", Some(&forged), None).await;
    assert_error(status, &body, 401, "API key");

    let alices = create(&server, Some(alice), json!({"templateID": "base"})).await;
    let bobs = create(&server, Some(bob), json!({"templateID": "base"})).await;
    let (_, _, detail) = api(
        &server,
        "GET",
        &format!("/sandboxes/{}", alices.id),
        Some(alice),
        None,
    )
    .await;
    assert_eq!(detail["clientID"], "alice");

    // Bob: Alice's sandbox answers like an unknown one on every control-plane route.
    let unknown = "0190b6a1-7a6e-7cc2-8c4e-0123456789ab";
    for (method, path) in [
        ("GET", "/sandboxes/{}"),
        ("DELETE", "/sandboxes/{}"),
        ("POST", "/sandboxes/{}/timeout"),
        ("POST", "/sandboxes/{}/refreshes"),
        ("POST", "/v2/sandboxes/{}/connect"),
        ("POST", "/sandboxes/{}/pause"),
    ] {
        let body = Some(json!({"timeout": 10}));
        let (status, _, theirs) = api(
            &server,
            method,
            &path.replace("{}", &alices.id),
            Some(bob),
            body.clone(),
        )
        .await;
        let (unknown_status, _, nothing) = api(
            &server,
            method,
            &path.replace("{}", unknown),
            Some(bob),
            body,
        )
        .await;
        assert_eq!((status, unknown_status), (404, 404), "{method} {path}");
        assert_eq!(
            theirs["message"]
                .as_str()
                .map(|m| m.replace(&alices.id, "ID")),
            nothing["message"]
                .as_str()
                .map(|m| m.replace(unknown, "ID")),
        );
    }
    let (_, _, listed) = api(&server, "GET", "/v2/sandboxes", Some(bob), None).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    assert_eq!(listed[0]["sandboxID"], bobs.id.as_str());

    // Inside: a wrong token, Bob's token or Bob's key reach Alice's sandbox as an unknown one.
    for token in [
        Some(bobs.token.as_str()),
        Some("corral_000000000000_00"),
        Some(bob.as_str()),
    ] {
        let (status, _, body) = read(
            inside(&server, "GET", "/health", &alices.id, ENVD, token)
                .send()
                .await
                .expect("health"),
        )
        .await;
        assert_error(status, &body, 502, "was not found");
    }
    let (status, _, body) = read(
        inside(
            &server,
            "POST",
            "/execute",
            &alices.id,
            INTERPRETER,
            Some(&bobs.token),
        )
        .json(&json!({"code": "1"}))
        .send()
        .await
        .expect("execute"),
    )
    .await;
    assert_error(status, &body, 502, "was not found");
    let stolen = Sandbox {
        id: alices.id.clone(),
        token: bobs.token.clone(),
    };
    let (status, body) = unary(
        &server,
        &stolen,
        "/filesystem.Filesystem/ListDir",
        json!({"path": "."}),
    )
    .await;
    assert_eq!(
        (status, &body["code"]),
        (503, &json!("unavailable")),
        "{body}"
    );
    // Without any token or key: 401.
    let (status, _, body) = read(
        inside(&server, "GET", "/health", &alices.id, ENVD, None)
            .send()
            .await
            .expect("health"),
    )
    .await;
    assert_error(status, &body, 401, "access token");
    // Alice's own token works.
    let health = inside(
        &server,
        "GET",
        "/health",
        &alices.id,
        ENVD,
        Some(&alices.token),
    )
    .send()
    .await
    .expect("health");
    assert_eq!(health.status(), 204);
}

#[tokio::test]
async fn inside_a_sandbox_code_files_and_commands_run_in_its_session() {
    let server = TestServer::start();
    let sandbox = create(&server, None, json!({"templateID": "code-interpreter-v1"})).await;

    // Routing by header.
    let (status, _, body) = read(
        server
            .http
            .get(server.url("/health"))
            .header("x-access-token", &sandbox.token)
            .send()
            .await
            .expect("health"),
    )
    .await;
    assert_error(status, &body, 400, "E2b-Sandbox-Id");
    let (status, _, body) = read(
        inside(
            &server,
            "GET",
            "/health",
            &sandbox.id,
            INTERPRETER,
            Some(&sandbox.token),
        )
        .send()
        .await
        .expect("health"),
    )
    .await;
    assert_error(status, &body, 404, "port 49999");

    // /execute streams lines.
    let execute = |body: Value| {
        inside(
            &server,
            "POST",
            "/execute",
            &sandbox.id,
            INTERPRETER,
            Some(&sandbox.token),
        )
        .json(&body)
        .send()
    };
    let response = execute(json!({"code": "print('hi')\nx = 1\nx + 1"}))
        .await
        .expect("execute");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("body");
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("json line"))
        .collect();
    let types: Vec<&str> = lines
        .iter()
        .map(|line| line["type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        types,
        [
            "stdout",
            "result",
            "number_of_executions",
            "end_of_execution"
        ],
        "{text}"
    );
    assert_eq!(lines[0]["text"], "hi\n");
    assert!(lines[0]["timestamp"].as_i64() > Some(1_600_000_000_000_000_000));
    assert_eq!(
        (&lines[1]["text"], &lines[1]["is_main_result"]),
        (&json!("2"), &json!(true))
    );
    assert_eq!(lines[2]["execution_count"], 1);
    let text = execute(json!({"code": "raise KeyError('k')"}))
        .await
        .expect("execute")
        .text()
        .await
        .expect("body");
    let error: Value = serde_json::from_str(text.lines().next().expect("line")).expect("json");
    assert_eq!(
        (&error["type"], &error["name"], &error["value"]),
        (&json!("error"), &json!("KeyError"), &json!("'k'"))
    );
    assert!(error["traceback"]
        .as_str()
        .is_some_and(|traceback| traceback.contains("KeyError")));
    let text = execute(
        json!({"code": "import os; os.environ.get('ONLY_HERE')", "env_vars": {"ONLY_HERE": "yes"}}),
    )
    .await
    .expect("execute")
    .text()
    .await
    .expect("body");
    assert!(text.contains("\"text\":\"'yes'\""), "{text}");
    let text = execute(json!({"code": "import os; os.environ.get('ONLY_HERE')"}))
        .await
        .expect("execute")
        .text()
        .await
        .expect("body");
    assert!(
        !text.contains("'yes'"),
        "env_vars are per execution: {text}"
    );
    for (body, status, words) in [
        (json!({"code": "1", "language": "r"}), 400, "not supported"),
        (
            json!({"code": "1", "context_id": "nope"}),
            404,
            "context nope not found",
        ),
        (json!({"context_id": "default"}), 400, "code"),
    ] {
        let (got, _, error) = read(execute(body).await.expect("execute")).await;
        assert_error(got, &error, status, words);
    }

    // Contexts.
    let contexts = |method: &str, path: &str| {
        inside(
            &server,
            method,
            path,
            &sandbox.id,
            INTERPRETER,
            Some(&sandbox.token),
        )
    };
    let (status, _, context) = read(
        contexts("POST", "/contexts")
            .json(&json!({"cwd": "/tmp"}))
            .send()
            .await
            .expect("create"),
    )
    .await;
    assert_eq!(status, 200, "{context}");
    assert_eq!(
        (&context["language"], &context["cwd"]),
        (&json!("python"), &json!("/tmp"))
    );
    let context_id = context["id"].as_str().expect("id").to_owned();
    let text = execute(json!({"code": "import os\nz = 3\nos.getcwd()", "context_id": context_id}))
        .await
        .expect("execute")
        .text()
        .await
        .expect("body");
    assert!(text.contains("\"text\":\"'/tmp'\""), "{text}");
    let (_, _, listed) = read(contexts("GET", "/contexts").send().await.expect("list")).await;
    let ids: Vec<&str> = listed
        .as_array()
        .expect("list")
        .iter()
        .map(|c| c["id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(ids, ["default", context_id.as_str()]);
    let restart = contexts("POST", &format!("/contexts/{context_id}/restart"))
        .send()
        .await
        .expect("restart");
    assert_eq!(restart.status(), 204);
    let text = execute(json!({"code": "z", "context_id": context_id}))
        .await
        .expect("execute")
        .text()
        .await
        .expect("body");
    assert!(
        text.contains("NameError"),
        "a restarted context starts empty: {text}"
    );
    let removed = contexts("DELETE", &format!("/contexts/{context_id}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(removed.status(), 204);
    for (method, path, status) in [
        ("DELETE", format!("/contexts/{context_id}"), 404),
        ("POST", format!("/contexts/{context_id}/restart"), 404),
        ("DELETE", "/contexts/default".to_owned(), 400),
    ] {
        let (got, _, body) = read(contexts(method, &path).send().await.expect("request")).await;
        assert_eq!(
            (got, body["code"].clone()),
            (status, json!(status)),
            "{method} {path}: {body}"
        );
    }
    let (_, _, body) = read(
        contexts("POST", "/contexts")
            .json(&json!({"language": "r"}))
            .send()
            .await
            .expect("create"),
    )
    .await;
    assert_eq!(body["code"], 400, "{body}");
    let (_, _, body) = read(
        contexts("POST", "/contexts")
            .json(&json!({"language": "js"}))
            .send()
            .await
            .expect("create"),
    )
    .await;
    assert_eq!(body["language"], "javascript", "{body}");

    // /files: multipart and raw uploads, downloads, paths outside the workspace.
    let files = |method: &str, query: &str| {
        inside(
            &server,
            method,
            &format!("/files{query}"),
            &sandbox.id,
            ENVD,
            Some(&sandbox.token),
        )
    };
    let multipart = "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a/b.txt\"\r\nContent-Type: application/octet-stream\r\n\r\nbee\r\n--XyZ--\r\n";
    let (status, _, written) = read(
        files("POST", "")
            .header("content-type", "multipart/form-data; boundary=XyZ")
            .body(multipart)
            .send()
            .await
            .expect("upload"),
    )
    .await;
    assert_eq!(status, 200, "{written}");
    assert_eq!(
        written,
        json!([{"name": "b.txt", "type": "file", "path": "/workspace/a/b.txt"}])
    );
    let (status, _, written) = read(
        files("POST", "?path=/home/user/raw.bin")
            .header("content-type", "application/octet-stream")
            .body("raw bytes")
            .send()
            .await
            .expect("upload"),
    )
    .await;
    assert_eq!(
        (status, &written[0]["path"]),
        (200, &json!("/workspace/raw.bin"))
    );
    // Larger than other routes' body limit: uploads may be up to 64 MiB.
    let big = vec![7u8; 5 * 1024 * 1024];
    let (status, _, written) = read(
        files("POST", "?path=big.bin")
            .header("content-type", "application/octet-stream")
            .body(big.clone())
            .send()
            .await
            .expect("upload"),
    )
    .await;
    assert_eq!(status, 200, "{written}");
    let back = files("GET", "?path=big.bin")
        .send()
        .await
        .expect("download");
    assert_eq!(back.bytes().await.expect("body").len(), big.len());
    let download = files("GET", "?path=/home/user/a/b.txt")
        .send()
        .await
        .expect("download");
    assert_eq!(download.status(), 200);
    assert_eq!(download.text().await.expect("body"), "bee");
    assert_eq!(
        server.execute(&sandbox.id, "open('raw.bin').read()").await["result"]["text/plain"],
        "'raw bytes'"
    );
    for (query, status, words) in [
        ("?path=/etc/passwd", 400, "outside"),
        ("?path=missing.txt", 404, ""),
        ("?path=a", 400, ""),
        ("", 400, "path"),
    ] {
        let (got, _, body) = read(files("GET", query).send().await.expect("download")).await;
        assert_error(got, &body, status, words);
    }
    let (got, _, body) = read(
        files("POST", "")
            .header("content-type", "multipart/form-data; boundary=XyZ")
            .body("--XyZ\r\nbroken")
            .send()
            .await
            .expect("upload"),
    )
    .await;
    assert_error(got, &body, 400, "multipart");

    // The filesystem service.
    let (status, listed) = unary(
        &server,
        &sandbox,
        "/filesystem.Filesystem/ListDir",
        json!({"path": "/home/user/a"}),
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    let entry = &listed["entries"][0];
    assert_eq!(
        (
            &entry["name"],
            &entry["type"],
            &entry["path"],
            &entry["size"]
        ),
        (
            &json!("b.txt"),
            &json!("FILE_TYPE_FILE"),
            &json!("/workspace/a/b.txt"),
            &json!("3")
        )
    );
    assert!(entry["permissions"]
        .as_str()
        .is_some_and(|p| p.starts_with("-rw")));
    assert!(entry["modifiedTime"]
        .as_str()
        .is_some_and(|time| chrono::DateTime::parse_from_rfc3339(time).is_ok()));
    let (status, made) = unary(
        &server,
        &sandbox,
        "/filesystem.Filesystem/MakeDir",
        json!({"path": "d/e"}),
    )
    .await;
    assert_eq!(
        (status, &made["entry"]["type"]),
        (200, &json!("FILE_TYPE_DIRECTORY")),
        "{made}"
    );
    let (status, again) = unary(
        &server,
        &sandbox,
        "/filesystem.Filesystem/MakeDir",
        json!({"path": "d/e"}),
    )
    .await;
    assert_eq!(
        (status, &again["code"]),
        (409, &json!("already_exists")),
        "{again}"
    );
    let (status, moved) = unary(
        &server,
        &sandbox,
        "/filesystem.Filesystem/Move",
        json!({"source": "a/b.txt", "destination": "d/e/c.txt"}),
    )
    .await;
    assert_eq!(
        (status, &moved["entry"]["path"]),
        (200, &json!("/workspace/d/e/c.txt")),
        "{moved}"
    );
    let (status, stat) = unary(
        &server,
        &sandbox,
        "/filesystem.Filesystem/Stat",
        json!({"path": "d/e/c.txt"}),
    )
    .await;
    assert_eq!((status, &stat["entry"]["name"]), (200, &json!("c.txt")));
    let (status, removed) = unary(
        &server,
        &sandbox,
        "/filesystem.Filesystem/Remove",
        json!({"path": "d"}),
    )
    .await;
    assert_eq!((status, removed), (200, json!({})));
    for (method, body, status, code) in [
        ("Stat", json!({"path": "d"}), 404, "not_found"),
        (
            "ListDir",
            json!({"path": "raw.bin"}),
            400,
            "invalid_argument",
        ),
        ("Stat", json!({"path": 5}), 400, "invalid_argument"),
        ("WatchDir", json!({"path": "."}), 501, "unimplemented"),
        ("Nope", json!({}), 404, "not_found"),
    ] {
        let (got, error) = unary(
            &server,
            &sandbox,
            &format!("/filesystem.Filesystem/{method}"),
            body,
        )
        .await;
        assert_eq!(
            (got, &error["code"]),
            (status, &json!(code)),
            "{method}: {error}"
        );
        assert!(error["message"].is_string());
    }
    let binary = inside(
        &server,
        "POST",
        "/filesystem.Filesystem/Stat",
        &sandbox.id,
        ENVD,
        Some(&sandbox.token),
    )
    .header("content-type", "application/proto")
    .body(vec![10, 1, 46])
    .send()
    .await
    .expect("proto");
    assert_eq!(binary.status(), 415);

    // The process service: a command's output, exit code and trailer.
    let frames = stream(
        &server,
        &sandbox,
        "/process.Process/Start",
        json!({"process": {"cmd": "/bin/bash", "args": ["-l", "-c", "echo out; echo err >&2; pwd; exit 4"], "envs": {}}, "stdin": false}),
        None,
    )
    .await;
    let (flags, start) = &frames[0];
    assert_eq!(*flags, 0);
    assert!(start["event"]["start"]["pid"].as_u64() > Some(0), "{start}");
    let mut stdout = String::new();
    let mut stderr = String::new();
    for (_, frame) in &frames[1..frames.len() - 2] {
        let data = &frame["event"]["data"];
        if data.get("stdout").is_some() {
            stdout.push_str(&decoded(&data["stdout"]));
        } else {
            stderr.push_str(&decoded(&data["stderr"]));
        }
    }
    assert_eq!(stdout, "out\n/workspace\n");
    assert_eq!(stderr, "err\n");
    let (_, end) = &frames[frames.len() - 2];
    assert_eq!(
        end["event"]["end"],
        json!({"exitCode": 4, "exited": true, "status": "exit status 4"})
    );
    assert_eq!(frames[frames.len() - 1], (2, json!({})));

    // A command past its deadline is killed; the trailer says so.
    let frames = stream(
        &server,
        &sandbox,
        "/process.Process/Start",
        json!({"process": {"cmd": "/bin/sleep", "args": ["30"]}}),
        Some(1500),
    )
    .await;
    let (flags, trailer) = frames.last().expect("trailer");
    assert_eq!(
        (*flags, &trailer["error"]["code"]),
        (2, &json!("deadline_exceeded")),
        "{frames:?}"
    );
    let (status, listed) = unary(&server, &sandbox, "/process.Process/List", json!({})).await;
    assert_eq!((status, listed), (200, json!({"processes": []})));
    // Errors of a stream come in its trailer.
    for (message, code) in [
        (json!({"process": {"cmd": "/no/such/binary"}}), "not_found"),
        (
            json!({"process": {"cmd": "/bin/true"}, "pty": {"size": {"cols": 80, "rows": 24}}}),
            "unimplemented",
        ),
        (json!({"process": {"pid": 999999}}), "not_found"),
    ] {
        let method = if message["process"].get("pid").is_some() {
            "Connect"
        } else {
            "Start"
        };
        let frames = stream(
            &server,
            &sandbox,
            &format!("/process.Process/{method}"),
            message,
            None,
        )
        .await;
        let (flags, trailer) = frames.last().expect("trailer");
        assert_eq!(
            (*flags, &trailer["error"]["code"]),
            (2, &json!(code)),
            "{method}: {frames:?}"
        );
    }
    for (method, body, status, code) in [
        (
            "SendSignal",
            json!({"process": {"pid": 999999}, "signal": "SIGNAL_SIGKILL"}),
            404,
            "not_found",
        ),
        (
            "SendSignal",
            json!({"process": {"pid": 1}, "signal": "SIGNAL_SIGHUP"}),
            400,
            "invalid_argument",
        ),
        (
            "SendInput",
            json!({"process": {"pid": 1}}),
            400,
            "invalid_argument",
        ),
        (
            "SendInput",
            json!({"process": {"pid": 1}, "input": {"pty": "aGk="}}),
            501,
            "unimplemented",
        ),
        (
            "SendInput",
            json!({"process": {"pid": 999999}, "input": {"stdin": "aGk="}}),
            404,
            "not_found",
        ),
        (
            "CloseStdin",
            json!({"process": {"pid": 999999}}),
            404,
            "not_found",
        ),
        ("StreamInput", json!({}), 501, "unimplemented"),
        ("Nope", json!({}), 404, "not_found"),
    ] {
        let (got, error) = unary(
            &server,
            &sandbox,
            &format!("/process.Process/{method}"),
            body,
        )
        .await;
        assert_eq!(
            (got, &error["code"]),
            (status, &json!(code)),
            "{method}: {error}"
        );
    }
    // A command with stdin: written, then closed.
    let started = {
        let request = inside(
            &server,
            "POST",
            "/process.Process/Start",
            &sandbox.id,
            ENVD,
            Some(&sandbox.token),
        )
        .header("content-type", "application/connect+json")
        .body(envelope(
            &json!({"process": {"cmd": "/bin/cat", "args": []}, "stdin": true, "tag": "cat"}),
        ));
        tokio::spawn(async move {
            let response = request.send().await.expect("start");
            envelopes(&response.bytes().await.expect("body"))
        })
    };
    let deadline = std::time::Instant::now() + support::DEADLINE;
    loop {
        let (_, listed) = unary(&server, &sandbox, "/process.Process/List", json!({})).await;
        if listed["processes"][0]["tag"] == "cat" {
            assert_eq!(listed["processes"][0]["config"]["cmd"], "/bin/cat");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "cat never started: {listed}"
        );
    }
    for (method, body) in [
        (
            "SendInput",
            json!({"process": {"tag": "cat"}, "input": {"stdin": "aGVsbG8K"}}),
        ),
        ("CloseStdin", json!({"process": {"tag": "cat"}})),
    ] {
        let (status, reply) = unary(
            &server,
            &sandbox,
            &format!("/process.Process/{method}"),
            body,
        )
        .await;
        assert_eq!((status, reply), (200, json!({})), "{method}");
    }
    let frames = started.await.expect("stream");
    let output: String = frames
        .iter()
        .filter_map(|(_, frame)| frame["event"]["data"].get("stdout"))
        .map(decoded)
        .collect();
    assert_eq!(output, "hello\n");
    assert_eq!(frames[frames.len() - 2].1["event"]["end"]["exitCode"], 0);
    let (status, _, body) = read(
        files("POST", "?path=z.gz")
            .header("content-type", "application/octet-stream")
            .header("content-encoding", "gzip")
            .body(vec![31u8, 139])
            .send()
            .await
            .expect("upload"),
    )
    .await;
    assert_error(status, &body, 400, "gzip");

    // The cells and commands above ran in the sandbox's one session, next to its code.
    let (_, session) = server.get(&format!("/v1/sessions/{}", sandbox.id)).await;
    assert_eq!(session["state"], "idle");
    assert_eq!(
        server.execute(&sandbox.id, "x").await["result"]["text/plain"],
        "1"
    );
}

#[tokio::test]
async fn the_surfaces_move_and_switch_off_like_every_surface() {
    let server = TestServer::start_with_arguments(
        "",
        &["--mount", "e2b_api=/e2b-api", "--mount", "e2b_sandbox=off"],
    );
    let (status, _, moved) = api(
        &server,
        "POST",
        "/e2b-api/v2/sandboxes",
        None,
        Some(json!({"templateID": "base"})),
    )
    .await;
    assert_eq!(status, 201, "{moved}");
    let id = moved["sandboxID"].as_str().expect("id");
    let (status, _, _) = api(&server, "POST", "/v2/sandboxes", None, Some(json!({}))).await;
    assert_eq!(status, 404, "not at the root any more");
    let (status, _, _) = read(
        inside(
            &server,
            "GET",
            "/health",
            id,
            ENVD,
            moved["envdAccessToken"].as_str(),
        )
        .send()
        .await
        .expect("health"),
    )
    .await;
    assert_eq!(status, 404, "the in-sandbox routes are off");
    let (_, document) = server.get("/openapi.json").await;
    let paths = document["paths"].as_object().expect("paths");
    assert!(paths.contains_key("/e2b-api/sandboxes/{sandboxID}"));
    assert!(!paths.contains_key("/execute"));
}

#[tokio::test]
async fn file_operations_and_commands_are_not_cells() {
    let server = TestServer::start();
    let sandbox = create(&server, None, json!({"templateID": "code-interpreter-v1"})).await;
    let execute = |code: &str| {
        inside(
            &server,
            "POST",
            "/execute",
            &sandbox.id,
            INTERPRETER,
            Some(&sandbox.token),
        )
        .json(&json!({ "code": code }))
        .send()
    };
    let count_of = |text: &str| {
        text.lines()
            .map(|line| serde_json::from_str::<Value>(line).expect("json line"))
            .find(|line| line["type"] == "number_of_executions")
            .map(|line| line["execution_count"].clone())
    };
    let first = execute("6 * 7")
        .await
        .expect("execute")
        .text()
        .await
        .expect("body");
    assert_eq!(count_of(&first), Some(json!(1)), "{first}");
    let (status, listed) = unary(
        &server,
        &sandbox,
        "/filesystem.Filesystem/ListDir",
        json!({"path": "/home/user"}),
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    let (status, made) = unary(
        &server,
        &sandbox,
        "/filesystem.Filesystem/MakeDir",
        json!({"path": "/home/user/made"}),
    )
    .await;
    assert_eq!(status, 200, "{made}");
    // The next cell is the second, and `_` is still the first cell's value.
    let second = execute("_")
        .await
        .expect("execute")
        .text()
        .await
        .expect("body");
    assert_eq!(count_of(&second), Some(json!(2)), "{second}");
    assert!(second.contains("\"42\""), "{second}");
    let (_, history) = server
        .get(&format!("/v1/sessions/{}/executions", sandbox.id))
        .await;
    let codes: Vec<&str> = history["executions"]
        .as_array()
        .expect("executions")
        .iter()
        .map(|execution| execution["code"].as_str().expect("code"))
        .collect();
    assert_eq!(codes, ["6 * 7", "_"]);
}
