//! Reads config text into the file types (`file.rs`), reporting every problem of shape
//! (an unknown key, a value of the wrong type) with its key, not only the first one
//! serde stops at: a key of the wrong type is noted and taken out, and the text is read
//! again, up to `MAX_SHAPE_PROBLEMS` times. Unknown keys are collected on the way
//! (`serde_ignored`), each with its full key.

use serde_path_to_error::{Path as ErrorPath, Segment};
use toml_edit::{DocumentMut, ImDocument, Item, Value};

use super::file::FileConfig;
use super::Problem;

/// Shape problems reported at most; past them the text is not read again.
const MAX_SHAPE_PROBLEMS: usize = 50;

/// What reading the text gave: the file types when the text could be read (keys of the
/// wrong type left out), and every shape problem found.
pub(super) struct Shaped {
    pub file: Option<FileConfig>,
    pub problems: Vec<Problem>,
}

/// Reads `document` (already parsed as TOML, with its spans) into the file types.
pub(super) fn read(document: &ImDocument<&str>) -> Shaped {
    let mut work: DocumentMut = document.clone().into_mut();
    let mut problems: Vec<Problem> = Vec::new();
    while problems.len() < MAX_SHAPE_PROBLEMS {
        let mut unknown = Vec::new();
        let deserializer = toml_edit::de::Deserializer::from(work.clone());
        let mut note = |path: serde_ignored::Path| unknown.push(ignored_key(&path));
        let ignoring = serde_ignored::Deserializer::new(deserializer, &mut note);
        let result: Result<FileConfig, _> = serde_path_to_error::deserialize(ignoring);
        for key in unknown {
            if !problems.iter().any(|p| p.key == key) {
                problems.push(Problem {
                    reason: located("unknown key", line_of(document, &key)),
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
                let line = line_of(document, &key);
                problems.push(Problem {
                    reason: located(error.inner().message(), line),
                    key: if error.path().iter().next().is_none() {
                        "(file)".to_string()
                    } else {
                        key
                    },
                });
                if !remove(&mut work, error.path()) {
                    break;
                }
            }
        }
    }
    Shaped { file: None, problems }
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

/// Takes the value at `path` out of `document`; false when it cannot (the root).
fn remove(document: &mut DocumentMut, path: &ErrorPath) -> bool {
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
    match (last, item) {
        (Segment::Map { key }, item) => item.as_table_like_mut().and_then(|t| t.remove(key)).is_some(),
        (Segment::Seq { index }, Item::ArrayOfTables(tables)) if *index < tables.len() => {
            tables.remove(*index);
            true
        }
        (Segment::Seq { index }, Item::Value(Value::Array(array))) if *index < array.len() => {
            array.remove(*index);
            true
        }
        _ => false,
    }
}
