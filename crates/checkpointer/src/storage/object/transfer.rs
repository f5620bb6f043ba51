//! Moving file contents: uploads that hash while they send (multipart with parallel parts for
//! big files, journaled so a crash's abandoned upload can be aborted later) and downloads that
//! hash while they receive.

use std::collections::VecDeque;
use std::io::Read;
use std::path::Path;
use std::sync::mpsc;

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStoreExt, PutPayload};

use super::client::{Client, remote};
use crate::config::Compression;
use crate::error::{Error, IoContext, Result};
use crate::format::{Encoding, FileEntry, file_entry as entry};
use crate::hash::{HashAlgo, Hasher};

/// Size of one multipart part (S3 needs >= 5 MiB for all but the last).
pub(crate) const PART: usize = 16 << 20;
/// Parts in flight at once per file.
pub(crate) const CONCURRENCY: usize = 8;

/// Where the multipart upload of an object is recorded while it runs (`.uploads/<...>.json`):
/// `{"key": ..., "id": ...}`, so that an upload abandoned by a crash can be aborted on a later
/// open.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct Journal {
    pub(crate) key: String,
    pub(crate) id: String,
}

/// Produces the stored bytes of one file, part by part (None at the end).
type Parts<'a> = Box<dyn FnMut() -> Result<Option<Bytes>> + Send + 'a>;

/// Uploads what `next` produces to `key`: one put when it fits in a part, else a journaled
/// multipart upload with up to [`CONCURRENCY`] parts in flight. Returns the bytes stored.
pub(crate) fn upload(
    client: &Client,
    key: &ObjPath,
    journal: &ObjPath,
    mut next: Parts<'_>,
) -> Result<u64> {
    let url = key.to_string();
    let first = next()?.unwrap_or_default();
    let Some(second) = next()? else {
        let n = first.len() as u64;
        client.block(async {
            client
                .store
                .put(key, PutPayload::from(first))
                .await
                .map_err(|e| remote("put", &url, e))
        })?;
        return Ok(n);
    };
    let mp = client.multipart.clone();
    let id = client.block(async {
        mp.create_multipart(key)
            .await
            .map_err(|e| remote("create multipart upload", &url, e))
    })?;
    let record = serde_json::to_vec(&Journal {
        key: key.to_string(),
        id: id.clone(),
    })
    .map_err(|source| Error::Json {
        path: journal.to_string().into(),
        source,
    })?;
    let journaled = client.block(async {
        client
            .store
            .put(journal, PutPayload::from(record))
            .await
            .map_err(|e| remote("put", journal.as_ref(), e))
    });
    let result = journaled.and_then(|_| {
        let mut in_flight = VecDeque::new();
        let mut ids = Vec::new();
        let mut total = 0u64;
        let mut idx = 0usize;
        let mut pending = vec![first, second].into_iter();
        let outcome: Result<()> =
            (|| {
                loop {
                    let part = match pending.next() {
                        Some(p) => p,
                        None => match next()? {
                            Some(p) => p,
                            None => break,
                        },
                    };
                    total += part.len() as u64;
                    let (mp, key, id) = (mp.clone(), key.clone(), id.clone());
                    let i = idx;
                    idx += 1;
                    in_flight.push_back(client.spawn(async move {
                        mp.put_part(&key, &id, i, PutPayload::from(part)).await
                    }));
                    if in_flight.len() >= CONCURRENCY
                        && let Some(h) = in_flight.pop_front()
                    {
                        ids.push(client.join(h, &url)?);
                    }
                }
                while let Some(h) = in_flight.pop_front() {
                    ids.push(client.join(h, &url)?);
                }
                Ok(())
            })();
        // Whatever failed, let the parts still running finish before aborting.
        for h in in_flight {
            let _ = client.join(h, &url);
        }
        outcome?;
        client.block(async {
            mp.complete_multipart(key, &id, ids)
                .await
                .map_err(|e| remote("complete multipart upload", &url, e))
        })?;
        Ok(total)
    });
    if result.is_err() {
        let _ = client.block(async {
            mp.abort_multipart(key, &id)
                .await
                .map_err(|e| remote("abort multipart upload", &url, e))
        });
    }
    let _ = client.block(async {
        client
            .store
            .delete(journal)
            .await
            .map_err(|e| remote("delete", journal.as_ref(), e))
    });
    result
}

