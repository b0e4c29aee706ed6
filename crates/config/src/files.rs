//! The files of a deployment: their text, how one names another, and positions within them.

use std::path::{Component, Path, PathBuf};

/// One configuration file: where it came from (as the administrator wrote or passed it) and its
/// text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
}

impl Source {
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> Source {
        Source {
            path: path.into(),
            text: text.into(),
        }
    }
}

/// Index of a file in the list being parsed; the main file is 0.
pub(crate) type FileId = usize;

/// A byte offset in one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Pos {
    pub(crate) file: FileId,
    pub(crate) offset: usize,
}

/// The path a file named in `referrer` (e.g. `holidays/2026.toml`) has, relative to the
/// directory `referrer` is in, without `.` and `..` components (so that two spellings of one
/// file compare equal).
pub(crate) fn resolve(referrer: &Path, name: &str) -> PathBuf {
    let base = referrer.parent().unwrap_or(Path::new(""));
    normalize(&base.join(name))
}

pub(crate) fn normalize(path: &Path) -> PathBuf {
    let mut normal = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                let popped = matches!(normal.components().next_back(), Some(Component::Normal(_)))
                    && normal.pop();
                if !popped {
                    normal.push("..");
                }
            }
            other => normal.push(other),
        }
    }
    normal
}

/// The 1-based line and column (in characters) of byte `offset` in `text`.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_against_the_referring_file() {
        assert_eq!(
            resolve(Path::new("deploy/config/refbus.toml"), "holidays/2026.toml"),
            PathBuf::from("deploy/config/holidays/2026.toml")
        );
        assert_eq!(
            resolve(Path::new("refbus.toml"), "./holidays/../agencies.toml"),
            PathBuf::from("agencies.toml")
        );
        assert_eq!(
            resolve(Path::new("refbus.toml"), "../shared/2026.toml"),
            PathBuf::from("../shared/2026.toml")
        );
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let text = "a = 1\nname = \"Perlindungan …\" x";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        let x = text.rfind('x').unwrap();
        assert_eq!(line_column(text, x), (2, 25));
    }
}
