//! `ChatStore`: the Lua script and the in-memory rules give the same
//! answers. Every post carries the same `ts`: Redis counts the rate from
//! it, memory from its own clock, and neither moves during a case.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{next_of, Keep, HOSTILE_USERS};
use crate::helpers::TestEnv;
use lychee_live::catalog::SaleStatus;
use lychee_live::hub::chat::{
    ChatMessage, ChatRate, ChatStore, MemoryChat, Post, Posted, RedisChat, HISTORY,
};
use lychee_live::hub::{EventBus, LocalBus, SaleEvent};
use lychee_live::inventory::memory::MemoryInventory;
use lychee_live::inventory::redis::RedisInventory;
use lychee_live::inventory::{Inventory, SaleSeed};
use lychee_live::kv::Redis;

const TS: i64 = 1_700_000_000_000;
/// Burst 3, then one message every 2 s: no token comes back during a case.
const RATE: ChatRate = ChatRate {
    per_sec: 0.5,
    burst: 3,
};

pub struct Chat {
    store: Arc<dyn ChatStore>,
    /// Another node's store of the same deployment (one process: the same).
    other: Arc<dyn ChatStore>,
    /// Makes a sale's live state (Redis's chat refuses a sale without it)
    /// and holds its bans.
    inventory: Arc<dyn Inventory>,
    /// Where posted messages reach the viewers.
    bus: Arc<dyn EventBus>,
}

impl Chat {
    /// A live sale, as the rebuilder creates it: its chat starts at seq 1.
    async fn live_sale(&self) -> Uuid {
        let sale_id = Uuid::new_v4();
        self.inventory
            .install(&SaleSeed {
                sale_id,
                epoch: TS * 1000,
                status: SaleStatus::Live,
                products: Vec::new(),
                holdings: Vec::new(),
                chat_seq_floor: 0,
            })
            .await
            .unwrap();
        sale_id
    }
}

async fn memory() -> (Chat, Keep) {
    let bus = Arc::new(LocalBus::new());
    let inventory = Arc::new(MemoryInventory::new());
    let store: Arc<dyn ChatStore> = Arc::new(MemoryChat::new(bus.clone(), RATE, inventory.clone()));
    let chat = Chat {
        other: store.clone(),
        store,
        inventory,
        bus,
    };
    (chat, Keep::memory())
}

async fn redis() -> (Chat, Keep) {
    let env = TestEnv::production().await;
    let prefix = env.prefix().unwrap().to_owned();
    let redis = Redis::connect(&crate::helpers::redis_target())
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let bus = super::redis_bus(&redis, &prefix, shutdown.clone()).await;
    let chat = Chat {
        store: Arc::new(RedisChat::new(redis.conn.clone(), &prefix, RATE)),
        other: Arc::new(RedisChat::new(redis.conn.clone(), &prefix, RATE)),
        inventory: Arc::new(RedisInventory::new(redis.conn.clone(), &prefix)),
        bus,
    };
    (chat, Keep::redis(env, Some(shutdown)))
}

conformance_cases! {
    posts_are_numbered_in_order_and_kept: [memory, redis],
    history_since_and_last: [memory, redis],
    deleted_messages_leave_history: [memory, redis],
    a_new_sale_has_an_empty_chat: [memory, redis],
    history_keeps_the_last_thousand: [memory, redis],
    history_since_an_old_seq_ends_with_the_newest: [memory, redis],
    posts_reach_the_sale_s_viewers_in_seq_order: [memory, redis],
    bans_are_per_sale_and_sorted: [memory, redis],
    a_mute_lasts_its_seconds_and_zero_unmutes: [memory, redis],
    slow_mode_paces_each_user: [memory, redis],
    slow_mode_counts_from_when_it_is_set: [memory, redis],
    a_shorter_slow_mode_applies_at_once: [memory, redis],
    the_rate_is_per_user_and_sale: [memory, redis],
    the_rules_hold_across_nodes: [memory, redis],
    operators_are_remembered_across_sales: [memory, redis],
    // Memory's chat has no live state to lose: it posts into any sale.
    a_sale_without_live_state_is_missing: [redis],
}

