//! Artifacts: through the server's proxy (`mlflow-artifacts`) or a local `file:` root; upload,
//! download and listing, files and whole directories.

use super::*;

/// Where an artifact goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ArtifactTarget {
    /// Through the server's artifact proxy.
    Http(Url),
    /// A local directory (`file:` artifact roots on a server sharing this file system).
    Local(PathBuf),
}

impl MlflowClient {
    pub(crate) fn artifact_target(&self, artifact_uri: &str, rel: &str) -> Result<ArtifactTarget> {
        let rel = check_rel_path(rel)?;
        if let Some(rest) = artifact_uri.strip_prefix("mlflow-artifacts:") {
            // `mlflow-artifacts:/path` (this server) or `mlflow-artifacts://host:port/path`.
            let (mut url, path) = if let Some(hostpath) = rest.strip_prefix("//") {
                let (host, path) = hostpath.split_once('/').unwrap_or((hostpath, ""));
                let u = Url::parse(&format!("{}://{host}", self.base.scheme()))
                    .map_err(|e| Error::Config(format!("artifact URI {artifact_uri:?}: {e}")))?;
                (u, path.to_owned())
            } else {
                (self.base.clone(), rest.trim_start_matches('/').to_owned())
            };
            {
                let mut segs = url.path_segments_mut().map_err(|()| {
                    Error::Config(format!("artifact URI {artifact_uri:?} has no path"))
                })?;
                segs.pop_if_empty();
                segs.extend(["api", "2.0", "mlflow-artifacts", "artifacts"]);
                segs.extend(path.split('/').filter(|s| !s.is_empty()));
                segs.extend(rel.split('/'));
            }
            return Ok(ArtifactTarget::Http(url));
        }
        if let Some(p) = artifact_uri.strip_prefix("file://") {
            return Ok(ArtifactTarget::Local(Path::new(p).join(rel)));
        }
        if artifact_uri.starts_with('/') {
            return Ok(ArtifactTarget::Local(Path::new(artifact_uri).join(rel)));
        }
        Err(Error::NotSupported(format!(
            "artifact root {artifact_uri:?}: only the server's artifact proxy (mlflow-artifacts:, the default of `mlflow server`) and local paths are supported"
        )))
    }

    /// Uploads a local file to `<artifact_uri>/<rel_path>` through the artifact proxy, streamed
    /// from disk (never read into memory whole).
    pub fn upload_artifact(&self, artifact_uri: &str, rel_path: &str, local: &Path) -> Result<()> {
        match self.artifact_target(artifact_uri, rel_path)? {
            ArtifactTarget::Http(url) => self
                .http
                .put_file(url.as_str(), local, None)
                .map(drop)
                .map_err(|e| self.http_err(format!("upload artifact {rel_path:?}"), e)),
            ArtifactTarget::Local(dest) => copy_local(local, &dest),
        }
    }