/// Uploads an owned buffer: hashed on a helper thread while it is sent (or compressed and sent).
pub(crate) fn put_bytes(
    client: &Client,
    key: &ObjPath,
    journal: &ObjPath,
    name: &str,
    data: Vec<u8>,
    compression: Compression,
    algo: HashAlgo,
) -> Result<FileEntry> {
    let data = Bytes::from(data);
    let size = data.len() as u64;
    let (stored, hash) = std::thread::scope(|s| {
        let hasher = std::thread::Builder::new()
            .name("exptrack-ckpt-hash".into())
            .spawn_scoped(s, || {
                let mut h = Hasher::new(algo);
                for piece in data.chunks(2 << 20) {
                    h.update_par(piece, false);
                }
                h.finish()
            })
            .map_err(|e| Error::Worker {
                message: format!("cannot start a hash thread: {e}"),
            })?;
        let body = match compression {
            Compression::Off => data.clone(),
            Compression::Zstd(level) => Bytes::from(compress(&data, level, key)?),
        };
        let mut offset = 0;
        let stored = upload(
            client,
            key,
            journal,
            Box::new(move || {
                if offset >= body.len() && !(offset == 0 && body.is_empty()) {
                    return Ok(None);
                }
                let end = (offset + PART).min(body.len());
                let part = body.slice(offset..end);
                offset = end.max(1);
                Ok(Some(part))
            }),
        )?;
        let hash = hasher.join().map_err(|_| Error::Worker {
            message: "hash thread panicked".into(),
        })?;
        Ok::<_, Error>((stored, hash))
    })?;
    Ok(entry(name, size, hash, stored, compression))
}

/// Streams a local file up, hashing each piece as it is read (and compressing when asked).
pub(crate) fn put_path(
    client: &Client,
    key: &ObjPath,
    journal: &ObjPath,
    name: &str,
    src: &Path,
    compression: Compression,
    algo: HashAlgo,
) -> Result<FileEntry> {
    let file = std::fs::File::open(src).ctx("open", src)?;
    let mut hashing = HashingReader {
        inner: file,
        hasher: Hasher::new(algo),
        n: 0,
    };
    let stored = {
        let mut source: Box<dyn Read + Send + '_> = match compression {
            Compression::Off => Box::new(&mut hashing),
            Compression::Zstd(level) => Box::new(
                zstd::stream::read::Encoder::new(&mut hashing, level).ctx("zstd init", src)?,
            ),
        };
        let mut started = false;
        upload(
            client,
            key,
            journal,
            Box::new(move || {
                let mut buf = vec![0u8; PART];
                let k = read_full(&mut source, &mut buf).ctx("read", src)?;
                if k == 0 && started {
                    return Ok(None);
                }
                started = true;
                buf.truncate(k);
                Ok(Some(Bytes::from(buf)))
            }),
        )?
    };
    let size = hashing.n;
    Ok(entry(
        name,
        size,
        hashing.hasher.finish(),
        stored,
        compression,
    ))
}

struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
    n: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.hasher.update(&buf[..k]);
        self.n += k as u64;
        Ok(k)
    }
}

