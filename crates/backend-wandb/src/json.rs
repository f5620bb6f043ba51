//! Small JSON helpers producing the text wandb itself writes: non-finite floats as bare `NaN`,
//! `Infinity`, `-Infinity` (wandb's `value_json` and file_stream lines accept them).

use exptrack_core::ParamValue;

/// A float as JSON text; non-finite values become bare `NaN` / `Infinity` / `-Infinity`.
pub(crate) fn f64_json(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v == f64::INFINITY {
        "Infinity".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Infinity".to_owned()
    } else if v == v.trunc() && v.abs() < 1e15 {
        // Integral values print like wandb-core does ("3", not "3.0").
        format!("{}", v as i64)
    } else {
        serde_json::Number::from_f64(v)
            .map(|n| n.to_string())
            .unwrap_or_else(|| "NaN".to_owned())
    }
}

/// A JSON value as W&B JSON text (what `serde_json` writes; JSON numbers are always finite).
pub(crate) fn value_json(v: &serde_json::Value) -> String {
    v.to_string()
}

/// A string as a JSON string literal.
pub(crate) fn str_json(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// A parameter value as JSON text.
pub(crate) fn param_json(v: &ParamValue) -> String {
    match v {
        ParamValue::Str(s) => str_json(s),
        ParamValue::Int(i) => i.to_string(),
        ParamValue::Float(f) => f64_json(*f),
        ParamValue::Bool(b) => b.to_string(),
        #[allow(unreachable_patterns)]
        other => str_json(&other.to_string()),
    }
}

/// A TOML value as JSON text (datetimes become strings).
pub(crate) fn toml_json(v: &toml::Value) -> String {
    let mut out = String::new();
    write_toml(v, &mut out);
    out
}

fn write_toml(v: &toml::Value, out: &mut String) {
    match v {
        toml::Value::String(s) => out.push_str(&str_json(s)),
        toml::Value::Integer(i) => out.push_str(&i.to_string()),
        toml::Value::Float(f) => out.push_str(&f64_json(*f)),
        toml::Value::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        toml::Value::Datetime(d) => out.push_str(&str_json(&d.to_string())),
        toml::Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_toml(x, out);
            }
            out.push(']');
        }
        toml::Value::Table(t) => {
            out.push('{');
            for (i, (k, x)) in t.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&str_json(k));
                out.push(':');
                write_toml(x, out);
            }
            out.push('}');
        }
    }
}

/// `{"k1":v1,"k2":v2}` from keys and already-encoded JSON values.
pub(crate) fn object<'a>(items: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&str_json(k));
        out.push(':');
        out.push_str(v);
    }
    out.push('}');
    out
}

/// Parses wandb-flavoured JSON (bare `NaN`, `Infinity`, `-Infinity` allowed) into a
/// [`serde_json::Value`], mapping non-finite numbers to the strings `"NaN"`, `"Infinity"`,
/// `"-Infinity"`.
pub fn parse_lenient(text: &str) -> Result<serde_json::Value, serde_json::Error> {
    match serde_json::from_str(text) {
        Ok(v) => Ok(v),
        Err(e) => {
            if !(text.contains("NaN") || text.contains("Infinity")) {
                return Err(e);
            }
            serde_json::from_str(&quote_non_finite(text))
        }
    }
}

/// Replaces bare `NaN` / `Infinity` / `-Infinity` tokens outside strings by quoted strings.
fn quote_non_finite(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut in_str = false;
    let mut escaped = false;
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        let Some(c) = rest.chars().next() else { break };
        if in_str {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_str = false;
            }
        } else if c == '"' {
            in_str = true;
        } else if let Some(tok) = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|t| rest.starts_with(t))
        {
            out.push('"');
            out.push_str(tok);
            out.push('"');
            i += tok.len();
            continue;
        }
        out.push(c);
        i += c.len_utf8();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats() {
        assert_eq!(f64_json(1.0), "1");
        assert_eq!(f64_json(-0.5), "-0.5");
        assert_eq!(f64_json(f64::NAN), "NaN");
        assert_eq!(f64_json(f64::NEG_INFINITY), "-Infinity");
        assert_eq!(f64_json(1e300), "1e+300");
        assert_eq!(f64_json(0.1), "0.1");
    }

    #[test]
    fn lenient() {
        let v = parse_lenient(r#"{"a":NaN,"b":"NaN x","c":[-Infinity,1],"d":"é"}"#).unwrap();
        assert_eq!(v["a"], "NaN");
        assert_eq!(v["b"], "NaN x");
        assert_eq!(v["c"][0], "-Infinity");
        assert_eq!(v["d"], "é");
    }
}
