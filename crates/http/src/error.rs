//! The crate's [`Error`]: one status → error mapping, never any secret in it.

use std::path::PathBuf;
use std::time::Duration;

/// Errors of `exptrack-http`. No variant ever holds a credential: URLs are stored without user
/// info, headers are never stored, and response bodies are only excerpted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with a non-success status.
    #[error("{method} {url}: HTTP {status}{}: {message}", code.as_deref().map(|c| format!(" {c}")).unwrap_or_default())]
    Status {
        /// HTTP method.
        method: String,
        /// Request URL (no user info).
        url: String,
        /// HTTP status code.
        status: u16,
        /// A machine-readable error code from the body (`error_code` in MLflow's JSON errors).
        code: Option<String>,
        /// The server's message (or an excerpt of the body).
        message: String,
        /// Whether the status is retryable under the client's policy (retries were exhausted if
        /// true).
        retryable: bool,
        /// The server's `Retry-After`, if any.
        retry_after: Option<Duration>,
        /// Attempts made.
        attempts: u32,
    },
    /// The request could not be sent or the response not received (connection refused, reset,
    /// timeout, TLS). Always retryable.
    #[error("{method} {url}: {} after {attempts} attempt(s): {source}", if *timeout { "timed out" } else { "transport error" })]
    Transport {
        /// HTTP method.
        method: String,
        /// Request URL (no user info).
        url: String,
        /// Whether it was a timeout.
        timeout: bool,
        /// Attempts made.
        attempts: u32,
        /// The underlying error (its URL removed).
        #[source]
        source: reqwest::Error,
    },
    /// The request was given up because the client's [`CancelToken`](crate::CancelToken) fired or
    /// the caller's deadline passed.
    #[error("{method} {url}: given up ({reason}) after {attempts} attempt(s)")]
    GaveUp {
        /// HTTP method.
        method: String,
        /// Request URL (no user info).
        url: String,
        /// Why (`cancelled`, `deadline reached`).
        reason: &'static str,
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error, if there was one.
        #[source]
        last: Option<Box<Error>>,
    },
    /// A local file could not be read for upload.
    #[error("{context} ({}): {source}", path.display())]
    Io {
        /// What was being done.
        context: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A response body was not the expected JSON.
    #[error("{method} {url}: unexpected response body: {source}")]
    Decode {
        /// HTTP method.
        method: String,
        /// Request URL (no user info).
        url: String,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// A URL is malformed.
    #[error("invalid URL {url:?}: {message}")]
    InvalidUrl {
        /// The URL (user info removed).
        url: String,
        /// What is wrong.
        message: String,
    },
    /// The request could not be built (bad header value, body serialization).
    #[error("building request {what}: {message}")]
    Request {
        /// Which request.
        what: String,
        /// What is wrong.
        message: String,
    },
    /// The HTTP client could not be created (TLS setup, certificate file).
    #[error("creating the HTTP client: {message}")]
    Client {
        /// What is wrong.
        message: String,
    },
}

impl Error {
    /// Whether trying again later may succeed: transport errors, retryable statuses, and give-ups
    /// (the server may come back). Client errors (4xx other than the retryable ones), bad local
    /// files and malformed responses are permanent.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Status { retryable, .. } => *retryable,
            Error::Transport { .. } | Error::GaveUp { .. } => true,
            _ => false,
        }
    }

    /// The HTTP status, for [`Error::Status`].
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The server's machine-readable error code, for [`Error::Status`] with a JSON body.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Status { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// The server's message, for [`Error::Status`].
    pub fn server_message(&self) -> Option<&str> {
        match self {
            Error::Status { message, .. } => Some(message),
            _ => None,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Longest excerpt of a response body kept in an error.
pub(crate) const BODY_EXCERPT: usize = 1000;

/// Extracts `(code, message)` from an error body: JSON `{"error_code", "message"}` (MLflow),
/// `{"error": "..."}` / `{"errors": [{"message"}]}` (W&B), else an excerpt of the text.
pub(crate) fn parse_error_body(body: &str) -> (Option<String>, String) {
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(body) {
        let code = map
            .get("error_code")
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        let message = map
            .get("message")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .or_else(|| match map.get("error") {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(other) => Some(other.to_string()),
                None => None,
            })
            .or_else(|| {
                map.get("errors")
                    .and_then(|e| e.as_array())
                    .and_then(|a| a.first())
                    .and_then(|e| e.get("message"))
                    .and_then(|m| m.as_str())
                    .map(str::to_owned)
            });
        if code.is_some() || message.is_some() {
            return (code, excerpt(message.as_deref().unwrap_or_default()));
        }
    }
    (None, excerpt(body.trim()))
}

pub(crate) fn excerpt(s: &str) -> String {
    if s.len() <= BODY_EXCERPT {
        return s.to_owned();
    }
    let mut end = BODY_EXCERPT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies() {
        let (c, m) = parse_error_body(
            r#"{"error_code": "INVALID_PARAMETER_VALUE", "message": "Changing param values is not allowed"}"#,
        );
        assert_eq!(c.as_deref(), Some("INVALID_PARAMETER_VALUE"));
        assert_eq!(m, "Changing param values is not allowed");
        let (c, m) = parse_error_body(r#"{"errors": [{"message": "bad"}]}"#);
        assert_eq!((c, m.as_str()), (None, "bad"));
        let (c, m) = parse_error_body("<html>404</html>\n");
        assert_eq!((c, m.as_str()), (None, "<html>404</html>"));
        let long = "é".repeat(2000);
        let (_, m) = parse_error_body(&long);
        assert!(m.len() < 1100 && m.ends_with("(4000 bytes)"), "{m}");
    }
}
