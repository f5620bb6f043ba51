//! Moving file contents: uploads that hash while they send (multipart with parallel parts for
//! big files, journaled so a crash's abandoned upload can be aborted later) and downloads that
//! hash while they receive.

use std::collections::VecDeque;
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, mpsc};

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
    // The journal goes up beside the first parts rather than before them: the upload is
    // unrecorded from create-multipart until the journal lands either way (a crash in that
    // window leaves an upload only the bucket's listing finds), so waiting for it first would
    // add a round trip and narrow nothing. It is awaited before any part's acknowledgement, so a
    // failed journal stops the upload after at most the first parts in flight.
    let mut journal_put = Some({
        let (store, path) = (client.store.clone(), journal.clone());
        client.spawn(async move { store.put(&path, PutPayload::from(record)).await })
    });
    let recorded = |pending: &mut Option<_>| match pending.take() {
        Some(h) => client.join_as(h, "put", journal.as_ref()).map(drop),
        None => Ok(()),
    };
    let result: Result<u64> = (|| {
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
                        recorded(&mut journal_put)?;
                        ids.push(client.join(h, &url)?);
                    }
                }
                recorded(&mut journal_put)?;
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
    })();
    // A journal put still running (the parts failed first) lands before its delete is sent.
    let _ = recorded(&mut journal_put);
    if result.is_err() {
        let _ = client.block(async {
            mp.abort_multipart(key, &id)
                .await
                .map_err(|e| remote("abort multipart upload", &url, e))
        });
    }
    // The journal goes in the background: the caller does not wait for it. One left behind (the
    // process ended first) is removed by a later open, whose abort of the finished upload is a
    // no-op.
    let (store, journal) = (client.store.clone(), journal.clone());
    drop(client.spawn(async move { store.delete(&journal).await }));
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
    free_later(data);
    Ok(entry(name, size, hash, stored, compression))
}

/// Buffers at least this big are freed off the saving thread.
const FREE_LATER_MIN: usize = 64 << 20;

