//! The `events.jsonl` readers of the local run store: the scanner (`RunReader::events`,
//! `last_seq`), the resume path that cuts a torn tail off before appending (`RunWriter::open`),
//! and the tail reader that replays the log to backends (`LogTail`). The first byte picks the
//! replay window and batch size; the rest is the log.
//!
//! Properties: the scanner numbers events 1, 2, …; resuming keeps exactly the events the scanner
//! saw and appends after them (a second scan sees them plus the new one); the tail reader, read
//! in batches, returns the same events as the scanner whenever the whole log is valid.
#![no_main]

use exptrack_core::__fuzz::{open_resumed, tail_read};
use exptrack_core::store::RunReader;
use exptrack_core::{Event, now_ms};
use exptrack_fuzz::scratch;
use libfuzzer_sys::fuzz_target;

fn json(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| serde_json::to_string(e).expect("event serializes"))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, log)) = data.split_first() else {
        return;
    };
    let from = 1 + u64::from(sel & 3);
    let max = 1 + usize::from((sel >> 2) & 3);
    let dir = scratch("run");
    let path = dir.join("events.jsonl");
    std::fs::write(dir.join("metadata.json"), b"{}").expect("write metadata");
    std::fs::write(&path, log).expect("write log");

    let reader = RunReader::open(&dir).expect("run dir");
    let scanned = reader.events();
    let last = reader.last_seq();
    let tailed = tail_read(&path, from, u64::MAX, max);
    match (&scanned, &last) {
        (Ok(ev), Ok(l)) => {
            assert_eq!(*l, ev.len() as u64);
            for (i, (seq, _)) in ev.iter().enumerate() {
                assert_eq!(*seq, i as u64 + 1);
            }
        }
        (Err(_), Err(_)) => {}
        (s, l) => panic!(
            "events() and last_seq() disagree: {:?} vs {l:?}",
            s.as_ref().map(Vec::len)
        ),
    }

    let extra = Event::Text {
        step: 7,
        timestamp_ms: now_ms(),
        tag: "fuzz".into(),
        text: "appended".into(),
    };
    let resumed = open_resumed(&dir, std::slice::from_ref(&extra));
    let Ok(scanned) = scanned else {
        assert!(
            resumed.is_err(),
            "resume accepted a log the scanner rejects"
        );
        return;
    };
    let n = scanned.len() as u64;
    let resumed_last = resumed.expect("resume of a log the scanner accepts");
    assert_eq!(resumed_last, n + 1);

    let after = std::fs::read(&path).expect("read log");
    let kept = after.len()
        - after
            .iter()
            .rev()
            .skip(1)
            .position(|&b| b == b'\n')
            .map_or(after.len(), |p| p + 1);
    // The repaired log is a prefix of the original (whole lines) plus the appended line.
    assert!(kept <= log.len());
    assert_eq!(&after[..kept], &log[..kept]);
    assert!(kept == 0 || log[kept - 1] == b'\n');
    let rescanned = RunReader::open(&dir)
        .expect("run dir")
        .events()
        .expect("scan repaired log");
    assert_eq!(rescanned.len() as u64, n + 1);
    let before: Vec<Event> = scanned.into_iter().map(|(_, e)| e).collect();
    let now: Vec<Event> = rescanned.into_iter().map(|(_, e)| e).collect();
    assert_eq!(json(&before), json(&now[..before.len()]));
    assert_eq!(
        json(&now[before.len()..]),
        json(std::slice::from_ref(&extra))
    );

    if kept == log.len() {
        // Nothing was cut: the whole log is valid, so the tail reader must agree with the scanner.
        let tailed = tailed.expect("tail reader fails on a valid log");
        let want: Vec<Event> = before.into_iter().skip((from - 1) as usize).collect();
        assert_eq!(json(&tailed), json(&want));
    }
});
