//! A TOML syntax error as `check` and the logs report it: the key being read and where
//! (`site[1].weight (line 7, column 8): invalid string`), never the offending line's
//! text, which may hold a secret (the admin token, a password) and reaches the log,
//! `check` and the unauthenticated `/status`.

use std::collections::HashMap;

/// The parser's reason, where, and the key it was reading when that is known.
pub(super) fn syntax_message(error: &toml_edit::TomlError, text: &str) -> String {
    let reason = error.message().trim_end();
    let Some(span) = error.span() else {
        return reason.to_string();
    };
    let offset = span.start.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
    match key_at(text, line) {
        Some(key) => format!("{key} (line {line}, column {column}): {reason}"),
        None => format!("line {line}, column {column}: {reason}"),
    }
}

/// The full key of the value being read on `line` (1-based): the table headers above
/// it (`[[site]]` counted, so the second one is `site[1]`) and the key on that line,
/// or, inside a value that spans lines, the key that opened it. Reads only the key
/// part of each line, before its `=`.
fn key_at(text: &str, line: usize) -> Option<String> {
    let mut table = String::new();
    let mut arrays: HashMap<String, usize> = HashMap::new();
    let mut key: Option<String> = None;
    for (n, raw) in text.lines().enumerate().take(line) {
        let trimmed = raw.trim_start();
        let is_error_line = n + 1 == line;
        if let Some(header) = trimmed.strip_prefix("[[") {
            let name = header.split("]]").next()?.trim();
            if !is_bare_key(name) {
                return None;
            }
            let index = arrays.entry(name.to_string()).and_modify(|i| *i += 1).or_insert(0);
            table = format!("{name}[{index}]");
            key = None;
            if is_error_line {
                return Some(table);
            }
        } else if let Some(header) = trimmed.strip_prefix('[') {
            let name = header.split(']').next()?.trim();
            if !is_bare_key(name) {
                return None;
            }
            // `[site.health]` below the second `[[site]]` is `site[1].health`.
            let (first, rest) = name.split_once('.').unwrap_or((name, ""));
            table = match arrays.get(first) {
                Some(i) if rest.is_empty() => format!("{first}[{i}]"),
                Some(i) => format!("{first}[{i}].{rest}"),
                None => name.to_string(),
            };
            key = None;
            if is_error_line {
                return Some(table);
            }
        } else if let Some((name, _)) = trimmed.split_once('=') {
            let name = name.trim();
            if is_bare_key(name) && !trimmed.starts_with('#') {
                key = Some(name.to_string());
            }
        }
    }
    let key = key?;
    Some(if table.is_empty() {
        key
    } else {
        format!("{table}.{key}")
    })
}

/// A bare or dotted key (`weight`, `health.path`, `"odd key"`): never a value's text.
fn is_bare_key(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '"' | ' '))
        && name.matches('"').count() % 2 == 0
}

#[cfg(test)]
mod tests {
    use super::key_at;

    #[test]
    fn the_key_is_named_with_its_tables_and_array_index() {
        let text = "[[site]]\nname = \"a\"\n[[site]]\nname = \"b\"\nweight = x\n[site.health]\npath = y\n";
        assert_eq!(key_at(text, 2).as_deref(), Some("site[0].name"));
        assert_eq!(key_at(text, 5).as_deref(), Some("site[1].weight"));
        assert_eq!(key_at(text, 7).as_deref(), Some("site[1].health.path"));
        assert_eq!(key_at("token = s3cr3t\n", 1).as_deref(), Some("token"));
        let spanning = "[[site]]\nbackends = [\n  \"127.0.0.1:1\",\n  oops\n]\n";
        assert_eq!(key_at(spanning, 4).as_deref(), Some("site[0].backends"));
        assert_eq!(
            key_at("[admin\nbind = 1\n", 1).as_deref(),
            Some("admin"),
            "the table of a broken header"
        );
        let quoted = "[[site]]\nbackends = [\n  \"s3cr3t=1\",\n  oops\n]\n";
        assert_eq!(
            key_at(quoted, 4).as_deref(),
            Some("site[0].backends"),
            "a value is never a key"
        );
    }
}
