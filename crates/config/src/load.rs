//! Reading a deployment from disk: the only place in this crate that does I/O.

use std::fs;
use std::path::{Path, PathBuf};

use refbus_core::Registry;

use crate::build::{parse_files, referenced_files};
use crate::diagnostic::{Diagnostic, Report};
use crate::files::Source;

/// Reads the main file at `path` and every file it names (`include`, `holidays`, relative to
/// its directory), and parses them with [`crate::parse`].
pub fn load(path: impl AsRef<Path>) -> Result<Registry, Report> {
    let path = path.as_ref();
    let text = fs::read_to_string(path).map_err(|error| Report {
        diagnostics: vec![Diagnostic {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!("cannot read the configuration file: {error}"),
        }],
    })?;
    let main = Source::new(path, text);
    let mut others = Vec::new();
    let mut unreadable: Vec<(PathBuf, String)> = Vec::new();
    for file in referenced_files(&main) {
        match fs::read_to_string(&file) {
            Ok(text) => others.push(Source::new(file, text)),
            Err(error) => unreadable.push((file, error.to_string())),
        }
    }
    parse_files(&main, &others, &unreadable)
}
