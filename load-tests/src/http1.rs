//! A buyer's own keep-alive HTTP/1.1 connection (hyper's connection-level
//! client). reqwest's pool, URL parsing and header building per request cost
//! the load generator more CPU than the node spent answering after sell-out;
//! a buyer owns one connection and reuses its request's fixed parts. A buyer
//! may act for several users: its requests take their tokens in turn.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub struct Conn {
    addr: String,
    host: HeaderValue,
    path: String,
    /// One `Bearer` header per user, used in turn.
    auths: Vec<HeaderValue>,
    turn: usize,
    body: Bytes,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    /// POSTs of `body` to `url` (`http://host[:port]/path`), each as the bearer
    /// of the next of `tokens` (cycling).
    pub fn post(url: &str, tokens: &[String], body: &str) -> Result<Self, String> {
        let parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
        if parsed.scheme() != "http" {
            return Err("only http:// URLs".into());
        }
        let host = parsed.host_str().ok_or("no host")?;
        let port = parsed.port_or_known_default().ok_or("no port")?;
        let header = |v: &str| HeaderValue::from_str(v).map_err(|e| e.to_string());
        if tokens.is_empty() {
            return Err("no token".into());
        }
        Ok(Conn {
            addr: format!("{host}:{port}"),
            host: header(&format!("{host}:{port}"))?,
            path: parsed.path().to_owned(),
            auths: tokens
                .iter()
                .map(|t| header(&format!("Bearer {t}")))
                .collect::<Result<_, _>>()?,
            turn: 0,
            body: Bytes::copy_from_slice(body.as_bytes()),
            sender: None,
        })
    }

    /// Connects now, so that set-up is not counted in the first attempt.
    pub async fn open(&mut self) -> Result<(), String> {
        let stream = TcpStream::connect(&self.addr)
            .await
            .map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        self.sender = Some(sender);
        Ok(())
    }

    /// One request with `Idempotency-Key: key`: the status and the body.
    /// A broken connection is reopened on the next call.
    pub async fn send(&mut self, key: &str) -> Result<(u16, Bytes), String> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            self.open().await?;
        }
        let auth = self.next_auth();
        let sender = self.sender.as_mut().ok_or("no connection")?;
        let req = Request::post(self.path.as_str())
            .header(HOST, self.host.clone())
            .header(AUTHORIZATION, auth)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header("idempotency-key", key)
            .body(Full::new(self.body.clone()))
            .map_err(|e| e.to_string())?;
        let answer = async {
            sender.ready().await?;
            let res = sender.send_request(req).await?;
            let status = res.status().as_u16();
            let body = res.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        }
        .await;
        answer.map_err(|e| {
            self.sender = None;
            e.to_string()
        })
    }

    /// The next user's `Authorization` header.
    fn next_auth(&mut self) -> HeaderValue {
        let auth = self.auths[self.turn % self.auths.len()].clone();
        self.turn = self.turn.wrapping_add(1);
        auth
    }
}

#[cfg(test)]
mod tests {
    use super::Conn;

    fn t(s: &str) -> Vec<String> {
        vec![s.to_owned()]
    }

    #[test]
    fn urls_split_into_address_and_path() {
        let c = Conn::post("http://127.0.0.1:8090/api/v1/sales/s/orders", &t("t"), "{}").unwrap();
        assert_eq!(c.addr, "127.0.0.1:8090");
        assert_eq!(c.path, "/api/v1/sales/s/orders");
        assert_eq!(c.auths, ["Bearer t"]);
        let c = Conn::post("http://example.com", &t("t"), "{}").unwrap();
        assert_eq!(c.addr, "example.com:80");
        assert_eq!(c.path, "/");
    }

    #[test]
    fn what_it_cannot_send_is_refused() {
        assert!(Conn::post("https://example.com/x", &t("t"), "{}").is_err());
        assert!(Conn::post("http://example.com/x", &t("bad\ntoken"), "{}").is_err());
        assert!(Conn::post("http://example.com/x", &[], "{}").is_err());
    }

    #[test]
    fn requests_take_the_users_tokens_in_turn() {
        let tokens = ["a", "b", "c"].map(String::from);
        let mut c = Conn::post("http://example.com/x", &tokens, "{}").unwrap();
        let sent: Vec<_> = (0..7).map(|_| c.next_auth()).collect();
        let want = ["a", "b", "c", "a", "b", "c", "a"].map(|t| format!("Bearer {t}"));
        assert_eq!(sent, want);
    }
}
