//! `checkpoint.json` and `registry.json` as `ModelCheckpointer` reads them: opened read-only and
//! for writing (reconcile, registry rebuilt), every checkpoint listed, loaded, verified. The input
//! is `checkpoint.json 0xFF registry.json 0xFF content of model.bin` for the checkpoint directory
//! `ckpt-000000000001`.
//!
//! Properties: no panic, no allocation beyond what the input allows (libFuzzer's malloc limit);
//! a load never returns more raw bytes than are on disk, nor a file from outside the checkpoint
//! directory; the writer's reconcile and a second open agree with the read-only view.
#![no_main]

use exptrack_checkpoint::{CheckpointConfig, Encoding, ModelCheckpointer};
use exptrack_fuzz::{scratch, split};
use libfuzzer_sys::fuzz_target;

const EXP: &str = "exp";

fn steps(c: &ModelCheckpointer) -> Vec<u64> {
    c.list().iter().map(|i| i.step).collect()
}

fn exercise(c: &ModelCheckpointer, on_disk: usize, load: bool) {
    for info in c.list() {
        let _ = c.verify(info.step);
        if !load {
            continue;
        }
        if let Ok(loaded) = c.load(info.step) {
            let mut raw = 0usize;
            for f in &info.files {
                let name = std::path::Path::new(&f.name);
                assert!(
                    name.components().count() == 1
                        && matches!(
                            name.components().next(),
                            Some(std::path::Component::Normal(_))
                        ),
                    "loaded {:?}, which is not a file inside the checkpoint directory",
                    f.name
                );
                let bytes = &loaded.files[&f.name];
                assert_eq!(bytes.len() as u64, f.size);
            }
            // Each distinct raw file once (a name listed twice is read twice from one file).
            let raw_names: std::collections::BTreeSet<&str> = info
                .files
                .iter()
                .filter(|f| f.encoding == Encoding::Raw)
                .map(|f| f.name.as_str())
                .collect();
            raw += raw_names
                .iter()
                .map(|n| loaded.files[*n].len())
                .sum::<usize>();
            assert!(
                raw <= on_disk,
                "{raw} raw bytes loaded from {on_disk} on disk"
            );
        }
        for f in &info.files {
            let _ = c.load_file(info.step, &f.name);
        }
    }
    if load {
        let _ = c.load_latest_valid();
    }
    let _ = c.best();
    let _ = c.prune_plan();
}

fuzz_target!(|data: &[u8]| {
    let parts = split(data, 0xFF, 3);
    let [ckpt_json, registry, model] = [0, 1, 2].map(|i| parts.get(i).copied().unwrap_or_default());
    let root = scratch("ckpt");
    let exp = root.join(EXP);
    let ck = exp.join("ckpt-000000000001");
    std::fs::create_dir_all(&ck).expect("mkdir");
    std::fs::write(ck.join("checkpoint.json"), ckpt_json).expect("write");
    std::fs::write(ck.join("model.bin"), model).expect("write");
    if !registry.is_empty() {
        std::fs::write(exp.join("registry.json"), registry).expect("write");
    }
    let on_disk = data.len();
    let load = true;
    let config = CheckpointConfig {
        dir: root.clone(),
        fsync: false,
        monitor: Some("val_loss".into()),
        ..CheckpointConfig::default()
    };
    let ro = ModelCheckpointer::open_read_only(EXP, config.clone()).expect("read-only open");
    exercise(&ro, on_disk, load);
    let ro_steps = steps(&ro);
    drop(ro);
    let rw = match ModelCheckpointer::open(EXP, config.clone()) {
        Ok(c) => c,
        Err(e) => panic!("writer open failed where the read-only open worked: {e}"),
    };
    assert_eq!(steps(&rw), ro_steps);
    exercise(&rw, on_disk, load);
    drop(rw);
    let again = ModelCheckpointer::open(EXP, config).expect("second open");
    assert_eq!(steps(&again), ro_steps);
    assert!(
        again.reconcile_report().rebuilt.is_empty(),
        "the rewritten registry.json was not read back"
    );
});
