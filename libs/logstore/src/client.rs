//! [`LogClient`]: the typed client of a log's public endpoints (SPEC §7), as a witness, an
//! auditor or a load generator reads them from a log it does not trust.
//!
//! Everything read is bounded: each answer is read as a stream, refused at once when its
//! Content-Length is over its cap and cut off as soon as it runs past it (nothing beyond the cap
//! is buffered), and each request, its body included, must finish within [`Limits::timeout`].
//! Each failure is a [`ClientError`] saying which: the caller decides what it means (ClawLedger
//! turns [`ClientError::TooLarge`] and [`ClientError::Timeout`] into alerts, and
//! [`ClientError::Unreachable`] into a retry).
//!
//! The decoding functions ([`decode_entries`], [`decode_hashes`], [`checkpoint_size`]) are
//! public for callers that fetch the bytes themselves (the load generator's raw HTTP paths).

use std::time::Duration;

use base64::Engine as _;
use openexec_log::Hash;
use reqwest::StatusCode;
use serde::Deserialize;
use tokio::time::Instant;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Default most bytes of a `GET /log/checkpoint` answer: a checkpoint is three short lines and a
/// signature line, plus one line of about 100 bytes per witness cosignature the log serves.
pub const DEFAULT_MAX_CHECKPOINT_BYTES: u64 = 64 * 1024;
/// Default most bytes of one `GET /log/entries` answer: a page is at most 1,000 entries, each
/// the base64 of a leaf; a receipt leaf is a few KiB at most (SPEC §2 bounds its identifiers),
/// so a legitimate page stays under about 6 MiB.
pub const DEFAULT_MAX_ENTRIES_BYTES: u64 = 16 * 1024 * 1024;
/// Default longest time one request may take, its whole body included.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Most bytes of a proof answer: a proof is at most about 64 hashes, some 3 KiB of JSON.
pub const MAX_PROOF_BYTES: u64 = 64 * 1024;
/// Most bytes of the log's answer to a cosignature delivery (`{"stored": n}`, or an error).
pub const MAX_REPLY_BYTES: u64 = 64 * 1024;
/// How much of an error answer (a status other than 2xx) is read, for the message.
const ERROR_PREFIX_BYTES: u64 = 1024;
/// How much of an error answer's body [`ClientError::Status`] shows.
const ERROR_SHOWN_CHARS: usize = 300;

/// What a client may read from a log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes of a checkpoint answer.
    pub checkpoint_bytes: u64,
    /// Most bytes of one entries answer.
    pub entries_bytes: u64,
    /// Longest time one request may take, from sending it to the end of its body.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            checkpoint_bytes: DEFAULT_MAX_CHECKPOINT_BYTES,
            entries_bytes: DEFAULT_MAX_ENTRIES_BYTES,
            timeout: DEFAULT_FETCH_TIMEOUT,
        }
    }
}

/// Why a request to a log gave no usable answer. `what` names the request
/// (`GET /log/checkpoint`, …) and starts every message.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The log could not be reached, or sent no answer in time: an outage.
    #[error("{what}: {error}")]
    Unreachable { what: String, error: String },
    /// An answer with a status other than 2xx (and the start of its body).
    #[error("{what}: {status}: {body}")]
    Status {
        what: String,
        status: StatusCode,
        body: String,
    },
    /// An answer over its cap: declared so by Content-Length (not read at all), or streamed
    /// past it (reading stopped there).
    #[error("{what}: {}", too_large_text(*.cap, *.declared))]
    TooLarge {
        what: String,
        cap: u64,
        declared: Option<u64>,
    },
    /// An answer whose body did not finish before the request's deadline (a trickle).
    #[error("{what}: the answer did not finish within the fetch timeout of {} ms; reading stopped", .timeout.as_millis())]
    Timeout { what: String, timeout: Duration },
    /// The connection failed while the body was read.
    #[error("{what}: reading the answer: {error}")]
    Transport { what: String, error: String },
    /// A 2xx answer that is not what the endpoint serves; `entry` is the position in the page
    /// of an entry that is not base64, when that is what is wrong.
    #[error("{what}: {detail}")]
    Malformed {
        what: String,
        detail: String,
        entry: Option<usize>,
    },
}

