//! A TOML error in the configuration file, told as one line a user
//! understands.
//!
//! toml and serde say what went wrong in Rust's words (`invalid type: string
//! "eight", expected usize`) over five lines of source excerpt. An operator
//! needs the line, the setting's dotted name, and what the setting takes:
//!
//! ```text
//! line 5: `fpm.pool_size` must be a whole number ≥ 0, not the string "eight"
//! line 2: unknown setting `fpm.pool_sise`; did you mean `fpm.pool_size`?
//! line 7: `websocket.rate_limit.burst` is required
//! ```
//!
//! The setting is found from the error's position in the document (toml's
//! spanned tree); the wording from serde's `expected …` vocabulary, mapped
//! once here for every type the configuration uses.

use std::ops::Range;

use toml::de::{DeTable, DeValue};

/// Explains `error`, raised while reading `text` as a configuration, in one
/// line: `line N: …` (with the column for a syntax error).
pub fn explain(text: &str, error: &toml::de::Error) -> String {
    let message = one_line(error.message());
    let Some(span) = error.span() else {
        return message;
    };
    let (line, column) = position(text, span.start);
    match setting_at(text, &span) {
        Some(setting) => format!("line {line}: {}", about_setting(&setting, &message)),
        None => format!("line {line}, column {column}: {}", syntax(&message)),
    }
}

/// Line and column (both from 1) of byte `offset`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (line, column)
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The dotted name of the deepest key whose name or value the error's span
/// touches (`fpm.pool_size`, `websocket.rate_limit`, `route.path`); none for
/// a document that does not parse as TOML.
fn setting_at(text: &str, error: &Range<usize>) -> Option<String> {
    let root = DeTable::parse(text).ok()?;
    let mut path = Vec::new();
    find_in_table(root.get_ref(), error, &mut path).then(|| path.join("."))
}

fn find_in_table(table: &DeTable<'_>, error: &Range<usize>, path: &mut Vec<String>) -> bool {
    for (key, value) in table {
        path.push(key.get_ref().to_string());
        // Deepest first: a table header's span covers its parents' keys.
        let deeper = match value.get_ref() {
            DeValue::Table(inner) => find_in_table(inner, error, path),
            DeValue::Array(items) => items.iter().any(|item| match item.get_ref() {
                DeValue::Table(inner) => find_in_table(inner, error, path),
                _ => false,
            }),
            _ => false,
        };
        if deeper || overlaps(&key.span(), error) || overlaps(&value.span(), error) {
            return true;
        }
        path.pop();
    }
    false
}

fn overlaps(a: &Range<usize>, error: &Range<usize>) -> bool {
    let end = error.end.max(error.start + 1);
    a.start < end && error.start < a.end
}

/// The sentence for an error at `setting`.
fn about_setting(setting: &str, message: &str) -> String {
    if let Some((found, expected)) = split_expected(message) {
        return format!(
            "`{setting}` must be {}, not {}",
            takes(expected),
            shown(found)
        );
    }
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let (unknown, known) = rest.split_once(", ").unwrap_or((rest, ""));
        let unknown = unknown.trim_matches('`');
        let names = backticked(known);
        let table = setting.rsplit_once('.').map(|(t, _)| t);
        let place = table.map_or("at the top level".to_owned(), |t| format!("in [{t}]"));
        return match closest(unknown, &names) {
            Some(near) => {
                let near = table.map_or(near.to_owned(), |t| format!("{t}.{near}"));
                format!("unknown setting `{setting}`; did you mean `{near}`?")
            }
            None if names.is_empty() => format!("unknown setting `{setting}`"),
            None => format!(
                "unknown setting `{setting}`; the settings {place} are {}",
                names.join(", ")
            ),
        };
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        let (unknown, known) = rest.split_once(", ").unwrap_or((rest, ""));
        let names: Vec<String> = backticked(known)
            .iter()
            .map(|n| format!("\"{n}\""))
            .collect();
        return format!(
            "`{setting}` must be one of {}, not \"{}\"",
            names.join(", "),
            unknown.trim_matches('`')
        );
    }
    if let Some(field) = message.strip_prefix("missing field ") {
        return format!("`{setting}.{}` is required", field.trim_matches('`'));
    }
    match message {
        "duplicate key" => format!("`{setting}` is set twice"),
        "invalid socket address syntax" => {
            format!("`{setting}` must be an address such as \"127.0.0.1:8091\" (IP:PORT)")
        }
        // The value's own parser (addresses, proxies, …) says what it takes.
        _ => format!("`{setting}`: {message}"),
    }
}

/// A syntax error, where no setting can be named.
fn syntax(message: &str) -> String {
    match message {
        "duplicate key" => "a key or table is set twice".to_owned(),
        _ => format!("not valid TOML: {message}"),
    }
}

/// `invalid type: X, expected Y` and `invalid value: X, expected Y` → (X, Y).
fn split_expected(message: &str) -> Option<(&str, &str)> {
    let rest = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))?;
    rest.split_once(", expected ")
}

/// What a setting takes, for serde's name of the type it expected.
fn takes(expected: &str) -> String {
    let words = match expected {
        "usize" | "u64" | "u128" => "a whole number ≥ 0",
        "u32" => "a whole number from 0 to 4294967295",
        "u16" => "a whole number from 0 to 65535",
        "u8" => "a whole number from 0 to 255",
        "isize" | "i64" | "i32" | "i16" | "i8" => "a whole number",
        "f64" | "f32" => "a number (such as 10 or 2.5)",
        "a boolean" => "true or false",
        "a string" | "a borrowed string" | "path string" | "a character" => "a string in quotes",
        "a duration" => "a duration such as \"30s\", \"500ms\" or \"2m\"",
        "a sequence" => "a list in brackets, such as [\"…\"]",
        "socket address" => "an address such as \"127.0.0.1:8091\" (IP:PORT)",
        other if other.starts_with("struct ") || other == "a map" => {
            "a table ([section], or { key = value })"
        }
        other if other.starts_with("enum ") => "a name in quotes",
        other => return other.to_owned(),
    };
    words.to_owned()
}

