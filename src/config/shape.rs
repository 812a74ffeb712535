//! Reads config text into the file types (`file.rs`), reporting every problem of shape
//! (an unknown key, a value of the wrong type) with its key, not only the first one
//! serde stops at: a value of the wrong type is noted and replaced by a placeholder of
//! the expected type (or taken out), and the text is read again, up to
//! `MAX_SHAPE_PROBLEMS` times. Unknown keys are collected on the way (`serde_ignored`),
//! each with its full key.

use serde_path_to_error::{Path as ErrorPath, Segment};
use toml_edit::{Array, DocumentMut, ImDocument, InlineTable, Item, Value};

use super::file::FileConfig;
use super::Problem;

/// Shape problems reported at most; past them the text is not read again.
const MAX_SHAPE_PROBLEMS: usize = 50;

/// What reading the text gave: the file types when the text could be read (values of
/// the wrong type replaced by placeholders), and every shape problem found.
pub(super) struct Shaped {
    pub file: Option<FileConfig>,
    pub problems: Vec<Problem>,
}

/// Reads `document` (already parsed as TOML, with its spans) into the file types.
pub(super) fn read(document: &ImDocument<&str>) -> Shaped {
    let mut work: DocumentMut = document.clone().into_mut();
    let mut problems: Vec<Problem> = Vec::new();
    let mut taken_out: Vec<String> = Vec::new();
    while problems.len() < MAX_SHAPE_PROBLEMS {
        let mut unknown = Vec::new();
        let deserializer = toml_edit::de::Deserializer::from(work.clone());
        let mut note = |path: serde_ignored::Path| unknown.push(ignored_key(&path));
        let ignoring = serde_ignored::Deserializer::new(deserializer, &mut note);
        let result: Result<FileConfig, _> = serde_path_to_error::deserialize(ignoring);
        for key in unknown {
            // A TOML date-time reaches serde as a table with one private key.
            let (key, reason) = match key.strip_suffix(DATETIME_KEY) {
                Some(parent) => (
                    parent.trim_end_matches('.').to_string(),
                    "a date-time is not a value here",
                ),
                None => (key, "unknown key"),
            };
            if !problems.iter().any(|p| p.key == key) {
                problems.push(Problem {
                    reason: located(reason, line_of(document, &key)),
                    key,
                });
            }
        }
        match result {
            Ok(file) => {
                return Shaped {
                    file: Some(file),
                    problems,
                }
            }
            Err(error) => {
                let key = error.path().to_string();
                if taken_out
                    .iter()
                    .any(|out| is_missing_field(error.inner().message(), &key, out))
                {
                    // A required key of the wrong type was taken out; it is reported.
                    break;
                }
                let line = line_of(document, &key);
                problems.push(Problem {
                    reason: located(error.inner().message(), line),
                    key: if error.path().iter().next().is_none() {
                        "(file)".to_string()
                    } else {
                        key
                    },
                });
                if !mend(&mut work, error.path(), error.inner().message()) {
                    break;
                }
                taken_out.push(error.path().to_string());
            }
        }
    }
    Shaped { file: None, problems }
}

/// The key under which toml_edit hands a date-time to serde.
const DATETIME_KEY: &str = "$__toml_private_datetime";

/// `message` (at `key`) says that the key `out`, taken out before, is missing.
fn is_missing_field(message: &str, key: &str, out: &str) -> bool {
    let Some(name) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
    else {
        return false;
    };
    match key {
        "" | "." => out == name,
        parent => out == format!("{parent}.{name}"),
    }
}

fn located(reason: &str, line: Option<usize>) -> String {
    match line {
        Some(line) => format!("{reason} (line {line})"),
        None => reason.to_string(),
    }
}

/// `serde_ignored`'s path as the validator names keys: `site[1].bogus`.
fn ignored_key(path: &serde_ignored::Path) -> String {
    use serde_ignored::Path::*;
    match path {
        Root => String::new(),
        Seq { parent, index } => format!("{}[{index}]", ignored_key(parent)),
        Map { parent, key } => match ignored_key(parent) {
            prefix if prefix.is_empty() => key.clone(),
            prefix => format!("{prefix}.{key}"),
        },
        Some { parent } | NewtypeStruct { parent } | NewtypeVariant { parent } => ignored_key(parent),
    }
}

/// The line where `key` (as `site[1].weight`) is written in the original text.
fn line_of(document: &ImDocument<&str>, key: &str) -> Option<usize> {
    let mut item: &Item = document.as_item();
    for part in key_parts(key) {
        item = match part {
            Part::Key(name) => item.get(name)?,
            Part::Index(index) => item.get(index)?,
        };
    }
    let span = match item {
        Item::Table(table) => table.span(),
        other => other.span(),
    };
    span.map(|span| line_at(document, span.start))
}

fn line_at(document: &ImDocument<&str>, offset: usize) -> usize {
    let raw = document.raw().as_bytes();
    raw[..offset.min(raw.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

enum Part<'a> {
    Key(&'a str),
    Index(usize),
}

/// `site[1].weight` -> `site`, 1, `weight`.
fn key_parts(key: &str) -> Vec<Part<'_>> {
    let mut parts = Vec::new();
    for piece in key.split('.') {
        let (name, mut rest) = piece.split_once('[').map_or((piece, ""), |(n, r)| (n, r));
        if !name.is_empty() {
            parts.push(Part::Key(name));
        }
        while let Some((index, after)) = rest.split_once(']') {
            if let Ok(index) = index.parse() {
                parts.push(Part::Index(index));
            }
            rest = after.strip_prefix('[').unwrap_or(after);
        }
    }
    parts
}

/// Mends `document` at `path` so that reading can go on past the problem there: a value
/// of the wrong type becomes a placeholder of the expected type (`expected`, from serde's
/// message), so no key goes missing and no array element moves; any other value is
/// taken out. False when nothing can be mended (the root, an array element serde did
/// not say the type of).
fn mend(document: &mut DocumentMut, path: &ErrorPath, message: &str) -> bool {
    let segments: Vec<&Segment> = path.iter().collect();
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut item: &mut Item = document.as_item_mut();
    for segment in parents {
        let child = match segment {
            Segment::Map { key } => item.get_mut(key.as_str()),
            Segment::Seq { index } => item.get_mut(*index),
            _ => None,
        };
        match child {
            Some(child) => item = child,
            None => return false,
        }
    }
    let target = match last {
        Segment::Map { key } => item.get_mut(key.as_str()),
        Segment::Seq { index } => item.get_mut(*index),
        _ => None,
    };
    match (placeholder(message), target, last) {
        (Some(value), Some(target @ Item::Value(_)), _) => {
            *target = Item::Value(value);
            true
        }
        (_, _, Segment::Map { key }) => item.as_table_like_mut().and_then(|t| t.remove(key)).is_some(),
        _ => false,
    }
}

/// A value of the type serde's "invalid type: ..., expected X" asks for.
fn placeholder(message: &str) -> Option<Value> {
    let expected = message.split(", expected ").nth(1)?;
    let integer = ["i64", "u64", "i32", "u32", "u16", "u8", "usize", "an integer"];
    Some(match expected {
        e if e.contains("string") => Value::from(""),
        e if integer.iter().any(|t| e.starts_with(t)) => Value::from(0i64),
        e if e.starts_with("f64") || e.starts_with("f32") || e.contains("float") => Value::from(0.0),
        e if e.contains("boolean") => Value::from(false),
        e if e.contains("sequence") => Value::Array(Array::new()),
        e if e.starts_with("struct") || e.contains("map") => Value::InlineTable(InlineTable::new()),
        _ => return None,
    })
}
