//! # openexec-handler-command: the `command` handler kind (SPEC §10)
//!
//! Being built (issue 10); nothing here yet.
#![forbid(unsafe_code)]