    /// Uploads bytes to `<artifact_uri>/<rel_path>`.
    pub fn upload_artifact_bytes(
        &self,
        artifact_uri: &str,
        rel_path: &str,
        bytes: &[u8],
    ) -> Result<()> {
        match self.artifact_target(artifact_uri, rel_path)? {
            ArtifactTarget::Http(url) => self
                .http
                .send_with_retry(|c| Ok(c.put(url.as_str()).body(bytes.to_vec())))
                .map(drop)
                .map_err(|e| self.http_err(format!("upload artifact {rel_path:?}"), e)),
            ArtifactTarget::Local(dest) => {
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent).map_err(|source| Error::Io {
                        context: "creating artifact directory",
                        path: parent.to_owned(),
                        source,
                    })?;
                }
                std::fs::write(&dest, bytes).map_err(|source| Error::Io {
                    context: "writing artifact",
                    path: dest,
                    source,
                })
            }
        }
    }

    /// Downloads `<artifact_uri>/<rel_path>` into memory.
    pub fn download_artifact(&self, artifact_uri: &str, rel_path: &str) -> Result<Vec<u8>> {
        match self.artifact_target(artifact_uri, rel_path)? {
            ArtifactTarget::Http(url) => {
                let resp = self
                    .http
                    .send_with_retry(|c| Ok(c.get(url.as_str())))
                    .map_err(|e| self.http_err(format!("download artifact {rel_path:?}"), e))?;
                resp.bytes().map(|b| b.to_vec()).map_err(|e| {
                    Error::UnexpectedResponse(format!(
                        "download artifact {rel_path:?}: {}",
                        e.without_url()
                    ))
                })
            }
            ArtifactTarget::Local(p) => std::fs::read(&p).map_err(|source| Error::Io {
                context: "reading artifact",
                path: p,
                source,
            }),
        }
    }

    /// Lists the files and directories directly under `<artifact_uri>/<rel_dir>` (`rel_dir`
    /// empty: the root), through the artifact proxy (`GET mlflow-artifacts/artifacts?path=`) or
    /// the local directory. A directory that does not exist lists as empty, as MLflow answers.
    pub fn list_artifacts(&self, artifact_uri: &str, rel_dir: &str) -> Result<Vec<ArtifactEntry>> {
        let rel = rel_dir.trim_matches('/');
        let rel = if rel.is_empty() {
            String::new()
        } else {
            check_rel_path(rel)?
        };
        if let Some(rest) = artifact_uri.strip_prefix("mlflow-artifacts:") {
            let (origin, path) = if let Some(hostpath) = rest.strip_prefix("//") {
                let (host, path) = hostpath.split_once('/').unwrap_or((hostpath, ""));
                (format!("{}://{host}", self.base.scheme()), path.to_owned())
            } else {
                (
                    self.tracking_uri().to_owned(),
                    rest.trim_start_matches('/').to_owned(),
                )
            };
            let full = [path.trim_matches('/'), rel.as_str()]
                .iter()
                .filter(|s| !s.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join("/");
            let url = format!("{origin}/api/2.0/mlflow-artifacts/artifacts");
            let v: Value = self
                .http
                .get_json(&url, &[("path", full.as_str())])
                .map_err(|e| self.http_err(format!("list artifacts {rel:?}"), e))?;
            let files = v.get("files").and_then(Value::as_array).cloned();
            let mut out = Vec::new();
            for f in files.unwrap_or_default() {
                let Some(p) = f.get("path").and_then(Value::as_str) else {
                    continue;
                };
                // The proxy answers names relative to the listed directory; keep the last part.
                let name = p.rsplit('/').next().unwrap_or(p).to_owned();
                out.push(ArtifactEntry {
                    path: if rel.is_empty() {
                        name
                    } else {
                        format!("{rel}/{name}")
                    },
                    is_dir: f.get("is_dir").and_then(Value::as_bool).unwrap_or(false),
                    file_size: f.get("file_size").and_then(|s| {
                        s.as_u64()
                            .or_else(|| s.as_str().and_then(|t| t.parse().ok()))
                    }),
                });
            }
            out.sort_by(|a, b| a.path.cmp(&b.path));
            return Ok(out);
        }
        let root = match artifact_uri.strip_prefix("file://") {
            Some(p) => PathBuf::from(p),
            None if artifact_uri.starts_with('/') => PathBuf::from(artifact_uri),
            None => {
                return Err(Error::NotSupported(format!(
                    "artifact root {artifact_uri:?}: only the server's artifact proxy (mlflow-artifacts:) and local paths are supported"
                )));
            }
        };
        let dir = if rel.is_empty() {
            root
        } else {
            root.join(&rel)
        };
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return Ok(out);
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let meta = e.metadata().ok();
            out.push(ArtifactEntry {
                path: if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                },
                is_dir: meta.as_ref().is_some_and(std::fs::Metadata::is_dir),
                file_size: meta.filter(|m| m.is_file()).map(|m| m.len()),
            });
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Every file (not directory) under `<artifact_uri>/<rel_dir>`, recursively, at most
    /// `limit` of them (a guard against listing a huge tree by mistake).
    pub fn list_artifact_files(
        &self,
        artifact_uri: &str,
        rel_dir: &str,
        limit: usize,
    ) -> Result<Vec<ArtifactEntry>> {
        let mut files = Vec::new();
        let mut dirs = vec![rel_dir.trim_matches('/').to_owned()];
        while let Some(d) = dirs.pop() {
            for e in self.list_artifacts(artifact_uri, &d)? {
                if e.is_dir {
                    dirs.push(e.path);
                } else {
                    files.push(e);
                    if files.len() >= limit {
                        return Ok(files);
                    }
                }
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    /// Uploads every file under the local directory `local` to `<artifact_uri>/<rel_prefix>/...`
    /// (`rel_prefix` empty: the root), keeping the relative layout; returns the uploaded
    /// relative paths. Symbolic links and non-UTF-8 names are refused.
    pub fn upload_dir(
        &self,
        artifact_uri: &str,
        rel_prefix: &str,
        local: &Path,
    ) -> Result<Vec<String>> {
        let prefix = rel_prefix.trim_matches('/');
        let mut uploaded = Vec::new();
        for (rel, path) in local_files(local)? {
            let dest = if prefix.is_empty() {
                rel
            } else {
                format!("{prefix}/{rel}")
            };
            self.upload_artifact(artifact_uri, &dest, &path)?;
            uploaded.push(dest);
        }
        Ok(uploaded)
    }

    /// Downloads every file under `<artifact_uri>/<rel_dir>` into the local directory `dest`
    /// (created), keeping the layout relative to `rel_dir`; returns the files written.
    pub fn download_dir(
        &self,
        artifact_uri: &str,
        rel_dir: &str,
        dest: &Path,
    ) -> Result<Vec<PathBuf>> {
        let base = rel_dir.trim_matches('/');
        let mut written = Vec::new();
        for f in self.list_artifact_files(artifact_uri, base, 100_000)? {
            let rel = if base.is_empty() {
                f.path.as_str()
            } else {
                f.path
                    .strip_prefix(base)
                    .map(|r| r.trim_start_matches('/'))
                    .unwrap_or(f.path.as_str())
            };
            let rel = check_rel_path(rel)?;
            let bytes = self.download_artifact(artifact_uri, &f.path)?;
            let out = dest.join(&rel);
            if let Some(parent) = out.parent() {
                std::fs::create_dir_all(parent).map_err(|source| Error::Io {
                    context: "creating download directory",
                    path: parent.to_owned(),
                    source,
                })?;
            }
            std::fs::write(&out, bytes).map_err(|source| Error::Io {
                context: "writing downloaded artifact",
                path: out.clone(),
                source,
            })?;
            written.push(out);
        }
        Ok(written)
    }
}

/// Rejects absolute paths and `..` in artifact paths; normalizes separators.
fn check_rel_path(rel: &str) -> Result<String> {
    let parts: Vec<&str> = rel
        .split(['/', '\\'])
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if rel.starts_with('/') || parts.contains(&"..") || parts.is_empty() {
        return Err(Error::Config(format!(
            "artifact path {rel:?} must be relative, non-empty and without `..`"
        )));
    }
    Ok(parts.join("/"))
}

/// One entry of an artifact listing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ArtifactEntry {
    /// Path relative to the artifact root (`model/MLmodel`).
    pub path: String,
    /// Whether it is a directory.
    pub is_dir: bool,
    /// Size in bytes, for files when the server says.
    pub file_size: Option<u64>,
}

/// Every regular file under `dir`, with its path relative to `dir` (`/`-separated), sorted.
fn local_files(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io {
            context: "reading model directory",
            path,
            source,
        }
    };
    let mut out = Vec::new();
    let mut todo = vec![(String::new(), dir.to_owned())];
    while let Some((prefix, d)) = todo.pop() {
        for e in std::fs::read_dir(&d).map_err(io(&d))? {
            let e = e.map_err(io(&d))?;
            let path = e.path();
            let name = e.file_name().into_string().map_err(|n| {
                Error::Config(format!(
                    "model file name {} is not UTF-8",
                    n.to_string_lossy()
                ))
            })?;
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let kind = e.file_type().map_err(io(&path))?;
            if kind.is_dir() {
                todo.push((rel, path));
            } else if kind.is_file() {
                out.push((rel, path));
            } else {
                return Err(Error::Config(format!(
                    "model directory entry {rel:?} is not a regular file or directory (symbolic links are not followed)"
                )));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn copy_local(src: &Path, dest: &Path) -> Result<()> {
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(|source| Error::Io {
            context: "creating artifact directory",
            path: parent.to_owned(),
            source,
        })?;
    }
    std::fs::copy(src, dest)
        .map(drop)
        .map_err(|source| Error::Io {
            context: "copying artifact",
            path: src.to_owned(),
            source,
        })
}
