//! Request bodies as every service reads them: JSON declared as `application/json` (else 415,
//! SPEC §2), at most `max_bytes` (else 413 `body_too_large`, checked against `Content-Length`
//! before reading and while reading), parsed as I-JSON (RFC 7493: duplicate keys, lone
//! surrogates and numbers past IEEE 754 doubles refused; nesting at most `max_depth`) — each
//! refusal a 400 naming what is wrong (`invalid_json`, `duplicate_key`, `number_out_of_range`,
//! `too_deep`). A refusal closes the connection when the rest of the body was not read.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use openexec_core::json;
use serde_json::Value;

use crate::error_response;

/// How large and deep a JSON body may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JsonLimits {
    pub max_bytes: usize,
    pub max_depth: usize,
}

/// Whether `Content-Type` names JSON: media type `application/json`, any case, parameters
/// (`charset=utf-8`) allowed.
pub fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

fn closing(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// 413 `body_too_large` for a body past `limit` bytes, closing the connection: the rest of the
/// body is not read, so it cannot be reused.
pub fn body_too_large(limit: usize) -> Response {
    closing(error_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        &format!("The request body is larger than the limit of {limit} bytes"),
    ))
}

/// 415 for a body that is not declared as JSON (SPEC §2). A browser page can send `text/plain`
/// or an untyped body to a local server without asking first; `application/json` it cannot.
pub fn unsupported_media_type(headers: &HeaderMap) -> Response {
    let got = match headers.get(header::CONTENT_TYPE) {
        None => "no Content-Type".to_string(),
        Some(v) => format!(
            "Content-Type '{}'",
            String::from_utf8_lossy(v.as_bytes())
                .chars()
                .filter(|c| !c.is_control())
                .take(100)
                .collect::<String>()
        ),
    };
    // The body is not read, so this connection cannot be reused.
    closing(error_response(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        &format!(
            "The request body must be JSON sent with Content-Type: application/json; got {got}"
        ),
    ))
}

/// Read at most `limit` bytes of `body` (413 past it, checked against `Content-Length` first). A
/// body that cannot be read (the client hung up, a bad chunk) is a 400 with `read_error_code`
/// (`invalid_json` for a JSON endpoint, `invalid_request` for others).
pub async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    read_error_code: &str,
) -> Result<bytes::Bytes, Response> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(body_too_large(limit));
    }
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(body_too_large(limit)),
        Err(e) => Err(error_response(
            StatusCode::BAD_REQUEST,
            read_error_code,
            &format!("could not read the request body: {e}"),
        )),
    }
}

/// Read a JSON body as I-JSON within `limits`; the refusal is the answer to send.
pub async fn read_ijson(
    headers: &HeaderMap,
    body: Body,
    limits: JsonLimits,
) -> Result<Value, Response> {
    if !is_json(headers) {
        return Err(unsupported_media_type(headers));
    }
    let bytes = read_limited(headers, body, limits.max_bytes, "invalid_json").await?;
    json::parse_ijson(&bytes, limits.max_depth)
        .map_err(|e| error_response(StatusCode::BAD_REQUEST, e.code(), &e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: JsonLimits = JsonLimits {
        max_bytes: 64,
        max_depth: 3,
    };

    fn headers(ct: Option<&str>, len: Option<usize>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(ct) = ct {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        }
        if let Some(n) = len {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        h
    }

    async fn code_of(r: Response) -> (u16, String, Option<String>) {
        let status = r.status().as_u16();
        let conn = r
            .headers()
            .get(header::CONNECTION)
            .map(|v| v.to_str().unwrap().to_string());
        let b = r.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&b).unwrap();
        (
            status,
            v["error"]["code"].as_str().unwrap().to_string(),
            conn,
        )
    }

    async fn read(ct: Option<&str>, body: &str) -> Result<Value, (u16, String, Option<String>)> {
        match read_ijson(
            &headers(ct, Some(body.len())),
            Body::from(body.to_string()),
            LIMITS,
        )
        .await
        {
            Ok(v) => Ok(v),
            Err(r) => Err(code_of(r).await),
        }
    }

    #[tokio::test]
    async fn json_within_limits_is_read() {
        let v = read(
            Some("Application/JSON; charset=utf-8"),
            r#"{"a":[1,{"b":2}]}"#,
        )
        .await
        .unwrap();
        assert_eq!(v["a"][1]["b"], 2);
    }

    #[tokio::test]
    async fn each_refusal_names_what_is_wrong() {
        let close = Some("close".to_string());
        assert_eq!(
            read(Some("text/plain"), "{}").await.unwrap_err(),
            (415, "unsupported_media_type".into(), close.clone())
        );
        assert_eq!(
            read(None, "{}").await.unwrap_err().1,
            "unsupported_media_type"
        );
        let big = format!(r#"{{"a":"{}"}}"#, "x".repeat(80));
        assert_eq!(
            read(Some("application/json"), &big).await.unwrap_err(),
            (413, "body_too_large".into(), close)
        );
        for (body, code) in [
            (r#"{"a":1,"a":2}"#, "duplicate_key"),
            (r#"{"a":[[[[1]]]]}"#, "too_deep"),
            (r#"{"a":1e400}"#, "number_out_of_range"),
            (r#"{"a":"#, "invalid_json"),
        ] {
            let (st, c, _) = read(Some("application/json"), body).await.unwrap_err();
            assert_eq!((st, c.as_str()), (400, code), "{body}");
        }
    }

    #[tokio::test]
    async fn a_body_longer_than_declared_is_still_capped() {
        // No Content-Length: the cap applies while reading.
        let r = read_ijson(
            &headers(Some("application/json"), None),
            Body::from(format!("[{}1]", "1,".repeat(40))),
            LIMITS,
        )
        .await
        .unwrap_err();
        assert_eq!(code_of(r).await.1, "body_too_large");
    }
}
