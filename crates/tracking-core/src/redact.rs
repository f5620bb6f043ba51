//! Redaction of secrets in URIs and configuration documents, applied wherever the core writes or
//! formats a configuration: the run's `config.toml`, `results.json`, the config handed to
//! trackers, and `Debug` of the config structs.
//!
//! What counts as a secret:
//! - the password of a URI's user info (`https://user:pw@host` → `https://user:***@host`), and a
//!   user info without a password that looks like a token (16 characters or more:
//!   `https://ghp_…@github.com` → `https://***@github.com`);
//! - the value of a query parameter named like a credential (`token`, `access_token`, `api_key`,
//!   `apikey`, `key`, `password`, `secret`, `sig`, `signature`, `X-Amz-Signature`,
//!   `X-Amz-Credential`, `X-Amz-Security-Token`, `X-Goog-Signature`, `X-Goog-Credential`, …);
//! - in a configuration table, the whole value of a key named like a credential (`password`,
//!   `secret`, `token`, `api_key`, `mlflow_tracking_token`, …).

/// What replaces a secret.
pub const REDACTED: &str = "***";

/// Query parameters whose value is a credential (compared case-insensitively).
const SECRET_PARAMS: &[&str] = &[
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "auth",
    "authorization",
    "api_key",
    "apikey",
    "api-key",
    "key",
    "password",
    "passwd",
    "pwd",
    "secret",
    "client_secret",
    "sig",
    "signature",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "x-goog-signature",
    "x-goog-credential",
    "sv_sig",
];

/// Redacts the secrets in every URI found in `s` (see the [module docs](self)); text that holds
/// no URI is returned unchanged.
///
/// ```
/// use exptrack_core::redact_uri;
/// assert_eq!(redact_uri("http://alice:s3cret@mlflow:5000/"), "http://alice:***@mlflow:5000/");
/// assert_eq!(
///     redact_uri("https://h/x?token=abc&run=1"),
///     "https://h/x?token=***&run=1"
/// );
/// assert_eq!(redact_uri("http://127.0.0.1:5000"), "http://127.0.0.1:5000");
/// ```
pub fn redact_uri(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`'))
            .unwrap_or(tail.len());
        let (uri, after) = tail.split_at(end);
        redact_one(uri, &mut out);
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Redacts one URI without its `scheme://`.
fn redact_one(uri: &str, out: &mut String) {
    let auth_end = uri.find(['/', '?', '#']).unwrap_or(uri.len());
    let (authority, path) = uri.split_at(auth_end);
    match authority.rfind('@') {
        Some(at) => {
            let (userinfo, host) = authority.split_at(at);
            match userinfo.split_once(':') {
                Some((user, _)) => {
                    out.push_str(user);
                    out.push(':');
                    out.push_str(REDACTED);
                }
                None if userinfo.len() >= 16 => out.push_str(REDACTED),
                None => out.push_str(userinfo),
            }
            out.push_str(host);
        }
        None => out.push_str(authority),
    }
    let Some(q) = path.find('?') else {
        out.push_str(path);
        return;
    };
    let (before, query) = path.split_at(q + 1);
    out.push_str(before);
    let (query, fragment) = match query.find('#') {
        Some(h) => query.split_at(h),
        None => (query, ""),
    };
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((k, v)) if !v.is_empty() && is_secret_param(k) => {
                out.push_str(k);
                out.push('=');
                out.push_str(REDACTED);
            }
            _ => out.push_str(pair),
        }
    }
    out.push_str(fragment);
}

fn is_secret_param(k: &str) -> bool {
    SECRET_PARAMS.iter().any(|p| p.eq_ignore_ascii_case(k))
}

/// Whether a configuration key names a credential: one of its `_`/`-`/`.`-separated words is
/// `password`, `passwd`, `pwd`, `secret`, `token`, `apikey` or `credentials`, or it holds `api`
/// followed by `key`. (`tokenizer`, `max_tokens` and `key` alone are not credentials.)
pub fn is_secret_key(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    let words: Vec<&str> = lower.split(['_', '-', '.']).collect();
    words.iter().any(|w| {
        matches!(
            *w,
            "password" | "passwd" | "pwd" | "secret" | "token" | "apikey" | "credentials"
        )
    }) || words.windows(2).any(|w| w[0] == "api" && w[1] == "key")
}

/// A copy of a configuration document with every secret redacted: values of credential-named
/// keys ([`is_secret_key`]) become `***`, URIs in other strings go through [`redact_uri`].
pub fn redact_config(table: &toml::Table) -> toml::Table {
    table
        .iter()
        .map(|(k, v)| {
            let v = match v {
                toml::Value::String(s) if is_secret_key(k) && !s.is_empty() => {
                    toml::Value::String(REDACTED.to_owned())
                }
                other => redact_value(other),
            };
            (k.clone(), v)
        })
        .collect()
}

fn redact_value(v: &toml::Value) -> toml::Value {
    match v {
        toml::Value::String(s) => toml::Value::String(redact_uri(s)),
        toml::Value::Array(a) => toml::Value::Array(a.iter().map(redact_value).collect()),
        toml::Value::Table(t) => toml::Value::Table(redact_config(t)),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn userinfo_and_query_secrets_are_redacted() {
        for (input, want) in [
            ("http://u:p@h:5000/api", "http://u:***@h:5000/api"),
            (
                "see http://u:p@h and https://x:y@z/",
                "see http://u:***@h and https://x:***@z/",
            ),
            (
                "https://ghp_0123456789abcdef@github.com/x",
                "https://***@github.com/x",
            ),
            ("https://bob@h/", "https://bob@h/"),
            (
                "s3://b/k?X-Amz-Signature=abc&X-Amz-Credential=c&x=1#frag",
                "s3://b/k?X-Amz-Signature=***&X-Amz-Credential=***&x=1#frag",
            ),
            ("https://h/?api_key=", "https://h/?api_key="),
            ("no uri here: a:b@c", "no uri here: a:b@c"),
            ("file:///tmp/x", "file:///tmp/x"),
        ] {
            assert_eq!(redact_uri(input), want, "{input}");
        }
    }

    #[test]
    fn secret_keys() {
        assert!(is_secret_key("password"));
        assert!(is_secret_key("mlflow_tracking_token"));
        assert!(is_secret_key("WANDB_API_KEY"));
        assert!(is_secret_key("apikey"));
        assert!(!is_secret_key("tokenizer"));
        assert!(!is_secret_key("max_tokens"));
        assert!(!is_secret_key("key"));
    }

    proptest! {
        #[test]
        fn a_password_never_survives(
            user in "[a-z]{1,8}",
            pw in "Z[A-Z0-9]{5,19}",
            host in "[a-z]{1,10}(:[0-9]{1,5})?",
            path in "(/[a-z]{0,5}){0,3}",
            prefix in "[ a-z]{0,10}",
        ) {
            let s = format!("{prefix}https://{user}:{pw}@{host}{path}?token={pw}&a=b");
            let r = redact_uri(&s);
            prop_assert!(!r.contains(&pw), "{r}");
            prop_assert!(r.contains(&host), "{r}");
            let unchanged = format!("{prefix}https://{host}{path}");
            prop_assert_eq!(redact_uri(&unchanged), unchanged);
        }
    }
}
