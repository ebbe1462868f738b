//! A buyer's own keep-alive HTTP/1.1 connection (hyper's connection-level
//! client). reqwest's pool, URL parsing and header building per request cost
//! the load generator more CPU than the node spent answering after sell-out;
//! a buyer owns one connection and reuses its request's fixed parts.

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
    auth: HeaderValue,
    body: Bytes,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    /// POSTs of `body` to `url` (`http://host[:port]/path`) as `token`'s bearer.
    pub fn post(url: &str, token: &str, body: &str) -> Result<Self, String> {
        let parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
        if parsed.scheme() != "http" {
            return Err("only http:// URLs".into());
        }
        let host = parsed.host_str().ok_or("no host")?;
        let port = parsed.port_or_known_default().ok_or("no port")?;
        let header = |v: &str| HeaderValue::from_str(v).map_err(|e| e.to_string());
        Ok(Conn {
            addr: format!("{host}:{port}"),
            host: header(&format!("{host}:{port}"))?,
            path: parsed.path().to_owned(),
            auth: header(&format!("Bearer {token}"))?,
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
        let sender = self.sender.as_mut().ok_or("no connection")?;
        let req = Request::post(self.path.as_str())
            .header(HOST, self.host.clone())
            .header(AUTHORIZATION, self.auth.clone())
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
}

#[cfg(test)]
mod tests {
    use super::Conn;

    #[test]
    fn urls_split_into_address_and_path() {
        let c = Conn::post("http://127.0.0.1:8090/api/v1/sales/s/orders", "t", "{}").unwrap();
        assert_eq!(c.addr, "127.0.0.1:8090");
        assert_eq!(c.path, "/api/v1/sales/s/orders");
        assert_eq!(c.auth, "Bearer t");
        let c = Conn::post("http://example.com", "t", "{}").unwrap();
        assert_eq!(c.addr, "example.com:80");
        assert_eq!(c.path, "/");
    }

    #[test]
    fn what_it_cannot_send_is_refused() {
        assert!(Conn::post("https://example.com/x", "t", "{}").is_err());
        assert!(Conn::post("http://example.com/x", "bad\ntoken", "{}").is_err());
    }
}