fn post(sale_id: Uuid, user: &str, text: &str, moderator: bool) -> Post {
    Post {
        sale_id,
        user_id: user.to_owned(),
        name: format!("{user} 的名字"),
        text: text.to_owned(),
        ts: TS,
        moderator,
    }
}

fn seqs(history: &[ChatMessage]) -> Vec<u64> {
    history.iter().map(|m| m.seq).collect()
}

/// Hosts post `n` messages (no rate, slow mode or mute): their seqs.
async fn host_posts(chat: &dyn ChatStore, sale: Uuid, n: usize) -> Vec<u64> {
    let mut sent = Vec::with_capacity(n);
    for i in 0..n {
        match chat
            .post(&post(sale, "host", &format!("m{i}"), true))
            .await
            .unwrap()
        {
            Posted::Sent(seq) => sent.push(seq),
            other => panic!("a host's post refused: {other:?}"),
        }
    }
    sent
}

/// `ms` is within a second below `secs` (the clock moved a little).
fn about(ms: i64, secs: i64) -> bool {
    ms > (secs - 1) * 1000 && ms <= secs * 1000
}

async fn posts_are_numbered_in_order_and_kept(chat: Chat) {
    let sale = chat.live_sale().await;
    let texts = [
        "hello",
        "\"quoted\" \\ back\\slash",
        "</script><script>alert(1)</script>",
        "}{\"seq\":0,",
        "荔枝 🍒 好吃 \u{200D}👍",
    ];
    let users = ["mei", "a:b", "{x}", "a:{b}:c", "用户:{1}"];
    for (i, (user, text)) in users.iter().zip(texts).enumerate() {
        let mut p = post(sale, user, text, false);
        p.ts = TS + i as i64;
        assert_eq!(
            chat.store.post(&p).await.unwrap(),
            Posted::Sent(i as u64 + 1)
        );
    }
    let history = chat.store.history(sale, None, 50).await.unwrap();
    let expected: Vec<ChatMessage> = users
        .iter()
        .zip(texts)
        .enumerate()
        .map(|(i, (user, text))| ChatMessage {
            seq: i as u64 + 1,
            user_id: user.to_string(),
            name: format!("{user} 的名字"),
            text: text.to_owned(),
            ts: TS + i as i64,
        })
        .collect();
    assert_eq!(history, expected);
    // Each sale counts on its own.
    let other = chat.live_sale().await;
    assert_eq!(host_posts(&*chat.store, other, 2).await, [1, 2]);
    assert_eq!(host_posts(&*chat.store, sale, 1).await, [6]);
}

async fn history_since_and_last(chat: Chat) {
    let sale = chat.live_sale().await;
    assert_eq!(host_posts(&*chat.store, sale, 5).await, [1, 2, 3, 4, 5]);
    let h = |since, last| chat.store.history(sale, since, last);
    assert_eq!(seqs(&h(None, 50).await.unwrap()), [1, 2, 3, 4, 5]);
    assert_eq!(seqs(&h(None, 2).await.unwrap()), [4, 5]);
    assert_eq!(seqs(&h(None, 5).await.unwrap()), [1, 2, 3, 4, 5]);
    assert!(h(None, 0).await.unwrap().is_empty());
    // `since` takes everything after it, whatever `last` says.
    assert_eq!(seqs(&h(Some(3), 1).await.unwrap()), [4, 5]);
    assert_eq!(seqs(&h(Some(0), 50).await.unwrap()), [1, 2, 3, 4, 5]);
    assert!(h(Some(5), 50).await.unwrap().is_empty());
    assert!(h(Some(6), 50).await.unwrap().is_empty());
    // The largest seq: nothing after it (no wrap to 0).
    assert!(h(Some(u64::MAX), 50).await.unwrap().is_empty());
    assert_eq!(
        h(None, 1).await.unwrap()[0],
        ChatMessage {
            seq: 5,
            user_id: "host".into(),
            name: "host 的名字".into(),
            text: "m4".into(),
            ts: TS,
        }
    );
}

