//! RON plumbing shared by every config: reading, parsing with
//! file:line:column errors, and locating a field in the text so that value
//! errors point at it too.

use std::path::{Path, PathBuf};

/// A config that cannot be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{col}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        col: usize,
        message: String,
    },
    #[error("{path}:{line}:{col}: {field}: {message}")]
    At {
        path: PathBuf,
        line: usize,
        col: usize,
        field: String,
        message: String,
    },
    #[error("{path}: {field}: {message}")]
    Invalid {
        path: PathBuf,
        field: String,
        message: String,
    },
}

pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// A config file's text; a UTF-8 byte-order mark (as some Windows editors
/// write) is dropped, so positions count from the first real character.
pub(crate) fn read(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    })
}

/// Parse RON text as `T`, with errors at file:line:col.
pub fn parse_ron<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T> {
    // implicit_some: an optional field is written as its value (`Some(..)` also works).
    ron::Options::default()
        .with_default_extension(
            ron::extensions::Extensions::IMPLICIT_SOME
                | ron::extensions::Extensions::UNWRAP_VARIANT_NEWTYPES,
        )
        .from_str(text)
        .map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            line: e.span.start.line,
            col: e.span.start.col,
            message: e.code.to_string(),
        })
}

/// Where `field` (a dotted path such as `strategy.generations`) is written
/// in RON `text`: each part is searched as `name:` after the previous one,
/// outside comments. 1-based line and column.
pub fn locate(text: &str, field: &str) -> Option<(usize, usize)> {
    // Blank out comments so that field names inside them are not found.
    let mut clean = String::with_capacity(text.len());
    for line in text.lines() {
        match line.find("//") {
            Some(i) => {
                clean.push_str(&line[..i]);
                clean.push_str(&" ".repeat(line.len() - i));
            }
            None => clean.push_str(line),
        }
        clean.push('\n');
    }
    let mut from = 0;
    let mut at = None;
    for part in field.split('.') {
        let part = part.split('[').next().unwrap_or(part);
        let mut found = None;
        let mut search = from;
        while let Some(i) = clean[search..].find(part) {
            let start = search + i;
            let end = start + part.len();
            let before_ok = start == 0
                || !clean.as_bytes()[start - 1].is_ascii_alphanumeric()
                    && clean.as_bytes()[start - 1] != b'_';
            let rest = clean[end..].trim_start();
            if before_ok && (rest.starts_with(':') || rest.starts_with('(')) {
                found = Some(start);
                break;
            }
            search = end;
        }
        let start = found?;
        at = Some(start);
        from = start + part.len();
    }
    let at = at?;
    let line = clean[..at].matches('\n').count() + 1;
    let col = at - clean[..at].rfind('\n').map_or(0, |i| i + 1) + 1;
    Some((line, col))
}

pub(crate) struct Checker<'a> {
    pub(crate) path: &'a Path,
    pub(crate) text: Option<&'a str>,
}

impl Checker<'_> {
    pub(crate) fn fail<T>(&self, field: &str, message: impl Into<String>) -> Result<T> {
        if let Some((line, col)) = self.text.and_then(|t| locate(t, field)) {
            return Err(ConfigError::At {
                path: self.path.to_path_buf(),
                line,
                col,
                field: field.into(),
                message: message.into(),
            });
        }
        Err(ConfigError::Invalid {
            path: self.path.to_path_buf(),
            field: field.into(),
            message: message.into(),
        })
    }

    pub(crate) fn ensure(&self, ok: bool, field: &str, message: impl Into<String>) -> Result<()> {
        if ok {
            Ok(())
        } else {
            self.fail(field, message)
        }
    }

    pub(crate) fn exists(&self, p: &Path, field: &str) -> Result<()> {
        self.ensure(p.exists(), field, format!("{} does not exist", p.display()))
    }
}
