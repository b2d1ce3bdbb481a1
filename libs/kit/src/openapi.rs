//! What every service's OpenAPI document says the same way.

/// The answers every route can give before it runs, added to each operation of the document:
/// the kit's guard (403 `host_not_allowed` / `origin_not_allowed`) on every route, and on every
/// POST the body rules (408 `body_timeout`, 413 `body_too_large`, 415 `unsupported_media_type`
/// where the route takes JSON).
pub struct GuardStatuses {
    /// POST routes whose body is not JSON (no 415).
    pub not_json: &'static [&'static str],
}

impl utoipa::Modify for GuardStatuses {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{HttpMethod, ResponseBuilder};
        let refusal = |d: &str| ResponseBuilder::new().description(d).build();
        for (path, item) in doc.paths.paths.iter_mut() {
            for (method, op) in [
                (HttpMethod::Get, item.get.as_mut()),
                (HttpMethod::Post, item.post.as_mut()),
            ] {
                let Some(op) = op else { continue };
                let r = &mut op.responses.responses;
                let mut add = |code: &str, d: &str| {
                    r.entry(code.to_string())
                        .or_insert_with(|| refusal(d).into());
                };
                add(
                    "403",
                    "host_not_allowed or origin_not_allowed (DNS rebinding, cross-site request)",
                );
                if method == HttpMethod::Post {
                    add("408", "body_timeout: the body did not arrive in time");
                    add("413", "body_too_large");
                    if !self.not_json.contains(&path.as_str()) {
                        add(
                            "415",
                            "unsupported_media_type: the body is not declared as application/json",
                        );
                    }
                }
            }
        }
    }
}
