//! [`HttpClient`]: a blocking `reqwest` client with authentication, timeouts, retries and a
//! give-up hook.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use reqwest::blocking::{Body, Client, RequestBuilder, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result, parse_error_body};
use crate::retry::{RetryConfig, parse_retry_after};
use crate::secret::Auth;

/// A shared "give up now" flag. Cloning shares the flag. When cancelled, a client stops waiting
/// between retries at once and fails new requests with [`Error::GaveUp`]; an attempt already on the
/// wire still runs to completion or to its `request_timeout`.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A fresh, not cancelled token.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels: every client holding this token gives up.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Clears the flag (requests are allowed again).
    pub fn reset(&self) {
        self.0.store(false, Ordering::SeqCst);
    }

    /// Whether the token has been cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Builder for [`HttpClient`].
#[derive(Debug, Clone, Default)]
pub struct HttpClientBuilder {
    auth: Auth,
    retry: RetryConfig,
    insecure_tls: bool,
    ca_cert: Option<PathBuf>,
    user_agent: Option<String>,
    no_proxy: bool,
    cancel: Option<CancelToken>,
    connect_timeout: Option<Duration>,
}

impl HttpClientBuilder {
    /// Credentials sent with every request.
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// Retry and timeout settings.
    pub fn retry(mut self, retry: RetryConfig) -> Self {
        self.retry = retry;
        self
    }

    /// Accepts invalid TLS certificates (like `MLFLOW_TRACKING_INSECURE_TLS=true`).
    pub fn insecure_tls(mut self, yes: bool) -> Self {
        self.insecure_tls = yes;
        self
    }

    /// Trusts an extra PEM CA certificate.
    pub fn ca_cert(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_cert = Some(path.into());
        self
    }

    /// `User-Agent` header (default `exptrack/<version>`).
    pub fn user_agent(mut self, ua: impl Into<String>) -> Self {
        self.user_agent = Some(ua.into());
        self
    }

    /// Ignores `HTTP_PROXY`/`HTTPS_PROXY` from the environment.
    pub fn no_proxy(mut self, yes: bool) -> Self {
        self.no_proxy = yes;
        self
    }

    /// Shares a [`CancelToken`] (default: a fresh one, see [`HttpClient::cancel_token`]).
    pub fn cancel_token(mut self, token: CancelToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// Connect timeout (default: 10 s, at most the request timeout).
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = Some(t);
        self
    }

    /// Creates the client.
    pub fn build(self) -> Result<HttpClient> {
        let connect = self
            .connect_timeout
            .unwrap_or(Duration::from_secs(10))
            .min(self.retry.request_timeout);
        let mut b = Client::builder()
            .user_agent(
                self.user_agent
                    .unwrap_or_else(|| format!("exptrack/{}", env!("CARGO_PKG_VERSION"))),
            )
            .connect_timeout(connect)
            .timeout(self.retry.request_timeout)
            .danger_accept_invalid_certs(self.insecure_tls);
        if self.no_proxy {
            b = b.no_proxy();
        }
        if let Some(path) = &self.ca_cert {
            let pem = std::fs::read(path).map_err(|e| Error::Client {
                message: format!("reading CA certificate {}: {e}", path.display()),
            })?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| Error::Client {
                message: format!("parsing CA certificate {}: {e}", path.display()),
            })?;
            b = b.add_root_certificate(cert);
        }
        let inner = b.build().map_err(|e| Error::Client {
            message: e.without_url().to_string(),
        })?;
        Ok(HttpClient {
            inner,
            auth: self.auth,
            retry: self.retry,
            cancel: self.cancel.unwrap_or_default(),
        })
    }
}

/// A blocking HTTP client with credentials, retries with backoff and jitter (honouring
/// `Retry-After`), one status → error mapping and a give-up hook. Cheap to clone (the connection
/// pool is shared).
///
/// ```no_run
/// use exptrack_http::{Auth, HttpClient, RetryConfig};
/// let client = HttpClient::builder()
///     .auth(Auth::bearer("token"))
///     .retry(RetryConfig::default())
///     .build()?;
/// let v: serde_json::Value = client.get_json("http://127.0.0.1:5000/version", &[])?;
/// # Ok::<(), exptrack_http::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct HttpClient {
    inner: Client,
    auth: Auth,
    retry: RetryConfig,
    cancel: CancelToken,
}

impl HttpClient {
    /// A builder with defaults (no auth, [`RetryConfig::default`]).
    pub fn builder() -> HttpClientBuilder {
        HttpClientBuilder::default()
    }

    /// The underlying `reqwest` client.
    pub fn inner(&self) -> &Client {
        &self.inner
    }

    /// The retry settings.
    pub fn retry_config(&self) -> &RetryConfig {
        &self.retry
    }

    /// The credentials.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// The client's give-up hook; cancel it to stop all waiting.
    pub fn cancel_token(&self) -> &CancelToken {
        &self.cancel
    }

