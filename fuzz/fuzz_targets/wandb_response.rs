//! The W&B online client's response handling (GraphQL `UpsertBucket` / `CreateRunFiles` answers,
//! `file_stream` answers, upload URLs and headers) against a loopback HTTP server answering with
//! the fuzz input: `0xFF`-separated answers `<status byte><body>`, served in order, the last one
//! repeated. Also `parse_lenient` (W&B's JSON with NaN / Infinity) on each body. No panic, no
//! hang, no unbounded allocation.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use exptrack_fuzz::{answers_from, scratch, server, set_answers};
use exptrack_wandb::__fuzz::online_session;
use exptrack_wandb::parse_lenient;
use libfuzzer_sys::fuzz_target;

fn upload_file() -> &'static PathBuf {
    static F: OnceLock<PathBuf> = OnceLock::new();
    F.get_or_init(|| {
        let p = scratch("wandb").join("model.bin");
        std::fs::write(&p, b"weights").expect("write");
        p
    })
}

fuzz_target!(|data: &[u8]| {
    let answers = answers_from(data, 8);
    for a in &answers {
        if let Ok(text) = std::str::from_utf8(&a.body) {
            let _ = parse_lenient(text);
        }
    }
    set_answers(answers);
    let _ = online_session(server(), upload_file());
});
