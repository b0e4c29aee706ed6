//! Diagnostics: every problem found in a deployment's files, each at its file, line and column.

use std::fmt;
use std::path::PathBuf;

use crate::files::{FileId, Pos, Source, line_column};

/// One problem, where it is and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// Counted from 1; 0 when the problem concerns the whole file (it cannot be read).
    pub line: usize,
    /// Counted from 1, in characters.
    pub column: usize,
    /// A plain explanation for the administrator who edits the file.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )
        }
    }
}

/// Every problem found in a deployment's configuration, in file order. Never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Report {
    pub diagnostics: Vec<Diagnostic>,
}

impl Report {
    /// `1 problem` or `N problems`.
    pub fn summary(&self) -> String {
        match self.diagnostics.len() {
            1 => "1 problem".to_owned(),
            n => format!("{n} problems"),
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for diagnostic in &self.diagnostics {
            writeln!(f, "{diagnostic}")?;
        }
        write!(f, "{} in the configuration", self.summary())
    }
}

/// Problems collected while reading and checking, positioned by byte offset until the end.
#[derive(Debug, Default)]
pub(crate) struct Problems {
    items: Vec<(Pos, String)>,
}

impl Problems {
    pub(crate) fn at(&mut self, pos: Pos, message: impl Into<String>) {
        self.items.push((pos, message.into()));
    }

    pub(crate) fn append(&mut self, other: Problems) {
        self.items.extend(other.items);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Positions each problem in `files` (indexed by [`FileId`]) and orders them file by file,
    /// top to bottom, as an administrator fixes them.
    pub(crate) fn into_report(self, files: &[&Source]) -> Report {
        let mut items = self.items;
        items.sort_by_key(|(pos, _)| *pos);
        items.dedup();
        let diagnostics = items
            .into_iter()
            .map(|(pos, message)| diagnostic(files, pos.file, pos.offset, message))
            .collect();
        Report { diagnostics }
    }
}

fn diagnostic(files: &[&Source], file: FileId, offset: usize, message: String) -> Diagnostic {
    match files.get(file) {
        Some(source) => {
            let (line, column) = line_column(&source.text, offset);
            Diagnostic {
                file: source.path.clone(),
                line,
                column,
                message,
            }
        }
        None => Diagnostic {
            file: PathBuf::new(),
            line: 0,
            column: 0,
            message,
        },
    }
}
