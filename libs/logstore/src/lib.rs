//! A transparency log as a service runs it, written once for every service that keeps one
//! (OpenExec's receipt log, ClawShield's decision log) and every program that reads one
//! (ClawLedger, `openexec log audit`, the load generator):
//!
//! - [`client`] — [`LogClient`], the typed client of a log's public endpoints (SPEC §7), every
//!   answer capped and timed;
//! - [`http`] — the `/log/*` axum routes over a [`LogService`](openexec_log::LogService) and
//!   any [`LogStore`](openexec_log::LogStore), with their OpenAPI paths ([`http::LogApi`]);
//! - [`signing`] — the checkpoint signing loop (interval, batch, sequencer role);
//! - [`service_log`] — [`ServiceLog`], a service's log with its origin, witnesses and cadence;
//! - [`sequencer`] — that role: an flock on SQLite, an advisory lock on PostgreSQL;
//! - [`store`] — the SQL side of a `LogStore` on SQLite and PostgreSQL: the statements a
//!   service's writer runs inside its own transaction, and the start-up tree check over any
//!   source of leaves.
//!
//! The maths and formats are `openexec-log`'s (pure); this crate does the I/O around them.
#![forbid(unsafe_code)]

pub mod client;
pub mod http;
pub mod sequencer;
pub mod service_log;
pub mod signing;
pub mod store;

pub use client::{ClientError, Limits, LogClient};
pub use http::{router, LogApi, LogRefusal};
pub use service_log::{LogNames, ServiceLog};
pub use signing::{Cadence, Sequenced};
pub use store::LogHead;
