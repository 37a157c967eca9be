//! The files API: transfers run inside the session's sandbox; paths leaving the workspace are
//! refused; uploads are capped by the workspace size.

mod support;

use serde_json::json;
use support::TestServer;

async fn put(server: &TestServer, id: &str, path: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
    support::response(
        server
            .http
            .put(server.url(&format!("/v1/sessions/{id}/files/{path}")))
            .body(body)
            .send()
            .await,
    )
    .await
}

#[tokio::test]
async fn files_round_trip_and_are_visible_to_code() {
    let server = TestServer::start();
    let id = server.create_session().await;
    let (status, written) = put(&server, &id, "notes/today/a.txt", b"hello".to_vec()).await;
    assert_eq!(status, 201, "{written}");
    assert_eq!(written, json!({"path": "notes/today/a.txt", "size": 5}));
    let seen = server
        .execute(&id, "open('notes/today/a.txt').read()")
        .await;
    assert_eq!(seen["result"]["text/plain"], "'hello'");

    server
        .execute(
            &id,
            "open('made.bin', 'wb').write(bytes(range(256)) * 4096)",
        )
        .await;
    let response = server
        .http
        .get(server.url(&format!("/v1/sessions/{id}/files/made.bin")))
        .send()
        .await
        .expect("download");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-length"], "1048576");
    let bytes = response.bytes().await.expect("body");
    assert_eq!(bytes.len(), 1024 * 1024);
    assert!(bytes
        .chunks(256)
        .all(|chunk| chunk.iter().enumerate().all(|(i, b)| *b as usize == i)));

    let big: Vec<u8> = (0..8 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let (status, _) = put(&server, &id, "big.bin", big.clone()).await;
    assert_eq!(status, 201);
    let back = server
        .http
        .get(server.url(&format!("/v1/sessions/{id}/files/big.bin")))
        .send()
        .await
        .expect("download")
        .bytes()
        .await
        .expect("body");
    assert!(back.as_ref() == big.as_slice(), "8 MiB round trip");

    let (status, listing) = server.get(&format!("/v1/sessions/{id}/files")).await;
    assert_eq!(status, 200);
    let names: Vec<(&str, &str)> = listing["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|entry| {
            (
                entry["name"].as_str().expect("name"),
                entry["type"].as_str().expect("type"),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("big.bin", "file"),
            ("made.bin", "file"),
            ("notes", "directory")
        ]
    );
    let (_, nested) = server
        .get(&format!("/v1/sessions/{id}/files?dir=notes/today"))
        .await;
    assert_eq!(nested["entries"][0]["name"], "a.txt");
    assert_eq!(nested["entries"][0]["size"], 5);

    let (status, _) = server
        .delete(&format!("/v1/sessions/{id}/files/notes"))
        .await;
    assert_eq!(status, 204);
    let (status, problem) = server
        .get(&format!("/v1/sessions/{id}/files/notes/today/a.txt"))
        .await;
    assert_eq!((status, &problem["code"]), (404, &json!("file_not_found")));
    let (status, _) = server
        .delete(&format!("/v1/sessions/{id}/files/notes"))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn paths_leaving_the_workspace_are_refused() {
    let server = TestServer::start();
    let id = server.create_session().await;
    server
        .execute(
            &id,
            "import os\nos.symlink('/etc/passwd', 'passwd')\nos.symlink('/tmp', 'tmp')\nos.symlink('inside.txt', 'ok-link')\nopen('inside.txt', 'w').write('in')",
        )
        .await;
    // `%2F` keeps clients from resolving the dot segments before they reach the server.
    for path in [
        "..%2Fetc%2Fpasswd",
        "a%2F..%2F..%2Fx",
        "passwd",
        "tmp/x",
        "%2Fetc%2Fpasswd",
    ] {
        let (status, problem) = server.get(&format!("/v1/sessions/{id}/files/{path}")).await;
        assert_eq!(status, 400, "{path}: {problem}");
        assert_eq!(problem["code"], "invalid_path", "{path}");
    }
    let (status, _) = put(&server, &id, "tmp/escape.txt", b"x".to_vec()).await;
    assert_eq!(status, 400);
    let (status, _) = put(&server, &id, "..%2Fescape.txt", b"x".to_vec()).await;
    assert_eq!(status, 400);
    let (status, problem) = server
        .get(&format!("/v1/sessions/{id}/files?dir=tmp"))
        .await;
    assert_eq!(status, 400, "{problem}");
    // A symlink that stays inside the workspace is fine.
    let response = server
        .http
        .get(server.url(&format!("/v1/sessions/{id}/files/ok-link")))
        .send()
        .await
        .expect("get");
    assert_eq!(response.text().await.expect("body"), "in");
    // Deleting a symlink removes the link, not its target.
    let (status, _) = server.delete(&format!("/v1/sessions/{id}/files/tmp")).await;
    assert_eq!(status, 204);
    let still = server
        .execute(&id, "import os\nos.path.isdir('/tmp')")
        .await;
    assert_eq!(still["result"]["text/plain"], "True");
    // Directories are not files.
    server.execute(&id, "os.mkdir('folder')").await;
    let (status, problem) = server.get(&format!("/v1/sessions/{id}/files/folder")).await;
    assert_eq!((status, &problem["code"]), (409, &json!("wrong_file_type")));
}

#[tokio::test]
async fn uploads_are_capped_by_the_workspace_size() {
    let server = TestServer::start_with_config("[sandbox]\nworkspace_mib = 2\n");
    let id = server.create_session().await;
    let (status, problem) = put(&server, &id, "big.bin", vec![7u8; 3 * 1024 * 1024]).await;
    assert_eq!(
        (status, &problem["code"]),
        (413, &json!("workspace_full")),
        "{problem}"
    );
    // Without a Content-Length the stream is cut off by the full workspace.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..48).map(|_| Ok(vec![1u8; 64 * 1024])).collect();
    let (status, problem) = support::response(
        server
            .http
            .put(server.url(&format!("/v1/sessions/{id}/files/streamed.bin")))
            .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
            .send()
            .await,
    )
    .await;
    assert_eq!(
        (status, &problem["code"]),
        (413, &json!("workspace_full")),
        "{problem}"
    );
    server
        .delete(&format!("/v1/sessions/{id}/files/streamed.bin"))
        .await;
    let (status, _) = put(&server, &id, "small.bin", vec![1u8; 1024]).await;
    assert_eq!(status, 201);
    assert_eq!(
        server.execute(&id, "1 + 1").await["result"]["text/plain"],
        "2"
    );
}

#[tokio::test]
async fn files_of_ended_or_unknown_sessions() {
    let server = TestServer::start();
    let id = server.create_session().await;
    server.delete(&format!("/v1/sessions/{id}")).await;
    let (status, problem) = server.get(&format!("/v1/sessions/{id}/files/a.txt")).await;
    assert_eq!((status, &problem["state"]), (409, &json!("closed")));
    let (status, _) = server
        .get("/v1/sessions/00000000-0000-7000-8000-000000000000/files")
        .await;
    assert_eq!(status, 404);
}
