//! # exptrack-http
//!
//! The HTTP plumbing shared by exptrack's remote backends (MLflow, Weights & Biases), written once:
//!
//! - [`HttpClient`]: a blocking `reqwest` client (rustls) with credentials ([`Auth`]), per-attempt
//!   timeouts, retries with exponential backoff and jitter that honour `Retry-After`, and a
//!   give-up hook ([`CancelToken`], or a per-call deadline) so a shutdown never waits for a
//!   backoff to end;
//! - [`RetryConfig`] and [`RetryPolicy`]: how often, how long and on which statuses to retry
//!   (connection errors and timeouts are always retried);
//! - [`Error`]: one status → error mapping ([`Error::is_transient`] tells the dispatcher whether
//!   to retry later);
//! - [`Secret`]: credentials that print as `[REDACTED]`; no error, log line or `Debug` output of
//!   this crate contains a token or password;
//! - [`file_body`]: streams large uploads from disk.
//!
//! # Feature flags
//! None.
//!
//! # Example
//! ```no_run
//! use std::time::Duration;
//! use exptrack_http::{Auth, HttpClient, RetryConfig, RetryPolicy};
//!
//! let client = HttpClient::builder()
//!     .auth(Auth::basic("alice", "pw"))
//!     .retry(RetryConfig {
//!         max_retries: 3,
//!         initial_backoff: Duration::from_millis(200),
//!         policy: RetryPolicy::standard(),
//!         ..RetryConfig::default()
//!     })
//!     .build()?;
//! let resp = client.send_with_retry(|c| Ok(c.get("http://127.0.0.1:5000/health")))?;
//! assert!(resp.status().is_success());
//! // From another thread, during shutdown:
//! client.cancel_token().cancel();
//! # Ok::<(), exptrack_http::Error>(())
//! ```

#![warn(missing_debug_implementations, unreachable_pub)]

mod client;
mod error;
mod retry;
mod secret;

pub use client::{
    CancelToken, HttpClient, HttpClientBuilder, decode, file_body, redact_str, redact_url,
};
pub use error::{Error, Result};
pub use retry::{MAX_RETRY_AFTER, RetryConfig, RetryPolicy, parse_retry_after};
pub use secret::{Auth, Secret};

pub use reqwest;
