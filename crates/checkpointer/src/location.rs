//! Where an experiment's checkpoints live: a local directory or an object-store URL, parsed from
//! `[checkpointing] dir`.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The place `[checkpointing] dir` names.
///
/// - a path (`checkpoints`, `/data/ckpt`) or `file:///data/ckpt`: a local directory;
/// - `s3://bucket/prefix` (feature `s3`; `s3a://` too), `gs://bucket/prefix` (feature `gcs`),
///   `az://container/prefix` (feature `azure`; `azure://`, `abfs://`, `abfss://` too): an object
///   store. Credentials and endpoints come from the provider's usual environment variables
///   (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`,
///   `AWS_ALLOW_HTTP`; `GOOGLE_SERVICE_ACCOUNT`, ...; `AZURE_STORAGE_ACCOUNT_NAME`, ...), never
///   from the URL: a URL with `user:password@` is refused.
/// - `memory://name/prefix` (any object-store feature): an in-process store shared by every
///   checkpointer of the process that names it (for tests and examples).
///
/// ```
/// use exptrack_checkpoint::Location;
/// assert_eq!(
///     Location::parse("file:///data/ckpt")?,
///     Location::Local("/data/ckpt".into())
/// );
/// assert_eq!(Location::parse("checkpoints")?, Location::Local("checkpoints".into()));
/// let s3 = Location::parse("s3://bucket/runs/ckpt")?;
/// assert_eq!(s3, Location::Object("s3://bucket/runs/ckpt".into()));
/// assert!(Location::parse("s3://key:secret@bucket/x").is_err());
/// # Ok::<(), exptrack_checkpoint::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Location {
    /// A local directory.
    Local(PathBuf),
    /// An object store URL (`scheme://bucket/prefix`, no trailing `/`).
    Object(String),
}

/// The cargo feature each object-store scheme needs.
pub(crate) fn feature_of(scheme: &str) -> Option<&'static str> {
    Some(match scheme {
        "s3" | "s3a" => "s3",
        "gs" => "gcs",
        "az" | "azure" | "abfs" | "abfss" => "azure",
        "memory" => "s3, gcs or azure",
        _ => return None,
    })
}

impl Location {
    /// Parses a `dir` value (see the type's docs).
    pub fn parse(dir: &str) -> Result<Location> {
        let Some((scheme, rest)) = dir.split_once("://") else {
            return Ok(Location::Local(PathBuf::from(dir)));
        };
        let bad = |message: String| Err(Error::Config { message });
        if scheme == "file" {
            if rest.is_empty() {
                return bad("dir: file:// URL without a path".into());
            }
            return Ok(Location::Local(PathBuf::from(rest)));
        }
        if feature_of(scheme).is_none() {
            return bad(format!(
                "dir: unknown URL scheme {scheme:?} (use a path, file://, s3://, gs:// or az://)"
            ));
        }
        let (bucket, _) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.contains('@') {
            // Never echo the URL: it holds a secret.
            return bad(format!(
                "dir: credentials in a {scheme}:// URL are not accepted; use the provider's \
                 environment variables (AWS_ACCESS_KEY_ID, ...)"
            ));
        }
        if bucket.is_empty() {
            return bad(format!("dir: {scheme}:// URL without a bucket"));
        }
        if rest.contains('?') || rest.contains('#') {
            return bad(format!("dir: {scheme}:// URL with a query or fragment"));
        }
        Ok(Location::Object(format!(
            "{scheme}://{}",
            rest.trim_end_matches('/')
        )))
    }

    /// Parses `config.dir` (a path that is not UTF-8 is a local directory).
    pub fn from_dir(dir: &Path) -> Result<Location> {
        match dir.to_str() {
            Some(s) => Location::parse(s),
            None => Ok(Location::Local(dir.to_owned())),
        }
    }

    /// Splits a URL or path that ends with the experiment id (`s3://b/prefix/<id>`,
    /// `checkpoints/<id>`) into the root (what `[checkpointing] dir` would be) and the id.
    pub fn split_experiment(url: &str) -> Result<(String, String)> {
        let loc = Location::parse(url)?;
        let text = match &loc {
            Location::Local(p) => p.to_string_lossy().trim_end_matches('/').to_owned(),
            Location::Object(u) => u.clone(),
        };
        let split = text.rsplit_once('/');
        let (root, id) = match (&loc, split) {
            (Location::Object(_), Some((root, id)))
                if !root.ends_with(':') && !root.ends_with('/') =>
            {
                (root.to_owned(), id.to_owned())
            }
            (Location::Local(_), Some((root, id))) => (
                if root.is_empty() {
                    "/".to_owned()
                } else {
                    root.to_owned()
                },
                id.to_owned(),
            ),
            (Location::Local(_), None) => (".".to_owned(), text.clone()),
            _ => {
                return Err(Error::Config {
                    message: format!(
                        "{url}: name the experiment, e.g. s3://bucket/prefix/<experiment_id>"
                    ),
                });
            }
        };
        if id.is_empty() {
            return Err(Error::Config {
                message: format!("{url}: no experiment id at the end"),
            });
        }
        Ok((root, id))
    }

    /// The URL scheme of an object store (`s3`, `gs`, `az`, ...); None for a local directory.
    pub fn scheme(&self) -> Option<&str> {
        match self {
            Location::Local(_) => None,
            Location::Object(url) => url.split_once("://").map(|(s, _)| s),
        }
    }

    /// The cargo feature an object store needs (`s3`, `gcs`, `azure`; any of them for
    /// `memory://`, named as `"s3, gcs or azure"`); None for a local directory.
    ///
    /// ```
    /// use exptrack_checkpoint::Location;
    /// assert_eq!(Location::parse("gs://bucket/ckpt")?.feature(), Some("gcs"));
    /// assert_eq!(Location::parse("checkpoints")?.feature(), None);
    /// # Ok::<(), exptrack_checkpoint::Error>(())
    /// ```
    pub fn feature(&self) -> Option<&'static str> {
        self.scheme().and_then(feature_of)
    }

    /// Whether this is an object store.
    pub fn is_remote(&self) -> bool {
        matches!(self, Location::Object(_))
    }
}
