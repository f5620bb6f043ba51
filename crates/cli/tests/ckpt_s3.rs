//! `exptrack ckpt list|verify|prune s3://bucket/prefix/<experiment_id>` against a real S3 server
//! (SeaweedFS, the checkpointer's test harness).
#![cfg(feature = "s3")]

#[path = "../../checkpointer/tests/common/seaweed.rs"]
mod seaweed;

use std::process::{Command, Output};

use exptrack_checkpoint::{Checkpoint, CheckpointConfig, ModelCheckpointer};

fn exptrack(server: &seaweed::Weed, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_exptrack"));
    cmd.args(args);
    for (k, v) in server.env() {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run exptrack");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains(seaweed::SECRET),
        "secret in the output: {text}"
    );
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn ckpt_list_verify_prune_on_s3() {
    let Some(server) = seaweed::Weed::start() else {
        return;
    };
    server.export_env();
    let root = server.url("cli");
    let config = CheckpointConfig {
        dir: root.clone().into(),
        monitor: Some("val_loss".into()),
        ..CheckpointConfig::default()
    };
    let mut c = ModelCheckpointer::open("exp-1", config).unwrap();
    for (step, loss) in [(1u64, 0.5), (2, 0.2), (3, 0.4), (4, 0.3)] {
        c.save(
            Checkpoint::new(step)
                .metric("val_loss", loss)
                .file("model.bpk", vec![step as u8; 4096]),
        )
        .unwrap();
    }
    drop(c);
    let url = format!("{root}/exp-1");

    let list = exptrack(&server, &["ckpt", "list", &url, "--json"]);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let text = v.to_string();
    for step in 1..=4 {
        assert!(text.contains(&format!("\"step\":{step}")), "{text}");
    }

    let verify = exptrack(&server, &["ckpt", "verify", &url]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(
        stdout(&verify).contains("4 checkpoint(s) verified, 0 corrupt"),
        "{}",
        stdout(&verify)
    );

    let dry = exptrack(
        &server,
        &["ckpt", "prune", &url, "--keep-last", "1", "--dry-run"],
    );
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    assert!(stdout(&dry).contains("would delete"), "{}", stdout(&dry));

    let prune = exptrack(&server, &["ckpt", "prune", &url, "--keep-last", "1"]);
    assert!(
        prune.status.success(),
        "{}",
        String::from_utf8_lossy(&prune.stderr)
    );
    // The recorded monitor keeps the best (step 2) besides the last (step 4).
    let r = ModelCheckpointer::open_read_only(
        "exp-1",
        CheckpointConfig {
            dir: root.into(),
            ..CheckpointConfig::default()
        },
    )
    .unwrap();
    let steps: Vec<u64> = r.list().iter().map(|i| i.step).collect();
    assert_eq!(steps, vec![2, 4]);

    let missing = exptrack(&server, &["ckpt", "list", "s3://exptrack-ckpt"]);
    assert!(!missing.status.success());
}
