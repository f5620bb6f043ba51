//! The S3 server SIGKILLed and restarted during a save: the save either commits after the
//! restart (the client retries with backoff) or reports an error; nothing committed is lost.
//! Its own server (it is killed), so its own test binary.
#![cfg(feature = "s3")]

mod common;

use std::time::Duration;

use common::payload;
use common::seaweed::Weed;
use exptrack_checkpoint::{Checkpoint, CheckpointConfig, ModelCheckpointer};

#[test]
fn server_killed_and_restarted_during_a_save() {
    let Some(mut server) = Weed::start() else {
        return;
    };
    server.export_env();
    let config = CheckpointConfig {
        dir: server.url("restart").into(),
        ..CheckpointConfig::default()
    };
    let mut c = ModelCheckpointer::open("exp", config.clone()).unwrap();
    c.save(Checkpoint::new(1).file("model.bpk", payload(1 << 20, 1, false)))
        .unwrap();
    let big = payload(96 << 20, 2, false);
    c.save_async(Checkpoint::new(2).file("model.bpk", big.clone()))
        .unwrap();
    std::thread::sleep(Duration::from_millis(150));
    server.kill();
    std::thread::sleep(Duration::from_secs(2));
    server.restart();
    let outcome = c.wait();
    eprintln!("save across the restart: {outcome:?}");
    let r = ModelCheckpointer::open_read_only("exp", config).unwrap();
    let steps: Vec<u64> = r.list().iter().map(|i| i.step).collect();
    assert!(steps.contains(&1), "committed step 1 lost: {steps:?}");
    assert_eq!(
        r.load_file(1, "model.bpk").unwrap(),
        payload(1 << 20, 1, false)
    );
    match outcome {
        Ok(()) => {
            assert_eq!(steps, vec![1, 2]);
            assert_eq!(r.load_file(2, "model.bpk").unwrap(), big);
        }
        Err(e) => {
            assert_eq!(steps, vec![1], "a failed save is not visible ({e})");
        }
    }
}
