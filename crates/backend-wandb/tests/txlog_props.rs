//! Framing properties of the `.wandb` log: random payload sizes up to 200 KiB, and sizes chosen to
//! end exactly on block boundaries or leave 0–8 bytes in a block, read back by our reader
//! (proptest, many cases) and by `wandb leet inspect` (a few files with every boundary case).

mod common;

use exptrack_wandb::proto::{FinalRecord, Record, RecordType};
use exptrack_wandb::txlog::{BLOCK_SIZE, CHUNK_HEADER, LogReader, LogWriter, read_records};
use proptest::prelude::*;
use prost::Message;

const MAX: usize = 200 * 1024;

/// How the next record's size is chosen.
#[derive(Debug, Clone)]
enum Size {
    /// This many payload bytes.
    Exact(usize),
    /// End the record leaving `k` bytes in its block, spanning `extra` more blocks.
    Leave { k: usize, extra: usize },
}

fn strategy() -> impl Strategy<Value = Vec<Size>> {
    let one = prop_oneof![
        (0..=MAX).prop_map(Size::Exact),
        (0usize..16).prop_map(Size::Exact),
        (0usize..=8, 0usize..=3).prop_map(|(k, extra)| Size::Leave { k, extra }),
    ];
    prop::collection::vec(one, 1..12)
}

/// The payload size that, written at `offset`, ends leaving `k` bytes in the block after
/// `extra` further blocks (or `None` if impossible from here).
fn size_leaving(offset: u64, k: usize, extra: usize) -> Option<usize> {
    let mut used = (offset % BLOCK_SIZE as u64) as usize;
    if BLOCK_SIZE - used < CHUNK_HEADER {
        used = 0; // padding comes first
    }
    let first_room = BLOCK_SIZE - used - CHUNK_HEADER;
    let room = if extra == 0 {
        first_room.checked_sub(k)?
    } else {
        first_room
            + (extra - 1) * (BLOCK_SIZE - CHUNK_HEADER)
            + (BLOCK_SIZE - CHUNK_HEADER).checked_sub(k)?
    };
    Some(room)
}

fn resolve(sizes: &[Size], mut offset: u64) -> Vec<usize> {
    let mut out = Vec::new();
    for s in sizes {
        let n = match s {
            Size::Exact(n) => *n,
            Size::Leave { k, extra } => size_leaving(offset, *k, *extra).unwrap_or(0),
        }
        .min(MAX);
        offset = advance(offset, n);
        out.push(n);
    }
    out
}

/// The writer's offset after a payload of `n` bytes written at `offset`.
fn advance(mut offset: u64, n: usize) -> u64 {
    let mut rest = n;
    loop {
        let left = BLOCK_SIZE - (offset % BLOCK_SIZE as u64) as usize;
        if left < CHUNK_HEADER {
            offset += left as u64;
            continue;
        }
        let frag = rest.min(left - CHUNK_HEADER);
        offset += (CHUNK_HEADER + frag) as u64;
        rest -= frag;
        if rest == 0 {
            return offset;
        }
    }
}

fn payload(i: usize, n: usize) -> Vec<u8> {
    (0..n).map(|j| (i * 31 + j * 7) as u8).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_sizes_round_trip(sizes in strategy()) {
        let sizes = resolve(&sizes, 7);
        let mut w = LogWriter::new(Vec::new()).unwrap();
        for (i, n) in sizes.iter().enumerate() {
            w.write_payload(&payload(i, *n)).unwrap();
            prop_assert_eq!(w.offset(), w.get_ref().len() as u64);
        }
        let bytes = w.into_inner();
        prop_assert_eq!(bytes.len() as u64, sizes.iter().fold(7, |o, n| advance(o, *n)));
        let mut r = LogReader::new(bytes.as_slice(), "mem");
        for (i, n) in sizes.iter().enumerate() {
            let got = r.next_payload().unwrap();
            prop_assert_eq!(got, Some(payload(i, *n)));
        }
        prop_assert_eq!(r.next_payload().unwrap(), None);
        // Truncating inside the last record is always detected.
        if let Some(&last) = sizes.last()
            && last > 0
        {
            {
                let cut = &bytes[..bytes.len() - 1];
                let mut r = LogReader::new(cut, "mem");
                let mut err = false;
                for _ in 0..sizes.len() {
                    match r.next_payload() {
                        Err(_) => { err = true; break; }
                        Ok(None) => break,
                        Ok(Some(_)) => {}
                    }
                }
                prop_assert!(err, "truncation not reported");
            }
        }
    }
}

/// A `final` record whose encoding is exactly `n` bytes (n ≥ 3), padded with `uuid`.
fn record_of_size(num: i64, n: usize) -> Record {
    for num in [num, 0] {
        for m in 0..n {
            let r = Record {
                num,
                record_type: Some(RecordType::Final(FinalRecord {})),
                uuid: "u".repeat(m),
            };
            if r.encoded_len() == n {
                return r;
            }
        }
    }
    panic!("no record of {n} bytes");
}

#[test]
fn wandb_leet_inspect_reads_every_boundary_case() {
    let Some(py) = common::peer_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    // Every "leave k bytes" case, inside one block and across 1–2 block boundaries, then random
    // sizes; spread over a few files to keep Python invocations few.
    let mut plans: Vec<Vec<Size>> = vec![Vec::new(), Vec::new(), Vec::new()];
    for k in 0..=8 {
        for (extra, plan) in plans.iter_mut().enumerate() {
            plan.push(Size::Leave { k, extra });
            plan.push(Size::Exact(20 + k));
        }
    }
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for _ in 0..12 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        plans[2].push(Size::Exact((seed % MAX as u64) as usize));
    }
    plans[0].push(Size::Exact(MAX));
    for (f, plan) in plans.iter().enumerate() {
        let path = tmp.path().join(format!("b{f}.wandb"));
        let mut w = LogWriter::create(&path).unwrap();
        let mut written = Vec::new();
        let mut offset = w.offset();
        for (i, s) in plan.iter().enumerate() {
            let n = resolve(std::slice::from_ref(s), offset)[0].max(3);
            let rec = record_of_size(i as i64 + 1, n);
            w.write_record(&rec).unwrap();
            offset = w.offset();
            written.push(rec);
        }
        w.flush().unwrap();
        drop(w);
        assert_eq!(read_records(&path).unwrap(), written);
        let inspect = common::leet_inspect(&py, tmp.path(), &path);
        assert!(
            inspect.ok,
            "leet inspect failed on {}: {}",
            path.display(),
            inspect.stderr
        );
        assert!(!inspect.stderr.contains("corrupt"), "{}", inspect.stderr);
        let nums: Vec<i64> = inspect
            .records
            .iter()
            .map(|r| r["num"].as_i64().unwrap())
            .collect();
        let want: Vec<i64> = written.iter().map(|r| r.num).collect();
        assert_eq!(nums, want, "file {f}");
        for r in &inspect.records {
            assert_eq!(r["type"], "final", "{r}");
        }
    }
}
