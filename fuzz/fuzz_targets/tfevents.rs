//! The TensorBoard event-file reader (`RecordReader`, `read_events`, the `proto::Event` decoder).
//! The first byte picks the mode: odd reads the rest as a file (framing and CRCs fuzzed as they
//! are), even frames each `0xFF`-separated part as a record first (so mutations reach the event
//! decoder past the CRCs). Properties: whole records never hold more bytes than the input,
//! offsets are the framing's, the tail offset is inside the input, framed parts read back as
//! written, and decode → encode → decode is stable.
#![no_main]

use exptrack_tensorboard::record::{FOOTER_LEN, HEADER_LEN, frame_record};
use exptrack_tensorboard::{RecordReader, proto, read_events};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fn check_file(file: &[u8]) -> Vec<Vec<u8>> {
    let mut reader = RecordReader::new(file);
    let mut records = Vec::new();
    let mut expect_offset = 0u64;
    let mut total = 0usize;
    while let Ok(Some(r)) = reader.next_record() {
        assert_eq!(r.offset, expect_offset);
        expect_offset += (HEADER_LEN + FOOTER_LEN + r.data.len()) as u64;
        total += r.data.len();
        assert!(total <= file.len());
        records.push(r.data);
    }
    assert!(expect_offset <= file.len() as u64);
    if let Some(t) = reader.truncated_tail() {
        assert_eq!(t, expect_offset);
        assert!(t < file.len() as u64);
    }
    // The decoding reader agrees with the record reader on what decodes.
    if let Ok(events) = read_events(&mut RecordReader::new(file)) {
        assert_eq!(events.len(), records.len());
        for e in events {
            let once = e.event.encode_to_vec();
            let back = proto::Event::decode(once.as_slice()).expect("re-decode");
            assert_eq!(
                back.encode_to_vec(),
                once,
                "encode(decode(x)) is not stable"
            );
        }
    }
    records
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 1 {
        check_file(rest);
    } else {
        let parts: Vec<&[u8]> = rest.split(|&b| b == 0xFF).collect();
        let mut file = Vec::new();
        for p in &parts {
            frame_record(&mut file, p);
        }
        let records = check_file(&file);
        assert_eq!(records.len(), parts.len());
        for (r, p) in records.iter().zip(&parts) {
            assert_eq!(r.as_slice(), *p);
        }
        for p in &parts {
            let _ = proto::Event::decode(*p);
        }
    }
});
