//! Talking to a service over HTTP in tests: `(status, JSON)` answers, and raw HTTP/1.1 for what
//! a well-behaved client would never send.

use std::time::Duration;

use serde_json::Value;

/// A client for one service's base URL (`http://127.0.0.1:PORT`).
#[derive(Clone)]
pub struct Http {
    pub base: String,
    pub client: reqwest::Client,
}

impl Http {
    pub fn new(base: impl Into<String>) -> Http {
        Http {
            base: base.into(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("http client"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The host:port of the base URL.
    pub fn addr(&self) -> String {
        self.base
            .strip_prefix("http://")
            .expect("http base")
            .to_string()
    }

    /// POST a JSON value; (status, JSON body — or the text as a JSON string if it is not JSON).
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, serde_json::to_vec(body).expect("serialise"))
            .await
    }

    /// POST these exact bytes as `application/json`.
    pub async fn post_raw(&self, path: &str, body: impl Into<Vec<u8>>) -> (u16, Value) {
        let r = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.into())
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e:?}"));
        let status = r.status().as_u16();
        let bytes = r.bytes().await.unwrap_or_default();
        (status, to_json(&bytes))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let (st, text) = self.get_text(path).await;
        (st, to_json(text.as_bytes()))
    }

    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let r = self
            .client
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e:?}"));
        let status = r.status().as_u16();
        (status, r.text().await.unwrap_or_default())
    }

    /// One sample of `/metrics` (`name{labels}`); 0 when absent.
    pub async fn metric(&self, series: &str) -> u64 {
        let (st, text) = self.get_text("/metrics").await;
        assert_eq!(st, 200, "GET /metrics: {text}");
        metric(&text, series)
    }

    /// [`raw_exchange`] with this service.
    pub async fn raw_exchange(&self, head: String, body: Vec<u8>) -> (u16, Value) {
        raw_exchange(&self.addr(), head, body).await
    }

    /// POST `body` with a Content-Length header, reading the answer while the body is still
    /// going out.
    pub async fn post_early(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.addr(),
            body.len()
        );
        self.raw_exchange(head, body).await
    }

    /// POST `body` in `chunk`-byte pieces with `Transfer-Encoding: chunked` (no declared length).
    pub async fn post_chunked(&self, path: &str, body: &[u8], chunk: usize) -> (u16, Value) {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            self.addr()
        );
        let mut out = Vec::new();
        for c in body.chunks(chunk) {
            out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            out.extend_from_slice(c);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        self.raw_exchange(head, out).await
    }
}

/// Send a request over a raw TCP connection to `addr`, reading while writing (a server may
/// answer before it has read the whole body, and then close). `head` is everything up to and
/// including the blank line. Returns the status and the JSON body (0 when no HTTP answer came).
pub async fn raw_exchange(addr: &str, head: String, body: Vec<u8>) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        // The server may stop reading and close: a write error here is expected then.
        if wr.write_all(head.as_bytes()).await.is_ok() {
            let _ = wr.write_all(&body).await;
        }
        // Keep the write half open until the reader is done.
        wr
    });
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout_at(deadline, rd.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                if complete_response(&got) {
                    break;
                }
            }
        }
    }
    writer.abort();
    if !got.starts_with(b"HTTP/") {
        return (0, Value::String(String::from_utf8_lossy(&got).to_string()));
    }
    let text = String::from_utf8_lossy(&got).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or(0);
    let body = match text.split_once("\r\n\r\n") {
        Some((_, b)) => to_json(b.as_bytes()),
        None => Value::Null,
    };
    (status, body)
}

/// A response with a Content-Length whose body has fully arrived.
fn complete_response(got: &[u8]) -> bool {
    let text = String::from_utf8_lossy(got);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let cl = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())
            .flatten()
    });
    matches!(cl, Some(n) if body.len() >= n)
}

/// The bytes as JSON, or as a JSON string when they are not JSON.
pub fn to_json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).to_string()))
}

/// The value of one Prometheus sample line (`name{labels} value`); 0 when absent.
pub fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let rest = l.strip_prefix(series)?;
            let v = rest.split_whitespace().next()?;
            v.parse::<f64>().ok()
        })
        .map(|v| v as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_reads_one_sample() {
        let text = "# HELP x\nx_total{a=\"b\"} 7\nx_total{a=\"c\"} 2.0\n";
        assert_eq!(metric(text, "x_total{a=\"b\"}"), 7);
        assert_eq!(metric(text, "x_total{a=\"c\"}"), 2);
        assert_eq!(metric(text, "y_total"), 0);
    }

    #[test]
    fn complete_only_with_the_whole_body() {
        assert!(!complete_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab"
        ));
        assert!(complete_response(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nab"
        ));
    }
}