    /// Sends a request built by `build` (called once per attempt, so bodies such as streamed
    /// files can be recreated), with credentials applied, retrying transport errors and retryable
    /// statuses per the [`RetryConfig`]. Returns the response when its status is a success.
    pub fn send_with_retry<F>(&self, build: F) -> Result<Response>
    where
        F: FnMut(&Client) -> Result<RequestBuilder>,
    {
        self.send_with_retry_until(None, build)
    }

    /// [`send_with_retry`](Self::send_with_retry) that also gives up (with [`Error::GaveUp`]) when
    /// `deadline` passes, even while waiting between retries.
    pub fn send_with_retry_until<F>(
        &self,
        deadline: Option<Instant>,
        mut build: F,
    ) -> Result<Response>
    where
        F: FnMut(&Client) -> Result<RequestBuilder>,
    {
        let start = Instant::now();
        // Checked: a configured budget of `Duration::MAX` means "no budget", not a panic.
        let budget_end = start.checked_add(self.retry.retry_timeout);
        let end = match (deadline, budget_end) {
            (Some(d), Some(b)) => Some(d.min(b)),
            (d, b) => d.or(b),
        };
        let mut attempts: u32 = 0;
        loop {
            let req = self
                .auth
                .apply(build(&self.inner)?)
                .build()
                .map_err(|e| Error::Request {
                    what: "request".to_owned(),
                    message: e.without_url().to_string(),
                })?;
            let method = req.method().to_string();
            let url = redact_url(req.url());
            if let Some(reason) = self.give_up_reason(deadline) {
                return Err(Error::GaveUp {
                    method,
                    url,
                    reason,
                    attempts,
                    last: None,
                });
            }
            attempts += 1;
            let (err, retry_after) = match self.inner.execute(req) {
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let retry_after = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| parse_retry_after(v, SystemTime::now()));
                    let body = resp.text().unwrap_or_default();
                    let (code, message) = parse_error_body(&body);
                    let retryable = self.retry.policy.is_retryable(status);
                    let err = Error::Status {
                        method: method.clone(),
                        url: url.clone(),
                        status,
                        code,
                        message,
                        retryable,
                        retry_after,
                        attempts,
                    };
                    if !retryable {
                        return Err(err);
                    }
                    (err, retry_after)
                }
                Err(e) => (
                    Error::Transport {
                        method: method.clone(),
                        url: url.clone(),
                        timeout: e.is_timeout(),
                        attempts,
                        source: e.without_url(),
                    },
                    None,
                ),
            };
            let retry = attempts - 1;
            if retry >= self.retry.max_retries {
                return Err(err);
            }
            let wait = self.retry.backoff_random(retry, retry_after);
            // `None`: the wait ends beyond what an `Instant` can represent.
            let wake = Instant::now().checked_add(wait);
            let past = |limit: Instant| wake.is_none_or(|w| w > limit);
            if end.is_some_and(past) {
                if deadline.is_some_and(|d| budget_end.is_none_or(|b| d <= b) && past(d)) {
                    return Err(Error::GaveUp {
                        method,
                        url,
                        reason: "deadline reached",
                        attempts,
                        last: Some(Box::new(err)),
                    });
                }
                return Err(err);
            }
            tracing::warn!(
                target: "exptrack_http",
                %method, %url, attempt = attempts, wait_ms = wait.as_millis() as u64,
                "retrying after: {err}"
            );
            if !self.sleep(wait) {
                return Err(Error::GaveUp {
                    method,
                    url,
                    reason: "cancelled",
                    attempts,
                    last: Some(Box::new(err)),
                });
            }
        }
    }

    fn give_up_reason(&self, deadline: Option<Instant>) -> Option<&'static str> {
        if self.cancel.is_cancelled() {
            Some("cancelled")
        } else if deadline.is_some_and(|d| Instant::now() >= d) {
            Some("deadline reached")
        } else {
            None
        }
    }

    /// Sleeps `d` in small slices; false if cancelled meanwhile.
    fn sleep(&self, d: Duration) -> bool {
        let start = Instant::now();
        loop {
            if self.cancel.is_cancelled() {
                return false;
            }
            let left = d.saturating_sub(start.elapsed());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(Duration::from_millis(20)));
        }
    }

    /// `GET url?query` and decodes a JSON response.
    pub fn get_json<R: DeserializeOwned>(&self, url: &str, query: &[(&str, &str)]) -> Result<R> {
        let resp = self.send_with_retry(|c| Ok(c.get(url).query(query)))?;
        decode(resp)
    }

    /// Sends `body` as JSON with `method` and decodes a JSON response. The body is serialized
    /// once and reused by every attempt.
    pub fn send_json<B: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        url: &str,
        body: &B,
    ) -> Result<R> {
        let bytes = serde_json::to_vec(body).map_err(|e| Error::Request {
            what: format!("{method} {}", redact_str(url)),
            message: e.to_string(),
        })?;
        let resp = self.send_with_retry(|c| {
            Ok(c.request(method.clone(), url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(bytes.clone()))
        })?;
        decode(resp)
    }

    /// `POST` JSON and decodes a JSON response.
    pub fn post_json<B: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        url: &str,
        body: &B,
    ) -> Result<R> {
        self.send_json(reqwest::Method::POST, url, body)
    }

    /// Uploads a file with `PUT`, streamed from disk (never read into memory whole); the file is
    /// reopened for every attempt. The attempt's timeout is the request timeout plus one second
    /// per MiB, so large checkpoints are not cut off by a timeout meant for small calls.
    pub fn put_file(&self, url: &str, path: &Path, content_type: Option<&str>) -> Result<Response> {
        self.send_with_retry(|c| {
            let (body, len) = file_body(path)?;
            let timeout = self
                .retry
                .request_timeout
                .saturating_add(Duration::from_secs(len >> 20));
            let mut rb = c.put(url).body(body).timeout(timeout);
            if let Some(ct) = content_type {
                rb = rb.header(reqwest::header::CONTENT_TYPE, ct);
            }
            Ok(rb)
        })
    }
}

