//! The `.wandb` transaction log: a LevelDB-style record log, byte-compatible with wandb 0.31.
//!
//! Layout: a 7-byte header (`:W&B`, magic `0xBEE1` little endian, version 0), then records split
//! into chunks inside 32 KiB blocks counted from file offset 0. Each chunk is
//! `u32 LE crc | u16 LE length | u8 type | payload`, where `crc` is CRC-32/IEEE over
//! `[type] ++ payload` and `type` is 1 FULL, 2 FIRST, 3 MIDDLE or 4 LAST. When fewer than 7 bytes
//! remain in a block they are zero-filled. Nothing follows the last chunk.
//!
//! [`LogWriter`] writes such files; [`LogReader`] reads them back, checking every CRC and the
//! chunk sequence, and reports the first problem with its byte offset.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

use prost::Message;

use crate::error::{Error, Result};
use crate::proto::Record;

/// The file header: `:W&B`, magic `0xBEE1` (LE), version 0.
pub const HEADER: [u8; 7] = [0x3A, 0x57, 0x26, 0x42, 0xE1, 0xBE, 0x00];
/// Block size.
pub const BLOCK_SIZE: usize = 32 * 1024;
/// Chunk header size (crc, length, type).
pub const CHUNK_HEADER: usize = 7;

const FULL: u8 = 1;
const FIRST: u8 = 2;
const MIDDLE: u8 = 3;
const LAST: u8 = 4;

fn chunk_crc(kind: u8, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&[kind]);
    h.update(payload);
    h.finalize()
}

/// Writes records to a `.wandb` transaction log.
#[derive(Debug)]
pub struct LogWriter<W: Write> {
    out: W,
    /// Absolute offset of the next byte to write.
    offset: u64,
}

impl LogWriter<BufWriter<File>> {
    /// Creates (truncating) `path` and writes the header.
    pub fn create(path: &Path) -> Result<Self> {
        let file = File::create(path).map_err(|e| Error::io("creating the .wandb log", path, e))?;
        LogWriter::new(BufWriter::with_capacity(64 * 1024, file))
            .map_err(|e| Error::io("writing the .wandb header", path, e))
    }
}

impl<W: Write> LogWriter<W> {
    /// Wraps `out` (positioned at offset 0 of a new file) and writes the header.
    pub fn new(mut out: W) -> io::Result<Self> {
        out.write_all(&HEADER)?;
        Ok(LogWriter {
            out,
            offset: HEADER.len() as u64,
        })
    }

    /// Bytes written so far (the file's length once flushed).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Encodes and appends one record.
    pub fn write_record(&mut self, record: &Record) -> io::Result<()> {
        self.write_payload(&record.encode_to_vec())
    }

    /// Appends one raw payload, split into chunks as needed.
    pub fn write_payload(&mut self, payload: &[u8]) -> io::Result<()> {
        let mut rest = payload;
        let mut first = true;
        loop {
            let used = (self.offset % BLOCK_SIZE as u64) as usize;
            let left = BLOCK_SIZE - used;
            if left < CHUNK_HEADER {
                self.out.write_all(&[0u8; CHUNK_HEADER][..left])?;
                self.offset += left as u64;
                continue;
            }
            let avail = left - CHUNK_HEADER;
            let n = rest.len().min(avail);
            let last = n == rest.len();
            let kind = match (first, last) {
                (true, true) => FULL,
                (true, false) => FIRST,
                (false, true) => LAST,
                (false, false) => MIDDLE,
            };
            let (frag, tail) = rest.split_at(n);
            let mut head = [0u8; CHUNK_HEADER];
            head[..4].copy_from_slice(&chunk_crc(kind, frag).to_le_bytes());
            // n <= BLOCK_SIZE - 7 < 65536, so it fits a u16.
            head[4..6].copy_from_slice(&(n as u16).to_le_bytes());
            head[6] = kind;
            self.out.write_all(&head)?;
            self.out.write_all(frag)?;
            self.offset += (CHUNK_HEADER + n) as u64;
            rest = tail;
            first = false;
            if last {
                return Ok(());
            }
        }
    }

    /// Flushes buffered bytes to the underlying writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// The underlying writer.
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// Unwraps the writer (without flushing).
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Reads records from a `.wandb` transaction log, strictly: any CRC mismatch, bad chunk sequence,
/// bad header or truncation is an [`Error::Corrupt`] with the byte offset.
#[derive(Debug)]
pub struct LogReader<R: Read> {
    input: R,
    offset: u64,
    name: String,
    header_checked: bool,
}

impl LogReader<BufReader<File>> {
    /// Opens `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io("opening the .wandb log", path, e))?;
        Ok(LogReader::new(
            BufReader::with_capacity(64 * 1024, file),
            path.display().to_string(),
        ))
    }
}