fn too_large_text(cap: u64, declared: Option<u64>) -> String {
    match declared {
        Some(n) => format!(
            "the answer declares {n} bytes (Content-Length), over the cap of {cap} bytes; not read"
        ),
        None => format!("the answer runs past the cap of {cap} bytes; reading stopped there"),
    }
}

impl ClientError {
    /// The message without the leading name of the request.
    pub fn detail(&self) -> String {
        let text = self.to_string();
        let what = self.what();
        text.strip_prefix(what)
            .and_then(|t| t.strip_prefix(": "))
            .map(str::to_string)
            .unwrap_or(text)
    }

    /// The request this error is about.
    pub fn what(&self) -> &str {
        match self {
            ClientError::Unreachable { what, .. }
            | ClientError::Status { what, .. }
            | ClientError::TooLarge { what, .. }
            | ClientError::Timeout { what, .. }
            | ClientError::Transport { what, .. }
            | ClientError::Malformed { what, .. } => what,
        }
    }

    /// The answer's status, for [`ClientError::Status`].
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The typed client of one log's public endpoints.
#[derive(Clone, Debug)]
pub struct LogClient {
    http: reqwest::Client,
    base: String,
    limits: Limits,
}

/// A 2xx body of at most `cap` bytes.
enum Body {
    Ok(Vec<u8>),
    NotFound,
}

impl LogClient {
    /// A client of the log at `base` (`http://host:port`, a trailing `/` ignored), reading
    /// within `limits`.
    pub fn new(http: reqwest::Client, base: &str, limits: Limits) -> LogClient {
        LogClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            limits,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// `GET /log/checkpoint`: the signed note text (the log's signature and the witnesses'
    /// cosignature lines), or `None` while the log has signed none (404).
    pub async fn checkpoint(&self) -> Result<Option<String>, ClientError> {
        let what = "GET /log/checkpoint".to_string();
        let req = self.http.get(format!("{}/log/checkpoint", self.base));
        match self
            .send(req, what, self.limits.checkpoint_bytes, true)
            .await?
        {
            Body::Ok(b) => Ok(Some(into_text(b))),
            Body::NotFound => Ok(None),
        }
    }

    /// `GET /log/entries?start=&end=`: the leaf data of the page the log serves (at most 1,000
    /// entries from `start`), decoded from base64, as served: the caller checks the count.
    pub async fn entries(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, ClientError> {
        let path = format!("/log/entries?start={start}&end={end}");
        let what = format!("GET {path}");
        let body = self.get(&path, &what, self.limits.entries_bytes).await?;
        decode_entries(&body).map_err(|(entry, detail)| ClientError::Malformed {
            what,
            detail,
            entry,
        })
    }

    /// `GET /log/proof/inclusion?index=&tree_size=`: the proof's hashes.
    pub async fn inclusion(&self, index: u64, size: u64) -> Result<Vec<Hash>, ClientError> {
        self.proof(&format!(
            "/log/proof/inclusion?index={index}&tree_size={size}"
        ))
        .await
    }

    /// `GET /log/proof/consistency?first=&second=`: the proof's hashes.
    pub async fn consistency(&self, first: u64, second: u64) -> Result<Vec<Hash>, ClientError> {
        self.proof(&format!(
            "/log/proof/consistency?first={first}&second={second}"
        ))
        .await
    }

    async fn proof(&self, path: &str) -> Result<Vec<Hash>, ClientError> {
        let what = format!("GET {path}");
        let body = self.get(path, &what, MAX_PROOF_BYTES).await?;
        decode_hashes(&body).map_err(|detail| ClientError::Malformed {
            what,
            detail,
            entry: None,
        })
    }

    /// `POST /log/cosignatures` with these lines (each ending in a newline): how many the log
    /// stored.
    pub async fn post_cosignatures(&self, lines: &str) -> Result<u64, ClientError> {
        let what = "POST /log/cosignatures".to_string();
        let req = self
            .http
            .post(format!("{}/log/cosignatures", self.base))
            .header("content-type", "text/plain")
            .body(lines.to_string());
        let Body::Ok(body) = self.send(req, what.clone(), MAX_REPLY_BYTES, false).await? else {
            unreachable!("a 404 is a status error here");
        };
        #[derive(Deserialize)]
        struct Stored {
            stored: u64,
        }
        serde_json::from_slice::<Stored>(&body)
            .map(|s| s.stored)
            .map_err(|e| ClientError::Malformed {
                what,
                detail: format!("not {{\"stored\": n}}: {e}"),
                entry: None,
            })
    }

    async fn get(&self, path: &str, what: &str, cap: u64) -> Result<Vec<u8>, ClientError> {
        let req = self.http.get(format!("{}{path}", self.base));
        match self.send(req, what.to_string(), cap, false).await? {
            Body::Ok(b) => Ok(b),
            Body::NotFound => unreachable!("a 404 is a status error here"),
        }
    }

    /// Send `req` and read a 2xx answer of at most `cap` bytes before the deadline; a 404 is
    /// `NotFound` when `not_found_ok`, any other status an error with the start of its body.
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        what: String,
        cap: u64,
        not_found_ok: bool,
    ) -> Result<Body, ClientError> {
        let timeout = self.limits.timeout;
        let deadline = Instant::now() + timeout;
        let mut r = match req.timeout(timeout).send().await {
            Ok(r) => r,
            Err(e) => {
                return Err(ClientError::Unreachable {
                    what,
                    error: e.to_string(),
                })
            }
        };
        let status = r.status();
        if not_found_ok && status == StatusCode::NOT_FOUND {
            return Ok(Body::NotFound);
        }
        if !status.is_success() {
            let body = read_prefix(&mut r, ERROR_PREFIX_BYTES, deadline).await;
            return Err(ClientError::Status {
                what,
                status,
                body: body.chars().take(ERROR_SHOWN_CHARS).collect(),
            });
        }
        read_body(&mut r, cap, deadline)
            .await
            .map(Body::Ok)
            .map_err(|e| match e {
                BodyError::TooLarge { declared } => ClientError::TooLarge {
                    what,
                    cap,
                    declared,
                },
                BodyError::Timeout => ClientError::Timeout { what, timeout },
                BodyError::Transport(e) => ClientError::Transport {
                    what,
                    error: e.to_string(),
                },
            })
    }
}

/// Why a response body was not read whole.
enum BodyError {
    /// Over the cap: declared so by Content-Length (not read at all), or streamed past it.
    TooLarge { declared: Option<u64> },
    /// Not finished before the deadline.
    Timeout,
    /// The connection failed.
    Transport(reqwest::Error),
}

/// Read a body of at most `cap` bytes, chunk by chunk (each as the connection delivers it),
/// before `deadline`. Nothing beyond the cap is ever buffered.
async fn read_body(
    r: &mut reqwest::Response,
    cap: u64,
    deadline: Instant,
) -> Result<Vec<u8>, BodyError> {
    let declared = r.content_length();
    if let Some(n) = declared.filter(|n| *n > cap) {
        return Err(BodyError::TooLarge { declared: Some(n) });
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(0).min(cap) as usize);
    loop {
        let chunk = match tokio::time::timeout_at(deadline, r.chunk()).await {
            Err(_) => return Err(BodyError::Timeout),
            Ok(Err(e)) if e.is_timeout() => return Err(BodyError::Timeout),
            Ok(Err(e)) => return Err(BodyError::Transport(e)),
            Ok(Ok(None)) => return Ok(body),
            Ok(Ok(Some(c))) => c,
        };
        if body.len() as u64 + chunk.len() as u64 > cap {
            return Err(BodyError::TooLarge { declared: None });
        }
        body.extend_from_slice(&chunk);
    }
}

/// The first `n` bytes of a body (less if it ends, fails or runs out of time first), as text.
async fn read_prefix(r: &mut reqwest::Response, n: u64, deadline: Instant) -> String {
    let mut body = Vec::new();
    while (body.len() as u64) < n {
        match tokio::time::timeout_at(deadline, r.chunk()).await {
            Ok(Ok(Some(c))) => body.extend_from_slice(&c[..c.len().min(n as usize - body.len())]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// Bytes as text (invalid UTF-8 replaced), without a copy when they are valid.
fn into_text(body: Vec<u8>) -> String {
    String::from_utf8(body).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// A `GET /log/entries` body (a JSON array of standard base64 strings) as leaf data; on error,
/// the position of the entry that is not base64 (if that is the fault) and why.
pub fn decode_entries(body: &[u8]) -> Result<Vec<Vec<u8>>, (Option<usize>, String)> {
    let items: Vec<String> =
        serde_json::from_slice(body).map_err(|e| (None, format!("not a JSON array: {e}")))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            B64.decode(item)
                .map_err(|e| (Some(i), format!("an entry is not base64: {e}")))
        })
        .collect()
}

/// A proof body (`{"hashes": [base64, …]}`) as hashes.
pub fn decode_hashes(body: &[u8]) -> Result<Vec<Hash>, String> {
    #[derive(Deserialize)]
    struct Hashes {
        hashes: Vec<String>,
    }
    let h: Hashes = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    h.hashes
        .iter()
        .map(|s| {
            let raw = B64
                .decode(s)
                .map_err(|e| format!("'{s}' is not base64: {e}"))?;
            <Hash>::try_from(raw.as_slice()).map_err(|_| format!("'{s}' is not 32 bytes"))
        })
        .collect()
}

/// The tree size of a checkpoint note (its second line), read without checking anything:
/// for callers that only follow a log they trust (a benchmark), never for a verdict.
pub fn checkpoint_size(note: &str) -> Option<u64> {
    note.lines().nth(1)?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_entries_names_the_bad_one() {
        assert_eq!(
            decode_entries(br#"["aGk=", ""]"#).unwrap(),
            vec![b"hi".to_vec(), vec![]]
        );
        assert_eq!(decode_entries(br#"["aGk=", "!"]"#).unwrap_err().0, Some(1));
        assert_eq!(decode_entries(b"{}").unwrap_err().0, None);
    }

    #[test]
    fn decoding_hashes_wants_32_bytes_each() {
        let h = B64.encode([7u8; 32]);
        assert_eq!(
            decode_hashes(format!(r#"{{"hashes": ["{h}"]}}"#).as_bytes()).unwrap(),
            vec![[7u8; 32]]
        );
        assert!(decode_hashes(br#"{"hashes": ["aGk="]}"#)
            .unwrap_err()
            .contains("not 32 bytes"));
        assert!(decode_hashes(br#"{"hashes": "x"}"#).is_err());
        assert_eq!(
            decode_hashes(br#"{"hashes": []}"#).unwrap(),
            Vec::<Hash>::new()
        );
    }

    #[test]
    fn checkpoint_size_is_the_second_line() {
        assert_eq!(checkpoint_size("o\n12\nroot\n\n— o sig\n"), Some(12));
        assert_eq!(checkpoint_size("o\n"), None);
    }

    #[test]
    fn messages_name_the_request_and_the_cap() {
        let e = ClientError::TooLarge {
            what: "GET /log/checkpoint".into(),
            cap: 65536,
            declared: None,
        };
        assert_eq!(
            e.to_string(),
            "GET /log/checkpoint: the answer runs past the cap of 65536 bytes; reading stopped there"
        );
        assert_eq!(
            e.detail(),
            "the answer runs past the cap of 65536 bytes; reading stopped there"
        );
        let t = ClientError::Timeout {
            what: "GET /log/entries?start=0&end=1".into(),
            timeout: Duration::from_millis(1000),
        };
        assert!(t.to_string().contains("1000 ms"));
    }
}