/// serde's description of the value found, as a user wrote it.
fn shown(found: &str) -> String {
    if let Some(text) = found.strip_prefix("string ") {
        return format!("the string {text}");
    }
    for kind in ["integer ", "floating point ", "boolean "] {
        if let Some(value) = found.strip_prefix(kind) {
            return value.trim_matches('`').to_owned();
        }
    }
    match found {
        "sequence" => "a list".to_owned(),
        "map" => "a table".to_owned(),
        other => other.to_owned(),
    }
}

/// The names in `` expected one of `a`, `b` `` or `` expected `a` or `b` ``.
fn backticked(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// The known name nearest to `unknown`, if it is a likely typo of it.
fn closest<'a>(unknown: &str, names: &'a [String]) -> Option<&'a str> {
    names
        .iter()
        .map(|n| (edit_distance(unknown, n), n))
        .filter(|(d, n)| *d <= 2.max(n.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n.as_str())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use crate::Config;

    fn error_of(text: &str) -> String {
        Config::from_toml(text).expect_err("refused")
    }

    #[test]
    fn each_type_is_named_as_a_user_writes_it() {
        for (text, want) in [
            (
                "[fpm]\npool_size = \"eight\"\n",
                "line 2: `fpm.pool_size` must be a whole number ≥ 0, not the string \"eight\"",
            ),
            (
                "[fpm]\npool_size = -3\n",
                "line 2: `fpm.pool_size` must be a whole number ≥ 0, not -3",
            ),
            (
                "[fpm]\nrequest_timeout = 30\n",
                "line 2: `fpm.request_timeout` must be a duration such as \"30s\", \"500ms\" or \"2m\", not 30",
            ),
            (
                "[fpm]\nrequest_timeout = \"soon\"\n",
                "line 2: `fpm.request_timeout` must be a duration such as \"30s\", \"500ms\" or \"2m\", not the string \"soon\"",
            ),
            (
                "worker_threads = true\n",
                "line 1: `worker_threads` must be a whole number ≥ 0, not true",
            ),
            (
                "listen = \"127.0.0.1:80\"\n",
                "line 1: `listen` must be a list in brackets, such as [\"…\"], not the string \"127.0.0.1:80\"",
            ),
            (
                "listen = [5]\n",
                "line 1: `listen` must be a string in quotes, not 5",
            ),
            (
                "[fpm.managed]\nmax_requests = 5000000000\n",
                "line 2: `fpm.managed.max_requests` must be a whole number from 0 to 4294967295, not 5000000000",
            ),
            (
                "[websocket.rate_limit]\nburst = 3\nmessages_per_second = \"x\"\n",
                "line 3: `websocket.rate_limit.messages_per_second` must be a number (such as 10 or 2.5), not the string \"x\"",
            ),
            (
                "[control]\nhttp = true\n",
                "line 2: `control.http` must be an address such as \"127.0.0.1:8091\" (IP:PORT), not true",
            ),
            (
                "[control]\nhttp = \"nope\"\n",
                "line 2: `control.http` must be an address such as \"127.0.0.1:8091\" (IP:PORT)",
            ),
            (
                "fpm = 3\n",
                "line 1: `fpm` must be a table ([section], or { key = value }), not 3",
            ),
        ] {
            assert_eq!(error_of(text), want, "{text:?}");
        }
    }

    #[test]
    fn names_keys_variants_and_missing_fields() {
        assert_eq!(
            error_of("[fpm]\npool_sise = 3\n"),
            "line 2: unknown setting `fpm.pool_sise`; did you mean `fpm.pool_size`?"
        );
        let far = error_of("[log]\ncolour = true\n");
        assert!(
            far.starts_with(
                "line 2: unknown setting `log.colour`; the settings in [log] are format, level"
            ),
            "{far}"
        );
        assert_eq!(
            error_of("[log]\nformat = \"xml\"\n"),
            "line 2: `log.format` must be one of \"human\", \"json\", not \"xml\""
        );
        assert_eq!(
            error_of("[websocket.rate_limit]\nburst = 3\n"),
            "line 1: `websocket.rate_limit.messages_per_second` is required"
        );
        assert_eq!(
            error_of("[[route]]\npath = \"/a\"\nscript = \"/a.php\"\n[[route]]\npath = 5\n"),
            "line 5: `route.path` must be a string in quotes, not 5"
        );
        // A parser of our own already says what it takes.
        assert_eq!(
            error_of("listen = [\"localhost\"]\n"),
            "line 1: `listen`: `localhost` is neither ip:port (e.g. 127.0.0.1:8090), tls://ip:port nor unix:/path"
        );
    }

    #[test]
    fn syntax_errors_give_line_and_column_on_one_line() {
        assert_eq!(
            error_of("script = /x.php\n"),
            "line 1, column 10: not valid TOML: string values must be quoted, expected literal string"
        );
        assert_eq!(
            error_of("[fpm]\naddress = \"unix:/x\"\n[fpm]\npool_size = 2\n"),
            "line 3, column 2: a key or table is set twice"
        );
        for text in ["[fpm\naddress=1\n", "a = \n", "x = \"é\" y\n"] {
            let err = error_of(text);
            assert!(!err.contains('\n') && err.starts_with("line "), "{err}");
        }
    }
}
