//! The live room's wire protocol (docs/protocol.md): every client message
//! and every server frame, serialized here and nowhere else. The hub hands
//! over domain events and gets shared bytes back; sockets send the bytes.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::catalog::Sale;
use crate::http::error::ApiError;
use crate::hub::chat::ChatMessage;
use crate::hub::live::{Command, Refusal};
use crate::hub::SaleEvent;
use crate::identity::Identity;

/// A frame's bytes. UTF-8 by construction, cheap to clone (shared), and
/// what the WebSocket layer sends without copying or checking again.
pub type Text = axum::extract::ws::Utf8Bytes;

/// The contract's cap on one client message.
pub const MAX_MESSAGE: usize = 4096;

/// One serialized event (or a batch of them), shared by every socket that
/// sends it.
#[derive(Debug, Clone)]
pub struct Frame {
    pub text: Text,
    /// The first and last chat seq inside, so a socket can skip what its
    /// welcome history already held.
    pub seqs: Option<(u64, u64)>,
    /// A batch's events, for the rare socket that must skip some of them.
    pub parts: Option<Arc<[Frame]>>,
    /// Events the room published before this frame (0 for personal frames):
    /// a socket that lagged tells how many events it lost.
    pub at: u64,
}

impl Frame {
    fn text(text: impl Into<Text>) -> Frame {
        Frame {
            text: text.into(),
            seqs: None,
            parts: None,
            at: 0,
        }
    }

    fn of<T: Serialize>(value: &T) -> Option<Frame> {
        match serde_json::to_string(value) {
            Ok(s) => Some(Frame::text(s)),
            Err(e) => {
                tracing::error!(error = %e, "frame not serializable");
                None
            }
        }
    }

    /// A sale's event as viewers get it; a chat message knows its seq.
    pub fn event(event: &SaleEvent) -> Option<Frame> {
        let mut f = Frame::of(event)?;
        if let SaleEvent::Chat(m) = event {
            f.seqs = Some((m.seq, m.seq));
        }
        Some(f)
    }

    /// `{"type":"viewers","count"}`: viewers on every node.
    pub fn viewers(count: u64) -> Frame {
        Frame::text(json!({ "type": "viewers", "count": count }).to_string())
    }

    /// `{"type":"lagged","skipped"}`: chat this socket missed.
    pub fn lagged(skipped: u64) -> Frame {
        Frame::text(json!({ "type": "lagged", "skipped": skipped }).to_string())
    }

    pub fn pong(reference: Option<String>) -> Frame {
        let mut v = json!({ "type": "pong" });
        if let Some(r) = reference {
            v["ref"] = r.into();
        }
        Frame::text(v.to_string())
    }

    /// `{"type":"error","code","message","ref"?}`.
    /// An API error as a frame: the code and words REST would answer with.
    pub fn error(e: &ApiError, reference: Option<&str>) -> Frame {
        Frame::error_body(e.body()["error"].clone(), reference)
    }

    fn coded(code: &str, message: &str, reference: Option<&str>) -> Frame {
        Frame::error_body(json!({ "code": code, "message": message }), reference)
    }

    /// An error as REST answers it (its `error` object), as a frame.
    pub fn error_body(mut error: Value, reference: Option<&str>) -> Frame {
        error["type"] = "error".into();
        if let Some(r) = reference {
            error["ref"] = r.into();
        }
        Frame::text(error.to_string())
    }

    pub fn refusal(r: &Refusal) -> Frame {
        Frame::coded(r.code(), &r.message(), None)
    }

    /// `{"type":"order","ref","order"}`: a buy's answer; the order is
    /// already JSON (the same bytes a REST replay answers).
    pub fn order(reference: &str, order_json: &str) -> Frame {
        Frame::text(format!(
            r#"{{"type":"order","ref":{},"order":{order_json}}}"#,
            Value::from(reference)
        ))
    }