async fn deleted_messages_leave_history(chat: Chat) {
    let sale = chat.live_sale().await;
    host_posts(&*chat.store, sale, 5).await;
    assert!(chat.store.delete(sale, 2).await.unwrap());
    assert!(!chat.store.delete(sale, 2).await.unwrap(), "already gone");
    assert!(!chat.store.delete(sale, 99).await.unwrap());
    assert!(!chat.store.delete(sale, 0).await.unwrap());
    assert!(!chat.store.delete(sale, u64::MAX).await.unwrap());
    assert!(!chat.store.delete(Uuid::new_v4(), 1).await.unwrap());
    assert_eq!(
        seqs(&chat.store.history(sale, None, 50).await.unwrap()),
        [1, 3, 4, 5]
    );
    assert_eq!(
        seqs(&chat.store.history(sale, Some(1), 50).await.unwrap()),
        [3, 4, 5]
    );
    assert_eq!(
        seqs(&chat.store.history(sale, None, 3).await.unwrap()),
        [3, 4, 5]
    );
    // A deleted seq is never given again.
    assert!(chat.store.delete(sale, 5).await.unwrap());
    assert_eq!(host_posts(&*chat.store, sale, 1).await, [6]);
}

async fn a_new_sale_has_an_empty_chat(chat: Chat) {
    for sale in [chat.live_sale().await, Uuid::new_v4()] {
        assert!(chat.store.history(sale, None, 50).await.unwrap().is_empty());
        assert!(chat
            .store
            .history(sale, Some(0), 50)
            .await
            .unwrap()
            .is_empty());
        assert!(chat.inventory.bans(sale).await.unwrap().is_empty());
        assert!(!chat.inventory.is_banned(sale, "mei").await.unwrap());
        assert_eq!(chat.store.slow_mode(sale).await.unwrap(), 0);
    }
}

async fn history_keeps_the_last_thousand(chat: Chat) {
    let sale = chat.live_sale().await;
    let n = HISTORY + 5;
    let sent = host_posts(&*chat.store, sale, n).await;
    assert_eq!(sent, (1..=n as u64).collect::<Vec<_>>());
    let last = chat.store.history(sale, None, HISTORY).await.unwrap();
    assert_eq!(seqs(&last), (6..=n as u64).collect::<Vec<_>>());
    let some = chat.store.history(sale, None, 3).await.unwrap();
    assert_eq!(seqs(&some), [n as u64 - 2, n as u64 - 1, n as u64]);
}

/// "All kept messages after `since`": a client that reconnects far behind
/// gets the newest messages too, not the oldest kept ones alone.
async fn history_since_an_old_seq_ends_with_the_newest(chat: Chat) {
    let sale = chat.live_sale().await;
    let n = (HISTORY + 5) as u64;
    host_posts(&*chat.store, sale, n as usize).await;
    for since in [0, 1, 4] {
        let after = chat.store.history(sale, Some(since), 50).await.unwrap();
        let got = seqs(&after);
        assert!(
            got.len() >= HISTORY,
            "since {since}: {} messages",
            got.len()
        );
        assert_eq!(
            got.last(),
            Some(&n),
            "since {since}: ends at {:?}, the newest is {n}",
            got.last()
        );
        assert!(got.windows(2).all(|w| w[1] == w[0] + 1), "since {since}");
        assert!(got[0] > since);
    }
}

async fn posts_reach_the_sale_s_viewers_in_seq_order(chat: Chat) {
    let sale = chat.live_sale().await;
    chat.bus.watch(sale).await.unwrap();
    let mut rx = chat.bus.subscribe();
    host_posts(&*chat.store, sale, 2).await;
    chat.inventory.ban(sale, "{x}").await.unwrap();
    assert_eq!(
        chat.store
            .post(&post(sale, "{x}", "refused", false))
            .await
            .unwrap(),
        Posted::Banned
    );
    assert_eq!(
        chat.store
            .post(&post(sale, "a:b", "third", false))
            .await
            .unwrap(),
        Posted::Sent(3)
    );
    let history = chat.store.history(sale, None, 50).await.unwrap();
    assert_eq!(seqs(&history), [1, 2, 3], "the refused post is not kept");
    for kept in history {
        let env = next_of(&mut rx, sale).await;
        assert_eq!(env.event, SaleEvent::Chat(kept));
    }
}

