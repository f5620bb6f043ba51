//! Property: random sequences of saves with random metrics under random policies keep exactly the set
//! the policy defines (computed here independently from the whole history), with the best among them.

use std::collections::BTreeSet;

use exptrack_checkpoint::{Checkpoint, CheckpointConfig, Mode, ModelCheckpointer};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Policy {
    last: Option<usize>,
    keep_best: Option<usize>,
    monitor: bool,
    max: bool,
    every: Option<u64>,
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        proptest::option::of(1usize..5),
        proptest::option::of(0usize..4),
        any::<bool>(),
        any::<bool>(),
        proptest::option::of(1u64..6),
    )
        .prop_map(|(last, keep_best, monitor, max, every)| Policy {
            last,
            keep_best: if monitor { keep_best } else { None },
            monitor,
            max,
            every,
        })
}

/// (gap to the previous step, metric: None = absent, Some(NaN) possible, quantised for ties, async?)
fn saves() -> impl Strategy<Value = Vec<(u64, Option<f64>, bool)>> {
    proptest::collection::vec(
        (
            1u64..4,
            prop_oneof![
                1 => Just(None),
                1 => Just(Some(f64::NAN)),
                8 => (0u32..8).prop_map(|q| Some(f64::from(q) / 4.0)),
            ],
            any::<bool>(),
        ),
        1..24,
    )
}

/// The set the policy defines over the full history, written without the crate's code.
fn expected(p: &Policy, history: &[(u64, Option<f64>)]) -> (BTreeSet<u64>, Option<u64>) {
    let all: BTreeSet<u64> = history.iter().map(|(s, _)| *s).collect();
    let mut ranked: Vec<(f64, u64)> = history
        .iter()
        .filter_map(|(s, v)| v.filter(|v| !v.is_nan()).map(|v| (v, *s)))
        .collect();
    ranked.sort_by(|a, b| {
        let v = if p.max {
            b.0.partial_cmp(&a.0).unwrap()
        } else {
            a.0.partial_cmp(&b.0).unwrap()
        };
        v.then(a.1.cmp(&b.1))
    });
    let best = if p.monitor {
        ranked.first().map(|(_, s)| *s)
    } else {
        None
    };
    // From CheckpointConfig's documentation, not from its code: only `max_checkpoints`,
    // `keep_best >= 1` and `keep_every` are rules; `monitor` alone defines the best checkpoint and
    // deletes nothing.
    let k = if p.monitor {
        p.keep_best.unwrap_or(0)
    } else {
        0
    };
    let has_rules = p.last.is_some() || k > 0 || p.every.is_some();
    if !has_rules {
        return (all, best);
    }
    let mut keep = BTreeSet::new();
    keep.insert(*all.iter().max().unwrap());
    keep.extend(best);
    if let Some(n) = p.last {
        keep.extend(all.iter().rev().take(n));
    }
    keep.extend(ranked.iter().take(k).map(|(_, s)| *s));
    if let Some(n) = p.every {
        keep.extend(all.iter().filter(|s| *s % n == 0));
    }
    (keep, best)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn retention_keeps_exactly_the_policy_set(p in policy(), ops in saves()) {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = CheckpointConfig {
            dir: tmp.path().to_owned(),
            max_checkpoints: p.last,
            keep_best: p.keep_best,
            monitor: p.monitor.then(|| "val_loss".to_owned()),
            mode: if p.max { Mode::Max } else { Mode::Min },
            keep_every: p.every,
            fsync: false,
            max_in_flight: 2,
            ..CheckpointConfig::default()
        };
        let mut c = ModelCheckpointer::open("exp", cfg.clone()).unwrap();
        let mut history = Vec::new();
        let mut step = 0;
        for (gap, metric, use_async) in ops {
            step += gap;
            let mut ck = Checkpoint::new(step).file("m", step.to_le_bytes().to_vec()).metric("train_loss", 1.0);
            if let Some(v) = metric {
                ck = ck.metric("val_loss", v);
            }
            if use_async { c.save_async(ck).unwrap() } else { c.save(ck).map(|_| ()).unwrap() }
            history.push((step, metric));
            if !use_async {
                let (keep, best) = expected(&p, &history);
                let got: BTreeSet<u64> = c.list().iter().map(|i| i.step).collect();
                prop_assert_eq!(&got, &keep);
                prop_assert_eq!(c.best().map(|i| i.step), best);
            }
        }
        c.wait().unwrap();
        let (keep, best) = expected(&p, &history);
        let got: BTreeSet<u64> = c.list().iter().map(|i| i.step).collect();
        prop_assert_eq!(&got, &keep);
        prop_assert_eq!(c.best().map(|i| i.step), best);
        if let Some(b) = best { prop_assert!(got.contains(&b)); }
        drop(c);
        // The directories agree after a reopen.
        let c = ModelCheckpointer::open("exp", cfg).unwrap();
        let got: BTreeSet<u64> = c.list().iter().map(|i| i.step).collect();
        prop_assert_eq!(&got, &keep);
    }
}
