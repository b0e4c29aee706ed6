//! Where the nats-server binary comes from: the environment, the repository's `.tools/`, or PATH.

use std::env;
use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::Error;

/// The variable that names the nats-server binary explicitly; `scripts/test.sh` sets it.
pub const BINARY_ENV: &str = "REFBUS_NATS_SERVER";

/// Where `scripts/install-tools.sh` puts the pinned binary, relative to the workspace root.
const INSTALLED_RELATIVE: &str = ".tools/bin/nats-server";

/// Finds the nats-server binary to run: `$REFBUS_NATS_SERVER`, else the workspace's
/// `.tools/bin/nats-server`, else `nats-server` on PATH.
pub fn nats_server_binary() -> Result<PathBuf, Error> {
    find(
        env::var_os(BINARY_ENV).as_deref(),
        &workspace_root(),
        env::var_os("PATH").as_deref(),
    )
}

/// The workspace root as it was when this crate was compiled: tests run from any directory.
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn find(
    explicit: Option<&OsStr>,
    workspace_root: &Path,
    search_path: Option<&OsStr>,
) -> Result<PathBuf, Error> {
    if let Some(explicit) = explicit.filter(|value| !value.is_empty()) {
        let path = PathBuf::from(explicit);
        return match classify(&path) {
            Candidate::Native => Ok(path),
            Candidate::Missing => Err(Error::BadBinary {
                path,
                reason: "no such file",
            }),
            Candidate::Script => Err(Error::BadBinary {
                path,
                reason: SCRIPT_REASON,
            }),
        };
    }

    let installed = workspace_root.join(INSTALLED_RELATIVE);
    if classify(&installed) == Candidate::Native {
        return Ok(installed);
    }

    let mut searched = vec![installed.display().to_string()];
    for dir in search_path.map(env::split_paths).into_iter().flatten() {
        let candidate = dir.join("nats-server");
        if classify(&candidate) == Candidate::Native {
            return Ok(candidate);
        }
        searched.push(candidate.display().to_string());
    }
    Err(Error::BinaryNotFound {
        searched: format!("looked at {}", searched.join(", ")),
    })
}

const SCRIPT_REASON: &str = "is a script (a shim or wrapper), so its pid is not the server's \
                             and killing it would leave the server running";

#[derive(Debug, PartialEq, Eq)]
enum Candidate {
    Missing,
    /// A shim such as pyenv's: killing it leaves the real server running, so it is refused.
    Script,
    Native,
}

fn classify(path: &Path) -> Candidate {
    if !path.is_file() {
        return Candidate::Missing;
    }
    let Ok(mut file) = File::open(path) else {
        return Candidate::Missing;
    };
    let mut magic = [0u8; 2];
    match file.read_exact(&mut magic) {
        Ok(()) if &magic == b"#!" => Candidate::Script,
        Ok(()) => Candidate::Native,
        Err(_) => Candidate::Missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, contents: &[u8]) {
        std::fs::create_dir_all(path.parent().expect("test paths have a parent"))
            .expect("create test directory");
        std::fs::write(path, contents).expect("write test file");
    }

    #[test]
    fn explicit_variable_wins_over_everything() {
        let dir = tempfile::tempdir().expect("tempdir");
        let explicit = dir.path().join("custom/nats-server");
        write(&explicit, b"\x7fELF");
        write(&dir.path().join(INSTALLED_RELATIVE), b"\x7fELF");
        let found = find(Some(explicit.as_os_str()), dir.path(), None).expect("found");
        assert_eq!(found, explicit);
    }

    #[test]
    fn explicit_variable_naming_nothing_is_an_error_not_a_fallback() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(&dir.path().join(INSTALLED_RELATIVE), b"\x7fELF");
        let missing = dir.path().join("missing");
        let error = find(Some(missing.as_os_str()), dir.path(), None).expect_err("error");
        assert!(matches!(error, Error::BadBinary { .. }), "{error}");
        assert!(error.to_string().contains("scripts/install-tools.sh"));
    }

    #[test]
    fn installed_tool_comes_before_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let installed = dir.path().join(INSTALLED_RELATIVE);
        write(&installed, b"\x7fELF");
        let on_path = dir.path().join("bin");
        write(&on_path.join("nats-server"), b"\x7fELF");
        let found = find(None, dir.path(), Some(on_path.as_os_str())).expect("found");
        assert_eq!(found, installed);
    }

    #[test]
    fn path_is_searched_and_shims_are_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let shims = dir.path().join("shims");
        write(&shims.join("nats-server"), b"#!/usr/bin/env bash\n");
        let real = dir.path().join("real");
        write(&real.join("nats-server"), b"\x7fELF");
        let search = env::join_paths([&shims, &real]).expect("join paths");
        let found = find(None, dir.path(), Some(&search)).expect("found");
        assert_eq!(found, real.join("nats-server"));
    }

    #[test]
    fn nothing_found_names_the_install_script() {
        let dir = tempfile::tempdir().expect("tempdir");
        let error = find(None, dir.path(), None).expect_err("error");
        assert!(matches!(error, Error::BinaryNotFound { .. }), "{error}");
        assert!(error.to_string().contains("scripts/install-tools.sh"));
    }
}
