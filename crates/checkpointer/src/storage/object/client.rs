//! Building a store from a URL and the environment, the runtime that drives it, and error mapping
//! (with credentials redacted).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use object_store::ObjectStore;
#[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
use object_store::RetryConfig;
use object_store::multipart::MultipartStore;
use object_store::path::Path as ObjPath;

use crate::error::{Error, RemoteError, Result};

/// A store and its multipart interface (the same object), with the runtime that drives them.
pub(crate) struct Client {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) multipart: Arc<dyn MultipartStore>,
    rt: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The store's own Debug may show its configuration; only its kind is printed here.
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

#[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
/// The retries of every request: backoff with jitter (from 0.5 s, doubling, at most 15 s) on 5xx,
/// 429 and connection errors, 15 tries within three minutes (a restarting server is waited for;
/// a dead one is reported).
fn retry() -> RetryConfig {
    RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(15),
            base: 2.0,
        },
        max_retries: 15,
        retry_timeout: Duration::from_secs(180),
    }
}

/// The runtime that drives a client's requests: two workers, so parts upload in parallel.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("exptrack-ckpt-io")
        .enable_all()
        .build()
}

/// In-process stores named by `memory://<name>`, shared by every checkpointer of the process.
fn memory_store(name: &str) -> Arc<object_store::memory::InMemory> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<object_store::memory::InMemory>>>> =
        OnceLock::new();
    let mut stores = STORES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    stores
        .entry(name.to_owned())
        .or_insert_with(|| Arc::new(object_store::memory::InMemory::new()))
        .clone()
}

impl Client {
    /// The store for `scheme://bucket` and the prefix below it.
    pub(crate) fn connect(url: &str) -> Result<(Client, ObjPath)> {
        let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = ObjPath::parse(prefix).map_err(|e| Error::Config {
            message: format!("dir: {url}: {e}"),
        })?;
        let base = format!("{scheme}://{bucket}");
        let built = |e: object_store::Error| remote("connect", &base, e);
        let (store, multipart): (Arc<dyn ObjectStore>, Arc<dyn MultipartStore>) = match scheme {
            "memory" => {
                let s = memory_store(bucket);
                (s.clone(), s)
            }
            #[cfg(feature = "s3")]
            "s3" | "s3a" => {
                install_tls_provider();
                let s = Arc::new(
                    object_store::aws::AmazonS3Builder::from_env()
                        .with_url(base.as_str())
                        .with_retry(retry())
                        .build()
                        .map_err(built)?,
                );
                (s.clone(), s)
            }
            #[cfg(feature = "gcs")]
            "gs" => {
                install_tls_provider();
                let s = Arc::new(
                    object_store::gcp::GoogleCloudStorageBuilder::from_env()
                        .with_url(base.as_str())
                        .with_retry(retry())
                        .build()
                        .map_err(built)?,
                );
                (s.clone(), s)
            }
            #[cfg(feature = "azure")]
            "az" | "azure" | "abfs" | "abfss" => {
                install_tls_provider();
                let s = Arc::new(
                    object_store::azure::MicrosoftAzureBuilder::from_env()
                        .with_url(base.as_str())
                        .with_retry(retry())
                        .build()
                        .map_err(built)?,
                );
                (s.clone(), s)
            }
            other => {
                let _ = built;
                return Err(Error::Unsupported {
                    url: base.clone(),
                    feature: crate::location::feature_of(other).unwrap_or("s3"),
                });
            }
        };
        let rt = runtime().map_err(|e| Error::Worker {
            message: format!("cannot start the object-store runtime: {e}"),
        })?;
        Ok((
            Client {
                store,
                multipart,
                rt,
            },
            prefix,
        ))
    }

    /// A client over the given store and multipart interface (for test doubles).
    #[cfg(test)]
    pub(crate) fn from_parts(
        store: Arc<dyn ObjectStore>,
        multipart: Arc<dyn MultipartStore>,
    ) -> Client {
        let rt = runtime().expect("a test runtime");
        Client {
            store,
            multipart,
            rt,
        }
    }

    /// Runs `f` to completion on the runtime, also when called from inside another runtime (then
    /// on a helper thread, since a runtime cannot block inside another).
    pub(crate) fn block<T: Send>(&self, f: impl Future<Output = Result<T>> + Send) -> Result<T> {
        if tokio::runtime::Handle::try_current().is_err() {
            return self.rt.block_on(f);
        }
        std::thread::scope(|s| {
            s.spawn(|| self.rt.block_on(f)).join().unwrap_or_else(|_| {
                Err(Error::Worker {
                    message: "object-store request thread panicked".into(),
                })
            })
        })
    }
}

impl Client {
    /// Starts `f` on the runtime (for parts that upload in parallel).
    pub(crate) fn spawn<T: Send + 'static>(
        &self,
        f: impl Future<Output = object_store::Result<T>> + Send + 'static,
    ) -> tokio::task::JoinHandle<object_store::Result<T>> {
        self.rt.spawn(f)
    }

    /// Waits for a task started by [`spawn`](Self::spawn).
    pub(crate) fn join<T: Send>(
        &self,
        handle: tokio::task::JoinHandle<object_store::Result<T>>,
        url: &str,
    ) -> Result<T> {
        self.join_as(handle, "put part", url)
    }

    /// Waits for a task started by [`spawn`](Self::spawn); a failure is reported as `op` on `url`.
    pub(crate) fn join_as<T: Send>(
        &self,
        handle: tokio::task::JoinHandle<object_store::Result<T>>,
        op: &'static str,
        url: &str,
    ) -> Result<T> {
        self.block(async {
            match handle.await {
                Ok(r) => r.map_err(|e| remote(op, url, e)),
                Err(e) => Err(Error::Worker {
                    message: format!("upload task failed: {e}"),
                }),
            }
        })
    }
}

/// rustls without a bundled provider (so aws-lc-sys is not built): use ring, once per process.
#[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
fn install_tls_provider() {
    // Fails only when a provider is installed already (by us or the application): fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Values of credential variables, which must never appear in a message.
fn secrets() -> Vec<String> {
    const VARS: [&str; 8] = [
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ACCESS_KEY_ID",
        "AZURE_STORAGE_ACCOUNT_KEY",
        "AZURE_STORAGE_ACCESS_KEY",
        "AZURE_STORAGE_SAS_KEY",
        "AZURE_CLIENT_SECRET",
        "GOOGLE_SERVICE_ACCOUNT_KEY",
    ];
    VARS.iter()
        .filter_map(|v| std::env::var(v).ok())
        .filter(|v| v.len() >= 4)
        .collect()
}

/// `text` with every credential value from the environment replaced by `***`.
pub(crate) fn redact(text: &str) -> String {
    let mut out = text.to_owned();
    for s in secrets() {
        out = out.replace(&s, "***");
    }
    out
}

/// Maps a store error (redacted; the chain of sources flattened into the message).
pub(crate) fn remote(op: &'static str, path: &str, e: object_store::Error) -> Error {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
    Error::Remote {
        op,
        path: redact(path),
        source: RemoteError(redact(&message)),
    }
}
