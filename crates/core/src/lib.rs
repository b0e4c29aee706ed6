//! refbus-core: the referral domain, pure.
//!
//! Everything in refbus that decides something decides it here: the adapters (may this agency
//! do this now?), the router (what is due, and when to wake up?) and the audit replay (did the
//! router decide right?). The core does no I/O, starts no task and never reads the clock: time
//! is always a parameter, so every decision can be reproduced exactly.
//!
//! # Layout
//!
//! - [`ids`], [`time`]: identifiers and instants, valid by construction.
//! - [`referral`]: the state of one referral; [`event`]: the facts that build it;
//!   [`command`]: what agencies and the router ask for.
//! - [`decide`]: whether a command is allowed and which events it produces;
//!   [`evolve`]: the state after an event; [`chain`]: the canonical encoding and hash chain.
//! - [`calendar`], [`clock`], [`escalation`]: working time, clocks, and what is due when.
//! - [`demographics`]: sex and age band, the statistical metadata a referral records in the
//!   clear; [`indicators`]: the planners' figures, a fold over checked events.
//! - [`registry`]: agencies, services and versioned policies, as the configuration gives them.
//! - [`audit`]: what an auditor decides from the events alone (clock items owed, late,
//!   missing; whether a case is fully served).
//! - [`signature`]: who wrote a record (Ed25519 over subject and event); [`integrity`]: the one
//!   check every reader runs on a stored record before believing it; [`format`]: the version
//!   every stored record carries, and whether this build reads it.

pub mod audit;
pub mod calendar;
pub mod chain;
pub mod clock;
pub mod command;
pub mod coverage;
pub mod decide;
pub mod demographics;
pub mod escalation;
pub mod event;
pub mod evolve;
pub mod format;
pub mod ids;
pub mod indicators;
pub mod integrity;
pub mod places;
pub mod referral;
pub mod registry;
pub mod signature;
pub mod time;
pub mod verify;

pub use chain::EventHash;
pub use command::{Command, Request};
pub use decide::{Decision, RecordError, Recorded, Rejection, decide, record};
pub use escalation::{Due, Evaluation, evaluate};
pub use event::{Actor, Change, Event, Notice, notices};
pub use evolve::{EvolveError, evolve, evolve_hashed};
pub use ids::{AgencyId, CaseId, ReferralId, RequestId};
pub use integrity::IntegrityNotice;
pub use referral::{Referral, Status};
pub use registry::Registry;
pub use time::Timestamp;