async fn bans_are_per_sale_and_sorted(chat: Chat) {
    let sale = chat.live_sale().await;
    let other = chat.live_sale().await;
    for user in HOSTILE_USERS.iter().chain(&["zed", "zed"]) {
        chat.inventory.ban(sale, user).await.unwrap();
    }
    let mut expected: Vec<String> = HOSTILE_USERS.iter().map(|u| u.to_string()).collect();
    expected.push("zed".into());
    expected.sort();
    assert_eq!(chat.inventory.bans(sale).await.unwrap(), expected);
    assert!(chat.inventory.bans(other).await.unwrap().is_empty());
    for user in HOSTILE_USERS {
        assert!(
            chat.inventory.is_banned(sale, user).await.unwrap(),
            "{user}"
        );
        assert!(
            !chat.inventory.is_banned(other, user).await.unwrap(),
            "{user}"
        );
        assert_eq!(
            chat.store
                .post(&post(sale, user, "hi", false))
                .await
                .unwrap(),
            Posted::Banned
        );
    }
    // Not a prefix or pattern match.
    assert!(!chat.inventory.is_banned(sale, "a").await.unwrap());
    assert!(!chat.inventory.is_banned(sale, "x").await.unwrap());
    assert!(!chat.inventory.is_banned(sale, "*").await.unwrap());
    // A ban never locks out whoever may manage the sale.
    assert_eq!(
        chat.store
            .post(&post(sale, "zed", "as host", true))
            .await
            .unwrap(),
        Posted::Sent(1)
    );
    assert_eq!(
        chat.store
            .post(&post(other, "zed", "elsewhere", false))
            .await
            .unwrap(),
        Posted::Sent(1)
    );

    chat.inventory.unban(sale, "{x}").await.unwrap();
    chat.inventory.unban(sale, "never-banned").await.unwrap();
    assert!(!chat.inventory.is_banned(sale, "{x}").await.unwrap());
    expected.retain(|u| u != "{x}");
    assert_eq!(chat.inventory.bans(sale).await.unwrap(), expected);
    assert_eq!(
        chat.store
            .post(&post(sale, "{x}", "back", false))
            .await
            .unwrap(),
        Posted::Sent(2)
    );
}

async fn a_mute_lasts_its_seconds_and_zero_unmutes(chat: Chat) {
    let sale = chat.live_sale().await;
    let user = "a:{b}:c";
    chat.store.mute(sale, user, 60).await.unwrap();
    let muted = chat
        .store
        .post(&post(sale, user, "hi", false))
        .await
        .unwrap();
    assert!(
        matches!(muted, Posted::Muted { ms } if about(ms, 60)),
        "{muted:?}"
    );
    // Only that user, only that sale; a moderator is exempt.
    assert_eq!(
        chat.store
            .post(&post(sale, "a", "hi", false))
            .await
            .unwrap(),
        Posted::Sent(1)
    );
    let other = chat.live_sale().await;
    assert_eq!(
        chat.store
            .post(&post(other, user, "hi", false))
            .await
            .unwrap(),
        Posted::Sent(1)
    );
    assert_eq!(
        chat.store
            .post(&post(sale, user, "as host", true))
            .await
            .unwrap(),
        Posted::Sent(2)
    );
    // A new mute replaces the running one, shorter or longer.
    chat.store.mute(sale, user, 5).await.unwrap();
    let muted = chat
        .store
        .post(&post(sale, user, "hi", false))
        .await
        .unwrap();
    assert!(
        matches!(muted, Posted::Muted { ms } if about(ms, 5)),
        "{muted:?}"
    );
    chat.store.mute(sale, user, 604_800).await.unwrap();
    let muted = chat
        .store
        .post(&post(sale, user, "hi", false))
        .await
        .unwrap();
    assert!(
        matches!(muted, Posted::Muted { ms } if about(ms, 604_800)),
        "{muted:?}"
    );
    chat.store.mute(sale, user, 0).await.unwrap();
    assert_eq!(
        chat.store
            .post(&post(sale, user, "free", false))
            .await
            .unwrap(),
        Posted::Sent(3)
    );
    // Unmuting someone never muted is fine.
    chat.store.mute(sale, "nobody", 0).await.unwrap();
    assert_eq!(
        seqs(&chat.store.history(sale, None, 50).await.unwrap()),
        [1, 2, 3],
        "refused posts are not kept"
    );
}

