//! The `.wandb` transaction-log reader (`txlog::LogReader`, the `proto::Record` decoder). The first
//! byte picks the mode: odd reads the rest as a file (header, chunking and CRCs fuzzed as they
//! are), even writes each `0xFF`-separated part as a record with `LogWriter` first (so mutations
//! reach the record decoder past the CRCs). Properties: payloads never hold more bytes than the
//! input, the offset never passes the input's end, written payloads read back as written, and
//! decode → encode → decode is stable.
#![no_main]

use exptrack_wandb::proto::Record;
use exptrack_wandb::txlog::{LogReader, LogWriter};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fn check_file(file: &[u8]) -> Vec<Vec<u8>> {
    let mut reader = LogReader::new(file, "fuzz.wandb");
    let mut payloads = Vec::new();
    let mut total = 0usize;
    while let Ok(Some(p)) = reader.next_payload() {
        total += p.len();
        assert!(total <= file.len());
        assert!(reader.offset() <= file.len() as u64);
        payloads.push(p);
    }
    assert!(reader.offset() <= file.len() as u64);
    for p in &payloads {
        if let Ok(r) = Record::decode(p.as_slice()) {
            let once = r.encode_to_vec();
            let back = Record::decode(once.as_slice()).expect("re-decode");
            assert_eq!(
                back.encode_to_vec(),
                once,
                "encode(decode(x)) is not stable"
            );
        }
    }
    // The record iterator sees the same payloads (or stops at an undecodable one).
    let mut n = 0;
    for r in LogReader::new(file, "fuzz.wandb") {
        if r.is_err() {
            break;
        }
        n += 1;
    }
    assert!(n <= payloads.len());
    payloads
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 1 {
        check_file(rest);
    } else {
        let parts: Vec<&[u8]> = rest.split(|&b| b == 0xFF).collect();
        let mut w = LogWriter::new(Vec::new()).expect("vec writer");
        for p in &parts {
            w.write_payload(p).expect("vec writer");
        }
        let file = w.into_inner();
        let payloads = check_file(&file);
        assert_eq!(payloads.len(), parts.len());
        for (got, want) in payloads.iter().zip(&parts) {
            assert_eq!(got.as_slice(), *want);
        }
    }
});
