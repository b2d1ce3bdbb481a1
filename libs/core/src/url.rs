//! Database and service URLs in messages: a password is never shown, whether in the URL's user
//! info or in its query (libpq and sqlx read `?password=…` too).

/// `url` with its password replaced by `***`, for logs, errors and reports: the password of the
/// user info (`postgres://app:s3cret@db/x` → `postgres://app:***@db/x`) and the value of every
/// query parameter named `password` (any case; `…/x?password=s3cret` → `…/x?password=***`).
/// The user info is looked for only in the authority (up to the first `/` or `?` after `://`), so
/// an `@` in a path or query is left alone; a fragment (`#…`) is not part of the query.
pub fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => authority.to_string(),
        },
        None => authority.to_string(),
    };
    format!("{scheme}://{authority}{}", redact_query(tail))
}

/// The path-and-query `tail` with the value of each `password` parameter replaced by `***`.
fn redact_query(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_string();
    };
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let params: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => p.to_string(),
        })
        .collect();
    let mut out = format!("{path}?{}", params.join("&"));
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
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
        assert_eq!(
            redact_password("postgres://u@h/db?sslmode=require&password=s3cret&x=1"),
            "postgres://u@h/db?sslmode=require&password=***&x=1"
        );
        assert_eq!(
            redact_password("postgres://u:a@h/db?PassWord=b#frag"),
            "postgres://u:***@h/db?PassWord=***#frag"
        );
        assert_eq!(
            redact_password("postgres://h?password=s3cret"),
            "postgres://h?password=***"
        );
        for same in [
            "postgres://db/x?passwords=a&my_password=b",
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