fn read_full<R: Read + ?Sized>(reader: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut k = 0;
    while k < buf.len() {
        match reader.read(&mut buf[k..]) {
            Ok(0) => break,
            Ok(m) => k += m,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(k)
}

fn compress(data: &[u8], level: i32, key: &ObjPath) -> Result<Vec<u8>> {
    let path = std::path::PathBuf::from(key.to_string());
    let mut enc =
        zstd::Encoder::new(Vec::with_capacity(data.len() / 2), level).ctx("zstd init", &path)?;
    if data.len() >= 32 << 20 {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let _ = enc.multithread(workers.clamp(1, 8));
    }
    enc.set_pledged_src_size(Some(data.len() as u64))
        .ctx("zstd init", &path)?;
    std::io::Write::write_all(&mut enc, data).ctx("write", &path)?;
    enc.finish().ctx("write", &path)
}

/// Downloads `key` (which must hold `entry.stored_size` bytes) into memory, hashing each piece on
/// a helper thread as it arrives, decompressing when stored compressed; checks size and digest.
/// `display` names the object in errors.
pub(crate) fn get_verified(
    client: &Client,
    key: &ObjPath,
    entry: &FileEntry,
    display: &Path,
) -> Result<Vec<u8>> {
    let url = display.display().to_string();
    let stored = entry.stored_size;
    let mut out = crate::io::zeroed(stored).ok_or_else(|| Error::OutOfMemory {
        path: display.to_owned(),
        bytes: stored,
    })?;
    let raw = entry.encoding == Encoding::Raw;
    let algo = entry.hash.algo();
    let digest = std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel::<Bytes>();
        let hasher = if raw {
            Some(
                std::thread::Builder::new()
                    .name("exptrack-ckpt-hash".into())
                    .spawn_scoped(s, move || {
                        let mut h = Hasher::new(algo);
                        for piece in rx {
                            h.update_par(&piece, false);
                        }
                        h.finish()
                    })
                    .map_err(|e| Error::Worker {
                        message: format!("cannot start a hash thread: {e}"),
                    })?,
            )
        } else {
            drop(rx);
            None
        };
        let out_ref = &mut out;
        let received = client.block(async move {
            let got = client.store.get(key).await.map_err(|e| match e {
                object_store::Error::NotFound { .. } => Error::Io {
                    op: "get",
                    path: display.to_owned(),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "object not found"),
                },
                e => remote("get", &url, e),
            })?;
            if got.meta.size != stored {
                return Err(Error::SizeMismatch {
                    path: display.to_owned(),
                    expected: stored,
                    actual: got.meta.size,
                });
            }
            let mut stream = got.into_stream();
            let mut n = 0usize;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| remote("get", &url, e))?;
                let end = n + chunk.len();
                if end > out_ref.len() {
                    return Err(Error::SizeMismatch {
                        path: display.to_owned(),
                        expected: stored,
                        actual: end as u64,
                    });
                }
                out_ref[n..end].copy_from_slice(&chunk);
                n = end;
                if raw {
                    // The hasher only stops early when it panicked; the join reports that.
                    let _ = tx.send(chunk);
                }
            }
            drop(tx);
            if n as u64 != stored {
                return Err(Error::SizeMismatch {
                    path: display.to_owned(),
                    expected: stored,
                    actual: n as u64,
                });
            }
            Ok(())
        });
        let digest = match hasher {
            Some(h) => Some(h.join().map_err(|_| Error::Worker {
                message: "hash thread panicked".into(),
            })?),
            None => None,
        };
        received?;
        Ok::<_, Error>(digest)
    })?;
    let (content, digest) = match digest {
        Some(d) => (out, d),
        None => {
            let mut content = crate::io::zeroed(entry.size).ok_or_else(|| Error::OutOfMemory {
                path: display.to_owned(),
                bytes: entry.size,
            })?;
            let dec = zstd::Decoder::new(std::io::Cursor::new(out)).map_err(|source| {
                Error::Decompress {
                    path: display.to_owned(),
                    source,
                }
            })?;
            let d = crate::io::fill_hashed(dec, &mut content, display, true, algo)?;
            (content, d)
        }
    };
    crate::io::check_digest(display, entry, &digest)?;
    Ok(content)
}
