//! The web console's files, served by the binary itself at `/console` (the browser test is
//! `console/e2e/console.test.mjs`, run by scripts/test): the page, its script and style sheet,
//! with a content security policy, readable without a key while every API call needs one.

mod support;

use support::TestServer;

#[tokio::test]
async fn the_console_is_served_by_the_binary() {
    let server = TestServer::start_with_arguments("", &["--require-auth"]);
    let page = server
        .http
        .get(server.url("/console"))
        .send()
        .await
        .expect("GET /console");
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert!(headers["content-security-policy"]
        .to_str()
        .expect("csp")
        .contains("script-src 'self'"));
    let html = page.text().await.expect("html");
    assert!(html.contains("/console/assets/console.js"), "{html}");
    for (path, kind) in [
        ("/console/assets/console.js", "text/javascript"),
        ("/console/assets/console.css", "text/css"),
    ] {
        let asset = server
            .http
            .get(server.url(path))
            .send()
            .await
            .expect("asset");
        assert_eq!(asset.status(), 200, "{path}");
        assert!(asset.headers()["content-type"]
            .to_str()
            .expect("type")
            .starts_with(kind));
        assert!(!asset.text().await.expect("body").is_empty());
    }
    // The page holds no data: the API it calls still wants a key.
    let (status, _) = server.get("/v1/sessions").await;
    assert_eq!(status, 401);
    let (status, problem) = server.get("/console/nothing-here").await;
    assert_eq!(status, 404, "{problem}");
}