async fn slow_mode_paces_each_user(chat: Chat) {
    let sale = chat.live_sale().await;
    chat.store.set_slow_mode(sale, 30).await.unwrap();
    assert_eq!(chat.store.slow_mode(sale).await.unwrap(), 30);
    assert_eq!(
        chat.store.slow_mode(chat.live_sale().await).await.unwrap(),
        0
    );
    let send = |user: &'static str, moderator| {
        let store = chat.store.clone();
        async move {
            store
                .post(&post(sale, user, "hi", moderator))
                .await
                .unwrap()
        }
    };
    assert_eq!(send("mei", false).await, Posted::Sent(1));
    let slow = send("mei", false).await;
    assert!(
        matches!(slow, Posted::SlowMode { ms } if about(ms, 30)),
        "{slow:?}"
    );
    assert_eq!(send("li", false).await, Posted::Sent(2), "per user");
    assert_eq!(send("host", true).await, Posted::Sent(3));
    assert_eq!(send("host", true).await, Posted::Sent(4), "hosts exempt");

    chat.store.set_slow_mode(sale, 0).await.unwrap();
    assert_eq!(chat.store.slow_mode(sale).await.unwrap(), 0);
    assert_eq!(send("mei", false).await, Posted::Sent(5), "off again");
}

/// Slow mode counts from when it is turned on (docs/protocol.md): a post
/// made before leaves everyone one message at once, then the pace holds.
async fn slow_mode_counts_from_when_it_is_set(chat: Chat) {
    let sale = chat.live_sale().await;
    let send = |text: &'static str| {
        let store = chat.store.clone();
        async move { store.post(&post(sale, "mei", text, false)).await.unwrap() }
    };
    assert_eq!(send("before").await, Posted::Sent(1));
    chat.store.set_slow_mode(sale, 30).await.unwrap();
    assert_eq!(send("first in slow mode").await, Posted::Sent(2));
    let next = send("too soon").await;
    assert!(
        matches!(next, Posted::SlowMode { ms } if about(ms, 30)),
        "{next:?}"
    );
}

/// A host who shortens slow mode shortens every wait with it.
async fn a_shorter_slow_mode_applies_at_once(chat: Chat) {
    let sale = chat.live_sale().await;
    chat.store.set_slow_mode(sale, 3600).await.unwrap();
    assert_eq!(
        chat.store
            .post(&post(sale, "mei", "first", false))
            .await
            .unwrap(),
        Posted::Sent(1)
    );
    chat.store.set_slow_mode(sale, 10).await.unwrap();
    let next = chat
        .store
        .post(&post(sale, "mei", "second", false))
        .await
        .unwrap();
    assert!(
        matches!(next, Posted::SlowMode { ms } if about(ms, 10)),
        "{next:?}"
    );
}

async fn the_rate_is_per_user_and_sale(chat: Chat) {
    let sale = chat.live_sale().await;
    let user = "用户:{1}";
    for seq in 1..=RATE.burst as u64 {
        assert_eq!(
            chat.store
                .post(&post(sale, user, "hi", false))
                .await
                .unwrap(),
            Posted::Sent(seq)
        );
    }
    // Empty: the next token is 1 / per_sec away.
    let limited = chat
        .store
        .post(&post(sale, user, "hi", false))
        .await
        .unwrap();
    assert!(
        matches!(limited, Posted::RateLimited { ms } if ms > 1_900 && ms <= 2_000),
        "{limited:?}"
    );
    assert_eq!(
        chat.store
            .post(&post(sale, "用户:{2}", "hi", false))
            .await
            .unwrap(),
        Posted::Sent(4),
        "another user's bucket"
    );
    let other = chat.live_sale().await;
    assert_eq!(
        chat.store
            .post(&post(other, user, "hi", false))
            .await
            .unwrap(),
        Posted::Sent(1),
        "another sale's bucket"
    );
    assert_eq!(
        chat.store
            .post(&post(sale, user, "as host", true))
            .await
            .unwrap(),
        Posted::Sent(5),
        "moderators are not rate limited"
    );
    assert!(matches!(
        chat.store
            .post(&post(sale, user, "hi", false))
            .await
            .unwrap(),
        Posted::RateLimited { .. }
    ));
}