    /// Always the first frame of a socket.
    pub fn welcome(
        you: &Identity,
        sale: &Sale,
        viewers: u64,
        chat: Vec<ChatMessage>,
        slow_mode_secs: u32,
    ) -> Option<Frame> {
        #[derive(Serialize)]
        #[serde(tag = "type", rename = "welcome")]
        struct Welcome<'a> {
            you: &'a Identity,
            sale: &'a Sale,
            viewers: u64,
            chat: Vec<SaleEvent>,
            slow_mode_secs: u32,
        }
        Frame::of(&Welcome {
            you,
            sale,
            viewers,
            chat: chat.into_iter().map(SaleEvent::Chat).collect(),
            slow_mode_secs,
        })
    }

    /// One frame for several: `{"type":"batch","events":[...]}`.
    pub fn batch(mut frames: Vec<Frame>) -> Option<Frame> {
        if frames.len() <= 1 {
            return frames.pop();
        }
        let len = frames.iter().map(|f| f.text.len() + 1).sum::<usize>() + 32;
        let mut text = String::with_capacity(len);
        text.push_str(r#"{"type":"batch","events":["#);
        for (i, f) in frames.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(f.text.as_str());
        }
        text.push_str("]}");
        let seqs = frames
            .iter()
            .filter_map(|f| f.seqs)
            .reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)));
        Some(Frame {
            text: text.into(),
            seqs,
            parts: Some(frames.into()),
            at: 0,
        })
    }

    /// Events inside: a batch's parts, or one.
    pub fn events(&self) -> u64 {
        self.parts.as_ref().map_or(1, |p| p.len() as u64)
    }
}

/// A chat event's JSON around its `seq`: the chat store inserts the number
/// it assigns (in Redis, inside the posting script), so a message is
/// serialized once, here.
pub fn chat_frame_parts(user_id: &str, name: &str, text: &str, ts: i64) -> (String, String) {
    #[derive(Serialize)]
    struct Rest<'a> {
        user_id: &'a str,
        name: &'a str,
        text: &'a str,
        ts: i64,
    }
    let rest = serde_json::to_string(&Rest {
        user_id,
        name,
        text,
        ts,
    })
    .unwrap_or_else(|_| "{}".into());
    // `{"user_id":...}` becomes `,"user_id":...}` after the seq.
    let suffix = format!(",{}", &rest[1..]);
    (r#"{"type":"chat","seq":"#.to_owned(), suffix)
}

/// A client message, after `type` told which.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    Chat {
        text: String,
    },
    Buy {
        sku: String,
        qty: i64,
        #[serde(rename = "ref")]
        reference: String,
        /// Ships to this address of the buyer's book (else its default).
        #[serde(default)]
        address_id: Option<uuid::Uuid>,
    },
    Ping {
        #[serde(rename = "ref")]
        reference: Option<String>,
    },
    Announce {
        text: String,
    },
    Pin {
        sku: String,
    },
    DeleteChat {
        seq: u64,
    },
    Mute {
        user_id: String,
        secs: u32,
    },
    Ban {
        user_id: String,
    },
    Unban {
        user_id: String,
    },
    SlowMode {
        secs: u32,
    },
}

/// What a client message asks of the room.
pub enum Request {
    Chat(String),
    Buy {
        sku: String,
        qty: i64,
        reference: String,
        address_id: Option<uuid::Uuid>,
    },
    Ping(Option<String>),
    Moderate(Command),
}

impl From<ClientMessage> for Request {
    fn from(m: ClientMessage) -> Request {
        match m {
            ClientMessage::Chat { text } => Request::Chat(text),
            ClientMessage::Buy {
                sku,
                qty,
                reference,
                address_id,
            } => Request::Buy {
                sku,
                qty,
                reference,
                address_id,
            },
            ClientMessage::Ping { reference } => Request::Ping(reference),
            ClientMessage::Announce { text } => Request::Moderate(Command::Announce { text }),
            ClientMessage::Pin { sku } => Request::Moderate(Command::Pin { sku }),
            ClientMessage::DeleteChat { seq } => Request::Moderate(Command::DeleteChat { seq }),
            ClientMessage::Mute { user_id, secs } => {
                Request::Moderate(Command::Mute { user_id, secs })
            }
            ClientMessage::Ban { user_id } => Request::Moderate(Command::Ban { user_id }),
            ClientMessage::Unban { user_id } => Request::Moderate(Command::Unban { user_id }),
            ClientMessage::SlowMode { secs } => Request::Moderate(Command::SlowMode { secs }),
        }
    }
}

