//! MLflow's key rules (`mlflow/utils/validation.py`) and the value length limits.

/// Longest metric/param/tag key.
pub const MAX_KEY_LENGTH: usize = 250;
/// Longest param value (the server truncates longer ones silently).
pub const MAX_PARAM_VALUE_LENGTH: usize = 6000;
/// Longest tag value (the server truncates longer ones silently).
pub const MAX_TAG_VALUE_LENGTH: usize = 8000;
/// Metrics per `log-batch` request.
pub const MAX_METRICS_PER_BATCH: usize = 1000;
/// Params per `log-batch` request.
pub const MAX_PARAMS_PER_BATCH: usize = 100;
/// Tags per `log-batch` request.
pub const MAX_TAGS_PER_BATCH: usize = 100;
/// Metrics + params + tags per `log-batch` request.
pub const MAX_ENTITIES_PER_BATCH: usize = 1000;

/// Python's `\w` (Unicode word characters) plus MLflow's `/ . - space :`.
fn allowed_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '/' | '.' | '-' | ' ' | ':')
}

/// `posixpath.normpath`.
pub(crate) fn posix_normpath(path: &str) -> String {
    if path.is_empty() {
        return ".".to_owned();
    }
    let initial = if path.starts_with('/') {
        if path.starts_with("//") && !path.starts_with("///") {
            2
        } else {
            1
        }
    } else {
        0
    };
    let mut out: Vec<&str> = Vec::new();
    for comp in path.split('/') {
        if comp.is_empty() || comp == "." {
            continue;
        }
        if comp != ".." || (initial == 0 && out.is_empty()) || out.last() == Some(&"..") {
            out.push(comp);
        } else if !out.is_empty() {
            out.pop();
        }
    }
    let joined = out.join("/");
    let s = format!("{}{joined}", "/".repeat(initial));
    if s.is_empty() { ".".to_owned() } else { s }
}

/// Why `key` is not a valid MLflow key, or `None` if it is.
pub fn key_problem(key: &str) -> Option<String> {
    if key.chars().count() > MAX_KEY_LENGTH {
        return Some(format!(
            "longer than {MAX_KEY_LENGTH} characters ({})",
            key.chars().count()
        ));
    }
    if let Some(c) = key.chars().find(|c| !allowed_char(*c)) {
        return Some(format!(
            "character {c:?} is not allowed (names may only contain alphanumerics, underscores, dashes, periods, spaces, colons and slashes)"
        ));
    }
    let norm = posix_normpath(key);
    if norm != key || norm == "." || norm.starts_with("..") || norm.starts_with('/') {
        return Some(format!(
            "names are treated as file paths and must not resolve to another name (this one resolves to {norm:?})"
        ));
    }
    None
}

/// Whether `key` is a valid MLflow metric/param/tag key.
pub fn is_valid_key(key: &str) -> bool {
    key_problem(key).is_none()
}

/// A valid key close to `key`: invalid characters become `_`, empty and `.` path components are
/// dropped, `..` becomes `__`, and the result is cut to 250 characters. Valid keys are returned
/// unchanged.
pub fn sanitize_key(key: &str) -> String {
    if is_valid_key(key) {
        return key.to_owned();
    }
    let replaced: String = key
        .chars()
        .map(|c| if allowed_char(c) { c } else { '_' })
        .collect();
    let mut s = normalize_components(&replaced);
    if s.chars().count() > MAX_KEY_LENGTH {
        let cut: String = s.chars().take(MAX_KEY_LENGTH).collect();
        s = normalize_components(&cut);
    }
    s
}

fn normalize_components(s: &str) -> String {
    let parts: Vec<String> = s
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(|c| {
            if c == ".." {
                "__".to_owned()
            } else {
                c.to_owned()
            }
        })
        .collect();
    let mut out = parts.join("/");
    if out.starts_with("..") {
        out.insert(0, '_');
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// `value` cut to `max` characters, and whether it was cut.
pub(crate) fn truncate_chars(value: &str, max: usize) -> (&str, bool) {
    match value.char_indices().nth(max) {
        None => (value, false),
        Some((i, _)) => (&value[..i], true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normpath_matches_python() {
        for (i, o) in [
            ("", "."),
            (".", "."),
            ("a/b", "a/b"),
            ("a//b", "a/b"),
            ("a/./b", "a/b"),
            ("a/b/", "a/b"),
            ("a/../b", "b"),
            ("../a", "../a"),
            ("/a/b", "/a/b"),
            ("//a", "//a"),
            ("///a", "/a"),
            ("/..", "/"),
            ("a/..", "."),
            ("../..", "../.."),
        ] {
            assert_eq!(posix_normpath(i), o, "{i:?}");
        }
    }

    #[test]
    fn key_rules() {
        for ok in [
            "loss",
            "train/loss",
            "a b:c-d.e_f",
            "über/größe",
            "..a/b".trim_start_matches('.'),
        ] {
            assert!(is_valid_key(ok), "{ok:?}: {:?}", key_problem(ok));
        }
        for bad in [
            "",
            ".",
            "a/../b",
            "/abs",
            "a//b",
            "a/",
            "..x",
            "a@b",
            "loss%",
            "tab\there",
            "x\n",
        ] {
            assert!(!is_valid_key(bad), "{bad:?}");
        }
        assert!(is_valid_key(&"k".repeat(250)));
        assert!(!is_valid_key(&"k".repeat(251)));
    }

    #[test]
    fn sanitize_examples() {
        assert_eq!(sanitize_key("loss"), "loss");
        assert_eq!(sanitize_key("acc@top1"), "acc_top1");
        assert_eq!(sanitize_key("/a//b/./c/"), "a/b/c");
        assert_eq!(sanitize_key("a/../b"), "a/__/b");
        assert_eq!(sanitize_key(""), "_");
        assert_eq!(sanitize_key("..x"), "_..x");
        assert_eq!(sanitize_key(&"é".repeat(300)).chars().count(), 250);
    }

    #[test]
    fn truncation_is_char_based() {
        assert_eq!(truncate_chars("héllo", 2), ("hé", true));
        assert_eq!(truncate_chars("hé", 2), ("hé", false));
    }

    proptest::proptest! {
        #[test]
        fn sanitized_keys_are_valid(s in "\\PC{0,300}") {
            let k = sanitize_key(&s);
            proptest::prop_assert!(is_valid_key(&k), "{:?} -> {:?}: {:?}", s, k, key_problem(&k));
        }

        #[test]
        fn valid_keys_are_unchanged(s in "[a-zA-Z0-9_. :-]{1,20}(/[a-zA-Z0-9_ -]{1,20}){0,3}") {
            if is_valid_key(&s) {
                proptest::prop_assert_eq!(sanitize_key(&s), s);
            }
        }
    }
}
