//! Reading event files back: CRC-verified records, decoded [`Event`](crate::proto::Event)s.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use prost::Message;

use crate::error::{Corruption, Error, Result};
use crate::proto;
use crate::record::{FOOTER_LEN, HEADER_LEN, masked_crc32c};

/// One framed record: its data and where it starts in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Byte offset of the record's first header byte.
    pub offset: u64,
    /// The record data (a serialized `Event` in event files).
    pub data: Vec<u8>,
}

/// Reads TFRecord-framed records, verifying both CRCs of each.
///
/// A record cut short by the end of input (a writer that is still writing, or crashed) ends the
/// iteration without an error; [`truncated_tail`](RecordReader::truncated_tail) then tells where the
/// incomplete record starts. A CRC mismatch is an [`Error::Corrupt`] with the record's offset, after
/// which the reader yields nothing more (the framing cannot be trusted past a bad length).
#[derive(Debug)]
pub struct RecordReader<R> {
    inner: R,
    path: PathBuf,
    offset: u64,
    truncated_tail: Option<u64>,
    done: bool,
}

impl<R: Read> RecordReader<R> {
    /// A reader over `inner`; errors name no path.
    pub fn new(inner: R) -> Self {
        Self::with_path(inner, PathBuf::new())
    }

    /// A reader over `inner` whose errors name `path`.
    pub fn with_path(inner: R, path: impl Into<PathBuf>) -> Self {
        RecordReader {
            inner,
            path: path.into(),
            offset: 0,
            truncated_tail: None,
            done: false,
        }
    }

    /// Offset of the next record (the number of bytes consumed by whole records).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Where an incomplete last record starts, once the reader has reached it.
    pub fn truncated_tail(&self) -> Option<u64> {
        self.truncated_tail
    }

    /// The next record, `Ok(None)` at the end of input (or at an incomplete last record).
    pub fn next_record(&mut self) -> Result<Option<Record>> {
        if self.done {
            return Ok(None);
        }
        let start = self.offset;
        let mut header = [0u8; HEADER_LEN];
        let got = self.read_full(&mut header)?;
        if got == 0 {
            self.done = true;
            return Ok(None);
        }
        if got < HEADER_LEN {
            return Ok(self.truncated(start));
        }
        let mut len_bytes = [0u8; 8];
        len_bytes.copy_from_slice(&header[..8]);
        let mut crc_bytes = [0u8; 4];
        crc_bytes.copy_from_slice(&header[8..]);
        if masked_crc32c(&len_bytes) != u32::from_le_bytes(crc_bytes) {
            return Err(self.corrupt(start, Corruption::LengthCrc));
        }
        let len = u64::from_le_bytes(len_bytes);
        let mut data = Vec::new();
        // `take` bounds the read, so a huge (CRC-valid) length cannot allocate more than the input.
        let got = (&mut self.inner)
            .take(len)
            .read_to_end(&mut data)
            .map_err(|e| Error::io("reading event file", &self.path, e))?;
        if (got as u64) < len {
            return Ok(self.truncated(start));
        }
        let mut footer = [0u8; FOOTER_LEN];
        if self.read_full(&mut footer)? < FOOTER_LEN {
            return Ok(self.truncated(start));
        }
        if masked_crc32c(&data) != u32::from_le_bytes(footer) {
            return Err(self.corrupt(start, Corruption::DataCrc));
        }
        self.offset = start + (HEADER_LEN + FOOTER_LEN) as u64 + len;
        Ok(Some(Record {
            offset: start,
            data,
        }))
    }

    fn truncated(&mut self, start: u64) -> Option<Record> {
        self.done = true;
        self.truncated_tail = Some(start);
        None
    }

    fn corrupt(&mut self, offset: u64, corruption: Corruption) -> Error {
        self.done = true;
        Error::Corrupt {
            path: self.path.clone(),
            offset,
            corruption,
        }
    }

    /// Reads until `buf` is full or the input ends; returns the bytes read.
    fn read_full(&mut self, buf: &mut [u8]) -> Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.inner.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.done = true;
                    return Err(Error::io("reading event file", &self.path, e));
                }
            }
        }
        Ok(filled)
    }
}

impl<R: Read> Iterator for RecordReader<R> {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}

/// One decoded event and where its record starts.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    /// Byte offset of the record in its file.
    pub offset: u64,
    /// The decoded event.
    pub event: proto::Event,
}

/// The whole content of one event file.
#[derive(Debug, Clone, PartialEq)]
pub struct EventFile {
    /// The file.
    pub path: PathBuf,
    /// Every whole record, decoded, in file order.
    pub events: Vec<EventRecord>,
    /// Where an incomplete last record starts, if the file ends in one.
    pub truncated_tail: Option<u64>,
}

/// Decodes the records of `reader` into events (stops at the first corrupt record with its error).
pub fn read_events<R: Read>(reader: &mut RecordReader<R>) -> Result<Vec<EventRecord>> {
    let mut events = Vec::new();
    while let Some(record) = reader.next_record()? {
        let event =
            proto::Event::decode(record.data.as_slice()).map_err(|source| Error::Decode {
                path: reader.path.clone(),
                offset: record.offset,
                source,
            })?;
        events.push(EventRecord {
            offset: record.offset,
            event,
        });
    }
    Ok(events)
}

/// Reads and decodes a whole event file, verifying every CRC.
///
/// A truncated tail is not an error (see [`EventFile::truncated_tail`]); a CRC mismatch is an
/// [`Error::Corrupt`] carrying the byte offset of the bad record, an undecodable record an
/// [`Error::Decode`].
pub fn read_event_file(path: impl AsRef<Path>) -> Result<EventFile> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|e| Error::io("opening event file", path, e))?;
    let mut reader = RecordReader::with_path(BufReader::with_capacity(1 << 16, file), path);
    let events = read_events(&mut reader)?;
    Ok(EventFile {
        path: path.to_path_buf(),
        events,
        truncated_tail: reader.truncated_tail(),
    })
}

/// The event files directly inside `dir` (names containing `tfevents`), sorted by name, which is
/// creation order for files written by one host.
pub fn event_files(dir: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
    let dir = dir.as_ref();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("listing event files", dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("listing event files", dir, e))?;
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        if is_file && entry.file_name().to_string_lossy().contains("tfevents") {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}