async fn the_rules_hold_across_nodes(chat: Chat) {
    let sale = chat.live_sale().await;
    let (one, two) = (&chat.store, &chat.other);
    for seq in 1..=RATE.burst as u64 {
        let node = if seq % 2 == 0 { one } else { two };
        assert_eq!(
            node.post(&post(sale, "mei", "hi", false)).await.unwrap(),
            Posted::Sent(seq),
            "one numbering"
        );
    }
    assert!(matches!(
        one.post(&post(sale, "mei", "hi", false)).await.unwrap(),
        Posted::RateLimited { .. }
    ));
    assert!(matches!(
        two.post(&post(sale, "mei", "hi", false)).await.unwrap(),
        Posted::RateLimited { .. }
    ));
    // The inventory's ban (one write) refuses chat on every node.
    chat.inventory.ban(sale, "li").await.unwrap();
    for node in [one, two] {
        assert_eq!(
            node.post(&post(sale, "li", "hi", false)).await.unwrap(),
            Posted::Banned
        );
    }
    two.mute(sale, "wu", 60).await.unwrap();
    assert!(matches!(
        one.post(&post(sale, "wu", "hi", false)).await.unwrap(),
        Posted::Muted { .. }
    ));
    two.set_slow_mode(sale, 20).await.unwrap();
    assert_eq!(one.slow_mode(sale).await.unwrap(), 20);
    assert_eq!(seqs(&two.history(sale, None, 50).await.unwrap()), [1, 2, 3]);
    assert!(one.delete(sale, 2).await.unwrap());
    assert_eq!(seqs(&two.history(sale, None, 50).await.unwrap()), [1, 3]);
    one.note_operator("op").await.unwrap();
    assert!(two.is_operator("op").await.unwrap());
}

async fn operators_are_remembered_across_sales(chat: Chat) {
    for user in HOSTILE_USERS {
        assert!(!chat.store.is_operator(user).await.unwrap());
    }
    chat.store.note_operator("a:{b}:c").await.unwrap();
    chat.store.note_operator("a:{b}:c").await.unwrap();
    chat.store.note_operator("}{").await.unwrap();
    assert!(chat.store.is_operator("a:{b}:c").await.unwrap());
    assert!(chat.store.is_operator("}{").await.unwrap());
    assert!(!chat.store.is_operator("a").await.unwrap());
    assert!(!chat.store.is_operator("{b}").await.unwrap());
    assert!(!chat.store.is_operator("").await.unwrap());
}

/// A sale whose live state Redis lost: nothing is numbered or kept until
/// it is rebuilt; the rebuild's floor keeps seq above what was given.
async fn a_sale_without_live_state_is_missing(chat: Chat) {
    let sale = Uuid::new_v4();
    assert_eq!(
        chat.store
            .post(&post(sale, "mei", "hi", false))
            .await
            .unwrap(),
        Posted::Missing
    );
    assert_eq!(
        chat.store
            .post(&post(sale, "host", "hi", true))
            .await
            .unwrap(),
        Posted::Missing
    );
    assert!(chat.store.history(sale, None, 50).await.unwrap().is_empty());
    chat.inventory
        .install(&SaleSeed {
            sale_id: sale,
            epoch: TS * 1000,
            status: SaleStatus::Live,
            products: Vec::new(),
            holdings: Vec::new(),
            chat_seq_floor: 41,
        })
        .await
        .unwrap();
    assert_eq!(
        chat.store
            .post(&post(sale, "mei", "hi", false))
            .await
            .unwrap(),
        Posted::Sent(42)
    );
    assert_eq!(
        seqs(&chat.store.history(sale, None, 50).await.unwrap()),
        [42]
    );
}