/// Reads every record of the file at `path`.
pub fn read_records(path: &Path) -> Result<Vec<Record>> {
    let mut reader = LogReader::open(path)?;
    let mut out = Vec::new();
    while let Some(r) = reader.next_record()? {
        out.push(r);
    }
    Ok(out)
}

/// Reads exactly `buf.len()` bytes, or reports how many were available before EOF.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

impl<R: Read> LogReader<R> {
    /// Wraps `input` (positioned at offset 0); `name` names it in errors.
    pub fn new(input: R, name: impl Into<String>) -> Self {
        LogReader {
            input,
            offset: 0,
            name: name.into(),
            header_checked: false,
        }
    }

    fn corrupt(&self, offset: u64, message: impl Into<String>) -> Error {
        Error::Corrupt {
            file: self.name.clone(),
            offset,
            message: message.into(),
        }
    }

    fn io_err(&self, e: io::Error) -> Error {
        Error::Io {
            context: "reading the .wandb log",
            path: self.name.clone().into(),
            source: e,
        }
    }

    /// The next raw payload, `None` at a clean end of file.
    pub fn next_payload(&mut self) -> Result<Option<Vec<u8>>> {
        if !self.header_checked {
            let mut head = [0u8; 7];
            let n = read_full(&mut self.input, &mut head).map_err(|e| self.io_err(e))?;
            if n < head.len() || head[..6] != HEADER[..6] {
                return Err(self.corrupt(0, "not a .wandb file (bad header)"));
            }
            if head[6] != 0 {
                return Err(self.corrupt(6, format!("unsupported log version {}", head[6])));
            }
            self.offset = 7;
            self.header_checked = true;
        }
        let mut record: Option<Vec<u8>> = None;
        let mut record_start = self.offset;
        loop {
            let left = BLOCK_SIZE - (self.offset % BLOCK_SIZE as u64) as usize;
            if left < CHUNK_HEADER {
                let mut pad = [0u8; CHUNK_HEADER];
                let n = read_full(&mut self.input, &mut pad[..left]).map_err(|e| self.io_err(e))?;
                if n < left {
                    // The file may end inside a block's padding only if no record is open.
                    return match record {
                        None if n == 0 => Ok(None),
                        _ => Err(self.corrupt(self.offset, "unexpected end of file in padding")),
                    };
                }
                if pad[..left].iter().any(|&b| b != 0) {
                    return Err(self.corrupt(self.offset, "non-zero block padding"));
                }
                self.offset += left as u64;
                continue;
            }
            let chunk_at = self.offset;
            let mut head = [0u8; CHUNK_HEADER];
            let n = read_full(&mut self.input, &mut head).map_err(|e| self.io_err(e))?;
            if n == 0 && record.is_none() {
                return Ok(None);
            }
            if n < CHUNK_HEADER {
                return Err(self.corrupt(chunk_at, "unexpected end of file in a chunk header"));
            }
            let crc = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
            let len = usize::from(u16::from_le_bytes([head[4], head[5]]));
            let kind = head[6];
            if crc == 0 && len == 0 && kind == 0 {
                // Pre-allocated (zeroed) space: skip the rest of the block, as wandb does.
                let skip = left - CHUNK_HEADER;
                let mut sink = vec![0u8; skip];
                let got = read_full(&mut self.input, &mut sink).map_err(|e| self.io_err(e))?;
                self.offset += (CHUNK_HEADER + got) as u64;
                if got < skip {
                    return match record {
                        None => Ok(None),
                        Some(_) => Err(self.corrupt(chunk_at, "unexpected end of file")),
                    };
                }
                continue;
            }
            if CHUNK_HEADER + len > left {
                return Err(self.corrupt(
                    chunk_at,
                    format!("chunk length {len} crosses the block boundary"),
                ));
            }
            let mut payload = vec![0u8; len];
            let got = read_full(&mut self.input, &mut payload).map_err(|e| self.io_err(e))?;
            if got < len {
                return Err(self.corrupt(chunk_at, "unexpected end of file in a chunk"));
            }
            if chunk_crc(kind, &payload) != crc {
                return Err(self.corrupt(chunk_at, "CRC mismatch"));
            }
            self.offset += (CHUNK_HEADER + len) as u64;
            match (kind, record.as_mut()) {
                (FULL, None) => return Ok(Some(payload)),
                (FIRST, None) => {
                    record_start = chunk_at;
                    record = Some(payload);
                }
                (MIDDLE, Some(buf)) => buf.extend_from_slice(&payload),
                (LAST, Some(buf)) => {
                    buf.extend_from_slice(&payload);
                    return Ok(record);
                }
                (FULL | FIRST, Some(_)) => {
                    return Err(self.corrupt(
                        chunk_at,
                        format!("record started at {record_start} is not finished"),
                    ));
                }
                (MIDDLE | LAST, None) => {
                    return Err(self.corrupt(chunk_at, "continuation chunk without a first chunk"));
                }
                (other, _) => {
                    return Err(self.corrupt(chunk_at, format!("unknown chunk type {other}")));
                }
            }
        }
    }

