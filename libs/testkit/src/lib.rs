//! # openexec-testkit: what every service's tests share
//!
//! - [`Process`]: one harness for every service binary (`openexec serve`, `openexec ledger
//!   serve`, and the services to come): start it on a free port in a fresh directory with a
//!   clean environment, wait for its `listening on` line, keep its log, stop it with SIGTERM or
//!   SIGKILL, start it again on the same state, and kill it when dropped.
//! - [`Http`]: a client for a service's base URL that answers `(status, JSON)` and can speak raw
//!   HTTP/1.1 for what a well-behaved client would never send.
//! - [`Db`] and [`both_backends!`]: one test body run on SQLite and on PostgreSQL (the
//!   PostgreSQL run skips, saying why, where no server is configured — and fails where CI
//!   requires one; see `openexec-testpg`).
//! - [`eventually`] / [`eventually_blocking`]: poll a condition until a deadline, in place of
//!   sleeps used as synchronisation; a miss fails with what was awaited.
//!
//! *Dependency rule*: a dev-dependency only; it knows no service (each test module says which
//! binary, subcommand, environment prefix and ready line its service has).
#![forbid(unsafe_code)]

mod db;
mod http;
mod poll;
mod process;

pub use db::Db;
pub use http::{metric, to_json, Http};
pub use openexec_testpg::{PrivatePg, TestDb};
pub use poll::{eventually, eventually_blocking, POLL};
pub use process::{Process, ProcessSpec, StartFailure};

mod serving;
pub use serving::Serving;
