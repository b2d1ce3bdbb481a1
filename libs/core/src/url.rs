//! Database and service URLs in messages: the password of a URL's user info is never shown.

/// `url` with the password of its user info (if any) replaced by `***`, for logs, errors and
/// reports (`postgres://app:s3cret@db/x` → `postgres://app:***@db/x`). Only the authority (up
/// to the first `/` or `?` after `://`) is looked at, so an `@` in a path or query is left alone.
pub fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_and_nothing_else_changes() {
        assert_eq!(
            redact_password("postgres://app:s3cret@db.internal:5432/openexec"),
            "postgres://app:***@db.internal:5432/openexec"
        );
        assert_eq!(
            redact_password("postgres://u:secret@h:5432/db?x=1"),
            "postgres://u:***@h:5432/db?x=1"
        );
        for same in [
            "postgres://app@db/openexec",
            "postgres://db/openexec",
            "postgres://db/x?note=a@b:c",
            "sqlite:///openexec.db",
            "not a url",
        ] {
            assert_eq!(redact_password(same), same);
        }
    }
}