/// Decodes a JSON response body (an empty body decodes as `null`, so `()` and
/// `serde_json::Value` work for empty answers).
pub fn decode<R: DeserializeOwned>(resp: Response) -> Result<R> {
    let method = "response".to_owned();
    let url = redact_url(resp.url());
    let bytes = resp.bytes().map_err(|e| Error::Transport {
        method: method.clone(),
        url: url.clone(),
        timeout: e.is_timeout(),
        attempts: 1,
        source: e.without_url(),
    })?;
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"null"
    } else {
        &bytes
    };
    serde_json::from_slice(bytes).map_err(|source| Error::Decode {
        method,
        url,
        source,
    })
}

/// A request body streamed from `path`, with its length (sent as `Content-Length`).
pub fn file_body(path: &Path) -> Result<(Body, u64)> {
    let file = File::open(path).map_err(|source| Error::Io {
        context: "opening file for upload",
        path: path.to_owned(),
        source,
    })?;
    let len = file
        .metadata()
        .map_err(|source| Error::Io {
            context: "reading file size for upload",
            path: path.to_owned(),
            source,
        })?
        .len();
    Ok((Body::sized(file, len), len))
}

/// The URL as it may appear in errors and logs: without user info (`user:password@`), with every
/// query value replaced by `REDACTED` (keys kept) and without a fragment. Query strings carry
/// secrets: the signature and credential of a pre-signed upload URL (`X-Amz-Signature`,
/// `X-Goog-Signature`, an Azure SAS `sig`), API keys, tokens.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let u = exptrack_http::reqwest::Url::parse(
///     "https://bob:pw@storage.example/b/f.bin?X-Goog-Signature=abc123&X-Goog-Expires=60",
/// )?;
/// assert_eq!(
///     exptrack_http::redact_url(&u),
///     "https://storage.example/b/f.bin?X-Goog-Signature=REDACTED&X-Goog-Expires=REDACTED"
/// );
/// # Ok(())
/// # }
/// ```
pub fn redact_url(url: &reqwest::Url) -> String {
    let clean = url.username().is_empty()
        && url.password().is_none()
        && url.query().is_none()
        && url.fragment().is_none();
    if clean {
        return url.to_string();
    }
    let mut u = url.clone();
    // Only fails for cannot-be-a-base URLs, which have no user info to strip anyway.
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_fragment(None);
    if url.query().is_some() {
        let keys: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
        u.set_query(None);
        if !keys.is_empty() {
            let mut q = u.query_pairs_mut();
            for k in &keys {
                q.append_pair(k, "REDACTED");
            }
        }
    }
    u.to_string()
}

/// [`redact_url`] for a string (an unparseable string loses everything from its first `?` or
/// `#`, and its user info up to the first `@`).
pub fn redact_str(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => redact_url(&u),
        Err(_) => {
            let cut = url.find(['?', '#']).map_or(url, |i| &url[..i]);
            match (cut.find("://"), cut.find('@')) {
                (Some(s), Some(at)) if at > s => format!("{}{}", &cut[..s + 3], &cut[at + 1..]),
                _ => cut.to_owned(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_user_info() {
        assert_eq!(
            redact_str("https://bob:s3cret@example.invalid/api?x=1"),
            "https://example.invalid/api?x=REDACTED"
        );
        assert_eq!(
            redact_str("http://127.0.0.1:5000/"),
            "http://127.0.0.1:5000/"
        );
        assert_eq!(redact_str("nonsense://a:b@c d"), "nonsense://c d");
        // Pre-signed URLs: signature and credential values never survive.
        let presigned = "https://bucket.s3.example/k/f.bin?X-Amz-Credential=AKIAEXAMPLE%2F2026&X-Amz-Signature=deadbeef#frag";
        let r = redact_str(presigned);
        assert_eq!(
            r,
            "https://bucket.s3.example/k/f.bin?X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED"
        );
        assert_eq!(redact_str("not a url?sig=deadbeef"), "not a url");
    }
}