/// Frees a big buffer on a short-lived thread: handing 512 MiB back to the kernel takes
/// 30-45 ms (measured on the 2-core bench machine) that the save need not wait for. Small
/// buffers, or a thread that cannot start, are freed here. The memory comes back those
/// milliseconds after the save returns, so for that moment `save_async` may hold one buffer
/// more than `max_in_flight` counts.
fn free_later(data: Bytes) {
    if data.len() < FREE_LATER_MIN {
        return;
    }
    // A failed spawn drops the closure, and the buffer with it, right here.
    let _ = std::thread::Builder::new()
        .name("exptrack-ckpt-free".into())
        .spawn(move || drop(data));
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

/// Bytes of received pieces that may wait for the reader of a download (one piece more may
/// arrive on top): a slow reader holds the download back, so a download holds a few MiB besides
/// what its reader keeps, whatever the object's size.
const QUEUE_BYTES: usize = 4 << 20;

/// The bytes waiting between a download and its reader, and whether the reader is gone.
#[derive(Default)]
struct Queued {
    state: Mutex<(usize, bool)>,
    changed: Condvar,
}

impl Queued {
    fn lock(&self) -> MutexGuard<'_, (usize, bool)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until there is room (or the reader is gone: false), then counts `n` more bytes.
    fn admit(&self, n: usize) -> bool {
        let mut s = self.lock();
        while s.0 >= QUEUE_BYTES && !s.1 {
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.0 += n;
        !s.1
    }

    fn release(&self, n: usize) {
        self.lock().0 -= n;
        self.changed.notify_all();
    }

    fn close(&self) {
        self.lock().1 = true;
        self.changed.notify_all();
    }
}

/// The pieces of a download as a [`Read`]: end of stream when the download ends (or fails; its
/// error is reported by [`download`], not here).
struct Pieces {
    rx: mpsc::Receiver<Bytes>,
    queued: Arc<Queued>,
    current: Bytes,
}

impl Read for Pieces {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.current.is_empty() {
            match self.rx.recv() {
                Ok(piece) => {
                    self.queued.release(piece.len());
                    self.current = piece;
                }
                Err(_) => return Ok(0),
            }
        }
        let k = buf.len().min(self.current.len());
        buf[..k].copy_from_slice(&self.current[..k]);
        self.current = self.current.slice(k..);
        Ok(k)
    }
}

impl Drop for Pieces {
    fn drop(&mut self) {
        self.queued.close();
    }
}

/// Downloads `key`, which must hold `entry.stored_size` bytes, on a helper thread, and hands
/// the stored bytes to `consume` as a [`Read`] while they arrive (through a queue of about
/// [`QUEUE_BYTES`]), so nothing is buffered whole. When both fail, the download's error is the
/// one returned (the reader only saw the stream end early). `display` names the object in
/// errors.
fn download<T>(
    client: &Client,
    key: &ObjPath,
    entry: &FileEntry,
    display: &Path,
    consume: impl FnOnce(Pieces) -> Result<T>,
) -> Result<T> {
    let url = display.display().to_string();
    let stored = entry.stored_size;
    let mismatch = |actual: u64| Error::SizeMismatch {
        path: display.to_owned(),
        expected: stored,
        actual,
    };
    let (tx, rx) = mpsc::channel::<Bytes>();
    let queued = Arc::new(Queued::default());
    let room = Arc::clone(&queued);
    std::thread::scope(|s| {
        let fetch = async move {
            let got = client.store.get(key).await.map_err(|e| match e {
                object_store::Error::NotFound { .. } => Error::Io {
                    op: "get",
                    path: display.to_owned(),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "object not found"),
                },
                e => remote("get", &url, e),
            })?;
            if got.meta.size != stored {
                return Err(mismatch(got.meta.size));
            }
            let mut stream = got.into_stream();
            let mut n = 0u64;
            while let Some(piece) = stream.next().await {
                let piece = piece.map_err(|e| remote("get", &url, e))?;
                n += piece.len() as u64;
                if n > stored {
                    return Err(mismatch(n));
                }
                // Waits while the queue is full (this future runs on the helper thread, not on
                // a runtime worker). A closed queue: the reader stopped and reports why.
                if !room.admit(piece.len()) || tx.send(piece).is_err() {
                    return Ok(());
                }
            }
            if n != stored {
                return Err(mismatch(n));
            }
            Ok(())
        };
        let downloader = std::thread::Builder::new()
            .name("exptrack-ckpt-get".into())
            .spawn_scoped(s, move || client.block(fetch))
            .map_err(|e| Error::Worker {
                message: format!("cannot start a download thread: {e}"),
            })?;
        let consumed = consume(Pieces {
            rx,
            queued,
            current: Bytes::new(),
        });
        let downloaded = downloader.join().unwrap_or_else(|_| {
            Err(Error::Worker {
                message: "download thread panicked".into(),
            })
        });
        downloaded?;
        consumed
    })
}

/// Downloads `key` (which must hold `entry.stored_size` bytes) into the content's final buffer
/// as it arrives, decompressing when stored compressed, with the hash following the filled
/// pieces; checks size and digest. Besides that buffer, a few MiB at most are held.
/// `display` names the object in errors.
pub(crate) fn get_verified(
    client: &Client,
    key: &ObjPath,
    entry: &FileEntry,
    display: &Path,
) -> Result<Vec<u8>> {
    if entry.encoding == Encoding::Raw && entry.size != entry.stored_size {
        return Err(Error::SizeMismatch {
            path: display.to_owned(),
            expected: entry.size,
            actual: entry.stored_size,
        });
    }
    let (content, digest) = download(client, key, entry, display, |mut stored| {
        // The buffer is made only once the first bytes are in: by then the object's size has
        // matched the manifest's (the download checks it before handing anything over), and a
        // zstd frame's declared size has matched the content size, so a manifest that lies
        // about a size cannot make a buffer of that size.
        let mut head = [0u8; crate::io::ZSTD_HEADER_MAX];
        let want = head
            .len()
            .min(usize::try_from(entry.stored_size).unwrap_or(usize::MAX));
        let n = read_full(&mut stored, &mut head[..want]).ctx("get", display)?;
        if n < want {
            // The download ended early (its error is the one reported) or the object is
            // shorter than recorded: nothing to make a buffer for.
            return Err(Error::SizeMismatch {
                path: display.to_owned(),
                expected: entry.stored_size,
                actual: n as u64,
            });
        }
        if entry.encoding == Encoding::Zstd {
            crate::io::check_zstd_frame(&head[..n], display, entry)?;
        }
        let mut content = crate::io::zeroed(entry.size).ok_or_else(|| Error::OutOfMemory {
            path: display.to_owned(),
            bytes: entry.size,
        })?;
        let digest = crate::io::fill_stored(
            std::io::Cursor::new(&head[..n]).chain(stored),
            &mut content,
            display,
            entry,
        )?;
        Ok((content, digest))
    })?;
    crate::io::check_digest(display, entry, &digest)?;
    Ok(content)
}