    /// The next decoded record, `None` at a clean end of file.
    pub fn next_record(&mut self) -> Result<Option<Record>> {
        let at = self.offset;
        match self.next_payload()? {
            None => Ok(None),
            Some(p) => Record::decode(p.as_slice())
                .map(Some)
                .map_err(|e| self.corrupt(at, format!("undecodable record: {e}"))),
        }
    }

    /// Offset of the next byte to read.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

impl<R: Read> Iterator for LogReader<R> {
    type Item = Result<Record>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_all(payloads: &[Vec<u8>]) -> Vec<u8> {
        let mut w = LogWriter::new(Vec::new()).unwrap();
        for p in payloads {
            w.write_payload(p).unwrap();
        }
        w.into_inner()
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        let mut r = LogReader::new(bytes, "mem");
        let mut out = Vec::new();
        while let Some(p) = r.next_payload()? {
            out.push(p);
        }
        Ok(out)
    }

    #[test]
    fn golden_small_record() {
        let bytes = write_all(&[b"ab".to_vec()]);
        let crc = chunk_crc(1, b"ab").to_le_bytes();
        let mut want = HEADER.to_vec();
        want.extend_from_slice(&crc);
        want.extend_from_slice(&[2, 0, 1, b'a', b'b']);
        assert_eq!(bytes, want);
        // CRC-32/IEEE of [0x01, 'a', 'b'] (zlib.crc32(b"\x01ab")).
        assert_eq!(chunk_crc(1, b"ab"), 0x21d9_e9b7);
    }

    #[test]
    fn exactly_seven_bytes_left_gives_empty_first_chunk() {
        // Fill block 0 so that exactly 7 bytes remain: 7 (header) + 7 + n = 32768 - 7.
        let n = BLOCK_SIZE - 7 - 7 - 7;
        let bytes = write_all(&[vec![1u8; n], vec![2u8; 10]]);
        let at = BLOCK_SIZE - 7;
        assert_eq!(bytes[at + 4..at + 7], [0, 0, FIRST]);
        assert_eq!(bytes[BLOCK_SIZE + 6], LAST);
        assert_eq!(bytes.len(), BLOCK_SIZE + 7 + 10);
        assert_eq!(read_all(&bytes).unwrap(), vec![vec![1u8; n], vec![2u8; 10]]);
    }

    #[test]
    fn fewer_than_seven_bytes_are_zero_padded() {
        let n = BLOCK_SIZE - 7 - 7 - 3; // leaves 3 bytes
        let bytes = write_all(&[vec![1u8; n], vec![]]);
        assert_eq!(bytes[BLOCK_SIZE - 3..BLOCK_SIZE], [0, 0, 0]);
        assert_eq!(bytes[BLOCK_SIZE + 6], FULL);
        assert_eq!(bytes.len(), BLOCK_SIZE + 7);
        // Nothing is written after the last chunk, even when it ends near a block end.
        let only = write_all(&[vec![1u8; n]]);
        assert_eq!(only.len(), BLOCK_SIZE - 3);
        assert_eq!(read_all(&only).unwrap(), vec![vec![1u8; n]]);
    }

    #[test]
    fn flipped_bytes_are_reported() {
        let bytes = write_all(&[vec![7u8; 100_000], b"tail".to_vec()]);
        for at in [
            10usize,
            7,
            11,
            12,
            13,
            5000,
            BLOCK_SIZE + 3,
            bytes.len() - 1,
        ] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            assert!(read_all(&bad).is_err(), "flip at {at} went unnoticed");
        }
        let truncated = &bytes[..bytes.len() - 2];
        assert!(read_all(truncated).is_err());
    }
}
