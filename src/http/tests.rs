//! The HTTP layer on an embedded node, driven in process.

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt;

use crate::testing::Embedded;

/// Log lines, kept for the test to read.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

/// A row the code cannot read (here a product's `ships_to` that is not
/// JSON) is an internal error: the answer says no more, and the log line
/// names the route and the sale, never the raw path.
#[tokio::test]
async fn an_internal_error_logs_with_its_route_and_ids() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _logging = tracing::subscriber::set_default(subscriber);
    let node = Embedded::start(|_| {}).await;
    let sale = node.sale_id;

    let db = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        node.dir.join("lychee.db").display()
    ))
    .await
    .expect("the node's database");
    sqlx::query("UPDATE products SET ships_to = 'not json' WHERE sale_id = $1")
        .bind(sale)
        .execute(&db)
        .await
        .expect("corrupt a row");
    db.close().await;

    let app = super::app(node.node.state.clone());
    let res = app
        .oneshot(
            Request::get(format!(
                "/api/v1/sales/{sale}?access_token=secret-in-the-query"
            ))
            .body(Body::empty())
            .expect("request"),
        )
        .await
        .expect("an answer");
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = axum::body::to_bytes(res.into_body(), 4096)
        .await
        .expect("body");
    let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(
        body,
        serde_json::json!({ "error": { "code": "internal", "message": "internal error" } })
    );

    let text = logs.text();
    let line = text
        .lines()
        .find(|l| l.contains("internal error"))
        .unwrap_or_else(|| panic!("no internal error logged in:\n{text}"));
    assert!(line.contains(r#"route="/api/v1/sales/{id}""#), "{line}");
    assert!(line.contains(&format!(r#"id="{sale}""#)), "{line}");
    assert!(line.contains("ships_to"), "the cause: {line}");
    assert!(!text.contains("secret-in-the-query"), "{text}");
}
