//! The config hash: sha256 of a canonical serialization of the document, independent of TOML
//! layout, so the same settings give the same experiment id.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

/// sha256 (hex) of the canonical form of `doc` without the dotted keys in `exclude`.
///
/// The canonical form sorts table keys, writes integers in decimal, writes floats with an integral
/// value below 2^53 as integers (so `1` and `1.0` hash alike) and others in shortest round-trip form,
/// and does not depend on TOML layout (inline vs standard tables, quoting, whitespace, comments).
pub fn config_hash(doc: &toml::Table, exclude: &[String]) -> String {
    let mut doc = doc.clone();
    for key in exclude {
        remove_dotted(&mut doc, key);
    }
    let canonical = canonical_string(&toml::Value::Table(doc));
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

fn remove_dotted(table: &mut toml::Table, dotted: &str) {
    let mut parts = dotted.split('.').peekable();
    let mut cur = table;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            cur.remove(part);
            return;
        }
        match cur.get_mut(part).and_then(|v| v.as_table_mut()) {
            Some(t) => cur = t,
            None => return,
        }
    }
}

/// The canonical serialization hashed by [`config_hash`].
pub fn canonical_string(v: &toml::Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &toml::Value, out: &mut String) {
    match v {
        toml::Value::String(s) => write_json_str(s, out),
        toml::Value::Integer(i) => {
            let _ = write!(out, "{i}");
        }
        toml::Value::Float(f) => write_float(*f, out),
        toml::Value::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        toml::Value::Datetime(d) => {
            out.push_str("dt:");
            write_json_str(&d.to_string(), out);
        }
        toml::Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        toml::Value::Table(t) => {
            let mut keys: Vec<&String> = t.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_str(k, out);
                out.push(':');
                if let Some(x) = t.get(*k) {
                    write_canonical(x, out);
                }
            }
            out.push('}');
        }
    }
}

fn write_float(f: f64, out: &mut String) {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if f.is_nan() {
        out.push_str("nan");
    } else if f.is_infinite() {
        out.push_str(if f > 0.0 { "inf" } else { "-inf" });
    } else if f == 0.0 {
        out.push('0'); // -0.0 and 0.0 alike
    } else if f.fract() == 0.0 && f.abs() < EXACT {
        let _ = write!(out, "{}", f as i64);
    } else {
        let _ = write!(out, "{f:?}");
    }
}

fn write_json_str(s: &str, out: &mut String) {
    out.push_str(&serde_json::Value::String(s.to_owned()).to_string());
}
