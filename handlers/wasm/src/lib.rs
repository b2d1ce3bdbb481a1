//! # openexec-handler-wasm: the `wasm` handler kind (SPEC §10)
//!
//! Being built (issue 10); nothing here yet.
#![forbid(unsafe_code)]