/// Verifies `key` against `entry` while it downloads, keeping none of it: the stored bytes go
/// through the decompressor (when compressed) and the hash piece by piece, so memory stays at a
/// few MiB whatever the object's size. `display` names the object in errors.
pub(crate) fn verify_streaming(
    client: &Client,
    key: &ObjPath,
    entry: &FileEntry,
    display: &Path,
) -> Result<()> {
    download(client, key, entry, display, |stored| {
        crate::io::verify_stored(stored, display, entry)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::multipart::{MultipartStore, PartId};
    use object_store::{MultipartId, PutResult};

    /// A buffer that reports the name of the thread that drops it.
    struct Watched(Vec<u8>, mpsc::Sender<Option<String>>);

    impl AsRef<[u8]> for Watched {
        fn as_ref(&self) -> &[u8] {
            &self.0
        }
    }

    impl Drop for Watched {
        fn drop(&mut self) {
            let _ = self
                .1
                .send(std::thread::current().name().map(str::to_owned));
        }
    }

    fn watched(len: usize) -> (Bytes, mpsc::Receiver<Option<String>>) {
        let (tx, rx) = mpsc::channel();
        (Bytes::from_owner(Watched(vec![0; len], tx)), rx)
    }

    /// What the upload asked of the multipart interface, in order.
    #[derive(Debug, Clone, PartialEq)]
    enum Call {
        Create,
        Part(usize),
        /// `complete`, with whether the journal was in the store at that moment.
        Complete {
            journaled: bool,
        },
        Abort,
    }

    /// The in-memory store's multipart interface, recording each call; the part numbered
    /// `fail_part` (if any) fails.
    struct Recording {
        mem: Arc<InMemory>,
        journal: ObjPath,
        fail_part: Option<usize>,
        calls: Mutex<Vec<Call>>,
    }

    impl Recording {
        fn note(&self, c: Call) {
            self.calls.lock().unwrap().push(c);
        }
    }

    #[async_trait::async_trait]
    impl MultipartStore for Recording {
        async fn create_multipart(&self, path: &ObjPath) -> object_store::Result<MultipartId> {
            self.note(Call::Create);
            self.mem.create_multipart(path).await
        }

        async fn put_part(
            &self,
            path: &ObjPath,
            id: &MultipartId,
            part_idx: usize,
            data: PutPayload,
        ) -> object_store::Result<PartId> {
            self.note(Call::Part(part_idx));
            if self.fail_part == Some(part_idx) {
                return Err(object_store::Error::Generic {
                    store: "test",
                    source: "injected part failure".into(),
                });
            }
            self.mem.put_part(path, id, part_idx, data).await
        }

        async fn complete_multipart(
            &self,
            path: &ObjPath,
            id: &MultipartId,
            parts: Vec<PartId>,
        ) -> object_store::Result<PutResult> {
            let journaled = self.mem.head(&self.journal).await.is_ok();
            self.note(Call::Complete { journaled });
            self.mem.complete_multipart(path, id, parts).await
        }

        async fn abort_multipart(
            &self,
            path: &ObjPath,
            id: &MultipartId,
        ) -> object_store::Result<()> {
            self.note(Call::Abort);
            self.mem.abort_multipart(path, id).await
        }
    }

    /// Uploads `len` bytes through a recording client; returns the outcome, the calls and
    /// whether the journal is gone afterwards (its delete runs in the background).
    fn recorded_upload(len: usize, fail_part: Option<usize>) -> (Result<u64>, Vec<Call>, bool) {
        let mem = Arc::new(InMemory::new());
        let journal = ObjPath::from(".uploads/u-model.bin.json");
        let rec = Arc::new(Recording {
            mem: mem.clone(),
            journal: journal.clone(),
            fail_part,
            calls: Mutex::new(Vec::new()),
        });
        let client = Client::from_parts(mem.clone(), rec.clone());
        let key = ObjPath::from("ckpt/model.bin");
        let body = Bytes::from((0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
        let mut offset = 0;
        let data = body.clone();
        let out = upload(
            &client,
            &key,
            &journal,
            Box::new(move || {
                if offset >= data.len() {
                    return Ok(None);
                }
                let end = (offset + PART).min(data.len());
                let part = data.slice(offset..end);
                offset = end;
                Ok(Some(part))
            }),
        );
        if out.is_ok() {
            let got = client
                .block(async { Ok(mem.get(&key).await.unwrap().bytes().await.unwrap()) })
                .unwrap();
            assert!(got == body, "the object holds what was uploaded");
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let gone = loop {
            let gone = client
                .block(async { Ok(mem.head(&journal).await.is_err()) })
                .unwrap();
            if gone || std::time::Instant::now() > deadline {
                break gone;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let calls = rec.calls.lock().unwrap().clone();
        (out, calls, gone)
    }

    #[test]
    fn a_multipart_upload_is_journaled_before_it_completes() {
        let len = 2 * PART + 7;
        let (out, calls, gone) = recorded_upload(len, None);
        assert_eq!(out.unwrap(), len as u64);
        assert_eq!(calls.first(), Some(&Call::Create));
        let mut parts: Vec<usize> = calls
            .iter()
            .filter_map(|c| match c {
                Call::Part(i) => Some(*i),
                _ => None,
            })
            .collect();
        parts.sort_unstable();
        assert_eq!(parts, [0, 1, 2]);
        assert_eq!(
            calls.last(),
            Some(&Call::Complete { journaled: true }),
            "complete comes last, with the journal already stored: {calls:?}"
        );
        assert!(gone, "the journal is deleted once the upload is done");
    }

    #[test]
    fn a_failed_part_aborts_the_upload_and_drops_its_journal() {
        let (out, calls, gone) = recorded_upload(3 * PART, Some(1));
        let err = out.unwrap_err().to_string();
        assert!(err.contains("ckpt/model.bin"), "names the object: {err}");
        assert!(
            !calls.iter().any(|c| matches!(c, Call::Complete { .. })),
            "never completed: {calls:?}"
        );
        assert_eq!(calls.last(), Some(&Call::Abort), "{calls:?}");
        assert!(gone, "the journal is deleted after the abort");
    }

    #[test]
    fn a_one_part_file_is_a_single_put_with_no_journal() {
        let (out, calls, gone) = recorded_upload(PART, None);
        assert_eq!(out.unwrap(), PART as u64);
        assert!(calls.is_empty(), "no multipart calls: {calls:?}");
        assert!(gone);
    }

    #[test]
    fn big_buffers_are_freed_on_their_own_thread() {
        let (b, rx) = watched(FREE_LATER_MIN);
        free_later(b);
        let by = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the buffer is freed");
        assert_eq!(by.as_deref(), Some("exptrack-ckpt-free"));
    }

    #[test]
    fn small_buffers_are_freed_in_place() {
        let (b, rx) = watched(FREE_LATER_MIN - 1);
        free_later(b);
        let by = rx.try_recv().expect("freed before free_later returns");
        assert_eq!(by, std::thread::current().name().map(str::to_owned));
    }
}