/// A client message, or why not (with its `ref` when it had one).
pub fn parse_client(text: &str) -> Result<Request, (String, Option<String>)> {
    let value: Value =
        serde_json::from_str(text).map_err(|_| ("not a JSON object".to_owned(), None))?;
    let reference = value.get("ref").and_then(Value::as_str).map(str::to_owned);
    serde_json::from_value::<ClientMessage>(value)
        .map(Request::from)
        .map_err(|e| (format!("unknown or malformed message: {e}"), reference))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Any text: a message or a bad_request reason, never a panic.
        #[test]
        fn any_text_parses_or_is_refused(text in ".{0,600}") {
            let _ = parse_client(&text);
        }

        /// JSON objects with the known types and arbitrary fields.
        #[test]
        fn any_typed_object_parses_or_is_refused(
            kind in prop::sample::select(vec!["chat", "buy", "ping", "announce", "pin",
                "delete_chat", "mute", "ban", "slow_mode", "nope", ""]),
            key in "[a-z_]{1,10}",
            value in prop_oneof![
                any::<i64>().prop_map(|n| json!(n)),
                any::<f64>().prop_map(|n| json!(n)),
                ".{0,40}".prop_map(|s| json!(s)),
                Just(json!(null)),
                Just(json!([1, 2])),
                Just(json!({ "x": 1 })),
            ],
            reference in proptest::option::of(".{0,20}"),
        ) {
            let mut v = json!({ "type": kind });
            v[key.as_str()] = value;
            if let Some(r) = &reference {
                v["ref"] = json!(r);
            }
            if let Err((_, r)) = parse_client(&v.to_string()) {
                // The ref comes back so the client can match the error.
                if reference.is_some() && v.get("ref").is_some() {
                    prop_assert_eq!(r, reference);
                }
            }
        }
    }

    #[test]
    fn known_messages_parse() {
        assert!(matches!(
            parse_client(r#"{"type":"buy","sku":"A","qty":1,"ref":"r"}"#),
            Ok(Request::Buy { .. })
        ));
        assert!(matches!(
            parse_client(r#"{"type":"mute","user_id":"li","secs":60}"#),
            Ok(Request::Moderate(Command::Mute { secs: 60, .. }))
        ));
        assert_eq!(
            parse_client(r#"{"type":"buy","sku":"A","ref":"r1"}"#)
                .err()
                .and_then(|e| e.1),
            Some("r1".to_owned())
        );
    }

    #[test]
    fn frame_parts_make_a_chat_event() {
        let (a, b) = chat_frame_parts("mei", "李梅 \"Mei\"", "hi", 7);
        let v: SaleEvent = serde_json::from_str(&format!("{a}12{b}")).unwrap();
        assert_eq!(
            v,
            SaleEvent::Chat(ChatMessage {
                seq: 12,
                user_id: "mei".into(),
                name: "李梅 \"Mei\"".into(),
                text: "hi".into(),
                ts: 7
            })
        );
    }

    fn chat(seq: u64) -> Frame {
        let mut f = Frame::text(format!(r#"{{"type":"chat","seq":{seq}}}"#));
        f.seqs = Some((seq, seq));
        f
    }

    #[test]
    fn a_batch_is_one_frame_with_its_parts_and_seq_range() {
        assert!(Frame::batch(Vec::new()).is_none());
        let one = Frame::batch(vec![chat(7)]).unwrap();
        assert_eq!(one.text.as_str(), r#"{"type":"chat","seq":7}"#);
        assert_eq!(one.events(), 1);

        let stock = Frame::text(r#"{"type":"stock"}"#);
        let b = Frame::batch(vec![chat(3), stock, chat(4)]).unwrap();
        let v: serde_json::Value = serde_json::from_str(b.text.as_str()).unwrap();
        assert_eq!(v["type"], "batch");
        assert_eq!(v["events"].as_array().unwrap().len(), 3);
        assert_eq!(v["events"][2]["seq"], 4);
        assert_eq!(b.seqs, Some((3, 4)));
        assert_eq!(b.events(), 3);
        let only_state = Frame::batch(vec![Frame::text("{}"), Frame::text("{}")]).unwrap();
        assert_eq!(only_state.seqs, None);
    }

    #[test]
    fn errors_carry_their_ref_and_code() {
        let f = Frame::coded("muted", "you are muted for 3 s", Some("r9"));
        let v: Value = serde_json::from_str(f.text.as_str()).unwrap();
        assert_eq!(
            v,
            json!({"type":"error","code":"muted","message":"you are muted for 3 s","ref":"r9"})
        );
        let o: Value =
            serde_json::from_str(Frame::order("a\"b", r#"{"id":1}"#).text.as_str()).unwrap();
        assert_eq!(o, json!({"type":"order","ref":"a\"b","order":{"id":1}}));
    }
}
