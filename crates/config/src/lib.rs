//! refbus-config: a deployment's registry in TOML, parsed into [`refbus_core::Registry`], with
//! every problem reported at its file, line and column.
//!
//! A deployment is one main file (`[deployment]`, services, agencies, versioned policies) that
//! may `include` files of services and agencies, plus one holiday file per year. [`load`] reads
//! them from disk; [`parse`] does the same work on texts already in memory (no I/O), so tests
//! and tools can check a configuration without touching the file system.
//!
//! ```no_run
//! match refbus_config::load("deploy/config/refbus.toml") {
//!     Ok(registry) => println!("{} agencies", registry.agencies.len()),
//!     Err(report) => {
//!         for diagnostic in &report.diagnostics {
//!             eprintln!("{diagnostic}"); // refbus.toml:87:12: escalation level notifies ...
//!         }
//!     }
//! }
//! ```
//!
//! Nothing is half-loaded: either every file is valid and the registry is complete, or the
//! [`Report`] lists every problem found (not only the first), each with a plain explanation and,
//! for a misspelt name, the nearest known one.
//!
//! The format, key by key, is in [`format`](mod@format) (the same text as `deploy/config/README.md`); the
//! commented Maros deployment in `deploy/config/` is the worked example.
//!
//! # Layout
//!
//! - [`files`]: sources, paths, line and column; [`diagnostic`]: [`Diagnostic`] and [`Report`].
//! - `tree`: typed, positioned reading of a TOML tree; `values`: the small grammars (durations,
//!   windows, percentages, triggers, targets, statuses, time zones).
//! - `draft`: one file into drafts, with the checks local to a table; `build`: cross-references,
//!   then the registry; `load`: the disk.

mod build;
pub mod diagnostic;
mod draft;
pub mod files;
mod load;
mod suggest;
mod tree;
mod values;

#[cfg(test)]
mod tests;

pub use diagnostic::{Diagnostic, Report};
pub use files::Source;
pub use load::load;
pub use suggest::did_you_mean;

use refbus_core::Registry;

/// Parses the main file `main` and the files it names, found in `files` by path (an `include`
/// or `holidays` entry is resolved against the directory of `main.path`, e.g. `refbus.toml`
/// naming `holidays/2026.toml` needs a source with that path). Pure: no I/O.
pub fn parse(main: &Source, files: &[Source]) -> Result<Registry, Report> {
    build::parse_files(main, files, &[])
}

/// The configuration format, for administrators: every key, its meaning and its default.
pub mod format {
    #![doc = include_str!("../../../deploy/config/README.md")]
}
