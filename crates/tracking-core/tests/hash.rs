//! Config hash properties: key order and layout do not matter; every value change does.

use exptrack_core::config::config_hash;
use proptest::prelude::*;

fn arb_leaf() -> impl Strategy<Value = toml::Value> {
    prop_oneof![
        any::<i64>().prop_map(toml::Value::Integer),
        (-1e9..1e9f64).prop_map(toml::Value::Float),
        "[a-z0-9 ]{0,8}".prop_map(toml::Value::String),
        any::<bool>().prop_map(toml::Value::Boolean),
    ]
}

fn arb_table() -> impl Strategy<Value = toml::Table> {
    let leaf_table = prop::collection::btree_map("[a-z]{1,6}", arb_leaf(), 1..6);
    prop::collection::btree_map("[a-z]{1,6}", leaf_table, 1..5).prop_map(|m| {
        let mut t = toml::Table::new();
        for (k, v) in m {
            t.insert(k, toml::Value::Table(v.into_iter().collect()));
        }
        t
    })
}

fn reversed(t: &toml::Table) -> toml::Table {
    // toml::Table keeps insertion order only with preserve_order; build the reverse order and
    // also round-trip through text so layout changes too.
    let mut out = toml::Table::new();
    for (k, v) in t.iter().rev() {
        let v = match v {
            toml::Value::Table(inner) => {
                let mut r = toml::Table::new();
                for (ik, iv) in inner.iter().rev() {
                    r.insert(ik.clone(), iv.clone());
                }
                toml::Value::Table(r)
            }
            other => other.clone(),
        };
        out.insert(k.clone(), v);
    }
    let text = toml::to_string(&out).unwrap();
    toml::from_str(&text).unwrap()
}

fn changed(v: &toml::Value) -> toml::Value {
    match v {
        toml::Value::Integer(i) => toml::Value::Integer(i.wrapping_add(1)),
        toml::Value::Float(f) => toml::Value::Float(if *f == 0.0 { 0.5 } else { f * 2.0 + 0.25 }),
        toml::Value::String(s) => toml::Value::String(format!("{s}x")),
        toml::Value::Boolean(b) => toml::Value::Boolean(!b),
        other => other.clone(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn key_order_and_layout_do_not_change_the_hash(t in arb_table()) {
        prop_assert_eq!(config_hash(&t, &[]), config_hash(&reversed(&t), &[]));
    }

    #[test]
    fn any_value_change_changes_the_hash(t in arb_table(), pick in any::<prop::sample::Index>()) {
        let leaves: Vec<(String, String)> = t
            .iter()
            .flat_map(|(k, v)| {
                v.as_table()
                    .map(|inner| inner.keys().map(|ik| (k.clone(), ik.clone())).collect::<Vec<_>>())
                    .unwrap_or_default()
            })
            .collect();
        let (sec, key) = &leaves[pick.index(leaves.len())];
        let mut t2 = t.clone();
        let inner = t2.get_mut(sec).and_then(|v| v.as_table_mut()).unwrap();
        let old = inner[key].clone();
        inner.insert(key.clone(), changed(&old));
        prop_assert_ne!(config_hash(&t, &[]), config_hash(&t2, &[]));
        // ... unless that key is excluded.
        let excl = vec![format!("{sec}.{key}")];
        prop_assert_eq!(config_hash(&t, &excl), config_hash(&t2, &excl));
    }
}

#[test]
fn known_hash_is_stable() {
    // Golden value: changing the canonical form would silently fork every experiment id.
    let t: toml::Table =
        toml::from_str("[experiment]\nname = \"x\"\n[training]\nlr = 0.1\nepochs = 3\n").unwrap();
    let h = config_hash(&t, &[]);
    assert_eq!(h.len(), 64);
    let canon = exptrack_core::config::canonical_string(&toml::Value::Table(t));
    assert_eq!(
        canon,
        r#"{"experiment":{"name":"x"},"training":{"epochs":3,"lr":0.1}}"#
    );
}
