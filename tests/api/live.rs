//! The live room over WebSocket, against real Redis with two nodes.

use lychee_live::identity::Role;
use serde_json::json;

use crate::helpers::TestEnv;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn welcome_chat_and_stock_across_two_nodes() {
    let mut env = TestEnv::production().await;
    let a = env.node().await;
    let b = env.node().await;
    let host = env.token(Role::Host, "alice");
    let mei = env.token(Role::Viewer, "mei");
    let li = env.token(Role::Viewer, "li");
    let sale = a.live_sale(&host, "reserve", "FZX", 10, 5).await;

    let (mut va, welcome) = a.join(&sale, &mei, None).await;
    assert_eq!(welcome["you"]["user_id"], "mei");
    assert_eq!(welcome["sale"]["id"], sale.as_str());
    assert_eq!(welcome["chat"], json!([]));
    assert_eq!(welcome["slow_mode_secs"], 0);
    let (mut vb, _) = b.join(&sale, &li, None).await;

    va.chat("  first box is mine  ").await;
    for v in [&mut va, &mut vb] {
        let m = v.next_of("chat").await;
        assert_eq!(
            (m["seq"].clone(), m["text"].clone(), m["user_id"].clone()),
            (json!(1), json!("first box is mine"), json!("mei"))
        );
    }
    // A REST buy on node a: viewers on node b see the stock fall.
    a.buy(&mei, &sale, "k1", "FZX", 2).await.expect(201);
    let s = vb.next_of("stock").await;
    assert_eq!(
        (
            s["sku"].clone(),
            s["remaining"].clone(),
            s["reserved"].clone()
        ),
        (json!("FZX"), json!(8), json!(2))
    );

    // A buy over the socket: the answer comes to that socket with its ref.
    vb.send(json!({ "type": "buy", "sku": "FZX", "qty": 1, "ref": "ws-1" }))
        .await;
    let o = vb.next_of("order").await;
    assert_eq!(o["ref"], "ws-1");
    assert_eq!(o["order"]["status"], "reserved");
    vb.send(json!({ "type": "ping", "ref": "p" })).await;
    assert_eq!(vb.next_of("pong").await["ref"], "p");
    let (_, again) = b.join(&sale, &li, None).await;
    assert_eq!(again["chat"][0]["text"], "first box is mine");
}
