//! Real runs of the `command` kind: real processes, real process groups, real bubblewrap.

#[path = "../common/mod.rs"]
mod common;

mod runs;
mod sandbox;
mod settings;
